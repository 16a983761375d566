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
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pocketlm.errors import UserError
from pocketlm.train.recipe import RECIPES_DIR, OverrideParser as _OverrideParser
from pocketlm.train.recipe import check_value as _check_value, converter as _converter, field_types as _hints
from pocketlm.train.recipe import flag_names as _flag_names, parse_str as _parse_str, read_recipe_file
from pocketlm.train.recipe import snapshot_recipe


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
class Recipe:
    name: str = "custom"
    description: str = ""
    model: str = "pocket-9m"  # preset | config file (e.g. the search's winner) | checkpoint dir (`pocketlm init`)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields (--model.FIELD)
    data: str = "builtin"  # prepared data dir, or "builtin" (the offline corpus, prepared on first use)
    tokenizer: str | None = None  # tokenizer dir for the final checkpoint (default: the data's)
    seq_len: int = 256
    batch_size: int = 16  # global sequences per optimizer step (all ranks, all micro-batches)
    micro_batch_size: int | None = None  # sequences per rank per forward; None = batch_size / ranks
    max_steps: int | None = None  # cap: phases shrink proportionally to fit (quick runs)
    seed: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on GPUs that have it) | bf16 | fp32
    save_dtype: str = "float32"  # dtype of the final checkpoint
    compile: bool = False
    parallel: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard) under torchrun
    device: str = "auto"  # auto | cpu | cuda
    eval_every: int = 100  # steps (0: only at the end)
    eval_batches: int = 2  # global batches of held-out (val) windows per eval
    save_every: int = 100  # steps (0: only at the end)
    keep_last: int = 2
    log_every: int = 1
    tensorboard: bool = False
    phases: list = field(default_factory=lambda: [Phase()])


def _parse_mixture(path: str, value: Any) -> Any:
    if value == "natural":
        return value
    if isinstance(value, str):  # CLI form: web=0.7,code=0.3
        out = {}
        for part in value.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise UserError(f"recipe field '{path}' expects 'natural' or SOURCE=WEIGHT[,...], got {value!r}")
            out[k.strip()] = _parse_str(f"{path}.{k.strip()}", v, float)
        return out
    if not isinstance(value, dict) or not value:
        raise UserError(f"recipe field '{path}' must be 'natural' or a mapping of source to weight")
    return {str(k): _check_value(f"{path}.{k}", v, float) for k, v in value.items()}


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    hints = _hints(Recipe)
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown recipe field '{unknown[0]}' in {where} (known: {', '.join(sorted(known))})")
    kw: dict[str, Any] = {}
    for k, v in data.items():
        if k == "phases":
            kw[k] = _phases_from_list(v, where)
        elif k == "model_overrides":
            kw[k] = _model_overrides(v or {})
        else:
            kw[k] = _check_value(k, v, hints[k])
    recipe = Recipe(**kw)
    validate_recipe(recipe)
    return recipe


def _phases_from_list(items: Any, where: str) -> list[Phase]:
    if not isinstance(items, list) or not items:
        raise UserError(f"recipe field 'phases' in {where} must be a non-empty list of phases")
    hints, known = _hints(Phase), {f.name for f in fields(Phase)}
    phases = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserError(f"recipe field 'phases[{i}]' must be a mapping")
        name = item.get("name", f"phase{i}")
        bad = sorted(set(item) - known)
        if bad:
            raise UserError(f"unknown recipe field 'phases.{name}.{bad[0]}' (known: {', '.join(sorted(known))})")
        kw = {k: (_parse_mixture(f"phases.{name}.{k}", v) if k == "mixture"
                  else _check_value(f"phases.{name}.{k}", v, hints[k])) for k, v in item.items()}
        phases.append(Phase(**kw))
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise UserError(f"phase names must be unique, got {names}")
    return phases


def _model_overrides(data: dict) -> dict:
    from pocketlm.model.config import ModelConfig

    if not isinstance(data, dict):
        raise UserError("recipe field 'model_overrides' must be a mapping of model config fields")
    hints = _hints(ModelConfig)
    out = {}
    for k, v in data.items():
        if k not in hints:
            raise UserError(f"unknown recipe field 'model.{k}' (model config fields: {', '.join(hints)})")
        out[k] = _check_value(f"model.{k}", v, hints[k])
    return out


