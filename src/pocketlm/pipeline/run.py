"""`pocketlm pipeline RECIPE --out DIR`: a budget to a phone-ready model and its report card.

`run_pipeline` reads top to bottom as the list of stage calls (nanochat's speedrun.sh); each stage is a
function of pocketlm.pipeline.stages that a user can also call alone. A stage whose output exists is
skipped, so a killed pipeline resumes at the stage it was in (the fine-tune and the search also resume
inside the stage). OUT/pipeline.json records each stage's status and seconds.

Recipes are data (assets/pipelines/*.yaml or a path): `cpu` (this machine, < 1 hour) and `gpu` (PhoneLM's
full path: search -> pretrain the winner -> instruct -> intent -> eval -> export -> bench -> report).
`--quick` swaps in the recipe's `quick:` sections: the same stages on tiny models in a few minutes.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from pocketlm.errors import UserError
from pocketlm.pipeline.stages import (base_stage, bench_stage, eval_stage, export_stage, finetune_stage,
                                      report_stage, search_stage)
from pocketlm.utils import atomic_write_json

STAGES = ("search", "base", "instruct", "finetune", "eval", "export", "bench", "report")


def builtin_pipelines() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in (resources.files("pocketlm") / "assets" / "pipelines").iterdir()
                  if p.name.endswith(".yaml"))


def load_pipeline(spec: str, quick: bool = False) -> dict[str, Any]:
    """A pipeline recipe by built-in name or YAML path; with quick, its `quick:` sections replace the rest."""
    path = Path(spec)
    if not path.is_file():
        if spec not in builtin_pipelines():
            raise UserError(f"unknown pipeline recipe '{spec}'; built in: {', '.join(builtin_pipelines())}, "
                            "or give a YAML file")
        path = Path(str(resources.files("pocketlm") / "assets" / "pipelines" / f"{spec}.yaml"))
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read pipeline recipe {path}: {e}") from None
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: a pipeline recipe is a mapping of stage sections")
    fast = recipe.pop("quick", None)
    if quick:
        if not fast:
            raise UserError(f"pipeline recipe '{spec}' has no quick: section, so --quick can't run it")
        recipe.update(fast)
    unknown = set(recipe) - set(STAGES) - {"name", "description"}
    if unknown:
        raise UserError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGES)}")
    for required in ("base", "finetune", "eval", "export", "bench"):
        if required not in recipe:
            raise UserError(f"{path}: the '{required}' section is missing")
    return recipe


class Runner:
    """Runs a stage unless its output exists, and keeps OUT/pipeline.json up to date."""

    def __init__(self, out: Path, recipe: dict, log: Callable[[str], None]):
        self.out, self.log = out, log
        self.state = {"recipe": recipe, "stages": {}}

    def __call__(self, name: str, done: Path | list[Path], fn: Callable, *args, **kwargs):
        marks = done if isinstance(done, list) else [done]
        if all(p.exists() for p in marks):
            self.log(f"== {name}: done already ({marks[0]}), skipped")
            self.state["stages"][name] = {"status": "skipped", "seconds": 0.0}
        else:
            self.log(f"== {name}")
            self.state["stages"][name] = {"status": "running", "seconds": None}
            atomic_write_json(self.out / "pipeline.json", self.state)
            t0 = time.perf_counter()
            fn(*args, **kwargs, log=self.log)
            self.state["stages"][name] = {"status": "done", "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(self.out / "pipeline.json", self.state)
        return done


def run_pipeline(spec: str, out: str | os.PathLike, quick: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    r = load_pipeline(spec, quick)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    stage = Runner(out, r, log)
    t0 = time.perf_counter()

    # 1. architecture search for this device (PhoneLM): the winner's config.json, pareto.png
    if "search" in r:
        stage("search", out / "search" / "summary.json", search_stage, out / "search", r["search"])
    # 2. the base: a real pre-trained model imported, or the search winner pre-trained
    base = stage("base", out / "base" / "config.json", base_stage, out / "base", r["base"],
                 search_dir=out / "search" if "search" in r else None).parent
    # 3. instruction tuning (GPU path)
    if "instruct" in r:
        base = stage("instruct", out / "instruct" / "final" / "config.json", finetune_stage, out / "instruct",
                     r["instruct"]["recipe"], base, r["instruct"].get("overrides")).parent
    # 4. intent fine-tune (DroidCall)
    model = stage("finetune", out / "finetune" / "final" / "config.json", finetune_stage, out / "finetune",
                  r["finetune"]["recipe"], base, r["finetune"].get("overrides")).parent
    # 5. capability eval of the fine-tuned checkpoint
    stage("eval", out / "eval" / "eval.json", eval_stage, model, out / "eval" / "eval.json",
          r["eval"]["tasks"], r["eval"].get("limit"))
    # 6. GGUF export for llama.cpp
    ggufs = [out / "export" / f"model-{q}.gguf" for q in r["export"]["quants"]]
    stage("export", ggufs, export_stage, model, out / "export", r["export"]["quants"],
          r["export"].get("output_quant"))
    # 7. capability of each GGUF as shipped: at 135M, 4-bit weights cost accuracy the checkpoint's eval can't show
    if r["eval"].get("exports", False):
        for g in ggufs:
            stage(f"eval {g.stem}", out / "eval" / f"{g.stem}.json", eval_stage, g, out / "eval" / f"{g.stem}.json",
                  r["eval"]["tasks"], r["eval"].get("limit"), model)
    # 8. on-device efficiency: TTFT, prefill / decode tok/s, peak memory per context length
    stage("bench", out / "bench" / "results.json", bench_stage, ggufs, out / "bench", r["bench"]["contexts"],
          r["bench"].get("decode_tokens", 32), r["bench"].get("repeats", 2))
    # 9. the report card
    stage("report", out / "report" / "report.md", report_stage, [out], out / "report")

    summary = {"recipe": r.get("name", spec), "quick": quick, "out": str(out),
               "stages": stage.state["stages"], "seconds": round(time.perf_counter() - t0, 1),
               "report": str(out / "report" / "report.md"), "model": str(model), "ggufs": [str(g) for g in ggufs]}
    atomic_write_json(out / "pipeline.json", {**stage.state, "summary": summary})
    return summary


def plan(spec: str, quick: bool = False) -> list[dict[str, Any]]:
    """The stages a recipe runs, in order, with their settings (--dry-run)."""
    r = load_pipeline(spec, quick)
    return [{"stage": s, "settings": r[s] if s != "report" else {}} for s in STAGES if s in r or s == "report"]


__all__ = ["builtin_pipelines", "load_pipeline", "plan", "run_pipeline"]
