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

A `DeviceProfile` (small YAML) describes a device: peak bandwidth and compute, and optionally
fitted coefficients or a few measurements to calibrate on. Without either, predictions are the
roofline bound (no overheads, peak bandwidth and compute): optimistic, but it still ranks configs.
`calibrate` turns llama.cpp's `llama-bench -o json` output from a real device into a profile:

    pocketlm export cfg1.yaml --format gguf --quant q4_0 --out m1.gguf      # 3+ diverse configs
    adb push m*.gguf /data/local/tmp/
    adb shell /data/local/tmp/llama-bench -m m1.gguf,m2.gguf,m3.gguf -p 64,256,512 -n 32 -d 0,512 \
        -t 4 -o json > phone.json
    pocketlm latency calibrate phone.json --model-config m1.gguf --model-config m2.gguf ... \
        --base snapdragon-8-gen-3 --out phone.yaml       # GGUF=config pairs also work
    pocketlm latency predict smollm2-135m my-config.yaml --profile phone.yaml

With 3+ configs every coefficient is fitted; with fewer, each phase is one scale factor on the
--base profile's roofline.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pocketlm.model import costs
from pocketlm.model.config import ModelConfig, read_structured_file
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
_PRECISIONS = {"f32": "fp32", "fp32": "fp32", "float32": "fp32", "f16": "f16", "fp16": "f16",
               "float16": "f16", "bf16": "bf16", "bfloat16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}


def cost_precision(quant: str) -> str:
    """Map a quant/dtype name (f32, f16, q8_0, q4_0, bf16, ...) to the name pocketlm.model.costs uses."""
    try:
        return _PRECISIONS[str(quant).lower()]
    except KeyError:
        raise UserError(f"unknown precision '{quant}'; choose one of f32, f16, bf16, q8_0, q4_0") from None


# ---------------------------------------------------------------------------- features
def decode_features(cfg: ModelConfig, position: int, quant: str, n: int = 1, cache_bytes: float = 0.0) -> np.ndarray:
    """Mean per-token features of decoding `n` tokens starting at `position` (bytes and FLOPs are
    linear in position, so the mean equals the average of the first and last step). Bytes read per
    step are split at the effective cache size: beyond it (DRAM) and within it (cache)."""
    prec = cost_precision(quant)
    last = position + max(n, 1) - 1
    bytes_ = (costs.decode_bytes(cfg, position, prec) + costs.decode_bytes(cfg, last, prec)) / 2
    linear = 2 * costs.matmul_params_per_token(cfg)
    attn = (costs.attention_flops(cfg, 1, position) + costs.attention_flops(cfg, 1, last)) / 2
    cached = min(bytes_, max(float(cache_bytes), 0.0))
    return np.array([1.0, cfg.num_layers, bytes_ - cached, linear, attn, cached], dtype=np.float64)


def llc_bytes() -> int | None:
    """Last-level cache size the OS reports (Linux sysfs), or None. Informational: in a VM or with
    many cores it is the whole shared cache, not what a few threads of one process effectively get."""
    best = (0, None)
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((d / "level").read_text())
            if (d / "type").read_text().strip() == "Instruction":
                continue
            text = (d / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        m = re.fullmatch(r"(\d+)([KMG]?)", text)
        if m and level >= best[0]:
            best = (level, int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)])
    return best[1]


def prefill_features(cfg: ModelConfig, prompt_len: int, quant: str, start: int = 0) -> np.ndarray:
    prec = cost_precision(quant)
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


