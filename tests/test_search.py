"""pocketlm search: budget parsing, enumeration under budget/caps, empty-space errors, resume, outputs.

Most tests drive the whole search with a fake engine (an analytic latency function of the shape), so
they run in about a second each; a few time tiny models on the real engines (llama.cpp's
EngineMeasurer: export, cache, prune, cleanup; the torch backend through the CLI).
"""

import importlib.util
import json

import pytest

from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.errors import UserError
from pocketlm.search.measure import engine_config
from pocketlm.search.search import run_search
from pocketlm.search.settings import SearchSettings, objective_cost
from pocketlm.search.store import ResultStore
from pocketlm.search.space import Constraints, SearchSpace, enumerate_space, format_count, parse_budget

SMALL_SPACE = """
hidden_size: [64, 96, 128, 192]
num_layers: {min: 1, max: 12}
head_dim: [32]
num_kv_heads: [1, 2, all]
ffn_ratio: [2.0, 3.0, 4.0]
multiple_of: 32
activation: [silu]
tie_embeddings: [true, false]
max_hidden_per_layer: 200
base: {max_position_embeddings: 512}
"""


def fake_engine(calls=None, fail_after=None, noise=0.0, seed=0):
    """An engine whose latency is an analytic function of the shape (per-layer overhead + bytes + FLOPs)."""
    import random

    rng = random.Random(seed)

    def measure(cfg, repeats, warmup):
        if calls is not None:
            if fail_after is not None and len(calls) >= fail_after:
                raise KeyboardInterrupt  # simulate the user killing the search midway
            calls.append(cfg.shape_key())
        jitter = 1 + noise * (rng.random() - 0.5)
        ttft = (2e-3 + 4e-4 * cfg.num_layers + costs.flops_prefill(cfg, 32) / 2e10) * jitter
        per_tok = (1e-3 + 3e-4 * cfg.num_layers + costs.decode_bytes(cfg, 32, "q4_0") / 5e9) * jitter
        return {"ttft_s": ttft, "prefill_tok_s": 32 / ttft, "decode_tok_s": 1 / per_tok,
                "e2e_s": ttft + 16 * per_tok, "peak_rss_mb": 100.0, "ttft_s_spread": 0.01,
                "decode_tok_s_spread": 0.01}

    return measure


@pytest.fixture
def small_space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SMALL_SPACE)
    return path


SUMMARY_KEYS = {
    "winner", "objective", "objective_metric", "winner_config", "winner_metrics", "winner_spread",
    "winner_measured_as", "winner_params_total", "winner_params_non_embedding",
    "best_preset", "best_preset_measured_as", "best_preset_metrics", "best_preset_spread",
    "best_preset_params_total", "best_preset_params_non_embedding", "speedup_vs_best_preset", "speedups",
    "best_preset_same_vocab", "best_preset_same_vocab_measured_as", "best_preset_same_vocab_metrics",
    "best_preset_same_vocab_spread", "best_preset_same_vocab_params_total",
    "best_preset_same_vocab_params_non_embedding", "speedup_vs_best_preset_same_vocab", "speedups_same_vocab",
    "budget", "budget_kind", "tolerance", "vocab_size", "engine", "backend", "quant", "threads", "prompt_len",
    "decode_len", "seed", "space_shapes", "candidates", "engine_shapes", "measured_candidates",
    "measured_baselines", "new_measurements", "reused_measurements", "stop_reason", "latency_model_error",
    "runtime_s", "out",
}
SPEEDUP_KEYS = {"e2e", "decode", "prefill", "ttft"}


def assert_report_is_readable(report: str) -> None:
    """report.md is for people: no Python repr leaks into it and no line runs on."""
    for line in report.splitlines():
        assert "Unit(" not in line and "ModelConfig(" not in line, line[:200]
        assert len(line) <= 400, line[:200]


def settings(tmp_path, space, **kw):
    base = dict(budget=parse_budget("1M"), out=tmp_path / "out", space=str(space), vocab_size=512,
                prompt_len=32, decode_len=16, max_measure=12, initial=4, batch=3, finalists=2, final_rounds=2,
                time_budget=1e6)
    base.update(kw)
    return SearchSettings(**base)


