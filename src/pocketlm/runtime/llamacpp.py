"""The one place pocketlm opens llama.cpp: `open_llama`, with the AMX-crash workaround.

llama.cpp's AMX backend segfaults on the first quantized matmul on some machines
(ggml-org/llama.cpp#20824), so weight repacking into "extra buffer types" is switched off where a
one-time probe (in a subprocess, cached per machine) crashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.runtime.hardware import cpu_name
from pocketlm.utils import atomic_write_json, cache_dir


def open_llama(path: str | os.PathLike, n_ctx: int = 2048, threads: int | None = None, seed: int = 0,
               n_batch: int = 512):
    """A llama_cpp.Llama with pocketlm's settings (quiet, threads for both prefill and decode)."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("the llamacpp backend needs llama-cpp-python: pip install 'pocketlm[runtime]'") from None
    threads = threads or os.cpu_count() or 1
    kwargs = dict(n_ctx=n_ctx, n_batch=min(n_batch, n_ctx), n_ubatch=min(n_batch, n_ctx), n_threads=threads,
                  n_threads_batch=threads, seed=seed, verbose=False)
    with _extra_bufts(_extra_bufts_ok()):
        try:
            return llama_cpp.Llama(str(path), **kwargs)
        except ValueError as e:
            raise UserError(f"llama.cpp could not load {path}: {e}") from None


@contextlib.contextmanager
def _extra_bufts(enabled: bool):
    """llama-cpp-python does not expose llama_model_params.use_extra_bufts (weight repacking into
    AMX / interleaved CPU layouts), so patch the defaults it starts from while a model loads."""
    import llama_cpp.llama as llama_mod

    if enabled:
        yield
        return
    module = llama_mod.llama_cpp
    original = module.llama_model_default_params

    def defaults():
        params = original()
        params.use_extra_bufts = False
        return params

    module.llama_model_default_params = defaults
    try:
        yield
    finally:
        module.llama_model_default_params = original


_PROBE_RESULT: bool | None = None

_PROBE = r"""
import sys, tempfile, os
import llama_cpp
from pocketlm.model.config import ModelConfig
from pocketlm.runtime.gguf import export_gguf
d = tempfile.mkdtemp()
p = export_gguf(ModelConfig(vocab_size=512, hidden_size=128, num_layers=1, num_heads=4,
                            intermediate_size=256), os.path.join(d, "probe.gguf"), quant="q4_0")
llm = llama_cpp.Llama(p, n_ctx=64, n_threads=1, verbose=False)
llm.eval(list(range(40)))
print("ok")
"""


def _extra_bufts_ok() -> bool:
    """Whether llama.cpp's extra buffer types (weight repacking) work here.

    A build without AMX needs no check; otherwise probe once per machine and build in a subprocess
    (cached). POCKETLM_LLAMA_EXTRA_BUFTS=0/1 overrides.
    """
    global _PROBE_RESULT
    env = os.environ.get("POCKETLM_LLAMA_EXTRA_BUFTS")
    if env in ("0", "1"):
        return env == "1"
    if _PROBE_RESULT is not None:
        return _PROBE_RESULT
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if " amx" not in flags:
        _PROBE_RESULT = True
        return True
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode(errors="replace")
    if "AMX" not in system_info:  # built without the AMX backend (pocketlm's Makefile does that)
        _PROBE_RESULT = True
        return True
    model = cpu_name()
    key = hashlib.sha1(f"{model}|{llama_cpp.__version__}|{system_info}|{sys.executable}".encode()).hexdigest()[:12]
    cache = cache_dir() / f"llamacpp-extra-bufts-{key}.json"
    if cache.is_file():
        with contextlib.suppress(Exception):
            _PROBE_RESULT = bool(json.loads(cache.read_text())["ok"])
            return _PROBE_RESULT
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
        ok = r.returncode == 0 and "ok" in r.stdout
    except subprocess.TimeoutExpired:
        ok = False
    _PROBE_RESULT = ok
    with contextlib.suppress(OSError):
        atomic_write_json(cache, {"ok": ok, "cpu": model, "llama_cpp": llama_cpp.__version__})
    return ok
