"""DroidCall's ``code_short`` prompt, the answer format and its parser, and a lexical retriever.

Prompt (one system + one user turn): the system turn is "You are an expert in composing
functions."; the user turn lists the candidate function docs in DroidCall's code doc layout
(Name / Description / Args / Returns / Example blocks separated by a row of "=") and ends with
"Now my query is: <query>". The answer is one line per call::

    result0 = get_contact_info(name="Victor", key="phone")
    result1 = dial(phone_number=result0)

where ``resultK`` as an argument value is DroidCall's nested reference "#K".
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections import Counter
from typing import Any, Iterable

from pocketlm.intent.specs import FunctionSpec, Sample

SYSTEM_PROMPT = "You are an expert in composing functions."
QUERY_PREFIX = "Now my query is: "
_SEP = "\n" + "=" * 50 + "\n"
_REF = re.compile(r"^#(\d+)$")


# ----------------------------------------------------------------------------- prompt

def format_function_doc(spec: FunctionSpec) -> str:
    """One function in DroidCall's code doc layout (FunctionFormatter._format_code_single_tool)."""
    lines = [f"Name:\n    {spec.name}", f"Description:\n    {spec.description.strip()}"]
    if spec.arguments:
        args = "Args:"
        for a in spec.arguments.values():
            args += f"\n    {a.name} ({a.type}): {a.description.strip()}"
        lines.append(args)
    else:
        lines.append("Args:\n    None")
    if spec.returns:
        lines.append(f"Returns:\n    {spec.returns.get('type', 'None')}: {str(spec.returns.get('description', '')).strip()}")
    else:
        lines.append("Returns:\n    None")
    if spec.examples:
        lines.append(("Example:\n" + "".join(f"    {e.strip()}\n" for e in spec.examples)).strip())
    return "\n".join(lines)


def format_function_brief(spec: FunctionSpec) -> str:
    """A compact doc for small-context models: name, first description line, typed arguments."""
    first = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
    args = ", ".join(f"{a.name}: {a.type}" + ("" if a.required else f" = {a.default!r}")
                     for a in spec.arguments.values())
    return f"{spec.name}({args})\n    {first}"


DOC_STYLES = ("full", "brief")


def build_prompt(query: str, candidate_specs: Iterable[FunctionSpec], doc_style: str = "full") -> list[dict]:
    """Chat messages (system + user) for one query; append the assistant turn for training.
    ``doc_style="full"`` is DroidCall's code doc layout; ``"brief"`` (one line of signature and one of
    description per function) keeps prompts short for tiny-context models. Train and run with the same."""
    if doc_style not in DOC_STYLES:
        raise ValueError(f"doc_style must be one of {DOC_STYLES}, not {doc_style!r}")
    fmt = format_function_doc if doc_style == "full" else format_function_brief
    docs = _SEP.join(fmt(s) for s in candidate_specs)
    user = f"Here is a list of functions:\n{docs}\n\n{QUERY_PREFIX}{query}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _as_rng(rng: Any) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def choose_candidates(sample: Sample | dict, specs: dict[str, FunctionSpec], k: int = 4,
                      rng: Any = None) -> list[FunctionSpec]:
    """The gold functions plus random distractors up to ``k`` in all, shuffled (DroidCall's
    training-time "fake retriever"). Gold functions missing from ``specs`` are left out; if there
    are more than ``k`` distinct gold functions they are all kept."""
    rng = _as_rng(rng)
    answers = sample.answers if isinstance(sample, Sample) else sample.get("answers", [])
    gold = list(dict.fromkeys(c["name"] for c in answers if c.get("name") in specs))
    others = sorted(n for n in specs if n not in gold)
    chosen = gold + rng.sample(others, max(0, min(k - len(gold), len(others))))
    rng.shuffle(chosen)
    return [specs[n] for n in chosen]


# ----------------------------------------------------------------------------- answer format

def _literal(value: Any) -> str:
    """A Python literal for an argument value; "#k" references become ``resultk``."""
    if isinstance(value, str):
        m = _REF.match(value)
        if m:
            return f"result{m.group(1)}"
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return _literal(str(value))


