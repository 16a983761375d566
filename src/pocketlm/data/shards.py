"""Prepared data on disk: the manifest, memory-mapped shards and the per-phase source mixture.

A data dir written by `pocketlm data prepare` holds ``manifest.json`` plus one directory of flat token
shards per source. The trainer reads it with `read_manifest`, `open_shards` / `ShardedTokens` and
`MixtureSpec` / `load_mixture`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketlm.errors import UserError
from pocketlm.model.config import read_structured_file

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The prepared data dir's manifest; ``tokenizer`` is resolved to an absolute path when it
    points inside the data dir. UserError if the dir is not a finished `pocketlm data prepare` output."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        if data_dir.is_dir() and any(data_dir.glob("*/.progress.json")):
            raise UserError(f"{data_dir} holds an unfinished `pocketlm data prepare` run: rerun it to resume")
        raise UserError(f"not a prepared data dir (no {MANIFEST}): {data_dir}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"corrupt manifest {path}: {e}") from None
    if manifest.get("version") != MANIFEST_VERSION or "sources" not in manifest:
        raise UserError(f"unsupported manifest version {manifest.get('version')!r} in {path}")
    tok = manifest.get("tokenizer")
    if tok and not os.path.isabs(tok) and (data_dir / tok).is_dir():
        manifest["tokenizer"] = str((data_dir / tok).resolve())
    return manifest


def open_shards(data_dir: str | os.PathLike, source: str, split: str = "train") -> list[np.memmap]:
    """Memory-mapped token arrays of one source's split, in order (empty shards are left out)."""
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', not {split!r}")
    manifest = read_manifest(data_dir)
    if source not in manifest["sources"]:
        raise UserError(f"source {source!r} not in {data_dir} (has: {', '.join(manifest['sources'])})")
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    out = []
    for rel in manifest["sources"][source][split]:
        path = Path(data_dir) / rel
        if not path.is_file():
            raise UserError(f"missing shard {path}: the data dir is incomplete, rerun `pocketlm data prepare`")
        if path.stat().st_size:
            out.append(np.memmap(path, dtype=dtype, mode="r"))
    return out


class ShardedTokens:
    """One source split as a single virtual token array over its shards.

    ``len(st)`` is the token count; ``st.get(start, n)`` returns ``n`` tokens from a global offset
    (crossing shard boundaries) as int64, ready for ``torch.from_numpy``.
    """

    def __init__(self, data_dir: str | os.PathLike, source: str, split: str = "train"):
        self.shards = open_shards(data_dir, source, split)
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, start: int, n: int) -> np.ndarray:
        if start < 0 or start + n > len(self):
            raise IndexError(f"tokens [{start}, {start + n}) out of range (have {len(self)})")
        out = np.empty(n, dtype=np.int64)
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos, done = start - int(self.offsets[i]), 0
        while done < n:
            take = min(n - done, len(self.shards[i]) - pos)
            out[done:done + take] = self.shards[i][pos:pos + take]
            done, i, pos = done + take, i + 1, 0
        return out


@dataclass
class MixtureSpec:
    """Sampling weight of each source per training phase, e.g.
    ``{"phases": {"stable": {"web": 0.8, "code": 0.2}, "decay": {"decay": 0.7, "web": 0.3}}}``.

    Weights are normalized to sum to 1 per phase. A phase given as the string ``"natural"`` weights
    every source by its train token count (PhoneLM's "natural proportions"); it needs a manifest.
    """

    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    def weights(self, phase: str) -> dict[str, float]:
        if phase not in self.phases:
            raise UserError(f"mixture has no phase {phase!r} (has: {', '.join(self.phases)})")
        return dict(self.phases[phase])

    @property
    def sources(self) -> list[str]:
        return sorted({s for w in self.phases.values() for s in w})

    def to_dict(self) -> dict:
        return {"phases": {p: dict(w) for p, w in self.phases.items()}}


def load_mixture(spec: Any, manifest: dict | str | os.PathLike | None = None) -> MixtureSpec:
    """A MixtureSpec from a dict, a YAML/JSON file, or a MixtureSpec; checked against a manifest (or
    data dir) when given: every weighted source must exist there and have train tokens."""
    if isinstance(spec, MixtureSpec):
        raw: Any = spec.to_dict()
    elif isinstance(spec, (str, os.PathLike)):
        raw = read_structured_file(spec)
    else:
        raw = spec
    if isinstance(manifest, (str, os.PathLike)):
        manifest = read_manifest(manifest)
    if not isinstance(raw, dict):
        raise UserError(f"mixture must be a mapping with 'phases', got {type(raw).__name__}")
    phases_raw = raw.get("phases", raw)
    if not isinstance(phases_raw, dict) or not phases_raw:
        raise UserError("mixture.phases must map phase names to {source: weight}")
    phases: dict[str, dict[str, float]] = {}
    for phase, weights in phases_raw.items():
        where = f"mixture.phases.{phase}"
        if weights == "natural":
            if manifest is None:
                raise UserError(f"{where}: 'natural' weights need the prepared data's manifest")
            weights = {s: m["train_tokens"] for s, m in manifest["sources"].items()}
        if not isinstance(weights, dict) or not weights:
            raise UserError(f"{where} must map source names to weights")
        clean = {}
        for src, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
                raise UserError(f"{where}.{src}: weight must be a number >= 0, got {w!r}")
            if manifest is not None:
                if src not in manifest["sources"]:
                    raise UserError(f"{where}.{src}: no such source in the prepared data "
                                    f"(has: {', '.join(manifest['sources'])})")
                if w > 0 and manifest["sources"][src]["train_tokens"] == 0:
                    raise UserError(f"{where}.{src}: source has no train tokens")
            clean[str(src)] = float(w)
        total = sum(clean.values())
        if total <= 0:
            raise UserError(f"{where}: weights sum to 0")
        phases[str(phase)] = {s: w / total for s, w in clean.items() if w > 0}
    return MixtureSpec(phases)
