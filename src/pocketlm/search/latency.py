"""Analytic latency model: predict prefill/decode time of any config on a device, fitted to measurements.

Batch-1 inference time is a sum of a few physical costs (pocketlm.model.costs gives the bytes and FLOPs):

    decode, one token at position T:
        t = fixed + per_layer * L + decode_bytes(T) / bandwidth_eff
            + linear_flops / compute_eff + attention_flops(T) / attention_compute_eff
    prefill of P tokens after S cached ones (S = 0 for a fresh prompt; TTFT = this):
        t = fixed + per_token * P + per_layer_token * P * L
            + weight_bytes * ceil(P / 512) / bandwidth_eff      # weights stream once per micro-batch
            + linear_flops(P) / compute_eff + attention_flops(P, S) / attention_compute_eff

Cache: a model whose weights (nearly) fit in the last-level cache decodes faster than bytes/DRAM
bandwidth says, and a single linear bytes term fitted across sizes is bent by it. So decode bytes
are split at an effective cache size C: min(bytes, C) count at a cache cost (`s_per_cached_byte`)
and bytes beyond C at the DRAM cost (`s_per_byte`). C is a device property, but not one the OS
reports reliably (a VM reports the host socket's whole shared L3), so `fit` selects it from the
training data (powers of two within the measured range; 0 = no cache term unless one clearly
helps) and stores it with the coefficients as `cache_bytes`. Older profiles without it: C = 0.

Fixed and per-layer terms are the engine's overheads (graph launch, thread sync, sampling); they
are why tiny models fall short of the bandwidth roofline. Each coefficient is a time per unit and
must be >= 0, so the fit is a nonnegative least squares on relative errors (each row divided by
its measured time, so a 5 ms and a 5 s measurement count the same). Coefficients are fitted per
precision (llama.cpp's Q4_0, Q8_0 and F16 kernels have different compute efficiency).

Bandwidth bound: at a fixed precision, bytes and linear FLOPs per token are both nearly
proportional to the parameter count, so an unconstrained fit can put all of the weight traffic on
the FLOP term (s_per_byte = 0, "infinite bandwidth"). Given the device's measured bandwidth, `fit`
keeps s_per_byte >= 1 / bandwidth (a byte from DRAM cannot take less time than that) and fits the
other terms on what that leaves; the cache term is not bound (cache is faster than DRAM).

Device profiles, llama-bench calibration: pocketlm.search.profiles. CLI: pocketlm.search.cli.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np

from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import resolve_config
from pocketlm.errors import UserError

UBATCH = 512  # llama.cpp's default physical batch: prefill streams the weights once per 512 tokens

DECODE_TERMS = ("fixed_s", "per_layer_s", "s_per_byte", "s_per_flop", "s_per_attn_flop", "s_per_cached_byte")
PREFILL_TERMS = ("fixed_s", "per_token_s", "per_layer_token_s", "s_per_byte", "s_per_flop", "s_per_attn_flop")

# terms older profiles lack: they default to 0 (no cache term), so those profiles load unchanged
OPTIONAL_TERMS = {"s_per_cached_byte": 0.0}
# a cache size is only chosen if its training error is below this fraction of the no-cache one
_CACHE_GAIN = 0.85

# GGUF / CLI precision names -> pocketlm.model.costs precision names (the one place they are mapped)
# ---------------------------------------------------------------------------- features
def decode_features(cfg: ModelConfig, position: int, quant: str, n: int = 1, cache_bytes: float = 0.0) -> np.ndarray:
    """Mean per-token features of decoding `n` tokens starting at `position` (bytes and FLOPs are
    linear in position, so the mean equals the average of the first and last step). Bytes read per
    step are split at the effective cache size: beyond it (DRAM) and within it (cache)."""
    prec = costs.cost_precision(quant)
    last = position + max(n, 1) - 1
    bytes_ = (costs.decode_bytes(cfg, position, prec) + costs.decode_bytes(cfg, last, prec)) / 2
    linear = 2 * costs.matmul_params_per_token(cfg)
    attn = (costs.attention_flops(cfg, 1, position) + costs.attention_flops(cfg, 1, last)) / 2
    cached = min(bytes_, max(float(cache_bytes), 0.0))
    return np.array([1.0, cfg.num_layers, bytes_ - cached, linear, attn, cached], dtype=np.float64)


def prefill_features(cfg: ModelConfig, prompt_len: int, quant: str, start: int = 0) -> np.ndarray:
    prec = costs.cost_precision(quant)
    P, L = prompt_len, cfg.num_layers
    linear = 2 * costs.matmul_params_per_token(cfg, with_head=False) * P + 2 * cfg.vocab_size * cfg.hidden_size
    streamed = costs.weight_bytes(cfg, prec) * math.ceil(P / UBATCH)
    return np.array([1.0, P, P * L, streamed, linear, costs.attention_flops(cfg, P, start)], dtype=np.float64)


# ---------------------------------------------------------------------------- NNLS
def nnls(A: np.ndarray, b: np.ndarray, max_iter: int | None = None, tol: float = 1e-10) -> np.ndarray:
    """min ||Ax - b|| subject to x >= 0 (Lawson-Hanson active set; scipy.optimize.nnls without scipy)."""
    A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m, n = A.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = A.T @ (b - A @ x)
    for _ in range(max_iter or 3 * n + 10):
        if passive.all() or (w[~passive] <= tol).all():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:  # inner loop: keep the unconstrained solution on the passive set feasible
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            bad = passive & (z <= 0)
            alpha = np.min(x[bad] / (x[bad] - z[bad]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = A.T @ (b - A @ x)
    return x


def _fit_relative(X: np.ndarray, y: np.ndarray, lower: np.ndarray | None = None) -> np.ndarray:
    """Coefficients c >= lower minimizing the relative error of X @ c against y. The bound is an
    NNLS on the shifted variable d = c - lower: fit d >= 0 to what the bounded part leaves."""
    A = X / y[:, None]
    lower = np.zeros(X.shape[1]) if lower is None else np.asarray(lower, dtype=np.float64)
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    return lower + nnls(A / scale, np.ones(len(y)) - A @ lower) / scale


def _fit_robust(X: np.ndarray, y: np.ndarray, lower: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """_fit_relative, then once more without outliers: timings on a shared machine have hiccups
    (a repeat that lost the CPU) that would otherwise bend every coefficient. A point is an outlier
    when its relative residual exceeds 4x the median one (and 15%). Returns (coefficients, dropped)."""
    c = _fit_relative(X, y, lower)
    if len(y) < 2 * X.shape[1]:
        return c, 0
    resid = np.abs(X @ c - y) / y
    keep = resid <= max(4 * float(np.median(resid)), 0.15)
    if keep.all():
        return c, 0
    return _fit_relative(X[keep], y[keep], lower), int((~keep).sum())


def _lower_bounds(terms: tuple[str, ...], bandwidth_gbs: float | None) -> np.ndarray:
    """Per-term lower bounds: s_per_byte >= 1 / bandwidth when the bandwidth is known, else all 0."""
    lower = np.zeros(len(terms))
    if bandwidth_gbs:
        lower[terms.index("s_per_byte")] = 1.0 / (bandwidth_gbs * 1e9)
    return lower


class Roofline(Protocol):
    """What `LatencyModel.fit` needs of a prior (a DeviceProfile has it)."""

    name: str
    bandwidth_gbs: float | None
    compute_gflops: float | None


def roofline_coefficients(bandwidth_gbs: float, compute_gflops: float) -> dict[str, dict[str, float]]:
    """No overheads; bytes at peak bandwidth, FLOPs at peak compute (attention too)."""
    s_byte = 1.0 / (bandwidth_gbs * 1e9)
    s_flop = 1.0 / (compute_gflops * 1e9)
    return {"decode": {"fixed_s": 0.0, "per_layer_s": 0.0, "s_per_byte": s_byte, "s_per_flop": s_flop,
                       "s_per_attn_flop": s_flop, "s_per_cached_byte": s_byte},
            "prefill": {"fixed_s": 0.0, "per_token_s": 0.0, "per_layer_token_s": 0.0, "s_per_byte": s_byte,
                        "s_per_flop": s_flop, "s_per_attn_flop": s_flop}}


# ---------------------------------------------------------------------------- the model
@dataclass
class LatencyModel:
    """Coefficients per precision: {"q4_0": {"decode": {term: value}, "prefill": {term: value}}, ...}."""

    coefficients: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, records: Iterable[dict], prior: Roofline | None = None, cache_bytes: float | None = None,
            bandwidth_gbs: float | None = None) -> "LatencyModel":
        """Fit to measurement records (`pocketlm bench` results.json "records", or any list of dicts
        with "config" (ModelConfig or its dict), "quant", "prompt_len", "decode_len", "ttft_s",
        "decode_tok_s"; optional "start" = cached tokens before the prompt, "decode_start" = position
        the decode run starts at (default prompt_len)).

        A phase with fewer measurements than coefficients, or fewer than 3 distinct configs, cannot
        pin every coefficient; if `prior` (a profile with bandwidth and compute) is given, that phase
        is fitted as one scale factor on the prior's roofline instead.

        `cache_bytes`: the effective cache size for decode; None selects it from the training data
        (see the module docstring), 0 disables the cache term.
        `bandwidth_gbs`: measured DRAM bandwidth; s_per_byte is kept >= 1 / bandwidth (default: the
        prior's bandwidth; None without a prior = unbounded).
        """
        obs = _observations(records)
        if not obs:
            raise UserError("no usable measurements to fit (need records with config, quant, prompt_len "
                            "and ttft_s and/or decode_tok_s)")
        if bandwidth_gbs is None and prior is not None:
            bandwidth_gbs = prior.bandwidth_gbs
        model = cls()
        for quant in sorted({o["quant"] for o in obs}):
            entry: dict[str, dict[str, float]] = {}
            for phase, terms in (("decode", DECODE_TERMS), ("prefill", PREFILL_TERMS)):
                rows = [o for o in obs if o["quant"] == quant and o["phase"] == phase]
                if not rows:
                    continue
                y = np.array([o["y"] for o in rows])
                n_configs = len({o["config_key"] for o in rows})
                if (len(rows) <= len(terms) or n_configs < 3) and prior is not None \
                        and prior.bandwidth_gbs and prior.compute_gflops:
                    X = np.stack([o["x"] for o in rows])
                    base = roofline_coefficients(prior.bandwidth_gbs, prior.compute_gflops)[phase]
                    r = X @ _vec(base, terms)
                    alpha = float(np.sum(r / y) / np.sum((r / y) ** 2))
                    coef = {t: base[t] * alpha for t in terms}
                    info: dict[str, Any] = {"kind": f"scaled roofline of '{prior.name}' (x{alpha:.3g})"}
                else:
                    X, coef, info = _fit_phase(phase, rows, y, cache_bytes, bandwidth_gbs)
                entry[phase] = {**coef, **({"cache_bytes": info["cache_bytes"]} if "cache_bytes" in info else {})}
                pred = X @ _vec(coef, terms)
                model.fit_info[f"{quant}/{phase}"] = {
                    "kind": info.pop("kind"), "measurements": len(rows), "configs": n_configs,
                    "train_mape": float(np.mean(np.abs(pred - y) / y)), **info,
                }
            model.coefficients[quant] = entry
        return model

    # -------------------------------------------------------------- prediction
    def _coef(self, quant: str, phase: str) -> dict[str, float]:
        q = _quant_key(quant)
        if q not in self.coefficients or phase not in self.coefficients[q]:
            fitted = ", ".join(f"{k} ({'/'.join(v)})" for k, v in self.coefficients.items()) or "nothing"
            raise UserError(f"the latency model has no {phase} coefficients for precision '{q}' "
                            f"(fitted: {fitted}); measure that precision or pick another")
        return self.coefficients[q][phase]

    def decode_time(self, cfg: ModelConfig, quant: str, position: int, n: int = 1) -> float:
        """Mean seconds per token decoding `n` tokens from `position`."""
        c = self._coef(quant, "decode")
        x = decode_features(cfg, position, quant, n, c.get("cache_bytes", 0.0))
        return float(x @ _vec(c, DECODE_TERMS))

    def prefill_time(self, cfg: ModelConfig, quant: str, prompt_len: int, start: int = 0) -> float:
        c = self._coef(quant, "prefill")
        return float(prefill_features(cfg, prompt_len, quant, start) @ _vec(c, PREFILL_TERMS))

    def predict(self, cfg: ModelConfig | dict, quant: str, prompt_len: int, decode_len: int = 128) -> dict:
        """{"prefill_s", "ttft_s", "prefill_tok_s", "decode_s_per_token", "decode_tok_s", "e2e_s"}.
        decode_* is the mean over `decode_len` tokens generated after the prompt; e2e = ttft + decode."""
        cfg = as_config(cfg)
        if prompt_len <= 0 or decode_len < 0:
            raise UserError(f"prompt_len must be > 0 and decode_len >= 0, got {prompt_len}, {decode_len}")
        prefill = self.prefill_time(cfg, quant, prompt_len)
        per_tok = self.decode_time(cfg, quant, prompt_len, max(decode_len, 1))
        return {
            "prefill_s": prefill, "ttft_s": prefill, "prefill_tok_s": prompt_len / prefill,
            "decode_s_per_token": per_tok, "decode_tok_s": 1.0 / per_tok,
            "e2e_s": prefill + decode_len * per_tok,
        }

    def evaluate(self, records: Iterable[dict]) -> dict:
        """Absolute percentage errors on `records` (held-out measurements): median, mean and max per phase."""
        return _error_summary(self._errors(records))

    def evaluate_by_config(self, records: Iterable[dict]) -> dict[str, dict]:
        """evaluate() per config (named by the record's "model", else the config's name), plus
        "max_ape": the worst error of that config over both phases. A median over all configs
        can hide one config the model gets badly wrong; this shows it."""
        by: dict[str, list[tuple[str, str, float]]] = {}
        for label, phase, err in self._errors(records):
            by.setdefault(label, []).append((label, phase, err))
        out = {}
        for label, errs in by.items():
            out[label] = {**_error_summary(errs), "max_ape": max(e for _, _, e in errs)}
        return out

    def _errors(self, records: Iterable[dict]) -> list[tuple[str, str, float]]:
        """(config label, phase, |relative error|) per observation."""
        out = []
        for o in _observations(records):
            pred = (self.prefill_time(o["cfg"], o["quant"], o["n"], o["start"]) if o["phase"] == "prefill"
                    else self.decode_time(o["cfg"], o["quant"], o["start"], o["n"]))
            out.append((o["label"], o["phase"], abs(pred - o["y"]) / o["y"]))
        return out

    def to_dict(self) -> dict:
        return {"coefficients": self.coefficients, "fit": self.fit_info}

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyModel":
        coefs = data.get("coefficients", data) or {}
        if not isinstance(coefs, dict):
            raise UserError("latency coefficients must be a mapping {precision: {decode: {...}, prefill: {...}}}")
        out: dict[str, dict[str, dict[str, float]]] = {}
        for quant, phases in coefs.items():
            q = _quant_key(quant)
            out[q] = {}
            for phase, terms in (("decode", DECODE_TERMS), ("prefill", PREFILL_TERMS)):
                if phase not in (phases or {}):
                    continue
                given = phases[phase]
                missing = [t for t in terms if t not in given and t not in OPTIONAL_TERMS]
                if missing:
                    raise UserError(f"latency coefficients {quant}/{phase} miss {', '.join(missing)}")
                try:
                    out[q][phase] = {t: float(given.get(t, OPTIONAL_TERMS.get(t, 0.0))) for t in terms}
                    if phase == "decode" and "cache_bytes" in given:
                        out[q][phase]["cache_bytes"] = float(given["cache_bytes"])
                except (TypeError, ValueError):
                    raise UserError(f"latency coefficients {quant}/{phase} must be numbers") from None
                if any(v < 0 for v in out[q][phase].values()):
                    raise UserError(f"latency coefficients {quant}/{phase} must be >= 0")
        return cls(out, dict(data.get("fit") or {}))


def _vec(coef: dict[str, float], terms: tuple[str, ...]) -> np.ndarray:
    """Coefficients in feature order; optional terms a coefficient table lacks count as 0."""
    return np.array([coef[t] if t in coef else OPTIONAL_TERMS[t] for t in terms])


def _fit_phase(phase: str, rows: list[dict], y: np.ndarray, cache_bytes: float | None,
               bandwidth_gbs: float | None) -> tuple[np.ndarray, dict[str, float], dict[str, Any]]:
    """Bounded NNLS fit of one phase; returns (features, coefficients, fit info with a 'kind')."""
    terms = DECODE_TERMS if phase == "decode" else PREFILL_TERMS
    lower = _lower_bounds(terms, bandwidth_gbs)
    info: dict[str, Any] = {}
    if phase == "decode":
        cache, X, c, dropped = _select_cache(rows, y, cache_bytes, lower)
        info["cache_bytes"] = float(cache)
    else:
        X = np.stack([o["x"] for o in rows])
        c, dropped = _fit_robust(X, y, lower)
    coef = {t: float(v) for t, v in zip(terms, c)}
    kind = "nnls" if len(rows) > len(terms) else "nnls (underdetermined: few measurements)"
    if dropped:
        kind += f", {dropped} outlier(s) dropped"
    if info.get("cache_bytes"):
        kind += f", cache {info['cache_bytes'] / 2**20:.0f} MiB"
    if bandwidth_gbs:
        info["bandwidth_bound_gbs"] = float(bandwidth_gbs)
        if math.isclose(coef["s_per_byte"], lower[terms.index("s_per_byte")], rel_tol=1e-9):
            kind += f", bytes at the {bandwidth_gbs:.3g} GB/s bound"
    info["kind"] = kind
    return X, coef, info


def _select_cache(rows: list[dict], y: np.ndarray, cache_bytes: float | None, lower: np.ndarray | None = None):
    """Decode fit with the effective cache size given, or chosen on the TRAINING rows: C = 0 (no
    cache term) or a power of two between the smallest and largest bytes read per step (outside
    that range C is not identifiable), whichever has the lowest training error; C > 0 must beat
    C = 0 by _CACHE_GAIN, since an extra knob always helps a little.
    Returns (C, features, coefficients, dropped outliers)."""
    def fit_at(cache: float):
        X = np.stack([decode_features(o["cfg"], o["start"], o["quant"], o["n"], cache) for o in rows])
        c, dropped = _fit_robust(X, y, lower)
        return float(np.mean(np.abs(X @ c - y) / y)), X, c, dropped

    if cache_bytes is not None:
        return (float(cache_bytes), *fit_at(float(cache_bytes))[1:])
    per_step = [float(o["x"][2] + o["x"][5]) for o in rows]
    best = (0.0, *fit_at(0.0))
    bar = _CACHE_GAIN * best[1] - 1e-6  # absolute margin: exact data must not pick a C by rounding
    cache = float(2**20)
    while cache <= min(per_step):  # C below every row is a constant, i.e. the fixed term again
        cache *= 2
    while cache < max(per_step):
        cand = (cache, *fit_at(cache))
        if cand[1] < min(bar, best[1]):
            best = cand
        cache *= 2
    return best[0], best[2], best[3], best[4]


def _quant_key(quant: str) -> str:
    """Canonical key for coefficient tables: GGUF-style names (f32, f16, bf16, q8_0, q4_0)."""
    return {"fp32": "f32", "fp16": "f16"}.get(costs.cost_precision(quant), costs.cost_precision(quant))


def as_config(cfg: ModelConfig | dict | str) -> ModelConfig:
    """A ModelConfig from itself, its dict, or a preset/config-file spec."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict):
        return ModelConfig.from_dict(cfg)
    return resolve_config(str(cfg))


def _error_summary(errors: list[tuple[str, str, float]]) -> dict:
    out = {}
    for phase in ("prefill", "decode"):
        e = [err for _, p, err in errors if p == phase]
        if e:
            out[phase] = {"median_ape": float(np.median(e)), "mape": float(np.mean(e)),
                          "max_ape": float(np.max(e)), "n": len(e)}
    return out


def _observations(records: Iterable[dict]) -> list[dict]:
    """Turn measurement records into per-phase observations (features, measured seconds)."""
    obs = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "config" not in r or "quant" not in r:
            raise UserError(f"measurement record {i} needs 'config' and 'quant' fields")
        cfg = as_config(r["config"])
        quant = _quant_key(r["quant"])
        key = cfg.shape_key()
        label = str(r.get("model") or cfg.name or key)
        start = int(r.get("start", 0) or 0)
        P = int(r.get("prompt_len") or 0)
        ttft = r.get("ttft_s")
        if not is_positive_number(ttft) and P > 0 and is_positive_number(r.get("prefill_tok_s")):
            ttft = P / r["prefill_tok_s"]  # a device figure given as prompt tok/s
        if P > 0 and is_positive_number(ttft):
            obs.append({"phase": "prefill", "quant": quant, "cfg": cfg, "config_key": key, "label": label, "n": P,
                        "start": start, "x": prefill_features(cfg, P, quant, start), "y": float(ttft)})
        if is_positive_number(r.get("decode_tok_s")):
            n = int(r.get("decode_len") or 1)
            pos = int(r.get("decode_start", start + P))
            obs.append({"phase": "decode", "quant": quant, "cfg": cfg, "config_key": key, "label": label, "n": n,
                        "start": pos, "x": decode_features(cfg, pos, quant, n), "y": 1.0 / float(r["decode_tok_s"])})
    return obs


def is_positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

