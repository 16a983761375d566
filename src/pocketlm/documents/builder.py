"""SlimLM's DocAssist data builder: documents → teacher annotations → chat JSONL for `pocketlm finetune`.

`build(docs_dir, out_dir, teacher)` sends every document (truncated to max_doc_tokens, SlimLM's 1000) to an
OpenAI-compatible teacher (`pocketlm.documents.teacher`, one call per document in ``json`` mode) and writes:

- ``annotations.jsonl``: the journal, append-only, one line per finished document (``status`` ok or error,
  with the document text, the annotation or the error). Lines are written whole and fsync'd by one writer;
  a run killed at any point resumes where it stopped: documents with an ok line are skipped, errored ones
  retried, a torn last line (the kill hit mid-write) is dropped and its document redone. The last line of a
  document wins.
- ``sft.jsonl``: chat records ``{"messages": [system, user, assistant]}`` in SlimLM's format (one per summary,
  one per question suggestion, one per question-answer pair), rebuilt from the journal at the end of a run.
- ``eval.jsonl``: gold records for `pocketlm doc eval`, one per document and task (QA: the first pair):
  ``{"doc_id", "task", "request", "question", "n_questions", "document", "response"}``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

from pocketlm.documents.assist import truncate_document
from pocketlm.documents.loaders import SUFFIXES, load_document
from pocketlm.documents.prompt import (build_messages, format_answer, format_questions, request_text)
from pocketlm.documents.docset import TOKENS_PER_WORD
from pocketlm.documents.teacher import TeacherConfig, TeacherError, TeacherRefused, annotate, make_client
from pocketlm.errors import UserError
from pocketlm.utils import atomic_write_text

JOURNAL, SFT_FILE, EVAL_FILE = "annotations.jsonl", "sft.jsonl", "eval.jsonl"


def list_documents(docs_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(doc_id = path relative to docs_dir, path) of every supported file under docs_dir, sorted."""
    root = Path(docs_dir)
    if not root.is_dir():
        raise UserError(f"documents directory not found: {root}")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not p.name.startswith("."))
    if not found:
        raise UserError(f"{root} has no documents ({', '.join(SUFFIXES)})")
    return [(p.relative_to(root).as_posix(), p) for p in found]


