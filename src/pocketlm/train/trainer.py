"""Reusable training machinery: optimizer, LR schedules, the step loop, checkpoints, distributed setup.

`pocketlm pretrain` (pocketlm.train.pretrain) and `pocketlm finetune` (pocketlm.train.finetune) both drive a `Trainer`. A stage plugs in
three things and gets grad accumulation, clipping, bf16 autocast, eval, logging (stdout + JSONL +
optional TensorBoard), atomic keep-last-k checkpoints with exact resume and DDP/FSDP2 for free:

1. **a batch iterator**: an object with ``__next__`` returning one *micro-batch* for this rank, a
   dict ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T]}`` where ``labels[b, t]`` is the
   target for position t (already shifted; ``IGNORE_INDEX`` = -100 masks a position, e.g. the
   prompt tokens in SFT), plus ``state_dict()`` / ``load_state_dict(state)`` returning/accepting
   plain Python data (ints, floats, strings, lists, dicts) that pins its exact position. The
   trainer calls ``next()`` ``grad_accum`` times per optimizer step and checkpoints only at step
   boundaries. Each rank must yield its own disjoint slice of the global batch.
2. **a loss function** ``loss_fn(model, batch) -> Tensor``: the *sum* of per-token losses over the
   target tokens of the micro-batch (not the mean). The trainer counts the target tokens
   (``labels != -100``) of the whole step on all ranks first and divides by that, so grad
   accumulation and data parallelism give the exact global token-mean whatever the padding or
   masking. `causal_lm_loss` (default) is masked-label cross entropy and fits SFT as is.
3. **a model**: any ``nn.Module``. For a PEFT-wrapped model pass ``save_model_fn(model, dir)`` /
   ``load_model_fn(model, dir)`` to write/read only the adapters in trainer checkpoints (the
   defaults write the full state dict as ``model.safetensors``), and build the optimizer over the
   trainable parameters only (`build_optimizer` skips ``requires_grad=False`` parameters).

Minimal SFT sketch::

    model = load_checkpoint(base)                        # or a peft model
    opt = build_optimizer(model, lr=2e-5, weight_decay=0.0)
    sched = Schedule("cosine", lr=2e-5, total_steps=n, warmup_steps=20, min_lr=2e-6)
    trainer = Trainer(model, opt, sched, MySFTBatches(...), TrainerConfig(max_steps=n, grad_accum=4),
                      out_dir=run_dir, eval_batches=lambda: MySFTBatches(split="val"))
    trainer.fit()              # resumes by itself if run_dir/checkpoints holds a checkpoint
    trainer.model              # the trained (unwrapped) module

Schedules are pure functions of the optimizer step (`Schedule`, `PhasedSchedule`), so resuming needs
only the step number. Distributed runs: `init_distributed()` reads torchrun's environment;
`Trainer(..., parallel="ddp"|"fsdp")` wraps the model (FSDP2 ``fully_shard`` per decoder block, then
the root); checkpoints gather full state dicts with `torch.distributed.checkpoint.state_dict` so a
checkpoint written by N ranks resumes on M ranks and loads without torch.distributed.

Optimizer choice (PhoneLM, reference §1): AdamW (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices
(including the tied embedding/head, as Hugging Face's Trainer that PhoneLM used does), none on norm
weights and biases.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pocketlm.errors import UserError
from pocketlm.model.costs import flops_train_per_token
from pocketlm.train.distributed import (DistInfo, all_reduce_sum, barrier, full_model_state_dict,
                                        full_optimizer_state_dict, load_full_optimizer_state_dict,
                                        load_full_model_state_dict, wrap_model)
from pocketlm.train.metrics import MetricsLogger
from pocketlm.utils import os_error_at, replace_dir

IGNORE_INDEX = -100
CHECKPOINT_PREFIX = "step_"


# ============================================================================ batches and loss
class BatchIterator(Protocol):
    def __next__(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross entropy over target tokens (labels != -100); logits upcast to fp32."""
    logits = model(batch["input_ids"])
    labels = batch["labels"]
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def target_logits_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`causal_lm_loss` with logits computed only where labels != -100 (the model takes ``select``):
    the same sum up to float rounding, without the LM head's work at positions that carry no loss."""
    labels = batch["labels"]
    targets = labels != IGNORE_INDEX
    logits = model(batch["input_ids"], select=targets)
    return F.cross_entropy(logits.float(), labels[targets], reduction="sum")


LOSS_FUNCTIONS = {"all": causal_lm_loss, "targets": target_logits_loss}


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


