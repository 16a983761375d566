"""Faults a user hits (issue 19): an unwritable output, a full disk, Ctrl-C / SIGTERM.

Every verb that writes fails with exit code 2 and ONE stderr line naming the path, no traceback; a full
disk or an interrupt leaves the previous complete output (or none) and no temp files. The verbs come from
the CLI's parsers (every sub-command with an output flag), so a verb added later is checked too: give it
valid inputs in WRITERS, or it runs with placeholder arguments and must still fail on its --out first
(`check_output(args.out)` first thing in the handler; see `pocketlm.utils`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pocketlm.cli import build_parser
from test_cli_flags import SMALL_SPACE, _bench_results, _llama_bench, all_long_flags
from test_pretrain import make_data_dir, read_losses, write_recipe

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FLAGS = ("--out", "--output", "--out-dir", "--output-dir", "--per-sample")


# ----------------------------------------------------------------------------- inputs and verbs

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small valid inputs for every writing verb, so each fails on its output and nothing else."""
    from pocketlm.data.tokenizer import train_tokenizer
    from pocketlm.intent import synthesize
    from pocketlm.intent.specs import write_droidcall
    from pocketlm.model.checkpoint import load_checkpoint, save_checkpoint
    from pocketlm.model.decoder import PocketLM
    from pocketlm.model.presets import get_preset
    from pocketlm.train.lora import apply_lora, save_adapter

    d = tmp_path_factory.mktemp("fault_inputs")
    text = d / "text.txt"
    text.write_text("\n".join(f"the cat number {i} sat on mat {i * 7}" for i in range(200)) + "\n")
    tok = train_tokenizer([str(text)], 300, d / "tok")
    ckpt = save_checkpoint(PocketLM.from_config(get_preset("tiny"), seed=0), d / "ckpt", tokenizer=tok)
    adapter = save_adapter(apply_lora(load_checkpoint(ckpt), r=2, alpha=4, targets="q,v"), d / "adapter",
                           base=str(ckpt))
    droidcall = d / "test.jsonl"
    write_droidcall(synthesize(3, seed=0), droidcall)
    chat = d / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    space = d / "space.yaml"
    space.write_text(SMALL_SPACE)
    docs = d / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The cat sat on the mat. " * 60)
    return SimpleNamespace(text=text, tok=tok, ckpt=ckpt, adapter=adapter, droidcall=droidcall, chat=chat, docs=docs,
                           space=space, bench=_bench_results(d / "results.json"),
                           llama_bench=_llama_bench(d / "llama_bench.json"))


