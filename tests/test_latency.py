"""Latency model: NNLS, bounded fitting, device profiles, llama-bench calibration, CLI."""

import json

import numpy as np
import pytest

from pocketlm.runtime import hardware
from pocketlm.search import latency as L
from pocketlm.search import profiles as P
from pocketlm.errors import UserError
from pocketlm.model.presets import get_preset

TRUE = {
    "decode": {"fixed_s": 3e-4, "per_layer_s": 4e-5, "s_per_byte": 1 / 38e9, "s_per_flop": 1 / 180e9,
               "s_per_attn_flop": 1 / 30e9},
    "prefill": {"fixed_s": 2e-3, "per_token_s": 1e-5, "per_layer_token_s": 3e-6, "s_per_byte": 1 / 38e9,
                "s_per_flop": 1 / 140e9, "s_per_attn_flop": 1 / 40e9},
}


def _configs():
    base = get_preset("qwen2.5-0.5b")
    shapes = [(512, 8, 32000, 2), (768, 12, 49152, 4), (1024, 16, 32000, 4), (640, 20, 151936, 2),
              (896, 24, 151936, 2), (384, 6, 8192, 6), (1152, 10, 49152, 6), (576, 30, 49152, 3)]
    return [base.replace(hidden_size=h, num_layers=n, vocab_size=v, num_heads=h // 64, num_kv_heads=kv,
                         head_dim=64, intermediate_size=3 * h, name=f"c{i}")
            for i, (h, n, v, kv) in enumerate(shapes)]


def _records(model, configs, contexts=(128, 512, 1024), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for cfg in configs:
        for P in contexts:
            p = model.predict(cfg, "q4_0", P, 32)
            out.append({"config": cfg.to_dict(), "quant": "q4_0", "prompt_len": P, "decode_len": 32,
                        "ttft_s": p["ttft_s"] * (1 + noise * rng.standard_normal()),
                        "decode_tok_s": p["decode_tok_s"] * (1 + noise * rng.standard_normal())})
    return out


def test_nnls_recovers_nonnegative_solution_and_satisfies_kkt():
    rng = np.random.default_rng(0)
    A = rng.random((40, 6))
    x_true = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 3.0])
    np.testing.assert_allclose(L.nnls(A, A @ x_true), x_true, atol=1e-9)
    # a problem whose unconstrained solution has negative entries: check optimality (KKT) instead
    A, b = rng.normal(size=(30, 5)), rng.normal(size=30)
    x = L.nnls(A, b)
    w = A.T @ (b - A @ x)
    assert (x >= 0).all() and (x == 0).any()
    assert np.all(np.abs(w[x > 0]) < 1e-8) and np.all(w[x == 0] < 1e-8)


def test_fit_recovers_known_coefficients():
    truth = L.LatencyModel({"q4_0": TRUE})
    fitted = L.LatencyModel.fit(_records(truth, _configs()))
    for phase, terms in TRUE.items():
        for term, value in terms.items():
            assert fitted.coefficients["q4_0"][phase][term] == pytest.approx(value, rel=1e-6), (phase, term)
    assert fitted.fit_info["q4_0/decode"]["kind"] == "nnls"


def test_fit_with_noise_predicts_held_out_configs():
    truth = L.LatencyModel({"q4_0": TRUE})
    cfgs = _configs()
    train, held = cfgs[:6], cfgs[6:]
    fitted = L.LatencyModel.fit(_records(truth, train, noise=0.02, seed=1))
    err = fitted.evaluate(_records(truth, held))
    assert err["decode"]["median_ape"] < 0.05 and err["prefill"]["median_ape"] < 0.05
    # and a model that ignores the overheads (pure roofline) is clearly worse on the same data
    roof = P.DeviceProfile("x", bandwidth_gbs=38, compute_gflops=140).latency_model()
    assert roof.evaluate(_records(truth, held))["decode"]["median_ape"] > 2 * err["decode"]["median_ape"]


