"""The 24 DroidCall functions as typed specs, plus DroidCall-format sample loading.

Specs come from the package copy of DroidCall's ``data/api.jsonl``. Which arguments are free text
("semantic" match) comes from DroidCall's ``annotated_api.jsonl`` (an older API version: where an
argument exists there, its annotation is used; arguments new in api.jsonl get the annotation in
``_EXTRA_MATCH_TYPES`` below, everything else is "strict").
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pocketlm.errors import UserError
from pocketlm.utils import atomic_write_text

# Arguments of api.jsonl that annotated_api.jsonl does not know (or knows under another shape).
# Free text (message subject/body) is semantic like send_email.body / create_note.text there;
# a timer duration is a value ("10 minutes"), so strict.
_EXTRA_MATCH_TYPES = {
    ("ACTION_SET_TIMER", "duration"): "strict",
    ("send_message", "phone_number"): "strict",
    ("send_message", "subject"): "semantic",
    ("send_message", "body"): "semantic",
    ("send_message", "attachments"): "strict",
    ("send_email", "attachments"): "strict",
    ("web_search", "engine"): "strict",
}


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type: str                   # python-style annotation from the spec, e.g. "int", "List[str]"
    required: bool
    default: Any = None         # DroidCall's checker treats a missing "default" as None
    description: str = ""
    match_type: str = "strict"  # "strict" | "semantic" (free text)
    choices: tuple[str, ...] = ()  # the values the description allows ("Possible values are: ...")
    keys: tuple[str, ...] = ()     # a dict argument's documented keys ("available key: 'email', ...")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    description: str
    arguments: dict[str, ArgSpec]
    returns: dict | None = None
    examples: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, compare=False, repr=False)  # the api.jsonl record as-is

    def doc(self) -> str:
        """Plain-text doc used by the retriever (name, description, argument descriptions)."""
        parts = [self.name.replace("_", " "), self.description]
        parts += [f"{a.name} {a.description}" for a in self.arguments.values()]
        return "\n".join(parts)


# How DroidCall's docs introduce a closed set of values or dict keys (see api.jsonl).
_CHOICES_INTRO = re.compile(r"possible values are:|available options:|can be one of the following:", re.I)
_KEYS_INTRO = re.compile(r"available keys?:([^)]*)", re.I)


def documented_values(description: str) -> dict[str, tuple[str, ...]]:
    """{"choices": the quoted values after "Possible values are:" (or alike), "keys": a dict's
    "available key: 'a', 'b'"} -- the schema the docs state in prose, for constrained decoding."""
    out: dict[str, tuple[str, ...]] = {}
    intro = _CHOICES_INTRO.search(description)
    if intro:
        out["choices"] = tuple(dict.fromkeys(re.findall(r'"([^"]+)"', description[intro.end():])))
    keys = _KEYS_INTRO.search(description)
    if keys:
        out["keys"] = tuple(dict.fromkeys(re.findall(r"'([^']+)'", keys.group(1))))
    return {k: v for k, v in out.items() if v}


@dataclass
class Sample:
    query: str
    answers: list[dict]                 # [{"id": int, "name": str, "arguments": dict}]
    line: int | None = None             # 1-based line in the source file
    error: str | None = None            # set when the line was malformed (answers then empty)

    def to_json(self) -> dict:
        return {"query": self.query, "answers": self.answers}


def _asset_lines(name: str) -> list[str]:
    return resources.files("pocketlm").joinpath("assets/droidcall/" + name).read_text("utf-8").splitlines()


def _annotations() -> dict[tuple[str, str], str]:
    out = {}
    for line in _asset_lines("annotated_api.jsonl"):
        if line.strip():
            item = json.loads(line)
            for arg, info in item.get("arguments", {}).items():
                if isinstance(info, dict) and "match_type" in info:
                    out[(item["name"], arg)] = info["match_type"]
    return out


def _parse_spec(item: dict, annotations: dict[tuple[str, str], str]) -> FunctionSpec:
    args = {}
    for arg, info in item.get("arguments", {}).items():
        key = (item["name"], arg)
        args[arg] = ArgSpec(
            name=arg,
            type=info.get("type", "Any"),
            required=bool(info.get("required", False)),
            default=info.get("default"),
            description=(info.get("description") or "").strip(),
            match_type=annotations.get(key) or _EXTRA_MATCH_TYPES.get(key, "strict"),
            **documented_values(info.get("description") or ""),
        )
    return FunctionSpec(
        name=item["name"],
        description=(item.get("description") or "").strip(),
        arguments=args,
        returns=item.get("returns"),
        examples=tuple(item.get("examples", ())),
        raw=item,
    )


_SPECS: dict[str, FunctionSpec] | None = None


def load_specs(path: str | os.PathLike | None = None) -> dict[str, FunctionSpec]:
    """Function specs by name: the packaged DroidCall api.jsonl, or an api.jsonl-format file."""
    global _SPECS
    if path is None and _SPECS is not None:
        return dict(_SPECS)
    if path is None:
        lines = _asset_lines("api.jsonl")
    else:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UserError(f"cannot read function specs {path}: {e.strerror}") from None
    annotations = _annotations()
    specs: dict[str, FunctionSpec] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            spec = _parse_spec(json.loads(line), annotations)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path or 'api.jsonl'}:{i}: not a function spec ({e})") from None
        if spec.name in specs:
            raise UserError(f"{path or 'api.jsonl'}:{i}: duplicate function {spec.name}")
        specs[spec.name] = spec
    if path is None:
        _SPECS = specs
    return dict(specs)


def check_answers(answers: Any, key: str = "answers") -> str | None:
    """Why a DroidCall ``answers`` value is malformed, or None if it is well-formed."""
    if not isinstance(answers, list):
        return f"'{key}' is not a list"
    for j, call in enumerate(answers):
        if not isinstance(call, dict):
            return f"{key}[{j}] is not an object"
        if not isinstance(call.get("name"), str) or not call["name"]:
            return f"{key}[{j}] has no function name"
        if not isinstance(call.get("arguments") or {}, dict):
            return f"{key}[{j}].arguments is not an object"
    return None


def normalize_answers(answers: list[dict]) -> list[dict]:
    """Fill in missing ids (position) and arguments ({}), keep everything else."""
    out = []
    for j, call in enumerate(answers):
        cid = call.get("id", j)
        out.append({"id": cid if isinstance(cid, int) and not isinstance(cid, bool) else j,
                    "name": call["name"], "arguments": dict(call.get("arguments") or {})})
    return out


def parse_sample_line(line: str, lineno: int | None = None) -> Sample:
    """One DroidCall JSONL line → Sample; a malformed line gives a Sample with ``error`` set."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        return Sample("", [], lineno, f"invalid JSON ({e.msg} at column {e.colno})")
    if not isinstance(item, dict):
        return Sample("", [], lineno, "line is not a JSON object")
    query = item.get("query", "")
    if not isinstance(query, str):
        query = str(query)
    if "answers" not in item:
        return Sample(query, [], lineno, "no 'answers' field")
    problem = check_answers(item["answers"])
    if problem:
        return Sample(query, [], lineno, problem)
    return Sample(query, normalize_answers(item["answers"]), lineno)


def read_jsonl_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a JSONL file (undecodable bytes replaced, so a bad line is scored, not fatal)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"expected a JSONL file, got a directory: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def load_droidcall(path: str | os.PathLike, keep_blank: bool = False) -> list[Sample]:
    """Read a DroidCall JSONL file. Malformed lines come back as Samples with ``error`` set
    (never an exception); blank lines are skipped unless ``keep_blank`` (then they are errors too,
    so prediction files stay aligned with their gold file line by line)."""
    lines = read_jsonl_lines(path)
    samples = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            if keep_blank:
                samples.append(Sample("", [], i, "blank line"))
            continue
        samples.append(parse_sample_line(line, i))
    return samples


def write_droidcall(samples: list[Sample], path: str | os.PathLike) -> None:
    """Write samples as DroidCall JSONL atomically."""
    write_jsonl([s.to_json() for s in samples], path)


def write_jsonl(records: list[dict], path: str | os.PathLike) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