# (verb, output flag) -> (is the output a directory, argv builder from the inputs and the output path)
WRITERS = {
    ("init", "--out"): (True, lambda i, o: ["init", "tiny", "--out", o]),
    ("import", "--out"): (True, lambda i, o: ["import", i.ckpt, "--out", o]),
    ("export", "--out"): (False, lambda i, o: ["export", i.ckpt, "--quant", "f32", "--out", o]),
    ("tokenizer train", "--out"): (True, lambda i, o: ["tokenizer", "train", "--input", i.text,
                                                       "--vocab-size", 300, "--out", o]),
    ("data prepare", "--out"): (True, lambda i, o: ["data", "prepare", "--tokenizer", i.tok,
                                                    "--input", f"web={i.text}", "--out", o]),
    ("data corpus", "--out"): (True, lambda i, o: ["data", "corpus", "--size-mb", 0.01, "--out", o]),
    ("pretrain", "--out"): (True, lambda i, o: ["pretrain", "tiny", "--out", o]),
    ("finetune", "--out"): (True, lambda i, o: ["finetune", "instruct-tiny", "--base", i.ckpt,
                                                "--data", i.chat, "--out", o]),
    ("finetune merge", "--out"): (True, lambda i, o: ["finetune", "merge", i.adapter, "--out", o]),
    ("bench", "--out"): (True, lambda i, o: ["bench", "tiny", "--backend", "torch", "--contexts", 8,
                                             "--decode-tokens", 2, "--repeats", 1, "--warmup", 0, "--out", o]),
    ("search", "--out"): (True, lambda i, o: ["search", "--budget", "1M", "--vocab-size", 512, "--space",
                                              i.space, "--backend", "torch", "--max-measure", 2, "--out", o]),
    ("latency fit", "--out"): (False, lambda i, o: ["latency", "fit", i.bench, "--out", o]),
    ("latency calibrate", "--out"): (False, lambda i, o: ["latency", "calibrate", i.llama_bench,
                                                          "--model-config", "smollm2-135m", "--out", o]),
    ("intent data", "--out"): (True, lambda i, o: ["intent", "data", "--train", 5, "--test", 2, "--out", o]),
    ("intent predict", "--out"): (False, lambda i, o: ["intent", "predict", i.ckpt, "--data", i.droidcall,
                                                       "--out", o]),
    ("intent eval", "--per-sample"): (False, lambda i, o: ["intent", "eval", "--gold", i.droidcall, "--pred",
                                                           i.droidcall, "--matcher", "lexical",
                                                           "--per-sample", o]),
    ("doc corpus", "--out"): (True, lambda i, o: ["doc", "corpus", "--count", 1, "--out", o]),
    ("doc data", "--out"): (True, lambda i, o: ["doc", "data", "--docs", i.docs, "--teacher-url",
                                                "http://127.0.0.1:9/v1", "--teacher-model", "m", "--out", o]),
    ("doc predict", "--out"): (False, lambda i, o: ["doc", "predict", i.ckpt, "--data", i.chat, "--out", o]),
    ("eval", "--out"): (False, lambda i, o: ["eval", i.ckpt, "--tasks", "perplexity", "--limit", 1, "--out", o]),
    ("report", "--out"): (True, lambda i, o: ["report", i.docs, "--out", o]),
    ("pipeline", "--out"): (True, lambda i, o: ["pipeline", "cpu", "--quick", "--out", o]),
}
# verbs whose parser the discovery can't walk (`finetune merge` parses the rest of the command line itself)
NOT_DISCOVERED = {("finetune merge", "--out")}


def _discovered() -> list[tuple[str, str]]:
    """(verb, flag) for every sub-command with an output flag, from the parsers themselves."""
    return sorted({(verb, flag) for verb, flag in all_long_flags() if flag in OUTPUT_FLAGS})


DISCOVERED = _discovered()
VERBS = sorted(set(DISCOVERED) | set(WRITERS))


def _subparser(verb: str) -> argparse.ArgumentParser | None:
    """The parser of `verb` ("latency fit"), or None for a form a verb parses itself (`intent predict`)."""
    parser = build_parser()
    for word in verb.split():
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return None
        parser = subs[0].choices[word]
    return parser


def _generic_argv(verb: str, flag: str, out: Path) -> list:
    """A verb no one listed in WRITERS: placeholder values (a preset name) for what it requires."""
    def value(action):
        if action.choices:
            return next(iter(action.choices))
        return "1" if action.type in (int, float) else "tiny"

    argv: list = verb.split()
    for action in getattr(_subparser(verb), "_actions", []):
        if not action.option_strings and action.nargs != argparse.PARSER:
            argv.append(value(action))
        elif action.required and flag not in action.option_strings:
            argv += [action.option_strings[0], value(action)]
    return [*argv, flag, out]


def _argv(verb: str, flag: str, inputs, base: Path) -> tuple[list, Path]:
    is_dir, build = WRITERS.get((verb, flag), (True, None))
    out = base / ("out" if is_dir else "out.file")
    return (build(inputs, out) if build else _generic_argv(verb, flag, out)), out


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert ": error: " in lines[0], err
    return lines[0]


# ----------------------------------------------------------------------------- unwritable --out

@pytest.fixture(scope="module")
def read_only_dir(tmp_path_factory):
    """A read-only file system (a tmpfs mounted ro) where this machine lets us mount one; as root, mode
    bits don't stop writes, so a read-only mount is the way to get EROFS."""
    d = tmp_path_factory.mktemp("ro")
    if not _mount(d, "ro,size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def _mount(d: Path, options: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)],
                          capture_output=True).returncode == 0


