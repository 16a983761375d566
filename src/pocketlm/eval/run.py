"""`pocketlm eval`: run tasks on one model, as a table and a JSON result (docs/json.md "eval --json")."""

from __future__ import annotations

import os
import time
from typing import Callable

from pocketlm import __version__
from pocketlm.errors import UserError
from pocketlm.eval.lm import open_model
from pocketlm.eval.tasks import get_tasks
from pocketlm.utils import atomic_write_json


def evaluate_model(model: str | os.PathLike, tasks: str | list[str], limit: int | None = None,
                   tokenizer: str | None = None, threads: int | None = None, out: str | os.PathLike | None = None,
                   docassist_data: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Every task on `model` (checkpoint dir or .gguf); written to `out` (JSON) when given.
    docassist_data: the gold eval.jsonl the docassist task scores against."""
    if limit is not None and limit <= 0:
        raise UserError(f"--limit must be positive, got {limit}")
    todo = get_tasks(tasks, {"docassist": {"data": docassist_data}})
    m = open_model(model, tokenizer=tokenizer, threads=threads)
    scores, seconds, primary = {}, {}, {}
    try:
        for task in todo:
            log(f"[eval] {m.label}: {task.name}" + (f" (first {limit})" if limit else ""))
            t0 = time.perf_counter()
            scores[task.name] = task.run(m, limit, log)
            seconds[task.name] = round(time.perf_counter() - t0, 1)
            primary[task.name] = {"metric": task.primary, "higher_is_better": task.higher_is_better}
    finally:
        m.close()
    result = {"model": str(model), "label": m.label, "kind": m.kind, "params": m.params, "limit": limit,
              "tasks": scores, "primary": primary, "seconds": seconds,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "pocketlm_version": __version__}
    if out is not None:
        atomic_write_json(out, result)
    return result


def format_table(result: dict) -> str:
    lines = [f"{result['label']} ({result['kind']}, {result['params'] / 1e6:.1f}M parameters)"
             + (f", first {result['limit']} samples per task" if result["limit"] else "")]
    head = f"{'task':<16} {'metric':<20} {'value':>10}"
    lines += [head, "-" * len(head)]
    for task, metrics in result["tasks"].items():
        main = result["primary"][task]["metric"]
        for i, (name, value) in enumerate(sorted(metrics.items(), key=lambda kv: (kv[0] != main, kv[0]))):
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"{task if i == 0 else '':<16} {name + (' *' if name == main else ''):<20} {shown:>10}")
    lines.append("* the task's headline metric (the report card plots it)")
    return "\n".join(lines)


__all__ = ["evaluate_model", "format_table"]