def format_call(call: dict, index: int = 0) -> str:
    args = ", ".join(f"{k}={_literal(v)}" for k, v in (call.get("arguments") or {}).items())
    return f"result{call.get('id', index)} = {call['name']}({args})"


def format_answer(calls: list[dict]) -> str:
    """``result0 = FN(ARG=value, ...)``, one line per call."""
    return "\n".join(format_call(c, i) for i, c in enumerate(calls))


class _Unsupported(ValueError):
    pass


_JSON_NAMES = {"true": True, "false": False, "null": None, "none": None}


def _value(node: ast.AST) -> Any:
    """An argument's AST → Python value; ``resultN`` names → "#N"; JSON true/false/null accepted."""
    if isinstance(node, ast.Name):
        m = re.fullmatch(r"result(\d+)", node.id)
        if m:
            return f"#{int(m.group(1))}"
        if node.id.lower() in _JSON_NAMES:
            return _JSON_NAMES[node.id.lower()]
        raise _Unsupported(f"unknown name {node.id!r}")
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unsupported("dict unpacking")
        return {str(_value(k)): _value(v) for k, v in zip(node.keys, node.values)}
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError) as e:
        raise _Unsupported(f"not a literal ({type(e).__name__})") from None


def _call_from_ast(cid: int, node: ast.Call, specs: dict[str, FunctionSpec] | None) -> dict:
    if not isinstance(node.func, ast.Name):
        raise _Unsupported("function is not a plain name")
    name = node.func.id
    args: dict[str, Any] = {}
    if node.args:
        spec = (specs or {}).get(name)
        if spec is None:
            raise _Unsupported(f"positional arguments to {name} (use ARG=value)")
        names = list(spec.arguments)
        if len(node.args) > len(names):
            raise _Unsupported(f"too many positional arguments to {name}")
        for arg_name, a in zip(names, node.args):
            args[arg_name] = _value(a)
    for kw in node.keywords:
        if kw.arg is None:
            raise _Unsupported("**kwargs")
        args[kw.arg] = _value(kw.value)
    return {"id": cid, "name": name, "arguments": args}


_LINE = re.compile(r"result(\d+)\s*=\s*(\w+\(.*\))\s*$")
_FENCE = re.compile(r"```[a-zA-Z]*|</?tool_call>")