def test_a_verb_nobody_listed_gets_placeholder_arguments():
    assert _generic_argv("tokenizer train", "--out", Path("o")) == [
        "tokenizer", "train", "--input", "tiny", "--vocab-size", "1", "--out", Path("o")]
    assert _generic_argv("export", "--out", Path("o.gguf")) == ["export", "tiny", "--out", Path("o.gguf")]


def test_the_writing_verbs_are_all_known():
    """The discovery finds the verbs this file was written against; WRITERS names no verb that is gone."""
    found = set(DISCOVERED)
    assert {("export", "--out"), ("search", "--out"), ("intent predict", "--out"), ("pretrain", "--out"),
            ("data prepare", "--out"), ("intent eval", "--per-sample")} <= found
    assert not (set(WRITERS) - NOT_DISCOVERED) - found, "WRITERS lists verbs the CLI no longer has"


@pytest.mark.parametrize("where", ["under_a_file", "proc", "read_only"])
@pytest.mark.parametrize("verb, flag", VERBS, ids=[f"{v.replace(' ', '-')}{f}" for v, f in VERBS])
def test_unwritable_output_is_one_line_and_exit_2(run_cli, inputs, tmp_path, request, verb, flag, where):
    if where == "under_a_file":  # ENOTDIR: a parent of --out is a file
        (tmp_path / "blocker").write_text("")
        base = tmp_path / "blocker" / "sub"
    elif where == "proc":  # the issue's repro: a directory that cannot be created
        base = Path("/proc/pocketlm-nope")
    else:
        base = request.getfixturevalue("read_only_dir") / "sub"
    argv, out = _argv(verb, flag, inputs, base)
    t0 = time.perf_counter()
    code, _, err = run_cli(*argv)
    assert code == 2, err
    line = _one_error_line(err)
    assert str(out) in line, (f"`pocketlm {verb}` failed on something other than {flag}: give it valid "
                              f"inputs in WRITERS (tests/test_faults.py), and call check_output({flag}) first: "
                              f"{line}")
    assert time.perf_counter() - t0 < 30  # it fails before the work, not after
    assert not Path(out).exists()


def _cli(*args, preexec_fn=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "pocketlm.cli", *map(str, args)], env=env, text=True,
                          capture_output=True, preexec_fn=preexec_fn, timeout=timeout)


@pytest.mark.parametrize("argv", [
    ["search", "--budget", "0.5B", "--out", "/proc/nope"],
    ["export", "qwen2.5-0.5b", "--format", "gguf", "--quant", "q4_0", "--out", "/proc/nope/x.gguf"],
])
def test_issue_repros_in_a_real_process(argv):
    r = _cli(*argv, timeout=120)
    assert r.returncode == 2, r.stderr
    assert argv[-1] in _one_error_line(r.stderr)


def test_library_os_errors_are_recognised():
    """Errors a library wraps still carry their OSError: safetensors/tokenizers (Rust) spell it out,
    torch.save into a Python file chains it."""
    import errno

    from pocketlm.utils import os_error_message, os_error_of

    rust = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert os_error_of(rust).errno == errno.ENOSPC
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/x/y")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
    except RuntimeError as e:
        chained = e
    assert os_error_message(os_error_of(chained)) == "/x/y: Read-only file system"
    assert os_error_of(ValueError("a bug")) is None


def test_a_bug_still_shows_its_traceback(run_cli, monkeypatch):
    # only OS errors become one line; anything else is a bug and keeps its traceback
    from pocketlm.model import cli as model_cli

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(model_cli, "cmd_presets", broken)
    with pytest.raises(ValueError):
        run_cli("presets")


# ----------------------------------------------------------------------------- empty inputs

