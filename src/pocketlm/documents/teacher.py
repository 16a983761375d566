"""The DocAssist teacher and judge: any OpenAI-compatible chat API, through the official `openai` client.

Two teacher modes:

- ``json`` (SlimLM's DocAssist): ONE call per document returns a JSON object with a summary, N suggested
  questions and question-answer pairs; it is validated, and re-asked (at a higher temperature) when invalid.
- ``per-task``: the teacher answers each task separately with a plain prompt (summary; questions, one per
  line; then the answer to each of the first `qa_pairs` questions). For a small teacher that can't write the
  JSON reliably, e.g. the imported SmolLM2 base served offline.

Every call is retried with exponential backoff on transient failures (connection, timeout, rate limit,
5xx) and on invalid answers; a document that still fails raises `TeacherError` (the builder records it).
An authentication or permission error is the user's to fix and stops the run (UserError).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from pocketlm.documents.prompt import split_questions
from pocketlm.errors import UserError

TEACHER_MODES = ("json", "per-task")
DUMMY_KEY = "sk-no-key"  # local servers ignore the key; the client insists on one

JSON_SYSTEM = "You are an expert annotator of documents. You answer with one JSON object and nothing else."
JSON_REQUEST = (
    "Read the document and return a JSON object with exactly these keys:\n"
    '- "summary": a faithful summary of the document in 2-4 sentences;\n'
    '- "questions": a list of {n} different questions a reader could ask to understand the document better;\n'
    '- "qa": a list of {k} objects {{"question": ..., "answer": ...}}, questions the document answers, with '
    "short answers taken from the document.\n\nDocument:\n{document}"
)
PLAIN_SYSTEM = "You are a helpful assistant."
SUMMARY_PROMPT = "{document}\n\nSummarize the document above in 2-3 sentences."
QUESTIONS_PROMPT = ("{document}\n\nWrite {n} different questions about the document above that would help a "
                    "reader understand it better. Write one question per line, numbered.")
ANSWER_PROMPT = "{document}\n\nAnswer this question about the document above briefly: {question}"


class TeacherRefused(UserError):
    """The teacher refused the key: every document would fail, so the run stops."""


class TeacherError(Exception):
    """The teacher failed on one document after all retries (recorded, not fatal)."""


@dataclass
class TeacherConfig:
    url: str
    model: str
    mode: str = "json"
    retries: int = 3  # extra attempts after the first
    backoff_s: float = 1.0  # first wait; doubles each retry (with jitter)
    timeout_s: float = 300.0
    temperature: float = 0.0  # first attempt; retries of an invalid answer use retry_temperature
    retry_temperature: float = 0.7
    n_questions: int = 3
    qa_pairs: int = 2
    max_tokens: int = 512  # json mode; per-task calls use the per_task_tokens below
    summary_tokens: int = 128
    questions_tokens: int = 96
    answer_tokens: int = 64


def make_client(cfg: TeacherConfig):
    """An `openai.OpenAI` client for cfg.url (key: OPENAI_API_KEY, else a dummy for local servers).
    Retries are ours (`chat`), so the client's own are off."""
    import openai

    if cfg.mode not in TEACHER_MODES:
        raise UserError(f"unknown teacher mode {cfg.mode!r}; choose one of {', '.join(TEACHER_MODES)}")
    if not re.match(r"^https?://", cfg.url or ""):
        raise UserError(f"teacher URL must start with http:// or https://, got {cfg.url!r}")
    return openai.OpenAI(base_url=cfg.url, api_key=os.environ.get("OPENAI_API_KEY") or DUMMY_KEY,
                         max_retries=0, timeout=cfg.timeout_s)


def _transient(e: Exception) -> bool:
    import openai

    if isinstance(e, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                      openai.InternalServerError)):
        return True
    return isinstance(e, openai.APIStatusError) and e.status_code in (408, 409, 425, 429) or (
        isinstance(e, openai.APIStatusError) and e.status_code >= 500)


def chat(client, cfg: TeacherConfig, messages: list[dict], *, max_tokens: int, json_mode: bool = False,
         validate=None, stats: dict | None = None) -> Any:
    """One chat completion, retried: transient API errors and answers `validate(text)` rejects (by raising
    ValueError) are retried with backoff; returns validate(text) (or the text). TeacherError when all
    attempts fail; TeacherRefused on authentication/permission errors. stats["calls"] counts requests."""
    import openai

    last = "no attempt"
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(cfg.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages, "max_tokens": max_tokens,
                                  "temperature": cfg.temperature if attempt == 0 else cfg.retry_temperature}
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        if stats is not None:
            stats["calls"] = stats.get("calls", 0) + 1
        try:
            resp = client.chat.completions.create(**kwargs)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise TeacherRefused(f"the teacher at {cfg.url} refused the key ({e.status_code}); set OPENAI_API_KEY") from None
        except openai.APIError as e:
            last = f"{type(e).__name__}: {str(e)[:160]}"
            if _transient(e):
                continue
            raise TeacherError(last) from None
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        if not json_mode and resp.choices and resp.choices[0].finish_reason == "length":
            text = whole_sentences(text)  # a small teacher rambles: keep what it finished
        if validate is None:
            return text
        try:
            return validate(text)
        except ValueError as e:
            last = f"invalid answer: {e}"
    raise TeacherError(f"{last} (after {cfg.retries + 1} attempts)")


