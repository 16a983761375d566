"""An OpenAI-compatible HTTP server (FastAPI) over the generation engine, plus pocketlm's own routes
and a static web page.

The shape follows mlx-lm's and llama-cpp-python's servers: one loaded model, OpenAI request models,
SSE streaming of `chat.completion.chunk`s, `usage` on every answer. Here every model call runs on
one `ModelWorker` thread (one KV cache) behind a bounded queue; the event loop only parses,
streams and rejects. Routes:

    GET  /                      the web page (static files in this package)
    GET  /health                liveness + queue state
    GET  /v1/models             the one served model
    POST /v1/chat/completions   chat; `tools` naming DroidCall functions -> `tool_calls`
    POST /v1/completions        plain text completion
    POST /v1/intent             DroidCall calls + adb commands (`pocketlm intent --json`'s keys)
    POST /v1/documents          multipart file + task -> summary / questions / answer (`pocketlm doc --json`'s keys)

Errors are OpenAI error objects; nothing answered is a traceback (unexpected exceptions are logged
server-side and answered as a generic 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pocketlm.documents.assist import result_of, stream_assist
from pocketlm.documents.loaders import load_document
from pocketlm.documents.prompt import TASKS
from pocketlm.errors import UserError
from pocketlm.intent.android import to_adb
from pocketlm.intent.infer import Runner, run_query
from pocketlm.intent.prompt import build_prompt, retrieve
from pocketlm.intent.specs import FunctionSpec, load_specs
from pocketlm.runtime.engine import GenerationResponse
from pocketlm.serve.openai_api import (DEFAULT_MAX_TOKENS, ApiError, ChatRequest, CompletionRequest, IntentRequest,
                                       StopMatcher, chat_chunk, chat_response, completion_response, error_body,
                                       new_id, sse, tool_calls, usage)
from pocketlm.serve.worker import Job, ModelWorker, QueueFull

log = logging.getLogger("pocketlm.serve")
STATIC = Path(__file__).parent / "static"
# The page's task names -> the documents API's.
DOC_TASKS = {"summary": "summarization", "questions": "question_suggestion", "answer": "question_answering",
             **{t: t for t in TASKS}}


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes` (declared or streamed), before parsing."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._body())
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # an HTTPException: FastAPI turns other errors while reading the body into 400s
                    raise HTTPException(413, self._body()["error"]["message"])
            return message
        await self.app(scope, limited, send)

    def _body(self) -> dict:
        return error_body(f"request body is larger than the server's limit of {self.max_bytes} bytes",
                          code="request_too_large")


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class Served:
    """The loaded model and what the routes share: its name, the intent runner, the worker."""

    def __init__(self, runner: Runner, name: str, queue_size: int):
        self.runner = runner
        self.rt = runner.runtime
        self.name = name
        self.specs: dict[str, FunctionSpec] = load_specs()
        self.worker = ModelWorker(queue_size)
        self.created = int(time.time())

    def context_limit(self) -> int:
        rt = self.rt
        return min(rt.n_ctx, rt.config.max_position_embeddings) if rt.config is not None else rt.n_ctx

    def check_model(self, model: str | None) -> None:
        if model and model != self.name:
            raise ApiError(400, f"model '{model}' does not exist; this server serves '{self.name}'",
                           code="model_not_found", param="model")

    def room(self, n_prompt: int, requested: int | None) -> int:
        """max_tokens capped to what the context has left after the prompt."""
        left = self.context_limit() - n_prompt
        if left < 1:
            raise ApiError(400, f"the prompt is {n_prompt} tokens; the model's context is {self.context_limit()}",
                           code="context_length_exceeded", param="messages")
        return min(requested or DEFAULT_MAX_TOKENS, left)


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """The JSON body as `model` (whatever the Content-Type, as curl -d sends form-encoded); 400 otherwise."""
    body = await request.body()
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def generation_job(served: Served, encode: Callable[[], list[int]], requested: int | None, temperature: float,
                   top_p: float, seed: int | None, stop_ids: list[int]) -> Callable[[Job], None]:
    """A worker job: encode, emit the prompt length, then stream tokens until done or cancelled."""
    def run(job: Job) -> None:
        try:
            ids = encode()
        except UserError:
            raise
        except Exception as e:  # e.g. a chat template that rejects these roles: the request's fault
            raise ApiError(400, f"the model's chat template cannot render these messages: {e}",
                           param="messages") from None
        max_new = served.room(len(ids), requested)
        stream = served.rt.stream_generate(ids, max_new, temperature, top_p=top_p,
                                           seed=seed if seed is not None else secrets.randbits(31),
                                           stop_ids=stop_ids)
        first = next(stream)  # the prefill: its errors still get a status code, not a broken stream
        job.emit(len(ids))
        job.emit(first)
        for r in stream:
            if job.cancelled.is_set():
                return
            job.emit(r)
    return run


async def start(served: Served, request: Request, fn: Callable[[Job], None]) -> tuple[Job, AsyncIterator, Any]:
    """Queue a job, watch for the client leaving, and wait for its first result (errors surface here,
    before any response is sent)."""
    job = served.worker.submit(fn)
    # held on the job: the loop keeps only weak references to tasks
    job.watcher = asyncio.get_running_loop().create_task(job.watch(request.is_disconnected))
    results = job.results()
    try:
        first = await anext(results)
    except BaseException:
        job.cancel()
        raise
    return job, results, first


async def text_events(job: Job, results: AsyncIterator, stops: list[str]) -> AsyncIterator[tuple[str, str | None, int]]:
    """(text delta, finish reason or None, completion tokens so far), cut at stop strings; cancels the
    job when the consumer stops early (stop string, disconnect, error)."""
    matcher = StopMatcher(stops)
    ended = False  # the engine finished on its own: nothing to cancel
    try:
        async for r in results:
            r: GenerationResponse
            text = matcher.feed(r.text)
            if matcher.stopped:
                yield text, "stop", r.generation_tokens
                return
            if r.finish_reason is not None:
                ended = True
                yield text + matcher.flush(), r.finish_reason, r.generation_tokens
                return
            if text:
                yield text, None, r.generation_tokens
    finally:
        if not ended:
            job.cancel()


def create_app(runner: Runner, name: str, api_key: str | None = None, queue_size: int = 16,
               max_body_bytes: int = 8 << 20) -> FastAPI:
    served = Served(runner, name, queue_size)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        served.worker.close()
    app = FastAPI(title="pocketlm", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.served = served
    _install_error_handlers(app)

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    api = APIRouter(dependencies=[Depends(check_key)])

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, **served.worker.status()}

    @api.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "pocketlm", "context_length": served.context_limit()}]}

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await parse(request, ChatRequest)
        served.check_model(req.model)
        if req.tools and req.tool_choice != "none":
            return await _tool_chat(served, req, request)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        fn = generation_job(served, lambda: served.rt.encode_messages(messages), req.limit(), req.temperature,
                            req.top_p, req.seed, served.rt.end_of_turn_ids())
        return await _answer(served, request, req, fn, chat=True)

    @api.post("/v1/completions")
    async def completions(request: Request):
        req = await parse(request, CompletionRequest)
        served.check_model(req.model)
        prompt = req.prompt_text()
        fn = generation_job(served, lambda: served.rt.encode(prompt), req.max_tokens, req.temperature,
                            req.top_p, req.seed, served.rt.special_ids())
        return await _answer(served, request, req, fn, chat=False)

    @api.post("/v1/intent")
    async def intent(request: Request):
        req = await parse(request, IntentRequest)
        candidates = _candidates(served, req.functions) if req.functions else None
        job, results, out = await start(served, request, _intent_job(served, req.text, candidates, req.max_tokens))
        out.pop("_usage")
        return out

    @api.post("/v1/documents")
    async def documents(request: Request, file: UploadFile = File(...), task: str = Form("summary"),
                        question: str | None = Form(None), n_questions: int = Form(3),
                        max_tokens: int = Form(256)):
        if task not in DOC_TASKS:
            raise ApiError(400, f"unknown task '{task}'; choose one of {', '.join(DOC_TASKS)}", param="task")
        task = DOC_TASKS[task]
        if task == "question_answering" and not (question or "").strip():
            raise ApiError(400, "the answer task needs a question", param="question")
        document = _read_upload(file)
        fn = _document_job(served, document, task, question, n_questions, max_tokens)
        job, results, out = await start(served, request, fn)
        return out

    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


# ---------------------------------------------------------------------------------------------
# answers


async def _answer(served: Served, request: Request, req, fn, chat: bool):
    job, results, n_prompt = await start(served, request, fn)
    rid = new_id("chatcmpl" if chat else "cmpl")
    events = text_events(job, results, req.stops())
    if req.stream:
        with_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_sse(served, rid, events, n_prompt, chat, with_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    parts, finish, n_gen = [], "length", 0
    async for text, reason, n_gen in events:
        parts.append(text)
        finish = reason or finish
    use = usage(n_prompt, n_gen)
    text = "".join(parts)
    if chat:
        return chat_response(rid, served.name, {"role": "assistant", "content": text}, finish, use)
    return completion_response(rid, served.name, text, finish, use)


async def _sse(served: Served, rid: str, events: AsyncIterator, n_prompt: int, chat: bool, with_usage: bool):
    name, n_gen = served.name, 0
    try:
        if chat:
            yield sse(chat_chunk(rid, name, {"role": "assistant", "content": ""}))
        async for text, reason, n_gen in events:
            if chat:
                yield sse(chat_chunk(rid, name, {"content": text} if text else {}, reason))
            else:
                yield sse(completion_response(rid, name, text, reason, None))
        if with_usage:
            use = usage(n_prompt, n_gen)
            yield sse(chat_chunk(rid, name, {}, None, use, choices=False) if chat
                      else {**completion_response(rid, name, "", None, use), "choices": []})
        yield sse("[DONE]")
    except Exception as e:  # headers are sent: the error travels as an event, never a traceback
        yield sse(_error_of(e)[1])
    finally:
        await events.aclose()


def _candidates(served: Served, names: list[str]) -> list[FunctionSpec]:
    unknown = [n for n in names if n not in served.specs]
    if unknown:
        raise ApiError(400, f"unknown DroidCall function(s) {', '.join(unknown)}; this model calls: "
                       f"{', '.join(sorted(served.specs))}", param="tools")
    return [served.specs[n] for n in names]


def _intent_job(served: Served, text: str, candidates: list[FunctionSpec] | None, max_tokens: int):
    runner = served.runner

    def run(job: Job) -> None:
        k = int(runner.meta.get("candidates", 4))
        doc_style = runner.meta.get("doc_style", "full")
        cands = candidates or retrieve(text, served.specs, k=k)
        n_prompt = len(served.rt.encode_messages(build_prompt(text, cands, doc_style=doc_style)))
        tokens0, seconds0 = runner.tokens_generated, runner.seconds
        r = run_query(runner, text, served.specs, cands, k, min(max_tokens, served.room(n_prompt, max_tokens)),
                      doc_style)
        n_gen, secs = runner.tokens_generated - tokens0, runner.seconds - seconds0
        r["adb"] = [to_adb(c, served.specs.get(c["name"])) for c in r["calls"]]
        r["backend"] = runner.backend
        r["tokens_per_s"] = round(n_gen / secs, 1) if secs else None
        job.emit({**r, "_usage": usage(n_prompt, n_gen)})
    return run


async def _tool_chat(served: Served, req: ChatRequest, request: Request):
    names = [t.function.name for t in req.tools]
    if isinstance(req.tool_choice, dict):  # {"type": "function", "function": {"name": N}}: only N
        names = [str((req.tool_choice.get("function") or {}).get("name", ""))]
    candidates = _candidates(served, names)
    users = [m.text() for m in req.messages if m.role == "user"]
    if not users or not users[-1].strip():
        raise ApiError(400, "a tools request needs a user message with the request", param="messages")
    job, results, r = await start(served, request, _intent_job(served, users[-1], candidates,
                                                               req.limit() or 160))
    use = r.pop("_usage")
    rid = new_id("chatcmpl")
    if r["calls"]:
        message, finish = {"role": "assistant", "content": None, "tool_calls": tool_calls(r["calls"])}, "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": r["output"]}, "stop"
    if not req.stream:
        return chat_response(rid, served.name, message, finish, use)

    async def events():
        yield sse(chat_chunk(rid, served.name, {"role": "assistant", "content": message["content"]}))
        if finish == "tool_calls":
            calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
            yield sse(chat_chunk(rid, served.name, {"tool_calls": calls}))
        yield sse(chat_chunk(rid, served.name, {}, finish))
        if req.stream_options and req.stream_options.include_usage:
            yield sse(chat_chunk(rid, served.name, {}, None, use, choices=False))
        yield sse("[DONE]")
    return StreamingResponse(events(), media_type="text/event-stream")


def _read_upload(file: UploadFile) -> str:
    """The uploaded file's text via the documents loader (which picks the parser by suffix)."""
    suffix = Path(file.filename or "upload.txt").suffix.lower() or ".txt"
    with tempfile.TemporaryDirectory(prefix="pocketlm-upload-") as tmp:
        path = Path(tmp) / f"document{suffix}"
        with open(path, "wb") as f:
            f.write(file.file.read())
        try:
            return load_document(path)
        except UserError as e:  # name the upload, not our temp file
            raise UserError(str(e).replace(str(path), file.filename or "the upload")) from None


