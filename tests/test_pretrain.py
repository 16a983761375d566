"""Pre-training: schedules, recipe/CLI overrides, the resumable data sampler, SIGKILL + exact resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pocketlm.errors import UserError
from pocketlm.train.pretrain import (
    PretrainBatches, apply_overrides, builtin_recipes, load_recipe, permute, plan_phases, recipe_from_dict)
from pocketlm.train.trainer import PhasedSchedule, Schedule, build_optimizer

REPO = Path(__file__).resolve().parents[1]

WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in tall green trees "
         "one two three four five six seven eight nine ten").split()


def make_data_dir(root: Path, vocab_size: int = 300) -> Path:
    """A prepared data dir by the manifest contract: HF tokenizer + uint16 shards, two sources."""
    from pocketlm.data.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    docs = {"web": [" ".join(rng.choice(WORDS[:20], size=rng.integers(20, 80))) for _ in range(300)],
            "code": [" ".join(WORDS[20 + (i % 10)] for i in range(k, k + rng.integers(20, 60)))
                     for k in range(200)]}
    tok_dir = train_tokenizer([d for v in docs.values() for d in v], vocab_size, root / "tokenizer")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    manifest = {"version": 1, "tokenizer": "tokenizer", "dtype": "uint16", "eos_id": eos,
                "vocab_size": tok.get_vocab_size(), "seq_len_hint": None, "sources": {}}
    for name, texts in docs.items():
        ids = [t for enc in tok.encode_batch(texts) for t in enc.ids + [eos]]
        n_val = len(ids) // 10
        (root / name).mkdir(parents=True)
        np.array(ids[:-n_val], dtype=np.uint16).tofile(root / name / "train-00000.bin")
        np.array(ids[-n_val:], dtype=np.uint16).tofile(root / name / "val-00000.bin")
        manifest["sources"][name] = {"train": [f"{name}/train-00000.bin"], "val": [f"{name}/val-00000.bin"],
                                     "train_tokens": len(ids) - n_val, "val_tokens": n_val,
                                     "documents": len(texts), "skipped": {}, "files": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_recipe(path: Path, data_dir: Path, **extra) -> Path:
    recipe = {"name": "t", "model": "tiny", "data": str(data_dir), "seq_len": 32, "batch_size": 8,
              "micro_batch_size": 4, "eval_every": 4, "eval_batches": 1, "save_every": 4, "keep_last": 2,
              "precision": "fp32",
              "phases": [{"name": "stable", "steps": 10, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
                          "mixture": "natural"},
                         {"name": "decay", "steps": 2, "schedule": "linear", "lr": 3e-4, "min_lr": 1.5e-4,
                          "mixture": {"web": 0.5, "code": 0.5}}]}
    recipe.update(extra)
    path.write_text(json.dumps(recipe))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"))


def read_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


# ---------------------------------------------------------------------------- schedules / optimizer
def test_schedules_hit_their_endpoints():
    cos = Schedule("cosine", lr=4e-4, total_steps=100, warmup_steps=10, min_lr=4e-5)
    assert cos(0) == pytest.approx(4e-4 / 11) and cos(9) == pytest.approx(4e-4 * 10 / 11)
    assert cos(10) == pytest.approx(4e-4) and cos(99) == pytest.approx(4e-5)
    assert all(cos(i) >= cos(i + 1) for i in range(10, 99))
    lin = Schedule("linear", lr=4e-5, total_steps=11, min_lr=2e-5)
    assert lin(0) == pytest.approx(4e-5) and lin(5) == pytest.approx(3e-5) and lin(10) == pytest.approx(2e-5)
    wsd = Schedule("wsd", lr=1e-3, total_steps=100, warmup_steps=5, min_lr=0.0, decay_frac=0.2)
    assert wsd(50) == wsd(79) == pytest.approx(1e-3) and wsd(99) == pytest.approx(0.0) and wsd(90) < 1e-3
    phased = PhasedSchedule([("stable", cos), ("decay", lin)])
    assert phased.total_steps == 111 and phased(100) == pytest.approx(4e-5) and phased.locate(105)[1] == "decay"
    with pytest.raises(UserError, match="schedule"):
        Schedule("exp")


def test_optimizer_groups_follow_phonelm():
    from pocketlm.model.decoder import PocketLM
    from pocketlm.model.presets import get_preset

    model = PocketLM.from_config(get_preset("tiny-qwen"))
    opt = build_optimizer(model, lr=1e-3)
    decay, no_decay = opt.param_groups
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    # tied embedding/head counted once; every trainable parameter in exactly one group
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


# ---------------------------------------------------------------------------- recipes / overrides
def test_builtin_recipes_load_and_match_phonelm():
    assert {"tiny", "phonelm-0.5b", "phonelm-1.5b"} <= set(builtin_recipes())
    for name in ("phonelm-0.5b", "phonelm-1.5b"):
        r = load_recipe(name)
        assert r.model == name and r.seq_len == 2048 and (r.beta1, r.beta2, r.eps) == (0.9, 0.95, 1e-8)
        assert r.weight_decay == 0.1 and r.grad_clip == 1.0 and r.precision == "bf16"
        stable, decay = r.phases
        assert (stable.schedule, stable.warmup_steps, stable.lr, stable.min_lr) == ("cosine", 500, 4e-4, 4e-5)
        assert (decay.schedule, decay.lr, decay.min_lr) == ("linear", 4e-5, 2e-5)
        assert stable.tokens == 1_500_000_000_000 and decay.tokens == 20_000_000_000
    tiny = load_recipe("tiny")
    assert tiny.model == "pocket-9m" and tiny.data == "builtin"


def test_overrides_cover_top_level_phase_and_model_fields():
    r, ns = apply_overrides(load_recipe("tiny"), [
        "--max-steps", "30", "--seq_len", "64", "--compile", "true", "--out", "x",
        "--phases.stable.lr", "1e-3", "--phases.decay.mixture", "web=0.7,decay=0.3",
        "--model.num_layers", "3", "--model.hidden-size", "128"])
    assert (r.max_steps, r.seq_len, r.compile, ns.out) == (30, 64, True, "x")
    assert r.phases[0].lr == 1e-3 and r.phases[1].mixture == {"web": 0.7, "decay": 0.3}
    assert r.model_overrides == {"num_layers": 3, "hidden_size": 128}
    for argv, field in [(["--bogus-field", "1"], "bogus-field"), (["--phases.stable.lrr", "1"], "phases.stable.lrr"),
                        (["--phases.nope.lr", "1"], "phases.nope.lr"), (["--max-steps", "abc"], "max_steps"),
                        (["--model.num_layers", "2.5"], "model.num_layers"), (["--compile", "maybe"], "compile"),
                        (["--parallel", "zero3"], "parallel")]:
        with pytest.raises(UserError, match=field.replace(".", r"\.")):
            apply_overrides(load_recipe("tiny"), argv)


def test_bad_recipe_field_in_yaml_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="'learning_rate'"):
        recipe_from_dict({"learning_rate": 1e-3})
    with pytest.raises(UserError, match="phases.stable.warmup"):
        recipe_from_dict({"phases": [{"name": "stable", "steps": 3, "warmup": 10}]})
    with pytest.raises(UserError, match="'seq_len'"):
        recipe_from_dict({"seq_len": "long", "phases": [{"steps": 3}]})
    with pytest.raises(UserError, match="steps or tokens"):
        recipe_from_dict({"phases": [{"name": "stable"}]})


def test_cli_bad_field_exits_2_naming_it(run_cli, tmp_path):
    code, _, err = run_cli("pretrain", "tiny", "--out", tmp_path, "--no-such-field", "3")
    assert code == 2 and "no-such-field" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbatch_sise: 3\nphases: [{steps: 2}]\n")
    code, _, err = run_cli("pretrain", bad)
    assert code == 2 and "batch_sise" in err and len(err.strip().splitlines()) == 1


def test_max_steps_shrinks_phases_and_tokens_budget(data_dir):
    r = recipe_from_dict({"data": str(data_dir), "seq_len": 32, "batch_size": 8, "max_steps": 6,
                          "phases": [{"name": "stable", "tokens": 8 * 32 * 10, "warmup_steps": 5},
                                     {"name": "decay", "steps": 2, "schedule": "linear"}]})
    from pocketlm.data.prepare import read_manifest

    plans = plan_phases(r, read_manifest(data_dir))
    assert [p.steps for p in plans] == [5, 1] and plans[0].schedule.warmup_steps == 2
    assert plans[0].weights.keys() == {"web", "code"} and math.isclose(sum(plans[0].weights.values()), 1.0)


# ---------------------------------------------------------------------------- data sampler
def test_permute_is_a_bijection():
    for n in (1, 2, 7, 1000, 4097):
        out = permute(np.arange(n), n, key=3)
        assert sorted(out.tolist()) == list(range(n))
    assert not np.array_equal(permute(np.arange(1000), 1000, 1), permute(np.arange(1000), 1000, 2))


def _plans(data_dir):
    r = recipe_from_dict({"data": str(data_dir), "seq_len": 32, "batch_size": 8,
                          "phases": [{"name": "a", "steps": 3, "mixture": {"web": 1.0}},
                                     {"name": "b", "steps": 50, "mixture": {"web": 0.5, "code": 0.5}}]})
    from pocketlm.data.prepare import read_manifest

    return plan_phases(r, read_manifest(data_dir))


def test_batches_resume_exactly_and_ranks_split_the_global_batch(data_dir):
    plans = _plans(data_dir)
    one = PretrainBatches(data_dir, plans, 32, 8, 4, seed=1)
    first = [next(one)["input_ids"] for _ in range(2 * 10)]  # 10 steps, 2 micro-batches each
    state = one.state_dict()
    after = [next(one) for _ in range(2 * 40)]  # runs several passes over the small sources
    again = PretrainBatches(data_dir, plans, 32, 8, 4, seed=1)
    again.load_state_dict(json.loads(json.dumps(state)))  # plain data
    for a, b in zip(after, (next(again) for _ in range(2 * 40))):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(after[0]["labels"][:, :-1], after[0]["input_ids"][:, 1:])  # shifted targets
    # two ranks, micro 4, no accumulation: their rows concatenated = the 1-rank global batch
    r0 = PretrainBatches(data_dir, plans, 32, 8, 4, rank=0, world_size=2, seed=1)
    r1 = PretrainBatches(data_dir, plans, 32, 8, 4, rank=1, world_size=2, seed=1)
    for step in range(10):
        glob = torch.cat(first[2 * step:2 * step + 2])
        assert torch.equal(torch.cat([next(r0)["input_ids"], next(r1)["input_ids"]]), glob)
    # phase a draws only from web, so no code windows are consumed in its 3 steps
    fresh = PretrainBatches(data_dir, plans, 32, 8, 8, seed=1)
    for _ in range(3):
        next(fresh)
    assert fresh.cursors["code"] == 0 and fresh.cursors["web"] == 24


# ---------------------------------------------------------------------------- end to end
def _cli(*args, env_extra=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "pocketlm.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_gives_bit_identical_losses(data_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.json", data_dir)
    full, cut = tmp_path / "full", tmp_path / "cut"
    p = _cli("pretrain", recipe, "--out", full)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    # Same command, slowed down so it can be killed mid-run right after checkpoint 4 appears.
    p = _cli("pretrain", recipe, "--out", cut, env_extra={"POCKETLM_STEP_DELAY": "0.4"})
    deadline = time.time() + 90
    while not (cut / "checkpoints" / "step_00000004").is_dir():
        assert p.poll() is None and time.time() < deadline, p.communicate()[0]
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (cut / "final").exists() and (cut / "checkpoints" / "step_00000004" / "optimizer.pt").is_file()
    p = _cli("pretrain", recipe, "--out", cut)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert "resumed from step 4" in out
    want, got = read_losses(full), read_losses(cut)
    assert sorted(got) == list(range(1, 13)) and got == want  # exact float equality
    assert want[12] < want[1] - 0.3  # and it learns
    evals = [r for r in map(json.loads, (cut / "metrics.jsonl").read_text().splitlines()) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8, 12]
    # checkpoints: keep the last 2, no temp dirs left; final output + plot
    assert sorted(x.name for x in (cut / "checkpoints").iterdir()) == ["step_00000008", "step_00000012"]
    assert (cut / "loss.png").stat().st_size > 1000

    # the final checkpoint is a standard one: transformers loads it and agrees with our model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pocketlm.model.checkpoint import load_checkpoint

    hf = AutoModelForCausalLM.from_pretrained(str(cut / "final")).eval()
    tok = AutoTokenizer.from_pretrained(str(cut / "final"))
    ids = torch.tensor([tok.encode("the cat sat on a mat")])
    ours = load_checkpoint(cut / "final").eval()
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-4)
    a, b = load_checkpoint(full / "final").state_dict(), ours.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_pretrain_starts_from_pocketlm_init_output(data_dir, tmp_path, run_cli):
    from pocketlm.model.checkpoint import load_checkpoint
    from pocketlm.train.pretrain import run_pretrain

    code, _, err = run_cli("init", "tiny-relu", "--out", tmp_path / "init", "--seed", "7")
    assert code == 0, err
    init = load_checkpoint(tmp_path / "init")
    r = recipe_from_dict(json.loads(write_recipe(tmp_path / "r.json", data_dir, model=str(tmp_path / "init"),
                                                 max_steps=2, eval_every=0).read_text()))
    summary = run_pretrain(r, tmp_path / "run", print_fn=lambda s: None)
    assert summary["steps"] == 2 and (tmp_path / "run" / "final" / "tokenizer.json").is_file()
    final = load_checkpoint(tmp_path / "run" / "final")
    assert final.config.activation == "relu" and final.config.eos_token_id is not None
    w = "model.layers.0.mlp.up_proj.weight"
    delta = (final.state_dict()[w] - init.state_dict()[w]).abs().max()
    assert 0 < delta < 0.1  # trained from the init weights, not re-initialized
    with pytest.raises(UserError, match="trained weights"):
        run_pretrain(recipe_from_dict({**json.loads((tmp_path / "r.json").read_text()),
                                       "model_overrides": {"num_layers": 3}}), tmp_path / "run2")
