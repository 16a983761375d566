"""Document assistance on the generation engine: truncate a document to the model's budget, prompt it in
SlimLM's format, stream the answer, parse it.

`stream_assist(runtime, document, task, ...)` yields the engine's `GenerationResponse`s (the last one has
finish_reason set and the call's TTFT / prefill tok/s / decode tok/s); the returned `AssistStream` also
carries doc_tokens, truncated and, once consumed, the full text and its parse. `run_assist(...)` collects
it into the dict `pocketlm doc --json` prints. The runtime is any `pocketlm.runtime.engine.Runtime`:
a checkpoint dir on torch or a GGUF on llama.cpp (`load_runtime`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from pocketlm.documents.prompt import TASKS, ParsedAnswer, build_messages, parse_answer, request_text
from pocketlm.errors import UserError
from pocketlm.runtime.engine import GenerationResponse, Runtime

DEFAULT_MAX_DOC_TOKENS = 1000  # SlimLM truncates DocAssist documents to 1000 tokens
DEFAULT_MAX_NEW_TOKENS = 256  # SlimLM's demo (run_hf.py / run_mlc.py) generates at most 256
ASSIST_KEYS = ("intent", "response", "ttft_s", "prefill_tok_s", "decode_tok_s", "doc_tokens", "truncated")


def _codec(tokenizer: Any) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """(encode without special tokens, decode) for a Hugging Face tokenizer or an engine Runtime
    (whose GGUF vocabulary is used when it has no HF tokenizer)."""
    if isinstance(tokenizer, Runtime):
        if tokenizer.tokenizer is not None:
            tokenizer = tokenizer.tokenizer
        elif hasattr(tokenizer, "llm") and tokenizer.has_tokenizer:
            llm = tokenizer.llm
            return (lambda t: list(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)),
                    tokenizer.decode_text)
        else:
            raise UserError("this model has no tokenizer, so a document can't be encoded")
    return (lambda t: list(tokenizer.encode(t, add_special_tokens=False)),
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True))


def count_tokens(text: str, tokenizer: Any) -> int:
    return len(_codec(tokenizer)[0](text))


def truncate_document(text: str, tokenizer: Any, max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS
                      ) -> tuple[str, int, bool]:
    """(text cut to at most max_doc_tokens tokens, its token count, whether it was cut).

    The cut keeps a prefix of the original text, moved back to the last whitespace so no word is split.
    `tokenizer`: a Hugging Face tokenizer or an engine Runtime."""
    if max_doc_tokens < 1:
        raise UserError(f"--max-doc-tokens must be >= 1, got {max_doc_tokens}")
    encode, decode = _codec(tokenizer)
    ids = encode(text)
    if len(ids) <= max_doc_tokens:
        return text, len(ids), False
    head = decode(ids[:max_doc_tokens])
    # decode may normalise spaces; find where the decoded prefix ends in the original text
    cut = len(head) if text.startswith(head) else _prefix_end(text, head)
    space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
    if space > cut // 2:
        cut = space
    kept = text[:cut].rstrip()
    n = len(encode(kept))
    while n > max_doc_tokens and kept:  # re-tokenising a prefix can merge differently: trim until it fits
        kept = kept[:max(0, len(kept) - 8)].rstrip()
        n = len(encode(kept))
    return kept, n, True


def _prefix_end(text: str, head: str) -> int:
    """Position in `text` after as many non-space characters as `head` has."""
    want = sum(not c.isspace() for c in head)
    seen = 0
    for i, c in enumerate(text):
        if not c.isspace():
            seen += 1
            if seen >= want:
                return i + 1
    return len(text)


class AssistStream:
    """An iterator of the engine's GenerationResponses for one document request, with what it read:
    ``messages``, ``doc_tokens`` (tokens of the document as given to the model), ``original_tokens``,
    ``truncated``; after iteration, ``text`` (the whole answer), ``parsed`` and ``last`` (final response)."""

    def __init__(self, runtime: Runtime, document: str, task: str, question: str | None, n_questions: int,
                 max_doc_tokens: int, max_new_tokens: int):
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        if task == "question_answering" and not (question and question.strip()):
            raise UserError("question answering needs a non-empty question")
        if task == "question_suggestion" and n_questions < 1:
            raise UserError(f"the number of questions to suggest must be >= 1, got {n_questions}")
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not document or not document.strip():
            raise UserError("the document is empty")
        self.runtime = runtime
        self.original_tokens = count_tokens(document, runtime)
        self.document, self.doc_tokens, self.truncated = truncate_document(document, runtime, max_doc_tokens)
        self.messages = build_messages(self.document, request_text(task, question, n_questions))
        self.max_new_tokens = max_new_tokens
        self.tokens: list[int] = []
        self.text = ""
        self.parsed: ParsedAnswer | None = None
        self.last: GenerationResponse | None = None
        self._it: Iterator[GenerationResponse] | None = None

    def __iter__(self) -> "AssistStream":
        return self

    def __next__(self) -> GenerationResponse:
        if self._it is None:
            self._it = self.runtime.stream_generate(self.messages, max_new_tokens=self.max_new_tokens)
        r = next(self._it)  # StopIteration ends us too
        if r.token is not None:
            self.tokens.append(r.token)
        if r.finish_reason is not None:
            self.last = r
            self.text = self.runtime.decode_text(self.tokens) if self.tokens else ""
            self.parsed = parse_answer(self.text)
        return r


def stream_assist(runtime: Runtime, document: str, task: str, *, question: str | None = None, n_questions: int = 3,
                  max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS,
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> AssistStream:
    """Greedy answer to one request on one document, streamed (see AssistStream)."""
    return AssistStream(runtime, document, task, question, n_questions, max_doc_tokens, max_new_tokens)


def result_of(stream: AssistStream) -> dict:
    """The `pocketlm doc --json` dict of a consumed stream. An unparsable answer has intent None and
    its raw text as the response (reported, and scored as it is)."""
    if stream.last is None or stream.parsed is None:
        for _ in stream:
            pass
    parsed, last = stream.parsed, stream.last
    return {"intent": parsed.intent, "response": parsed.response if parsed.ok else stream.text.strip(),
            "ttft_s": last.ttft_s, "prefill_tok_s": last.prompt_tok_s, "decode_tok_s": last.gen_tok_s,
            "doc_tokens": stream.doc_tokens, "truncated": stream.truncated}


def run_assist(runtime: Runtime, document: str, task: str, *, question: str | None = None, n_questions: int = 3,
               max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """`stream_assist` collected: {"intent", "response", "ttft_s", "prefill_tok_s", "decode_tok_s",
    "doc_tokens", "truncated"} (ASSIST_KEYS)."""
    return result_of(stream_assist(runtime, document, task, question=question, n_questions=n_questions,
                                   max_doc_tokens=max_doc_tokens, max_new_tokens=max_new_tokens))
