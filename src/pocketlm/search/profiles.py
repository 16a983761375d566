"""Device profiles (small YAML: peak bandwidth and compute, fitted coefficients or measurements)
and calibration from llama.cpp's `llama-bench -o json` output run on a real device.

A `DeviceProfile` describes a device: peak bandwidth and compute, and optionally fitted
coefficients or a few measurements to calibrate on. Without either, predictions are the roofline
bound (no overheads, peak bandwidth and compute): optimistic, but it still ranks configs.
Built-in profiles live in pocketlm/assets/devices/. `calibrate` turns llama-bench output into one:

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

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig, read_structured_file
from pocketlm.model.presets import resolve_config
from pocketlm.runtime.gguf import read_gguf
from pocketlm.search.latency import LatencyModel, as_config, is_positive_number, roofline_coefficients
from pocketlm.utils import atomic_write_text


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
        base = roofline_coefficients(self.bandwidth_gbs, self.compute_gflops)
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
            if v is not None and not (is_positive_number(v)):
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
        return atomic_write_text(path, yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))

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
    return Path(__file__).parents[1] / "assets" / "devices"  # pocketlm/assets/devices


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in _devices_dir().glob("*.yaml"))


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
    return profile.latency_model().predict(as_config(cfg), precision, prompt_len, decode_len)


def fit_profile(records: list[dict], name: str, bandwidth_gbs: float | None = None,
                compute_gflops: float | None = None, threads: int | None = None,
                description: str = "", sources: list[str] | None = None) -> DeviceProfile:
    """A profile fitted to measurement records; `bandwidth_gbs` (measured) also bounds the bytes term."""
    base = DeviceProfile(name, bandwidth_gbs, compute_gflops, threads, description, list(sources or []))
    model = LatencyModel.fit(records, prior=base if base.has_roofline else None, bandwidth_gbs=bandwidth_gbs)
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
    info = read_gguf(path)
    if info["config"] is None:
        raise UserError(f"{path}: cannot read a llama/qwen2 config from its metadata (arch {info['arch']!r})")
    return info["config"]


def config_from_spec(spec: str) -> ModelConfig:
    """A GGUF file's config (its metadata) or a preset/config-file spec."""
    return config_from_gguf(spec) if str(spec).endswith(".gguf") else resolve_config(spec)


def parse_model_configs(specs: list[str] | None, bench_data: Any) -> dict[str, ModelConfig]:
    """--model-config values: a GGUF file (its metadata, matched by file name), FILENAME=CONFIG,
    a YAML/JSON mapping file {model_filename: config spec or dict}, or one CONFIG for every record.
    Without any, each record's model_filename is read as a GGUF if it exists here."""
    out: dict[str, ModelConfig] = {}
    for spec in specs or []:
        if "=" in spec:
            name, cfg_spec = spec.split("=", 1)
            out[name] = config_from_spec(cfg_spec)
            out[Path(name).name] = out[name]
            continue
        p = Path(spec)
        if p.suffix in (".yaml", ".yml", ".json") and p.is_file():
            data = read_structured_file(p)
            if isinstance(data, dict) and data and all(isinstance(v, (str, dict)) for v in data.values()) \
                    and "hidden_size" not in data and "model_type" not in data and "model" not in data:
                for name, v in data.items():
                    out[name] = ModelConfig.from_dict(v) if isinstance(v, dict) else config_from_spec(v)
                    out[Path(name).name] = out[name]
                continue
        if spec.endswith(".gguf"):  # matched to llama-bench's model_filename by file name
            out[Path(spec).name] = config_from_gguf(spec)
            continue
        if "*" in out:
            raise UserError("several --model-config values without FILENAME=: give FILENAME=CONFIG pairs, "
                            "GGUF files or a mapping file when the benchmark covers several models")
        out["*"] = config_from_spec(spec)
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


