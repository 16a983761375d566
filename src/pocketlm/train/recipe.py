"""Recipes: `TrainArgs`, the typed training arguments every recipe (pretrain's `Recipe`, `FinetuneRecipe`)
extends, and the one place that loads a recipe from YAML (each value checked against its field's type),
parses its command-line overrides (``--FIELD VALUE`` plus a recipe's nested flags), finds recipe files
(a path or a built-in name), splits the batch into micro-batches, configures the trainer and snapshots
a run's recipe for resuming."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import yaml

from pocketlm.errors import UserError
from pocketlm.model.config import read_structured_file
from pocketlm.train.trainer import TrainerConfig, build_optimizer
from pocketlm.utils import atomic_write_json, atomic_write_text

RECIPES_DIR = Path(__file__).parents[1] / "recipes"

_SCALAR = (int, float, str, bool)
T = TypeVar("T", bound="TrainArgs")


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def base_types(tp: Any) -> tuple[list[type], bool]:
    """([int], True) for `int | None`; ([float], False) for float; ([], False) for Any/dict/list."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        return [a for a in args if a is not type(None)], type(None) in args
    return ([tp] if tp in _SCALAR else []), False


def check_value(path: str, value: Any, tp: Any) -> Any:
    """Validate a YAML value against the field type (ints are fine where floats are expected)."""
    base, optional = base_types(tp)
    if not base:
        return value
    if value is None:
        if optional:
            return None
        raise UserError(f"recipe field '{path}' must not be empty")
    for t in base:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is int and isinstance(value, float) and value.is_integer() and abs(value) >= 1e3:
            return int(value)  # 1.5e12 tokens written in YAML as a float
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    if isinstance(value, str):  # YAML left "1e-3" as a string: parse it like the CLI does
        return parse_str(path, value, tp)
    want = " or ".join(t.__name__ for t in base) + (" or null" if optional else "")
    raise UserError(f"recipe field '{path}' must be {want}, got {value!r}")


def parse_str(path: str, text: str, tp: Any) -> Any:
    """Parse a command-line string for a field of type `tp`; errors name the field."""
    base, optional = base_types(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    for t in base:
        try:
            if t is bool:
                low = text.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                continue
            if t is int:
                v = float(text) if any(c in text for c in ".eE") else int(text)
                if isinstance(v, float):
                    if not v.is_integer():
                        continue
                    v = int(v)
                return v
            if t is float:
                return float(text)
            if t is str:
                return text
        except ValueError:
            continue
    want = " or ".join(t.__name__ for t in base) + (" or none" if optional else "")
    raise UserError(f"recipe field '{path}' expects {want}, got {text!r}")


def flag_names(path: str) -> list[str]:
    """`--max-steps` and `--max_steps` both work; dotted paths keep their dots."""
    dashed = "--" + path.replace("_", "-")
    return [dashed] if dashed == "--" + path else [dashed, "--" + path]


class OverrideParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(message)


def converter(path: str, tp: Any):
    def conv(text: str) -> Any:
        return parse_str(path, text, tp)
    conv.__name__ = path  # argparse names the converter in its messages
    return conv


def read_recipe_file(spec: str) -> tuple[Path, Any]:
    """The path and parsed contents of a recipe YAML/JSON file or a built-in recipe's name."""
    path = Path(spec)
    if not path.is_file():
        if (RECIPES_DIR / f"{spec}.yaml").is_file():
            path = RECIPES_DIR / f"{spec}.yaml"
        else:
            raise UserError(f"recipe not found: {spec!r} is neither a file nor a built-in recipe "
                            f"({', '.join(sorted(p.stem for p in RECIPES_DIR.glob('*.yaml')))})")
    return path, read_structured_file(path) or {}


def snapshot_recipe(out: Path, current: dict, is_main: bool) -> None:
    """Write recipe.yaml (the recipe as a dict) on a fresh run; warn when a resumed run's recipe changed."""
    path = out / "recipe.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if changed and is_main:
            print(f"note: resuming with changed recipe fields: {', '.join(changed)}", file=sys.stderr)
    if is_main:
        atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))


