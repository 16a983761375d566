"""The things a search times: candidate shapes (one per engine shape) and the published presets near
the budget, as published and at the search's vocabulary."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import published_presets
from pocketlm.search.measure import engine_config
from pocketlm.search.settings import BASELINE_WINDOW, METRICS, SUBSTITUTE, SearchSettings
from pocketlm.search.space import Candidate


@dataclass
class Unit:
    """One thing to time: a candidate shape (with its same-timing twins) or a preset baseline."""

    name: str
    cfg: ModelConfig  # the config the user gets (e.g. relu)
    measured_cfg: ModelConfig  # what the engine runs (e.g. the silu twin on llama.cpp)
    role: str  # candidate | baseline
    variant: str = ""  # baselines: "published" | "search vocab"
    twins: list[str] = field(default_factory=list)  # other candidate names that time identically
    params: dict = field(default_factory=dict)
    screen: dict | None = None  # the screening record
    finals: list[dict] = field(default_factory=list)
    predicted: dict | None = None  # latency-model prediction made before it was measured

    @property
    def measured_as(self) -> str:
        return "native" if self.measured_cfg.activation == self.cfg.activation else SUBSTITUTE

    def final_metrics(self) -> dict | None:
        ok = [r for r in self.finals if not r.get("error")]
        if not ok:
            return None
        out = {m: statistics.median(r[m] for r in ok) for m in METRICS if all(m in r for r in ok)}
        out["rounds"] = len(ok)
        return out

    def best_metrics(self) -> dict | None:
        """Final (alternating) medians when available, else the screening measurement."""
        fm = self.final_metrics()
        if fm:
            return fm
        return self.screen if self.screen and not self.screen.get("error") else None


def candidate_units(cands: list[Candidate], backend: str) -> tuple[list[Unit], dict[str, int]]:
    """One unit per engine shape; a shape's native-activation candidate represents its twins."""
    by_shape: dict[str, list[tuple[Candidate, ModelConfig]]] = {}
    skipped: dict[str, int] = {}
    for c in cands:
        mcfg, problem = engine_config(c.cfg, backend)
        if mcfg is None:
            skipped[problem] = skipped.get(problem, 0) + 1
            continue
        by_shape.setdefault(mcfg.shape_key(), []).append((c, mcfg))
    units = []
    for group in by_shape.values():
        group.sort(key=lambda cm: cm[0].cfg.activation != cm[1].activation)  # native first
        c, mcfg = group[0]
        units.append(Unit(c.cfg.name, c.cfg, mcfg, "candidate", twins=[g[0].cfg.name for g in group[1:]],
                          params=c.params))
    return units, skipped


def baseline_units(settings: SearchSettings) -> list[Unit]:
    """Published presets within ±10% of the budget (same kind), as published and with the search's vocab."""
    cons = settings.constraints()
    units = []
    for p in published_presets():
        if not cons.within_budget(costs.param_groups(p), BASELINE_WINDOW):
            continue
        variants = [(p.name, p, "published")]
        if p.vocab_size != settings.vocab_size:
            v = p.replace(vocab_size=settings.vocab_size)
            variants.append((f"{p.name}@v{settings.vocab_size}", v, "search vocab"))
        for name, cfg, variant in variants:
            mcfg, problem = engine_config(cfg, settings.backend)
            if mcfg is None:
                continue
            units.append(Unit(name, cfg, mcfg, "baseline", variant=variant, params=costs.param_groups(cfg)))
    return units
