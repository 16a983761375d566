"""`pocketlm finetune`: supervised fine-tuning on chat data, full or LoRA (peft), on the shared trainer.

A recipe (YAML, or the name of a built-in one in ``pocketlm/recipes``) is a `FinetuneRecipe`: the shared
`TrainArgs` plus the data, LoRA and schedule fields below; every field is a flag (``--max-steps 30``).
Chat data and its tokenisation are `pocketlm.train.sft`; LoRA is `pocketlm.train.lora`.

Extension point: another package widens the recipe with its own fields and data hooks by subclassing
`FinetuneRecipe` (overriding `read_records`, `to_conversations`, `finish_checkpoint`) and calling
`register_recipe_type`; `pocketlm finetune` then loads every recipe as that class. pocketlm.intent does
so for DroidCall records and its ``droidcall-synth`` source; this module never imports it.

Training uses `pocketlm.train.trainer.Trainer` (AdamW, schedules, grad accumulation, clipping, JSONL
metrics, atomic keep-last-k checkpoints with optimizer/RNG/data state, exact resume, DDP). The data
order is a seeded permutation per epoch, so the data position is just the step number.

Output directory: ``recipe.yaml``, ``metrics.jsonl``, ``checkpoints/step_N`` (rerun to resume),
``final/`` (standard checkpoint with tokenizer + chat template; for LoRA the merged model unless
``merge: false``), ``adapter/`` (LoRA only), ``loss.png``, ``summary.json``.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml

from pocketlm.data.tokenizer import load_tokenizer
from pocketlm.errors import UserError
from pocketlm.model.checkpoint import has_tokenizer, is_checkpoint_dir, load_model, parse_dtype
from pocketlm.model.decoder import PocketLM
from pocketlm.model.importer import BASES, imported_base
from pocketlm.train.lora import apply_lora, load_trainable, lora_target_modules, save_adapter, save_trainable
from pocketlm.train.qat import QAT_TYPES, enable_qat, merge_quantized, set_qat_active
from pocketlm.train.recipe import RECIPES_DIR, TrainArgs, read_recipe_file, snapshot_recipe, write_summary
from pocketlm.train.sft import (SFTBatches, check_conversations, collate, conversations_from_records,
                                pack_examples, prepare_tokenizer, read_records, save_chat_checkpoint,
                                tokenize_conversations)
from pocketlm.train.distributed import full_model_state_dict, init_distributed, teardown_distributed
from pocketlm.train.metrics import plot_loss_curve
from pocketlm.train.trainer import (LOSS_FUNCTIONS, SCHEDULES, Schedule, Trainer, default_load_model,
                                    default_save_model, measure_matmul_peak, train_flops_per_token)


# ============================================================================ recipe
@dataclass
class FinetuneRecipe(TrainArgs):
    base: str = ""  # checkpoint dir with a tokenizer, a built-in base (`pocketlm bases`) or a preset (random)
    tokenizer: str | None = None  # tokenizer dir when `base` has none
    data: str = ""  # JSONL file/dir/glob | hf:NAME | owner/name (HF hub) | a registered source
    data_split: str = "train"  # HF datasets only
    data_config: str | None = None  # HF dataset config name
    messages_field: str = "messages"
    val_data: str | None = None  # same forms as `data`; default: val_fraction of `data`
    val_fraction: float = 0.0
    max_samples: int | None = None  # cap on training conversations (after shuffling)
    seq_len: int = 2048  # max tokens per training sequence; longer conversations are truncated
    packing: bool = False  # concatenate conversations into seq_len rows (no cross-document masking)
    group_by_length: bool = False  # micro-batches of similar lengths: less padding (unpacked rows only)
    method: str = "full"  # full | lora
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "q,k,gate,up,down"  # comma list; q,k,v,o,gate,up,down or full module names
    merge: bool = True  # LoRA: final/ = base with the adapter merged in (adapter/ is always saved)
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 2e-5
    min_lr: float = 0.0
    schedule: str = "cosine"  # cosine | linear | wsd | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta2: float = 0.999
    model_dtype: str = "float32"  # weights in memory; bfloat16 halves a frozen LoRA base
    eval_every: int = 0  # steps (0: only at the end)
    loss_logits: str = "all"  # all | targets: LM head only at assistant tokens (same loss, less compute)
    qat: str = "none"  # none | q4_0 | q8_0: LoRA trains through the export's rounding (train/qat.py)
    qat_start: float = 0.0  # fraction of the steps trained in float before the rounding turns on
    pad_to_multiple_of: int = 1  # micro-batch width rounded up: few distinct shapes keep CPU memory and speed flat

    VERB: ClassVar[str] = "finetune"
    POSITIVE: ClassVar[tuple[str, ...]] = TrainArgs.POSITIVE + ("max_samples", "lora_r", "lora_alpha", "epochs",
                                                                "lr", "pad_to_multiple_of")
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = TrainArgs.NON_NEGATIVE + ("min_lr", "warmup_steps")
    FRACTIONS: ClassVar[tuple[str, ...]] = TrainArgs.FRACTIONS + ("val_fraction", "lora_dropout", "qat_start")
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **TrainArgs.CHOICES, "method": ("full", "lora"), "schedule": SCHEDULES,
        "model_dtype": ("float32", "bfloat16", "float16"),
        "loss_logits": tuple(LOSS_FUNCTIONS), "qat": QAT_TYPES}

    @classmethod
    def convert_field(cls, name: str, value: Any, hint: Any, where: str) -> Any:
        if name == "lora_targets" and isinstance(value, list):
            value = ",".join(map(str, value))
        return super().convert_field(name, value, hint, where)

    def validate(self) -> None:
        if not self.base:
            raise UserError("recipe field 'base' is required (a checkpoint dir, e.g. runs/tiny/final)")
        if not self.data:
            raise UserError("recipe field 'data' is required (a JSONL file, hf:NAME or droidcall-synth)")
        super().validate()
        lora_target_modules(self.lora_targets)
        if self.qat != "none" and self.method != "lora":
            raise UserError("recipe field 'qat' needs method: lora (it fake-quantizes the merged LoRA weights)")
        if self.qat_start and self.qat == "none":
            raise UserError("recipe field 'qat_start' needs qat: q4_0 or q8_0")
        if self.method == "lora" and self.parallel == "fsdp":
            raise UserError("recipe field 'parallel': LoRA runs with ddp (the frozen base is small enough "
                            "to replicate); use method: full for fsdp")

    # ---------------------------------------------------------------- data hooks (extensions override)
    def read_records(self, spec: str, split: str, skipped: Counter) -> list[Any]:
        """The raw records of a data spec (`data` or `val_data`)."""
        return read_records(spec, split=split, config=self.data_config, skipped=skipped)

    def to_conversations(self, records: list[Any], skipped: Counter) -> list[list[dict]]:
        """Records → conversations (lists of messages); unusable records are counted in `skipped`."""
        return conversations_from_records(records, self.messages_field, skipped)

    def load_conversations(self, spec: str, split: str = "train") -> tuple[list[list[dict]], Counter]:
        skipped: Counter = Counter()
        convs = self.to_conversations(self.read_records(spec, split, skipped), skipped)
        check_conversations(convs, spec, self.messages_field, skipped)
        return convs, skipped

    def finish_checkpoint(self, ckpt_dir: str | os.PathLike) -> None:
        """Called on rank 0 with the final checkpoint dir: add files a consumer of the model needs."""


_RECIPE_TYPES: list[type[FinetuneRecipe]] = [FinetuneRecipe]


def register_recipe_type(cls: type[FinetuneRecipe]) -> None:
    """Load `pocketlm finetune` recipes as `cls`, which must subclass the current recipe type (so
    extensions stack)."""
    if cls in _RECIPE_TYPES:
        return
    if not issubclass(cls, recipe_type()):
        raise TypeError(f"{cls.__name__} must subclass {recipe_type().__name__}")
    _RECIPE_TYPES.append(cls)


def recipe_type() -> type[FinetuneRecipe]:
    return _RECIPE_TYPES[-1]


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> FinetuneRecipe:
    return recipe_type().from_dict(data, where)


def recipe_to_dict(r: FinetuneRecipe) -> dict[str, Any]:
    return r.to_dict()


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if _is_finetune_recipe(p))


def _is_finetune_recipe(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except Exception:  # noqa: BLE001 - a broken built-in file is simply not listed
        return False
    return isinstance(data, dict) and "base" in data and "phases" not in data


def load_recipe(spec: str) -> FinetuneRecipe:
    """A recipe YAML/JSON path or the name of a built-in fine-tuning recipe."""
    path, data = read_recipe_file(spec)
    if isinstance(data, dict) and "phases" in data:
        raise UserError(f"{path} is a pre-training recipe; run it with `pocketlm pretrain {spec}`")
    return recipe_from_dict(data, where=str(path))


# ============================================================================ run
def _load_base(recipe: FinetuneRecipe):
    """(model, tokenizer, tokenizer source) for the recipe's base."""
    base = str(imported_base(recipe.base)) if recipe.base in BASES else recipe.base
    if not is_checkpoint_dir(base) and os.sep in base:
        raise UserError(f"base checkpoint not found: {base} (pre-train one with `pocketlm pretrain`)")
    tok_src = recipe.tokenizer or (base if is_checkpoint_dir(base) and has_tokenizer(base) else None)
    if tok_src is None:
        raise UserError(f"{base} has no tokenizer; set recipe field 'tokenizer' to a tokenizer dir")
    tokenizer = prepare_tokenizer(load_tokenizer(tok_src))
    model = load_model(base, dtype=parse_dtype(recipe.model_dtype), seed=recipe.seed)
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                        f"{model.config.vocab_size}")
    if recipe.seq_len > model.config.max_position_embeddings:
        raise UserError(f"seq_len {recipe.seq_len} exceeds the model's max_position_embeddings "
                        f"{model.config.max_position_embeddings}")
    return model, tokenizer, tok_src


