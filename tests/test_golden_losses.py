"""Refactors must not change training: the built-in `tiny` pre-training recipe (30 steps) and the
`instruct-tiny` SFT recipe (20 steps, on tests/data/chats.jsonl) reproduce the losses recorded in
tests/data/golden_losses.json before the code moved, bit for bit.

Floating-point kernels differ between CPU models, so the exact check applies on the CPU (and torch)
the losses were recorded on; elsewhere the losses must agree to 1e-4 relative. Re-record (only when
a change is *meant* to alter training) with: python tests/test_golden_losses.py --record
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pocketlm.runtime.hardware import cpu_name

HERE = Path(__file__).parent
GOLDEN = HERE / "data" / "golden_losses.json"
CHATS = HERE / "data" / "chats.jsonl"
PRETRAIN_STEPS, SFT_STEPS = 30, 20


def _machine() -> dict:
    import torch

    return {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def _cli(*args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "pocketlm.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in records if "loss" in r]


def run_recipes(root: Path) -> dict[str, list[float]]:
    pre, sft = root / "pretrain", root / "sft"
    _cli("pretrain", "tiny", "--max-steps", PRETRAIN_STEPS, "--log-every", 1, "--out", pre)
    _cli("finetune", "instruct-tiny", "--base", pre / "final", "--data", CHATS, "--max-steps", SFT_STEPS,
         "--log-every", 1, "--out", sft)
    return {"pretrain_tiny": _losses(pre), "instruct_tiny": _losses(sft)}


@pytest.mark.slow
def test_training_losses_match_the_recorded_golden_run(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    got = run_recipes(tmp_path)
    assert len(got["pretrain_tiny"]) == PRETRAIN_STEPS and len(got["instruct_tiny"]) == SFT_STEPS
    here = _machine()
    exact = here["cpu"] == golden["machine"]["cpu"] and here["torch"] == golden["machine"]["torch"]
    for name, losses in got.items():
        want = golden["losses"][name]
        if exact:
            assert losses == want, f"{name}: losses changed on the recording machine ({golden['machine']})"
        else:
            assert losses == pytest.approx(want, rel=1e-4), f"{name}: losses drifted beyond kernel noise"


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden_losses.py --record")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        losses = run_recipes(Path(d))
    GOLDEN.write_text(json.dumps({"machine": _machine(), "losses": losses}, indent=1) + "\n")
    print(f"recorded {GOLDEN}")