def _fit_relative(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nonnegative coefficients minimizing the relative error of X @ c against y."""
    A = X / y[:, None]
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    return nnls(A / scale, np.ones(len(y))) / scale


def _fit_robust(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """_fit_relative, then once more without outliers: timings on a shared machine have hiccups
    (a repeat that lost the CPU) that would otherwise bend every coefficient. A point is an outlier
    when its relative residual exceeds 4x the median one (and 15%). Returns (coefficients, dropped)."""
    c = _fit_relative(X, y)
    if len(y) < 2 * X.shape[1]:
        return c, 0
    resid = np.abs(X @ c - y) / y
    keep = resid <= max(4 * float(np.median(resid)), 0.15)
    if keep.all():
        return c, 0
    return _fit_relative(X[keep], y[keep]), int((~keep).sum())


# ---------------------------------------------------------------------------- the model
@dataclass
class LatencyModel:
    """Coefficients per precision: {"q4_0": {"decode": {term: value}, "prefill": {term: value}}, ...}."""

    coefficients: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, records: Iterable[dict], prior: "DeviceProfile | None" = None,
            cache_bytes: float | None = None) -> "LatencyModel":
        """Fit to measurement records (`pocketlm bench` results.json "records", or any list of dicts
        with "config" (ModelConfig or its dict), "quant", "prompt_len", "decode_len", "ttft_s",
        "decode_tok_s"; optional "start" = cached tokens before the prompt, "decode_start" = position
        the decode run starts at (default prompt_len)).

        A phase with fewer measurements than coefficients, or fewer than 3 distinct configs, cannot
        pin every coefficient; if `prior` (a profile with bandwidth and compute) is given, that phase
        is fitted as one scale factor on the prior's roofline instead.

        `cache_bytes`: the effective cache size for decode; None selects it from the training data
        (see the module docstring), 0 disables the cache term.
        """
        obs = _observations(records)
        if not obs:
            raise UserError("no usable measurements to fit (need records with config, quant, prompt_len "
                            "and ttft_s and/or decode_tok_s)")
        model = cls()
        for quant in sorted({o["quant"] for o in obs}):
            entry: dict[str, dict[str, float]] = {}
            for phase, terms in (("decode", DECODE_TERMS), ("prefill", PREFILL_TERMS)):
                rows = [o for o in obs if o["quant"] == quant and o["phase"] == phase]
                if not rows:
                    continue
                X = np.stack([o["x"] for o in rows])
                y = np.array([o["y"] for o in rows])
                n_configs = len({o["config_key"] for o in rows})
                extra: dict[str, float] = {}
                if (len(rows) <= len(terms) or n_configs < 3) and prior is not None and prior.has_roofline:
                    base = _roofline_coefficients(prior)[phase]
                    r = X @ _vec(base, terms)
                    alpha = float(np.sum(r / y) / np.sum((r / y) ** 2))
                    coef = {t: base[t] * alpha for t in terms}
                    kind = f"scaled roofline of '{prior.name}' (x{alpha:.3g})"
                else:
                    if phase == "decode":
                        cache, X, c, dropped = _select_cache(rows, y, cache_bytes)
                        extra = {"cache_bytes": float(cache)}
                    else:
                        c, dropped = _fit_robust(X, y)
                    coef = {t: float(v) for t, v in zip(terms, c)}
                    kind = "nnls" if len(rows) > len(terms) else "nnls (underdetermined: few measurements)"
                    if dropped:
                        kind += f", {dropped} outlier(s) dropped"
                    if extra.get("cache_bytes"):
                        kind += f", cache {extra['cache_bytes'] / 2**20:.0f} MiB"
                entry[phase] = {**coef, **extra}
                pred = X @ _vec(coef, terms)
                model.fit_info[f"{quant}/{phase}"] = {
                    "kind": kind, "measurements": len(rows), "configs": n_configs,
                    "train_mape": float(np.mean(np.abs(pred - y) / y)), **extra,
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
        cfg = _as_config(cfg)
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
        """Absolute percentage errors on `records` (held-out measurements): median and mean per phase."""
        errs: dict[str, list[float]] = {"prefill": [], "decode": []}
        for o in _observations(records):
            pred = (self.prefill_time(o["cfg"], o["quant"], o["n"], o["start"]) if o["phase"] == "prefill"
                    else self.decode_time(o["cfg"], o["quant"], o["start"], o["n"]))
            errs[o["phase"]].append(abs(pred - o["y"]) / o["y"])
        out = {}
        for phase, e in errs.items():
            if e:
                out[phase] = {"median_ape": float(np.median(e)), "mape": float(np.mean(e)),
                              "max_ape": float(np.max(e)), "n": len(e)}
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


def _select_cache(rows: list[dict], y: np.ndarray, cache_bytes: float | None):
    """Decode fit with the effective cache size given, or chosen on the TRAINING rows: C = 0 (no
    cache term) or a power of two between the smallest and largest bytes read per step (outside
    that range C is not identifiable), whichever has the lowest training error; C > 0 must beat
    C = 0 by _CACHE_GAIN, since an extra knob always helps a little.
    Returns (C, features, coefficients, dropped outliers)."""
    def fit_at(cache: float):
        X = np.stack([decode_features(o["cfg"], o["start"], o["quant"], o["n"], cache) for o in rows])
        c, dropped = _fit_robust(X, y)
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
    return {"fp32": "f32", "fp16": "f16"}.get(cost_precision(quant), cost_precision(quant))


def _as_config(cfg: ModelConfig | dict | str) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, dict):
        return ModelConfig.from_dict(cfg)
    return resolve_config(str(cfg))


def _observations(records: Iterable[dict]) -> list[dict]:
    """Turn measurement records into per-phase observations (features, measured seconds)."""
    obs = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "config" not in r or "quant" not in r:
            raise UserError(f"measurement record {i} needs 'config' and 'quant' fields")
        cfg = _as_config(r["config"])
        quant = _quant_key(r["quant"])
        key = cfg.shape_key()
        start = int(r.get("start", 0) or 0)
        P = int(r.get("prompt_len") or 0)
        ttft = r.get("ttft_s")
        if not _positive(ttft) and P > 0 and _positive(r.get("prefill_tok_s")):
            ttft = P / r["prefill_tok_s"]  # a device figure given as prompt tok/s
        if P > 0 and _positive(ttft):
            obs.append({"phase": "prefill", "quant": quant, "cfg": cfg, "config_key": key, "n": P,
                        "start": start, "x": prefill_features(cfg, P, quant, start), "y": float(ttft)})
        if _positive(r.get("decode_tok_s")):
            n = int(r.get("decode_len") or 1)
            pos = int(r.get("decode_start", start + P))
            obs.append({"phase": "decode", "quant": quant, "cfg": cfg, "config_key": key, "n": n,
                        "start": pos, "x": decode_features(cfg, pos, quant, n), "y": 1.0 / float(r["decode_tok_s"])})
    return obs


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# ---------------------------------------------------------------------------- device profiles
@dataclass
class DeviceProfile:
    """A device: peak bandwidth (GB/s) and compute (GFLOP/s), threads, optional fitted coefficients
    or measurements to calibrate on. Loaded from / saved to a small YAML."""

    name: str
    bandwidth_gbs: float | None = None
    compute_gflops: float | None = None
    threads: int | None = None
    description: str = ""
    sources: list[str] = field(default_factory=list)
    coefficients: dict | None = None
    measurements: list[dict] = field(default_factory=list)
    fit: dict = field(default_factory=dict)

    @property
    def has_roofline(self) -> bool:
        return bool(self.bandwidth_gbs) and bool(self.compute_gflops)

    def latency_model(self) -> LatencyModel:
        """Fitted coefficients if present; else calibrated on the listed measurements; else the roofline."""
        if self.coefficients:
            return LatencyModel.from_dict({"coefficients": self.coefficients, "fit": self.fit})
        if not self.has_roofline:
            raise UserError(f"device profile '{self.name}' needs bandwidth_gbs and compute_gflops, "
                            "or fitted coefficients")
        if self.measurements:
            return LatencyModel.fit(self.measurements, prior=self)
        base = _roofline_coefficients(self)
        return LatencyModel({q: base for q in ("f32", "f16", "bf16", "q8_0", "q4_0")},
                            {"kind": "roofline bound (no overheads, peak bandwidth and compute)"})

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        for k in ("bandwidth_gbs", "compute_gflops", "threads"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.sources:
            d["sources"] = list(self.sources)
        if self.measurements:
            d["measurements"] = self.measurements
        if self.coefficients:
            d["coefficients"] = self.coefficients
        if self.fit:
            d["fit"] = self.fit
        return d

    @classmethod
    def from_dict(cls, data: dict, origin: str = "profile") -> "DeviceProfile":
        if not isinstance(data, dict):
            raise UserError(f"{origin}: a device profile must be a mapping")
        known = {"name", "description", "bandwidth_gbs", "compute_gflops", "threads", "sources",
                 "coefficients", "measurements", "fit"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{origin}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if not data.get("name"):
            raise UserError(f"{origin}: a device profile needs a 'name'")
        for k in ("bandwidth_gbs", "compute_gflops"):
            v = data.get(k)
            if v is not None and not (_positive(v)):
                raise UserError(f"{origin}: '{k}' must be a positive number, got {v!r}")
        threads = data.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads <= 0):
            raise UserError(f"{origin}: 'threads' must be a positive integer, got {threads!r}")
        prof = cls(name=str(data["name"]), bandwidth_gbs=data.get("bandwidth_gbs"),
                   compute_gflops=data.get("compute_gflops"), threads=threads,
                   description=str(data.get("description") or ""), sources=list(data.get("sources") or []),
                   coefficients=data.get("coefficients"), measurements=list(data.get("measurements") or []),
                   fit=dict(data.get("fit") or {}))
        if prof.coefficients:
            LatencyModel.from_dict({"coefficients": prof.coefficients})  # validate now, not at predict time
        return prof

    def save(self, path: str | os.PathLike) -> Path:
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, spec: str | os.PathLike) -> "DeviceProfile":
        """A profile YAML path or the name of a built-in profile (pocketlm/assets/devices/NAME.yaml)."""
        path = Path(spec)
        if not path.is_file():
            builtin = _devices_dir() / f"{spec}.yaml"
            if not builtin.is_file():
                raise UserError(f"no device profile file or built-in profile '{spec}'; built-in: "
                                f"{', '.join(builtin_profiles()) or 'none'}")
            path = builtin
        return cls.from_dict(read_structured_file(path), origin=str(path))


def _devices_dir() -> Path:
    return Path(__file__).parents[1] / "assets" / "devices"


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in _devices_dir().glob("*.yaml"))


def _roofline_coefficients(profile: DeviceProfile) -> dict[str, dict[str, float]]:
    """No overheads; bytes at peak bandwidth, FLOPs at peak compute (attention too)."""
    s_byte = 1.0 / (profile.bandwidth_gbs * 1e9)
    s_flop = 1.0 / (profile.compute_gflops * 1e9)
    return {"decode": {"fixed_s": 0.0, "per_layer_s": 0.0, "s_per_byte": s_byte, "s_per_flop": s_flop,
                       "s_per_attn_flop": s_flop, "s_per_cached_byte": s_byte},
            "prefill": {"fixed_s": 0.0, "per_token_s": 0.0, "per_layer_token_s": 0.0, "s_per_byte": s_byte,
                        "s_per_flop": s_flop, "s_per_attn_flop": s_flop}}


def _plain(x: Any) -> Any:
    """numpy scalars -> Python numbers, so yaml.safe_dump writes plain YAML."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def predict(cfg: ModelConfig | dict | str, profile: DeviceProfile | str, prompt_len: int, decode_len: int = 128,
            precision: str = "q4_0") -> dict:
    """Latency of `cfg` on a device profile (object, YAML path or built-in name); see LatencyModel.predict."""
    if not isinstance(profile, DeviceProfile):
        profile = DeviceProfile.load(profile)
    return profile.latency_model().predict(_as_config(cfg), precision, prompt_len, decode_len)