def test_predict_shape_and_monotonic_in_size():
    model = L.LatencyModel({"q4_0": TRUE})
    small, big = get_preset("smollm2-135m"), get_preset("qwen2.5-1.5b")
    a, b = model.predict(small, "q4_0", 256, 64), model.predict(big, "q4_0", 256, 64)
    assert set(a) == {"prefill_s", "ttft_s", "decode_s_per_token", "decode_tok_s", "prefill_tok_s", "e2e_s"}
    assert b["ttft_s"] > a["ttft_s"] and b["decode_tok_s"] < a["decode_tok_s"]
    assert a["e2e_s"] == pytest.approx(a["ttft_s"] + 64 * a["decode_s_per_token"])
    # longer contexts cost more (KV reads, attention)
    assert model.predict(small, "q4_0", 2048, 64)["decode_tok_s"] < a["decode_tok_s"]
    with pytest.raises(UserError, match="f16"):
        model.predict(small, "f16", 256, 64)  # never fitted for f16


def test_profile_yaml_round_trip(tmp_path):
    prof = P.fit_profile(_records(L.LatencyModel({"q4_0": TRUE}), _configs()[:5]), "dev", bandwidth_gbs=40.0,
                         compute_gflops=250.0, threads=2, sources=["synthetic"])
    path = prof.save(tmp_path / "dev.yaml")
    back = P.DeviceProfile.load(path)
    assert back.to_dict() == prof.to_dict()
    cfg = get_preset("smollm2-360m")
    assert P.predict(cfg, str(path), 300, 50) == P.predict(cfg, prof, 300, 50)


