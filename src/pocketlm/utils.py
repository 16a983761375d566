"""Small helpers every stage shares: atomic file writes, directory swaps, output checks, the cache dir and
JSON printing.

The rule for a verb that writes (issue 19; `tests/test_faults.py` runs every verb with an output flag
against an unwritable path, a full disk and Ctrl-C):

1. First thing in the handler, before any work, ``check_output(args.out)`` (a file) or
   ``check_output(args.out, directory=True)``: a missing, read-only or otherwise unwritable destination
   then fails in a second, not after an hour of training. It creates nothing.
2. Write every output through ``atomic_path`` / ``atomic_write_text|bytes|json`` (a file) or
   ``atomic_dir`` (a directory). A crash, a full disk, Ctrl-C or SIGTERM then leaves the previous complete
   output or none, never a truncated file under the final name; the temp file or dir is removed.
3. Let ``OSError`` propagate (don't catch it to print a message). ``pocketlm.cli.main`` is the one place
   that turns it, and a library error wrapping one (safetensors, tokenizers, torch.save; see
   ``os_error_of``), into one line on stderr and exit code 2; Ctrl-C into one line and exit 130 (SIGTERM:
   143). ``POCKETLM_TRACEBACK=1`` shows the traceback instead.
4. An input with nothing in it (empty data file, directory without documents, prompt file without
   prompts) is a mistake, not a run with zero results: ``require_nonempty(items, source, what)``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import secrets
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sized, TypeVar

from pocketlm.errors import UserError

T = TypeVar("T", bound=Sized)


def cache_dir() -> Path:
    """pocketlm's cache: $POCKETLM_CACHE, default ~/.cache/pocketlm."""
    return Path(os.environ.get("POCKETLM_CACHE", Path.home() / ".cache" / "pocketlm"))


# ---------------------------------------------------------------------------------------------- OS errors

# Rust libraries (safetensors, tokenizers) raise plain exceptions whose text ends "(os error 28)"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind `exc`: itself, one in its cause/context chain (torch.save into a file object
    raises RuntimeError from the write's OSError), or one a Rust library spelled out in its message."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        m = _RUST_OS_ERROR.search(str(e))
        if m:
            code = int(m.group(1))
            return OSError(code, os.strerror(code))
        e = e.__cause__ or e.__context__
    return None


def os_error_message(err: OSError) -> str:
    """One line for an OSError: the path and the system's words, plus what to do about a full disk."""
    what = err.strerror or str(err)
    if err.filename is not None:
        where = str(err.filename) if err.filename2 is None else f"{err.filename} -> {err.filename2}"
        what = f"{where}: {what}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        what += " (free some space, or write somewhere else)"
    elif err.errno == errno.EFBIG:
        what += " (a file-size limit: see `ulimit -f`)"
    return what


def _short_write_errno(path: Path) -> int | None:
    """Why a write came up short without an errno (numpy's tofile: "N requested and M written"): a full
    disk, or a file-size limit (`ulimit -f`)."""
    try:
        if shutil.disk_usage(path.parent).free < (1 << 20):
            return errno.ENOSPC
    except OSError:
        return None
    import resource

    return errno.EFBIG if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY else None


def os_error_at(exc: BaseException, path: str | os.PathLike) -> OSError | None:
    """The OS error behind `exc` with the output's path, when it names none (a full disk inside
    safetensors says only "No space left on device"). Call it before the temp output is removed: a
    short write is told apart by the space still missing."""
    err = os_error_of(exc) if isinstance(exc, Exception) else None
    if err is None or err.filename is not None:
        return None
    code = err.errno if err.errno is not None else _short_write_errno(Path(path))
    if code is None:
        return OSError(None, str(err), str(path))
    return OSError(code, os.strerror(code), str(path))


def check_output(path: str | os.PathLike, directory: bool = False) -> Path:
    """Fail now, with the path in the message, if `path` could not be written later: its nearest
    existing ancestor must be a directory we can create files in. Creates nothing."""
    p = Path(path)
    if p.exists():
        if directory and not p.is_dir():
            raise UserError(f"{p} exists and is not a directory")
        if not directory and p.is_dir():
            raise UserError(f"{p} is a directory; give a file name")
    ancestor = p if directory else p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{ancestor} is not a directory", str(p))
    probe = ancestor / f".pocketlm-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as e:
        raise OSError(e.errno, f"cannot write there ({e.strerror})", str(p)) from e
    probe.unlink(missing_ok=True)
    return p


def require_nonempty(items: T, source: Any, what: str = "records") -> T:
    """`items` read from `source`, or a UserError if there are none (an empty input is a mistake)."""
    if not len(items):
        raise UserError(f"{source} has no {what}")
    return items


# ---------------------------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file where the parent dir should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from e
    # not mkstemp: its 0600 mode would survive the rename; the writer creates the file with the umask's
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        named = os_error_at(e, path)
        tmp.unlink(missing_ok=True)
        if named is not None:
            raise named from e
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_dir_beside(out: str | os.PathLike) -> Path:
    """A fresh temp dir next to `out` for `replace_dir`, with the umask's mode (mkdtemp's 0700 would
    otherwise survive the rename and lock other users out of the result)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out.parent)) from e
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp dir beside `out` to fill; on success it replaces `out` (`replace_dir`), on any error
    (a full disk, Ctrl-C) it is removed and `out` is left as it was."""
    out = Path(out)
    tmp = temp_dir_beside(out)
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException as e:
        named = os_error_at(e, out)
        shutil.rmtree(tmp, ignore_errors=True)
        if named is not None:
            raise named from e
        raise


def share_file(path: str | os.PathLike) -> None:
    """Give a file the umask's mode (some writers, e.g. safetensors, create files 0600)."""
    Path(path).chmod(0o666 & ~_umask())


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished directory `tmp` to `out`, replacing any previous `out` only once `tmp` is in
    place (the old one is set aside first, so one of the two complete versions always exists)."""
    tmp, out = Path(tmp), Path(out)
    with interrupts_deferred():  # two renames: Ctrl-C between them would leave `out` missing
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------------- signals

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same `finally` blocks and atomic writers clean up."""


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (`kill`, a scheduler's timeout) raises `Terminated` in this process.
    A forked child does not keep the handler (`_child_takes_default_sigterm`), and the previous handler comes
    back afterwards (a leaked one would reach later forks)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _child_takes_default_sigterm() -> None:
    """After a fork, SIGTERM's default action, which kills in the kernel. With the Python handler inherited,
    a pool worker blocked on its task queue was seen to outlive `pool.terminate()`, which then waited forever."""
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_child_takes_default_sigterm)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then act on them as usual. (Python runs signal
    handlers in the main thread between bytecodes, so a handler swap, not a signal mask, is what keeps
    them out of the block; off the main thread there is nothing to hold.)"""
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
