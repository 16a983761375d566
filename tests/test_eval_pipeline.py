"""pocketlm eval (built-in offline tasks through lm-eval's API, GGUF through the engine), the report card,
and the one-command pipeline (`pipeline cpu --quick`, then resume)."""

import json
import time
from pathlib import Path

import pytest

from test_json_outputs import check

pytest.importorskip("lm_eval")


def _eval(run_cli, *args):
    code, out, err = run_cli("eval", *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow  # tiny checkpoint: lm-eval perplexity + constrained intent decoding
def test_eval_builtin_tasks_limit_and_out(run_cli, tmp_path, tiny_ckpt):
    out = tmp_path / "e" / "eval.json"
    res = _eval(run_cli, tiny_ckpt, "--tasks", "perplexity,intent", "--limit", 2, "--out", out)
    check("eval --json", res)
    assert json.loads(out.read_text()) == res  # --out writes what --json prints
    assert res["kind"] == "checkpoint" and res["limit"] == 2
    assert res["tasks"]["perplexity"]["n"] == 2 and res["tasks"]["intent"]["n"] == 2  # --limit reached both
    ppl = res["tasks"]["perplexity"]
    # a random model: about log2(vocab) bits per token, so well above 1 bit per byte; perplexity = 2^bpb
    assert ppl["bits_per_byte"] > 1 and ppl["byte_perplexity"] == pytest.approx(2 ** ppl["bits_per_byte"], rel=1e-6)
    assert 0 <= res["tasks"]["intent"]["soft_accuracy"] <= 1
    more = _eval(run_cli, tiny_ckpt, "--tasks", "perplexity", "--limit", 4)
    assert more["tasks"]["perplexity"]["n"] == 4 and set(more["tasks"]) == {"perplexity"}


@pytest.mark.slow  # exports the tiny checkpoint to an F32 GGUF and scores it on llama.cpp
def test_eval_gguf_matches_the_checkpoint(run_cli, tmp_path, tiny_ckpt):
    pytest.importorskip("llama_cpp")
    gguf = tmp_path / "m.gguf"
    code, _, err = run_cli("export", tiny_ckpt, "--quant", "f32", "--out", gguf)
    assert code == 0, err
    torch_res = _eval(run_cli, tiny_ckpt, "--tasks", "perplexity", "--limit", 3)
    gguf_res = _eval(run_cli, gguf, "--tasks", "perplexity", "--limit", 3, "--tokenizer", tiny_ckpt)
    assert gguf_res["kind"] == "gguf" and gguf_res["params"] == torch_res["params"]
    # the same weights in F32 on two engines: lm-eval's HF class and EngineLM give the same log-likelihood
    assert gguf_res["tasks"]["perplexity"]["bits_per_byte"] == pytest.approx(
        torch_res["tasks"]["perplexity"]["bits_per_byte"], rel=2e-3)
    code, _, err = run_cli("eval", gguf, "--tasks", "perplexity", "--tokenizer", tmp_path / "nowhere")
    assert code == 2 and "--tokenizer" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # tiny checkpoint answers DocAssist requests on the engine
def test_eval_docassist_with_gold_records(run_cli, tmp_path, tiny_ckpt):
    gold = tmp_path / "eval.jsonl"
    doc = "The council approved a plan to plant four thousand trees along the main roads over five years."
    records = [{"doc_id": "d1", "task": "summarization", "request": "Summarize.", "question": None,
                "n_questions": None, "document": doc, "response": "The council will plant 4,000 trees."},
               {"doc_id": "d1", "task": "question_answering", "request": "How many trees?",
                "question": "How many trees?", "n_questions": None, "document": doc, "response": "Four thousand."},
               {"doc_id": "d1", "task": "summarization", "request": "Summarize.", "question": None,
                "n_questions": None, "document": doc, "response": "Trees."}]
    gold.write_text("".join(json.dumps(r) + "\n" for r in records))
    res = _eval(run_cli, tiny_ckpt, "--tasks", "docassist", "--docassist-data", gold, "--limit", 2)
    check("eval --json", res)
    scores = res["tasks"]["docassist"]
    assert scores["n"] == 2 and 0 <= scores["rougeL"] <= 1 and 0 <= scores["intent_accuracy"] <= 1
    assert res["primary"]["docassist"] == {"metric": "rougeL", "higher_is_better": True}
    # without --docassist-data: the built-in held-out set, which ships in the package (offline)
    builtin = _eval(run_cli, tiny_ckpt, "--tasks", "docassist", "--limit", 1)
    assert builtin["tasks"]["docassist"]["n"] == 1
    from importlib import resources

    from pocketlm.documents.metrics import read_records

    records = read_records(str(resources.files("pocketlm") / "assets" / "eval" / "docassist.jsonl"), "gold")
    assert len(records) == 30 and {r["task"] for r in records} == {"summarization", "question_suggestion",
                                                                   "question_answering"}
    code, _, err = run_cli("eval", tiny_ckpt, "--tasks", "docassist", "--docassist-data", tmp_path / "none.jsonl")
    assert code == 2 and "none.jsonl" in err and len(err.strip().splitlines()) == 1


def test_engine_score_is_teacher_forced_log_softmax():
    import torch

    from pocketlm.model.decoder import PocketLM
    from pocketlm.model.presets import get_preset
    from pocketlm.runtime.engine import load_runtime

    model = PocketLM.from_config(get_preset("tiny"), seed=3)
    rt = load_runtime(model, backend="torch", threads=1)
    ids = [5, 17, 42, 7, 99]
    logprobs, greedy = rt.score(ids[:2], ids[2:])
    with torch.inference_mode():
        full = torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)
    expected = [float(full[i - 1, ids[i]]) for i in range(2, len(ids))]
    assert logprobs == pytest.approx(expected, abs=1e-4)
    best = int(full[1].argmax())
    assert rt.score(ids[:2], [best])[1] is True and rt.score(ids[:2], [(best + 1) % 512])[1] is False


