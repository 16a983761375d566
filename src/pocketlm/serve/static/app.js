// pocketlm web page: plain browser JavaScript, no build step. Talks to the server's own API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, history: [], abort: null };

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) { $("status").textContent = message || ""; }

async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

async function loadModel() {
  const r = await fetch("/v1/models", { headers: headers(false) });
  if (!r.ok) { $("model-name").textContent = "(set the API key in settings)"; showError(await errorMessage(r)); return; }
  const body = await r.json();
  state.model = body.data[0].id;
  $("model-name").textContent = state.model + " · context " + body.data[0].context_length;
  showError("");
}

// ---- tabs
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === b.dataset.panel));
}));
$("api-key").addEventListener("change", () => { localStorage.setItem("pocketlm-key", $("api-key").value); loadModel(); });
$("api-key").value = localStorage.getItem("pocketlm-key") || "";

// ---- chat, streamed over server-sent events
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  div.dataset.chunks = "0";
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

// Calls onEvent(json) for each `data:` event of an SSE response body.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function sendChat(text) {
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  bubble.classList.add("streaming");
  state.abort = new AbortController();
  $("chat-send").disabled = true; $("chat-stop").disabled = false;
  showError("");
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.abort.signal,
      body: JSON.stringify({
        model: state.model, messages: state.history, stream: true,
        temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!r.ok) throw new Error(await errorMessage(r));
    await readEvents(r, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        bubble.textContent += delta.content;
        bubble.dataset.chunks = String(Number(bubble.dataset.chunks) + 1);
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    });
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    state.history.push({ role: "assistant", content: bubble.textContent });
    bubble.classList.remove("streaming");
    bubble.classList.add("done");
    $("chat-send").disabled = false; $("chat-stop").disabled = true;
    state.abort = null;
  }
}

$("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || state.abort) return;
  $("chat-input").value = "";
  sendChat(text);
});
$("chat-input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("chat-form").requestSubmit(); }
});
$("chat-stop").addEventListener("click", () => state.abort && state.abort.abort());
$("chat-clear").addEventListener("click", () => { state.history = []; $("messages").replaceChildren(); });

// ---- documents
$("doc-task").addEventListener("change", () => { $("doc-question-label").hidden = $("doc-task").value !== "answer"; });

$("doc-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData();
  form.append("file", $("doc-file").files[0]);
  form.append("task", $("doc-task").value);
  if ($("doc-task").value === "answer") form.append("question", $("doc-question").value);
  form.append("max_tokens", $("max-tokens").value);
  $("doc-run").disabled = true; $("doc-result").textContent = "working…"; $("doc-result").classList.remove("done");
  $("doc-meta").textContent = ""; showError("");
  try {
    const r = await fetch("/v1/documents", { method: "POST", headers: headers(false), body: form });
    if (!r.ok) throw new Error(await errorMessage(r));
    const body = await r.json();
    $("doc-result").textContent = body.response || "(the model gave no answer)";
    $("doc-result").classList.add("done");
    $("doc-meta").textContent = body.doc_tokens + " document tokens" + (body.truncated ? " (truncated)" : "")
      + " · first token " + body.ttft_s.toFixed(2) + " s · " + body.decode_tok_s.toFixed(1) + " tok/s";
  } catch (e) {
    $("doc-result").textContent = ""; showError(e.message);
  } finally {
    $("doc-run").disabled = false;
  }
});

// ---- intent
$("intent-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("intent-run").disabled = true; $("intent-calls").textContent = "working…"; $("intent-adb").textContent = "";
  $("intent-calls").classList.remove("done"); showError("");
  try {
    const r = await fetch("/v1/intent", { method: "POST", headers: headers(), body: JSON.stringify({ text: $("intent-text").value }) });
    if (!r.ok) throw new Error(await errorMessage(r));
    const body = await r.json();
    $("intent-calls").textContent = body.error ? "no call read: " + body.error + "\n" + body.output
      : body.calls.map((c) => c.name + "(" + JSON.stringify(c.arguments) + ")").join("\n");
    $("intent-adb").textContent = body.adb.filter(Boolean).join("\n") || "(none)";
    $("intent-calls").classList.add("done");
  } catch (e) {
    $("intent-calls").textContent = ""; showError(e.message);
  } finally {
    $("intent-run").disabled = false;
  }
});

loadModel();
