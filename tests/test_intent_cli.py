"""`pocketlm intent` eval / data / run on bad and good input."""

import json

import pytest

from pocketlm.intent import format_answer, load_droidcall


@pytest.fixture
def data_dir(tmp_path, run_cli):
    code, out, err = run_cli("intent", "data", "--out", tmp_path / "d", "--train", 40, "--test", 12, "--seed", 1)
    assert code == 0, err
    return tmp_path / "d"


def test_data_writes_droidcall_and_sft_files(data_dir):
    train, test = load_droidcall(data_dir / "train.jsonl"), load_droidcall(data_dir / "test.jsonl")
    assert len(train) == 40 and len(test) == 12 and not any(s.error for s in train + test)
    sft = [json.loads(line) for line in (data_dir / "sft_train.jsonl").read_text().splitlines()]
    assert len(sft) == 40 and sft[0]["messages"][-1]["content"] == format_answer(train[0].answers)


def test_eval_json_keys_on_perfect_predictions(data_dir, run_cli):
    code, out, err = run_cli("intent", "eval", "--gold", data_dir / "test.jsonl", "--pred", data_dir / "test.jsonl",
                             "--json", "--matcher", "lexical")
    assert code == 0, err
    res = json.loads(out)
    assert res["accuracy"] == 1.0 and res["soft_accuracy"] == 1.0 and res["n"] == 12
    assert res["matcher"] == "lexical" and res["bad_lines"] == 0


def test_eval_scores_bad_lines_wrong_with_reasons(data_dir, run_cli, tmp_path):
    lines = (data_dir / "test.jsonl").read_text().splitlines()
    lines[0] = "{this is not json"
    rec = json.loads(lines[1])
    rec["answers"] = [{"id": 0, "name": "NO_SUCH_FUNCTION", "arguments": {}}]
    lines[1] = json.dumps(rec)
    lines[2] = json.dumps({"query": json.loads(lines[2])["query"], "output": "sorry, I can't"})
    lines[3] = json.dumps({"query": "q", "answers": [{"arguments": {}}]})
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli("intent", "eval", "--gold", data_dir / "test.jsonl", "--pred", pred, "--json",
                             "--matcher", "lexical")
    assert code == 0, err
    res = json.loads(out)
    assert res["bad_lines"] == 3  # invalid JSON, unparsable output, call without a name
    reasons = " | ".join(res["bad_predictions"])
    assert "invalid JSON" in reasons and "no `resultN" in reasons and "no function name" in reasons
    failed = {f["index"]: f for f in res["failures"]}
    assert {0, 1, 2, 3} <= set(failed) and all(failed[i]["score"] == 0.0 for i in range(4))
    assert any("unknown function NO_SUCH_FUNCTION" in r for r in failed[1]["reasons"])
    assert res["accuracy"] == pytest.approx(8 / 12)


def test_eval_missing_file_and_misaligned_files_exit_2(data_dir, run_cli, tmp_path):
    code, out, err = run_cli("intent", "eval", "--gold", data_dir / "test.jsonl", "--pred", tmp_path / "nope.jsonl")
    assert code == 2 and "file not found" in err and len(err.strip().splitlines()) == 1
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join((data_dir / "test.jsonl").read_text().splitlines()[:5]) + "\n")
    code, out, err = run_cli("intent", "eval", "--gold", data_dir / "test.jsonl", "--pred", short)
    assert code == 2 and "5 predictions" in err
    code, out, err = run_cli("intent", "eval", "--gold", data_dir / "test.jsonl")
    assert code == 2 and "--pred" in err


@pytest.mark.slow  # builds a tiny checkpoint (tokenizer training + transformers import)
def test_intent_run_on_a_checkpoint(tiny_ckpt, run_cli):
    from transformers import AutoTokenizer

    code, out, err = run_cli("intent", tiny_ckpt, "wake me up at 7:30 tomorrow", "--json", "--doc-style", "brief",
                             "--max-new-tokens", 4)
    res = json.loads(out)
    assert {"query", "candidates", "output", "calls", "error", "adb", "backend"} <= set(res)
    assert "ACTION_SET_ALARM" in res["candidates"] and res["backend"] == "torch"
    # no call of any candidate fits in 4 tokens, so the constrained output is an unfinished call:
    # exit 1 with the parse reason on stderr, never a traceback
    tok = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    assert min(len(tok.encode(f"result0 = {name}()")) for name in res["candidates"]) > 4
    assert code == 1 and res["error"] and res["calls"] == []
    assert res["output"] and ("result0 = ".startswith(res["output"]) or res["output"].startswith("result0 = "))
    assert err.strip() == f"pocketlm intent: {res['error']}"