def test_builtin_profiles_rank_configs():
    assert "snapdragon-8-gen-3" in P.builtin_profiles()
    prof = P.DeviceProfile.load("snapdragon-8-gen-3")
    assert prof.bandwidth_gbs == pytest.approx(76.8) and prof.sources
    speeds = {n: P.predict(n, prof, 128, 64)["decode_tok_s"] for n in ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b")}
    assert speeds["smollm2-135m"] > speeds["qwen2.5-0.5b"] > speeds["llama-3.2-1b"]
    # the profile is calibrated on its listed measurements: it reproduces them roughly
    assert 35 < speeds["llama-3.2-1b"] < 80


@pytest.mark.parametrize("data,match", [
    ({"name": "x", "bandwidth_gbs": -1}, "bandwidth_gbs"),
    ({"name": "x", "speed": 3}, "unknown field"),
    ({"bandwidth_gbs": 10}, "name"),
    ({"name": "x", "coefficients": {"q4_0": {"decode": {"fixed_s": 1}}}}, "miss"),
])
def test_bad_profiles_are_user_errors(data, match):
    with pytest.raises(UserError, match=match):
        P.DeviceProfile.from_dict(data)


def test_quant_from_llama_bench_model_type():
    assert P.quant_from_model_type("qwen2 1B Q4_0") == "q4_0"
    assert P.quant_from_model_type("llama 7B mostly Q8_0") == "q8_0"
    assert P.quant_from_model_type("llama ?B F16") == "f16"
    assert P.quant_from_model_type("llama 7B all F32") == "f32"
    assert P.quant_from_model_type("qwen2 7B Q4_K - Medium") is None


def _llama_bench_json(truth, cfgs):
    """Hand-made `llama-bench -o json` output in the real schema, timed by a known model."""
    tests = []
    for i, cfg in enumerate(cfgs):
        for n_prompt, n_gen, depth in ((128, 0, 0), (512, 0, 0), (0, 64, 0), (0, 64, 512), (128, 32, 0)):
            if n_gen == 0:
                secs = truth.prefill_time(cfg, "q4_0", n_prompt, depth)
            elif n_prompt == 0:
                secs = truth.decode_time(cfg, "q4_0", depth, n_gen) * n_gen
            else:
                secs = truth.prefill_time(cfg, "q4_0", n_prompt) + truth.decode_time(cfg, "q4_0", n_prompt, n_gen) * n_gen
            ns = int(secs * 1e9)
            tests.append({
                "build_commit": "8cf427ff", "build_number": 5163, "cpu_info": "Qualcomm Kryo", "gpu_info": "",
                "backends": "CPU", "model_filename": f"/sdcard/models/m{i}-q4_0.gguf",
                "model_type": "llama ?B Q4_0", "model_size": 123456789, "model_n_params": 234567890,
                "n_batch": 2048, "n_ubatch": 512, "n_threads": 4, "cpu_mask": "0x0", "cpu_strict": False,
                "poll": 50, "type_k": "f16", "type_v": "f16", "n_gpu_layers": 0, "split_mode": "layer",
                "main_gpu": 0, "no_kv_offload": False, "flash_attn": False, "tensor_split": "0.00",
                "use_mmap": True, "embeddings": False, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": depth,
                "test_time": "2025-04-24T11:58:50Z", "avg_ns": ns, "stddev_ns": 1000,
                "avg_ts": 1e9 * (n_prompt + n_gen) / ns, "stddev_ts": 0.1,
                "samples_ns": [ns - 500, ns, ns + 500], "samples_ts": [1.0, 1.0, 1.0]})
    return tests


def test_calibrate_from_llama_bench_json(tmp_path, run_cli):
    truth = L.LatencyModel({"q4_0": TRUE})
    cfgs = _configs()[:5]
    bench = tmp_path / "llama-bench.json"
    bench.write_text(json.dumps(_llama_bench_json(truth, cfgs), indent=1))
    mapping = {}
    for i, cfg in enumerate(cfgs):
        cfg.save(tmp_path / f"m{i}.yaml")
        mapping[f"m{i}-q4_0.gguf"] = str(tmp_path / f"m{i}.yaml")
    (tmp_path / "models.yaml").write_text(json.dumps(mapping))
    out = tmp_path / "phone.yaml"
    code, stdout, err = run_cli("latency", "calibrate", bench, "--model-config", tmp_path / "models.yaml",
                                "--out", out, "--name", "my-phone")
    assert code == 0, err
    assert "skipped combined" in stdout  # pg tests mix prefill and decode: not used
    prof = P.DeviceProfile.load(out)
    assert prof.name == "my-phone" and prof.threads == 4
    held = _configs()[6]
    got, want = P.predict(held, prof, 400, 64), truth.predict(held, "q4_0", 400, 64)
    assert got["ttft_s"] == pytest.approx(want["ttft_s"], rel=0.02)
    assert got["decode_tok_s"] == pytest.approx(want["decode_tok_s"], rel=0.02)


def test_calibrate_single_model_scales_base_roofline(tmp_path):
    truth = L.LatencyModel({"q4_0": TRUE})
    cfg = _configs()[4]
    data = [t for t in _llama_bench_json(truth, [cfg]) if not (t["n_prompt"] and t["n_gen"])]
    base = P.DeviceProfile.load("snapdragon-8-gen-3")
    prof, notes = P.calibrate(data, {"*": cfg}, "one-model", base=base)
    assert "scaled roofline" in prof.fit["q4_0/decode"]["kind"]
    assert prof.bandwidth_gbs == base.bandwidth_gbs
    assert P.predict(cfg, prof, 512, 64)["decode_tok_s"] == pytest.approx(
        truth.predict(cfg, "q4_0", 512, 64)["decode_tok_s"], rel=0.15)


def test_calibrate_bad_input(tmp_path, run_cli):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model_type": "llama 1B Q4_0"}]))
    code, _, err = run_cli("latency", "calibrate", bad, "--model-config", "tiny", "--out", tmp_path / "p.yaml")
    assert code == 2 and "n_prompt" in err and not (tmp_path / "p.yaml").exists()
    ok = tmp_path / "k.json"
    ok.write_text(json.dumps(_llama_bench_json(L.LatencyModel({"q4_0": TRUE}), [get_preset("tiny")])[:1]))
    code, _, err = run_cli("latency", "calibrate", ok, "--out", tmp_path / "p.yaml")
    assert code == 2 and "no model config" in err


def test_fit_and_predict_cli(tmp_path, run_cli):
    truth = L.LatencyModel({"q4_0": TRUE})
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"bandwidth_gbs": 40.0, "threads": 2, "machine": {"cpu": "test"},
                                   "records": _records(truth, _configs()[:6])}))
    code, out, err = run_cli("latency", "fit", results, "--out", tmp_path / "here.yaml")
    assert code == 0, err
    assert "q4_0/decode" in out
    # results.json's measured bandwidth bounds the bytes term; the truth (38 GB/s) is within it
    fit = P.DeviceProfile.load(tmp_path / "here.yaml").fit
    assert fit["q4_0/decode"]["bandwidth_bound_gbs"] == 40.0 and "bound" not in fit["q4_0/decode"]["kind"]
    code, out, err = run_cli("latency", "predict", "smollm2-135m", "qwen2.5-0.5b", "--profile",
                             tmp_path / "here.yaml", "--prompt-len", "256", "--json")
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    assert [p["model"] for p in preds] == ["smollm2-135m", "qwen2.5-0.5b"]  # ranked fastest first
    want = truth.predict(get_preset("qwen2.5-0.5b"), "q4_0", 256, 128)
    assert preds[1]["decode_tok_s"] == pytest.approx(want["decode_tok_s"], rel=1e-3)
    code, _, err = run_cli("latency", "predict", "tiny", "--profile", "no-such-phone")
    assert code == 2 and "no-such-phone" in err