EMPTY_INPUTS = {  # name -> argv builder from (inputs, an empty file, an empty dir, an output path)
    "intent predict, empty --data": lambda i, f, d, o: ["intent", "predict", i.ckpt, "--data", f, "--out", o],
    "intent eval, empty --gold": lambda i, f, d, o: ["intent", "eval", "--gold", f, "--pred", f,
                                                     "--per-sample", o],
    "data prepare, empty file": lambda i, f, d, o: ["data", "prepare", "--tokenizer", i.tok, "--input", f"web={f}",
                                                    "--out", o],
    "data prepare, dir without documents": lambda i, f, d, o: ["data", "prepare", "--tokenizer", i.tok,
                                                               "--input", f"web={d}", "--out", o],
    "tokenizer train, empty file": lambda i, f, d, o: ["tokenizer", "train", "--input", f, "--vocab-size", 300,
                                                       "--out", o],
    "tokenizer train, dir without documents": lambda i, f, d, o: ["tokenizer", "train", "--input", d,
                                                                  "--vocab-size", 300, "--out", o],
    "finetune, empty --data": lambda i, f, d, o: ["finetune", "instruct-tiny", "--base", i.ckpt, "--data", f,
                                                  "--out", o],
}


@pytest.mark.parametrize("case", sorted(EMPTY_INPUTS))
def test_empty_input_is_one_line_and_exit_2(run_cli, inputs, tmp_path, case):
    empty_file, empty_dir, out = tmp_path / "empty.jsonl", tmp_path / "nothing", tmp_path / "out"
    empty_file.write_text("")
    empty_dir.mkdir()
    (empty_dir / "notes.bin").write_bytes(b"")  # not a document format
    code, _, err = run_cli(*EMPTY_INPUTS[case](inputs, empty_file, empty_dir, out))
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert ": error: " in line and "Traceback" not in err, err
    assert not out.exists() or not any(out.glob("**/*.json*")), "an empty input wrote results"


# ----------------------------------------------------------------------------- full disk

LIMIT_BYTES = 4 << 20