# ============================================================================ optimizer
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay every >=2-D weight (matrices, embeddings); no decay on 1-D norm weights and biases."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with PhoneLM's defaults. `fused` defaults to True on CUDA (fastest), foreach elsewhere."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise UserError("the model has no trainable parameters")
    if fused is None:
        fused = next(iter(groups[0]["params"])).is_cuda
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


# ============================================================================ schedules
SCHEDULES = ("cosine", "linear", "wsd", "constant")


@dataclass
class Schedule:
    """Learning rate as a pure function of the step within [0, total_steps).

    cosine: warmup to `lr`, cosine to `min_lr` at the last step; linear: same with a straight line;
    wsd (warmup-stable-decay): warmup, hold `lr`, then linear to `min_lr` over the last
    `decay_frac` of the steps; constant: warmup then hold. `start_lr` is where warmup starts.
    """
    kind: str = "cosine"
    lr: float = 4e-4
    total_steps: int = 1000
    warmup_steps: int = 0
    min_lr: float = 0.0
    decay_frac: float = 0.2
    start_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise UserError(f"unknown schedule '{self.kind}'; choose one of {', '.join(SCHEDULES)}")
        if self.total_steps < 1:
            raise UserError(f"a schedule needs at least one step, got total_steps={self.total_steps}")
        if not 0 <= self.decay_frac <= 1:
            raise UserError(f"decay_frac must be in [0, 1], got {self.decay_frac}")

    def __call__(self, step: int) -> float:
        warm = min(self.warmup_steps, self.total_steps - 1)
        if step < warm:
            return self.start_lr + (self.lr - self.start_lr) * (step + 1) / (warm + 1)
        if self.kind == "constant":
            return self.lr
        span = max(self.total_steps - 1 - warm, 1)
        if self.kind == "wsd":
            decay_steps = max(round(self.decay_frac * self.total_steps), 1)
            decay_start = self.total_steps - decay_steps
            if step < decay_start:
                return self.lr
            warm, span = decay_start - 1, max(decay_steps, 1)
        frac = min(max((step - warm) / span, 0.0), 1.0)
        if self.kind == "cosine":
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
        return self.lr + (self.min_lr - self.lr) * frac  # linear and the tail of wsd


@dataclass
class PhasedSchedule:
    """Phases back to back (PhoneLM: stable cosine 4e-4→4e-5, then decay linear 4e-5→2e-5)."""
    phases: list[tuple[str, Schedule]]

    @property
    def total_steps(self) -> int:
        return sum(s.total_steps for _, s in self.phases)

    def locate(self, step: int) -> tuple[int, str, int]:
        """(phase index, phase name, step within the phase)."""
        for i, (name, sched) in enumerate(self.phases):
            if step < sched.total_steps or i == len(self.phases) - 1:
                return i, name, step
            step -= sched.total_steps
        raise AssertionError("unreachable")

    def __call__(self, step: int) -> float:
        i, _, local = self.locate(step)
        return self.phases[i][1](local)


# ============================================================================ throughput
def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        n: int | None = None, seconds: float = 0.5) -> float:
    """FLOP/s of a big square matmul on this device: the practical peak MFU is measured against."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == 0.0:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def train_flops_per_token(cfg: Any, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token (pocketlm.model.costs)."""
    return float(flops_train_per_token(cfg, seq_len))


# ============================================================================ RNG state
def rng_state() -> dict[str, Any]:
    # Plain lists/ints/tensors only, so torch.load(weights_only=True) reads it back.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ============================================================================ checkpoints
