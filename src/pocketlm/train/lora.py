"""LoRA for `pocketlm finetune` (peft): wrap, save, load and merge adapters.

LoRA is applied by peft directly to our `PocketLM` (no task type): its module names are those of
``LlamaForCausalLM``, so the saved adapter (``adapter_config.json`` + ``adapter_model.safetensors``,
task_type CAUSAL_LM) loads with ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
adapter)``. Trainer checkpoints of a LoRA run hold only the adapter weights (`save_trainable`).
``pocketlm finetune merge ADAPTER --out DIR [--base CKPT]`` merges any saved adapter later.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pocketlm.errors import UserError
from pocketlm.model.checkpoint import has_tokenizer, load_checkpoint, parse_dtype
from pocketlm.train.sft import save_chat_checkpoint, save_chat_tokenizer
from pocketlm.train.distributed import unwrap_model
from pocketlm.train.trainer import load_model_safetensors, save_model_safetensors
from pocketlm.utils import atomic_dir, share_file

LORA_SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def lora_target_modules(spec: str) -> list[str]:
    """"q,k,gate" → ["q_proj", "k_proj", "gate_proj"] (full names pass through)."""
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise UserError("recipe field 'lora_targets' must name at least one module")
    out = []
    for n in names:
        full = LORA_SHORT.get(n, n)
        if full not in LORA_SHORT.values():
            raise UserError(f"recipe field 'lora_targets': unknown module {n!r} "
                            f"(choose from {', '.join(LORA_SHORT)} or their *_proj names)")
        out.append(full)
    return list(dict.fromkeys(out))


def apply_lora(model, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: str | list[str] = "q,k,gate,up,down"):
    """Wrap a PocketLM in a peft LoRA model (base frozen). Module names match LlamaForCausalLM."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("LoRA needs peft: pip install peft") from None
    modules = lora_target_modules(targets if isinstance(targets, str) else ",".join(targets))
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    absent = [m for m in modules if m not in present]
    if absent:
        raise UserError(f"LoRA targets {absent} do not exist in this model (gated_mlp: false has no gate_proj)")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none")
    return get_peft_model(model, cfg)


def lora_state_dict(peft_model) -> dict:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}


def save_adapter(peft_model, out_dir: str | os.PathLike, base: str | None = None,
                 tokenizer: Any = None) -> Path:
    """adapter_config.json (task_type CAUSAL_LM, for transformers+peft users) + adapter_model.safetensors
    (+ tokenizer files), written atomically."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        peft_model.save_pretrained(str(tmp))
        share_file(tmp / "adapter_model.safetensors")
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(task_type="CAUSAL_LM", auto_mapping=None,
                   base_model_name_or_path=str(Path(base).resolve()) if base and Path(base).exists() else base)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "README.md").unlink(missing_ok=True)
        if tokenizer is not None:
            save_chat_tokenizer(tokenizer, tmp)
    return out


def load_adapter(model, adapter_dir: str | os.PathLike):
    """Attach a saved LoRA adapter (ours or any peft adapter for a Llama/Qwen2 model) to a PocketLM."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_path, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise UserError(f"not a LoRA adapter dir (needs adapter_config.json + adapter_model.safetensors): {d}")
    raw = json.loads(cfg_path.read_text())
    if raw.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{d} holds a {raw.get('peft_type')} adapter; only LoRA can be merged")
    config = LoraConfig.from_pretrained(str(d))
    config.task_type = None  # our model is a plain nn.Module, not a transformers PreTrainedModel
    config.inference_mode = False
    config.base_model_name_or_path = None  # we pass the base model object ourselves
    peft_model = get_peft_model(model, config)
    sd = load_file(str(weights))
    result = set_peft_model_state_dict(peft_model, sd)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise UserError(f"adapter does not fit the model: unexpected {unexpected[:3]}")
    return peft_model


def merge_adapter(base: str, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  dtype: str = "float32") -> Path:
    """Base checkpoint + adapter → a standard checkpoint (tokenizer from the adapter dir or base)."""
    model = load_checkpoint(base)
    merged = load_adapter(model, adapter_dir).merge_and_unload()
    tok_src = adapter_dir if has_tokenizer(adapter_dir) else (base if has_tokenizer(base) else None)
    return save_chat_checkpoint(merged, out_dir, tok_src, parse_dtype(dtype))


def save_trainable(model, ckpt_dir: Path, dist_info) -> None:
    """Trainer checkpoints of a LoRA run hold only the trainable (adapter) tensors."""
    if dist_info.is_main:
        m = unwrap_model(model)
        sd = {n: p.detach().cpu() for n, p in m.named_parameters() if p.requires_grad}
        save_model_safetensors(sd, ckpt_dir / "model.safetensors")


def load_trainable(model, ckpt_dir: Path, dist_info) -> None:
    m = unwrap_model(model)
    sd = load_model_safetensors(ckpt_dir / "model.safetensors")
    params = dict(m.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(sd) != want:
        raise UserError(f"cannot resume: checkpoint {ckpt_dir} holds different adapter tensors "
                        "(changed lora_r / lora_targets?)")
    with torch.no_grad():
        for n, v in sd.items():
            params[n].copy_(v)
