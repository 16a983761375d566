"""The architecture space `pocketlm search` explores, and its enumeration under a parameter budget.

A space (assets/search_space.yaml, or a user YAML with the same keys) lists hidden sizes, a layer
range, head dims, kv-head counts, FFN ratios, activations and tying. `enumerate_space` expands it,
keeps the shapes within the budget and the optional memory caps, and when nothing survives says
which constraint to relax.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pocketlm.model import costs
from pocketlm.model.config import ACTIVATIONS, ModelConfig, read_structured_file
from pocketlm.errors import UserError

BUDGET_KINDS = ("total", "non-embedding")
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


# ---------------------------------------------------------------------------------------------- budget
def parse_budget(text: str | int | float) -> int:
    """'0.5B', '500M', '500000000', '5e8', '500_000_000' -> 500000000."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace("_", "").replace(",", "")
        m = re.fullmatch(r"(\d+(?:\.\d*)?(?:e\d+)?|\.\d+)\s*([kmbg]?)", s, flags=re.IGNORECASE)
        if not m:
            raise UserError(f"bad budget '{text}': use a parameter count like 0.5B, 500M or 500000000")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value < 1e5:
        raise UserError(f"bad budget '{text}': must be at least 100K parameters")
    return int(round(value))


def format_count(n: float) -> str:
    """500000000 -> '0.5B', 494032768 -> '494M' (for messages and tables)."""
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    if n >= 1e6:
        return f"{n / 1e6:.3g}M" if n < 1e8 else f"{n / 1e6:.0f}M"
    return f"{n / 1e3:.3g}K"


