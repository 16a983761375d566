"""Small helpers every stage shares: atomic file writes, directory swaps, the cache directory and JSON
printing. A reader or a killed process never sees a half-written file under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import secrets
from pathlib import Path
from typing import Any, Iterator


def cache_dir() -> Path:
    """pocketlm's cache: $POCKETLM_CACHE, default ~/.cache/pocketlm."""
    return Path(os.environ.get("POCKETLM_CACHE", Path.home() / ".cache" / "pocketlm"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its 0600 mode would survive the rename; the writer creates the file with the umask's
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished directory `tmp` to `out`, replacing any previous `out` only once `tmp` is in
    place (the old one is set aside first, so one of the two complete versions always exists)."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
