// A scripted stand-in for a language model: an OpenAI-compatible Chat
// Completions endpoint on 127.0.0.1 that lets an OpenClaw agent turn run
// without any provider. The user message says which tool to call:
//
//   CALL <tool-name> <json arguments>
//
// First request of a turn: answer with exactly that tool call (or, if the
// tool was not offered, with a text naming the tools that were). Once the
// conversation holds a tool result: answer with a final text that quotes it.
// Answering "final" as soon as any tool result exists matters: OpenClaw may
// append a user message after tool results, and a model that calls again
// each time loops forever.
//
//   node fake-model.mjs PORT LOG_FILE
// Every request (tools offered, roles seen) is appended to LOG_FILE as JSON lines.

import fs from "node:fs";
import http from "node:http";

const [port, logFile] = process.argv.slice(2);
let sequence = 0;

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p === "string" ? p : p?.text ?? "")).join("");
  return content == null ? "" : JSON.stringify(content);
}

function answer(res, body, message, finishReason) {
  const id = `fake-${++sequence}`;
  const created = Math.floor(Date.now() / 1000);
  const model = body.model ?? "fake-model";
  const usage = { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 };
  if (!body.stream) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ id, object: "chat.completion", created, model, usage,
      choices: [{ index: 0, message, finish_reason: finishReason }] }));
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const chunk = (delta, finish) => res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model,
    choices: [{ index: 0, delta, finish_reason: finish }], ...(finish ? { usage } : {}) })}\n\n`);
  const delta = { role: "assistant" };
  if (message.content) delta.content = message.content;
  if (message.tool_calls) delta.tool_calls = message.tool_calls.map((call, index) => ({ index, ...call }));
  chunk(delta, null);
  chunk({}, finishReason);
  res.end("data: [DONE]\n\n");
}

http.createServer((req, res) => {
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", () => {
    if (req.method === "GET" && req.url.endsWith("/models")) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ object: "list", data: [{ id: "fake-model", object: "model", owned_by: "tests" }] }));
      return;
    }
    if (!req.url.includes("/chat/completions")) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end("{}");
      return;
    }
    let body = {};
    try {
      body = JSON.parse(Buffer.concat(parts).toString("utf8") || "{}");
    } catch {
      res.writeHead(400);
      res.end("bad json");
      return;
    }
    const messages = body.messages ?? [];
    const offered = (body.tools ?? []).map((t) => t.function?.name ?? t.name);
    const results = messages.filter((m) => m.role === "tool").map((m) => textOf(m.content));
    fs.appendFileSync(logFile, `${JSON.stringify({ offered, roles: messages.map((m) => m.role), results })}\n`);
    if (results.length > 0) {
      answer(res, body, { role: "assistant", content: `TOOL RESULT: ${results[results.length - 1]}` }, "stop");
      return;
    }
    const prompt = messages.filter((m) => m.role === "user").map((m) => textOf(m.content)).join("\n");
    const wanted = /CALL\s+(\S+)\s*(\{.*\})?\s*$/m.exec(prompt);
    if (!wanted || !offered.includes(wanted[1])) {
      answer(res, body, { role: "assistant", content: `NO SUCH TOOL ${wanted?.[1] ?? "(none asked)"}; offered: ${offered.join(", ")}` }, "stop");
      return;
    }
    answer(res, body, { role: "assistant", content: null, tool_calls: [{ id: `call_${sequence + 1}`, type: "function",
      function: { name: wanted[1], arguments: wanted[2] ?? "{}" } }] }, "tool_calls");
  });
}).listen(Number(port), "127.0.0.1", () => process.stdout.write(`fake model on 127.0.0.1:${port}\n`));
