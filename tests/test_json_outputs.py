"""JSON outputs match docs/json.md key for key (issue 13): a renamed, dropped or undocumented key fails.

Each test runs a command on tiny inputs and compares the exact key set of what it printed or wrote with
the section of docs/json.md that documents it (keys marked *(optional)* may be absent).
"""

import json
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "json.md"


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """{section title: (required keys, optional keys)} parsed from docs/json.md."""
    sections: dict[str, tuple[set[str], set[str]]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = (set(), set())
        elif current and (m := re.match(r"- `([^`]+)`( \*\(optional\)\*)?", line)):
            sections[current][1 if m.group(2) else 0].add(m.group(1))
    return sections


DOCUMENTED = documented()


def check(section: str, obj: dict) -> None:
    required, optional = DOCUMENTED[section]
    keys = set(obj)
    assert not required - keys, f"{section}: documented keys missing from the output: {sorted(required - keys)}"
    assert not keys - required - optional, f"{section}: undocumented keys: {sorted(keys - required - optional)}"


def _json(run_cli, *args) -> dict | list:
    code, out, err = run_cli(*args)
    assert code == 0, err
    return json.loads(out)


def test_the_document_parses():
    assert len(DOCUMENTED) >= 20
    assert all(required for required, _ in DOCUMENTED.values()), "a section without keys"
    assert "compute_gflops" in DOCUMENTED["latency fit --json"][1]


def test_check_catches_renamed_and_extra_keys():
    required, _ = DOCUMENTED["generate --json"]
    renamed = {("ttft" if k == "ttft_s" else k): 0 for k in required}
    with pytest.raises(AssertionError, match="ttft_s"):
        check("generate --json", renamed)
    with pytest.raises(AssertionError, match="surprise"):
        check("generate --json", {**dict.fromkeys(required), "surprise": 1})


def test_model_verbs(run_cli):
    rows = _json(run_cli, "presets", "--json")
    for row in rows:
        check("presets --json", row)
    check("info --json", _json(run_cli, "info", "tiny", "--json"))


def test_export_and_generate(run_cli, tmp_path):
    check("export --json", _json(run_cli, "export", "tiny", "--quant", "f32", "--out", tmp_path / "m.gguf", "--json"))
    check("generate --json", _json(run_cli, "generate", "tiny", "--prompt-ids", "1,2", "--backend", "torch",
                                   "--max-new-tokens", 2, "--threads", 1, "--json"))


def test_bench_output_and_results_file(run_cli, tmp_path):
    printed = _json(run_cli, "bench", "tiny", "--backend", "torch", "--contexts", 8, "--decode-tokens", 2,
                    "--repeats", 1, "--warmup", 0, "--threads", 1, "--out", tmp_path / "b", "--json")
    written = json.loads((tmp_path / "b" / "results.json").read_text())
    for results in (printed, written):
        check("bench --json", results)
        for record in results["records"]:
            check("bench records", record)


def test_latency_verbs(run_cli, tmp_path):
    from test_cli_flags import _bench_results, _llama_bench

    results = _bench_results(tmp_path / "results.json")
    check("latency fit --json", _json(run_cli, "latency", "fit", results, "--out", tmp_path / "a.yaml", "--json"))
    check("latency fit --json", _json(run_cli, "latency", "fit", results, "--out", tmp_path / "b.yaml",
                                      "--compute", 100, "--json"))
    check("latency calibrate --json", _json(run_cli, "latency", "calibrate", _llama_bench(tmp_path / "lb.json"),
                                            "--model-config", "smollm2-135m", "--base", "snapdragon-8-gen-3",
                                            "--out", tmp_path / "c.yaml", "--json"))
    predicted = _json(run_cli, "latency", "predict", "tiny", "smollm2-135m", "--profile", "snapdragon-8-gen-3",
                      "--json")
    check("latency predict --json", predicted)
    for p in predicted["predictions"]:
        check("latency predictions", p)


def test_intent_data_and_eval(run_cli, tmp_path):
    check("intent data --json", _json(run_cli, "intent", "data", "--out", tmp_path / "d", "--train", 10,
                                      "--test", 3, "--json"))
    test = tmp_path / "d" / "test.jsonl"
    check("intent eval --json", _json(run_cli, "intent", "eval", "--gold", test, "--pred", test, "--matcher",
                                      "lexical", "--json"))


def test_intent_meta_file(tmp_path):
    from pocketlm.intent.grammar import save_intent_meta

    path = save_intent_meta(tmp_path, doc_style="brief", candidates=4, copy_args=[["dial", "phone_number"]])
    check("intent.json", json.loads(path.read_text()))


@pytest.mark.slow  # trains a tokenizer (tiny_ckpt) and decodes with a random tiny model
def test_intent_run_and_predict(run_cli, tmp_path, tiny_ckpt):
    code, out, err = run_cli("intent", tiny_ckpt, "call 5551234", "--doc-style", "brief", "--max-new-tokens", 4,
                             "--json")
    assert code in (0, 1), err  # 1: the random model's output did not parse
    check("intent --json", json.loads(out))
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"query": "call 5551234", "answers": [
        {"id": 0, "name": "dial", "arguments": {"phone_number": "5551234"}}]}) + "\n")
    code, _, err = run_cli("intent", "predict", tiny_ckpt, "--data", data, "--out", tmp_path / "p.jsonl",
                           "--doc-style", "brief", "--max-new-tokens", 4)
    assert code == 0, err
    for line in (tmp_path / "p.jsonl").read_text().splitlines():
        check("intent predict records", json.loads(line))


