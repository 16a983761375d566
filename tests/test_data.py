"""Data pipeline: formats, bad data, determinism across workers, resume, manifest, mixture, corpus."""

import gzip
import json
import os
import signal

import numpy as np
import pytest

import pocketlm.data.prepare as data
from pocketlm.cli import main
from pocketlm.data.corpus import DEFAULT_MIXTURE, ensure_default_dataset, generate_documents, write_corpus
from pocketlm.data.prepare import prepare
from pocketlm.data.shards import MixtureSpec, ShardedTokens, load_mixture, open_shards, read_manifest
from pocketlm.data.sources import SourceSpec, expand_paths, parse_hf_arg, plan_chunks
from pocketlm.data.tokenizer import load_tokenizer, train_tokenizer
from pocketlm.errors import UserError
from pocketlm.utils import sigterm_as_interrupt

DOCS = [f"Document {i}: the town of Elfenton had {i * 37} visitors on day {i}." for i in range(60)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(train_tokenizer(DOCS + ["def f(x):\n    return x\n"] * 5, 320,
                                          tmp_path_factory.mktemp("tok") / "tok"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small multi-file corpus: enough chunks and shards to exercise ordering and resume."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), size_mb=0.4, seed=1)


def _decode_docs(tok, data_dir, source, split="train"):
    arrays = open_shards(data_dir, source, split)
    ids = np.concatenate(arrays).tolist() if arrays else []
    return tok.decode(ids).split("<|endoftext|>")


def _check_manifest_counts(data_dir):
    m = read_manifest(data_dir)
    itemsize = np.dtype(m["dtype"]).itemsize
    for name, s in m["sources"].items():
        for split in ("train", "val"):
            sizes = [os.path.getsize(os.path.join(data_dir, p)) // itemsize for p in s[split]]
            assert sum(sizes) == s[f"{split}_tokens"], (name, split)
    return m


def test_prepare_local_formats(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text(DOCS[0])
    (d / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS[1:20]))
    with gzip.open(d / "c.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in DOCS[20:30]))
    pq.write_table(pa.table({"text": DOCS[30:60], "id": list(range(30))}), d / "d.parquet", row_group_size=7)
    m = prepare([SourceSpec("web", paths=[str(d)])], tok, tmp_path / "out", workers=1, val_fraction=0.0,
                progress=False)
    s = m["sources"]["web"]
    assert s["documents"] == 60 and s["val"] == [] and s["val_tokens"] == 0
    assert m["eos_id"] == 0 and m["dtype"] == "uint16" and m["vocab_size"] == len(tok)
    docs = _decode_docs(tok, tmp_path / "out", "web")
    assert docs[-1] == ""  # every document is followed by EOS
    assert docs[:-1] == DOCS  # files in sorted order, parquet row groups in order
    _check_manifest_counts(tmp_path / "out")
    # the data dir carries its tokenizer
    assert load_tokenizer(m["tokenizer"]).get_vocab() == tok.get_vocab()


def test_prepare_hf_streaming_local_dataset(tmp_path, tok, monkeypatch):
    """The Hugging Face streaming path, fed by datasets' local json loader (no hub here)."""
    d = tmp_path / "ds"
    d.mkdir()
    (d / "train.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in DOCS[:25])
                                   + json.dumps({"content": None}) + "\n" + json.dumps({"other": "x"}) + "\n")
    spec = parse_hf_arg(f"web=json::train:content")
    spec.data_files = [str(d / "train.jsonl")]
    m = prepare([spec], tok, tmp_path / "out", workers=1, val_fraction=0.0, chunk_bytes=300, progress=False)
    assert _decode_docs(tok, tmp_path / "out", "web")[:-1] == DOCS[:25]
    assert m["sources"]["web"]["skipped"]["empty"] + m["sources"]["web"]["skipped"]["missing_field"] == 2
    # a local dataset directory through the CLI syntax NAME=path[:config][:split][:field]
    m2 = prepare([parse_hf_arg(f"web={d}::train:content")], tok, tmp_path / "out2", workers=1,
                 val_fraction=0.0, progress=False)
    assert m2["sources"]["web"]["train_tokens"] == m["sources"]["web"]["train_tokens"]
    # resuming a stream skips the records already in published shards
    calls = {"n": 0}
    real = data._work_records

    def flaky(records):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("killed")
        return real(records)

    monkeypatch.setattr(data, "_work_records", flaky)
    kw = dict(workers=1, val_fraction=0.0, chunk_bytes=200, shard_tokens=100, progress=False)
    with pytest.raises(RuntimeError):
        prepare([spec], tok, tmp_path / "out3", **kw)
    done = json.loads((tmp_path / "out3" / "web" / ".progress.json").read_text())["records_done"]
    assert done > 0
    m3 = prepare([spec], tok, tmp_path / "out3", **kw)
    assert _decode_docs(tok, tmp_path / "out3", "web")[:-1] == DOCS[:25]
    assert m3["sources"]["web"]["documents"] == 25
    with pytest.raises(UserError, match="cannot load dataset"):
        prepare([SourceSpec("x", hf=str(tmp_path / "no-such-dataset"))], tok, tmp_path / "o3", progress=False)


def test_bad_data_is_skipped_and_counted(tmp_path, tok):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "good.txt").write_text(DOCS[0])
    (d / "empty.txt").write_text("")
    (d / "blank.txt").write_text("  \n\n")
    (d / "binary.txt").write_bytes(b"ELF\x00\x01\x02" * 10)
    (d / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (d / "mixed.jsonl").write_bytes(b'{"text": "fine line"}\n{broken\n\n[1, 2]\n{"text": "\xff\xfe"}\n'
                                    b'{"text": ""}\n{"title": "no text"}\n{"text": "another fine line"}\n')
    (d / "junk.parquet").write_bytes(b"not a parquet file")
    m = prepare([SourceSpec("web", paths=[str(d)])], tok, tmp_path / "out", workers=1, progress=False)
    s = m["sources"]["web"]
    assert s["skipped"] == {"invalid_utf8": 2, "empty": 3, "binary": 1, "malformed_jsonl": 1,
                            "missing_field": 2, "unreadable": 1}
    assert s["documents"] == 3
    docs = _decode_docs(tok, tmp_path / "out", "web") + _decode_docs(tok, tmp_path / "out", "web", "val")
    assert {"fine line", "another fine line", DOCS[0]} <= set(docs)


def test_pool_workers_take_sigterm_by_default_and_leave_ctrl_c_to_the_parent(tok):
    """`pool.terminate()` once hung on a worker that had inherited the CLI's Python SIGTERM handler."""
    init = (data._tokenizer_json(tok), 0, "uint16", 0.0, "text", False)
    with sigterm_as_interrupt():
        pool = data._make_pool(2, init)
        try:
            got = [pool.apply(signal.getsignal, (s,)) for s in (signal.SIGTERM, signal.SIGINT)]
        finally:
            pool.terminate()
            pool.join()
    assert got == [signal.SIG_DFL, signal.SIG_IGN]
    assert callable(signal.getsignal(signal.SIGINT))  # the parent's own Ctrl-C handling is untouched


def test_deterministic_across_worker_counts(tmp_path, tok, corpus):
    kw = dict(shard_tokens=20_000, chunk_bytes=40_000, val_fraction=0.05, progress=False)
    sources = [SourceSpec("web", paths=[str(corpus["web"])]), SourceSpec("code", paths=[str(corpus["code"])])]
    m1 = prepare(sources, tok, tmp_path / "w1", workers=1, **kw)
    m2 = prepare(sources, tok, tmp_path / "w2", workers=2, **kw)
    assert m1["sources"] == m2["sources"]
    assert len(m1["sources"]["web"]["train"]) > 2  # several shards, several chunks
    for s in m1["sources"].values():
        for rel in s["train"] + s["val"]:
            assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes()
    m = _check_manifest_counts(tmp_path / "w1")
    web = m["sources"]["web"]
    assert 0.04 < web["val_tokens"] / (web["train_tokens"] + web["val_tokens"]) < 0.1


def test_resume_after_interrupted_run(tmp_path, tok, corpus, monkeypatch):
    kw = dict(shard_tokens=20_000, chunk_bytes=15_000, workers=1, progress=False)
    sources = [SourceSpec("web", paths=[str(corpus["web"])])]
    ref = prepare(sources, tok, tmp_path / "ref", **kw)

    calls = {"n": 0, "fail_at": 9}
    real = data._work_files

    def flaky(chunk):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:  # die mid-run, as a SIGKILL would (shards so far are published)
            raise KeyboardInterrupt
        return real(chunk)

    monkeypatch.setattr(data, "_work_files", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(sources, tok, tmp_path / "out", **kw)
    assert not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(UserError, match="unfinished"):
        read_manifest(tmp_path / "out")
    progress = json.loads((tmp_path / "out" / "web" / ".progress.json").read_text())
    kept = {name: (tmp_path / "out" / "web" / name).stat().st_mtime_ns for name, _ in progress["train"]}
    assert kept and progress["chunks_done"] > 0
    (tmp_path / "out" / "web" / "train-00099.bin.tmp").write_bytes(b"partial")  # a killed writer's leftovers

    calls.update(n=0, fail_at=-1)  # no more failures; count the chunks the resumed run tokenizes
    m = prepare(sources, tok, tmp_path / "out", **kw)
    assert calls["n"] == len(plan_chunks(expand_paths([corpus["web"]]), 15_000)[0]) \
        - progress["chunks_done"]  # finished chunks were not redone
    for name, mtime in kept.items():
        assert (tmp_path / "out" / "web" / name).stat().st_mtime_ns == mtime  # kept, not rewritten
    assert not list((tmp_path / "out" / "web").glob("*.tmp"))
    assert m["sources"]["web"] == ref["sources"]["web"]
    for rel in m["sources"]["web"]["train"] + m["sources"]["web"]["val"]:
        assert (tmp_path / "out" / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes()
    # a finished run is not redone; changed settings redo the source
    calls["n"] = 0
    prepare(sources, tok, tmp_path / "out", **kw)
    assert calls["n"] == 0
    prepare(sources, tok, tmp_path / "out", **{**kw, "shard_tokens": 50_000})
    assert calls["n"] > 0


def test_max_tokens_and_sharded_reader(tmp_path, tok, corpus):
    m = prepare([SourceSpec("math", paths=[str(corpus["math"])])], tok, tmp_path / "out", workers=1,
                shard_tokens=5_000, chunk_bytes=10_000, max_tokens_per_source=12_345, progress=False)
    s = m["sources"]["math"]
    assert s["train_tokens"] == 12_345 and s["truncated"]
    st = ShardedTokens(tmp_path / "out", "math")
    flat = np.concatenate(open_shards(tmp_path / "out", "math"))
    assert len(st) == len(flat) == 12_345 and len(s["train"]) >= 2
    b = len(open_shards(tmp_path / "out", "math")[0])
    assert b >= 5_000  # shards roll over at chunk boundaries once full
    np.testing.assert_array_equal(st.get(b - 10, 30), flat[b - 10:b + 20])  # across a shard boundary
    with pytest.raises(IndexError):
        st.get(12_340, 10)


def test_mixture_spec(tmp_path, tok, corpus):
    m = prepare([SourceSpec(n, paths=[str(corpus[n])]) for n in ("web", "code")], tok, tmp_path / "out",
                workers=1, progress=False)
    mix = load_mixture({"phases": {"stable": {"web": 4, "code": 1}, "decay": "natural"}}, tmp_path / "out")
    assert mix.weights("stable") == pytest.approx({"web": 0.8, "code": 0.2})
    tt = {k: v["train_tokens"] for k, v in m["sources"].items()}
    assert mix.weights("decay") == pytest.approx({k: v / sum(tt.values()) for k, v in tt.items()})
    (tmp_path / "mix.yaml").write_text("stable:\n  web: 1\n")
    assert load_mixture(tmp_path / "mix.yaml").phases == {"stable": {"web": 1.0}}
    assert isinstance(load_mixture(mix), MixtureSpec)
    for bad, msg in [({"phases": {"stable": {"web": -1}}}, "stable.web"),
                     ({"phases": {"stable": {"nope": 1}}}, "stable.nope"),
                     ({"phases": {"stable": {"web": 0}}}, "sum to 0"),
                     ({"phases": {"stable": "natural"}}, None)]:
        if msg is None:
            with pytest.raises(UserError, match="manifest"):
                load_mixture(bad)
        else:
            with pytest.raises(UserError, match=msg):
                load_mixture(bad, m)
    with pytest.raises(UserError, match="no phase"):
        mix.weights("cooldown")


def test_cli_prepare_spec_and_errors(tmp_path, tok, corpus, capsys):
    tok.save_pretrained(str(tmp_path / "tok"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"sources:\n  code:\n    paths: [{corpus['code']}]\n    max_tokens: 1000\n")
    assert main(["data", "prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "out"),
                 "--spec", str(spec), "--input", f"math={corpus['math']}/*.jsonl", "--workers", "1",
                 "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m["sources"]) == {"code", "math"} and m["sources"]["code"]["train_tokens"] == 1000
    assert main(["data", "info", str(tmp_path / "out")]) == 0
    assert "math" in capsys.readouterr().out
    bad = [["--input", f"web={tmp_path}/missing"], [], ["--input", "noequals"],
           ["--input", f"web={tmp_path / 'tok'}/tokenizer_config.json", "--val-fraction", "1.5"]]
    for extra in bad:
        assert main(["data", "prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "o2")]
                    + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err
    # an --out holding the inputs themselves: refused, never deleted
    assert main(["data", "prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(corpus["web"].parent),
                 "--input", f"web={corpus['web']}"]) == 2
    assert "not written by" in capsys.readouterr().err and list(corpus["web"].glob("*.jsonl"))
    assert not (corpus["web"].parent / "tokenizer").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("")
    assert main(["data", "prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "o3"),
                 "--input", f"web={tmp_path / 'empty'}"]) == 2
    assert "no tokens" in capsys.readouterr().err


def test_corpus_is_deterministic_and_varied(tmp_path):
    a = list(generate_documents("decay", 60_000, seed=3))
    assert a == list(generate_documents("decay", 60_000, seed=3))
    assert a != list(generate_documents("decay", 60_000, seed=4))
    assert len(set(a)) > 0.95 * len(a)  # templated, but not repeated
    assert any("result0 = " in d for d in a) and any(d.startswith("System:") for d in a)
    words = set(" ".join(generate_documents("web", 200_000, seed=0)).split())
    assert len(words) > 1500
    math = " ".join(generate_documents("math", 50_000, seed=0))
    for line in math.split("\n"):  # the arithmetic is right
        parts = line.split(" ")
        if len(parts) == 5 and parts[1] in "+-*" and parts[3] == "=" and all(p.lstrip("-").isdigit()
                                                                              for p in parts[::2]):
            assert eval(" ".join(parts[:3])) == int(parts[4])
    out = write_corpus(tmp_path / "c", size_mb=0.1, seed=0)
    assert set(out) == set(DEFAULT_MIXTURE["phases"]["decay"])
    assert (out["web"] / "part-00000.jsonl").read_text().count("\n") > 10


def test_ensure_default_dataset_builds_once(tmp_path):
    d = ensure_default_dataset(tmp_path, vocab_size=512, size_mb=0.3)
    m = read_manifest(d)
    assert set(m["sources"]) == {"web", "code", "math", "decay"}
    assert all(s["train_tokens"] > 1000 and s["val_tokens"] > 0 for s in m["sources"].values())
    assert m["vocab_size"] <= 512
    load_mixture(DEFAULT_MIXTURE, m)
    mtime = (d / "manifest.json").stat().st_mtime_ns
    assert ensure_default_dataset(tmp_path, vocab_size=512, size_mb=0.3) == d
    assert (d / "manifest.json").stat().st_mtime_ns == mtime


def test_resume_after_sigkill(tmp_path, tok, corpus):
    """A prepare process killed with SIGKILL mid-run resumes to the same bytes as a clean run."""
    import signal
    import subprocess
    import sys
    import time

    tok.save_pretrained(str(tmp_path / "tok"))
    kw = "shard_tokens=10_000, chunk_bytes=8_000, workers=1, progress=False"
    script = f"""
import time, pocketlm.data.prepare as d
from pocketlm.data.sources import SourceSpec
real = d._work_files
def slow(chunk):
    time.sleep(0.1)
    return real(chunk)
d._work_files = slow
d.prepare([SourceSpec("web", paths=[{str(corpus['web'])!r}])], {str(tmp_path / 'tok')!r},
          {str(tmp_path / 'out')!r}, {kw})
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    progress = tmp_path / "out" / "web" / ".progress.json"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and len(json.loads(progress.read_text())["train"]) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = json.loads(progress.read_text())
    assert not kept["complete"] and not (tmp_path / "out" / "manifest.json").exists()
    m = prepare([SourceSpec("web", paths=[str(corpus["web"])])], tmp_path / "tok", tmp_path / "out",
                shard_tokens=10_000, chunk_bytes=8_000, workers=1, progress=False)
    ref = prepare([SourceSpec("web", paths=[str(corpus["web"])])], tmp_path / "tok", tmp_path / "ref",
                  shard_tokens=10_000, chunk_bytes=8_000, workers=1, progress=False)
    assert m["sources"]["web"]["train"][: len(kept["train"])] == [f"web/{n}" for n, _ in kept["train"]]
    assert m["sources"]["web"] == ref["sources"]["web"]
    for rel in m["sources"]["web"]["train"] + m["sources"]["web"]["val"]:
        assert (tmp_path / "out" / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes()


# The manifest schema documented in pocketlm.data.prepare: users script against these keys.
MANIFEST_KEYS = {"version", "tokenizer", "tokenizer_source", "dtype", "eos_id", "vocab_size", "seq_len_hint",
                 "val_fraction", "shard_tokens", "sources"}
SOURCE_KEYS = {"train", "val", "train_tokens", "val_tokens", "documents", "skipped", "files", "truncated"}


def _prepare_cli(capsys, tok_dir, out, *flags):
    """Run `pocketlm data prepare ... --json`; the manifest it prints, or None with the error line."""
    code = main(["data", "prepare", "--tokenizer", str(tok_dir), "--out", str(out), *map(str, flags), "--json"])
    captured = capsys.readouterr()
    if code != 0:  # progress lines may precede it; the error is one line, no traceback
        assert code == 2 and captured.err.splitlines()[-1].startswith("pocketlm data: error: "), captured.err
        assert "Traceback" not in captured.err
        return None
    return json.loads(captured.out)


def test_cli_prepare_flags_change_the_output(tmp_path, tok, capsys, monkeypatch):
    tok.save_pretrained(str(tmp_path / "tok"))
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in DOCS))
    big = tmp_path / "big"  # two files that don't fit one 1 MiB chunk: shards and workers can split them
    big.mkdir()
    for i in range(2):
        (big / f"p{i}.txt").write_text("\n".join(DOCS) * 150)
    src = f"web={d}"

    # --text-field: the jsonl's text is under "body"; without the flag every record lacks "text"
    assert _prepare_cli(capsys, tmp_path / "tok", tmp_path / "nofield", "--input", src) is None
    m = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "field", "--input", src, "--text-field", "body",
                     "--val-fraction", "0")
    assert set(m) == MANIFEST_KEYS and set(m["sources"]["web"]) == SOURCE_KEYS
    assert _decode_docs(tok, tmp_path / "field", "web")[:-1] == DOCS

    # --val-fraction: 0 leaves no validation split; 0.25 moves about a quarter of the same tokens there
    web0 = m["sources"]["web"]
    assert web0["val"] == [] and web0["val_tokens"] == 0 and m["val_fraction"] == 0
    m = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "val", "--input", src, "--text-field", "body",
                     "--val-fraction", "0.25")
    web = m["sources"]["web"]
    assert web["train_tokens"] + web["val_tokens"] == web0["train_tokens"]
    assert 0.2 < web["val_tokens"] / web0["train_tokens"] < 0.5 and m["val_fraction"] == 0.25
    val_docs = _decode_docs(tok, tmp_path / "val", "web", "val")
    assert val_docs[:-1] == DOCS[len(DOCS) - len(val_docs) + 1:]  # the tail, cut at a document start

    # --max-tokens-per-source: train tokens capped exactly, marked truncated
    m = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "cap", "--input", src, "--text-field", "body",
                     "--max-tokens-per-source", "100")
    assert m["sources"]["web"]["train_tokens"] == 100 and m["sources"]["web"]["truncated"]
    assert not web0["truncated"]

    # --shard-tokens: one shard by default; a tiny limit rolls over at every chunk
    n_chunks = len(plan_chunks(expand_paths([big]), data.DEFAULT_CHUNK_BYTES)[0])
    assert n_chunks == 2
    pools = []
    real_pool = data._make_pool
    monkeypatch.setattr(data, "_make_pool", lambda nproc, init: pools.append(nproc) or real_pool(nproc, init))
    one = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "one", "--input", f"big={big}", "--workers", "1")
    many = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "many", "--input", f"big={big}", "--workers", "1",
                        "--shard-tokens", "1")
    assert pools == []  # --workers 1: tokenized in this process
    assert len(one["sources"]["big"]["train"]) == 1 and one["shard_tokens"] == data.DEFAULT_SHARD_TOKENS
    assert len(many["sources"]["big"]["train"]) == n_chunks and many["shard_tokens"] == 1
    assert np.array_equal(np.concatenate(open_shards(tmp_path / "one", "big")),
                          np.concatenate(open_shards(tmp_path / "many", "big")))

    # --workers 2: a pool of two processes, byte-identical shards
    two = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "two", "--input", f"big={big}", "--workers", "2",
                       "--shard-tokens", "1")
    assert pools == [2]
    assert two["sources"] == many["sources"]
    for rel in many["sources"]["big"]["train"] + many["sources"]["big"]["val"]:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "many" / rel).read_bytes()
    assert _prepare_cli(capsys, tmp_path / "tok", tmp_path / "neg", "--input", src, "--workers", "-1") is None
    assert not (tmp_path / "neg").exists()  # refused before anything is written

    # data info: --json is the manifest key for key; the table names each source and its counts
    assert main(["data", "info", str(tmp_path / "many"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == read_manifest(tmp_path / "many")
    assert main(["data", "info", str(tmp_path / "many")]) == 0
    table = capsys.readouterr().out
    assert f"{many['sources']['big']['train_tokens']:,}" in table and "{" not in table
    assert main(["data", "info", str(d)]) == 2
    assert "not a prepared data dir" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path / "nofield")]) == 2  # the failed run above
    assert "unfinished" in capsys.readouterr().err


def test_cli_prepare_hf_dataset(tmp_path, tok, capsys):
    """--hf-dataset through the same loading code users hit, fed offline: a `save_to_disk` dir (one split
    and a DatasetDict) and a local parquet data dir."""
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    tok.save_pretrained(str(tmp_path / "tok"))
    datasets.Dataset.from_dict({"content": DOCS[:20]}).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"content": DOCS[:5]}),
                          "validation": datasets.Dataset.from_dict({"content": DOCS[40:50]})}
                         ).save_to_disk(str(tmp_path / "dict"))
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": DOCS[20:40]}), tmp_path / "pq" / "train.parquet")

    m = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "out",
                     "--hf-dataset", f"saved={tmp_path / 'saved'}::train:content",
                     "--hf-dataset", f"dict={tmp_path / 'dict'}::validation:content",
                     "--hf-dataset", f"pq={tmp_path / 'pq'}", "--val-fraction", "0")
    assert set(m["sources"]) == {"saved", "dict", "pq"}
    for name, docs in (("saved", DOCS[:20]), ("dict", DOCS[40:50]), ("pq", DOCS[20:40])):
        assert set(m["sources"][name]) == SOURCE_KEYS | {"hf"}
        assert _decode_docs(tok, tmp_path / "out", name)[:-1] == docs
        assert m["sources"][name]["documents"] == len(docs)
    assert m["sources"]["dict"]["hf"] == {"id": str(tmp_path / "dict"), "config": None, "split": "validation",
                                          "text_field": "content"}
    assert m["sources"]["pq"]["hf"]["text_field"] == "text" and m["sources"]["pq"]["hf"]["split"] == "train"
    # --text-field applies to Hugging Face sources too
    m2 = _prepare_cli(capsys, tmp_path / "tok", tmp_path / "out2", "--hf-dataset", f"saved={tmp_path / 'saved'}",
                      "--text-field", "content", "--val-fraction", "0")
    assert m2["sources"]["saved"]["train_tokens"] == m["sources"]["saved"]["train_tokens"]
    # a missing split or dataset is one line, exit 2
    assert _prepare_cli(capsys, tmp_path / "tok", tmp_path / "o3",
                        "--hf-dataset", f"dict={tmp_path / 'dict'}::test:content") is None
    assert _prepare_cli(capsys, tmp_path / "tok", tmp_path / "o4", "--hf-dataset", f"x={tmp_path / 'nope'}") is None


def test_cli_corpus(tmp_path, capsys):
    assert main(["data", "corpus", "--out", str(tmp_path / "a"), "--size-mb", "0.05", "--seed", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["web", "code", "math", "decay"]
    files = sorted((tmp_path / "a").rglob("*.jsonl"))
    assert 50_000 <= sum(f.stat().st_size for f in files) < 70_000  # --size-mb, within a few documents
    ref = write_corpus(tmp_path / "ref", size_mb=0.05, seed=2)
    for name, path in ref.items():
        assert (tmp_path / "a" / name / "part-00000.jsonl").read_bytes() == (path / "part-00000.jsonl").read_bytes()
    # --seed changes the text; --size-mb scales it
    assert main(["data", "corpus", "--out", str(tmp_path / "b"), "--size-mb", "0.1", "--seed", "3"]) == 0
    capsys.readouterr()
    b = (tmp_path / "b" / "web" / "part-00000.jsonl").read_text()
    assert b[:2000] != (tmp_path / "a" / "web" / "part-00000.jsonl").read_text()[:2000]
    assert sum(f.stat().st_size for f in (tmp_path / "b").rglob("*.jsonl")) > 1.8 * 50_000
    assert main(["data", "corpus", "--out", str(tmp_path / "c"), "--size-mb", "-1"]) == 2
    assert "size_mb" in capsys.readouterr().err and not (tmp_path / "c" / "web").exists()