def _document_job(served: Served, document: str, task: str, question: str | None, n_questions: int,
                  max_tokens: int):
    def run(job: Job) -> None:
        stream = stream_assist(served.rt, document, task, question=question, n_questions=n_questions,
                               max_new_tokens=max_tokens)
        for _ in stream:
            if job.cancelled.is_set():
                return
        job.emit(result_of(stream))
    return run


# ---------------------------------------------------------------------------------------------
# errors: OpenAI error objects, never a traceback


def _error_of(e: BaseException) -> tuple[int, dict, dict]:
    """(status, body, headers) for any exception."""
    if isinstance(e, ApiError):
        return e.status, e.body(), e.headers
    if isinstance(e, QueueFull):
        return 503, error_body(str(e), "server_busy", "queue_full"), {"Retry-After": str(e.retry_after)}
    if isinstance(e, UserError):
        return 400, error_body(str(e)), {}
    log.error("unexpected error", exc_info=e)
    return 500, error_body("internal server error (details are in the server log)", "server_error"), {}


def _install_error_handlers(app: FastAPI) -> None:
    async def any_error(request: Request, exc: Exception):
        status, body, headers = _error_of(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        if first.get("type") == "model_type":  # the body is JSON but not an object
            where = None
        if first.get("type") == "json_invalid":
            message, where = "the request body is not valid JSON", None
        else:
            message = f"{where or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, param=where), status_code=400)

    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for kind in (ApiError, QueueFull, UserError, Exception):
        app.add_exception_handler(kind, any_error)