# ------------------------------------------------------------------------------------------ budget parsing
@pytest.mark.parametrize("text,value", [("0.5B", 500_000_000), ("500M", 500_000_000), ("500000000", 500_000_000),
                                        ("1.5b", 1_500_000_000), ("120m", 120_000_000), ("5e8", 500_000_000),
                                        ("500_000_000", 500_000_000), (" 2B ", 2_000_000_000)])
def test_parse_budget(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["", "abc", "0.5X", "-1B", "0", "5 billion", "1e3"])
def test_parse_budget_rejects_bad_strings(text):
    with pytest.raises(UserError):
        parse_budget(text)


def test_cli_bad_budget_exits_2(run_cli, tmp_path):
    code, out, err = run_cli("search", "--budget", "lots", "--out", tmp_path / "o", "--backend", "torch")
    assert code == 2
    assert "bad budget 'lots'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ enumeration
def test_default_space_covers_published_shapes_and_the_fast_region():
    space = SearchSpace.load()
    enum = enumerate_space(space, Constraints(parse_budget("0.5B")))
    assert len(enum.candidates) > 1000  # thousands of shapes to rank
    shapes = {(c.cfg.hidden_size, c.cfg.num_layers) for c in enum.candidates}
    assert (1024, 24) in shapes  # PhoneLM-0.5B's hidden x depth
    assert min(layers for _, layers in shapes) <= 12 and max(layers for _, layers in shapes) >= 40
    assert any(c.cfg.num_kv_heads <= 2 for c in enum.candidates)  # GQA
    assert any(c.cfg.intermediate_size >= 6 * c.cfg.hidden_size for c in enum.candidates)  # large FFN ratio
    for c in enum.candidates:  # llama.cpp-friendly dims
        assert c.cfg.hidden_size % 64 == 0 and c.cfg.intermediate_size % 64 == 0


