"""Standard checkpoints: a directory with config.json + model.safetensors (+ tokenizer files).

`transformers.AutoModelForCausalLM.from_pretrained(dir)` loads what we write with no remote code,
and we load Hugging Face checkpoint directories of the Llama/Qwen2 families. Weights are read only
through safetensors (or torch.load with weights_only=True for legacy .bin files).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import PocketLM
from pocketlm.model.presets import resolve_config
from pocketlm.utils import atomic_dir, share_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "tokenizer.model",
                   "generation_config.json")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise UserError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}") from None


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def has_tokenizer(path: str | os.PathLike) -> bool:
    return (Path(path) / "tokenizer.json").is_file() or (Path(path) / "tokenizer.model").is_file()


def save_checkpoint(model: PocketLM, out_dir: str | os.PathLike, tokenizer: Any = None,
                    dtype: torch.dtype | None = None, extra_files: dict[str, str] | None = None) -> Path:
    """Write a checkpoint atomically: build it in a sibling temp dir, then rename over `out_dir`.

    `tokenizer` may be a directory path to copy tokenizer files from, or an object with
    `save_pretrained` (a transformers tokenizer).
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        cfg = model.config
        hf = cfg.to_hf_dict()
        sd = model.hf_state_dict()
        if dtype is not None:
            sd = {k: v.to(dtype) for k, v in sd.items()}
        hf["torch_dtype"] = str(next(iter(sd.values())).dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        share_file(tmp / "model.safetensors")
        if tokenizer is not None:
            if isinstance(tokenizer, (str, os.PathLike)):
                for name in TOKENIZER_FILES:
                    src = Path(tokenizer) / name
                    if src.is_file():
                        shutil.copy2(src, tmp / name)
            else:
                tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out


def read_state_dict(ckpt_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (single or sharded safetensors; legacy .bin safely)."""
    d = Path(ckpt_dir)
    files: list[Path]
    index = d / "model.safetensors.index.json"
    if (d / "model.safetensors").is_file():
        files = [d / "model.safetensors"]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise UserError(f"malformed {index}: {e}") from None
        files = [d / f for f in sorted(set(weight_map.values()))]
    elif (d / "pytorch_model.bin").is_file():
        try:
            return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise UserError(f"cannot read {d / 'pytorch_model.bin'}: {e}") from None
    else:
        raise UserError(f"no model.safetensors in {d}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot read {f} (corrupted or truncated safetensors?): {msg}") from None
    return sd


def load_checkpoint(ckpt_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> PocketLM:
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise UserError(f"checkpoint directory not found: {d}")
    cfg = ModelConfig.from_file(d / "config.json")
    sd = read_state_dict(d)
    model = PocketLM.from_config(cfg, init=False, device=device)
    model.load_hf_state_dict({k: v.to(torch.float32) for k, v in sd.items()})
    return model.to(dtype)


def load_model(spec: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> PocketLM:
    """A checkpoint directory (trained weights) or a preset/config file (random weights)."""
    if is_checkpoint_dir(spec) and ((Path(spec) / "model.safetensors").exists()
                                     or (Path(spec) / "model.safetensors.index.json").exists()
                                     or (Path(spec) / "pytorch_model.bin").exists()):
        return load_checkpoint(spec, dtype=dtype)
    return PocketLM.from_config(resolve_config(spec), seed=seed, dtype=dtype)


def load_tokenizer(ckpt_dir: str | os.PathLike):
    """The checkpoint's Hugging Face tokenizer, or None when it has none."""
    if not has_tokenizer(ckpt_dir):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ckpt_dir))