@pytest.mark.parametrize("verb, recipe", [("pretrain", "tiny"), ("finetune", "instruct-tiny")])
def test_recipe_dry_run(run_cli, verb, recipe):
    check("pretrain --dry-run", _json(run_cli, verb, recipe, "--dry-run"))


@pytest.mark.slow  # two training steps of each recipe
def test_training_summaries(run_cli, tmp_path):
    data = Path(__file__).parent / "data" / "chats.jsonl"
    pre, sft = tmp_path / "pre", tmp_path / "sft"
    code, _, err = run_cli("pretrain", "tiny", "--max-steps", 2, "--save-every", 0, "--out", pre)
    assert code == 0, err
    check("pretrain summary.json", json.loads((pre / "summary.json").read_text()))
    code, _, err = run_cli("finetune", "instruct-tiny", "--base", pre / "final", "--data", data, "--max-steps", 2,
                           "--save-every", 0, "--out", sft)
    assert code == 0, err
    check("finetune summary.json", json.loads((sft / "summary.json").read_text()))


@pytest.mark.slow  # times a few tiny models on the torch backend
def test_search_summary_and_results(run_cli, tmp_path):
    from test_cli_flags import _records, _search

    out = tmp_path / "o"
    printed = _search(run_cli, tmp_path, "--backend", "torch", "--max-measure", 3, "--out", out)
    check("search --json", printed)
    check("search --json", json.loads((out / "summary.json").read_text()))
    for record in _records(out):
        check("search results.jsonl", record)


def test_tokenizer_and_data_verbs(run_cli, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("set an alarm for seven, call mom, open the camera\n" * 200)
    check("tokenizer train --json", _json(run_cli, "tokenizer", "train", "--input", corpus, "--vocab-size", 300,
                                          "--out", tmp_path / "tok", "--json"))
    printed = _json(run_cli, "data", "prepare", "--tokenizer", tmp_path / "tok", "--input", f"web={corpus}",
                    "--out", tmp_path / "prep", "--json")
    check("data prepare --json", printed)
    check("data prepare --json", json.loads((tmp_path / "prep" / "manifest.json").read_text()))
    check("data prepare --json", _json(run_cli, "data", "info", tmp_path / "prep", "--json"))
