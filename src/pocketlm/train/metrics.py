"""Training metrics: metrics.jsonl (+ optional TensorBoard) written by rank 0, read back, and the loss
curve plotted from it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pocketlm.errors import UserError
from pocketlm.utils import atomic_path, atomic_write_text


class MetricsLogger:
    """One JSON object per line in metrics.jsonl (+ TensorBoard scalars if asked); rank 0 only."""

    def __init__(self, out_dir: Path | None, enabled: bool, tensorboard: bool = False):
        self.enabled = enabled and out_dir is not None
        self.path = out_dir / "metrics.jsonl" if out_dir is not None else None
        self._tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("tensorboard logging needs the tensorboard package: pip install tensorboard") \
                    from None
            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines the killed run wrote past the checkpoint, so history is one run."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by the kill
            if rec.get("step", 0) <= step:
                keep.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    p = Path(path)
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def plot_loss_curve(metrics_path: str | os.PathLike, png_path: str | os.PathLike,
                    title: str = "loss") -> Path | None:
    """Train (and eval, if logged) loss vs step from metrics.jsonl; written atomically."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), lw=1, alpha=0.8, label="train")
    if evals:
        ax.plot(*zip(*evals), "o-", lw=1.5, label="eval (held-out)")
    prev = None
    for r in records:  # mark phase changes (stable → decay)
        if "phase" in r and prev is not None and r["phase"] != prev:
            ax.axvline(r["step"] - 0.5, color="gray", ls=":", lw=1)
            ax.text(r["step"], ax.get_ylim()[1], f" {r['phase']}", va="top", fontsize=8, color="gray")
        prev = r.get("phase", prev)
    ax.set_xlabel("step")
    ax.set_ylabel("cross entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    png = Path(png_path)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return png
