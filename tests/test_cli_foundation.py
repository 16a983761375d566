"""`pocketlm presets / info / init` and the CLI's bad-input contract (one line, exit 2)."""

import json
import subprocess
import sys

import pytest
import torch

from pocketlm.model.checkpoint import load_checkpoint
from pocketlm.model.presets import PRESETS


def test_presets_json(run_cli):
    code, out, _ = run_cli("presets", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list(PRESETS)
    for r in rows:
        assert {"name", "params_total", "params_non_embedding"} <= set(r)
        assert r["params_non_embedding"] < r["params_total"]


def test_presets_table_is_readable(run_cli):
    code, out, _ = run_cli("presets")
    assert code == 0 and "phonelm-0.5b" in out and "509.7M" in out


def test_info_json_and_table(run_cli, tmp_path):
    code, out, _ = run_cli("info", "smollm2-135m", "--json")
    info = json.loads(out)
    assert code == 0 and info["params_total"] == 134_515_008
    assert sum(info["param_groups"].values()) == info["params_total"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hidden_size: 128\nnum_heads: 4\nnum_layers: 2\nintermediate_size: 256\nvocab_size: 1000\n")
    code, out, _ = run_cli("info", cfg)
    assert code == 0 and "non-embedding" in out


def test_init_writes_transformers_loadable_checkpoint(run_cli, tmp_path):
    code, out, _ = run_cli("init", "tiny-qwen", "--out", tmp_path / "m", "--seed", "5")
    assert code == 0 and "initialised" in out
    model = load_checkpoint(tmp_path / "m")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    ids = torch.randint(0, 512, (1, 9))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max() < 1e-4
    # init from the checkpoint's own HF config.json gives the same architecture
    code, _, _ = run_cli("init", tmp_path / "m" / "config.json", "--out", tmp_path / "m2", "--dtype", "bfloat16")
    assert code == 0 and json.loads((tmp_path / "m2" / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("args, needle", [
    (["info", "no-such-preset"], "unknown preset"),
    (["info", "missing/config.yaml"], "not found"),
    (["init", "tiny", "--out", "{tmp}/x", "--dtype", "int4"], "unknown dtype"),
    (["info", "{tmp}/bad.json"], "malformed JSON"),
    (["info", "{tmp}/bad.yaml"], "malformed YAML"),
    (["info", "{tmp}/heads.yaml"], "does not divide hidden_size"),
    (["info", "{tmp}/kv.yaml"], "must divide num_heads"),
    (["info", "{tmp}/neg.yaml"], "must be positive"),
    (["info", "{tmp}/missing_dir/"], "not found"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    (tmp_path / "bad.json").write_text('{"hidden_size": ')
    (tmp_path / "bad.yaml").write_text("hidden_size: [1\n")
    (tmp_path / "heads.yaml").write_text("hidden_size: 100\nnum_heads: 3\n")
    (tmp_path / "kv.yaml").write_text("hidden_size: 128\nnum_heads: 4\nnum_kv_heads: 3\n")
    (tmp_path / "neg.yaml").write_text("hidden_size: 128\nnum_heads: 4\nnum_layers: 0\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "pocketlm.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert not (tmp_path / "x").exists()


def test_every_verb_has_help(run_cli):
    from pocketlm.cli import build_parser

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert {"presets", "info", "init"} <= set(verbs)
    for verb in verbs:
        code, out, _ = run_cli(verb, "--help")
        assert code == 0 and "usage:" in out
