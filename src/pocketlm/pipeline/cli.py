"""`pocketlm pipeline RECIPE --out DIR [--quick] [--dry-run] [--json]`."""

from __future__ import annotations

from pocketlm.pipeline.run import builtin_pipelines, plan, run_pipeline
from pocketlm.utils import check_output, print_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline", help="one command for the whole chain: search, base, intent fine-tune, eval, export, bench, report",
        description="Run a pipeline recipe (built in: " + ", ".join(builtin_pipelines()) + "; or a YAML file) "
                    "into --out. A stage whose output exists is skipped: rerun the same command to resume.")
    p.add_argument("recipe", metavar="RECIPE", help="built-in pipeline name or YAML file")
    p.add_argument("--out", required=True, help="output directory (one subdirectory per stage)")
    p.add_argument("--quick", action="store_true", help="the same stages on tiny models (a few minutes)")
    p.add_argument("--dry-run", action="store_true", help="print the stages and their settings, run nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_pipeline)


def _cmd_pipeline(args) -> int:
    if args.dry_run:
        stages = plan(args.recipe, args.quick)
        if args.json:
            print_json(stages)
        else:
            for i, s in enumerate(stages, 1):
                print(f"{i}. {s['stage']}: {s['settings']}")
        return 0
    check_output(args.out, directory=True)
    summary = run_pipeline(args.recipe, args.out, quick=args.quick,
                           log=(lambda *a, **k: None) if args.json else print)
    if args.json:
        print_json(summary)
    else:
        print(f"pipeline done in {summary['seconds']:.0f}s; report card: {summary['report']}")
    return 0