def test_calibrate_reads_model_configs_from_gguf_files(tmp_path):
    from pocketlm.runtime.gguf import export_gguf

    cfgs = [get_preset("tiny").replace(hidden_size=h, num_layers=n, name=f"m{i}")
            for i, (h, n) in enumerate([(64, 2), (96, 3), (128, 2)])]
    paths = [str(export_gguf(c, tmp_path / f"m{i}-q4_0.gguf", quant="q4_0")) for i, c in enumerate(cfgs)]
    data = _llama_bench_json(L.LatencyModel({"q4_0": TRUE}), cfgs)  # model_filename .../m{i}-q4_0.gguf
    configs = P.parse_model_configs(paths, data)
    assert {k: v.shape_key() for k, v in configs.items()} == {
        f"m{i}-q4_0.gguf": c.shape_key() for i, c in enumerate(cfgs)}
    prof, _ = P.calibrate(data, configs, "p")
    assert prof.fit["q4_0/decode"]["configs"] == 3
    with pytest.raises(UserError, match="FILENAME=CONFIG"):
        P.parse_model_configs(["tiny", "tiny-qwen"], data)


# ---------------------------------------------------------------------------- cache-aware decode term
CACHED = {"q4_0": {"decode": {**TRUE["decode"], "s_per_byte": 1 / 20e9, "s_per_cached_byte": 1 / 80e9,
                              "cache_bytes": 32 * 2**20},
                   "prefill": TRUE["prefill"]}}


def _small_configs():
    base = get_preset("qwen2.5-0.5b")
    shapes = [(256, 4, 8192, 4), (320, 8, 16384, 5), (448, 6, 8192, 7), (384, 10, 32000, 6)]
    return [base.replace(hidden_size=h, num_layers=n, vocab_size=v, num_heads=h // 64, num_kv_heads=kv,
                         head_dim=64, intermediate_size=3 * h, name=f"s{i}")
            for i, (h, n, v, kv) in enumerate(shapes)]


def test_decode_features_split_bytes_at_cache_size():
    cfg = get_preset("smollm2-135m")
    x0 = L.decode_features(cfg, 100, "q4_0", 8)
    total = x0[2]
    assert x0[5] == 0  # no cache: every byte at DRAM cost
    x = L.decode_features(cfg, 100, "q4_0", 8, cache_bytes=total / 4)
    assert x[5] == pytest.approx(total / 4) and x[2] + x[5] == pytest.approx(total)
    big = L.decode_features(cfg, 100, "q4_0", 8, cache_bytes=10 * total)
    assert big[2] == 0 and big[5] == pytest.approx(total)


