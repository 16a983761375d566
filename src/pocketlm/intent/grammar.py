"""Schema-constrained decoding of function calls (what llama.cpp grammars and `outlines` do for JSON).

A small model with the right idea still writes a function that is not among the prompt's candidates, an
argument its function lacks, a malformed literal, or drifts while copying a name from the request.
`CallGrammar.check(text)` says whether `text` is a valid prefix of an answer

    result0 = FN(ARG=VALUE, ...)
    result1 = FN(ARG=result0, ...)

where FN is one of the candidate functions, each ARG an argument of FN (at most once), VALUE a Python
literal of the argument's type or an earlier ``resultK`` whose function returns that type, one of the
listed values where the docs give a closed set ("Possible values are: ..."; dict keys likewise), and -- for the "copy" arguments -- every
string a span of the request's words, as written. `GrammarChooser` decodes greedily through it: of the
tokens in logit order it takes the first that keeps the text valid, so it costs a check or two per token.

Which arguments are copied verbatim from the request is a property of the data, not of the function
docs ("wifi" for "Wi-Fi", ISO dates for "March 3 at 5 pm" are not copies): `learn_copy_args` finds
them in the training set and fine-tuning stores them with the checkpoint (`intent.json`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from pocketlm.intent.specs import FunctionSpec, Sample
from pocketlm.utils import atomic_write_text

INVALID, PREFIX, COMPLETE = 0, 1, 2
INTENT_META = "intent.json"  # saved next to a fine-tuned checkpoint: prompt style + copy arguments


class _End(Exception):
    """The text ended inside a production: valid so far."""


class _Bad(Exception):
    """The text can no longer become a valid answer."""


_IDENT = re.compile(r"[A-Za-z0-9_]*")


class CallGrammar:
    def __init__(self, candidates: Iterable[FunctionSpec], query: str = "",
                 copy_args: Iterable[Sequence[str]] = (), max_calls: int = 4):
        self.functions = {s.name: s for s in candidates}
        self.query = query
        self.copy_args = {tuple(x) for x in copy_args}
        self.max_calls = max_calls

    # ------------------------------------------------------------------ public
    def check(self, text: str) -> int:
        """INVALID, PREFIX (can still become valid) or COMPLETE (a whole answer: stopping is allowed)."""
        self._t, self._i = text, 0
        self._results: list[str | None] = []  # return type of each call so far (None: returns nothing)
        try:
            line = 0
            while True:
                self._call(line)
                line += 1
                if self._i == len(self._t):
                    return COMPLETE
                self._lit("\n")
                if line >= self.max_calls:
                    raise _Bad
        except _End:
            return PREFIX
        except _Bad:
            return INVALID

    # ------------------------------------------------------------------ productions
    def _lit(self, s: str) -> None:
        for ch in s:
            if self._i >= len(self._t):
                raise _End
            if self._t[self._i] != ch:
                raise _Bad
            self._i += 1

    def _ident(self, allowed: Iterable[str]) -> str:
        """An identifier from `allowed`; at the end of the text, any prefix of one."""
        word = _IDENT.match(self._t, self._i).group(0)
        self._i += len(word)
        if self._i >= len(self._t):
            if any(a.startswith(word) for a in allowed):
                raise _End
            raise _Bad
        if word not in allowed:
            raise _Bad
        return word

    def _call(self, line: int) -> None:
        self._lit(f"result{line} = ")
        name = self._ident(self.functions)
        spec = self.functions[name]
        self._results.append((spec.returns or {}).get("type"))
        self._lit("(")
        used: set[str] = set()
        while True:
            if self._i >= len(self._t):
                raise _End
            if self._t[self._i] == ")":
                self._i += 1
                return
            remaining = [a for a in spec.arguments if a not in used]
            if not remaining:  # every argument given: only ")" may follow, a ", " would be a dead end
                raise _Bad
            if used:
                self._lit(", ")
            arg = self._ident(remaining)
            used.add(arg)
            self._lit("=")
            a = spec.arguments[arg]
            self._value(a.type, line, (name, arg) in self.copy_args, a.choices, a.keys)

    def _value(self, type_: str, line: int, copy: bool, choices: Sequence[str] = (),
               keys: Sequence[str] = ()) -> None:
        if self._i >= len(self._t):
            raise _End
        ch = self._t[self._i]
        kind, inner, optional = _kind(type_)
        if ch == "r":  # an earlier call's result, where this argument takes a value of that type
            earlier = [str(k) for k in range(line) if _takes(type_, self._results[k])]
            if not earlier:
                raise _Bad
            self._lit("result")
            digits = re.match(r"\d*", self._t[self._i:]).group(0)
            self._i += len(digits)
            if self._i >= len(self._t):
                if any(e.startswith(digits) for e in earlier):
                    raise _End
                raise _Bad  # digits without end would let a lost model write "result000..." forever
            if digits not in earlier:
                raise _Bad
            return
        if ch == "N" and (optional or kind == "any"):
            self._ident(["None"])
            return
        if ch == '"' and kind in ("str", "any"):
            return self._string(copy, choices)
        if ch == "[" and kind in ("list", "any"):
            return self._sequence("[", "]", lambda: self._value(inner, line, copy, choices))
        if ch == "{" and kind in ("dict", "any"):
            def item():
                self._string(False, keys)
                self._lit(": ")
                self._value("any", line, copy)
            return self._sequence("{", "}", item)
        if ch in "TF" and kind in ("bool", "any"):
            self._ident(["True", "False"])
            return
        if (ch.isdigit() or ch == "-") and kind in ("int", "float", "any"):
            m = re.match(r"-?\d*(\.\d*)?", self._t[self._i:]).group(0)
            self._i += len(m)
            if "." in m and kind == "int":
                raise _Bad
            if self._i >= len(self._t):
                raise _End
            if not re.fullmatch(r"-?\d+(\.\d+)?", m):
                raise _Bad
            return
        raise _Bad

    def _sequence(self, open_: str, close: str, item) -> None:
        self._lit(open_)
        first = True
        while True:
            if self._i >= len(self._t):
                raise _End
            if self._t[self._i] == close and not first:
                self._i += 1
                return
            if not first:
                self._lit(", ")
            item()
            first = False

    def _string(self, copy: bool, choices: Sequence[str] = ()) -> None:
        """A string literal; a copy is a span of the request, and with `choices` one of those values."""
        self._lit('"')
        start = self._i
        while True:
            if self._i >= len(self._t):
                sofar = _unescape(self._t[start:self._i])
                if copy and not is_span(self.query, sofar, whole=False):
                    raise _Bad
                if choices and not any(c.startswith(sofar) for c in choices):
                    raise _Bad
                raise _End
            ch = self._t[self._i]
            if ch == "\\":
                # a copy can only need an escape if the request itself has a quote or backslash
                if copy and '"' not in self.query and "\\" not in self.query:
                    raise _Bad
                if choices and not any(c != c.translate(_NEEDS_ESCAPE) for c in choices):
                    raise _Bad  # ... and a listed value only if one of them has such a character
                if self._i + 1 >= len(self._t):
                    raise _End
                if self._t[self._i + 1] not in _ESCAPES:  # "\u", "\x" ... may not even parse
                    raise _Bad
                self._i += 2
                continue
            if ch in "\r\n":  # a line break ends a Python string literal: the answer would not parse
                raise _Bad
            if ch == '"':
                content = self._t[start:self._i]
                if copy and not (content and is_span(self.query, _unescape(content), whole=True)):
                    raise _Bad
                if choices and _unescape(content) not in choices:
                    raise _Bad
                self._i += 1
                return
            self._i += 1


_TRAILING = ",.;:!?"
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}  # the escapes format_answer writes
_NEEDS_ESCAPE = str.maketrans("", "", '\\"\n')


def _unescape(literal: str) -> str:
    """The text of a Python string literal's body (``\\"`` → ``"``). `_string` never passes a body that
    ends inside an escape."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal)


