"""Pre-training data: tokenize text sources into packed, memory-mapped shards, and read them back.

`pocketlm data prepare` turns sources (local txt / jsonl / parquet files, or Hugging Face datasets in
streaming mode) into one directory per source of flat token-id shards, every document followed by the
tokenizer's EOS id, plus ``manifest.json``::

    {"version": 1, "tokenizer": "tokenizer", "dtype": "uint16", "eos_id": 0, "vocab_size": 4096,
     "seq_len_hint": null,
     "sources": {"web": {"train": ["web/train-00000.bin"], "val": ["web/val-00000.bin"],
                         "train_tokens": 123, "val_tokens": 4, "documents": 10,
                         "skipped": {"invalid_utf8": 0, "empty": 1, ...}, "files": [...]}}}

How it works, and why:
- Each source is cut into *chunks* (~1 MiB of input: several small files, or a newline-aligned byte
  range of a big one, or a parquet row group, or a batch of streamed records). Chunks are tokenized by
  a process pool and consumed strictly in order, so the output is byte-identical for any worker count.
- The last ``val_fraction`` of every chunk's tokens (moved back to a document start when that stays
  within 2x the target) goes to the validation shards: deterministic, exact and never empty when the
  source has data.
- Shards roll over at chunk boundaries once they hold ``shard_tokens``; each finished shard is renamed
  into place and a per-source progress file records how many chunks it covers. A killed run resumes
  after the last finished shard; a source whose inputs, tokenizer or settings changed is redone.
- Bad data never crashes a run: invalid UTF-8, empty and binary files, malformed JSONL lines and
  records without the text field are skipped and counted in the manifest's ``skipped``.

Readers for the trainer: `read_manifest`, `open_shards`, `ShardedTokens`, `MixtureSpec`/`load_mixture`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from pocketlm.errors import UserError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FORMAT_VERSION = 1  # bump when the shard layout/splitting changes: invalidates resumable progress
DEFAULT_SHARD_TOKENS = 1 << 26  # 64Mi tokens: 128 MiB uint16 shards
DEFAULT_CHUNK_BYTES = 1 << 20  # unit of parallel work (input bytes per task)
TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SKIP_KINDS = ("invalid_utf8", "empty", "binary", "malformed_jsonl", "missing_field", "unreadable")


# ----------------------------------------------------------------------------------------------
# Readers (used by the trainer)
# ----------------------------------------------------------------------------------------------

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
        from pocketlm.model.config import read_structured_file

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


# ----------------------------------------------------------------------------------------------
# Source specs
# ----------------------------------------------------------------------------------------------

@dataclass
class SourceSpec:
    """One named data source: local ``paths`` (files, dirs, globs) or a Hugging Face dataset ``hf``."""

    name: str
    paths: list[str] = field(default_factory=list)
    hf: str | None = None  # hub id or local dataset path/builder (loaded with streaming=True)
    hf_config: str | None = None
    split: str = "train"
    data_files: list[str] | None = None  # passed to datasets.load_dataset (e.g. with hf: json)
    text_field: str = "text"
    max_tokens: int | None = None  # cap on train tokens taken from this source
    special_tokens: bool = False  # let literal "<|endoftext|>" etc. in the text become special ids

    def __post_init__(self):
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise UserError(f"bad source name {self.name!r}: use letters, digits, '-', '_', '.'")
        if self.name == "tokenizer":  # the data dir's tokenizer copy lives there
            raise UserError("'tokenizer' is reserved; give the source another name")
        if bool(self.paths) == bool(self.hf):
            raise UserError(f"source {self.name!r} needs exactly one of paths or hf")
        if self.max_tokens is not None:
            if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, (int, float)) \
                    or self.max_tokens <= 0:
                raise UserError(f"source {self.name!r}: max_tokens must be a positive number")
            self.max_tokens = int(self.max_tokens)


def parse_input_arg(arg: str) -> SourceSpec:
    """``NAME=PATH[,PATH...]`` (CLI --input)."""
    name, sep, paths = arg.partition("=")
    if not sep or not paths:
        raise UserError(f"--input must look like NAME=PATH[,PATH...], got {arg!r}")
    return SourceSpec(name=name.strip(), paths=[p for p in paths.split(",") if p])


def parse_hf_arg(arg: str) -> SourceSpec:
    """``NAME=hub_id[:config][:split][:text_field]`` (CLI --hf-dataset); empty parts keep defaults."""
    name, sep, rest = arg.partition("=")
    if not sep or not rest:
        raise UserError(f"--hf-dataset must look like NAME=hub_id[:config][:split][:text_field], got {arg!r}")
    parts = rest.split(":")
    if len(parts) > 4:
        raise UserError(f"--hf-dataset has too many ':' parts: {arg!r}")
    parts += [""] * (4 - len(parts))
    return SourceSpec(name=name.strip(), hf=parts[0], hf_config=parts[1] or None,
                      split=parts[2] or "train", text_field=parts[3] or "text")


def load_spec_file(path: str | os.PathLike) -> list[SourceSpec]:
    """A YAML/JSON spec: ``sources: {name: {paths: [...], text_field: ..., max_tokens: ...} | {hf: ..}}``
    (or a list of such mappings with ``name``). Relative paths are relative to the spec file."""
    from pocketlm.model.config import read_structured_file

    raw = read_structured_file(path)
    base = Path(path).resolve().parent
    if not isinstance(raw, dict) or "sources" not in raw:
        raise UserError(f"{path}: expected a mapping with a 'sources' key")
    items = raw["sources"]
    if isinstance(items, dict):
        items = [{"name": k, **(v or {})} for k, v in items.items()]
    if not isinstance(items, list) or not items:
        raise UserError(f"{path}: 'sources' must be a non-empty mapping or list")
    known = {f for f in SourceSpec.__dataclass_fields__} | {"config", "path"}
    specs = []
    for item in items:
        if not isinstance(item, dict):
            raise UserError(f"{path}: each source must be a mapping, got {item!r}")
        name = item.get("name", "?")
        for k in item:
            if k not in known:
                raise UserError(f"{path}: sources.{name}: unknown field {k!r} (known: {', '.join(sorted(known))})")
        item = dict(item)
        if "config" in item:
            item["hf_config"] = item.pop("config")
        if "path" in item:
            item["paths"] = [item.pop("path")]
        if isinstance(item.get("paths"), str):
            item["paths"] = [item["paths"]]
        item["paths"] = [p if os.path.isabs(os.path.expanduser(p)) else str(base / p)
                         for p in item.get("paths") or []]
        if item.get("data_files"):
            df = item["data_files"]
            df = [df] if isinstance(df, str) else df
            item["data_files"] = [p if os.path.isabs(p) else str(base / p) for p in df]
        if item.get("hf") and item["hf"].startswith((".", "/")):  # local dataset dir
            item["hf"] = str((base / item["hf"]).resolve())
        specs.append(SourceSpec(**item))
    return specs


# ----------------------------------------------------------------------------------------------
# Planning: files -> pieces -> chunks
# ----------------------------------------------------------------------------------------------

def _file_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    return "text"


def expand_paths(paths: Iterable[str], what: str = "input") -> list[Path]:
    """Files named by paths, directories (recursive: txt/md/jsonl/json/parquet, optionally .gz) and
    globs; sorted and de-duplicated. UserError for a path that matches nothing."""
    known = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
    out: dict[str, Path] = {}
    for raw in paths:
        p = os.path.expanduser(str(raw))
        if glob.has_magic(p):
            matches = [Path(m) for m in sorted(glob.glob(p, recursive=True))]
        else:
            matches = [Path(p)] if os.path.exists(p) else []
        if not matches:
            raise UserError(f"{what} path not found: {raw}")
        for m in matches:
            if m.is_dir():
                for f in sorted(m.rglob("*")):
                    rel_parts = f.relative_to(m).parts
                    if f.is_file() and not any(part.startswith(".") for part in rel_parts):
                        sfx = [s.lower() for s in f.suffixes]
                        if sfx and sfx[-1] == ".gz":
                            sfx = sfx[:-1]
                        if sfx and sfx[-1] in known:
                            out[str(f.resolve())] = f.resolve()
            elif m.is_file():
                out[str(m.resolve())] = m.resolve()
    return [out[k] for k in sorted(out)]


def _pieces_of(path: Path, chunk_bytes: int, skipped: Counter) -> list[dict]:
    """Split one file into work pieces: newline-aligned byte ranges (text/jsonl) or row groups."""
    kind = _file_kind(path)
    size = path.stat().st_size
    if size == 0:
        skipped["empty"] += 1
        return []
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_row_groups
            rg_bytes = max(1, size // max(n, 1))
        except Exception:  # noqa: BLE001 - a corrupt parquet file is bad data, not a crash
            skipped["unreadable"] += 1
            return []
        return [{"path": str(path), "kind": kind, "row_group": i, "bytes": rg_bytes} for i in range(n)]
    if path.suffix.lower() == ".gz" or size <= chunk_bytes:
        return [{"path": str(path), "kind": kind, "start": 0, "end": -1, "last": True, "bytes": size}]
    bounds = [0]
    with open(path, "rb") as f:
        while bounds[-1] + chunk_bytes < size:
            f.seek(bounds[-1] + chunk_bytes)
            f.readline()  # move to the next line start
            pos = f.tell()
            if pos >= size:
                break
            bounds.append(pos)
    bounds.append(size)
    return [{"path": str(path), "kind": kind, "start": a, "end": b, "last": i == len(bounds) - 2,
             "bytes": b - a} for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def plan_chunks(files: list[Path], chunk_bytes: int) -> tuple[list[list[dict]], Counter]:
    """Group file pieces into chunks of about ``chunk_bytes`` (small files share a chunk)."""
    skipped: Counter = Counter()
    chunks: list[list[dict]] = []
    cur: list[dict] = []
    cur_bytes = 0
    for f in files:
        for piece in _pieces_of(f, chunk_bytes, skipped):
            if cur and cur_bytes + piece["bytes"] > chunk_bytes:
                chunks.append(cur)
                cur, cur_bytes = [], 0
            cur.append(piece)
            cur_bytes += piece["bytes"]
    if cur:
        chunks.append(cur)
    return chunks, skipped


# ----------------------------------------------------------------------------------------------
# Workers: read + tokenize one chunk
# ----------------------------------------------------------------------------------------------

_W: dict[str, Any] = {}  # per-process worker state: tokenizer, settings


def _init_worker(tokenizer_json: str, eos_id: int, dtype: str, val_fraction: float,
                 text_field: str, special_tokens: bool, single_process: bool = False) -> None:
    if not single_process:  # one thread per worker process: the pool already uses every core
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ["RAYON_NUM_THREADS"] = "1"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.encode_special_tokens = not special_tokens  # literal "<|im_end|>" in data stays plain text
    _W.update(tok=tok, eos=eos_id, dtype=np.dtype(dtype), val_fraction=val_fraction,
              text_field=text_field)


def _read_piece(piece: dict, skipped: Counter, field_name: str = "text") -> Iterator[tuple[str, bool]]:
    """Yield (text, ends_document) from one piece, counting what is skipped."""
    kind, path = piece["kind"], piece["path"]
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            if field_name not in pf.schema_arrow.names:
                skipped["missing_field"] += pf.metadata.row_group(piece["row_group"]).num_rows
                return
            col = pf.read_row_group(piece["row_group"], columns=[field_name]).column(0).to_pylist()
        except Exception:  # noqa: BLE001
            skipped["unreadable"] += 1
            return
        for v in col:
            if not isinstance(v, str):
                skipped["empty" if v is None else "missing_field"] += 1
            elif not v.strip():
                skipped["empty"] += 1
            else:
                yield v, True
        return
    try:
        if path.endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                f.seek(piece["start"])
                data = f.read() if piece["end"] < 0 else f.read(piece["end"] - piece["start"])
    except OSError:
        skipped["unreadable"] += 1
        return
    if b"\x00" in data:  # NUL bytes: a binary file (or a broken range of one)
        skipped["binary"] += 1
        return
    if kind == "text":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped["invalid_utf8"] += 1
            return
        if text.strip():
            yield text, piece.get("last", True)
        elif piece.get("start", 0) == 0 and piece.get("last", True):
            skipped["empty"] += 1
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except UnicodeDecodeError:
            skipped["invalid_utf8"] += 1
            continue
        except ValueError:
            skipped["invalid_utf8" if _bad_utf8(line) else "malformed_jsonl"] += 1
            continue
        v = rec.get(field_name) if isinstance(rec, dict) else None
        if not isinstance(v, str):
            skipped["missing_field"] += 1
        elif not v.strip():
            skipped["empty"] += 1
        else:
            yield v, True


def _bad_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _tokenize_docs(texts: list[tuple[str, bool]], skipped: Counter) -> dict:
    """Tokenize, append EOS after each finished document, split off the validation tail."""
    tok, eos, dtype = _W["tok"], _W["eos"], _W["dtype"]
    encs = tok.encode_batch_fast([t for t, _ in texts], add_special_tokens=False) if texts else []
    pieces, ends, n, docs = [], [], 0, 0
    for enc, (_, done) in zip(encs, texts):
        ids = enc.ids
        if done:
            ids = ids + [eos]
            docs += 1
        if ids:
            pieces.append(np.asarray(ids, dtype=dtype))
            n += len(ids)
            if done:
                ends.append(n)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    target = int(round(n * _W["val_fraction"]))
    cut = n - target
    if target:
        # Start the validation tail at a document boundary when that at most doubles it.
        starts = [e for e in ends if e <= cut]
        if starts and cut - starts[-1] <= target:
            cut = starts[-1]
    return {"train": tokens[:cut], "val": tokens[cut:], "documents": docs, "skipped": dict(skipped)}


def _work_files(chunk: list[dict]) -> dict:
    skipped: Counter = Counter()
    texts = [t for piece in chunk for t in _read_piece(piece, skipped, _W["text_field"])]
    return _tokenize_docs(texts, skipped)


def _work_records(records: list[Any]) -> dict:
    skipped: Counter = Counter()
    texts = []
    for rec in records:
        v = rec.get(_W["text_field"]) if isinstance(rec, dict) else None
        if not isinstance(v, str):
            skipped["empty" if isinstance(rec, dict) and _W["text_field"] in rec else "missing_field"] += 1
        elif not v.strip():
            skipped["empty"] += 1
        else:
            texts.append((v, True))
    res = _tokenize_docs(texts, skipped)
    res["_records"] = len(records)  # resuming a stream skips this many records
    return res


def _make_pool(nproc: int, init: tuple):
    """A fork pool (spawn would re-run the caller's __main__, breaking scripts and stdin).
    Workers only use numpy and tokenizers, so forking a parent with idle torch threads is safe;
    TOKENIZERS_PARALLELISM is set around the fork to silence tokenizers' fork warning."""
    import multiprocessing as mp

    prev = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return mp.get_context("fork").Pool(nproc, initializer=_init_worker, initargs=init)
    finally:
        if prev is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = prev


def _ordered_map(pool, fn, items: Iterable, window: int) -> Iterator:
    """Like pool.imap (ordered) but with bounded read-ahead, so a huge stream isn't pulled into RAM."""
    if pool is None:
        for it in items:
            yield fn(it)
        return
    pending: deque = deque()
    for it in items:
        pending.append(pool.apply_async(fn, (it,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ----------------------------------------------------------------------------------------------
# Shard writing with resumable progress
# ----------------------------------------------------------------------------------------------

def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class _SplitWriter:
    """Appends tokens to ``{split}-{i:05d}.bin.tmp``; `finish` renames it into place."""

    def __init__(self, src_dir: Path, split: str, index: int):
        self.src_dir, self.split, self.index = src_dir, split, index
        self.f = None
        self.n = 0

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}.bin"

    def write(self, arr: np.ndarray) -> None:
        if not len(arr):
            return
        if self.f is None:
            self.f = open(self.src_dir / (self.name + ".tmp"), "wb")
        self.f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        self.n += len(arr)

    def finish(self) -> tuple[str, int] | None:
        """Close and publish the shard; returns (file name, tokens) or None if empty."""
        if self.f is None:
            return None
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.src_dir / (self.name + ".tmp"), self.src_dir / self.name)
        out = (self.name, self.n)
        self.f, self.n, self.index = None, 0, self.index + 1
        return out

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            (self.src_dir / (self.name + ".tmp")).unlink(missing_ok=True)
            self.f = None


def _fresh_progress(fingerprint: str) -> dict:
    return {"fingerprint": fingerprint, "complete": False, "chunks_done": 0, "records_done": 0,
            "train": [], "val": [], "train_tokens": 0, "val_tokens": 0, "documents": 0,
            "skipped": {}, "truncated": False}


def _load_progress(src_dir: Path, fingerprint: str, itemsize: int) -> dict:
    """Resume state for a source; stale (other fingerprint) or inconsistent state starts over."""
    path = src_dir / ".progress.json"
    try:
        prog = json.loads(path.read_text(encoding="utf-8"))
        ok = prog.get("fingerprint") == fingerprint and all(
            (src_dir / name).is_file() and (src_dir / name).stat().st_size == n * itemsize
            for split in ("train", "val") for name, n in prog[split])
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        if src_dir.exists():  # ours (checked in prepare): a stale or corrupt run
            shutil.rmtree(src_dir)
        src_dir.mkdir(parents=True)
        return _fresh_progress(fingerprint)
    for tmp in src_dir.glob("*.tmp"):  # the shard a killed run was writing
        tmp.unlink()
    return prog


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tokenizer_json(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise UserError("data prepare needs a fast (tokenizers-backed) tokenizer")
    return backend.to_str()


def _eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise UserError("the tokenizer has no eos token: documents cannot be joined")
    return int(eos)


def prepare(sources: list[SourceSpec] | str | os.PathLike, tokenizer: Any, out_dir: str | os.PathLike,
            workers: int | None = None, val_fraction: float = 0.01,
            shard_tokens: int = DEFAULT_SHARD_TOKENS, max_tokens_per_source: int | None = None,
            chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True) -> dict:
    """Tokenize ``sources`` into packed shards under ``out_dir`` and write its manifest (returned).

    ``sources``: SourceSpecs or a spec file path. ``tokenizer``: a tokenizer dir / hub name or a loaded
    transformers tokenizer. ``workers``: processes (default: all cores, and a pool only for sources
    big enough to need one). Resumable and deterministic:
    rerunning with the same arguments keeps finished shards; any worker count gives identical bytes.
    """
    from pocketlm.data.tokenizer import load_tokenizer

    if isinstance(sources, (str, os.PathLike)):
        sources = load_spec_file(sources)
    sources = list(sources)
    if not sources:
        raise UserError("no data sources given (use --input, --spec or --hf-dataset)")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UserError(f"duplicate source names: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1 or chunk_bytes < 1:
        raise UserError("shard_tokens and chunk_bytes must be positive")
    if max_tokens_per_source is not None and max_tokens_per_source <= 0:
        raise UserError("max_tokens_per_source must be positive")
    # Resolve local inputs up front so a typo fails before any work.
    files_of = {s.name: expand_paths(s.paths, f"source {s.name!r}") for s in sources if s.paths}
    for name, files in files_of.items():
        if not files:
            raise UserError(f"source {name!r}: no input files found")
    tok_ref = None
    if isinstance(tokenizer, (str, os.PathLike)):
        tok_ref = str(tokenizer)
        tokenizer = load_tokenizer(tokenizer)
    tok_json = _tokenizer_json(tokenizer)
    eos_id = _eos_id(tokenizer)
    vocab_size = len(tokenizer)
    dtype = "uint16" if vocab_size <= 1 << 16 else "uint32"

    out = Path(out_dir)
    for s in sources:  # never overwrite what we didn't write (e.g. --out pointing at the inputs)
        d = out / s.name
        if d.exists() and not (d / ".progress.json").exists() and (not d.is_dir() or any(d.iterdir())):
            raise UserError(f"{d} exists and was not written by `pocketlm data prepare`: "
                            "choose another --out or source name")
    out.mkdir(parents=True, exist_ok=True)
    # An old manifest may point at shards this run replaces: until the new one is written, readers
    # must see an unfinished dir, not stale data.
    (out / MANIFEST).unlink(missing_ok=True)
    # The tokenizer travels with the data, so the data dir alone is enough to train.
    tok_dir = out / "tokenizer"
    tok_fp = _fingerprint(tok_json)
    if not (tok_dir / ".fingerprint").is_file() or (tok_dir / ".fingerprint").read_text() != tok_fp:
        tmp = out / ".tokenizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / ".fingerprint").write_text(tok_fp)
        shutil.rmtree(tok_dir, ignore_errors=True)
        os.replace(tmp, tok_dir)

    nproc = workers or os.cpu_count() or 1
    if nproc < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    settings = {"format": FORMAT_VERSION, "tokenizer": tok_fp, "dtype": dtype, "val_fraction": val_fraction,
                "shard_tokens": shard_tokens, "chunk_bytes": chunk_bytes}
    results = {}
    t0 = time.time()
    for spec in sources:
        cap = min(x for x in (spec.max_tokens, max_tokens_per_source, float("inf")) if x is not None)
        cap = None if cap == float("inf") else int(cap)
        results[spec.name] = _prepare_source(spec, files_of.get(spec.name), out, tok_json, eos_id, dtype,
                                             val_fraction, shard_tokens, chunk_bytes, cap, nproc,
                                             workers is not None,
                                             settings, progress)
    # Sources from an earlier run with a different source list don't belong to this manifest.
    for d in out.iterdir():
        if d.is_dir() and (d / ".progress.json").exists() and d.name not in results:
            shutil.rmtree(d)
    manifest = {"version": MANIFEST_VERSION, "tokenizer": "tokenizer", "tokenizer_source": tok_ref,
                "dtype": dtype, "eos_id": eos_id, "vocab_size": vocab_size, "seq_len_hint": None,
                "val_fraction": val_fraction, "shard_tokens": shard_tokens, "sources": results}
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    if progress:
        total = sum(r["train_tokens"] + r["val_tokens"] for r in results.values())
        print(f"data prepare: {total:,} tokens in {len(results)} source(s) -> {out} "
              f"({time.time() - t0:.1f}s)", file=sys.stderr)
    return read_manifest(out)


def _prepare_source(spec: SourceSpec, files: list[Path] | None, out: Path, tok_json: str, eos_id: int,
                    dtype: str, val_fraction: float, shard_tokens: int, chunk_bytes: int,
                    cap: int | None, nproc: int, explicit_workers: bool, settings: dict,
                    show: bool) -> dict:
    src_dir = out / spec.name
    if files is not None:
        inputs = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    else:
        inputs = [spec.hf, spec.hf_config, spec.split, spec.data_files]
    fp = _fingerprint({"settings": settings, "spec": asdict(spec), "inputs": inputs, "cap": cap})
    prog = _load_progress(src_dir, fp, np.dtype(dtype).itemsize)
    file_list = [str(f) for f in files] if files is not None else [
        f"hf:{spec.hf}" + (f":{spec.hf_config}" if spec.hf_config else "") + f":{spec.split}"]
    plan_skipped: Counter = Counter()
    if not prog["complete"]:
        init = (tok_json, eos_id, dtype, val_fraction, spec.text_field, spec.special_tokens)
        if files is not None:
            chunks, plan_skipped = plan_chunks(files, chunk_bytes)
            work = (_work_files, chunks[prog["chunks_done"]:])
            n_chunks = len(chunks)
        else:
            work = (_work_records, _record_batches(spec, prog["records_done"], chunk_bytes))
            n_chunks = None
        pool = None
        # A process pool pays off only with enough chunks to keep it busy: for a small source the
        # in-process path (tokenizers' own threads) is as fast. An explicit --workers N is obeyed.
        todo = None if n_chunks is None else n_chunks - prog["chunks_done"]
        if nproc > 1 and (todo is None or todo >= (2 if explicit_workers else 4 * nproc)):
            pool = _make_pool(nproc, init)
        else:
            _init_worker(*init, single_process=True)
        try:
            _run_chunks(spec, prog, src_dir, work, n_chunks, pool, nproc, shard_tokens, cap, show)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    else:
        _, plan_skipped = plan_chunks(files, chunk_bytes) if files is not None else (None, Counter())
    skipped = Counter({k: 0 for k in SKIP_KINDS})
    skipped.update(plan_skipped)
    skipped.update(prog["skipped"])
    entry = {"train": [f"{spec.name}/{n}" for n, _ in prog["train"]],
             "val": [f"{spec.name}/{n}" for n, _ in prog["val"]],
             "train_tokens": prog["train_tokens"], "val_tokens": prog["val_tokens"],
             "documents": prog["documents"], "skipped": dict(skipped), "files": file_list,
             "truncated": prog["truncated"]}
    if files is None:
        entry["hf"] = {"id": spec.hf, "config": spec.hf_config, "split": spec.split,
                       "text_field": spec.text_field}
    if entry["train_tokens"] + entry["val_tokens"] == 0:
        raise UserError(f"source {spec.name!r} produced no tokens: its input is empty or all bad "
                        f"(skipped: {dict((k, v) for k, v in skipped.items() if v) or 'nothing'})")
    return entry


def _record_batches(spec: SourceSpec, skip_records: int, chunk_bytes: int) -> Iterator[list]:
    """Stream a Hugging Face dataset in batches of ~chunk_bytes of text (resuming after skip_records)."""
    try:
        import datasets
    except ImportError:
        raise UserError("Hugging Face sources need the 'datasets' package: pip install datasets") from None
    kw = {"streaming": True, "split": spec.split}
    if spec.data_files:
        kw["data_files"] = spec.data_files
    try:
        ds = datasets.load_dataset(spec.hf, spec.hf_config, **kw)
    except Exception as e:  # noqa: BLE001 - hub/network/config problems are the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load dataset {spec.hf!r} for source {spec.name!r}: {first}") from None
    if skip_records:
        ds = ds.skip(skip_records)
    batch, size = [], 0
    for rec in ds:
        batch.append(rec)
        v = rec.get(spec.text_field) if isinstance(rec, dict) else None
        size += len(v) if isinstance(v, str) else 1
        if size >= chunk_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _run_chunks(spec: SourceSpec, prog: dict, src_dir: Path, work: tuple, n_chunks: int | None,
                pool, nproc: int, shard_tokens: int, cap: int | None, show: bool) -> None:
    fn, items = work
    train_w = _SplitWriter(src_dir, "train", len(prog["train"]))
    val_w = _SplitWriter(src_dir, "val", len(prog["val"]))
    # Counters of the shard being written; merged into prog only when it's published.
    pend = {"chunks": 0, "records": 0, "documents": 0, "skipped": Counter()}
    t0, tokens_run, last_log = time.time(), 0, 0.0

    def publish():
        for w, split in ((train_w, "train"), (val_w, "val")):
            res = w.finish()
            if res:
                prog[split].append(list(res))
                prog[f"{split}_tokens"] += res[1]
        prog["chunks_done"] += pend["chunks"]
        prog["records_done"] += pend["records"]
        prog["documents"] += pend["documents"]
        prog["skipped"] = dict(Counter(prog["skipped"]) + pend["skipped"])
        pend.update(chunks=0, records=0, documents=0, skipped=Counter())
        _atomic_write_text(src_dir / ".progress.json", json.dumps(prog))

    try:
        for res in _ordered_map(pool, fn, items, window=2 * nproc + 2):
            n_records = res.pop("_records", 0)
            train = res["train"]
            if cap is not None and prog["train_tokens"] + train_w.n + len(train) >= cap:
                train = train[: cap - prog["train_tokens"] - train_w.n]
                prog["truncated"] = True
            train_w.write(train)
            val_w.write(res["val"])
            tokens_run += len(train) + len(res["val"])
            pend["chunks"] += 1
            pend["records"] += n_records
            pend["documents"] += res["documents"]
            pend["skipped"].update(res["skipped"])
            if prog["truncated"]:
                break
            if train_w.n >= shard_tokens:
                publish()
            if show and time.time() - last_log > 5:
                last_log = time.time()
                total = f"/{n_chunks}" if n_chunks else ""
                print(f"data prepare [{spec.name}]: chunk {prog['chunks_done'] + pend['chunks']}{total}, {prog['train_tokens'] + train_w.n:,} train tokens, "
                      f"{tokens_run / max(time.time() - t0, 1e-9):,.0f} tokens/s", file=sys.stderr)
        prog["complete"] = True
        publish()
    except BaseException:
        train_w.abort()
        val_w.abort()
        raise
    if show:
        dt = max(time.time() - t0, 1e-9)
        print(f"data prepare [{spec.name}]: {prog['train_tokens']:,} train + {prog['val_tokens']:,} val "
              f"tokens, {prog['documents']:,} docs, {tokens_run / dt:,.0f} tokens/s", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# CLI: pocketlm data prepare | corpus | info
# ----------------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser("data", help="prepare pre-training data (tokenized, packed shards)",
                       description="Prepare pre-training data: tokenized, packed, memory-mapped shards.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    pp = dsub.add_parser("prepare", help="tokenize sources into shards + manifest.json",
                         description="Tokenize local txt/jsonl/parquet files and Hugging Face datasets "
                                     "into packed shards (documents joined by EOS). Resumable: rerun the "
                                     "same command to continue an interrupted run.")
    pp.add_argument("--tokenizer", required=True, help="tokenizer dir (pocketlm tokenizer train) or hub name")
    pp.add_argument("--out", required=True, help="output data dir")
    pp.add_argument("--input", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                    help="local source: files, dirs or globs (txt, jsonl with a 'text' field, parquet)")
    pp.add_argument("--hf-dataset", action="append", default=[], metavar="NAME=ID[:CONFIG][:SPLIT][:FIELD]",
                    help="Hugging Face dataset, streamed (a local dataset dir works too)")
    pp.add_argument("--spec", help="YAML/JSON file with a 'sources' mapping")
    pp.add_argument("--text-field", default=None, help="jsonl/parquet field holding the text (default: text)")
    pp.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    pp.add_argument("--val-fraction", type=float, default=0.01)
    pp.add_argument("--max-tokens-per-source", type=float, default=None, help="cap train tokens per source")
    pp.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    pp.add_argument("--json", action="store_true", help="print the manifest as JSON")
    pp.set_defaults(func=_cmd_prepare)

    pc = dsub.add_parser("corpus", help="write the built-in offline pre-training corpus as jsonl files",
                         description="Generate the built-in corpus (web/code/math/decay sources; no network).")
    pc.add_argument("--out", required=True)
    pc.add_argument("--size-mb", type=float, default=None, help="total size (default: the built-in default)")
    pc.add_argument("--seed", type=int, default=0)
    pc.set_defaults(func=_cmd_corpus)

    pi = dsub.add_parser("info", help="summarize a prepared data dir",
                         description="Token counts, shards and skipped records of a prepared data dir.")
    pi.add_argument("data_dir")
    pi.add_argument("--json", action="store_true")
    pi.set_defaults(func=_cmd_info)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _cmd_prepare(args) -> int:
    sources: list[SourceSpec] = []
    if args.spec:
        sources += load_spec_file(args.spec)
    sources += [parse_input_arg(a) for a in args.input]
    sources += [parse_hf_arg(a) for a in args.hf_dataset]
    if args.text_field:
        for s in sources:
            s.text_field = args.text_field
    if not sources:
        raise UserError("give at least one source: --input NAME=PATH, --hf-dataset NAME=ID or --spec FILE")
    cap = int(args.max_tokens_per_source) if args.max_tokens_per_source else None
    manifest = prepare(sources, args.tokenizer, args.out, workers=args.workers,
                       val_fraction=args.val_fraction, shard_tokens=args.shard_tokens,
                       max_tokens_per_source=cap)
    if args.json:
        from pocketlm.utils import print_json

        print_json(manifest)
    else:
        _print_summary(manifest, args.out)
    return 0


def _print_summary(manifest: dict, data_dir) -> None:
    print(f"{data_dir}: dtype {manifest['dtype']}, vocab {manifest['vocab_size']}, eos {manifest['eos_id']}")
    print(f"{'source':<16}{'train tokens':>14}{'val tokens':>12}{'docs':>10}{'shards':>8}  skipped")
    for name, s in manifest["sources"].items():
        sk = ", ".join(f"{k}={v}" for k, v in s["skipped"].items() if v) or "-"
        print(f"{name:<16}{s['train_tokens']:>14,}{s['val_tokens']:>12,}{s['documents']:>10,}"
              f"{len(s['train']):>8}  {sk}")


def _cmd_corpus(args) -> int:
    from pocketlm.data.corpus import DEFAULT_SIZE_MB, write_corpus

    paths = write_corpus(args.out, size_mb=args.size_mb or DEFAULT_SIZE_MB, seed=args.seed)
    for name, p in paths.items():
        files = sorted(p.glob("*.jsonl"))
        print(f"{name}: {p} ({len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.2f} MB)")
    return 0


def _cmd_info(args) -> int:
    manifest = read_manifest(args.data_dir)
    if args.json:
        from pocketlm.utils import print_json

        print_json(manifest)
    else:
        _print_summary(manifest, args.data_dir)
    return 0
