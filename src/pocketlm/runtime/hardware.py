"""What this machine can do: memory read bandwidth and matmul peak, measured and cached.

Decode at batch 1 is bounded by bandwidth / bytes read per token (the roofline `pocketlm bench`
reports against), so the bandwidth figure has to be what an inference engine actually sees:

- **Bandwidth** = read bandwidth of `threads` threads each streaming its own slice of a buffer far
  larger than the last-level cache (default 2 GiB; this host reports a 480 MiB L3), doing an
  AVX-512 dot product per slice (numpy/BLAS `sdot`, which releases the GIL). That is the access
  pattern of llama.cpp's CPU decode: every thread reads its own block of weight rows once and
  multiply-adds. The buffer uses 4 KiB pages like llama.cpp's mmapped weights: on this host
  huge pages read ~1.5x faster (fewer TLB misses) but llama.cpp never gets them, so a huge-page
  roofline would be unreachable. (2-thread sum/dot/bitwise-or readers in numpy and torch all
  agree within ~5%.) We report the best of several passes: on a shared host, passes that lose
  the CPU to a neighbour only under-report, never over-report.
- **Compute** = fp32 and bf16 GEMM throughput of torch (oneDNN/MKL) on `threads` threads: an upper
  bound for the dense part of prefill.

Results are cached in ``hardware.json`` under pocketlm's cache directory ($POCKETLM_CACHE, default
``~/.cache/pocketlm``) keyed by hostname, CPU model and thread count. Bandwidth on shared/virtual
hosts moves from run to run, so anything that compares against it (benchmarks/runtime_roofline.py)
measures in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import threading
import time
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.utils import atomic_write_json, cache_dir


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def machine_info() -> dict:
    """Host description that goes into every benchmark's JSON."""
    import numpy

    info = {"hostname": socket.gethostname(), "cpu": cpu_name(), "cores": default_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": numpy.__version__}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:
        pass
    return info


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


# ---------------------------------------------------------------------------- measurement
def measure_bandwidth(threads: int | None = None, size_mb: int = 2048, passes: int = 7,
                      huge_pages: bool = False) -> float:
    """Read bandwidth in GB/s (1e9 bytes/s): best of `passes` multi-threaded streaming dot products.

    huge_pages=False (default) reads 4 KiB pages, which is what llama.cpp's mmapped GGUF weights
    live in (the page cache has no transparent huge pages); measured here, llama.cpp F16 decode
    reaches ~0.9 of this figure, but only ~0.55 of the huge-page figure (TLB misses).
    """
    import mmap

    import numpy as np

    threads = threads or default_threads()
    n = size_mb * (1 << 20) // 4
    n -= n % (threads * 16)
    region = mmap.mmap(-1, n * 4)  # anonymous memory: 4 KiB pages unless THP is "always"
    if huge_pages and hasattr(region, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)
    buf = np.frombuffer(region, dtype=np.float32)
    buf[:] = 1.0  # touch every page so no page faults happen while timed
    step = n // threads
    parts = [buf[i * step:(i + 1) * step] for i in range(threads)]

    def read(part):
        np.dot(part, part)  # dotting a slice with itself streams it from memory exactly once

    def one_pass() -> float:
        workers = [threading.Thread(target=read, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - t0

    try:
        one_pass()  # warm-up: thread start-up, BLAS init
        best = min(one_pass() for _ in range(passes))
        return n * 4 / best / 1e9
    finally:
        del parts, buf
        region.close()


def measure_matmul(threads: int | None = None, n: int = 2048, dtype: str = "float32", reps: int = 5) -> float:
    """Dense GEMM throughput in GFLOP/s (n x n @ n x n, best of `reps`), torch on `threads` threads."""
    import torch

    threads = threads or default_threads()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n).to(getattr(torch, dtype))
        a @ a
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------------------- cache
def cache_path() -> Path:
    return cache_dir() / "hardware.json"


def _key(threads: int) -> str:
    return f"{socket.gethostname()}|{cpu_name()}|threads={threads}"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a missing or corrupt cache is just re-measured


def _write_cache(data: dict) -> None:
    try:
        atomic_write_json(cache_path(), data)
    except OSError:
        pass  # a read-only home must not break a benchmark


def hardware_profile(threads: int | None = None, refresh: bool = False, log=print) -> dict:
    """{"bandwidth_gbs", "matmul_gflops_fp32", "matmul_gflops_bf16", "threads", "measured_at", "source"}.

    Measured once per host/CPU/thread count and cached; `refresh=True` measures again.
    """
    threads = threads or default_threads()
    key = _key(threads)
    cache = _read_cache()
    if not refresh and isinstance(cache.get(key), dict) and "bandwidth_gbs" in cache[key]:
        return {**cache[key], "source": f"cached ({cache_path()})"}
    if log:
        log(f"measuring memory bandwidth and matmul peak on {threads} thread(s) (cached afterwards)...")
    entry = {
        "bandwidth_gbs": round(measure_bandwidth(threads), 2),
        "bandwidth_hugepages_gbs": round(measure_bandwidth(threads, huge_pages=True), 2),
        "matmul_gflops_fp32": round(measure_matmul(threads, dtype="float32"), 1),
        "matmul_gflops_bf16": round(measure_matmul(threads, dtype="bfloat16"), 1),
        "threads": threads,
        "cpu": cpu_name(),
        "hostname": socket.gethostname(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": "best of 7 passes of threaded numpy dot over a 2 GiB buffer of 4 KiB pages "
                  "(bandwidth_hugepages_gbs: with transparent huge pages); torch GEMM 2048^3",
    }
    cache = _read_cache()
    cache[key] = entry
    _write_cache(cache)
    return {**entry, "source": "measured"}


def resolve_bandwidth(value: str | float | None, threads: int | None = None, log=print) -> tuple[float, str]:
    """--bandwidth: a number in GB/s, 'measure' (measure again now), or None (cached measurement)."""
    if value is None or value == "":
        prof = hardware_profile(threads, log=log)
        return float(prof["bandwidth_gbs"]), prof["source"]
    if isinstance(value, str) and value.strip().lower() == "measure":
        prof = hardware_profile(threads, refresh=True, log=log)
        return float(prof["bandwidth_gbs"]), "measured"
    try:
        bw = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--bandwidth must be a number of GB/s or 'measure', got {value!r}") from None
    if not bw > 0 or bw == float("inf"):
        raise UserError(f"--bandwidth must be a positive number of GB/s, got {value!r}")
    return bw, "given"