def is_span(query: str, content: str, whole: bool = True) -> bool:
    """`content` occurs in the request starting at a word start and ending at a word end, not on
    punctuation: what a copied value may be. With ``whole=False``: `content` can still be extended into
    such a span (so constrained decoding never enters a copy it cannot close). Case-sensitive: values
    are copied as written."""
    def closes(start: int, end: int) -> bool:
        return end > start and query[end - 1] not in _TRAILING and (end == len(query) or not query[end].isalnum())

    i = query.find(content)
    while i >= 0:
        if i == 0 or not query[i - 1].isalnum():
            end = i + len(content)
            if whole and closes(i, end):
                return True
            if not whole and any(closes(i, e) for e in range(end, len(query) + 1)):
                return True
        i = query.find(content, i + 1)
    return False


def _takes(arg_type: str, result_type: str | None) -> bool:
    """Whether an argument of `arg_type` can take a call result of `result_type` (None: no result):
    the same kind, and for lists the same element type; "Any" takes everything."""
    if result_type is None:
        return False
    arg, ret = _kind(arg_type), _kind(result_type)
    if arg[0] == "any":
        return True
    return arg[0] == ret[0] and (arg[0] != "list" or "any" in (arg[1], ret[1]) or arg[1] == ret[1])


def _kind(type_: str) -> tuple[str, str, bool]:
    """("str"|"int"|"float"|"bool"|"list"|"dict"|"any", element type of a list, Optional?)."""
    t = type_.strip().lower().replace(" ", "")
    optional = t.startswith("optional[")
    if optional:
        t = t[len("optional["):-1]
    for kind in ("list", "dict", "str", "int", "float", "bool"):
        if t.startswith(kind):
            return kind, (t[len("list["):-1] if t.startswith("list[") else "any"), optional
    return "any", "any", optional


# ----------------------------------------------------------------------------- decoding

