"""`pocketlm serve`: the official openai client against the server (chat streaming and not, tools,
completions), the limits (503 + Retry-After, 413, max_tokens capped to the context, client disconnect
cancels generation), error objects (400s, never a traceback), the API key, and the CLI's flags.

The model is the tiny random checkpoint; for the document route (and the browser test in
test_serve_browser.py) it is briefly overfit on one DocAssist answer so there is a real summary to show.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from pocketlm.intent.infer import load_runner  # noqa: E402
from pocketlm.serve import create_app  # noqa: E402
from test_json_outputs import DOCUMENTED, check  # noqa: E402

from conftest import DOC_SUMMARY, DOC_TEXT  # noqa: E402
SRC = Path(__file__).resolve().parents[1] / "src"


class ThreadServer:
    """uvicorn serving an app on a free loopback port from a background thread."""

    def __init__(self, app):
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def status(self) -> dict:
        body = httpx.get(self.url + "/health").json()
        check("serve /health", body)
        return body

    def wait_idle(self, timeout: float = 15) -> dict:
        deadline = time.time() + timeout
        while True:
            s = self.status()
            if (not s["running"] and not s["waiting"]) or time.time() > deadline:
                return s
            time.sleep(0.1)


def serve_in_thread(ckpt, **kwargs):
    runner = load_runner(str(ckpt))
    server = ThreadServer(create_app(runner, "tiny", **kwargs))
    server.runner = runner
    return server


@pytest.fixture(scope="module")
def server(tiny_ckpt):
    """The random tiny model: greedy, it never ends a turn, so long requests really take long."""
    with serve_in_thread(tiny_ckpt, queue_size=1, max_body_bytes=64 << 10) as s:
        yield s


@pytest.fixture(scope="module")
def doc_server(doc_ckpt):
    with serve_in_thread(doc_ckpt) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


HELLO = [{"role": "user", "content": "hello there"}]


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    return err


# ----------------------------------------------------------------------------- OpenAI API, official client

def test_models_list(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].context_length == 4096


def test_chat_non_streaming_matches_the_engine(client, server):
    before = server.wait_idle()
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0)
    after = server.wait_idle()
    assert (after["completed"], after["cancelled"]) == (before["completed"] + 1, before["cancelled"])
    rt = server.runner.runtime
    expected = rt.generate(HELLO, 8)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected.text
    assert r.choices[0].finish_reason == ("stop" if expected.stopped else "length")
    assert r.usage.prompt_tokens == len(rt.encode_messages(HELLO))
    assert r.usage.completion_tokens == len(expected.tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_equals_non_streaming_with_a_seed(client):
    kwargs = dict(model="tiny", messages=HELLO, max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    whole = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1  # really streamed, token by token
    assert "".join(deltas) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # other seeds sample something else (the seed reaches the sampler)
    hot = {**kwargs, "temperature": 2.0, "top_p": 1.0}
    texts = {client.chat.completions.create(**{**hot, "seed": s}).choices[0].message.content for s in range(4)}
    assert len(texts) > 1


def test_temperature_zero_is_greedy_and_top_p_is_validated(client):
    a = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0, seed=1)
    b = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0, seed=2)
    assert a.choices[0].message.content == b.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.chat.completions.create(model="tiny", messages=HELLO, top_p=0)


def test_stop_strings_cut_the_text(client):
    kwargs = dict(model="tiny", messages=HELLO, max_tokens=16, temperature=1.0, seed=3)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    assert len(full) >= 6
    stop = full[4:6]
    cut = full[:full.find(stop)]
    r = client.chat.completions.create(**kwargs, stop=[stop])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(**kwargs, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut


def test_completions(client, server):
    r = client.completions.create(model="tiny", prompt="set an alarm", max_tokens=5, temperature=0)
    rt = server.runner.runtime
    expected = rt.generate(rt.encode("set an alarm"), 5, stop_ids=rt.special_ids())
    assert r.object == "text_completion" and r.choices[0].text == expected.text
    assert r.usage.completion_tokens == len(expected.tokens)
    parts = list(client.completions.create(model="tiny", prompt="set an alarm", max_tokens=5, temperature=0,
                                           stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == expected.text


ALARM_TOOL = {"type": "function", "function": {
    "name": "ACTION_SET_ALARM", "description": "Set an alarm",
    "parameters": {"type": "object", "properties": {"EXTRA_HOUR": {"type": "integer"}}}}}
TIMER_TOOL = {"type": "function", "function": {"name": "ACTION_SET_TIMER", "parameters": {"type": "object"}}}


def test_tools_return_droidcall_tool_calls(client):
    msgs = [{"role": "user", "content": "wake me up at 7:30 tomorrow"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[ALARM_TOOL, TIMER_TOOL], max_tokens=40)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls and {c.function.name for c in calls} <= {"ACTION_SET_ALARM", "ACTION_SET_TIMER"}
    assert all(isinstance(json.loads(c.function.arguments), dict) and c.id.startswith("call_") for c in calls)
    assert r.usage.prompt_tokens > 0
    # tool_choice naming one function restricts the call to it; streaming carries the same calls
    forced = dict(model="tiny", messages=msgs, tools=[ALARM_TOOL, TIMER_TOOL], max_tokens=40,
                  tool_choice={"type": "function", "function": {"name": "ACTION_SET_TIMER"}})
    r2 = client.chat.completions.create(**forced)
    assert {c.function.name for c in r2.choices[0].message.tool_calls} == {"ACTION_SET_TIMER"}
    chunks = list(client.chat.completions.create(**forced, stream=True))
    streamed = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    assert [tc.function.name for tc in streamed] == [c.function.name for c in r2.choices[0].message.tool_calls]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_unknown_tool_and_unknown_model_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=HELLO, tools=[
            {"type": "function", "function": {"name": "get_weather"}}])
    assert "get_weather" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert e.value.code == "model_not_found"


# ----------------------------------------------------------------------------- pocketlm's routes

def test_intent_route(server):
    r = httpx.post(server.url + "/v1/intent", json={"text": "wake me up at 7:30", "functions": ["ACTION_SET_ALARM"]},
                   timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    check("serve POST /v1/intent", body)
    assert body["calls"] and body["calls"][0]["name"] == "ACTION_SET_ALARM"
    assert body["adb"][0].startswith("adb shell am start") and "SET_ALARM" in body["adb"][0]
    assert_error(httpx.post(server.url + "/v1/intent", json={"text": "x", "functions": ["nope"]}), 400)
    assert_error(httpx.post(server.url + "/v1/intent", json={"text": ""}), 400)


def test_documents_route(doc_server, tmp_path):
    server = doc_server
    doc = tmp_path / "fox.txt"
    doc.write_text(DOC_TEXT)
    r = httpx.post(server.url + "/v1/documents", files={"file": ("fox.txt", doc.read_bytes())},
                   data={"task": "summary", "max_tokens": "40"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    check("serve POST /v1/documents", body)
    assert body["intent"] == "summarization" and body["response"] == DOC_SUMMARY
    assert body["doc_tokens"] > 5 and body["truncated"] is False
    err = assert_error(httpx.post(server.url + "/v1/documents", files={"file": ("x.exe", b"MZ\x00")},
                                  data={"task": "summary"}), 400)
    assert "x.exe" in err["message"] and "pocketlm-upload" not in err["message"]
    assert_error(httpx.post(server.url + "/v1/documents", files={"file": ("fox.txt", b"some text")},
                            data={"task": "answer"}), 400)
    assert_error(httpx.post(server.url + "/v1/documents", files={"file": ("fox.txt", b"some text")},
                            data={"task": "translate"}), 400)
    assert_error(httpx.post(server.url + "/v1/documents", data={"task": "summary"}), 400)


# ----------------------------------------------------------------------------- limits and faults

def test_malformed_requests_get_openai_errors(server):
    url = server.url + "/v1/chat/completions"
    assert "JSON" in assert_error(httpx.post(url, content=b"{not json"), 400)["message"]
    assert_error(httpx.post(url, content=b"[1, 2]"), 400)
    assert assert_error(httpx.post(url, json={"messages": []}), 400)["param"] == "messages"
    assert assert_error(httpx.post(url, json={"messages": HELLO, "temperature": 9}), 400)["param"] == "temperature"
    assert_error(httpx.post(url, json={"messages": HELLO, "n": 2}), 400)
    assert_error(httpx.post(server.url + "/v1/nothing", json={}), 404)
    assert_error(httpx.get(url), 405)


def test_body_limit_is_413(server):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (70 << 10)}]}).encode()
    assert_error(httpx.post(server.url + "/v1/chat/completions", content=big), 413, "request_too_large")

    def chunked():  # no Content-Length: the limit counts streamed bytes
        for _ in range(70):
            yield b"x" * 1024
    assert_error(httpx.post(server.url + "/v1/chat/completions", content=chunked()), 413)
    r = httpx.post(server.url + "/v1/documents", files={"file": ("big.txt", b"word " * (20 << 10))},
                   data={"task": "summary"})
    assert_error(r, 413)
    assert server.status()["status"] == "ok"


def test_max_tokens_is_capped_to_the_context(server, monkeypatch):
    served = server.app.state.served
    monkeypatch.setattr(served.rt, "n_ctx", 64)  # the cap follows the runtime's context
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"messages": HELLO, "max_tokens": 10 ** 6, "temperature": 0}, timeout=120)
    assert r.status_code == 200, r.text
    use = r.json()["usage"]
    assert use["total_tokens"] <= 64 and use["prompt_tokens"] > 10
    long = [{"role": "user", "content": "alarm " * 200}]
    err = assert_error(httpx.post(server.url + "/v1/chat/completions", json={"messages": long}), 400)
    assert err["code"] == "context_length_exceeded"


def test_full_queue_is_503_and_disconnects_cancel(server, monkeypatch):
    """queue_size=1: one request runs, one waits, the next gets 503 + Retry-After. Clients that leave
    (streaming or not) cancel their generation: the worker is idle at once, not after 3000 tokens."""
    rt = server.runner.runtime
    step = rt._eval_token

    def slow_step(tok):  # a phone-speed model: 3000 tokens would take a minute
        time.sleep(0.02)
        return step(tok)
    monkeypatch.setattr(rt, "_eval_token", slow_step)
    long = {"messages": HELLO, "max_tokens": 3000, "temperature": 0, "stream": True}
    before = server.wait_idle()
    with httpx.Client(base_url=server.url, timeout=60) as a:
        with a.stream("POST", "/v1/chat/completions", json=long) as running:
            lines = running.iter_lines()  # kept: a dropped iterator closes the connection
            first = next(lines)
            assert first.startswith("data: ")
            waiting_result = {}

            def wait_in_queue():
                try:
                    waiting_result["r"] = httpx.post(server.url + "/v1/chat/completions",
                                                     json={**long, "stream": False}, timeout=2.0)
                except httpx.TimeoutException:
                    waiting_result["r"] = "timed out"  # the client leaves while queued (or just started)
            t = threading.Thread(target=wait_in_queue)
            t.start()
            deadline = time.time() + 10
            while server.status()["waiting"] < 1 and time.time() < deadline:
                time.sleep(0.05)
            r = httpx.post(server.url + "/v1/chat/completions", json={**long, "stream": False})
            err = assert_error(r, 503, "queue_full")
            assert int(r.headers["Retry-After"]) >= 1 and err["type"] == "server_busy"
            t.join()
    assert waiting_result["r"] == "timed out"
    after = server.wait_idle(timeout=15)
    assert not after["running"] and not after["waiting"], after
    assert after["cancelled"] >= before["cancelled"] + 2
    assert after["rejected"] >= before["rejected"] + 1
    # still answering
    assert httpx.post(server.url + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2},
                      timeout=60).status_code == 200


def test_unexpected_errors_are_500_without_traceback(server, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(server.runner.runtime, "stream_generate", boom)
    for stream in (False, True):
        r = httpx.post(server.url + "/v1/chat/completions", json={"messages": HELLO, "stream": stream})
        err = assert_error(r, 500)
        assert "secret" not in r.text and err["type"] == "server_error"


def test_api_key_is_required_when_set(tiny_ckpt):
    app = create_app(load_runner(str(tiny_ckpt)), "tiny", api_key="s3cret")
    with ThreadServer(app) as s:
        assert_error(httpx.get(s.url + "/v1/models"), 401, "invalid_api_key")
        assert_error(httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        ok = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.models.list().data[0].id == "tiny"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0).models.list()
        assert httpx.get(s.url + "/").status_code == 200  # the page itself is public; its API calls carry the key


def test_web_page_is_served(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and 'name="viewport"' in page.text
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{asset}").status_code == 200


# ----------------------------------------------------------------------------- the CLI

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_a_public_host_without_a_key(run_cli, tiny_ckpt):
    code, out, err = run_cli("serve", tiny_ckpt, "--host", "0.0.0.0", "--port", str(_free_port()))
    assert code == 2 and "--api-key" in err and "Traceback" not in err
    code, _, err = run_cli("serve", "/no/such/model", "--port", str(_free_port()))
    assert code == 2 and "not found" in err
    code, _, err = run_cli("serve", tiny_ckpt, "--queue-size", "-1")
    assert code == 2 and "--queue-size" in err
    code, _, err = run_cli("serve", tiny_ckpt, "--max-body-mb", "0")
    assert code == 2 and "--max-body-mb" in err


@pytest.mark.slow
def test_serve_cli_flags(tiny_ckpt, run_cli):
    """`pocketlm serve` as a user starts it: --port, --api-key, --n-ctx, --queue-size, --max-body-mb."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "pocketlm.cli", "serve", str(tiny_ckpt), "--port", str(port),
                             "--api-key", "k1", "--n-ctx", "64", "--queue-size", "0", "--max-body-mb", "0.001"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.3)
        auth = {"Authorization": "Bearer k1"}
        assert_error(httpx.get(url + "/v1/models"), 401)                                  # --api-key
        assert httpx.get(url + "/v1/models", headers=auth).json()["data"][0]["context_length"] == 64  # --n-ctx
        r = httpx.post(url + "/v1/chat/completions", headers=auth, timeout=120,
                       json={"messages": HELLO, "max_tokens": 10 ** 6, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["total_tokens"] <= 64
        assert httpx.get(url + "/health").json()["queue_size"] == 0                       # --queue-size
        assert_error(httpx.post(url + "/v1/chat/completions", headers=auth,                # --max-body-mb
                                json={"messages": [{"role": "user", "content": "x" * 2000}]}), 413)
        code, _, err = run_cli("serve", tiny_ckpt, "--port", str(port))                   # --port taken
        assert code == 2 and "cannot listen" in err
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out


def test_documented_sections_exist():
    assert "serve POST /v1/documents" in DOCUMENTED


def test_non_streaming_client_that_leaves_cancels(server, monkeypatch):
    rt = server.runner.runtime
    step = rt._eval_token
    monkeypatch.setattr(rt, "_eval_token", lambda tok: (time.sleep(0.02), step(tok))[1])
    before = server.wait_idle()
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/chat/completions", timeout=1.5,
                   json={"messages": HELLO, "max_tokens": 3000, "temperature": 0})
    after = server.wait_idle(timeout=10)  # 3000 slow tokens would take a minute
    assert not after["running"] and after["cancelled"] == before["cancelled"] + 1


def test_messages_the_template_rejects_are_400(server, monkeypatch):
    import jinja2

    def reject(messages):
        raise jinja2.TemplateError("Conversation roles must alternate user/assistant")
    monkeypatch.setattr(server.runner.runtime, "encode_messages", reject)
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}, timeout=60)
    assert "roles must alternate" in assert_error(r, 400)["message"]


def test_a_gguf_is_served_on_llama_cpp(tiny_ckpt, tmp_path):
    """The default backend for a .gguf: the same routes on llama.cpp, greedy text equal to the engine's."""
    from pocketlm.runtime.gguf import export_gguf

    gguf = export_gguf(tiny_ckpt, tmp_path / "tiny.gguf", quant="f16")
    with serve_in_thread(gguf) as s:
        assert s.runner.backend == "llamacpp"
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
        assert client.models.list().data[0].id == "tiny"
        r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0)
        assert r.choices[0].message.content == s.runner.runtime.generate(HELLO, 6).text
        chunks = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
