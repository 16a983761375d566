"""`pocketlm latency fit / predict / calibrate`: the latency model and device profiles on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.model import costs
from pocketlm.model.config import read_structured_file
from pocketlm.search.profiles import (DeviceProfile, builtin_profiles, calibrate, config_from_spec, fit_profile,
                                      parse_model_configs)
from pocketlm.utils import print_json


def register(sub) -> None:
    p = sub.add_parser("latency", help="fit, use and calibrate the analytic latency model",
                       description="Analytic latency model (fixed + per-layer + bytes/bandwidth + FLOPs/compute) "
                                   "fitted to `pocketlm bench` results or llama-bench output; predicts TTFT and "
                                   "decode speed of any config on a device profile.")
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION")

    f = lsub.add_parser("fit", help="fit a device profile to `pocketlm bench` results.json files")
    f.add_argument("results", nargs="+", help="results.json file(s) written by `pocketlm bench`")
    f.add_argument("--out", required=True, help="profile YAML to write")
    f.add_argument("--name", default=None, help="profile name (default: the output file's stem)")
    f.add_argument("--compute", type=float, default=None, help="peak compute in GFLOP/s to record in the profile")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fit)

    pr = lsub.add_parser("predict", help="predict TTFT / decode speed of configs on a device profile")
    pr.add_argument("models", nargs="+", metavar="CONFIG|PRESET|GGUF")
    pr.add_argument("--profile", required=True, help="profile YAML or built-in name (" +
                    ", ".join(builtin_profiles()) + ")")
    pr.add_argument("--quant", default="q4_0", help="precision (f32, f16, q8_0, q4_0; default q4_0)")
    pr.add_argument("--prompt-len", type=int, default=512)
    pr.add_argument("--decode-len", type=int, default=128)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    c = lsub.add_parser("calibrate", help="make a device profile from `llama-bench -o json` output")
    c.add_argument("llama_bench_json")
    c.add_argument("--model-config", action="append", default=None, metavar="SPEC",
                   help="config of the benchmarked model(s): a preset/config/GGUF for all records, "
                        "FILENAME=SPEC per model_filename, or a YAML/JSON mapping file; repeatable")
    c.add_argument("--base", default=None, help="profile (file or built-in name) whose bandwidth/compute to keep")
    c.add_argument("--quant", default=None, help="treat every record as this precision (e.g. for Q4_K models)")
    c.add_argument("--name", default=None)
    c.add_argument("--out", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_calibrate)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _load_results(paths: list[str]) -> tuple[list[dict], dict]:
    records, meta = [], {}
    for path in paths:
        data = read_structured_file(path)
        recs = data.get("records") if isinstance(data, dict) else data
        if not isinstance(recs, list):
            raise UserError(f"{path}: expected a `pocketlm bench` results.json with a 'records' list")
        records += recs
        if isinstance(data, dict) and not meta:
            meta = data
    return records, meta


def cmd_fit(args: argparse.Namespace) -> int:
    records, meta = _load_results(args.results)
    machine = meta.get("machine") or {}
    prof = fit_profile(records, args.name or Path(args.out).stem, bandwidth_gbs=meta.get("bandwidth_gbs"),
                       compute_gflops=args.compute or meta.get("compute_gflops"), threads=meta.get("threads"),
                       description=f"fitted to pocketlm bench on {machine.get('cpu', 'this machine')}",
                       sources=[str(Path(r).resolve()) for r in args.results])
    return _save_and_show_profile(prof, args)


def _save_and_show_profile(prof: DeviceProfile, args: argparse.Namespace) -> int:
    """Write a fitted/calibrated profile to --out and show its fit (or the profile as --json)."""
    prof.save(args.out)
    if args.json:
        print_json(prof.to_dict())
    else:
        for key, info in prof.fit.items():
            print(f"{key:<16} {info['kind']:<40} n={info['measurements']:<4} "
                  f"train MAPE {100 * info['train_mape']:.1f}%")
        print(f"wrote {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    prof = DeviceProfile.load(args.profile)
    model = prof.latency_model()
    rows = []
    for spec in args.models:
        cfg = config_from_spec(spec)
        r = model.predict(cfg, args.quant, args.prompt_len, args.decode_len)
        rows.append({"model": spec, "params": costs.param_groups(cfg)["total"], "quant": args.quant,
                     "prompt_len": args.prompt_len, "decode_len": args.decode_len, **r})
    rows.sort(key=lambda r: r["e2e_s"])
    if args.json:
        print_json({"profile": prof.name, "calibrated": bool(prof.coefficients or prof.measurements),
                    "predictions": rows})
        return 0
    kind = "fitted" if prof.coefficients else ("calibrated on listed measurements" if prof.measurements
                                               else "ROOFLINE BOUND (uncalibrated: optimistic)")
    print(f"device {prof.name} ({kind}), {args.quant}, prompt {args.prompt_len}, decode {args.decode_len} tokens")
    print(f"{'model':<24} {'params':>8} {'TTFT s':>8} {'prefill tok/s':>13} {'decode tok/s':>12} {'e2e s':>8}")
    for r in rows:
        print(f"{r['model']:<24} {r['params'] / 1e6:>7.1f}M {r['ttft_s']:>8.3f} {r['prefill_tok_s']:>13.1f} "
              f"{r['decode_tok_s']:>12.1f} {r['e2e_s']:>8.2f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    data = read_structured_file(args.llama_bench_json)
    configs = parse_model_configs(args.model_config, data)
    base = DeviceProfile.load(args.base) if args.base else None
    prof, notes = calibrate(data, configs, args.name or Path(args.out).stem, base=base, quant=args.quant)
    for n in notes:
        print(f"note: {n}")
    return _save_and_show_profile(prof, args)