def test_fit_selects_effective_cache_and_small_models_do_not_bend_the_fit():
    truth = L.LatencyModel(CACHED)
    small, large = _small_configs(), _configs()
    train, held = small[:3] + large[:6], [small[3]] + large[6:]
    recs = _records(truth, train, noise=0.01, seed=3)
    fitted = L.LatencyModel.fit(recs)
    dec = fitted.coefficients["q4_0"]["decode"]
    assert dec["cache_bytes"] == 32 * 2**20
    assert fitted.fit_info["q4_0/decode"]["cache_bytes"] == 32 * 2**20
    assert dec["s_per_cached_byte"] < dec["s_per_byte"]  # cache is faster than DRAM
    err = fitted.evaluate(_records(truth, held))["decode"]["median_ape"]
    flat = L.LatencyModel.fit(recs, cache_bytes=0)  # forced linear bytes term: bent by the small models
    assert flat.coefficients["q4_0"]["decode"].get("cache_bytes", 0) == 0
    assert err < 0.03
    assert flat.evaluate(_records(truth, held))["decode"]["median_ape"] > 2 * err
    # the fitted coefficients round-trip through a profile, cache size included
    back = L.LatencyModel.from_dict(fitted.to_dict())
    cfg = large[7]
    assert back.predict(cfg, "q4_0", 300, 20) == fitted.predict(cfg, "q4_0", 300, 20)


def test_fit_keeps_no_cache_term_when_data_has_no_cache_effect():
    truth = L.LatencyModel({"q4_0": TRUE})
    fitted = L.LatencyModel.fit(_records(truth, _small_configs() + _configs(), noise=0.01, seed=5))
    assert fitted.coefficients["q4_0"]["decode"]["cache_bytes"] == 0
    assert fitted.coefficients["q4_0"]["decode"]["s_per_cached_byte"] == 0


def test_profiles_without_cache_term_still_load():
    old = {k: v for k, v in TRUE["decode"].items()}  # written before the cache term existed
    prof = P.DeviceProfile.from_dict({"name": "old", "coefficients": {"q4_0": {"decode": old,
                                                                               "prefill": TRUE["prefill"]}}})
    cfg = get_preset("smollm2-135m")
    assert P.predict(cfg, prof, 200, 32) == L.LatencyModel({"q4_0": TRUE}).predict(cfg, "q4_0", 200, 32)
    P.DeviceProfile.load("dev-vm-xeon-2t").latency_model().predict(cfg, "q4_0", 200, 32)


def test_llc_bytes_is_positive_or_unknown():
    llc = hardware.llc_bytes()
    assert llc is None or (isinstance(llc, int) and llc >= 2**16)


# ---------------------------------------------------------------------------- bandwidth bound
# decode dominated by DRAM traffic at 12 GB/s effective: what a roofline with overheads looks like
BYTES_BOUND = {"decode": {**TRUE["decode"], "s_per_byte": 1 / 12e9, "s_per_flop": 1 / 400e9},
               "prefill": TRUE["prefill"]}
# the degenerate fit the benchmark once produced: all weight traffic on the FLOP term, no bytes term
FLOPS_ONLY = {"decode": {**TRUE["decode"], "s_per_byte": 0.0, "s_per_flop": 1 / 34e9}, "prefill": TRUE["prefill"]}


