"""The pipeline's stages, one function each, usable on their own. Each writes its output atomically
(or last, as a completion marker), so "the output exists" means "the stage finished"; the runner
(pocketlm.pipeline.run) skips a stage whose output exists.

    search_stage(out, settings)            -> out/summary.json (+ config.json, pareto.png, report.md)
    base_stage(out, spec)                  -> out/ (a standard checkpoint: imported, pre-trained or tiny)
    finetune_stage(out, recipe, base, ...) -> out/final/
    eval_stage(model, out_file, tasks)     -> out_file (pocketlm eval's JSON)
    export_stage(model, out_dir, quants)   -> out_dir/model-QUANT.gguf
    bench_stage(ggufs, out_dir, ...)       -> out_dir/results.json (+ bench.png)
    report_stage(run_dirs, out_dir)        -> out_dir/report.md (+ PNGs)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from pocketlm.data.tokenizer import train_tokenizer
from pocketlm.errors import UserError
from pocketlm.eval.report import write_report
from pocketlm.eval.run import evaluate_model
from pocketlm.intent.prompt import format_answer
from pocketlm.intent.synth import synthesize
from pocketlm.model.checkpoint import load_tokenizer, save_checkpoint
from pocketlm.model.decoder import PocketLM
from pocketlm.model.importer import import_model
from pocketlm.model.presets import get_preset
from pocketlm.runtime.gguf import export_gguf
from pocketlm.search.search import run_search
from pocketlm.search.settings import SearchSettings
from pocketlm.search.space import parse_budget
from pocketlm.train import finetune, pretrain
from pocketlm.utils import atomic_write_text, temp_dir_beside

Log = Callable[[str], None]


def search_stage(out: str | os.PathLike, settings: dict[str, Any], log: Log = print) -> Path:
    """A (small) architecture search; `settings` are SearchSettings fields, `space` may be inline."""
    out = Path(out)
    settings = dict(settings)
    if isinstance(settings.get("space"), dict):
        settings["space"] = str(atomic_write_text(out / "space.yaml", yaml.safe_dump(settings["space"])))
    settings["budget"] = parse_budget(settings.get("budget", "0.5B"))
    run_search(SearchSettings(out=out, **settings), progress=False, log=log)
    return out / "summary.json"


def base_stage(out: str | os.PathLike, spec: dict[str, Any], search_dir: str | os.PathLike | None = None,
               log: Log = print) -> Path:
    """The base model as a standard checkpoint at `out`, from one of:
    {import: SRC} (pocketlm import), {pretrain: RECIPE, overrides} (the search winner pre-trained), or
    {tiny: {preset, vocab_size, ...}} (random weights and a small tokenizer trained on intent text: --quick)."""
    out = Path(out)
    if "import" in spec:
        log(f"[base] importing {spec['import']}")
        return import_model(str(spec["import"]), out)
    if "pretrain" in spec:
        data = pretrain.recipe_to_dict(pretrain.load_recipe(spec["pretrain"]))
        if search_dir is not None:
            data["model"] = str(Path(search_dir) / "config.json")
        data.update(spec.get("overrides") or {})
        summary = pretrain.run_pretrain(pretrain.recipe_from_dict(data), out.with_name(out.name + "-pretrain"),
                                        print_fn=log)
        os.replace(summary["final"], out)
        return out
    if "tiny" in spec:
        tiny = dict(spec["tiny"])
        work = temp_dir_beside(out)
        try:
            corpus = work / "intent.txt"
            corpus.write_text("\n".join(s.query + "\n" + format_answer(s.answers) for s in synthesize(300, seed=0)),
                              encoding="utf-8")
            tok = train_tokenizer([str(corpus)], int(tiny.pop("vocab_size", 400)), work / "tokenizer")
            cfg = get_preset(tiny.pop("preset", "tiny")).replace(vocab_size=len(load_tokenizer(tok)), **tiny)
            save_checkpoint(PocketLM.from_config(cfg, seed=0), out, tokenizer=tok)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"[base] tiny random base, {cfg.hidden_size}x{cfg.num_layers}, vocab {cfg.vocab_size}")
        return out
    raise UserError(f"pipeline recipe 'base' needs import:, pretrain: or tiny:, got {sorted(spec)}")


def finetune_stage(out: str | os.PathLike, recipe: str, base: str | os.PathLike,
                   overrides: dict[str, Any] | None = None, log: Log = print) -> Path:
    """`pocketlm finetune RECIPE --base BASE` into out (resumes from out/checkpoints after a kill)."""
    data = finetune.recipe_to_dict(finetune.load_recipe(recipe))
    data.update(overrides or {})
    data["base"] = str(base)
    finetune.run_finetune(finetune.recipe_from_dict(data), out, print_fn=log)
    return Path(out) / "final"


def eval_stage(model: str | os.PathLike, out_file: str | os.PathLike, tasks: list[str],
               limit: int | None = None, tokenizer: str | os.PathLike | None = None, log: Log = print) -> Path:
    """tokenizer: for a GGUF, the checkpoint it was exported from (its tokenizer and intent.json)."""
    evaluate_model(model, tasks, limit=limit, out=out_file, log=log,
                   tokenizer=None if tokenizer is None else str(tokenizer))
    return Path(out_file)


def export_stage(model: str | os.PathLike, out_dir: str | os.PathLike, quants: list[str],
                 output_quant: str | None = None, log: Log = print) -> list[Path]:
    """One GGUF per quant; output_quant keeps the vocabulary projection at that type (e.g. q8_0)."""
    files = []
    for q in quants:
        path = Path(out_dir) / f"model-{q}.gguf"
        if not path.is_file():  # each file is written atomically: a killed export keeps the finished ones
            export_gguf(model, path, quant=q, output_quant=output_quant)
            log(f"[export] {path} ({path.stat().st_size / 1e6:.1f} MB)")
        files.append(path)
    return files


def bench_stage(ggufs: list[str | os.PathLike], out_dir: str | os.PathLike, contexts: list[int],
                decode_tokens: int = 32, repeats: int = 2, log: Log = print) -> Path:
    """`pocketlm bench` in a process of its own: peak memory is per process, and a pipeline's process still
    holds what its fine-tune allocated (12.6 GB after intent-smollm2), which would be reported as the model's."""
    cmd = [sys.executable, "-m", "pocketlm.cli", "bench", *map(str, ggufs), "--backend", "llamacpp",
           "--contexts", ",".join(map(str, contexts)), "--decode-tokens", str(decode_tokens),
           "--repeats", str(repeats), "--out", str(out_dir)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise UserError(f"the bench stage failed (pocketlm bench exit {proc.returncode})")
    log(proc.stdout.rstrip())
    return Path(out_dir) / "results.json"


def report_stage(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, log: Log = print) -> Path:
    data = write_report(run_dirs, out_dir)
    log(f"[report] {data['files']['report']}")
    return Path(data["files"]["report"])


__all__ = ["base_stage", "bench_stage", "eval_stage", "export_stage", "finetune_stage", "report_stage",
           "search_stage"]