def test_eval_errors_are_one_line(run_cli, tmp_path, monkeypatch):
    code, _, err = run_cli("eval", tmp_path / "missing", "--tasks", "perplexity")
    assert code == 2 and "neither a pocketlm checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # loads lm-eval's task index
def test_eval_unknown_task_and_missing_dataset(run_cli, tiny_ckpt, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    code, _, err = run_cli("eval", tiny_ckpt, "--tasks", "no_such_task_xyz", "--limit", 1)
    assert code == 2 and "unknown task 'no_such_task_xyz'" in err and len(err.strip().splitlines()) == 1
    # offline: the hub dataset of an lm-eval task is missing -> one line, no traceback
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(Path(tiny_ckpt) / "no-datasets-cache"))
    t0 = time.perf_counter()
    code, _, err = run_cli("eval", tiny_ckpt, "--tasks", "arc_easy", "--limit", 1)
    last = err.strip().splitlines()[-1]  # (above it: the model's loading progress bar)
    assert code == 2 and "Traceback" not in err and "error: task 'arc_easy'" in last and "hub" in last, err
    assert time.perf_counter() - t0 < 60


def test_get_tasks_expands_phonelm():
    from pocketlm.eval.tasks import PHONELM_TASKS, get_tasks

    names = [t.name for t in get_tasks("perplexity,phonelm,perplexity")]
    assert names == ["perplexity", *PHONELM_TASKS]