def test_fit_relative_respects_lower_bounds():
    rng = np.random.default_rng(2)
    X = rng.random((30, 4)) + 0.1
    c_true = np.array([0.5, 2.0, 0.0, 1.0])
    y = X @ c_true
    lower = np.array([1.0, 0.0, 0.0, 0.0])  # tighter than the truth on the first term
    c = L._fit_relative(X, y, lower)
    assert (c >= lower - 1e-12).all()
    assert c[0] == pytest.approx(1.0, abs=1e-12)  # the bound is active: the data wants less
    # optimal for the shifted problem (KKT on d = c - lower >= 0, relative residuals)
    A = X / y[:, None]
    w = A.T @ (np.ones(len(y)) - A @ c)
    d = c - lower
    assert np.all(np.abs(w[d > 1e-12]) < 1e-8) and np.all(w[d <= 1e-12] < 1e-8)
    # a bound the truth already satisfies changes nothing
    np.testing.assert_allclose(L._fit_relative(X, y, np.array([0.25, 0, 0, 0])), c_true, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bandwidth_bound_fit_recovers_bytes_term(seed):
    truth = L.LatencyModel({"q4_0": BYTES_BOUND})
    recs = _records(truth, _configs(), noise=0.02, seed=seed)
    fitted = L.LatencyModel.fit(recs, bandwidth_gbs=20.0)
    dec = fitted.coefficients["q4_0"]["decode"]
    assert dec["s_per_byte"] >= 1 / 20e9
    assert dec["s_per_byte"] == pytest.approx(1 / 12e9, rel=0.15)
    assert fitted.fit_info["q4_0/decode"]["bandwidth_bound_gbs"] == 20.0
    assert fitted.evaluate(_records(truth, _configs()))["decode"]["max_ape"] < 0.05


def test_bandwidth_bound_keeps_a_bytes_term_the_data_would_drop():
    truth = L.LatencyModel({"q4_0": FLOPS_ONLY})
    recs = _records(truth, _configs())
    free = L.LatencyModel.fit(recs)
    assert free.coefficients["q4_0"]["decode"]["s_per_byte"] == pytest.approx(0, abs=1e-15)
    bounded = L.LatencyModel.fit(recs, bandwidth_gbs=25.0)
    dec = bounded.coefficients["q4_0"]["decode"]
    assert dec["s_per_byte"] == pytest.approx(1 / 25e9, rel=1e-9)  # held at the physical bound
    assert "25 GB/s bound" in bounded.fit_info["q4_0/decode"]["kind"]
    assert dec["s_per_flop"] < FLOPS_ONLY["decode"]["s_per_flop"]  # the FLOP term gives way to the bytes
    assert min(v for v in dec.values()) >= 0
    # the prefill bytes term is bounded too: data at 38 GB/s is held to the 25 GB/s bound
    assert bounded.coefficients["q4_0"]["prefill"]["s_per_byte"] == pytest.approx(1 / 25e9, rel=1e-9)
    loose = L.LatencyModel.fit(recs, bandwidth_gbs=50.0)  # a bound the truth satisfies changes nothing
    assert loose.coefficients["q4_0"]["prefill"]["s_per_byte"] == pytest.approx(1 / 38e9, rel=1e-6)


def test_fit_profile_bounds_bytes_by_the_profile_bandwidth():
    truth = L.LatencyModel({"q4_0": FLOPS_ONLY})
    prof = P.fit_profile(_records(truth, _configs()), "dev", bandwidth_gbs=30.0, compute_gflops=300.0)
    assert prof.coefficients["q4_0"]["decode"]["s_per_byte"] == pytest.approx(1 / 30e9, rel=1e-9)
    assert prof.fit["q4_0/decode"]["bandwidth_bound_gbs"] == 30.0
    # a prior profile's bandwidth is the default bound of LatencyModel.fit
    via_prior = L.LatencyModel.fit(_records(truth, _configs()), prior=prof)
    assert via_prior.coefficients == prof.coefficients


# ---------------------------------------------------------------------------- per-config errors
def test_evaluate_by_config_reports_the_worst_config():
    truth = L.LatencyModel({"q4_0": TRUE})
    cfgs = _configs()[:4]
    recs = _records(truth, cfgs)
    for r in recs:
        r["model"] = r["config"]["name"]
        if r["model"] == "c2":  # one config 1.4x slower to decode at every context, as if mis-modelled
            r["decode_tok_s"] /= 1.4
    overall = truth.evaluate(recs)
    by = truth.evaluate_by_config(recs)
    assert set(by) == {"c0", "c1", "c2", "c3"}
    assert by["c2"]["decode"]["max_ape"] == pytest.approx(1 - 1 / 1.4, rel=1e-9)
    assert by["c2"]["max_ape"] == pytest.approx(1 - 1 / 1.4, rel=1e-9)
    assert by["c2"]["prefill"]["max_ape"] == pytest.approx(0, abs=1e-12)
    assert all(by[c]["max_ape"] == pytest.approx(0, abs=1e-12) for c in ("c0", "c1", "c3"))
    assert by["c2"]["decode"]["n"] == 3
    # the median over all points hides the bad config; the max does not
    assert overall["decode"]["median_ape"] < 1e-9 < 0.25 < overall["decode"]["max_ape"]