def parse_calls(text: str, specs: dict[str, FunctionSpec] | None = None) -> tuple[list[dict], str | None]:
    """Model output → (calls, error). Calls are ``{"id", "name", "arguments"}`` in output order;
    argument values are parsed as Python literals (never eval'd) and ``resultN`` → "#N".

    The whole text is first parsed as Python (handles calls spanning lines); if that fails each
    line is matched with ``resultN = FN(...)`` and parsed on its own, skipping lines that don't
    parse. Positional arguments are mapped by spec order when ``specs`` is given. The error is
    None when at least one call was read, else a one-line reason (and calls == [])."""
    if not isinstance(text, str):
        return [], "model output is not text"
    text = _FENCE.sub("\n", text).strip()
    if not text:
        return [], "empty output"
    calls: list[dict] = []
    problems: list[str] = []
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None:
        for stmt in tree.body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)):
                m = re.fullmatch(r"result(\d+)", stmt.targets[0].id)
                if not m:
                    continue
                try:
                    calls.append(_call_from_ast(int(m.group(1)), stmt.value, specs))
                except _Unsupported as e:
                    problems.append(f"result{m.group(1)}: {e}")
    else:
        for line in text.splitlines():
            m = _LINE.search(line)
            if not m:
                continue
            try:
                node = ast.parse(m.group(2).strip(), mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                problems.append(f"result{m.group(1)}: not a valid call")
                continue
            if not isinstance(node, ast.Call):
                problems.append(f"result{m.group(1)}: not a call")
                continue
            try:
                calls.append(_call_from_ast(int(m.group(1)), node, specs))
            except _Unsupported as e:
                problems.append(f"result{m.group(1)}: {e}")
    if calls:
        return calls, None
    if problems:
        return [], "unparsable call: " + "; ".join(problems[:3])
    snippet = text[:60].replace("\n", "\\n")
    return [], f"no `resultN = FUNCTION(...)` line in output ({snippet!r})"


# ----------------------------------------------------------------------------- SFT records

def sample_messages(sample: Sample, specs: dict[str, FunctionSpec], rng: Any = None,
                    k: int = 4, doc_style: str = "full") -> list[dict]:
    """Full training conversation for one sample (system, user, assistant)."""
    msgs = build_prompt(sample.query, choose_candidates(sample, specs, k=k, rng=rng), doc_style)
    return msgs + [{"role": "assistant", "content": format_answer(sample.answers)}]


def to_sft_records(samples: list[Sample], specs: dict[str, FunctionSpec], seed: int = 0,
                   k: int = 4, doc_style: str = "full") -> list[dict]:
    """Chat records ``{"messages": [...]}`` for supervised fine-tuning (malformed samples and
    samples calling unknown functions are skipped)."""
    rng = random.Random(seed)
    out = []
    for s in samples:
        if s.error or not s.answers or any(c["name"] not in specs for c in s.answers):
            continue
        out.append({"messages": sample_messages(s, specs, rng=rng, k=k, doc_style=doc_style)})
    return out


# ----------------------------------------------------------------------------- retriever

# Everyday words people use for each function that its DroidCall doc does not contain.
_HINTS = {
    "ACTION_SET_ALARM": "alarm wake me up morning o'clock am pm remind ring at",
    "ACTION_SET_TIMER": "timer countdown minutes seconds hours for",
    "ACTION_SHOW_ALARMS": "show list my alarms which alarms set",
    "ACTION_INSERT_EVENT": "calendar event meeting schedule appointment add",
    "ACTION_IMAGE_CAPTURE": "take photo picture snap capture",
    "ACTION_VIDEO_CAPTURE": "record video clip capture",
    "INTENT_ACTION_STILL_IMAGE_CAMERA": "open camera photo mode",
    "INTENT_ACTION_VIDEO_CAMERA": "open camera video mode",
    "ACTION_PICK": "pick choose select contact",
    "get_contact_info": "number phone email address of contact what is",
    "get_contact_info_from_uri": "contact uri details",
    "ACTION_VIEW_CONTACT": "show view open contact",
    "ACTION_EDIT_CONTACT": "edit update change contact",
    "ACTION_INSERT_CONTACT": "add new save create contact",
    "send_email": "email mail send write",
    "send_message": "text message sms send tell",
    "dial": "call phone dial ring",
    "ACTION_GET_RINGTONE": "ringtone sound choose",
    "ACTION_GET_CONTENT": "select file files pick attach",
    "ACTION_OPEN_DOCUMENT": "open document pdf file",
    "ACTION_CREATE_DOCUMENT": "create new document file",
    "search_location": "map where find location directions navigate near",
    "web_search": "search web google baidu look up internet",
    "open_settings": "settings wifi bluetooth display turn on airplane",
}

_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())]


def retrieve(query: str, specs: dict[str, FunctionSpec], k: int = 4) -> list[FunctionSpec]:
    """Top-``k`` functions for a query by TF-IDF overlap with name + doc + usage hints
    (inference has no gold functions to build the candidate list from)."""
    docs = {n: Counter(_tokens(s.doc() + " " + " ".join([_HINTS.get(n, "")] * 3))) for n, s in specs.items()}
    df = Counter(w for d in docs.values() for w in d)
    n_docs = len(docs)
    q = set(_tokens(query))

    def score(name: str) -> float:
        d = docs[name]
        total = sum(d.values()) or 1
        return sum((d[w] / total) ** 0.5 * math.log(1 + n_docs / df[w]) for w in q if w in d)

    ranked = sorted(specs, key=lambda n: (-score(n), n))
    return [specs[n] for n in ranked[:k]]
