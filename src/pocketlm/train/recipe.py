"""Typed recipe fields, shared by the pre-training and fine-tuning recipes: one place that checks a YAML
value against a dataclass field's type, parses the same field from a command-line flag, finds recipe
files (a path or a built-in name), and snapshots a run's recipe for resuming."""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pocketlm.errors import UserError

RECIPES_DIR = Path(__file__).parents[1] / "recipes"

_SCALAR = (int, float, str, bool)


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
    from pocketlm.model.config import read_structured_file

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
    import yaml

    path = out / "recipe.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if changed and is_main:
            print(f"note: resuming with changed recipe fields: {', '.join(changed)}", file=sys.stderr)
    if is_main:
        tmp = path.with_name(".recipe.yaml.tmp")
        tmp.write_text(yaml.safe_dump(current, sort_keys=False))
        os.replace(tmp, path)
