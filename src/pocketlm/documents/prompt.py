"""SlimLM's DocAssist prompt format, built and parsed in one place.

One system turn asks the model to analyse the document, decide the task and answer in a fixed format;
the user turn is::

    <document>
    {document}
    </document>

    <request>
    {request}
    </request>

and the answer is::

    <intent>: summarization|question_suggestion|question_answering
    <response>
    ...
    </response>

Requests are "Summarize the given document.", "Suggest N questions about the document to help me
understand it better." or the user's question. Suggested questions are one per line, numbered "1. ".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TASKS = ("summarization", "question_suggestion", "question_answering")

SYSTEM_PROMPT = (
    "You are an AI assistant for document analysis: you summarize documents, suggest questions about "
    "them and answer questions on them. For each request:\n\n"
    "1. Read the document\n"
    "2. Decide the task (summarization, question suggestion or question answering)\n"
    "3. Carry out the task\n\n"
    "Answer in this format:\n\n"
    "<intent>: [summarization|question_suggestion|question_answering]\n"
    "<response>\n[your answer for the task]\n</response>"
)
SUMMARIZE_REQUEST = "Summarize the given document."
SUGGEST_REQUEST = "Suggest {n} questions about the document to help me understand it better."

_INTENT = re.compile(r"<intent>\s*:?\s*\[?\s*([a-z_ ]+?)\s*\]?\s*(?:\n|<response>|$)", re.I)
_RESPONSE = re.compile(r"<response>\s*(.*?)\s*(?:</response>|$)", re.S | re.I)
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


@dataclass
class ParsedAnswer:
    intent: str | None  # one of TASKS, or None when the answer names none
    response: str | None  # the text inside <response>, or None when there is no <response>
    ok: bool  # both found (a missing </response> at the end of the text is tolerated: length cut-off)


def request_text(task: str, question: str | None = None, n_questions: int = 3) -> str:
    """The <request> text of a task (the question itself for question answering)."""
    if task == "summarization":
        return SUMMARIZE_REQUEST
    if task == "question_suggestion":
        if n_questions < 1:
            raise ValueError(f"n_questions must be >= 1, got {n_questions}")
        return SUGGEST_REQUEST.format(n=n_questions)
    if task == "question_answering":
        if not question or not question.strip():
            raise ValueError("question answering needs a question")
        return question.strip()
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def user_turn(document: str, request: str) -> str:
    return f"<document>\n{document.strip()}\n</document>\n\n<request>\n{request.strip()}\n</request>"


def build_messages(document: str, request: str) -> list[dict]:
    """System + user chat messages for one request on one document; append the assistant turn
    (format_answer) to make a training conversation."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_turn(document, request)}]


def format_answer(intent: str, response: str) -> str:
    """The assistant turn in SlimLM's format."""
    if intent not in TASKS:
        raise ValueError(f"unknown intent {intent!r}")
    return f"<intent>: {intent}\n<response>\n{response.strip()}\n</response>"


def format_questions(questions: list[str]) -> str:
    """Suggested questions as the response text: one numbered question per line."""
    return "\n".join(f"{i}. {q.strip()}" for i, q in enumerate(questions, 1))


def split_questions(response: str) -> list[str]:
    """The questions of a question-suggestion response (numbering and bullets removed)."""
    out = [_NUMBERED.sub("", line).strip() for line in response.splitlines()]
    return [q for q in out if q]


def parse_answer(text: str) -> ParsedAnswer:
    """The intent and response of a model answer; ok=False when either is missing or the intent is
    not one of TASKS (such answers are reported as unparsable, never guessed)."""
    intent = None
    m = _INTENT.search(text or "")
    if m:
        name = m.group(1).strip().lower().replace(" ", "_")
        intent = name if name in TASKS else None
    r = _RESPONSE.search(text or "")
    response = r.group(1).strip() if r else None
    return ParsedAnswer(intent, response, intent is not None and response is not None)
