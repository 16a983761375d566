"""`pocketlm pretrain`: PhoneLM-style phased pre-training from a recipe.

A recipe (YAML, or the name of a built-in one in ``pocketlm/recipes``) is the `Recipe` dataclass
below, and the dataclass IS the command line: every scalar field has a flag (``--max-steps 30``,
``--seq-len 128``), every phase field is ``--phases.NAME.FIELD`` (``--phases.stable.lr 1e-3``,
``--phases.decay.mixture web=0.5,decay=0.5``) and every model-config field is ``--model.FIELD``
(``--model.num_layers 4``; only when training from a config, not from trained weights).
Unknown fields and bad values are one-line errors naming the field (exit 2).

Phases run back to back (stable → decay), each with its own source mixture, step or token budget and
LR schedule, over one AdamW state. Batches are packed windows of ``seq_len + 1`` tokens drawn from
the prepared shards (`pocketlm data prepare`): for every optimizer step the global batch is chosen by
a counter-based RNG (the step's source draws) and per-source cursors into a keyed pseudo-random
permutation of that source's windows (a Feistel bijection: O(1) memory at any corpus size). The data
position is therefore just ``(step, cursor per source)``: resume is exact, and the same global batch
comes out for any number of ranks, each rank reading only its own slice.

Output directory: ``recipe.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/step_N`` (for resume:
running the same command again continues from the newest), ``final/`` (a standard pocketlm checkpoint
with the tokenizer, loadable by transformers) and ``loss.png``.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pocketlm.data.corpus import ensure_default_dataset
from pocketlm.data.shards import ShardedTokens, load_mixture, read_manifest
from pocketlm.errors import UserError
from pocketlm.model.checkpoint import is_checkpoint_dir, load_checkpoint, parse_dtype, save_checkpoint
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import PocketLM
from pocketlm.model.presets import resolve_config
from pocketlm.train.recipe import (RECIPES_DIR, TrainArgs, apply_overrides, check_value, converter, field_types,
                                   flag_names, override_parser, parse_str, read_recipe_file, snapshot_recipe,
                                   write_summary)
from pocketlm.train.distributed import full_model_state_dict, init_distributed, teardown_distributed
from pocketlm.train.metrics import plot_loss_curve, read_metrics
from pocketlm.train.trainer import (SCHEDULES, PhasedSchedule, Schedule, Trainer, measure_matmul_peak,
                                    train_flops_per_token)


# ============================================================================ recipe
@dataclass
class Phase:
    name: str = "stable"
    mixture: Any = "natural"  # {source: weight} or "natural" (weights ∝ train tokens, PhoneLM stage 1)
    steps: int | None = None  # budget in optimizer steps ...
    tokens: int | None = None  # ... or in tokens (rounded up to whole steps)
    schedule: str = "cosine"  # cosine | linear | wsd | constant
    lr: float = 4e-4  # peak (after warmup) / starting LR
    min_lr: float = 4e-5  # LR at the end of the phase
    warmup_steps: int = 0
    decay_frac: float = 0.2  # wsd only: share of the phase spent decaying
    start_lr: float = 0.0  # LR at the first warmup step


@dataclass
class Recipe(TrainArgs):
    model: str = "pocket-9m"  # preset | config file (e.g. the search's winner) | checkpoint dir (`pocketlm init`)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields (--model.FIELD)
    data: str = "builtin"  # prepared data dir, or "builtin" (the offline corpus, prepared on first use)
    tokenizer: str | None = None  # tokenizer dir for the final checkpoint (default: the data's)
    max_steps: int | None = None  # cap: phases shrink proportionally to fit (quick runs)
    eval_batches: int = 2  # global batches of held-out (val) windows per eval
    phases: list = field(default_factory=lambda: [Phase()])

    VERB: ClassVar[str] = "pretrain"
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = TrainArgs.NON_NEGATIVE + ("eval_batches",)

    @classmethod
    def convert_field(cls, name: str, value: Any, hint: Any, where: str) -> Any:
        if name == "phases":
            return _phases_from_list(value, where)
        if name == "model_overrides":
            return _model_overrides(value or {})
        return super().convert_field(name, value, hint, where)

    def validate(self) -> None:
        super().validate()
        for p in self.phases:
            _validate_phase(p)

    def add_nested_flags(self, parser: argparse.ArgumentParser) -> None:
        ph = parser.add_argument_group("phase fields (--phases.NAME.FIELD)")
        phints = field_types(Phase)
        for phase in self.phases:
            for f in fields(Phase):
                if f.name == "name":
                    continue
                path = f"phases.{phase.name}.{f.name}"
                conv = (lambda s, path=path: _parse_mixture(path, s)) if f.name == "mixture" \
                    else converter(path, phints[f.name])
                ph.add_argument(*flag_names(path), dest=f"p:{phase.name}:{f.name}", default=argparse.SUPPRESS,
                                type=conv, metavar="V", help=f"(default: {getattr(phase, f.name)})")
        mg = parser.add_argument_group("model config fields (--model.FIELD; training from a config only)")
        for name, tp in field_types(ModelConfig).items():
            mg.add_argument(*flag_names(f"model.{name}"), dest=f"m:{name}", default=argparse.SUPPRESS,
                            type=converter(f"model.{name}", tp), metavar="V")

    def apply_nested_flag(self, data: dict, kind: str, key: str, value: Any) -> None:
        if kind == "p":
            name, fname = key.split(":")
            next(ph for ph in data["phases"] if ph["name"] == name)[fname] = value
        elif kind == "m":
            data["model_overrides"][key] = value

    def unknown_flag_error(self, flag: str) -> UserError:
        parts = flag[2:].split(".")
        names = [ph.name for ph in self.phases]
        if flag.startswith("--phases.") and len(parts) >= 2 and parts[1] not in names:
            return UserError(f"unknown recipe field '{flag[2:]}': no phase named {parts[1]!r} "
                             f"(phases: {', '.join(names)})")
        return super().unknown_flag_error(flag)


def _parse_mixture(path: str, value: Any) -> Any:
    if value == "natural":
        return value
    if isinstance(value, str):  # CLI form: web=0.7,code=0.3
        out = {}
        for part in value.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise UserError(f"recipe field '{path}' expects 'natural' or SOURCE=WEIGHT[,...], got {value!r}")
            out[k.strip()] = parse_str(f"{path}.{k.strip()}", v, float)
        return out
    if not isinstance(value, dict) or not value:
        raise UserError(f"recipe field '{path}' must be 'natural' or a mapping of source to weight")
    return {str(k): check_value(f"{path}.{k}", v, float) for k, v in value.items()}


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> Recipe:
    return Recipe.from_dict(data, where)


def _phases_from_list(items: Any, where: str) -> list[Phase]:
    if not isinstance(items, list) or not items:
        raise UserError(f"recipe field 'phases' in {where} must be a non-empty list of phases")
    hints, known = field_types(Phase), {f.name for f in fields(Phase)}
    phases = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserError(f"recipe field 'phases[{i}]' must be a mapping")
        name = item.get("name", f"phase{i}")
        bad = sorted(set(item) - known)
        if bad:
            raise UserError(f"unknown recipe field 'phases.{name}.{bad[0]}' (known: {', '.join(sorted(known))})")
        kw = {k: (_parse_mixture(f"phases.{name}.{k}", v) if k == "mixture"
                  else check_value(f"phases.{name}.{k}", v, hints[k])) for k, v in item.items()}
        phases.append(Phase(**kw))
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise UserError(f"phase names must be unique, got {names}")
    return phases


def _model_overrides(data: dict) -> dict:
    if not isinstance(data, dict):
        raise UserError("recipe field 'model_overrides' must be a mapping of model config fields")
    hints = field_types(ModelConfig)
    out = {}
    for k, v in data.items():
        if k not in hints:
            raise UserError(f"unknown recipe field 'model.{k}' (model config fields: {', '.join(hints)})")
        out[k] = check_value(f"model.{k}", v, hints[k])
    return out


def _validate_phase(p: Phase) -> None:
    where = f"phases.{p.name}"
    if (p.steps is None) == (p.tokens is None):
        raise UserError(f"recipe field '{where}' needs exactly one of steps or tokens")
    for name in ("steps", "tokens", "lr"):
        if getattr(p, name) is not None and getattr(p, name) <= 0:
            raise UserError(f"recipe field '{where}.{name}' must be positive, got {getattr(p, name)}")
    if p.schedule not in SCHEDULES:
        raise UserError(f"recipe field '{where}.schedule' must be one of {', '.join(SCHEDULES)}, "
                        f"got {p.schedule!r}")
    for name in ("min_lr", "warmup_steps", "start_lr"):
        if getattr(p, name) < 0:
            raise UserError(f"recipe field '{where}.{name}' must be >= 0")
    if not 0 <= p.decay_frac <= 1:
        raise UserError(f"recipe field '{where}.decay_frac' must be in [0, 1]")


def recipe_to_dict(r: Recipe) -> dict[str, Any]:
    return r.to_dict()


def load_recipe(spec: str) -> Recipe:
    """A recipe YAML/JSON path or the name of a built-in recipe."""
    path, data = read_recipe_file(spec)
    return Recipe.from_dict(data, where=str(path))


# ============================================================================ plan
@dataclass
class PhasePlan:
    name: str
    steps: int
    weights: dict[str, float]
    schedule: Any  # training.Schedule


def plan_phases(recipe: Recipe, manifest: dict) -> list[PhasePlan]:
    """Resolve budgets (tokens → steps), mixtures (checked against the data) and schedules; apply max_steps."""
    tokens_per_step = recipe.batch_size * recipe.seq_len
    steps = [p.steps if p.steps is not None else math.ceil(p.tokens / tokens_per_step) for p in recipe.phases]
    warm = [p.warmup_steps for p in recipe.phases]
    total = sum(steps)
    if recipe.max_steps is not None and recipe.max_steps < total:
        if recipe.max_steps < len(steps):
            raise UserError(f"max_steps {recipe.max_steps} is smaller than the number of phases ({len(steps)})")
        # Shrink every phase (and its warmup) by the same factor: a short run keeps the recipe's shape.
        scale = recipe.max_steps / total
        new = [max(1, math.floor(s * scale)) for s in steps]
        i = 0
        while sum(new) < recipe.max_steps:  # hand out the rounding remainder, first phases first
            new[i % len(new)] += 1
            i += 1
        while sum(new) > recipe.max_steps:
            j = max(range(len(new)), key=lambda k: new[k])
            new[j] -= 1
        warm = [min(round(w * scale), s - 1) for w, s in zip(warm, new)]
        steps = new
    mixture = load_mixture({"phases": {p.name: p.mixture for p in recipe.phases}}, manifest)
    plans = []
    for p, n, w in zip(recipe.phases, steps, warm):
        sched = Schedule(kind=p.schedule, lr=p.lr, total_steps=n, warmup_steps=w, min_lr=p.min_lr,
                         decay_frac=p.decay_frac, start_lr=p.start_lr)
        plans.append(PhasePlan(p.name, n, mixture.weights(p.name), sched))
    return plans


# ============================================================================ data
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def permute(idx: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random bijection of [0, n) applied to `idx`: 4-round Feistel network on
    the next even bit width, cycle-walking values that land outside [0, n)."""
    bits = max(2, int(n - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    keys = [_mix64(np.array([key * 4 + r + 1], dtype=np.uint64))[0] for r in range(4)]
    out = np.asarray(idx, dtype=np.uint64).copy()
    todo = np.ones(out.shape, dtype=bool)
    while todo.any():
        x = out[todo]
        left, right = x >> half, x & mask
        for k in keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        out[todo] = (left << half) | right
        todo = out >= np.uint64(n)
    return out.astype(np.int64)


class SourceWindows:
    """One source's train split as windows of seq_len + 1 tokens (window i = tokens [i*T, i*T+T+1))."""

    def __init__(self, data_dir: str | os.PathLike, source: str, seq_len: int, split: str = "train"):
        self.tokens = ShardedTokens(data_dir, source, split)
        self.seq_len = seq_len
        self.n = max(0, (len(self.tokens) - 1) // seq_len)

    def window(self, i: int) -> np.ndarray:
        return self.tokens.get(i * self.seq_len, self.seq_len + 1)


class PretrainBatches:
    """Resumable micro-batch iterator over phased source mixtures for one rank.

    Step s draws the sources of its `batch_size` sequences with an RNG keyed by (seed, s), takes
    each source's next windows from its cursor into a keyed permutation (a new permutation per pass
    over the source), and this rank keeps rows [rank * B/world, (rank+1) * B/world), yielded as
    B/(world * micro) micro-batches. State = (step, micro index, cursors): exact on resume.
    """

    def __init__(self, data_dir: str | os.PathLike, plans: list[PhasePlan], seq_len: int, batch_size: int,
                 micro_batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if batch_size % world_size:
            raise UserError(f"batch_size {batch_size} is not divisible by the {world_size} ranks")
        per_rank = batch_size // world_size
        if per_rank % micro_batch_size:
            raise UserError(f"batch_size per rank ({per_rank}) is not divisible by micro_batch_size "
                            f"{micro_batch_size}")
        self.plans, self.seq_len, self.batch_size = plans, seq_len, batch_size
        self.micro, self.rank, self.world, self.seed = micro_batch_size, rank, world_size, seed
        self.accum = per_rank // micro_batch_size
        names = sorted({s for p in plans for s in p.weights})
        self.sources = {s: SourceWindows(data_dir, s, seq_len) for s in names}
        for s, sw in self.sources.items():
            if sw.n == 0:
                raise UserError(f"source {s!r} has fewer than seq_len + 1 = {seq_len + 1} train tokens")
        self.src_index = {s: i for i, s in enumerate(names)}
        self.step, self.micro_index = 0, 0
        self.cursors = {s: 0 for s in names}
        self._rows: list[np.ndarray] = []

    # the phase of a step: the last phase keeps going if a run is extended past the plan
    def _weights(self, step: int) -> dict[str, float]:
        for p in self.plans:
            if step < p.steps:
                return p.weights
            step -= p.steps
        return self.plans[-1].weights

    def _draw_step(self, step: int) -> list[tuple[str, int]]:
        """(source, window index) for every sequence of the step's global batch; advances cursors."""
        weights = self._weights(step)
        names = sorted(weights)
        probs = np.array([weights[n] for n in names])
        rng = np.random.default_rng([self.seed, 0x9E3779B9, step])
        picks = rng.choice(len(names), size=self.batch_size, p=probs / probs.sum())
        windows = np.zeros(self.batch_size, dtype=np.int64)
        for k, src in enumerate(names):
            rows = np.flatnonzero(picks == k)
            if not len(rows):
                continue
            sw, c = self.sources[src], self.cursors[src]
            epochs, pos = np.divmod(np.arange(c, c + len(rows)), sw.n)
            for e in np.unique(epochs):  # a fresh permutation on every pass over the source
                sel = epochs == e
                key = (self.seed * 1_000_003 + self.src_index[src]) * 1_000_003 + int(e)
                windows[rows[sel]] = permute(pos[sel], sw.n, key)
            self.cursors[src] = c + len(rows)
        return [(names[k], int(w)) for k, w in zip(picks, windows)]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.micro_index == 0:
            chosen = self._draw_step(self.step)
            per_rank = self.batch_size // self.world
            mine = chosen[self.rank * per_rank:(self.rank + 1) * per_rank]
            rows = np.stack([self.sources[s].window(i) for s, i in mine])
            self._rows = [rows[j * self.micro:(j + 1) * self.micro] for j in range(self.accum)]
        rows = torch.from_numpy(self._rows[self.micro_index])
        self.micro_index += 1
        if self.micro_index == self.accum:
            self.micro_index, self.step = 0, self.step + 1
        return {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}

    def state_dict(self) -> dict:
        if self.micro_index:
            raise RuntimeError("data state is only saved at optimizer-step boundaries")
        return {"step": self.step, "cursors": dict(self.cursors), "seed": self.seed,
                "batch_size": self.batch_size, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        for k in ("batch_size", "seq_len", "seed"):
            if state.get(k) != getattr(self, k):
                raise UserError(f"cannot resume: the checkpoint was made with {k}={state.get(k)}, "
                                f"the recipe now says {getattr(self, k)}")
        missing = set(self.cursors) - set(state["cursors"])
        if missing:
            raise UserError(f"cannot resume: sources {sorted(missing)} were not in the checkpointed mixture")
        self.step, self.micro_index = int(state["step"]), 0
        self.cursors = {s: int(state["cursors"][s]) for s in self.cursors}


def eval_batch_fn(data_dir: str | os.PathLike, sources: list[str], seq_len: int, num_sequences: int,
                  micro: int, rank: int, world: int):
    """Held-out windows: the first ones of every source's val split, round-robin over sources,
    split across ranks. Returns None when no source has val tokens."""
    vals = []
    for s in sources:
        try:
            sw = SourceWindows(data_dir, s, seq_len, split="val")
        except UserError:
            continue
        if sw.n:
            vals.append(sw)
    if not vals or num_sequences <= 0:
        return None
    picks: list[tuple[SourceWindows, int]] = []
    i = 0
    while len(picks) < num_sequences and i < max(v.n for v in vals):
        picks += [(v, i) for v in vals if i < v.n]
        i += 1
    # Every rank must run the same number of forwards (FSDP all-gathers in each): trim to a multiple.
    picks = picks[:min(num_sequences, len(picks) - len(picks) % world)]
    if not picks:
        return None
    mine = picks[rank::world]
    rows = np.stack([v.window(j) for v, j in mine]) if mine else np.zeros((0, seq_len + 1), np.int64)

    def batches():
        for j in range(0, len(rows), micro):
            chunk = torch.from_numpy(rows[j:j + micro])
            yield {"input_ids": chunk[:, :-1].contiguous(), "labels": chunk[:, 1:].contiguous()}

    return batches


# ============================================================================ run
def _resolve_data(recipe: Recipe) -> Path:
    if recipe.data != "builtin":
        p = Path(recipe.data).expanduser()
        if not p.is_dir():
            raise UserError(f"data dir not found: {p} (prepare one with `pocketlm data prepare`)")
        return p
    return Path(ensure_default_dataset())  # cached under $POCKETLM_CACHE (default ~/.cache/pocketlm)


def _build_model(recipe: Recipe, manifest: dict):
    spec = recipe.model
    has_weights = is_checkpoint_dir(spec) and any(
        (Path(spec) / f).exists() for f in ("model.safetensors", "model.safetensors.index.json"))
    if has_weights:
        if recipe.model_overrides:
            raise UserError(f"--model.* overrides need a config, but {spec} holds trained weights")
        model = load_checkpoint(spec)
        cfg = model.config
    else:
        cfg = resolve_config(spec)
        if recipe.model_overrides:
            d = cfg.to_dict()
            d.update(recipe.model_overrides)
            if "head_dim" not in recipe.model_overrides and {"hidden_size", "num_heads"} & set(recipe.model_overrides):
                d["head_dim"] = None  # derive it again from the new width / head count
            cfg = type(cfg).from_dict(d)
        model = None
    eos = manifest.get("eos_id")
    if manifest.get("vocab_size", 0) > cfg.vocab_size:
        raise UserError(f"the data's tokenizer has {manifest['vocab_size']} tokens but the model's vocab_size is "
                        f"{cfg.vocab_size}; use --model.vocab_size {manifest['vocab_size']} or another model")
    if recipe.seq_len > cfg.max_position_embeddings:
        raise UserError(f"seq_len {recipe.seq_len} exceeds the model's max_position_embeddings "
                        f"{cfg.max_position_embeddings}")
    if eos is not None and cfg.eos_token_id is None:
        cfg = cfg.replace(eos_token_id=int(eos), bos_token_id=cfg.bos_token_id if cfg.bos_token_id is not None
                          else int(eos))
    if model is None:
        model = PocketLM.from_config(cfg, seed=recipe.seed)
    else:
        model.config = cfg
    return model


def run_pretrain(recipe: Recipe, out_dir: str | os.PathLike, print_fn=None) -> dict[str, Any]:
    """Train (or resume) `recipe` into out_dir; returns a summary dict (rank 0's view)."""
    say = print_fn or (lambda s: print(s, flush=True))
    dist_info = init_distributed(None if recipe.device == "auto" else recipe.device)
    try:
        out = Path(out_dir)
        data_dir = _resolve_data(recipe)
        manifest = read_manifest(data_dir)
        plans = plan_phases(recipe, manifest)
        total_steps = sum(p.steps for p in plans)
        world = dist_info.world_size
        micro, accum = recipe.batch_split(world)
        torch.manual_seed(recipe.seed)
        model = _build_model(recipe, manifest).to(dist_info.device)
        cfg = model.config
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            snapshot_recipe(out, recipe.to_dict(), True)
        batches = PretrainBatches(data_dir, plans, recipe.seq_len, recipe.batch_size, micro,
                                  dist_info.rank, world, recipe.seed)
        sources = sorted({s for p in plans for s in p.weights})
        evals = eval_batch_fn(data_dir, sources, recipe.seq_len, recipe.eval_batches * recipe.batch_size,
                              micro, dist_info.rank, world)
        schedule = PhasedSchedule([(p.name, p.schedule) for p in plans])
        tcfg = recipe.trainer_config(total_steps, accum)
        peak_dtype = recipe.matmul_dtype(dist_info.device)
        peak = measure_matmul_peak(dist_info.device, peak_dtype, seconds=0.3)
        make_opt = recipe.optimizer_factory(lr=plans[0].schedule(0))
        trainer = Trainer(model, make_opt, schedule, batches, tcfg, out_dir=out, eval_batches=evals,
                          dist_info=dist_info, flops_per_token=train_flops_per_token(cfg, recipe.seq_len),
                          peak_flops=peak, log_extra=lambda step: {"phase": schedule.locate(step)[1]},
                          print_fn=say)
        if dist_info.is_main:
            phase_txt = ", ".join(f"{p.name} {p.steps} steps ({p.schedule.kind} {p.schedule.lr:.2e}→"
                                  f"{p.schedule.min_lr:.2e})" for p in plans)
            say(f"pretrain {recipe.name}: {cfg.name} {model.num_params() / 1e6:.2f}M params on "
                f"{dist_info.device.type} x{world} ({recipe.parallel if world > 1 else 'single'}), "
                f"batch {recipe.batch_size}x{recipe.seq_len} = {recipe.batch_size * recipe.seq_len:,} tok/step "
                f"(micro {micro}, accum {accum}); {phase_txt}; data {data_dir}; peak "
                f"{peak / 1e9:.1f} GFLOP/s ({str(peak_dtype).removeprefix('torch.')} matmul)")
        summary = trainer.fit()
        # Final output: a standard checkpoint with the tokenizer (full weights gathered to rank 0).
        state = full_model_state_dict(trainer.wrapped, dist_info)
        summary.update(out_dir=str(out), data=str(data_dir), params=model.num_params())
        if dist_info.is_main:
            history = read_metrics(out / "metrics.jsonl")  # whole run, across resumes
            if history:
                summary.update(first_loss=history[0]["loss"], last_loss=history[-1]["loss"])
            final_model = PocketLM.from_config(cfg, init=False)
            final_model.load_state_dict(state)
            tokenizer = recipe.tokenizer or manifest.get("tokenizer")
            final = save_checkpoint(final_model, out / "final", tokenizer=tokenizer,
                                    dtype=parse_dtype(recipe.save_dtype))
            png = plot_loss_curve(out / "metrics.jsonl", out / "loss.png", title=f"pretrain {recipe.name}")
            summary.update(final=str(final), plot=str(png) if png else None)
            write_summary(out, summary)
            losses = f"loss {summary['first_loss']:.4f} → {summary['last_loss']:.4f}" if history else "no new steps"
            evl = f", eval {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else ""
            say(f"done: {summary['steps']} steps, {losses}{evl}; final checkpoint {final}; loss curve {png}")
        return summary
    finally:
        teardown_distributed()


__all__ = ["Phase", "Recipe", "load_recipe", "recipe_from_dict", "apply_overrides", "override_parser",
           "plan_phases", "permute", "PretrainBatches", "eval_batch_fn", "run_pretrain", "builtin_recipes"]