def build_rows(recipe: FinetuneRecipe, tokenizer, say=print) -> tuple[list, list, dict]:
    """Training rows, validation rows and data stats, ready for `SFTBatches`."""
    convs, skipped = recipe.load_conversations(recipe.data, recipe.data_split)
    rng = np.random.default_rng([recipe.seed, 0xDA7A])
    order = rng.permutation(len(convs))
    convs = [convs[i] for i in order]
    val_convs: list = []
    if recipe.val_data:
        val_split = "validation" if recipe.val_data.startswith("hf:") else "train"
        val_convs, vskipped = recipe.load_conversations(recipe.val_data, val_split)
        skipped.update({f"val_{k}": v for k, v in vskipped.items()})
    elif recipe.val_fraction > 0:
        n_val = max(1, round(recipe.val_fraction * len(convs)))
        if n_val >= len(convs):
            raise UserError(f"val_fraction {recipe.val_fraction} leaves no training data ({len(convs)} conversations)")
        val_convs, convs = convs[:n_val], convs[n_val:]
    if recipe.max_samples:
        convs = convs[:recipe.max_samples]
    train = tokenize_conversations(tokenizer, convs, recipe.seq_len)
    val = tokenize_conversations(tokenizer, val_convs, recipe.seq_len) if val_convs else None
    if not train.examples:
        raise UserError("no training conversation has assistant tokens within seq_len")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = pack_examples(train.examples, recipe.seq_len, pad) if recipe.packing else train.examples
    val_rows = (pack_examples(val.examples, recipe.seq_len, pad) if recipe.packing else val.examples) if val else []
    stats = {"conversations": len(convs), "skipped": dict(skipped), "train": train.stats,
             "val": val.stats if val else None, "rows": len(rows), "val_rows": len(val_rows)}
    return rows, val_rows, stats