def fit_profile(records: list[dict], name: str, bandwidth_gbs: float | None = None,
                compute_gflops: float | None = None, threads: int | None = None,
                description: str = "", sources: list[str] | None = None) -> DeviceProfile:
    base = DeviceProfile(name, bandwidth_gbs, compute_gflops, threads, description, list(sources or []))
    model = LatencyModel.fit(records, prior=base if base.has_roofline else None)
    base.coefficients = _plain(model.coefficients)
    base.fit = _plain(model.fit_info)
    return base


# ---------------------------------------------------------------------------- llama-bench calibration
_GGUF_TYPES = {"f32": "f32", "all f32": "f32", "f16": "f16", "bf16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}


def quant_from_model_type(model_type: str) -> str | None:
    """llama-bench's model_type ("qwen2 1B Q4_0", "llama 7B mostly Q4_0", "llama ?B F16") -> q4_0/f16/..."""
    text = model_type.lower().replace("mostly ", "")
    m = re.search(r"(all f32|bf16|f32|f16|q\d_\w+|q\d_\d|iq\d\w*)\s*$", text.strip())
    return _GGUF_TYPES.get(m.group(1)) if m else None


def llama_bench_records(data: Any, configs: dict[str, ModelConfig], quant: str | None = None,
                        notes: list[str] | None = None) -> list[dict]:
    """llama-bench JSON (a list of test objects) -> measurement records for LatencyModel.fit.

    pp tests (n_prompt > 0, n_gen = 0) time a prompt of n_prompt tokens after n_depth cached ones;
    tg tests (n_prompt = 0, n_gen > 0) time n_gen decode steps from position n_depth. Combined pg
    tests mix both phases in one number and are skipped. `configs` maps model_filename (or its file
    name) to the benchmarked model's config; a single entry under "*" applies to every model.
    """
    notes = notes if notes is not None else []
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise UserError("llama-bench output must be a JSON list of test results (`llama-bench -o json`)")
    records = []
    for i, t in enumerate(data):
        if not isinstance(t, dict) or not all(k in t for k in ("n_prompt", "n_gen", "avg_ns")):
            raise UserError(f"llama-bench record {i} lacks n_prompt/n_gen/avg_ns; is this `-o json` output?")
        fname = str(t.get("model_filename", ""))
        cfg = configs.get(fname) or configs.get(Path(fname).name) or configs.get("*")
        if cfg is None:
            raise UserError(f"no model config for '{fname}'; pass --model-config FILE=CONFIG or a mapping file")
        q = quant or quant_from_model_type(str(t.get("model_type", "")))
        if q is None:
            raise UserError(f"cannot tell the precision of '{t.get('model_type')}' (pocketlm models f32, f16, "
                            "bf16, q8_0, q4_0); pass --quant to say which to treat it as")
        n_prompt, n_gen, depth = int(t["n_prompt"]), int(t["n_gen"]), int(t.get("n_depth", 0) or 0)
        samples = t.get("samples_ns") or [t["avg_ns"]]
        secs = float(np.median(samples)) / 1e9
        rec = {"config": cfg.to_dict(), "quant": q, "threads": t.get("n_threads"), "source": f"llama-bench #{i}"}
        if n_prompt > 0 and n_gen == 0:
            rec.update(prompt_len=n_prompt, start=depth, ttft_s=secs)
        elif n_gen > 0 and n_prompt == 0:
            rec.update(prompt_len=0, decode_len=n_gen, decode_start=depth, decode_tok_s=n_gen / secs)
        else:
            notes.append(f"record {i}: skipped combined pp+tg test (n_prompt={n_prompt}, n_gen={n_gen})")
            continue
        records.append(rec)
    if not records:
        raise UserError("no pp or tg tests in the llama-bench output")
    return records


def config_from_gguf(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a GGUF file (its metadata; tensors are not loaded)."""
    from pocketlm.runtime.gguf import read_gguf

    info = read_gguf(path)
    if info["config"] is None:
        raise UserError(f"{path}: cannot read a llama/qwen2 config from its metadata (arch {info['arch']!r})")
    return info["config"]


def _config_spec(spec: str) -> ModelConfig:
    return config_from_gguf(spec) if str(spec).endswith(".gguf") else resolve_config(spec)


def parse_model_configs(specs: list[str] | None, bench_data: Any) -> dict[str, ModelConfig]:
    """--model-config values: a GGUF file (its metadata, matched by file name), FILENAME=CONFIG,
    a YAML/JSON mapping file {model_filename: config spec or dict}, or one CONFIG for every record.
    Without any, each record's model_filename is read as a GGUF if it exists here."""
    out: dict[str, ModelConfig] = {}
    for spec in specs or []:
        if "=" in spec:
            name, cfg_spec = spec.split("=", 1)
            out[name] = _config_spec(cfg_spec)
            out[Path(name).name] = out[name]
            continue
        p = Path(spec)
        if p.suffix in (".yaml", ".yml", ".json") and p.is_file():
            data = read_structured_file(p)
            if isinstance(data, dict) and data and all(isinstance(v, (str, dict)) for v in data.values()) \
                    and "hidden_size" not in data and "model_type" not in data and "model" not in data:
                for name, v in data.items():
                    out[name] = ModelConfig.from_dict(v) if isinstance(v, dict) else _config_spec(v)
                    out[Path(name).name] = out[name]
                continue
        if spec.endswith(".gguf"):  # matched to llama-bench's model_filename by file name
            out[Path(spec).name] = config_from_gguf(spec)
            continue
        if "*" in out:
            raise UserError("several --model-config values without FILENAME=: give FILENAME=CONFIG pairs, "
                            "GGUF files or a mapping file when the benchmark covers several models")
        out["*"] = _config_spec(spec)
    if not out:
        for t in bench_data if isinstance(bench_data, list) else []:
            fname = str(t.get("model_filename", "")) if isinstance(t, dict) else ""
            if fname and fname not in out and Path(fname).is_file():
                out[fname] = config_from_gguf(fname)
    return out


def calibrate(llama_bench_json: str | os.PathLike | list, model_configs: dict[str, ModelConfig], name: str,
              base: DeviceProfile | None = None, quant: str | None = None) -> tuple[DeviceProfile, list[str]]:
    """A device profile fitted to llama-bench results from that device; returns (profile, notes)."""
    data = read_structured_file(llama_bench_json) if not isinstance(llama_bench_json, list) else llama_bench_json
    notes: list[str] = []
    records = llama_bench_records(data, model_configs, quant, notes)
    threads = next((r["threads"] for r in records if r.get("threads")), None)
    cpu = next((t.get("cpu_info") for t in data if isinstance(t, dict) and t.get("cpu_info")), "")
    prof = fit_profile(records, name, base.bandwidth_gbs if base else None, base.compute_gflops if base else None,
                       threads or (base.threads if base else None),
                       description=(base.description if base else "") or f"calibrated from llama-bench on {cpu}",
                       sources=list(base.sources if base else []) + ["llama-bench -o json (calibration)"])
    return prof, notes


# ---------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser("latency", help="fit, use and calibrate the analytic latency model",
                       description="Analytic latency model (fixed + per-layer + bytes/bandwidth + FLOPs/compute) "
                                   "fitted to `pocketlm bench` results or llama-bench output; predicts TTFT and "
                                   "decode speed of any config on a device profile.")
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION")

    f = lsub.add_parser("fit", help="fit a device profile to `pocketlm bench` results.json files")
    f.add_argument("results", nargs="+", help="results.json file(s) written by `pocketlm bench`")
    f.add_argument("--out", required=True, help="profile YAML to write")
    f.add_argument("--name", default=None, help="profile name (default: the output file's stem)")
    f.add_argument("--compute", type=float, default=None, help="peak compute in GFLOP/s to record in the profile")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fit)

    pr = lsub.add_parser("predict", help="predict TTFT / decode speed of configs on a device profile")
    pr.add_argument("models", nargs="+", metavar="CONFIG|PRESET|GGUF")
    pr.add_argument("--profile", required=True, help="profile YAML or built-in name (" +
                    ", ".join(builtin_profiles()) + ")")
    pr.add_argument("--quant", default="q4_0", help="precision (f32, f16, q8_0, q4_0; default q4_0)")
    pr.add_argument("--prompt-len", type=int, default=512)
    pr.add_argument("--decode-len", type=int, default=128)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    c = lsub.add_parser("calibrate", help="make a device profile from `llama-bench -o json` output")
    c.add_argument("llama_bench_json")
    c.add_argument("--model-config", action="append", default=None, metavar="SPEC",
                   help="config of the benchmarked model(s): a preset/config/GGUF for all records, "
                        "FILENAME=SPEC per model_filename, or a YAML/JSON mapping file; repeatable")
    c.add_argument("--base", default=None, help="profile (file or built-in name) whose bandwidth/compute to keep")
    c.add_argument("--quant", default=None, help="treat every record as this precision (e.g. for Q4_K models)")
    c.add_argument("--name", default=None)
    c.add_argument("--out", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_calibrate)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _load_results(paths: list[str]) -> tuple[list[dict], dict]:
    records, meta = [], {}
    for path in paths:
        data = read_structured_file(path)
        recs = data.get("records") if isinstance(data, dict) else data
        if not isinstance(recs, list):
            raise UserError(f"{path}: expected a `pocketlm bench` results.json with a 'records' list")
        records += recs
        if isinstance(data, dict) and not meta:
            meta = data
    return records, meta