@pytest.mark.slow  # builds a tiny checkpoint (tokenizer training + transformers import)
def test_intent_run_bad_model_and_function_exit_2(tiny_ckpt, tmp_path, run_cli):
    code, out, err = run_cli("intent", tmp_path / "missing", "call mom")
    assert code == 2 and "not a pocketlm checkpoint" in err
    code, out, err = run_cli("intent", tiny_ckpt, "call mom", "--functions", "dial,nope")
    assert code == 2 and "unknown function(s) nope" in err


@pytest.mark.slow  # builds a tiny checkpoint (tokenizer training + transformers import)
def test_intent_predict_then_eval(tiny_ckpt, data_dir, run_cli, tmp_path):
    pred = tmp_path / "pred.jsonl"
    code, out, err = run_cli("intent", "predict", tiny_ckpt, "--data", data_dir / "test.jsonl", "--out", pred,
                             "--limit", 3, "--doc-style", "brief", "--max-new-tokens", 4)
    assert code == 0, err
    assert len(pred.read_text().splitlines()) == 3
    gold = tmp_path / "gold3.jsonl"
    gold.write_text("\n".join((data_dir / "test.jsonl").read_text().splitlines()[:3]) + "\n")
    code, out, err = run_cli("intent", "eval", "--gold", gold, "--pred", pred, "--json", "--matcher", "lexical")
    assert code == 0, err
    assert json.loads(out)["n"] == 3


@pytest.mark.slow  # builds a tiny checkpoint
def test_intent_run_prints_calls_and_adb(tiny_ckpt, run_cli, monkeypatch):
    from pocketlm.intent import infer

    seen = {}

    def fake_complete(self, messages, max_new_tokens=128, grammar=None):
        seen["prompt"] = self.runtime.tokenizer.apply_chat_template(messages, tokenize=False,
                                                                    add_generation_prompt=True)
        return "result0 = ACTION_SET_ALARM(EXTRA_HOUR=7, EXTRA_MINUTES=30)"

    monkeypatch.setattr(infer.Runner, "complete", fake_complete)
    code, out, err = run_cli("intent", tiny_ckpt, "wake me up at 7:30 tomorrow")
    assert code == 0, err
    assert "result0 = ACTION_SET_ALARM(EXTRA_HOUR=7, EXTRA_MINUTES=30)" in out
    assert "adb shell am start -a android.intent.action.SET_ALARM --ei android.intent.extra.alarm.HOUR 7" in out
    # the checkpoint's own chat template (ChatML) wraps the code_short prompt
    assert seen["prompt"].startswith("<|im_start|>system\nYou are an expert in composing functions.<|im_end|>")
    assert seen["prompt"].endswith("Now my query is: wake me up at 7:30 tomorrow<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow  # tiny checkpoint → GGUF → llama.cpp
def test_an_exported_intent_model_carries_its_intent_json(tiny_ckpt, tmp_path):
    """`pocketlm intent model.gguf "..."` needs no checkpoint beside it: the GGUF carries intent.json."""
    import shutil

    from pocketlm.intent.grammar import load_intent_meta, save_intent_meta
    from pocketlm.intent.infer import load_runner
    from pocketlm.runtime.gguf import export_gguf, read_gguf

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    save_intent_meta(ckpt, doc_style="brief", candidates=3, copy_args=[["dial", "phone_number"]])
    gguf = export_gguf(ckpt, tmp_path / "m.gguf", quant="f32")
    files = read_gguf(gguf)["files"]
    assert "config.json" not in files and "tokenizer.json" not in files  # only the checkpoint's own extras
    runner = load_runner(str(gguf), "llamacpp")
    try:
        assert runner.meta == load_intent_meta(ckpt) == {"doc_style": "brief", "candidates": 3,
                                                         "copy_args": [["dial", "phone_number"]]}
    finally:
        runner.close()
    assert read_gguf(export_gguf(tiny_ckpt, tmp_path / "plain.gguf", quant="f32"))["files"] == {}