def validate_recipe(r: Recipe) -> None:
    def positive(name: str, value: Any) -> None:
        if value is not None and value <= 0:
            raise UserError(f"recipe field '{name}' must be positive, got {value}")

    for name in ("seq_len", "batch_size", "micro_batch_size", "max_steps", "eps", "keep_last"):
        positive(name, getattr(r, name))
    for name in ("weight_decay", "grad_clip", "eval_every", "eval_batches", "save_every", "log_every"):
        if getattr(r, name) < 0:
            raise UserError(f"recipe field '{name}' must be >= 0, got {getattr(r, name)}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(r, name) < 1:
            raise UserError(f"recipe field '{name}' must be in [0, 1), got {getattr(r, name)}")
    choices = {"precision": ("auto", "bf16", "fp32"), "parallel": ("ddp", "fsdp"),
               "device": ("auto", "cpu", "cuda"), "save_dtype": ("float32", "bfloat16", "float16")}
    for name, allowed in choices.items():
        if getattr(r, name) not in allowed:
            raise UserError(f"recipe field '{name}' must be one of {', '.join(allowed)}, got {getattr(r, name)!r}")
    from pocketlm.train.trainer import SCHEDULES

    for p in r.phases:
        where = f"phases.{p.name}"
        if (p.steps is None) == (p.tokens is None):
            raise UserError(f"recipe field '{where}' needs exactly one of steps or tokens")
        positive(f"{where}.steps", p.steps)
        positive(f"{where}.tokens", p.tokens)
        if p.schedule not in SCHEDULES:
            raise UserError(f"recipe field '{where}.schedule' must be one of {', '.join(SCHEDULES)}, "
                            f"got {p.schedule!r}")
        positive(f"{where}.lr", p.lr)
        for name in ("min_lr", "warmup_steps", "start_lr"):
            if getattr(p, name) < 0:
                raise UserError(f"recipe field '{where}.{name}' must be >= 0")
        if not 0 <= p.decay_frac <= 1:
            raise UserError(f"recipe field '{where}.decay_frac' must be in [0, 1]")


def recipe_to_dict(r: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(r)


def load_recipe(spec: str) -> Recipe:
    """A recipe YAML/JSON path or the name of a built-in recipe."""
    path, data = read_recipe_file(spec)
    return recipe_from_dict(data, where=str(path))


# ---------------------------------------------------------------------------- CLI overrides
def override_parser(recipe: Recipe | None = None) -> argparse.ArgumentParser:
    """Flags generated from the dataclasses: top-level fields, phases.NAME.FIELD, model.FIELD."""
    from pocketlm.model.config import ModelConfig

    p = _OverrideParser(prog="pocketlm pretrain RECIPE", allow_abbrev=False, add_help=True,
                        description="Recipe fields you can override (values in the recipe shown as defaults).")
    p.add_argument("--out", help="output dir (default: runs/RECIPE_NAME); rerun with the same dir to resume")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and plan, then exit")
    top = p.add_argument_group("recipe fields")
    rhints = _hints(Recipe)
    for f in fields(Recipe):
        if f.name in ("phases", "model_overrides"):
            continue
        cur = getattr(recipe, f.name) if recipe is not None else f.default
        top.add_argument(*_flag_names(f.name), dest=f"r:{f.name}", default=argparse.SUPPRESS,
                         type=_converter(f.name, rhints[f.name]), metavar="V", help=f"(default: {cur})")
    if recipe is not None:
        ph = p.add_argument_group("phase fields (--phases.NAME.FIELD)")
        phints = _hints(Phase)
        for phase in recipe.phases:
            for f in fields(Phase):
                if f.name == "name":
                    continue
                path = f"phases.{phase.name}.{f.name}"
                conv = (lambda s, path=path: _parse_mixture(path, s)) if f.name == "mixture" \
                    else _converter(path, phints[f.name])
                ph.add_argument(*_flag_names(path), dest=f"p:{phase.name}:{f.name}", default=argparse.SUPPRESS,
                                type=conv, metavar="V", help=f"(default: {getattr(phase, f.name)})")
    mg = p.add_argument_group("model config fields (--model.FIELD; training from a config only)")
    mhints = _hints(ModelConfig)
    for name, tp in mhints.items():
        mg.add_argument(*_flag_names(f"model.{name}"), dest=f"m:{name}", default=argparse.SUPPRESS,
                        type=_converter(f"model.{name}", tp), metavar="V")
    return p


def apply_overrides(recipe: Recipe, argv: list[str]) -> tuple[Recipe, argparse.Namespace]:
    """Parse `--field value` overrides against the recipe; unknown fields are UserErrors naming them."""
    parser = override_parser(recipe)
    ns, extra = parser.parse_known_args(argv)
    if extra:
        flag = next((a for a in extra if a.startswith("-")), extra[0])
        if flag.startswith("--phases."):
            parts = flag[2:].split(".")
            names = ", ".join(ph.name for ph in recipe.phases)
            if len(parts) >= 2 and parts[1] not in [ph.name for ph in recipe.phases]:
                raise UserError(f"unknown recipe field '{flag[2:]}': no phase named {parts[1]!r} (phases: {names})")
        raise UserError(f"unknown recipe field '{flag.lstrip('-')}' (see `pocketlm pretrain {recipe.name} --help`)")
    data = recipe_to_dict(recipe)
    phases = {ph["name"]: ph for ph in data["phases"]}
    for key, value in vars(ns).items():
        kind, _, rest = key.partition(":")
        if kind == "r":
            data[rest] = value
        elif kind == "p":
            name, fname = rest.split(":")
            phases[name][fname] = value
        elif kind == "m":
            data["model_overrides"][rest] = value
    return recipe_from_dict(data, where="recipe with command-line overrides"), ns


# ============================================================================ plan
@dataclass
class PhasePlan:
    name: str
    steps: int
    weights: dict[str, float]
    schedule: Any  # training.Schedule


def plan_phases(recipe: Recipe, manifest: dict) -> list[PhasePlan]:
    """Resolve budgets (tokens → steps), mixtures (checked against the data) and schedules; apply max_steps."""
    from pocketlm.data.shards import load_mixture
    from pocketlm.train.trainer import Schedule

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
        from pocketlm.data.shards import ShardedTokens

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
        import torch

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
    import torch

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
    from pocketlm.data.corpus import ensure_default_dataset

    return Path(ensure_default_dataset())  # cached under $POCKETLM_CACHE (default ~/.cache/pocketlm)


def _build_model(recipe: Recipe, manifest: dict):
    from pocketlm.model.checkpoint import is_checkpoint_dir, load_checkpoint
    from pocketlm.model.presets import resolve_config
    from pocketlm.model.decoder import PocketLM

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
    import torch

    from pocketlm.model.checkpoint import parse_dtype, save_checkpoint
    from pocketlm.data.prepare import read_manifest
    from pocketlm.model.decoder import PocketLM
    from pocketlm.train.trainer import (
        Trainer, TrainerConfig, PhasedSchedule, build_optimizer, full_model_state_dict, init_distributed,
        measure_matmul_peak, plot_loss_curve, teardown_distributed, train_flops_per_token)

    say = print_fn or (lambda s: print(s, flush=True))
    dist_info = init_distributed(None if recipe.device == "auto" else recipe.device)
    try:
        out = Path(out_dir)
        data_dir = _resolve_data(recipe)
        manifest = read_manifest(data_dir)
        plans = plan_phases(recipe, manifest)
        total_steps = sum(p.steps for p in plans)
        world = dist_info.world_size
        micro = recipe.micro_batch_size or max(1, recipe.batch_size // world)
        if recipe.batch_size % (micro * world):
            raise UserError(f"batch_size {recipe.batch_size} must be a multiple of micro_batch_size ({micro}) "
                            f"x ranks ({world})")
        accum = recipe.batch_size // (micro * world)
        torch.manual_seed(recipe.seed)
        model = _build_model(recipe, manifest).to(dist_info.device)
        cfg = model.config
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            snapshot_recipe(out, recipe_to_dict(recipe), True)
        batches = PretrainBatches(data_dir, plans, recipe.seq_len, recipe.batch_size, micro,
                                  dist_info.rank, world, recipe.seed)
        sources = sorted({s for p in plans for s in p.weights})
        evals = eval_batch_fn(data_dir, sources, recipe.seq_len, recipe.eval_batches * recipe.batch_size,
                              micro, dist_info.rank, world)
        schedule = PhasedSchedule([(p.name, p.schedule) for p in plans])
        tcfg = TrainerConfig(max_steps=total_steps, grad_accum=accum, grad_clip=recipe.grad_clip or None,
                             precision=recipe.precision, compile=recipe.compile, eval_every=recipe.eval_every,
                             save_every=recipe.save_every, keep_last=recipe.keep_last,
                             log_every=recipe.log_every, seed=recipe.seed, tensorboard=recipe.tensorboard,
                             parallel=recipe.parallel)
        peak_dtype = torch.bfloat16 if (recipe.precision == "bf16" or (
            recipe.precision == "auto" and dist_info.device.type == "cuda")) else torch.float32
        peak = measure_matmul_peak(dist_info.device, peak_dtype, seconds=0.3)

        def make_opt(m):
            return build_optimizer(m, lr=plans[0].schedule(0), weight_decay=recipe.weight_decay,
                                   betas=(recipe.beta1, recipe.beta2), eps=recipe.eps)

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
            from pocketlm.train.trainer import read_metrics

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
            tmp = out / ".summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            os.replace(tmp, out / "summary.json")
            losses = f"loss {summary['first_loss']:.4f} → {summary['last_loss']:.4f}" if history else "no new steps"
            evl = f", eval {summary['eval_loss']:.4f}" if summary.get("eval_loss") is not None else ""
            say(f"done: {summary['steps']} steps, {losses}{evl}; final checkpoint {final}; loss curve {png}")
        return summary
    finally:
        teardown_distributed()


# ============================================================================ CLI
def register(sub) -> None:
    fields_txt = ", ".join(f"--{f.name.replace('_', '-')}" for f in fields(Recipe)
                           if f.name not in ("phases", "model_overrides"))
    p = sub.add_parser(
        "pretrain", help="pre-train a model from a recipe (phases, resume, torchrun DDP/FSDP2)",
        description="Pre-train from a recipe YAML or built-in recipe "
                    f"({', '.join(builtin_recipes())}). Rerun the same command to resume.",
        epilog=f"Overrides go after RECIPE. Recipe fields: {fields_txt}; phase fields: "
               "--phases.NAME.{steps,tokens,lr,min_lr,schedule,warmup_steps,decay_frac,start_lr,mixture}; "
               "model fields: --model.FIELD. `pocketlm pretrain RECIPE --help` lists them all with the "
               "recipe's values. Scale out: torchrun --nproc-per-node N -m pocketlm.cli pretrain RECIPE "
               "[--parallel fsdp].")
    p.add_argument("recipe", help="recipe YAML file or built-in recipe name")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--out DIR, --dry-run and --FIELD VALUE ...")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_pretrain(args) -> int:
    recipe = load_recipe(args.recipe)
    recipe, ns = apply_overrides(recipe, list(args.overrides or []))
    out = Path(ns.out) if ns.out else Path("runs") / recipe.name
    if ns.dry_run:
        from pocketlm.utils import print_json

        print_json({"out": str(out), "recipe": recipe_to_dict(recipe)})
        return 0
    run_pretrain(recipe, out)
    return 0


__all__ = ["Phase", "Recipe", "load_recipe", "recipe_from_dict", "apply_overrides", "override_parser",
           "plan_phases", "permute", "PretrainBatches", "eval_batch_fn", "run_pretrain", "builtin_recipes"]
