"""Data sources: what `pocketlm data prepare` and `pocketlm tokenizer train` read.

A `SourceSpec` names local files (txt / jsonl / parquet, optionally gzipped; dirs and globs expand) or a
Hugging Face dataset. Local files are cut into *pieces* (newline-aligned byte ranges or parquet row
groups) and pieces grouped into ~``chunk_bytes`` *chunks*, the unit of parallel work. `read_piece`
yields a piece's texts; bad data is never fatal, it is counted under one of `SKIP_KINDS`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from pocketlm.errors import UserError
from pocketlm.model.config import read_structured_file

DEFAULT_CHUNK_BYTES = 1 << 20  # unit of parallel work (input bytes per task)
TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SKIP_KINDS = ("invalid_utf8", "empty", "binary", "malformed_jsonl", "missing_field", "unreadable")

# ----------------------------------------------------------------------------------------------
# Source specs
# ----------------------------------------------------------------------------------------------

@dataclass
class SourceSpec:
    """One named data source: local ``paths`` (files, dirs, globs) or a Hugging Face dataset ``hf``."""

    name: str
    paths: list[str] = field(default_factory=list)
    hf: str | None = None  # hub id, builder, local data dir or save_to_disk dir (streamed)
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
# Local files -> pieces -> chunks, and reading them
# ----------------------------------------------------------------------------------------------

def file_kind(path: Path) -> str:
    """"text", "jsonl" or "parquet", by suffix (a trailing .gz is looked through)."""
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


def file_pieces(path: Path, chunk_bytes: int, skipped: Counter) -> list[dict]:
    """Split one file into work pieces: newline-aligned byte ranges (text/jsonl) or row groups."""
    kind = file_kind(path)
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
        for piece in file_pieces(f, chunk_bytes, skipped):
            if cur and cur_bytes + piece["bytes"] > chunk_bytes:
                chunks.append(cur)
                cur, cur_bytes = [], 0
            cur.append(piece)
            cur_bytes += piece["bytes"]
    if cur:
        chunks.append(cur)
    return chunks, skipped


def read_piece(piece: dict, skipped: Counter, field_name: str = "text") -> Iterator[tuple[str, bool]]:
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


def read_texts(files: list[Path], skipped: Counter, text_field: str = "text") -> Iterator[str]:
    """Every text in ``files``, in order, read as `data prepare` reads them (bad data counted in
    ``skipped``)."""
    chunks, plan_skipped = plan_chunks(files, DEFAULT_CHUNK_BYTES)
    skipped.update(plan_skipped)
    for chunk in chunks:
        for piece in chunk:
            for text, _ in read_piece(piece, skipped, text_field):
                yield text


def _bad_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def hf_record_batches(spec: SourceSpec, skip_records: int, chunk_bytes: int) -> Iterator[list]:
    """Stream a Hugging Face dataset in batches of ~chunk_bytes of text (resuming after skip_records)."""
    try:
        import datasets
    except ImportError:
        raise UserError("Hugging Face sources need the 'datasets' package: pip install datasets") from None
    try:
        ds = _open_hf_stream(datasets, spec)
    except UserError:
        raise
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


def _open_hf_stream(datasets, spec: SourceSpec):
    """The split as an IterableDataset: a dir written by `Dataset.save_to_disk` (which `load_dataset`
    refuses) is read with `load_from_disk`; anything else (hub id, builder, data dir) is streamed."""
    saved = Path(os.path.expanduser(spec.hf))
    if (saved / "state.json").is_file() or (saved / "dataset_dict.json").is_file():
        if spec.hf_config or spec.data_files:
            raise UserError(f"source {spec.name!r}: a saved dataset dir takes no config or data_files")
        ds = datasets.load_from_disk(str(saved))
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise UserError(f"source {spec.name!r}: no split {spec.split!r} in {spec.hf} "
                                f"(has: {', '.join(ds)})")
            ds = ds[spec.split]
        return ds.to_iterable_dataset()
    kw = {"streaming": True, "split": spec.split}
    if spec.data_files:
        kw["data_files"] = spec.data_files
    return datasets.load_dataset(spec.hf, spec.hf_config, **kw)