# ---------------------------------------------------------------------------------------------- space
@dataclass
class SearchSpace:
    hidden_size: list[int]
    num_layers: list[int]
    head_dim: list[int]
    num_kv_heads: list[int | str]  # ints, or "all" for multi-head attention
    ffn_ratio: list[float]
    activation: list[str]
    tie_embeddings: list[bool]
    multiple_of: int = 64
    max_hidden_per_layer: float | None = None
    base: dict[str, Any] = field(default_factory=dict)
    source: str = "default"

    @classmethod
    def load(cls, path: str | Path | None = None) -> "SearchSpace":
        """The default space, or a user YAML/JSON (keys it omits fall back to the default)."""
        default_text = resources.files("pocketlm").joinpath("assets/search_space.yaml").read_text()
        import yaml

        data = yaml.safe_load(default_text)
        source = "default"
        if path is not None:
            user = read_structured_file(path)
            if not isinstance(user, dict):
                raise UserError(f"search space {path} must be a mapping of field: values")
            known = set(data)
            unknown = sorted(set(user) - known)
            if unknown:
                raise UserError(f"unknown search-space key(s) in {path}: {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(known))}")
            data.update(user)
            source = str(path)
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "dict") -> "SearchSpace":
        def ints(key: str, allow: tuple[str, ...] = ()) -> list:
            vals = _as_list(data.get(key), key)
            out = []
            for v in vals:
                if isinstance(v, str) and v in allow:
                    out.append(v)
                elif isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise UserError(f"search space '{key}' must hold positive integers, got {v!r}")
                else:
                    out.append(v)
            return out

        layers = data.get("num_layers")
        if isinstance(layers, dict):
            try:
                lo, hi = int(layers["min"]), int(layers["max"])
                step = int(layers.get("step", 1))
            except (KeyError, TypeError, ValueError):
                raise UserError("search space 'num_layers' must be a list or {min: N, max: M[, step: S]}") from None
            if not 1 <= lo <= hi or step < 1:
                raise UserError(f"search space 'num_layers' range is empty or invalid: {layers}")
            layer_list = list(range(lo, hi + 1, step))
        else:
            layer_list = ints("num_layers")
        ratios = _as_list(data.get("ffn_ratio"), "ffn_ratio")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0:
                raise UserError(f"search space 'ffn_ratio' must hold positive numbers, got {r!r}")
        acts = _as_list(data.get("activation"), "activation")
        for a in acts:
            if a not in ACTIVATIONS:
                raise UserError(f"search space activation '{a}' unknown; choose from {', '.join(ACTIVATIONS)}")
        ties = _as_list(data.get("tie_embeddings"), "tie_embeddings")
        if any(not isinstance(t, bool) for t in ties):
            raise UserError("search space 'tie_embeddings' must be a list of true/false")
        multiple = data.get("multiple_of", 64)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple <= 0:
            raise UserError(f"search space 'multiple_of' must be a positive integer, got {multiple!r}")
        mhl = data.get("max_hidden_per_layer")
        if mhl is not None and (isinstance(mhl, bool) or not isinstance(mhl, (int, float)) or mhl <= 0):
            raise UserError(f"search space 'max_hidden_per_layer' must be a positive number or null, got {mhl!r}")
        base = data.get("base") or {}
        if not isinstance(base, dict):
            raise UserError("search space 'base' must be a mapping of ModelConfig fields")
        searched = {"vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                    "intermediate_size", "activation", "tie_embeddings", "name", "source"}
        bad = sorted(set(base) & searched)
        if bad:
            raise UserError(f"search space 'base' cannot set searched field(s): {', '.join(bad)}")
        try:
            ModelConfig(**base)  # validates field names and values early
        except TypeError as e:
            raise UserError(f"search space 'base' has an unknown field: {e}") from None
        return cls(hidden_size=ints("hidden_size"), num_layers=layer_list, head_dim=ints("head_dim"),
                   num_kv_heads=ints("num_kv_heads", allow=("all",)), ffn_ratio=[float(r) for r in ratios],
                   activation=list(acts), tie_embeddings=list(ties), multiple_of=multiple,
                   max_hidden_per_layer=None if mhl is None else float(mhl), base=dict(base), source=source)

    def to_dict(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers, "head_dim": self.head_dim,
                "num_kv_heads": self.num_kv_heads, "ffn_ratio": self.ffn_ratio, "activation": self.activation,
                "tie_embeddings": self.tie_embeddings, "multiple_of": self.multiple_of,
                "max_hidden_per_layer": self.max_hidden_per_layer, "base": self.base, "source": self.source}


def _as_list(value: Any, key: str) -> list:
    if value is None:
        raise UserError(f"search space is missing '{key}'")
    vals = value if isinstance(value, list) else [value]
    if not vals:
        raise UserError(f"search space '{key}' is empty")
    return vals


# ---------------------------------------------------------------------------------------------- constraints
@dataclass
class Constraints:
    budget: int
    budget_kind: str = "total"
    tolerance: float = 0.05
    vocab_size: int = 49152
    precision: str = "q4_0"  # what --max-weight-mb is measured in
    max_weight_mb: float | None = None
    max_kv_mb: float | None = None
    kv_context: int = 2048

    def __post_init__(self) -> None:
        if self.budget_kind not in BUDGET_KINDS:
            raise UserError(f"unknown budget kind '{self.budget_kind}'; choose {' or '.join(BUDGET_KINDS)}")
        if not 0 < self.tolerance < 1:
            raise UserError(f"--tolerance must be between 0 and 1 (0.05 = ±5%), got {self.tolerance}")
        if self.vocab_size <= 0:
            raise UserError(f"--vocab-size must be positive, got {self.vocab_size}")
        for name in ("max_weight_mb", "max_kv_mb"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.kv_context <= 0:
            raise UserError(f"--kv-context must be positive, got {self.kv_context}")

    def budget_params(self, groups: dict[str, int]) -> int:
        return groups["total"] if self.budget_kind == "total" else groups["non_embedding"]

    def within_budget(self, groups: dict[str, int], tolerance: float | None = None) -> bool:
        tol = self.tolerance if tolerance is None else tolerance
        return abs(self.budget_params(groups) - self.budget) <= tol * self.budget

    def describe(self) -> str:
        return f"±{self.tolerance:.0%} of {format_count(self.budget)} {self.budget_kind} params"


# ---------------------------------------------------------------------------------------------- enumeration
@dataclass
class Candidate:
    cfg: ModelConfig
    params: dict[str, int]

    @property
    def key(self) -> str:
        return self.cfg.shape_key()


@dataclass
class Enumeration:
    candidates: list[Candidate]
    considered: int  # structurally valid shapes before the budget and caps
    rejected: dict[str, int]  # constraint -> shapes it rejected (a shape may fail several)
    params_range: tuple[int, int]  # smallest/largest budget-kind params in the space


_CONSTRAINT_HINTS = {
    "shape": "raise max_hidden_per_layer in the space (--space FILE) or add smaller hidden sizes / more layers",
    "weight": "raise --max-weight-mb, pick a smaller --quant, or lower --budget",
    "kv": "raise --max-kv-mb, lower --kv-context, or add fewer kv heads (num_kv_heads) to the space",
}


def candidate_config(space: SearchSpace, vocab_size: int, hidden: int, layers: int, head_dim: int,
                     kv: int, ffn: int, act: str, tied: bool) -> ModelConfig:
    heads = hidden // head_dim
    name = f"h{hidden}-l{layers}-a{heads}-kv{kv}-d{head_dim}-f{ffn}{'' if act == 'silu' else '-' + act}" \
           f"{'' if tied else '-untied'}"
    return ModelConfig(vocab_size=vocab_size, hidden_size=hidden, num_layers=layers, num_heads=heads,
                       num_kv_heads=kv, head_dim=head_dim, intermediate_size=ffn, activation=act,
                       tie_embeddings=tied, name=name, source="pocketlm search candidate", **space.base)


def enumerate_space(space: SearchSpace, cons: Constraints) -> Enumeration:
    """All distinct shapes of the space that meet the budget and caps (raises UserError if none)."""
    base = ModelConfig(**space.base)
    gated, bias = base.gated_mlp, base.qkv_bias
    survivors: list[tuple] = []
    seen: set[tuple] = set()
    considered = 0
    near_budget = 0
    rejected = {"budget": 0, "shape": 0, "weight": 0, "kv": 0}
    only = {"shape": 0, "weight": 0, "kv": 0}  # near-budget shapes failing just this one constraint
    smallest = {"weight": math.inf, "kv": math.inf}
    lo_params, hi_params = math.inf, 0
    for hidden, head_dim, kv_opt, ratio, act, tied in itertools.product(
            space.hidden_size, space.head_dim, space.num_kv_heads, space.ffn_ratio,
            space.activation, space.tie_embeddings):
        if hidden % head_dim:
            continue
        heads = hidden // head_dim
        kv = heads if kv_opt == "all" else kv_opt
        if kv > heads or heads % kv:
            continue
        ffn = max(space.multiple_of, int(round(ratio * hidden / space.multiple_of)) * space.multiple_of)
        for layers in space.num_layers:
            shape = (hidden, layers, head_dim, kv, ffn, act, tied)
            if shape in seen:
                continue
            seen.add(shape)
            considered += 1
            # Duck-typed config: costs' formulas without ModelConfig validation (200k shapes).
            ns = SimpleNamespace(hidden_size=hidden, num_layers=layers, q_dim=hidden, kv_dim=kv * head_dim,
                                 qkv_bias=bias, gated_mlp=gated, intermediate_size=ffn,
                                 vocab_size=cons.vocab_size, tie_embeddings=tied)
            groups = costs.param_groups(ns)
            n = cons.budget_params(groups)
            lo_params, hi_params = min(lo_params, n), max(hi_params, n)
            if not cons.within_budget(groups):
                rejected["budget"] += 1
                continue
            near_budget += 1
            failed = []
            if space.max_hidden_per_layer is not None and hidden / layers > space.max_hidden_per_layer:
                failed.append("shape")
            if cons.max_weight_mb is not None:
                wmb = costs.weight_bytes(ns, cons.precision) / 1e6
                smallest["weight"] = min(smallest["weight"], wmb)
                if wmb > cons.max_weight_mb:
                    failed.append("weight")
            if cons.max_kv_mb is not None:
                kmb = costs.kv_bytes_per_token(ns) * cons.kv_context / 1e6
                smallest["kv"] = min(smallest["kv"], kmb)
                if kmb > cons.max_kv_mb:
                    failed.append("kv")
            for c in failed:
                rejected[c] += 1
            if len(failed) == 1:
                only[failed[0]] += 1
            if not failed:
                survivors.append(shape)

    if not survivors:
        raise UserError(_empty_message(cons, considered, near_budget, rejected, only, smallest,
                                       (lo_params, hi_params), space))
    candidates = []
    for hidden, layers, head_dim, kv, ffn, act, tied in survivors:
        cfg = candidate_config(space, cons.vocab_size, hidden, layers, head_dim, kv, ffn, act, tied)
        candidates.append(Candidate(cfg, costs.param_groups(cfg)))
    return Enumeration(candidates, considered, rejected, (int(lo_params), int(hi_params)))


def _empty_message(cons: Constraints, considered: int, near_budget: int, rejected: dict, only: dict,
                   smallest: dict, prange: tuple, space: SearchSpace) -> str:
    head = f"no candidate within {cons.describe()} in the space"
    if considered == 0:
        return (f"the search space has no valid shape (head_dim must divide hidden_size and kv heads divide "
                f"query heads); check hidden_size/head_dim/num_kv_heads in {space.source}")
    if near_budget == 0:
        lo, hi = prange
        return (f"{head} (its {considered:,} shapes span {format_count(lo)}–{format_count(hi)}); "
                f"widen --tolerance or the space's hidden_size / num_layers ranges")
    # Something other than the budget eliminated every near-budget shape: name the constraint whose
    # relaxation alone would admit the most shapes (ties: the one that rejected the most).
    worst = max(("shape", "weight", "kv"), key=lambda c: (only[c], rejected[c]))
    if worst == "shape":
        detail = (f"all {near_budget:,} near-budget shapes are wider than max_hidden_per_layer="
                  f"{space.max_hidden_per_layer:g} (hidden/layers)")
    elif worst == "weight":
        detail = (f"every near-budget shape needs more than --max-weight-mb {cons.max_weight_mb:g} "
                  f"({cons.precision}; smallest {smallest['weight']:,.1f} MB)")
    else:
        detail = (f"every near-budget shape needs more than --max-kv-mb {cons.max_kv_mb:g} of KV cache at "
                  f"{cons.kv_context} tokens (smallest {smallest['kv']:,.1f} MB)")
    return f"{head} that also meets the constraints: {detail}; {_CONSTRAINT_HINTS[worst]}"


def features(cfg: ModelConfig) -> tuple[float, ...]:
    """Scaled shape coordinates for diverse sampling (roughly unit range each)."""
    return (math.log2(cfg.hidden_size) / 2, cfg.num_layers / 16, math.log2(cfg.kv_dim) / 3,
            cfg.intermediate_size / cfg.hidden_size / 2, cfg.head_dim / 64)


__all__ = ["SearchSpace", "Constraints", "Candidate", "Enumeration", "enumerate_space", "parse_budget",
           "format_count", "BUDGET_KINDS", "features", "candidate_config"]