# ============================================================================ training arguments
@dataclass
class TrainArgs:
    """The training arguments every recipe shares (litgpt's TrainArgs). A recipe subclasses it, adds its
    own fields, may redeclare a field to change its default, and extends `validate`."""

    name: str = "custom"
    description: str = ""
    data: str = ""
    tokenizer: str | None = None  # tokenizer dir for the final checkpoint
    seq_len: int = 256
    batch_size: int = 16  # global sequences per optimizer step (all ranks, all micro-batches)
    micro_batch_size: int | None = None  # sequences per rank per forward; None = batch_size / ranks
    max_steps: int | None = None
    seed: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on GPUs that have it) | bf16 | fp32
    save_dtype: str = "float32"  # dtype of the final checkpoint
    compile: bool = False
    parallel: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard) under torchrun
    device: str = "auto"  # auto | cpu | cuda
    eval_every: int = 100  # steps (0: only at the end)
    save_every: int = 100  # steps (0: only at the end)
    keep_last: int = 2
    log_every: int = 1
    tensorboard: bool = False

    VERB: ClassVar[str] = "train"  # the CLI verb, named in errors and --help
    POSITIVE: ClassVar[tuple[str, ...]] = ("seq_len", "batch_size", "micro_batch_size", "max_steps", "eps",
                                           "keep_last")
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ("weight_decay", "grad_clip", "eval_every", "save_every",
                                               "log_every")
    FRACTIONS: ClassVar[tuple[str, ...]] = ("beta1", "beta2")  # in [0, 1)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "precision": ("auto", "bf16", "fp32"), "parallel": ("ddp", "fsdp"), "device": ("auto", "cpu", "cuda"),
        "save_dtype": ("float32", "bfloat16", "float16")}

    # ---------------------------------------------------------------- loading
    @classmethod
    def convert_field(cls, name: str, value: Any, hint: Any, where: str) -> Any:
        """A YAML value for field `name`, checked against its type; recipes override it for nested fields."""
        return check_value(name, value, hint)

    @classmethod
    def from_dict(cls, data: Any, where: str = "recipe"):
        """The recipe from a mapping of fields (YAML); unknown fields and bad values are UserErrors."""
        if not isinstance(data, dict):
            raise UserError(f"{where} must be a mapping of fields, got {type(data).__name__}")
        hints = field_types(cls)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown recipe field '{unknown[0]}' in {where} (known: {', '.join(sorted(known))})")
        recipe = cls(**{k: cls.convert_field(k, v, hints[k], where) for k, v in data.items()})
        recipe.validate()
        return recipe

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name in self.POSITIVE:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"recipe field '{name}' must be positive, got {value}")
        for name in self.NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise UserError(f"recipe field '{name}' must be >= 0, got {getattr(self, name)}")
        for name in self.FRACTIONS:
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"recipe field '{name}' must be in [0, 1), got {getattr(self, name)}")
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"recipe field '{name}' must be one of {', '.join(allowed)}, "
                                f"got {getattr(self, name)!r}")

    # ---------------------------------------------------------------- command-line overrides
    def add_nested_flags(self, parser: argparse.ArgumentParser) -> None:
        """Flags for non-scalar fields (pretrain: --phases.NAME.FIELD, --model.FIELD); none by default."""

    def apply_nested_flag(self, data: dict, kind: str, key: str, value: Any) -> None:
        raise AssertionError(f"unexpected override {kind}:{key}")

    def unknown_flag_error(self, flag: str) -> UserError:
        return UserError(f"unknown recipe field '{flag.lstrip('-')}' (see `pocketlm {self.VERB} {self.name} --help`)")

    # ---------------------------------------------------------------- the run
    def batch_split(self, world: int) -> tuple[int, int]:
        """(micro-batch size per rank, gradient accumulation steps) for `world` ranks."""
        micro = self.micro_batch_size or max(1, self.batch_size // world)
        if self.batch_size % (micro * world):
            raise UserError(f"batch_size {self.batch_size} must be a multiple of micro_batch_size ({micro}) "
                            f"x ranks ({world})")
        return micro, self.batch_size // (micro * world)

    def trainer_config(self, total_steps: int, grad_accum: int) -> TrainerConfig:
        return TrainerConfig(max_steps=total_steps, grad_accum=grad_accum, grad_clip=self.grad_clip or None,
                             precision=self.precision, compile=self.compile, eval_every=self.eval_every,
                             save_every=self.save_every, keep_last=self.keep_last, log_every=self.log_every,
                             seed=self.seed, tensorboard=self.tensorboard, parallel=self.parallel)

    def optimizer_factory(self, lr: float):
        """`make_opt(model)` for the Trainer: AdamW with the recipe's decay, betas and eps."""
        def make_opt(model):
            return build_optimizer(model, lr=lr, weight_decay=self.weight_decay, betas=(self.beta1, self.beta2),
                                   eps=self.eps)
        return make_opt

    def matmul_dtype(self, device) -> torch.dtype:
        """The dtype the training matmuls run in: the peak MFU is measured against."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.bfloat16 if bf16 else torch.float32


def override_parser(recipe: TrainArgs) -> argparse.ArgumentParser:
    """Flags generated from the recipe's dataclass: one per scalar field, plus its nested flags."""
    p = OverrideParser(prog=f"pocketlm {recipe.VERB} RECIPE", allow_abbrev=False,
                       description="Recipe fields you can override (values in the recipe shown as defaults).")
    p.add_argument("--out", help="output dir (default: runs/RECIPE_NAME); rerun with the same dir to resume")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and plan, then exit")
    group = p.add_argument_group("recipe fields")
    hints = field_types(type(recipe))
    for f in fields(recipe):
        if base_types(hints[f.name])[0]:  # scalar fields only; nested ones add their own flags
            group.add_argument(*flag_names(f.name), dest=f"r:{f.name}", default=argparse.SUPPRESS,
                               type=converter(f.name, hints[f.name]), metavar="V",
                               help=f"(default: {getattr(recipe, f.name)})")
    recipe.add_nested_flags(p)
    return p


def apply_overrides(recipe: T, argv: list[str]) -> tuple[T, argparse.Namespace]:
    """Parse `--field value` overrides against the recipe; unknown fields are UserErrors naming them."""
    ns, extra = override_parser(recipe).parse_known_args(argv)
    if extra:
        raise recipe.unknown_flag_error(next((a for a in extra if a.startswith("-")), extra[0]))
    data = recipe.to_dict()
    for key, value in vars(ns).items():
        kind, _, rest = key.partition(":")
        if kind == "r":
            data[rest] = value
        elif rest:
            recipe.apply_nested_flag(data, kind, rest, value)
    return type(recipe).from_dict(data, where="recipe with command-line overrides"), ns


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    return atomic_write_json(out / "summary.json", summary)