def read_journal(path: str | os.PathLike, repair: bool = False) -> dict[str, dict]:
    """doc_id -> its last journal record. A torn last line (no newline: the writer was killed) is
    ignored, and with repair=True cut off the file so appends start on a fresh line."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    records: dict[str, dict] = {}
    for i, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path} line {i} is not valid JSON; the journal was edited or damaged") from None
        if isinstance(rec, dict) and isinstance(rec.get("doc_id"), str):
            records[rec["doc_id"]] = rec
    return records


def _append(f, record: dict) -> None:
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def conversations(rec: dict) -> list[tuple[str, dict, list[dict]]]:
    """(task, gold fields, chat messages with the assistant turn) of one ok journal record."""
    doc, ann = rec["document"], rec["annotation"]
    out = []
    req = request_text("summarization")
    out.append(("summarization", {"request": req, "question": None, "n_questions": None, "response": ann["summary"]},
                build_messages(doc, req) + [{"role": "assistant", "content": format_answer("summarization",
                                                                                              ann["summary"])}]))
    n = len(ann["questions"])
    req = request_text("question_suggestion", n_questions=n)
    response = format_questions(ann["questions"])
    out.append(("question_suggestion", {"request": req, "question": None, "n_questions": n, "response": response},
                build_messages(doc, req) + [{"role": "assistant",
                                             "content": format_answer("question_suggestion", response)}]))
    for pair in ann["qa"]:
        out.append(("question_answering", {"request": pair["question"], "question": pair["question"],
                                           "n_questions": None, "response": pair["answer"]},
                    build_messages(doc, pair["question"]) + [{"role": "assistant", "content": format_answer(
                        "question_answering", pair["answer"])}]))
    return out


def export(out_dir: str | os.PathLike, journal: dict[str, dict] | None = None) -> tuple[int, int]:
    """(Re)write sft.jsonl and eval.jsonl from the journal; returns their record counts."""
    out = Path(out_dir)
    journal = read_journal(out / JOURNAL) if journal is None else journal
    sft, gold = [], []
    for doc_id in sorted(journal):
        rec = journal[doc_id]
        if rec.get("status") != "ok":
            continue
        seen_qa = False
        for task, fields, messages in conversations(rec):
            sft.append({"messages": messages, "doc_id": doc_id, "task": task})
            if task == "question_answering":
                if seen_qa:
                    continue
                seen_qa = True
            gold.append({"doc_id": doc_id, "task": task, **{k: fields[k] for k in ("request", "question",
                                                                                  "n_questions")},
                         "document": rec["document"], "response": fields["response"]})
    lines = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    atomic_write_text(out / SFT_FILE, lines(sft))
    atomic_write_text(out / EVAL_FILE, lines(gold))
    return len(sft), len(gold)


def _work(client, cfg: TeacherConfig, doc_id: str, path: Path, tokenizer: Any, max_doc_tokens: int) -> dict:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"doc_id": doc_id, "status": "error", "document": None, "truncated": False,
                           "annotation": None, "error": None, "calls": 0, "seconds": 0.0}
    stats = {"calls": 0}
    try:
        text = load_document(path)
        if tokenizer is not None:
            text, _, rec["truncated"] = truncate_document(text, tokenizer, max_doc_tokens)
        else:  # no tokenizer: cut at the estimated word count (docset.TOKENS_PER_WORD)
            words = list(re.finditer(r"\S+", text))
            limit = max(1, int(max_doc_tokens / TOKENS_PER_WORD))
            if len(words) > limit:
                text, rec["truncated"] = text[:words[limit - 1].end()], True
        rec["document"] = text
        rec["annotation"] = annotate(client, cfg, text, stats)
        rec["status"] = "ok"
    except TeacherRefused:
        raise  # a refused key fails every document: stop the run
    except (UserError, TeacherError) as e:
        rec["error"] = str(e)
    rec["calls"] = stats["calls"]
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def build(docs_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: TeacherConfig, concurrency: int = 1,
          max_doc_tokens: int = 1000, tokenizer: Any = None, progress: bool = True,
          on_record: Callable[[dict], None] | None = None) -> dict:
    """Annotate every document not yet done (see the module doc); returns a summary dict."""
    if concurrency < 1:
        raise UserError(f"--concurrency must be >= 1, got {concurrency}")
    if max_doc_tokens < 1:
        raise UserError(f"--max-doc-tokens must be >= 1, got {max_doc_tokens}")
    docs = list_documents(docs_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    client = make_client(cfg)
    out.mkdir(parents=True, exist_ok=True)
    journal = read_journal(out / JOURNAL, repair=True)
    todo = [(d, p) for d, p in docs if journal.get(d, {}).get("status") != "ok"]
    summary = {"documents": len(docs), "already_done": len(docs) - len(todo), "annotated": 0, "errors": 0,
               "calls": 0}
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="teacher", unit="doc", disable=not progress, file=sys.stderr)
    with open(out / JOURNAL, "a", encoding="utf-8") as f, ThreadPoolExecutor(max_workers=concurrency) as pool:
        pending: set = set()
        queue = iter(todo)
        try:
            while True:
                while len(pending) < 2 * concurrency:  # bounded: a huge set is not all submitted at once
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending.add(pool.submit(_work, client, cfg, *nxt, tokenizer, max_doc_tokens))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    rec = fut.result()  # UserError (e.g. a refused key) stops the run here
                    _append(f, rec)
                    journal[rec["doc_id"]] = rec
                    summary["calls"] += rec["calls"]
                    summary["annotated" if rec["status"] == "ok" else "errors"] += 1
                    if rec["status"] != "ok" and progress:
                        tqdm.write(f"{rec['doc_id']}: {rec['error']}", file=sys.stderr)
                    if on_record is not None:
                        on_record(rec)
                    bar.update(1)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            bar.close()
    summary["sft_records"], summary["eval_records"] = export(out, journal)
    summary["failed_documents"] = sorted(d for d, r in journal.items() if r.get("status") != "ok")
    summary["out"] = str(out)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