# ----------------------------------------------------------------------------- pipeline + report

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`pocketlm pipeline cpu --quick --json` once: (out dir, summary, seconds)."""
    from pocketlm.cli import main
    import contextlib
    import io

    out = tmp_path_factory.mktemp("pipeline") / "run"
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = main(["pipeline", "cpu", "--quick", "--out", str(out), "--json"])
    assert code == 0
    return out, json.loads(buf.getvalue()), time.perf_counter() - t0


STAGES = ["search", "base", "finetune", "eval", "export", "eval model-q8_0", "eval model-q4_0", "bench", "report"]


@pytest.mark.slow  # the whole chain on tiny models (~2 minutes on 2 shared cores)
def test_pipeline_quick_runs_every_stage(quick_run):
    out, summary, seconds = quick_run
    check("pipeline --json", summary)
    assert summary["quick"] is True and list(summary["stages"]) == STAGES
    assert all(s["status"] == "done" for s in summary["stages"].values())
    assert seconds < 300  # the budget for --quick
    for path in ("search/summary.json", "search/pareto.png", "base/config.json", "finetune/final/config.json",
                 "eval/eval.json", "export/model-q8_0.gguf", "export/model-q4_0.gguf", "bench/results.json",
                 "report/report.md", "report/capability_vs_speed.png", "report/search_pareto.png"):
        assert (out / path).is_file(), path
    check("eval --json", json.loads((out / "eval" / "eval.json").read_text()))
    state = json.loads((out / "pipeline.json").read_text())
    check("pipeline.json", state)
    report = (out / "report" / "report.md").read_text()
    assert "| model-q4_0 | q4_0 |" in report and "intent.accuracy" in report and "search_pareto.png" in report


@pytest.mark.slow
def test_pipeline_resume_skips_finished_stages(run_cli, quick_run):
    import shutil

    out, _, _ = quick_run
    code, printed, err = run_cli("pipeline", "cpu", "--quick", "--out", out, "--json")
    assert code == 0, err
    again = json.loads(printed)
    assert all(s["status"] == "skipped" for s in again["stages"].values()) and again["seconds"] < 30
    # a pipeline killed during bench: bench and report run again, the rest is kept
    shutil.rmtree(out / "bench")
    shutil.rmtree(out / "report")
    before = (out / "eval" / "eval.json").stat().st_mtime_ns
    code, printed, err = run_cli("pipeline", "cpu", "--quick", "--out", out, "--json")
    assert code == 0, err
    status = {k: v["status"] for k, v in json.loads(printed)["stages"].items()}
    assert status == {**dict.fromkeys(STAGES, "skipped"), "bench": "done", "report": "done"}
    assert (out / "eval" / "eval.json").stat().st_mtime_ns == before and (out / "report" / "report.md").is_file()


@pytest.mark.slow
def test_report_verb_on_a_run(run_cli, quick_run, tmp_path):
    out, _, _ = quick_run
    code, printed, err = run_cli("report", out, "--out", tmp_path / "card", "--json")
    assert code == 0, err
    data = json.loads(printed)
    check("report --json", data)
    rows = {(r["model"], r["quant"]): r for r in data["models"]}
    # the checkpoint keeps a row of its own: its scores next to its exports' (not benched: no efficiency)
    assert set(rows) == {("model-q8_0", "q8_0"), ("model-q4_0", "q4_0"), ("finetune/final", "checkpoint")}
    assert rows["finetune/final", "checkpoint"]["efficiency"] == []
    q4 = rows["model-q4_0", "q4_0"]
    assert q4["gguf_mb"] < rows["model-q8_0", "q8_0"]["gguf_mb"]  # Q4_0 is the smaller file
    assert [e["context"] for e in q4["efficiency"]] == [32, 128]
    # eval.exports: each GGUF is scored as shipped, not credited with its checkpoint's scores
    assert q4["scores_from"] == "same model" and rows["model-q8_0", "q8_0"]["scores_from"] == "same model"
    assert set(q4["scores"]) == {"perplexity.bits_per_byte", "intent.accuracy"}
    ckpt = json.loads((out / "eval" / "eval.json").read_text())
    shipped = json.loads((out / "eval" / "model-q4_0.json").read_text())
    assert shipped["kind"] == "gguf" and shipped["label"] == "model-q4_0"
    assert shipped["tasks"]["perplexity"]["bits_per_byte"] != ckpt["tasks"]["perplexity"]["bits_per_byte"]
    assert data["higher_is_better"] == {"perplexity.bits_per_byte": False, "intent.accuracy": True}
    assert (tmp_path / "card" / "report.md").is_file() and (tmp_path / "card" / "capability_vs_speed.png").is_file()


def test_report_errors(run_cli, tmp_path):
    code, _, err = run_cli("report", tmp_path / "none", "--out", tmp_path / "r")
    assert code == 2 and "run directory not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("report", tmp_path / "empty", "--out", tmp_path / "r")
    assert code == 2 and "no eval, bench or search results" in err and not (tmp_path / "r").exists()


def test_pipeline_dry_run_gpu_recipe(run_cli, tmp_path):
    code, printed, err = run_cli("pipeline", "gpu", "--out", tmp_path / "g", "--dry-run", "--json")
    assert code == 0, err
    stages = json.loads(printed)
    for s in stages:
        check("pipeline --dry-run --json", s)
    assert [s["stage"] for s in stages] == ["search", "base", "instruct", "finetune", "eval", "export", "bench",
                                            "report"]
    assert stages[1]["settings"]["pretrain"] == "phonelm-0.5b" and not (tmp_path / "g").exists()
    quick = json.loads(run_cli("pipeline", "cpu", "--out", tmp_path / "c", "--dry-run", "--quick", "--json")[1])
    full = json.loads(run_cli("pipeline", "cpu", "--out", tmp_path / "c", "--dry-run", "--json")[1])
    assert quick[1]["settings"] == {"tiny": {"preset": "tiny", "vocab_size": 400, "max_position_embeddings": 1024}}
    assert full[1]["settings"] == {"import": "smollm2-135m-instruct"}
    code, _, err = run_cli("pipeline", "nope", "--out", tmp_path / "n")
    assert code == 2 and "unknown pipeline recipe 'nope'" in err
