"""`pocketlm data prepare | corpus | info` and `pocketlm tokenizer train`: argparse and handlers."""

from __future__ import annotations

import sys
from pathlib import Path

from pocketlm.data.corpus import DEFAULT_SIZE_MB, write_corpus
from pocketlm.data.prepare import DEFAULT_SHARD_TOKENS, prepare
from pocketlm.data.shards import read_manifest
from pocketlm.data.sources import SourceSpec, load_spec_file, parse_hf_arg, parse_input_arg
from pocketlm.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer
from pocketlm.errors import UserError
from pocketlm.utils import check_output, print_json


def register(sub) -> None:
    _register_tokenizer(sub)
    _register_data(sub)


def _verb_group(sub, name: str, help: str, description: str):
    """A verb whose actions are sub-commands (``pocketlm NAME ACTION``); bare ``pocketlm NAME`` prints help."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    return p.add_subparsers(dest=f"{name}_command", metavar="ACTION")


# ----------------------------------------------------------------------------------------------
# pocketlm data prepare | corpus | info
# ----------------------------------------------------------------------------------------------

def _register_data(sub) -> None:
    dsub = _verb_group(sub, "data", help="prepare pre-training data (tokenized, packed shards)",
                       description="Prepare pre-training data: tokenized, packed, memory-mapped shards.")
    pp = dsub.add_parser("prepare", help="tokenize sources into shards + manifest.json",
                         description="Tokenize local txt/jsonl/parquet files and Hugging Face datasets "
                                     "into packed shards (documents joined by EOS). Resumable: rerun the "
                                     "same command to continue an interrupted run.")
    pp.add_argument("--tokenizer", required=True, help="tokenizer dir (pocketlm tokenizer train) or hub name")
    pp.add_argument("--out", required=True, help="output data dir")
    pp.add_argument("--input", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                    help="local source: files, dirs or globs (txt, jsonl with a 'text' field, parquet)")
    pp.add_argument("--hf-dataset", action="append", default=[], metavar="NAME=ID[:CONFIG][:SPLIT][:FIELD]",
                    help="Hugging Face dataset, streamed (a local data dir or a save_to_disk dir works too)")
    pp.add_argument("--spec", help="YAML/JSON file with a 'sources' mapping")
    pp.add_argument("--text-field", default=None, help="jsonl/parquet field holding the text (default: text)")
    pp.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    pp.add_argument("--val-fraction", type=float, default=0.01)
    pp.add_argument("--max-tokens-per-source", type=float, default=None, help="cap train tokens per source")
    pp.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    pp.add_argument("--json", action="store_true", help="print the manifest as JSON")
    pp.set_defaults(func=_cmd_prepare)

    pc = dsub.add_parser("corpus", help="write the built-in offline pre-training corpus as jsonl files",
                         description="Generate the built-in corpus (web/code/math/decay sources; no network).")
    pc.add_argument("--out", required=True)
    pc.add_argument("--size-mb", type=float, default=None, help="total size (default: the built-in default)")
    pc.add_argument("--seed", type=int, default=0)
    pc.set_defaults(func=_cmd_corpus)

    pi = dsub.add_parser("info", help="summarize a prepared data dir",
                         description="Token counts, shards and skipped records of a prepared data dir.")
    pi.add_argument("data_dir")
    pi.add_argument("--json", action="store_true")
    pi.set_defaults(func=_cmd_info)


def _cmd_prepare(args) -> int:
    check_output(args.out, directory=True)
    sources: list[SourceSpec] = []
    if args.spec:
        sources += load_spec_file(args.spec)
    sources += [parse_input_arg(a) for a in args.input]
    sources += [parse_hf_arg(a) for a in args.hf_dataset]
    if args.text_field:
        for s in sources:
            s.text_field = args.text_field
    if not sources:
        raise UserError("give at least one source: --input NAME=PATH, --hf-dataset NAME=ID or --spec FILE")
    cap = int(args.max_tokens_per_source) if args.max_tokens_per_source else None
    manifest = prepare(sources, args.tokenizer, args.out, workers=args.workers,
                       val_fraction=args.val_fraction, shard_tokens=args.shard_tokens,
                       max_tokens_per_source=cap)
    if args.json:
        print_json(manifest)
    else:
        _print_summary(manifest, args.out)
    return 0


def _print_summary(manifest: dict, data_dir) -> None:
    print(f"{data_dir}: dtype {manifest['dtype']}, vocab {manifest['vocab_size']}, eos {manifest['eos_id']}")
    print(f"{'source':<16}{'train tokens':>14}{'val tokens':>12}{'docs':>10}{'shards':>8}  skipped")
    for name, s in manifest["sources"].items():
        sk = ", ".join(f"{k}={v}" for k, v in s["skipped"].items() if v) or "-"
        print(f"{name:<16}{s['train_tokens']:>14,}{s['val_tokens']:>12,}{s['documents']:>10,}"
              f"{len(s['train']):>8}  {sk}")


def _cmd_corpus(args) -> int:
    check_output(args.out, directory=True)
    paths = write_corpus(args.out, size_mb=args.size_mb or DEFAULT_SIZE_MB, seed=args.seed)
    for name, p in paths.items():
        files = sorted(p.glob("*.jsonl"))
        print(f"{name}: {p} ({len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.2f} MB)")
    return 0


def _cmd_info(args) -> int:
    manifest = read_manifest(args.data_dir)
    if args.json:
        print_json(manifest)
    else:
        _print_summary(manifest, args.data_dir)
    return 0


# ----------------------------------------------------------------------------------------------
# pocketlm tokenizer train
# ----------------------------------------------------------------------------------------------

def _register_tokenizer(sub) -> None:
    tsub = _verb_group(sub, "tokenizer", help="train a byte-level BPE tokenizer",
                       description="Train a byte-level BPE tokenizer (Hugging Face format, ChatML template).")
    t = tsub.add_parser("train", help="train a tokenizer on text files",
                        description="Train a byte-level BPE tokenizer: digits split, special tokens "
                                    f"{', '.join(SPECIAL_TOKENS)}, ChatML chat template.")
    t.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="files, dirs or globs (txt, jsonl with a text field, parquet)")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True, help="output tokenizer dir")
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--text-field", default="text", help="jsonl/parquet field holding the text")
    t.add_argument("--space-tokens", action="store_true",
                   help="every space is a token of its own (words copied into quoted values keep their ids)")
    t.add_argument("--no-split-digits", dest="split_digits", action="store_false",
                   help="merge digit runs like words (\"2682\") instead of one token per digit")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    check_output(args.out, directory=True)
    out = train_tokenizer([Path(p) for p in args.input], args.vocab_size, args.out,
                          min_frequency=args.min_frequency, text_field=args.text_field, progress=sys.stderr.isatty(),
                          space_tokens=args.space_tokens, split_digits=args.split_digits)
    tok = load_tokenizer(out)
    info = {"out": str(out), "vocab_size": len(tok), "eos_token": tok.eos_token, "eos_id": tok.eos_token_id,
            "special_tokens": {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}}
    if args.json:
        print_json(info)
    else:
        print(f"saved tokenizer ({info['vocab_size']} tokens) to {out}")
    return 0