def test_enumeration_respects_budget_tolerance_and_caps(small_space):
    space = SearchSpace.load(small_space)
    budget = parse_budget("1M")
    loose = enumerate_space(space, Constraints(budget, vocab_size=512, tolerance=0.2))
    tight = enumerate_space(space, Constraints(budget, vocab_size=512, tolerance=0.05))
    assert 0 < len(tight.candidates) < len(loose.candidates)
    for c in tight.candidates:
        assert abs(costs.param_groups(c.cfg)["total"] - budget) <= 0.05 * budget
        assert c.params == costs.param_groups(c.cfg)
        assert c.cfg.vocab_size == 512 and c.cfg.max_position_embeddings == 512
    nonemb = enumerate_space(space, Constraints(budget, budget_kind="non-embedding", vocab_size=512, tolerance=0.05))
    for c in nonemb.candidates:
        assert abs(costs.param_groups(c.cfg)["non_embedding"] - budget) <= 0.05 * budget
    # caps: every survivor meets them, and they actually remove shapes
    weights = sorted(costs.weight_bytes(c.cfg, "q4_0") / 1e6 for c in loose.candidates)
    cap = weights[len(weights) // 2]
    capped = enumerate_space(space, Constraints(budget, vocab_size=512, tolerance=0.2, max_weight_mb=cap))
    assert 0 < len(capped.candidates) < len(loose.candidates)
    assert all(costs.weight_bytes(c.cfg, "q4_0") / 1e6 <= cap for c in capped.candidates)
    kvs = sorted(costs.kv_bytes_per_token(c.cfg) * 1024 / 1e6 for c in loose.candidates)
    kv_cap = kvs[len(kvs) // 2]
    kv_capped = enumerate_space(space, Constraints(budget, vocab_size=512, tolerance=0.2, max_kv_mb=kv_cap,
                                                   kv_context=1024))
    assert 0 < len(kv_capped.candidates) < len(loose.candidates)
    assert all(costs.kv_bytes_per_token(c.cfg) * 1024 / 1e6 <= kv_cap for c in kv_capped.candidates)


@pytest.mark.parametrize("kw,expected", [
    (dict(budget=parse_budget("50M")), "widen --tolerance"),
    (dict(max_weight_mb=0.01), "--max-weight-mb"),
    (dict(max_kv_mb=0.001), "--max-kv-mb"),
])
def test_empty_space_names_the_constraint_to_relax(small_space, kw, expected):
    space = SearchSpace.load(small_space)
    args = dict(budget=parse_budget("1M"), vocab_size=512)
    args.update(kw)
    with pytest.raises(UserError) as e:
        enumerate_space(space, Constraints(**args))
    assert expected in str(e.value)
    assert "no candidate within ±5%" in str(e.value)


def test_empty_space_shape_guard_and_cli_exit_code(tmp_path, run_cli):
    path = tmp_path / "wide.yaml"
    path.write_text(SMALL_SPACE.replace("max_hidden_per_layer: 200", "max_hidden_per_layer: 2"))
    with pytest.raises(UserError, match="max_hidden_per_layer"):
        enumerate_space(SearchSpace.load(path), Constraints(parse_budget("1M"), vocab_size=512))
    code, _, err = run_cli("search", "--budget", "1M", "--vocab-size", "512", "--space", path, "--backend", "torch",
                           "--out", tmp_path / "o", "--prompt-len", "8", "--decode-len", "4")
    assert code == 2 and "max_hidden_per_layer" in err


def test_bad_space_file_is_a_user_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("hidden_sizes: [64]\n")
    with pytest.raises(UserError, match="unknown search-space key"):
        SearchSpace.load(path)
    path.write_text("activation: [swish]\n")
    with pytest.raises(UserError, match="activation 'swish'"):
        SearchSpace.load(path)


# ------------------------------------------------------------------------------------------ the search loop
def test_search_writes_outputs_and_winner_config_round_trips(tmp_path, small_space):
    calls = []
    s = settings(tmp_path, small_space)
    summary = run_search(s, measure_fn=fake_engine(calls), progress=False, log=lambda m: None)
    out = s.out
    for name in ("results.jsonl", "report.md", "pareto.png", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(calls)  # one line per measurement taken
    for r in records:
        assert {"config", "params", "ttft_s", "prefill_tok_s", "decode_tok_s", "e2e_s", "measured_as", "role"} <= set(r)
        assert r["role"] in ("candidate", "baseline")
    screened = [r for r in records if r["phase"] == "screen" and r["role"] == "candidate"]
    assert 4 <= len(screened) <= s.max_measure
    # the winner is the finalist with the best measured (final-round median) objective
    finals = [r for r in records if r["phase"] == "final"]
    by_name = {}
    for r in finals:
        by_name.setdefault(r["name"], []).append(r["e2e_s"])
    medians = {n: sorted(v)[len(v) // 2] for n, v in by_name.items()}
    assert summary["winner"] == min(medians, key=medians.get)
    # no preset within ±10% of 1M in this toy space: no speedup claimed, by either ratio
    assert set(summary) == SUMMARY_KEYS
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for key in ("best_preset", "speedup_vs_best_preset", "speedups", "best_preset_same_vocab",
                "speedup_vs_best_preset_same_vocab", "speedups_same_vocab"):
        assert summary[key] is None, key
    # winner config: HF format, loads, round-trips, matches the winner's shape
    cfg = ModelConfig.from_file(out / "config.json")
    assert cfg.shape_key() == ModelConfig.from_dict(summary["winner_config"]).shape_key()
    assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    report = (out / "report.md").read_text()
    assert "## Winner" in report and "Pareto frontier" in report and summary["winner"] in report
    assert "no baseline to compare with" in report
    assert_report_is_readable(report)


def test_search_finds_the_fastest_shape_of_a_fake_engine(tmp_path, small_space):
    """With an engine whose per-layer overhead dominates, the guided search must find the shallowest
    candidate shapes without timing the whole space."""
    s = settings(tmp_path, small_space, max_measure=20, tolerance=0.1)
    summary = run_search(s, measure_fn=fake_engine(), progress=False, log=lambda m: None)
    from pocketlm.search.units import candidate_units

    units, _ = candidate_units(enumerate_space(SearchSpace.load(small_space), s.constraints()).candidates, "torch")
    truth = sorted(units, key=lambda u: objective_cost(fake_engine()(u.measured_cfg, 1, 0), "e2e"))
    assert summary["measured_candidates"] < len(units)
    best_true = objective_cost(fake_engine()(truth[0].measured_cfg, 1, 0), "e2e")
    found = objective_cost(summary["winner_metrics"], "e2e")
    assert found <= best_true * 1.05


def test_resume_after_kill_does_not_remeasure(tmp_path, small_space):
    s = settings(tmp_path, small_space)
    first = []
    with pytest.raises(KeyboardInterrupt):
        run_search(s, measure_fn=fake_engine(first, fail_after=5), progress=False, log=lambda m: None)
    assert len(first) == 5
    assert len(ResultStore(s.out / "results.jsonl").records) == 5
    # simulate a kill mid-write: a truncated last line must not break the resume
    with open(s.out / "results.jsonl", "a") as f:
        f.write('{"key": "screen|trunc')
    second = []
    summary = run_search(s, measure_fn=fake_engine(second), progress=False, log=lambda m: None)
    lines = (s.out / "results.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines if not line.startswith('{"key": "screen|trunc')]
    assert len(keys) == len(set(keys)) == 5 + len(second)  # nothing measured twice
    assert summary["reused_measurements"] == 5
    third = []
    again = run_search(s, measure_fn=fake_engine(third), progress=False, log=lambda m: None)
    assert third == [] and again["winner"] == summary["winner"]  # a finished search replays from the cache


def test_relu_candidates_are_timed_with_the_silu_substitute_on_llamacpp(tmp_path, small_space):
    relu_space = tmp_path / "relu.yaml"
    relu_space.write_text(SMALL_SPACE.replace("activation: [silu]", "activation: [relu]"))
    cfg = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                      activation="relu")
    measured, problem = engine_config(cfg, "llamacpp")
    assert measured.activation == "silu" and measured.shape_key() == cfg.replace(activation="silu").shape_key()
    assert engine_config(cfg, "torch")[0] is cfg  # torch runs relu natively
    timed = []

    def engine(c, repeats, warmup):
        timed.append(c.activation)
        return fake_engine()(c, repeats, warmup)

    s = settings(tmp_path, relu_space, backend="llamacpp", max_measure=6)
    summary = run_search(s, measure_fn=engine, progress=False, log=lambda m: None)
    assert timed and set(timed) == {"silu"}
    records = [json.loads(line) for line in (s.out / "results.jsonl").read_text().splitlines()]
    assert all(r["measured_as"] == "silu substitute" and r["config"]["activation"] == "relu" for r in records)
    assert summary["winner_measured_as"] == "silu substitute"
    assert summary["winner_config"]["activation"] == "relu"  # the user gets the config they asked for
    assert "silu substitute" in (s.out / "report.md").read_text()


def test_baselines_are_presets_near_the_budget_with_the_search_vocab(tmp_path):
    from pocketlm.search.units import baseline_units

    s = SearchSettings(budget=parse_budget("0.5B"), out=tmp_path, backend="llamacpp")
    units = baseline_units(s)
    names = {u.name for u in units}
    assert {"qwen2.5-0.5b", "phonelm-0.5b", "qwen2.5-0.5b@v49152"} <= names
    for u in units:
        if u.variant == "published":
            assert abs(costs.param_groups(u.cfg)["total"] - s.budget) <= 0.10 * s.budget
        else:
            assert u.cfg.vocab_size == 49152
    phone = next(u for u in units if u.name == "phonelm-0.5b")
    assert phone.measured_as == "silu substitute" and phone.measured_cfg.activation == "silu"


def test_speedup_against_presets_is_reported_both_as_published_and_at_the_search_vocab(tmp_path, capsys):
    """Default 0.5B space with a fake engine: presets are measured alongside and two ratios computed, one
    against the fastest preset as published (the headline) and one against the fastest preset shape at
    the search's vocabulary (architecture only); both kinds of preset are re-timed in the finals."""
    from pocketlm.search.cli import print_summary

    s = SearchSettings(budget=parse_budget("0.5B"), out=tmp_path / "o", max_measure=8, initial=4, batch=3,
                       finalists=2, final_rounds=2, prompt_len=32, decode_len=16, time_budget=1e6)
    summary = run_search(s, measure_fn=fake_engine(), progress=False, log=lambda m: None)
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["speedups"]) == set(summary["speedups_same_vocab"]) == SPEEDUP_KEYS
    assert summary["best_preset"] in ("qwen2.5-0.5b", "phonelm-0.5b")
    wm, pm = summary["winner_metrics"], summary["best_preset_metrics"]
    assert summary["speedup_vs_best_preset"] == pytest.approx(pm["e2e_s"] / wm["e2e_s"], rel=1e-3)
    assert summary["speedups"]["decode"] == pytest.approx(wm["decode_tok_s"] / pm["decode_tok_s"], rel=1e-3)

    # same vocabulary: the fastest preset shape at vocab 49,152 among those re-timed in the finals
    records = [json.loads(line) for line in (s.out / "results.jsonl").read_text().splitlines()]
    finals: dict[str, list[float]] = {}
    for r in records:
        if r["phase"] == "final" and r["role"] == "baseline":
            finals.setdefault(r["name"], []).append(r["e2e_s"])
    assert {"qwen2.5-0.5b", "qwen2.5-0.5b@v49152", "phonelm-0.5b"} <= set(finals)  # both kinds take part
    from pocketlm.model.presets import get_preset

    def vocab(name):
        return get_preset(name).vocab_size if "@v" not in name else int(name.split("@v")[1])

    same_vocab = {n: sorted(v)[len(v) // 2] for n, v in finals.items() if vocab(n) == s.vocab_size}
    assert summary["best_preset_same_vocab"] == min(same_vocab, key=same_vocab.get)
    vm = summary["best_preset_same_vocab_metrics"]
    assert summary["speedup_vs_best_preset_same_vocab"] == pytest.approx(vm["e2e_s"] / wm["e2e_s"], rel=1e-3)
    assert summary["speedups_same_vocab"]["decode"] == pytest.approx(wm["decode_tok_s"] / vm["decode_tok_s"],
                                                                     rel=1e-3)
    # the smaller vocabulary alone makes qwen faster, so the architecture-only ratio is the smaller one
    assert summary["speedup_vs_best_preset_same_vocab"] < summary["speedup_vs_best_preset"]

    report = (tmp_path / "o" / "report.md").read_text()
    assert_report_is_readable(report)
    assert "Speedup:" in report and "Architecture only:" in report
    assert f"{summary['speedup_vs_best_preset']:.2f}x" in report
    assert f"{summary['speedup_vs_best_preset_same_vocab']:.2f}x" in report
    assert "what a user would pick instead" in report  # which ratio the target applies to
    # the winner and both presets side by side with both parameter counts (an untied winner is flagged)
    for name, prefix in ((summary["best_preset"], "best_preset"),
                         (summary["best_preset_same_vocab"], "best_preset_same_vocab")):
        assert f"| {name} | {format_count(summary[prefix + '_params_total'])} | " \
               f"{format_count(summary[prefix + '_params_non_embedding'])} |" in report
    preset_params = costs.param_groups(get_preset(summary["best_preset"]))
    assert summary["best_preset_params_non_embedding"] == preset_params["non_embedding"]
    assert ("Untied:" in report) == (not summary["winner_config"]["tie_embeddings"])
    # the Pareto table holds the objective's unit, not a Python repr
    pareto = report.split("## Pareto frontier")[1].split("## Notes")[0]
    rows = [line for line in pareto.splitlines() if line.startswith("| h")]
    assert rows and all(line.endswith(" s |") for line in rows)

    print_summary(summary)
    printed = capsys.readouterr().out
    assert f"speedup: {summary['speedup_vs_best_preset']:.2f}x" in printed
    assert f"architecture only, against {summary['best_preset_same_vocab']}" in printed
    assert f"{summary['speedup_vs_best_preset_same_vocab']:.2f}x" in printed


needs_llamacpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                    reason="needs llama-cpp-python (pocketlm[runtime])")


@needs_llamacpp
def test_engine_measurer_exports_caches_prunes_and_cleans_up(tmp_path, monkeypatch):
    """The real llama.cpp path `make demo` runs: random Q4_0 weights exported once per shape into
    OUT/.gguf, reused by the next measurement of that shape, pruned to the kept shapes, removed at the end."""
    from pocketlm.search import measure as measure_module
    from pocketlm.search.measure import EngineMeasurer

    exported = []

    def counting_export(cfg, path, **kw):
        exported.append(cfg.shape_key())
        return real_export(cfg, path, **kw)

    real_export = measure_module.export_gguf
    monkeypatch.setattr(measure_module, "export_gguf", counting_export)
    s = SearchSettings(budget=parse_budget("1M"), out=tmp_path / "o", vocab_size=512, prompt_len=16,
                       decode_len=8, threads=1)
    engine = EngineMeasurer(s)
    small = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                        max_position_embeddings=128)
    deep = small.replace(num_layers=3)
    for cfg in (small, deep):
        m = engine(cfg, 1, 1)
        for k in ("ttft_s", "prefill_tok_s", "decode_tok_s", "e2e_s", "peak_rss_mb"):
            assert m[k] > 0, k
        path = engine.gguf_path(cfg)
        assert path.parent == s.out / ".gguf" and path.read_bytes()[:4] == b"GGUF"
    assert exported == [small.shape_key(), deep.shape_key()]
    mtime = engine.gguf_path(small).stat().st_mtime_ns
    assert engine(small, 1, 0)["decode_tok_s"] > 0
    assert exported == [small.shape_key(), deep.shape_key()]  # the second measurement reused the file
    assert engine.gguf_path(small).stat().st_mtime_ns == mtime
    engine.prune([deep])
    assert not engine.gguf_path(small).exists() and engine.gguf_path(deep).is_file()
    engine(small, 1, 0)  # a pruned shape is exported again when it is needed again
    assert exported[-1] == small.shape_key() and len(exported) == 3
    engine.cleanup()
    assert not (s.out / ".gguf").exists()
    engine.cleanup()  # nothing left to remove is fine


@needs_llamacpp
def test_search_on_llamacpp_leaves_no_exported_files(tmp_path, small_space):
    """The whole search on the real engine (tiny shapes): it measures, picks a winner and removes OUT/.gguf."""
    s = settings(tmp_path, small_space, backend="llamacpp", max_measure=3, initial=2, batch=2, finalists=1,
                 final_rounds=1, repeats=1, threads=1)
    summary = run_search(s, progress=False, log=lambda m: None)
    assert summary["measured_candidates"] <= 3 and summary["new_measurements"] >= 3
    assert summary["winner_metrics"]["decode_tok_s"] > 0
    records = [json.loads(line) for line in (s.out / "results.jsonl").read_text().splitlines()]
    assert not any(r.get("error") for r in records)
    assert all(r["export_s"] >= 0 for r in records)
    assert not (s.out / ".gguf").exists()


@pytest.mark.slow
def test_cli_search_on_the_torch_backend(run_cli, tmp_path, small_space):
    """End to end on a real engine (tiny models, torch backend): files, JSON summary, winner loads."""
    import signal

    out = tmp_path / "o"
    before = signal.getsignal(signal.SIGTERM)
    code, stdout, err = run_cli("search", "--budget", "1M", "--vocab-size", "512", "--space", small_space,
                                "--backend", "torch", "--prompt-len", "8", "--decode-len", "4", "--max-measure", "3",
                                "--finalists", "2", "--final-rounds", "2", "--repeats", "1", "--threads", "1",
                                "--out", out,
                                "--no-progress", "--json")
    assert code == 0, err
    assert signal.getsignal(signal.SIGTERM) is before  # a leaked handler breaks later forks (pool workers)
    summary = json.loads(stdout)
    assert summary["measured_candidates"] <= 3 and summary["winner_metrics"]["decode_tok_s"] > 0
    assert ModelConfig.from_file(out / "config.json").shape_key() == \
        ModelConfig.from_dict(summary["winner_config"]).shape_key()


def test_objectives_and_pareto_front():
    from pocketlm.search.report import pareto_front
    from pocketlm.search.settings import speedup
    from pocketlm.search.units import Unit

    fast, slow = {"e2e_s": 1.0, "ttft_s": 0.2, "prefill_tok_s": 500.0, "decode_tok_s": 100.0}, \
        {"e2e_s": 2.0, "ttft_s": 0.4, "prefill_tok_s": 250.0, "decode_tok_s": 50.0}
    for objective in ("e2e", "decode", "prefill", "ttft"):  # lower cost = better, whatever the metric
        assert objective_cost(fast, objective) < objective_cost(slow, objective)
        assert speedup(slow, fast, objective) == pytest.approx(2.0)
    cfg = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)

    def unit(name, non_emb, e2e):
        u = Unit(name, cfg, cfg, "candidate", params={"non_embedding": non_emb, "total": non_emb})
        u.screen = {"e2e_s": e2e}
        return u

    units = [unit("small-fast", 10, 1.0), unit("big-slow", 20, 2.0), unit("dominated", 15, 2.5),
             unit("mid", 15, 1.5)]
    assert [u.name for u in pareto_front(units, "e2e")] == ["small-fast", "mid", "big-slow"]