def list_checkpoints(ckpt_root: str | os.PathLike) -> list[Path]:
    """Complete trainer checkpoints, oldest first (temp dirs start with '.', so never listed)."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and (p / "trainer_state.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def _torch_save(obj: Any, path: Path) -> None:
    # through a Python file: a failed write (ENOSPC) then stays visible as the OSError behind torch's
    # RuntimeError, which the CLI reports as one line
    with open(path, "wb") as f:
        torch.save(obj, f)


def save_model_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """safetensors refuses aliased tensors (tied embeddings): store each storage once + an alias map."""
    from safetensors.torch import save_file

    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_ptr: dict[tuple[int, tuple, tuple], str] = {}
    for k, v in state.items():
        key = (v.data_ptr(), tuple(v.shape), tuple(v.stride()))
        if v.numel() and key in by_ptr:
            aliases[k] = by_ptr[key]
            continue
        by_ptr[key] = k
        unique[k] = v.detach().contiguous().cpu()
    save_file(unique, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})


def load_model_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    sd = load_file(str(path))
    for k, target in aliases.items():
        sd[k] = sd[target]
    return sd


def default_save_model(model: nn.Module, ckpt_dir: Path, dist_info: DistInfo) -> None:
    state = full_model_state_dict(model, dist_info)
    if dist_info.is_main:
        save_model_safetensors(state, ckpt_dir / "model.safetensors")


def default_load_model(model: nn.Module, ckpt_dir: Path, dist_info: DistInfo) -> None:
    sd = load_model_safetensors(ckpt_dir / "model.safetensors")
    load_full_model_state_dict(model, sd, dist_info)


# ============================================================================ trainer
@dataclass
class TrainerConfig:
    max_steps: int
    grad_accum: int = 1
    grad_clip: float | None = 1.0  # max global grad norm; None/0 disables
    precision: str = "auto"  # auto (bf16 autocast on CUDA with bf16), bf16, fp32
    compile: bool = False
    eval_every: int = 0  # steps; 0 = only at the end (if eval batches are given)
    save_every: int = 0  # steps; 0 = only at the end
    keep_last: int = 2
    log_every: int = 1
    seed: int = 0
    tensorboard: bool = False
    parallel: str = "ddp"


class Trainer:
    """Runs optimizer steps over a resumable batch iterator; see the module docstring."""

    def __init__(self, model: nn.Module,
                 optimizer: torch.optim.Optimizer | Callable[[nn.Module], torch.optim.Optimizer],
                 schedule: Callable[[int], float], batches: BatchIterator, config: TrainerConfig, *,
                 out_dir: str | os.PathLike | None = None,
                 loss_fn: Callable[[nn.Module, dict], torch.Tensor] = causal_lm_loss,
                 eval_batches: Callable[[], Iterable[dict]] | None = None,
                 dist_info: DistInfo | None = None,
                 flops_per_token: float | None = None, peak_flops: float | None = None,
                 save_model_fn: Callable[[nn.Module, Path, DistInfo], None] = default_save_model,
                 load_model_fn: Callable[[nn.Module, Path, DistInfo], None] = default_load_model,
                 log_extra: Callable[[int], dict[str, Any]] | None = None,
                 on_step_start: Callable[[int], None] | None = None,
                 print_fn: Callable[[str], None] | None = None):
        """`model` must already be on `dist_info.device` and NOT yet wrapped: the trainer compiles
        (optional) and wraps it for DDP/FSDP2; `self.model` stays the bare module.
        With FSDP the optimizer must be built after wrapping: pass a callable
        `optimizer(model) -> Optimizer` instead of an instance in that case (works for all modes)."""
        self.cfg = config
        self.dist = dist_info or DistInfo()
        self.model = model
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.ckpt_root = self.out_dir / "checkpoints" if self.out_dir is not None else None
        self.loss_fn, self.eval_batches = loss_fn, eval_batches
        self.schedule, self.batches = schedule, batches
        self.save_model_fn, self.load_model_fn = save_model_fn, load_model_fn
        self.log_extra = log_extra
        self.on_step_start = on_step_start  # called with the steps done, before each step (resume-safe)
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self._print = print_fn or (lambda s: print(s, flush=True))
        self.step = 0  # optimizer steps done
        self.tokens_seen = 0  # input tokens processed (all ranks)
        self.last_eval: float | None = None

        dev = self.dist.device
        want_bf16 = {"auto": dev.type == "cuda" and torch.cuda.is_bf16_supported(),
                     "bf16": True, "fp32": False}.get(config.precision)
        if want_bf16 is None:
            raise UserError(f"unknown precision '{config.precision}'; choose auto, bf16 or fp32")
        self.autocast_dtype = torch.bfloat16 if want_bf16 else None
        if config.compile:
            # nn.Module.compile keeps parameter names, so checkpoints look the same.
            for block in getattr(getattr(model, "model", None), "layers", []) or [model]:
                block.compile()
        fsdp_bf16 = self.autocast_dtype if config.parallel == "fsdp" else None
        self.wrapped = wrap_model(model, config.parallel, self.dist, param_dtype=fsdp_bf16)
        if config.parallel == "fsdp" and self.dist.enabled:
            self.autocast_dtype = None  # FSDP2's MixedPrecisionPolicy casts instead of autocast
        self.optimizer = optimizer(self.wrapped) if callable(optimizer) and not isinstance(
            optimizer, torch.optim.Optimizer) else optimizer
        self.metrics = MetricsLogger(self.out_dir, self.dist.is_main, config.tensorboard)

    # ------------------------------------------------------------------ one optimizer step
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nb = self.dist.device.type == "cuda"
        return {k: v.to(self.dist.device, non_blocking=nb) if torch.is_tensor(v) else v
                for k, v in batch.items()}

    def train_step(self) -> dict[str, Any]:
        """Run one optimizer step (grad_accum micro-batches); returns the step's metrics."""
        t0 = time.perf_counter()
        if self.on_step_start is not None:
            self.on_step_start(self.step)
        lr = float(self.schedule(self.step))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        micro = [next(self.batches) for _ in range(self.cfg.grad_accum)]
        local_targets = sum(count_targets(b) for b in micro)
        local_inputs = sum(int(b["input_ids"].numel()) for b in micro)
        global_targets, global_inputs = all_reduce_sum([local_targets, local_inputs], self.dist)
        if global_targets == 0:
            raise UserError(f"step {self.step + 1}: the batch has no target tokens (all labels masked)")
        # DDP/FSDP average gradients over ranks, so scale by world_size to get the global token mean.
        scale = self.dist.world_size / global_targets
        model = self.wrapped
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i, batch in enumerate(micro):
            batch = self._to_device(batch)
            sync_ctx = nullcontext()
            if self.dist.enabled and i < len(micro) - 1:
                if hasattr(model, "no_sync"):  # DDP: all-reduce only on the last micro-batch
                    sync_ctx = model.no_sync()
                elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
                    model.set_requires_gradient_sync(False)
            elif self.dist.enabled and hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(True)
            with sync_ctx:
                with self._autocast():
                    loss = self.loss_fn(model, batch)
                (loss * scale).backward()
            loss_sum += loss.detach().double().cpu()
        grad_norm = None
        if self.cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.grad_clip)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        (total_loss,) = all_reduce_sum([float(loss_sum)], self.dist)
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.step += 1
        self.tokens_seen += int(global_inputs)
        rec: dict[str, Any] = {"step": self.step, "loss": total_loss / global_targets, "lr": lr,
                               "tokens_per_s": global_inputs / dt, "step_time_s": dt,
                               "tokens": self.tokens_seen}
        if grad_norm is not None:
            rec["grad_norm"] = grad_norm
        if self.flops_per_token and self.peak_flops:
            # Peak is per device: the run's MFU compares against world_size devices.
            rec["mfu"] = global_inputs * self.flops_per_token / dt / (self.peak_flops * self.dist.world_size)
        if self.log_extra is not None:
            rec.update(self.log_extra(self.step - 1))
        return rec

    # ------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-mean loss over the eval batches (each rank its own share), or None without any."""
        if self.eval_batches is None:
            return None
        self.wrapped.eval()
        total, count = 0.0, 0
        try:
            for batch in self.eval_batches():
                batch = self._to_device(batch)
                with self._autocast():
                    total += float(self.loss_fn(self.wrapped, batch))
                count += count_targets(batch)
        finally:
            self.wrapped.train()
        total, count = all_reduce_sum([total, float(count)], self.dist)
        return total / count if count else None

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path | None:
        """Write checkpoints/step_N atomically (temp dir, then rename); keep the last k."""
        if self.ckpt_root is None:
            return None
        final = self.ckpt_root / f"{CHECKPOINT_PREFIX}{self.step:08d}"
        tmp = self.ckpt_root / f".tmp-{final.name}"
        if self.dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(self.dist)
        try:
            self.save_model_fn(self.wrapped, tmp, self.dist)  # collective under FSDP
            opt_state = full_optimizer_state_dict(self.wrapped, self.optimizer, self.dist)
            if self.dist.is_main:
                _torch_save(opt_state, tmp / "optimizer.pt")
                _torch_save({"step": self.step, "tokens_seen": self.tokens_seen, "last_eval": self.last_eval,
                             "data": self.batches.state_dict(), "rng": rng_state(),
                             "world_size": self.dist.world_size, "config": asdict(self.cfg)},
                            tmp / "trainer_state.pt")
                replace_dir(tmp, final)
        except BaseException as e:  # a full disk or Ctrl-C: the previous checkpoints stay, the partial one goes
            named = os_error_at(e, final)
            if self.dist.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            if named is not None:
                raise named from e
            raise
        if self.dist.is_main:
            for old in list_checkpoints(self.ckpt_root)[:-max(self.cfg.keep_last, 1)]:
                shutil.rmtree(old, ignore_errors=True)
        barrier(self.dist)
        return final

    def resume(self, ckpt_dir: str | os.PathLike | None = None) -> bool:
        """Load the newest checkpoint under out_dir/checkpoints (or `ckpt_dir`); False if none."""
        if ckpt_dir is None:
            found = list_checkpoints(self.ckpt_root) if self.ckpt_root is not None else []
            if not found:
                return False
            ckpt_dir = found[-1]
        ckpt = Path(ckpt_dir)
        try:
            state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
            opt_state = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - unpickling errors of a damaged file
            raise UserError(f"cannot read trainer checkpoint {ckpt}: {e}") from None
        self.load_model_fn(self.wrapped, ckpt, self.dist)
        load_full_optimizer_state_dict(self.wrapped, self.optimizer, opt_state, self.dist)
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.last_eval = state.get("last_eval")
        self.batches.load_state_dict(state["data"])
        # RNG streams are per process; a checkpoint from another world size still resumes (not bitwise).
        set_rng_state(state["rng"])
        self.metrics.truncate_after(self.step)
        return True

    # ------------------------------------------------------------------ loop
    def _format(self, rec: dict[str, Any]) -> str:
        parts = [f"step {rec['step']:>{len(str(self.cfg.max_steps))}}/{self.cfg.max_steps}",
                 f"loss {rec['loss']:.4f}", f"lr {rec['lr']:.2e}", f"{rec['tokens_per_s']:,.0f} tok/s"]
        if "mfu" in rec:
            parts.append(f"mfu {100 * rec['mfu']:.1f}%")
        if "grad_norm" in rec:
            parts.append(f"gnorm {rec['grad_norm']:.2f}")
        if "phase" in rec:
            parts.append(str(rec["phase"]))
        return " | ".join(parts)

    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train to max_steps (resuming first if a checkpoint exists); returns a summary."""
        if resume and self.resume():
            self.info(f"resumed from step {self.step} ({self.ckpt_root / f'{CHECKPOINT_PREFIX}{self.step:08d}'})")
        else:
            seed_everything(self.cfg.seed + self.dist.rank)
        self.wrapped.train()
        delay = float(os.environ.get("POCKETLM_STEP_DELAY", "0") or 0)  # test hook: slow steps down
        first_loss = last_loss = None
        rates: list[float] = []
        t_start = time.perf_counter()
        while self.step < self.cfg.max_steps:
            rec = self.train_step()
            first_loss = rec["loss"] if first_loss is None else first_loss
            last_loss = rec["loss"]
            rates.append(rec["tokens_per_s"])
            if not math.isfinite(rec["loss"]):
                raise RuntimeError(f"loss became {rec['loss']} at step {self.step}; lower the learning rate")
            ev = self.cfg.eval_every
            if self.eval_batches is not None and (
                    (ev and self.step % ev == 0) or self.step == self.cfg.max_steps):
                self.last_eval = self.evaluate()
                if self.last_eval is not None:
                    rec["eval_loss"] = self.last_eval
            if self.dist.is_main:
                self.metrics.log(rec)
                if self.cfg.log_every and (self.step % self.cfg.log_every == 0 or "eval_loss" in rec
                                           or self.step == 1):
                    line = self._format(rec)
                    if "eval_loss" in rec:
                        line += f" | eval {rec['eval_loss']:.4f}"
                    self._print(line)
            se = self.cfg.save_every
            if (se and self.step % se == 0) or self.step == self.cfg.max_steps:
                path = self.save()
                if path is not None:
                    self.info(f"checkpoint saved: {path}")
            if delay:
                time.sleep(delay)
        self.metrics.close()
        return {"steps": self.step, "first_loss": first_loss, "last_loss": last_loss,
                "eval_loss": self.last_eval, "tokens_seen": self.tokens_seen,
                "median_tokens_per_s": float(np.median(rates)) if rates else None,
                "elapsed_s": time.perf_counter() - t_start}

    def info(self, msg: str) -> None:
        if self.dist.is_main:
            self._print(msg)


__all__ = [
    "IGNORE_INDEX", "BatchIterator", "causal_lm_loss", "count_targets", "param_groups", "build_optimizer",
    "SCHEDULES", "Schedule", "PhasedSchedule", "measure_matmul_peak", "train_flops_per_token", "rng_state",
    "set_rng_state", "seed_everything", "list_checkpoints", "save_model_safetensors", "load_model_safetensors",
    "default_save_model", "default_load_model", "TrainerConfig", "Trainer",
]
