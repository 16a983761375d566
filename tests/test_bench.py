"""`pocketlm bench` and the hardware measurements behind its roofline."""

import importlib.util
import json

import pytest

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.model.presets import get_preset
from pocketlm.runtime import bench, hardware


def requires(*packages: str):
    """Skip a test (only that test) when an optional package it runs is not installed."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


@requires("llama_cpp", "gguf", "matplotlib")
def test_bench_cli_tiny_models_table_json_png(tmp_path, run_cli):
    from pocketlm.runtime.gguf import export_gguf

    gguf = export_gguf(get_preset("tiny-qwen"), tmp_path / "tq.gguf", quant="f16")
    out = tmp_path / "run"
    code, stdout, err = run_cli("bench", "tiny", gguf, "--quant", "q4_0", "--contexts", "16,8",
                                "--decode-tokens", "4", "--repeats", "1", "--warmup", "0",
                                "--bandwidth", "40", "--threads", "1", "--out", out)
    assert code == 0, err
    assert "TTFT s" in stdout and "% roof" in stdout and "tiny" in stdout
    data = json.loads((out / "results.json").read_text())
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert data["bandwidth_gbs"] == 40.0 and data["bandwidth_source"] == "given"
    recs = data["records"]
    assert [(r["model"], r["quant"], r["prompt_len"]) for r in recs] == [
        ("tiny", "q4_0", 8), ("tiny", "q4_0", 16), ("tq", "f16", 8), ("tq", "f16", 16)]
    for r in recs:
        assert r["ttft_s"] > 0 and r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 0
        cfg = get_preset("tiny" if r["model"] == "tiny" else "tiny-qwen")
        want = 40e9 / bench.decode_bytes_mean(cfg, r["quant"], r["prompt_len"], 4, 2)  # F16 KV cache
        assert r["roofline_tok_s"] == pytest.approx(want)
        assert r["roofline_fraction"] == pytest.approx(r["decode_tok_s"] / r["roofline_tok_s"])
    # results.json feeds the latency model directly
    from pocketlm.search.latency import LatencyModel

    assert LatencyModel.fit(recs).coefficients["q4_0"]["decode"]


@requires("matplotlib")
def test_bench_torch_backend_json(tmp_path, run_cli):
    code, stdout, err = run_cli("bench", "tiny", "--backend", "torch", "--quant", "f32", "--contexts", "8",
                                "--decode-tokens", "2", "--repeats", "1", "--warmup", "0", "--bandwidth", "20",
                                "--out", tmp_path, "--json")
    assert code == 0, err
    data = json.loads(stdout)
    (r,) = data["records"]
    assert r["backend"] == "torch" and r["quant"] == "f32"
    # torch keeps its KV cache in the model dtype: 4 bytes per value at f32
    assert r["decode_bytes_per_token"] == pytest.approx(bench.decode_bytes_mean(get_preset("tiny"), "f32", 8, 2, 4))


@pytest.mark.parametrize("args,match", [
    (["tiny", "--contexts", "128,1024"], "exceeds the maximum context of the model"),
    (["tiny", "--contexts", "12,abc"], "comma-separated integers"),
    (["tiny", "--contexts", "0"], "positive"),
    (["tiny", "--quant", "q5_k"], "q5_k"),
    (["tiny", "--backend", "torch", "--quant", "q4_0"], "torch backend precision"),
    (["tiny-relu"], "activation relu"),
    (["tiny", "--contexts", "8", "--bandwidth", "-3"], "--bandwidth"),
    (["tiny", "--repeats", "0"], "positive"),
    (["no-such-model"], "unknown preset"),
])
def test_bench_bad_input_exits_2(tmp_path, run_cli, args, match):
    code, _, err = run_cli("bench", *args, "--out", tmp_path / "o")
    assert code == 2 and match in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_bench_rejects_corrupt_gguf(tmp_path, run_cli):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    code, _, err = run_cli("bench", bad, "--bandwidth", "10", "--out", tmp_path / "o")
    assert code == 2 and "bad.gguf" in err


def test_contexts_too_long_for_some_models_are_skipped_with_a_note():
    small = bench.Target("tiny", "tiny", "q4_0", get_preset("tiny"))          # 512 positions
    big = bench.Target("p9", "pocket-9m", "q4_0", get_preset("pocket-9m"))   # 1024 positions
    per, notes = bench.plan_contexts([small, big], [256, 768], decode_tokens=32)
    assert per == {0: [256], 1: [256, 768]}
    assert len(notes) == 1 and "tiny" in notes[0] and "768" in notes[0]
    with pytest.raises(UserError, match="every model"):
        bench.plan_contexts([small, big], [256, 1000], decode_tokens=32)


def test_decode_bytes_mean_is_mean_over_positions():
    cfg = get_preset("smollm2-135m")
    steps = [costs.decode_bytes(cfg, t, "q8_0") for t in range(100, 110)]
    assert bench.decode_bytes_mean(cfg, "q8_0", 100, 10, 2) == pytest.approx(sum(steps) / 10, rel=1e-6)


def test_bandwidth_resolution_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETLM_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "measure_bandwidth", lambda threads, **k: calls.append(threads) or 33.3)
    monkeypatch.setattr(hardware, "measure_matmul", lambda threads, **k: 123.0)
    assert hardware.resolve_bandwidth("55.5") == (55.5, "given")
    assert hardware.resolve_bandwidth(None, threads=2, log=None) == (33.3, "measured")
    bw, source = hardware.resolve_bandwidth(None, threads=2, log=None)
    # measured once (4 KiB pages + huge pages), then cached
    assert bw == 33.3 and source.startswith("cached") and calls == [2, 2]
    assert json.loads(hardware.cache_path().read_text())  # keyed by host / cpu / threads
    hardware.resolve_bandwidth("measure", threads=2, log=None)
    assert calls == [2, 2, 2, 2]
    hardware.cache_path().write_text("{not json")  # a corrupt cache is re-measured, not an error
    assert hardware.resolve_bandwidth(None, threads=2, log=None)[0] == 33.3
    for bad in ("fast", "0", "-1", "inf"):
        with pytest.raises(UserError, match="bandwidth"):
            hardware.resolve_bandwidth(bad)


def test_measure_bandwidth_and_matmul_are_plausible():
    bw = hardware.measure_bandwidth(1, size_mb=32, passes=1)
    gflops = hardware.measure_matmul(1, n=256, reps=1)
    assert 0.1 < bw < 10_000 and 0.1 < gflops < 100_000
