"""Pre-training data: tokenize text sources into packed, memory-mapped shards.

`pocketlm data prepare` turns sources (local txt / jsonl / parquet files, or Hugging Face datasets in
streaming mode) into one directory per source of flat token-id shards, every document followed by the
tokenizer's EOS id, plus ``manifest.json``::

    {"version": 1, "tokenizer": "tokenizer", "tokenizer_source": "path/or/hub-name", "dtype": "uint16",
     "eos_id": 0, "vocab_size": 4096, "seq_len_hint": null, "val_fraction": 0.01, "shard_tokens": 67108864,
     "sources": {"web": {"train": ["web/train-00000.bin"], "val": ["web/val-00000.bin"],
                         "train_tokens": 123, "val_tokens": 4, "documents": 10,
                         "skipped": {"invalid_utf8": 0, "empty": 1, ...}, "files": [...],
                         "truncated": false}}}

A Hugging Face source's entry also has ``"hf": {"id", "config", "split", "text_field"}``.

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

Sources and how they are read: `pocketlm.data.sources`; the manifest and the shard readers the trainer
uses: `pocketlm.data.shards`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from pocketlm.data.shards import MANIFEST, MANIFEST_VERSION, read_manifest
from pocketlm.data.sources import (DEFAULT_CHUNK_BYTES, SKIP_KINDS, SourceSpec, expand_paths,
                                   hf_record_batches, load_spec_file, plan_chunks, read_piece)
from pocketlm.data.tokenizer import load_tokenizer
from pocketlm.errors import UserError
from pocketlm.utils import atomic_dir, atomic_write_json, atomic_write_text

FORMAT_VERSION = 1  # bump when the shard layout/splitting changes: invalidates resumable progress
DEFAULT_SHARD_TOKENS = 1 << 26  # 64Mi tokens: 128 MiB uint16 shards


# ----------------------------------------------------------------------------------------------
# Workers: read + tokenize one chunk
# ----------------------------------------------------------------------------------------------

_W: dict[str, Any] = {}  # per-process worker state: tokenizer, settings


def _init_worker(tokenizer_json: str, eos_id: int, dtype: str, val_fraction: float,
                 text_field: str, special_tokens: bool, single_process: bool = False) -> None:
    if not single_process:  # one thread per worker process: the pool already uses every core
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ["RAYON_NUM_THREADS"] = "1"
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    from tokenizers import Tokenizer  # optional dependency (pocketlm[hf])

    tok = Tokenizer.from_str(tokenizer_json)
    tok.encode_special_tokens = not special_tokens  # literal "<|im_end|>" in data stays plain text
    _W.update(tok=tok, eos=eos_id, dtype=np.dtype(dtype), val_fraction=val_fraction,
              text_field=text_field)


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
    texts = [t for piece in chunk for t in read_piece(piece, skipped, _W["text_field"])]
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
    nproc = workers or os.cpu_count() or 1
    if nproc < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    # Resolve local inputs up front so a typo fails before any work.
    files_of = {s.name: expand_paths(s.paths, f"source {s.name!r}") for s in sources if s.paths}
    for name, files in files_of.items():
        if not files:
            raise UserError(f"source {name!r}: no input files found")
        if all(f.stat().st_size == 0 for f in files):  # before the output dir is touched
            raise UserError(f"source {name!r} produced no tokens: its input files are empty")
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
        with atomic_dir(tok_dir) as tmp:
            tokenizer.save_pretrained(str(tmp))
            (tmp / ".fingerprint").write_text(tok_fp)

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
    atomic_write_json(out / MANIFEST, manifest)
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
            work = (_work_records, hf_record_batches(spec, prog["records_done"], chunk_bytes))
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
        atomic_write_text(src_dir / ".progress.json", json.dumps(prog))

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
                print(f"data prepare [{spec.name}]: chunk {prog['chunks_done'] + pend['chunks']}{total}, "
                      f"{prog['train_tokens'] + train_w.n:,} train tokens, "
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
