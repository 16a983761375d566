"""Every long CLI flag is exercised by a test that checks its effect (issue 13).

`test_every_long_flag_is_covered` lists every verb's long flags (from `pocketlm.cli.build_parser()`, the
`intent` forms' and the recipe verbs' own parsers) and fails when no test file names both the verb and the
flag. The rest of this file holds the effect tests for flags no other test file exercised.
"""

import ast
import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from pocketlm.cli import build_parser, main
from pocketlm.model.presets import get_preset

TESTS = Path(__file__).parent

# Flags no test can exercise on this machine. Keep it short and say why for each.
CANNOT_RUN_HERE: dict[tuple[str, str], str] = {}


_COVERAGE_CODE = {"test_every_long_flag_is_covered", "all_long_flags"}


def _cli_help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()


def _usage_flags(help_text: str) -> set[str]:
    """The long flags of a parser's usage line (the text before the first blank line)."""
    usage = help_text.split("\n\n")[0]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", usage)) - {"--help"}


def _parser_flags(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parser_flags(sub, (*prefix, name))
        else:
            longs = [o for o in action.option_strings if o.startswith("--") and o not in ("--help", "--version")]
            if longs:
                yield " ".join(prefix), longs[0]


def all_long_flags() -> set[tuple[str, str]]:
    flags = set(_parser_flags(build_parser()))
    for form in ("eval", "data", "predict"):
        flags |= {(f"intent {form}", f) for f in _usage_flags(_cli_help("intent", form))}
    flags |= {("intent", f) for f in _usage_flags(_cli_help("intent", "run"))}
    for form in ("data", "eval", "predict", "corpus"):
        flags |= {(f"doc {form}", f) for f in _usage_flags(_cli_help("doc", form))}
    flags |= {("doc", f) for f in _usage_flags(_cli_help("doc", "run"))}
    # recipe verbs: their own flags (--out, --dry-run); each recipe field is a generic --FIELD override
    for verb, recipe in (("pretrain", "tiny"), ("finetune", "instruct-tiny")):
        options = _cli_help(verb, recipe).split("recipe fields")[0]
        flags |= {(verb, f) for f in re.findall(r"^\s+(--[a-z][a-z0-9-]*)", options, re.M)} - {(verb, "--help")}
    return flags


def _test_strings(path: Path) -> set[str]:
    """Every string literal of a test file, and each of its whitespace-separated words (in this file, only
    the effect tests' literals: the coverage check's own flag names must not count as coverage)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.name == Path(__file__).name:
        tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name not in _COVERAGE_CODE]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
            out.update(node.value.split())
    return out


def test_every_long_flag_is_covered():
    flags = all_long_flags()
    assert len(flags) > 100 and ("search", "--objective") in flags and ("intent", "--unconstrained") in flags
    assert ("pretrain", "--dry-run") in flags and ("intent eval", "--per-sample") in flags
    assert ("doc data", "--teacher-mode") in flags and ("doc", "--max-doc-tokens") in flags
    files = {p.name: _test_strings(p) for p in TESTS.glob("test_*.py")}
    missing = sorted((verb, flag) for verb, flag in flags - set(CANNOT_RUN_HERE)
                     if not any(flag in s and verb.split()[0] in s for s in files.values()))
    assert not missing, f"long flags no test exercises (verb, flag): {missing}"
    stale = sorted(set(CANNOT_RUN_HERE) - flags)
    assert not stale, f"allow-listed flags that no longer exist: {stale}"


# ----------------------------------------------------------------------------- model verbs

def test_info_context_scales_the_kv_cache(run_cli):
    sizes = {}
    for ctx in (100, 300):
        code, out, err = run_cli("info", "tiny", "--context", ctx, "--json")
        assert code == 0, err
        sizes[ctx] = json.loads(out)["kv_cache_bytes_at_context"]["bytes"]
    assert sizes[300] == 3 * sizes[100] > 0


def test_init_tokenizer_is_copied_into_the_checkpoint(run_cli, tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"marker": 1}')
    code, _, err = run_cli("init", "tiny", "--out", tmp_path / "ck", "--tokenizer", tok)
    assert code == 0, err
    assert json.loads((tmp_path / "ck" / "tokenizer.json").read_text()) == {"marker": 1}
    code, _, err = run_cli("init", "tiny", "--out", tmp_path / "ck2", "--tokenizer", tmp_path / "none")
    assert code == 2 and "tokenizer directory not found" in err and not (tmp_path / "ck2").exists()


# ----------------------------------------------------------------------------- export

def test_export_seed_sets_the_random_weights(run_cli, tmp_path):
    files = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        code, _, err = run_cli("export", "tiny", "--quant", "f32", "--seed", seed, "--out", tmp_path / f"{name}.gguf")
        assert code == 0, err
        files[name] = (tmp_path / f"{name}.gguf").read_bytes()
    assert files["a"] == files["b"] and files["a"] != files["c"]


def test_export_output_quant_sets_the_vocabulary_projection(run_cli, tmp_path):
    from gguf import GGUFReader

    code, out, err = run_cli("export", "tiny", "--quant", "q4_0", "--output-quant", "q8_0", "--json",
                             "--out", tmp_path / "m.gguf")
    assert code == 0, err
    assert json.loads(out)["output_quant"] == "q8_0"
    types = {t.name: t.tensor_type.name for t in GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.ffn_up.weight"] == "Q4_0"  # tiny ties them


@pytest.mark.slow  # trains a tokenizer (tiny_ckpt)
def test_export_tokenizer_dir_is_embedded(run_cli, tmp_path, tiny_ckpt):
    pytest.importorskip("gguf")
    from gguf import GGUFReader

    code, _, err = run_cli("export", "tiny", "--quant", "f32", "--tokenizer", tiny_ckpt, "--out", tmp_path / "t.gguf")
    assert code == 0, err
    reader = GGUFReader(str(tmp_path / "t.gguf"))
    assert "tokenizer.ggml.tokens" in reader.fields
    code, _, err = run_cli("export", "tiny", "--quant", "f32", "--out", tmp_path / "n.gguf")
    assert code == 0, err
    assert len(GGUFReader(str(tmp_path / "n.gguf")).fields) < len(reader.fields)


# ----------------------------------------------------------------------------- generate

def _generate(run_cli, *args):
    code, out, err = run_cli("generate", "tiny", "--prompt-ids", "1,2,3", "--backend", "torch", "--threads", 1,
                             "--max-new-tokens", 12, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_generate_sampling_flags(run_cli):
    greedy = _generate(run_cli)["tokens"]
    hot = ("--temperature", 50)  # a random tiny model's logits are nearly flat: hot sampling wanders
    a, b = _generate(run_cli, *hot, "--seed", 1)["tokens"], _generate(run_cli, *hot, "--seed", 1)["tokens"]
    c = _generate(run_cli, *hot, "--seed", 2)["tokens"]
    assert a == b and a != greedy
    assert c != a  # --seed also sets the random weights, but the sampled tokens must differ either way
    assert _generate(run_cli, *hot, "--top-k", 1)["tokens"] == greedy  # only the best token survives
    assert _generate(run_cli, *hot, "--top-p", 1e-6)["tokens"] == greedy  # the nucleus is the best token


def test_generate_dtype(run_cli):
    assert _generate(run_cli)["quant"] == "float32"
    assert _generate(run_cli, "--dtype", "bfloat16")["quant"] == "bfloat16"


def test_generate_n_ctx_limits_the_llamacpp_context(run_cli):
    pytest.importorskip("llama_cpp")
    base = ("generate", "tiny", "--prompt-ids", "1,2,3", "--backend", "llamacpp", "--threads", 1,
            "--max-new-tokens", 10)
    code, _, err = run_cli(*base, "--n-ctx", 8)
    assert code == 2 and "--n-ctx" in err
    code, out, err = run_cli(*base, "--n-ctx", 64, "--json")
    assert code == 0 and len(json.loads(out)["tokens"]) == 10, err


@pytest.mark.slow  # trains a tokenizer (tiny_ckpt)
def test_generate_system_message_goes_into_the_chat_prompt(run_cli, tiny_ckpt):
    base = ("generate", tiny_ckpt, "--prompt", "set an alarm", "--chat", "--backend", "torch",
            "--max-new-tokens", 2, "--threads", 1, "--json")
    tokens = {}
    for system in ("Be brief.", "Be brief. " * 8):
        code, out, err = run_cli(*base, "--system", system)
        assert code == 0, err
        tokens[system] = json.loads(out)["prompt_tokens"]
    short, long_ = tokens.values()
    assert long_ > short + 7  # seven more copies of the sentence, a token or more each


# ----------------------------------------------------------------------------- latency

def test_latency_predict_quant_selects_the_precision(run_cli):
    code, out, err = run_cli("latency", "predict", "tiny", "--profile", "snapdragon-8-gen-3", "--quant", "q4_0",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["predictions"][0]["decode_tok_s"] > 0
    code, _, err = run_cli("latency", "predict", "tiny", "--profile", "snapdragon-8-gen-3", "--quant", "f16")
    assert code == 2 and "'f16'" in err  # the profile has no f16 fit: the flag reached the model


def _bench_results(path: Path, quant="q4_0"):
    """A `pocketlm bench` results.json with made-up timings of six shapes."""
    cfgs = [get_preset("qwen2.5-0.5b").replace(hidden_size=h, num_layers=n, num_heads=h // 64, num_kv_heads=2,
                                               head_dim=64, intermediate_size=3 * h, name=f"c{i}")
            for i, (h, n) in enumerate([(512, 8), (768, 12), (1024, 16), (640, 20), (896, 24), (384, 6)])]
    records = []
    for k, cfg in enumerate(cfgs):
        for p in (128, 512):
            ttft = 2e-3 + 1e-5 * p * cfg.num_layers * (1 + k / 10)
            records.append({"config": cfg.to_dict(), "quant": quant, "prompt_len": p, "decode_len": 32,
                            "ttft_s": ttft, "decode_tok_s": 1 / (3e-4 + 4e-5 * cfg.num_layers + 1e-4 * k)})
    path.write_text(json.dumps({"bandwidth_gbs": 40.0, "threads": 2, "machine": {"cpu": "test"},
                                "records": records}))
    return path


def test_latency_fit_compute_is_recorded(run_cli, tmp_path):
    from pocketlm.search.profiles import DeviceProfile

    results = _bench_results(tmp_path / "results.json")
    code, _, err = run_cli("latency", "fit", results, "--out", tmp_path / "a.yaml", "--compute", 123.0)
    assert code == 0, err
    code, _, err = run_cli("latency", "fit", results, "--out", tmp_path / "b.yaml")
    assert code == 0, err
    assert DeviceProfile.load(tmp_path / "a.yaml").compute_gflops == 123.0
    assert DeviceProfile.load(tmp_path / "b.yaml").compute_gflops != 123.0


def _llama_bench(path: Path, model_type="llama ?B Q4_0"):
    tests = []
    for n_prompt, n_gen, ns in ((128, 0, 40_000_000), (512, 0, 170_000_000), (0, 64, 320_000_000),
                                (0, 64, 360_000_000)):
        tests.append({"cpu_info": "Test CPU", "model_filename": "/m/tiny.gguf", "model_type": model_type,
                      "n_threads": 4, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 512 if ns == 360_000_000 else 0,
                      "avg_ns": ns, "stddev_ns": 1000, "avg_ts": 1e9 * (n_prompt + n_gen) / ns,
                      "samples_ns": [ns], "samples_ts": [1.0]})
    path.write_text(json.dumps(tests))
    return path


def test_latency_calibrate_base_and_quant(run_cli, tmp_path):
    from pocketlm.search.profiles import DeviceProfile

    q4 = _llama_bench(tmp_path / "q4.json")
    code, _, err = run_cli("latency", "calibrate", q4, "--model-config", "smollm2-135m", "--base",
                           "snapdragon-8-gen-3", "--out", tmp_path / "p.yaml")
    assert code == 0, err
    base = DeviceProfile.load("snapdragon-8-gen-3")
    assert DeviceProfile.load(tmp_path / "p.yaml").bandwidth_gbs == base.bandwidth_gbs  # kept from --base
    # a precision llama-bench names in a way pocketlm cannot map: --quant says what to treat it as
    qk = _llama_bench(tmp_path / "qk.json", model_type="llama ?B Q4_K - Medium")
    code, _, err = run_cli("latency", "calibrate", qk, "--model-config", "smollm2-135m", "--base",
                           "snapdragon-8-gen-3", "--out", tmp_path / "k.yaml")
    assert code == 2 and not (tmp_path / "k.yaml").exists()
    code, _, err = run_cli("latency", "calibrate", qk, "--model-config", "smollm2-135m", "--base",
                           "snapdragon-8-gen-3", "--quant", "q4_0", "--out", tmp_path / "k.yaml")
    assert code == 0, err
    assert any(k.startswith("q4_0/") for k in DeviceProfile.load(tmp_path / "k.yaml").fit)


# ----------------------------------------------------------------------------- bench, recipe verbs

def test_bench_seed_reaches_the_runtime(run_cli, tmp_path, monkeypatch):
    # the seed picks the random weights and prompt ids: its effect is what reaches the engine, not the timings
    from pocketlm.runtime import bench, engine

    seeds = []
    real = engine.load_runtime

    def spy(*args, **kw):
        seeds.append(kw.get("seed"))
        return real(*args, **kw)

    # bench may import the engine's loader at the top (patch it there too) or inside run_bench
    monkeypatch.setattr(engine, "load_runtime", spy)
    if hasattr(bench, "load_runtime"):
        monkeypatch.setattr(bench, "load_runtime", spy)
    code, _, err = run_cli("bench", "tiny", "--backend", "torch", "--contexts", 8, "--decode-tokens", 2,
                           "--repeats", 1, "--warmup", 0, "--threads", 1, "--seed", 7, "--out", tmp_path / "r.json")
    assert code == 0, err
    assert seeds == [7]


@pytest.mark.parametrize("verb, recipe", [("pretrain", "tiny"), ("finetune", "instruct-tiny")])
def test_recipe_dry_run_prints_the_plan_and_writes_nothing(run_cli, tmp_path, verb, recipe):
    out = tmp_path / "run"
    code, stdout, err = run_cli(verb, recipe, "--out", out, "--dry-run", "--seed", 3)
    assert code == 0, err
    plan = json.loads(stdout)
    assert plan["out"] == str(out) and plan["recipe"]["seed"] == 3
    assert not out.exists()


# ----------------------------------------------------------------------------- intent eval / data

def _call(body):
    return {"id": 0, "name": "send_message", "arguments": {"phone_number": "5551234", "body": body}}


def test_intent_eval_threshold_show_per_sample_and_specs(run_cli, tmp_path):
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    gold.write_text("\n".join(json.dumps({"query": q, "answers": [_call(b)]}) for q, b in
                              [("Text 5551234 I will be late today", "I will be late today"),
                               ("Text 5551234 see you", "see you")]) + "\n")
    pred.write_text("\n".join(json.dumps({"query": q, "answers": [_call(b)]}) for q, b in
                              [("Text 5551234 I will be late today", "I will be late today please"),
                               ("Text 5551234 see you", "nothing alike")]) + "\n")
    base = ("intent", "eval", "--gold", gold, "--pred", pred, "--matcher", "lexical")
    scores = {}
    for threshold in (0.1, 0.99):  # a near copy of a free-text value passes a low threshold only
        code, out, err = run_cli(*base, "--threshold", threshold, "--json")
        assert code == 0, err
        scores[threshold] = json.loads(out)["soft_accuracy"]
    assert scores[0.1] > scores[0.99]
    strict = (*base, "--threshold", 0.99)
    code, out, err = run_cli(*strict, "--show", 1)
    assert code == 0, err
    assert "first 1 of 2 failures" in out and "[1]" not in out
    code, out, err = run_cli(*strict, "--show", 2)
    assert "first 2 of 2 failures" in out and "[1]" in out
    per = tmp_path / "per.jsonl"
    code, _, err = run_cli(*strict, "--per-sample", per)
    assert code == 0, err
    rows = [json.loads(line) for line in per.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [False, False] and all(r["reasons"] for r in rows)
    from pocketlm.intent.specs import load_specs

    specs = tmp_path / "api.jsonl"
    specs.write_text("\n".join(json.dumps(s.raw) for s in load_specs().values() if s.name != "send_message") + "\n")
    code, out, err = run_cli(*base, "--specs", specs, "--json")
    assert code == 0, err
    assert json.loads(out)["soft_accuracy"] == 0  # send_message is no longer a known function
    code, _, err = run_cli(*base, "--specs", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in err


def test_intent_data_candidates_and_multi_fraction(run_cli, tmp_path):
    code, out, err = run_cli("intent", "data", "--out", tmp_path / "a", "--train", 30, "--test", 4,
                             "--candidates", 2, "--multi-fraction", 0, "--json")
    assert code == 0, err
    assert json.loads(out)["multi_call_train"] == 0
    for line in (tmp_path / "a" / "sft_train.jsonl").read_text().splitlines():
        prompt = json.loads(line)["messages"][1]["content"]
        assert prompt.count("=" * 50) == 1  # two functions, one separator
    code, out, err = run_cli("intent", "data", "--out", tmp_path / "b", "--train", 30, "--test", 4,
                             "--candidates", 3, "--multi-fraction", 1, "--json")
    assert code == 0, err
    assert json.loads(out)["multi_call_train"] == 30
    prompt = json.loads((tmp_path / "b" / "sft_train.jsonl").read_text().splitlines()[0])["messages"][1]["content"]
    assert prompt.count("=" * 50) == 2


# ----------------------------------------------------------------------------- search (real torch engine)

# tiny shapes around 1M parameters: each one builds and times in milliseconds
SMALL_SPACE = ("{hidden_size: [64, 96, 128, 192], num_layers: {min: 1, max: 12}, head_dim: [32], "
               "num_kv_heads: [1, 2, all], ffn_ratio: [2.0, 3.0, 4.0], multiple_of: 32, activation: [silu], "
               "tie_embeddings: [true, false], max_hidden_per_layer: 200, base: {max_position_embeddings: 512}}")


def _search(run_cli, tmp_path, *args):
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_SPACE)
    code, out, err = run_cli("search", "--budget", "1M", "--vocab-size", 512, "--space", space, "--prompt-len", 8,
                             "--decode-len", 4, "--finalists", 2, "--final-rounds", 1, "--repeats", 1, "--threads", 1,
                             "--no-progress", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def _records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow  # times a dozen tiny models on the torch backend
def test_search_flags_on_the_torch_engine(run_cli, tmp_path):
    from pocketlm.model import costs
    from pocketlm.model.config import ModelConfig

    out = tmp_path / "o"
    flags = ("--backend", "torch", "--dtype", "bfloat16", "--budget-kind", "non-embedding", "--tolerance", 0.3,
             "--objective", "decode", "--kv-context", 100000, "--seed", 5, "--out", out)
    s = _search(run_cli, tmp_path, *flags, "--max-measure", 3)
    recs = _records(out)
    screened = [r for r in recs if r["phase"] == "screen" and r["role"] == "candidate"]
    assert screened and all(r["quant"] == "bfloat16" and r["seed"] == 5 and r["objective"] == "decode"
                            for r in screened)
    for r in screened:  # the budget counts non-embedding parameters, within the tolerance
        assert 0.7e6 <= r["params_non_embedding"] <= 1.3e6
        kv = costs.kv_bytes_per_token(ModelConfig.from_dict(r["config"])) * 100000 / 1e6
        assert r["kv_mb_at_context"] == pytest.approx(kv, abs=0.06)
    finals = {r["name"]: r["decode_tok_s"] for r in recs if r["phase"] == "final" and r["role"] == "candidate"}
    assert s["objective"] == "decode" and s["winner"] == max(finals, key=finals.get)
    # rerun: the cache answers; --fresh measures again
    again = _search(run_cli, tmp_path, *flags, "--max-measure", 3)
    assert again["reused_measurements"] > 0
    fresh = _search(run_cli, tmp_path, *flags, "--max-measure", 3, "--fresh")
    assert fresh["reused_measurements"] == 0 and fresh["new_measurements"] > 0
    # a time budget that is over at once stops the search after its first guided round
    short = _search(run_cli, tmp_path, *flags[:-1], tmp_path / "t", "--max-measure", 40, "--time-budget", 0.001)
    assert "--time-budget" in short["stop_reason"] and short["measured_candidates"] < 40


@pytest.mark.slow  # exports tiny GGUFs and times them with llama.cpp
def test_search_quant_on_the_llamacpp_engine(run_cli, tmp_path):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "q"
    s = _search(run_cli, tmp_path, "--backend", "llamacpp", "--quant", "f16", "--max-measure", 2, "--out", out)
    assert s["quant"] == "f16"
    assert {r["quant"] for r in _records(out)} == {"f16"}


# ----------------------------------------------------------------------------- intent run / predict

def _predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _starts_call_of(output: str, name: str) -> bool:
    """`output` is (a prefix of, or) a call of `name`."""
    head = f"result0 = {name}("
    return output.startswith(head) or head.startswith(output)


@pytest.mark.slow  # trains a tokenizer (tiny_ckpt) and decodes with a random tiny model
def test_intent_predict_candidates_retrieve_unconstrained(run_cli, tmp_path, tiny_ckpt):
    from pocketlm.intent import load_droidcall, load_specs, retrieve

    code, _, err = run_cli("intent", "data", "--out", tmp_path / "d", "--train", 10, "--test", 4)
    assert code == 0, err
    gold = load_droidcall(tmp_path / "d" / "test.jsonl")
    base = ("intent", "predict", tiny_ckpt, "--data", tmp_path / "d" / "test.jsonl", "--doc-style", "brief",
            "--max-new-tokens", 16)

    def predict(name, *args):
        code, _, err = run_cli(*base, "--out", tmp_path / name, *args)
        assert code == 0, err
        return [p["output"] for p in _predictions(tmp_path / name)]

    # one candidate: the grammar leaves the random model no choice of function -- a gold one (a two-call
    # request keeps both) ...
    outs = predict("gold.jsonl", "--candidates", 1)
    assert all(any(_starts_call_of(o, a["name"]) for a in g.answers) for o, g in zip(outs, gold)), outs
    # ... or, with --retrieve, the retriever's best match for the request
    specs = load_specs()
    outs = predict("retrieved.jsonl", "--candidates", 1, "--retrieve")
    assert all(_starts_call_of(o, retrieve(g.query, specs, k=1)[0].name) for o, g in zip(outs, gold)), outs
    free = predict("free.jsonl", "--candidates", 1, "--unconstrained")
    assert not any(o.startswith("result0 = ") for o in free)


@pytest.mark.slow  # tiny checkpoint → F32 GGUF → llama.cpp
def test_intent_llamacpp_backend_with_tokenizer(run_cli, tmp_path, tiny_ckpt):
    pytest.importorskip("llama_cpp")
    gguf = tmp_path / "m.gguf"
    code, _, err = run_cli("export", tiny_ckpt, "--quant", "f32", "--out", gguf)
    assert code == 0, err
    query = ("wake me up at 7:30 tomorrow", "--doc-style", "brief", "--max-new-tokens", 6, "--json")
    code, out, err = run_cli("intent", tiny_ckpt, *query, "--candidates", 3)
    assert code in (0, 1), err  # a random model rarely completes a call in 6 tokens: exit 1, no traceback
    torch_run = json.loads(out)
    assert len(torch_run["candidates"]) == 3 and torch_run["backend"] == "torch"
    assert any(_starts_call_of(torch_run["output"], name) for name in torch_run["candidates"])
    code, out, err = run_cli("intent", gguf, *query, "--candidates", 3, "--backend", "llamacpp",
                             "--tokenizer", tiny_ckpt)
    assert code in (0, 1), err
    llama_run = json.loads(out)
    assert llama_run["backend"] == "llamacpp" and llama_run["output"] == torch_run["output"]
    code, out, err = run_cli("intent", tiny_ckpt, *query, "--candidates", 3, "--unconstrained")
    assert not json.loads(out)["output"].startswith("result0 = ")
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"query": "call 5551234", "answers": [
        {"id": 0, "name": "dial", "arguments": {"phone_number": "5551234"}}]}) + "\n")
    preds = {}
    for backend, model in (("torch", tiny_ckpt), ("llamacpp", gguf)):
        code, _, err = run_cli("intent", "predict", model, "--data", data, "--out", tmp_path / f"{backend}.jsonl",
                               "--backend", backend, "--tokenizer", tiny_ckpt, "--doc-style", "brief",
                               "--max-new-tokens", 6)
        assert code == 0, err
        preds[backend] = _predictions(tmp_path / f"{backend}.jsonl")[0]["output"]
    assert preds["torch"] == preds["llamacpp"]