def run_finetune(recipe: FinetuneRecipe, out_dir: str | os.PathLike, print_fn=None) -> dict[str, Any]:
    """Fine-tune (or resume) `recipe` into out_dir; returns a summary dict (rank 0's view)."""
    say = print_fn or (lambda s: print(s, flush=True))
    dist_info = init_distributed(None if recipe.device == "auto" else recipe.device)
    try:
        out = Path(out_dir)
        world = dist_info.world_size
        micro, accum = recipe.batch_split(world)
        torch.manual_seed(recipe.seed)  # LoRA init draws from the global RNG
        model, tokenizer, tok_src = _load_base(recipe)
        cfg = model.config
        rows, val_rows, data_stats = build_rows(recipe, tokenizer, say)
        total_steps = recipe.max_steps or max(1, math.ceil(recipe.epochs * len(rows) / recipe.batch_size))
        if recipe.method == "lora":
            model = apply_lora(model, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout, recipe.lora_targets)
            enable_qat(model, recipe.qat)
            save_fn, load_fn = save_trainable, load_trainable
        else:
            save_fn, load_fn = default_save_model, default_load_model
        model = model.to(dist_info.device)
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            snapshot_recipe(out, recipe.to_dict(), True)
        pad = tokenizer.pad_token_id
        batches = SFTBatches(rows, recipe.batch_size, micro, dist_info.rank, world, recipe.seed, pad,
                             group_by_length=recipe.group_by_length and not recipe.packing,
                             pad_to_multiple_of=recipe.pad_to_multiple_of)
        evals = None
        if val_rows:
            mine = val_rows[dist_info.rank::world]

            def evals():
                for j in range(0, len(mine), micro):
                    yield collate(mine[j:j + micro], pad, recipe.pad_to_multiple_of)

        schedule = Schedule(recipe.schedule, lr=recipe.lr, total_steps=total_steps,
                            warmup_steps=recipe.warmup_steps, min_lr=recipe.min_lr)
        tcfg = recipe.trainer_config(total_steps, accum)
        mean_len = data_stats["train"]["tokens"] / max(1, data_stats["train"]["examples"])
        peak = measure_matmul_peak(dist_info.device, recipe.matmul_dtype(dist_info.device), seconds=0.3)
        make_opt = recipe.optimizer_factory(lr=schedule(0))
        qat_from = round(recipe.qat_start * total_steps) if recipe.qat != "none" else None

        def switch_qat(step: int) -> None:
            set_qat_active(model, step >= qat_from)

        def qat_phase(step: int) -> dict[str, str]:
            return {"phase": "qat" if step >= qat_from else "float"}

        trainer = Trainer(model, make_opt, schedule, batches, tcfg, out_dir=out, eval_batches=evals,
                          loss_fn=LOSS_FUNCTIONS[recipe.loss_logits],
                          on_step_start=switch_qat if qat_from else None,
                          log_extra=qat_phase if qat_from else None,
                          dist_info=dist_info, flops_per_token=train_flops_per_token(cfg, int(mean_len)),
                          peak_flops=peak, save_model_fn=save_fn, load_model_fn=load_fn, print_fn=say)
        if dist_info.is_main:
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            tr = data_stats["train"]
            say(f"finetune {recipe.name}: {recipe.method} on {cfg.name} ({n_train / 1e6:.2f}M trainable), "
                f"{len(rows)} {'packed rows' if recipe.packing else 'conversations'} "
                f"({tr['tokens']:,} tokens, {tr['target_tokens']:,} assistant; truncated {tr.get('truncated', 0)}), "
                f"{total_steps} steps x {recipe.batch_size} (micro {micro}, accum {accum}), "
                f"{recipe.schedule} lr {recipe.lr:.2e}"
                + (f"; qat {recipe.qat} from step {qat_from + 1}" if qat_from is not None else "")
                + f"; skipped {data_stats['skipped'] or 'none'}")
        summary = trainer.fit()
        summary.update(out_dir=str(out), method=recipe.method, data=data_stats)
        if recipe.method == "lora":
            peft_model = trainer.model
            if dist_info.is_main:
                adapter = save_adapter(peft_model, out / "adapter", base=recipe.base, tokenizer=tok_src)
                summary["adapter"] = str(adapter)
                if recipe.merge:
                    merged = merge_quantized(peft_model)
                    summary["final"] = str(save_chat_checkpoint(merged.float(), out / "final", tok_src,
                                                                parse_dtype(recipe.save_dtype)))
        else:
            state = full_model_state_dict(trainer.wrapped, dist_info)
            if dist_info.is_main:
                final_model = PocketLM.from_config(cfg, init=False)
                final_model.load_state_dict({k: v.float() for k, v in state.items()})
                summary["final"] = str(save_chat_checkpoint(final_model, out / "final", tok_src,
                                                            parse_dtype(recipe.save_dtype)))
        if dist_info.is_main:
            if summary.get("final"):
                recipe.finish_checkpoint(summary["final"])
            png = plot_loss_curve(out / "metrics.jsonl", out / "loss.png", title=f"finetune {recipe.name}")
            summary["plot"] = str(png) if png else None
            write_summary(out, summary)
            say(f"done: {summary['steps']} steps, loss {summary['first_loss'] or float('nan'):.4f} → "
                f"{summary['last_loss'] or float('nan'):.4f}"
                + (f", eval {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else "")
                + (f"; adapter {summary['adapter']}" if summary.get("adapter") else "")
                + (f"; final checkpoint {summary['final']}" if summary.get("final") else ""))
        return summary
    finally:
        teardown_distributed()


__all__ = ["FinetuneRecipe", "register_recipe_type", "recipe_type", "load_recipe", "recipe_from_dict",
           "recipe_to_dict", "build_rows", "run_finetune", "builtin_recipes"]
