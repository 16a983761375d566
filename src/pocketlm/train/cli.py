"""`pocketlm pretrain` and `pocketlm finetune` (with `finetune merge`): thin consumers of the recipes.

Both verbs take a recipe (a YAML file or a built-in name) and then ``--out DIR``, ``--dry-run`` and
``--FIELD VALUE`` overrides, parsed by the recipe's own override parser (`pocketlm.train.recipe`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Callable

from pocketlm.errors import UserError
from pocketlm.model.checkpoint import is_checkpoint_dir
from pocketlm.train import finetune, pretrain
from pocketlm.train.lora import merge_adapter
from pocketlm.train.recipe import OverrideParser, TrainArgs, apply_overrides
from pocketlm.utils import check_output, print_json


def register(sub) -> None:
    fields_txt = ", ".join(f"--{f.name.replace('_', '-')}" for f in fields(pretrain.Recipe)
                           if f.name not in ("phases", "model_overrides"))
    p = sub.add_parser(
        "pretrain", help="pre-train a model from a recipe (phases, resume, torchrun DDP/FSDP2)",
        description="Pre-train from a recipe YAML or built-in recipe "
                    f"({', '.join(pretrain.builtin_recipes())}). Rerun the same command to resume.",
        epilog=f"Overrides go after RECIPE. Recipe fields: {fields_txt}; phase fields: "
               "--phases.NAME.{steps,tokens,lr,min_lr,schedule,warmup_steps,decay_frac,start_lr,mixture}; "
               "model fields: --model.FIELD. `pocketlm pretrain RECIPE --help` lists them all with the "
               "recipe's values. Scale out: torchrun --nproc-per-node N -m pocketlm.cli pretrain RECIPE "
               "[--parallel fsdp].")
    p.add_argument("recipe", help="recipe YAML file or built-in recipe name")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--out DIR, --dry-run and --FIELD VALUE ...")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "finetune", help="supervised fine-tuning (full or LoRA) on chat data; merge LoRA adapters",
        description="Fine-tune from a recipe YAML or built-in recipe "
                    f"({', '.join(finetune.builtin_recipes()) or 'none'}). Rerun the same command to resume. "
                    "`pocketlm finetune merge ADAPTER --out DIR [--base CKPT]` merges a LoRA adapter "
                    "into a standard checkpoint.",
        epilog="Overrides go after RECIPE: --out DIR, --dry-run and --FIELD VALUE for every recipe field "
               "(`pocketlm finetune RECIPE --help` lists them with the recipe's values). Scale out: "
               "torchrun --nproc-per-node N -m pocketlm.cli finetune RECIPE.")
    p.add_argument("recipe", help="recipe YAML file or built-in recipe name (or `merge`)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--out DIR, --dry-run and --FIELD VALUE ...")
    p.set_defaults(func=_cmd_finetune)


def _run_recipe(recipe: TrainArgs, overrides: list[str], run: Callable[[TrainArgs, Path], object]) -> int:
    """Apply the overrides, then print the resolved recipe (--dry-run) or run it into --out."""
    recipe, ns = apply_overrides(recipe, overrides)
    out = Path(ns.out) if ns.out else Path("runs") / recipe.name
    if ns.dry_run:
        print_json({"out": str(out), "recipe": recipe.to_dict()})
        return 0
    check_output(out, directory=True)
    run(recipe, out)
    return 0


def _cmd_pretrain(args) -> int:
    return _run_recipe(pretrain.load_recipe(args.recipe), list(args.overrides or []), pretrain.run_pretrain)


def _cmd_finetune(args) -> int:
    if args.recipe == "merge" and not Path("merge").is_file():
        return _cmd_merge(list(args.overrides or []))
    return _run_recipe(finetune.load_recipe(args.recipe), list(args.overrides or []), finetune.run_finetune)


def _cmd_merge(argv: list[str]) -> int:
    p = OverrideParser(prog="pocketlm finetune merge",
                       description="Merge a LoRA adapter into its base: a standard checkpoint for export/run.")
    p.add_argument("adapter", help="adapter dir (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint dir")
    p.add_argument("--base", help="base checkpoint (default: the adapter's base_model_name_or_path)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    a = p.parse_args(argv)
    check_output(a.out, directory=True)
    base = a.base
    if base is None:
        cfg_path = Path(a.adapter) / "adapter_config.json"
        if not cfg_path.is_file():
            raise UserError(f"not a LoRA adapter dir: {a.adapter}")
        base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError("the adapter does not name its base model; pass --base CKPT")
    if not is_checkpoint_dir(base):
        raise UserError(f"base checkpoint not found: {base}")
    out = merge_adapter(base, a.adapter, a.out, a.dtype)
    print(f"merged {a.adapter} into {base} -> {out}")
    return 0