class PieceIndex:
    """Token ids grouped by the first character of their text, built once per vocabulary: a character
    that breaks the answer rules out every token that starts with it, so a lost model's step checks the
    ~100 distinct first characters instead of up to the whole vocabulary."""

    def __init__(self, pieces: Sequence[str]):
        import torch

        self.pieces = pieces
        firsts = sorted({p[0] for p in pieces if p})
        code = {c: i for i, c in enumerate(firsts)}
        self.first_chars = firsts
        self.first_code = torch.tensor([code[p[0]] if p else -1 for p in pieces], dtype=torch.long)


class GrammarChooser:
    """Greedy token choice for `pocketlm.runtime.sampling.stream(choose=...)` that keeps the output valid.

    In logit order it takes the first token whose text keeps the answer a valid prefix (usually the first
    or second one); a stop token only once the answer is complete. When the first `fast_tries` fail (a
    model that has lost its way) and a `PieceIndex` is given, only tokens whose first character is allowed
    are checked. None (stop) when no token of the first `max_tries` (default: all) fits."""

    def __init__(self, grammar: CallGrammar, token_text, stop_ids: Iterable[int], max_tries: int | None = None,
                 index: PieceIndex | None = None, fast_tries: int = 32):
        self.grammar, self.token_text, self.stops, self.max_tries = grammar, token_text, set(stop_ids), max_tries
        self.index, self.fast_tries = index, fast_tries
        self.text = ""

    def __call__(self, logits) -> int | None:
        import torch

        self._complete = None
        # the answer is almost always among the top few: a top-k costs 0.16 ms where sorting a 49k vocabulary
        # costs 4.3 ms, half the grammar's whole per-token overhead (benchmarks/intent_smollm2.py)
        k = min(self.fast_tries, logits.numel(), self.max_tries or logits.numel())
        tok = self._first_valid(torch.topk(logits, k).indices.tolist())
        if tok is not None:
            return tok
        order = torch.argsort(logits, descending=True)[k: self.max_tries]
        if self.index is not None and len(order):
            allowed = [i for i, c in enumerate(self.index.first_chars)
                       if self.grammar.check(self.text + c) != INVALID]
            keep = torch.isin(self.index.first_code[order], torch.tensor(allowed, dtype=torch.long))
            keep |= torch.isin(order, torch.tensor(sorted(self.stops), dtype=torch.long))
            order = order[keep]
        return self._first_valid(order.tolist())

    def _first_valid(self, candidates: list[int]) -> int | None:
        for tok in candidates:
            if tok in self.stops:
                if self._complete is None:
                    self._complete = self.grammar.check(self.text) == COMPLETE
                if self._complete:
                    return tok
                continue
            piece = self.token_text(tok)
            if piece and self.grammar.check(self.text + piece) != INVALID:
                self.text += piece
                return tok
        return None


# ----------------------------------------------------------------------------- copy arguments

def string_values(value: Any) -> list[str]:
    """Every string inside an argument value (lists and dicts walked), result references ("#0") left out."""
    if isinstance(value, str):
        return [] if value.startswith("#") else [value]
    if isinstance(value, list):
        return [s for v in value for s in string_values(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_values(v)]
    return []


def learn_copy_args(samples: Iterable[Sample], min_count: int = 5, min_share: float = 0.98) -> list[list[str]]:
    """(function, argument) pairs whose string values are word spans of the request in at least `min_share`
    of at least `min_count` training calls: the arguments the decoder may restrict to copies."""
    seen: dict[tuple[str, str], list[int]] = {}
    for s in samples:
        q = s.query
        for call in s.answers:
            for arg, value in (call.get("arguments") or {}).items():
                strings = string_values(value)
                if strings:
                    hits = seen.setdefault((call["name"], arg), [0, 0])
                    hits[0] += all(x and is_span(q, x) for x in strings)
                    hits[1] += 1
    return sorted([list(k) for k, (hit, n) in seen.items() if n >= min_count and hit / n >= min_share])


def save_intent_meta(ckpt_dir: str | Path, *, doc_style: str, candidates: int, copy_args: list) -> Path:
    meta = {"doc_style": doc_style, "candidates": candidates, "copy_args": copy_args}
    return atomic_write_text(Path(ckpt_dir) / INTENT_META, json.dumps(meta, indent=2) + "\n")


def load_intent_meta(ckpt_dir: str | Path) -> dict:
    """The checkpoint's intent.json ({} when it has none or it is unreadable)."""
    try:
        return parse_intent_meta((Path(ckpt_dir) / INTENT_META).read_text())
    except OSError:
        return {}


def parse_intent_meta(text: str | None) -> dict:
    """intent.json's content as a dict ({} for None or anything unreadable)."""
    try:
        meta = json.loads(text) if text else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


__all__ = ["CallGrammar", "GrammarChooser", "PieceIndex", "learn_copy_args", "string_values", "save_intent_meta",
           "load_intent_meta", "parse_intent_meta", "INVALID", "PREFIX", "COMPLETE", "INTENT_META"]