def cmd_fit(args: argparse.Namespace) -> int:
    records, meta = _load_results(args.results)
    machine = meta.get("machine") or {}
    prof = fit_profile(records, args.name or Path(args.out).stem, bandwidth_gbs=meta.get("bandwidth_gbs"),
                       compute_gflops=args.compute or meta.get("compute_gflops"), threads=meta.get("threads"),
                       description=f"fitted to pocketlm bench on {machine.get('cpu', 'this machine')}",
                       sources=[str(Path(r).resolve()) for r in args.results])
    return _save_and_show_profile(prof, args)


def _save_and_show_profile(prof: "DeviceProfile", args: argparse.Namespace) -> int:
    """Write a fitted/calibrated profile to --out and show its fit (or the profile as --json)."""
    prof.save(args.out)
    if args.json:
        from pocketlm.utils import print_json

        print_json(prof.to_dict())
    else:
        for key, info in prof.fit.items():
            print(f"{key:<16} {info['kind']:<40} n={info['measurements']:<4} "
                  f"train MAPE {100 * info['train_mape']:.1f}%")
        print(f"wrote {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    prof = DeviceProfile.load(args.profile)
    model = prof.latency_model()
    rows = []
    for spec in args.models:
        cfg = _config_spec(spec)
        r = model.predict(cfg, args.quant, args.prompt_len, args.decode_len)
        rows.append({"model": spec, "params": costs.param_groups(cfg)["total"], "quant": args.quant,
                     "prompt_len": args.prompt_len, "decode_len": args.decode_len, **r})
    rows.sort(key=lambda r: r["e2e_s"])
    if args.json:
        from pocketlm.utils import print_json

        print_json({"profile": prof.name, "calibrated": bool(prof.coefficients or prof.measurements),
                    "predictions": rows})
        return 0
    kind = "fitted" if prof.coefficients else ("calibrated on listed measurements" if prof.measurements
                                               else "ROOFLINE BOUND (uncalibrated: optimistic)")
    print(f"device {prof.name} ({kind}), {args.quant}, prompt {args.prompt_len}, decode {args.decode_len} tokens")
    print(f"{'model':<24} {'params':>8} {'TTFT s':>8} {'prefill tok/s':>13} {'decode tok/s':>12} {'e2e s':>8}")
    for r in rows:
        print(f"{r['model']:<24} {r['params'] / 1e6:>7.1f}M {r['ttft_s']:>8.3f} {r['prefill_tok_s']:>13.1f} "
              f"{r['decode_tok_s']:>12.1f} {r['e2e_s']:>8.2f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    data = read_structured_file(args.llama_bench_json)
    configs = parse_model_configs(args.model_config, data)
    base = DeviceProfile.load(args.base) if args.base else None
    prof, notes = calibrate(data, configs, args.name or Path(args.out).stem, base=base, quant=args.quant)
    for n in notes:
        print(f"note: {n}")
    return _save_and_show_profile(prof, args)
