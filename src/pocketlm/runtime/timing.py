"""Timing and memory: the measuring protocol the benchmarks and the search use, and peak RSS.

`measure(rt)` times any engine runtime (pocketlm.runtime.engine) through its `prefill`/`decode`
primitives: random prompt ids, warm-up, repeats, medians and spread of time-to-first-token, prefill
tok/s and decode tok/s from position T.
"""

from __future__ import annotations

import statistics
import sys

import numpy as np

from pocketlm.errors import UserError


# ---------------------------------------------------------------------------------------------
# memory

def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (since start or the last reset_peak_rss())."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS watermark (Linux: writing 5 to clear_refs), so one process can report the
    peak of each model it benchmarks. Returns False where unsupported (peak then spans the process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# timing protocol

def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0


def measure(rt, prompt_len: int, decode_len: int, repeats: int = 3, warmup: int = 1,
            seed: int = 0) -> dict:
    """Median TTFT, prefill tok/s and decode tok/s (decode from position prompt_len) over `repeats`
    runs after `warmup` runs, with random prompt ids; *_spread = (max - min) / median."""
    if prompt_len < 1 or decode_len < 0 or repeats < 1 or warmup < 0:
        raise UserError("measure needs prompt_len >= 1, decode_len >= 0, repeats >= 1, warmup >= 0")
    rt._check_room(prompt_len + decode_len, f"prompt {prompt_len} + decode {decode_len}")
    rng = np.random.default_rng(seed)
    reset_peak_rss()
    ttft, prefill, decode = [], [], []
    for i in range(warmup + repeats):
        ids = rng.integers(0, rt.vocab_size, size=prompt_len).tolist()
        t = rt.prefill(ids)
        steps = rt.decode(decode_len) if decode_len else []
        if i < warmup:
            continue
        ttft.append(t)
        prefill.append(prompt_len / t)
        if steps:
            decode.append(len(steps) / sum(steps))
    ttft_s = statistics.median(ttft)
    decode_tok_s = statistics.median(decode) if decode else 0.0
    return {
        "backend": rt.backend, "quant": rt.quant, "threads": rt.threads,
        "prompt_len": prompt_len, "decode_len": decode_len, "repeats": repeats,
        "ttft_s": ttft_s, "prefill_tok_s": statistics.median(prefill), "decode_tok_s": decode_tok_s,
        "e2e_s": ttft_s + (decode_len / decode_tok_s if decode_tok_s else 0.0),
        "peak_rss_mb": peak_rss_mb(),
        "ttft_spread": _spread(ttft), "prefill_spread": _spread(prefill),
        "decode_spread": _spread(decode) if decode else 0.0,
    }