def whole_sentences(text: str) -> str:
    """Text up to its last sentence end (or line end), if that keeps at least half of it."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)|\n", text)]
    return text[:ends[-1]].strip() if ends and ends[-1] >= len(text) // 2 else text.strip()


def _clean(s: Any) -> str:
    return re.sub(r"\s+", " ", s).strip() if isinstance(s, str) else ""


def validate_annotation(text: str, n_questions: int, qa_pairs: int) -> dict:
    """The teacher's JSON as {"summary", "questions", "qa"}; ValueError says what is wrong."""
    m = re.search(r"\{.*\}", text, re.S)  # some servers wrap the object in prose or a code fence
    if not m:
        raise ValueError("no JSON object")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    summary = _clean(obj.get("summary"))
    if len(summary.split()) < 5:
        raise ValueError("'summary' missing or shorter than 5 words")
    raw_questions = obj.get("questions") if isinstance(obj.get("questions"), list) else []
    questions = list(dict.fromkeys(q for q in map(_clean, raw_questions) if q))
    if len(questions) < n_questions:
        raise ValueError(f"'questions' needs {n_questions} different questions, got {len(questions)}")
    qa = []
    for pair in obj.get("qa") if isinstance(obj.get("qa"), list) else []:
        if isinstance(pair, dict) and _clean(pair.get("question")) and _clean(pair.get("answer")):
            qa.append({"question": _clean(pair["question"]), "answer": _clean(pair["answer"])})
    if not qa:
        raise ValueError("'qa' needs at least one {question, answer} pair")
    return {"summary": summary, "questions": questions[:n_questions], "qa": qa[:qa_pairs]}


def _validate_summary(text: str) -> str:
    text = text.strip()
    if len(text.split()) < 5:
        raise ValueError("summary shorter than 5 words")
    return text


def _validate_questions(n: int):
    def check(text: str) -> list[str]:
        qs = list(dict.fromkeys(q for q in split_questions(text) if q.endswith("?") and len(q.split()) >= 3))
        if len(qs) < n:
            raise ValueError(f"needs {n} different questions ending in '?', got {len(qs)}")
        return qs[:n]
    return check


def _validate_answer(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("empty answer")
    return text


def annotate(client, cfg: TeacherConfig, document: str, stats: dict | None = None) -> dict:
    """{"summary", "questions", "qa"} for one document, in cfg.mode (stats["calls"]: requests made)."""
    if cfg.mode == "json":
        messages = [{"role": "system", "content": JSON_SYSTEM},
                    {"role": "user", "content": JSON_REQUEST.format(n=cfg.n_questions, k=cfg.qa_pairs,
                                                                    document=document)}]
        return chat(client, cfg, messages, max_tokens=cfg.max_tokens, json_mode=True,
                    validate=lambda t: validate_annotation(t, cfg.n_questions, cfg.qa_pairs), stats=stats)

    def ask(prompt: str, max_tokens: int, validate):
        # the document comes first so a server's prompt cache reuses it across this document's calls
        return chat(client, cfg, [{"role": "system", "content": PLAIN_SYSTEM}, {"role": "user", "content": prompt}],
                    max_tokens=max_tokens, validate=validate, stats=stats)

    summary = ask(SUMMARY_PROMPT.format(document=document), cfg.summary_tokens, _validate_summary)
    questions = ask(QUESTIONS_PROMPT.format(document=document, n=cfg.n_questions), cfg.questions_tokens,
                    _validate_questions(cfg.n_questions))
    qa = [{"question": q, "answer": ask(ANSWER_PROMPT.format(document=document, question=q), cfg.answer_tokens,
                                        _validate_answer)} for q in questions[:cfg.qa_pairs]]
    return {"summary": summary, "questions": questions, "qa": qa}


GEVAL_PROMPT = (
    "You grade an assistant's answer about a document on a 1-5 scale ({criterion}). 1 = useless or wrong, "
    "3 = partly right, 5 = fully right and well written.\n\nDocument:\n{document}\n\nRequest: {request}\n\n"
    "Reference answer:\n{reference}\n\nAssistant's answer:\n{answer}\n\nReply with the score digit only."
)
GEVAL_CRITERIA = {
    "summarization": "faithfulness to the document, coverage and fluency",
    "question_suggestion": "relevance to the document, variety and clarity of the questions",
    "question_answering": "correctness against the document and the reference, and conciseness",
}


def make_judge(client, cfg: TeacherConfig):
    """judge(gold_record, prediction) -> score 1..5, or None when the judge gave no usable score."""
    def parse(text: str) -> int:
        m = re.search(r"[1-5]", text)
        if not m:
            raise ValueError("no score 1-5")
        return int(m.group(0))

    def judge(gold: dict, answer: str) -> float | None:
        prompt = GEVAL_PROMPT.format(criterion=GEVAL_CRITERIA[gold["task"]], document=gold.get("document", ""),
                                     request=gold.get("request", ""), reference=gold["response"], answer=answer)
        try:
            return float(chat(client, cfg, [{"role": "user", "content": prompt}], max_tokens=4, validate=parse))
        except TeacherError:
            return None
    return judge