@pytest.fixture
def small_disk(tmp_path):
    """(dir, preexec_fn): a 4 MB tmpfs where one can be mounted (a real ENOSPC), else a plain dir and a
    4 MB RLIMIT_FSIZE for the subprocess (EFBIG; Python ignores SIGXFSZ, so the write fails instead)."""
    d = tmp_path / "disk"
    d.mkdir()
    if _mount(d, f"size={LIMIT_BYTES}"):
        yield d, None
        subprocess.run(["umount", "-l", str(d)], check=False)
    else:
        yield d, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def _listing(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_disk_full_during_gguf_export_keeps_the_previous_file(small_disk):
    disk, limit = small_disk
    out = disk / "m.gguf"
    r = _cli("export", "tiny", "--quant", "f32", "--out", out)  # ~0.5 MB: fits
    assert r.returncode == 0, r.stderr
    before = _listing(disk)
    r = _cli("export", "pocket-9m", "--quant", "f32", "--json", "--out", out, preexec_fn=limit)  # ~35 MB
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert str(out) in line and ("No space left" in line or "File too large" in line), line
    assert _listing(disk) == before  # the previous GGUF, byte for byte, and no temp file


def test_disk_full_during_a_checkpoint_save_keeps_the_previous_checkpoint(small_disk):
    disk, limit = small_disk
    out = disk / "ckpt"
    r = _cli("init", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    before = _listing(disk)
    r = _cli("init", "pocket-9m", "--out", out, preexec_fn=limit)  # a 35 MB model.safetensors
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert str(out) in line and ("No space left" in line or "File too large" in line), line
    assert _listing(disk) == before


@pytest.mark.slow  # three tiny pre-training runs
def test_disk_full_during_training_keeps_the_last_checkpoint_and_resume_stays_exact(tmp_path, small_disk):
    disk, limit = small_disk
    if limit is not None:
        pytest.skip("needs a small tmpfs: a file-size limit would fail the first checkpoint as well")
    data = make_data_dir(tmp_path / "data")
    recipe = write_recipe(tmp_path / "r.json", data)
    full = tmp_path / "full"
    assert _cli("pretrain", recipe, "--out", full).returncode == 0
    ckpt_bytes = sum(p.stat().st_size for p in (full / "checkpoints" / "step_00000012").iterdir())
    # room for one checkpoint, not two: the save at step 8 runs out of space
    subprocess.run(["mount", "-o", f"remount,size={int(ckpt_bytes * 1.6)}", str(disk)], check=True)
    cut = disk / "run"
    r = _cli("pretrain", recipe, "--out", cut)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"{cut / 'checkpoints' / 'step_00000008'}: No space left on device" in line, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step_00000004"]  # no temp dir
    # with space again, the same command resumes from step 4 and matches the uninterrupted run exactly
    roomy = tmp_path / "roomy"
    shutil.copytree(cut, roomy)
    r = _cli("pretrain", recipe, "--out", roomy)
    assert r.returncode == 0, r.stderr
    assert "resumed from step 4" in r.stdout + r.stderr
    assert read_losses(roomy) == read_losses(full)
    assert sorted(p.name for p in (roomy / "checkpoints").iterdir()) == ["step_00000008", "step_00000012"]


# ----------------------------------------------------------------------------- Ctrl-C and SIGTERM

@pytest.mark.slow  # a 0.5B export (~280 MB, ~10 s when not interrupted)
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_interrupted_gguf_export_leaves_no_file(tmp_path, sig, code, word):
    out = tmp_path / "x.gguf"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    # a test run from a background job inherits SIGINT ignored; the user's shell gives the CLI the default
    p = subprocess.Popen([sys.executable, "-m", "pocketlm.cli", "export", "qwen2.5-0.5b", "--quant", "q4_0",
                          "--out", str(out)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not any(t.stat().st_size > 20_000_000 for t in tmp_path.glob(".x.gguf.*.tmp")):
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(sig)  # mid-write: tens of MB of tensor data are on disk
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert err.strip().splitlines()[-1] == f"pocketlm export: {word}" and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []  # no file under the final name, no temp file


def test_interrupt_during_a_directory_swap_is_held_until_it_is_done(tmp_path, monkeypatch):
    """Ctrl-C between replace_dir's two renames would leave neither version: it waits for the swap."""
    from pocketlm.utils import atomic_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "v").write_text("old")
    real, renamed = os.replace, []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a terminal

    def replace_then_interrupt(src, dst):
        real(src, dst)
        renamed.append(dst)
        if len(renamed) == 1:  # the old version is set aside, the new one not yet in place
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "v").write_text("new")
            monkeypatch.setattr(os, "replace", replace_then_interrupt)
    monkeypatch.undo()
    signal.signal(signal.SIGINT, previous)
    assert len(renamed) == 2 and (out / "v").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("fault, code, words", [
    (KeyboardInterrupt(), 130, "pocketlm search: interrupted: 2 new measurements are saved in"),
    (OSError(28, "No space left on device", "/tmp/x.gguf"), 2,
     "pocketlm search: error: /tmp/x.gguf: No space left on device"),
])
def test_search_stopped_midway_says_so_in_one_line_and_caches_no_failure(run_cli, inputs, tmp_path, monkeypatch,
                                                                          fault, code, words):
    from pocketlm.search import search
    from test_search import fake_engine

    class Engine:  # two measurements, then the fault (Ctrl-C, or a full disk while exporting a GGUF)
        def __init__(self, settings):
            self.measure, self.calls = fake_engine(), 0

        def __call__(self, cfg, repeats, warmup):
            self.calls += 1
            if self.calls > 2:
                raise fault
            return self.measure(cfg, repeats, warmup)

        def prune(self, cfgs):
            pass

        def cleanup(self):
            pass

    monkeypatch.setattr(search, "EngineMeasurer", Engine)
    out = tmp_path / "s"
    got, _, err = run_cli("search", "--budget", "1M", "--vocab-size", 512, "--space", inputs.space, "--no-progress",
                          "--out", out)
    assert got == code and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(words), err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and not any("error" in r for r in records)  # a rerun measures the rest
