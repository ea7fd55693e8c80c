// The official openai npm SDK against the platform's edge. Run by tests/compat/test_node_sdk.py:
// OPENAI_BASE_URL and OPENAI_API_KEY point at a platform wired to the provider simulator. Prints
// one JSON object with what the SDK saw; any failed expectation exits non-zero with the reason.
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });
const out = {};

const chat = await client.chat.completions.create({
  model: "sim-chat", messages: [{ role: "user", content: "hello from node" }],
});
assert.equal(chat.model, "sim-chat");
out.chat = chat.choices[0].message.content;

const { data: raw, response } = await client.chat.completions
  .create({ model: "sim-chat", messages: [{ role: "user", content: "headers" }] })
  .withResponse();
out.headers = Object.fromEntries(["x-request-id", "x-model", "x-input-tokens", "x-output-tokens",
  "x-cache-status", "x-wallet-debit"].map((h) => [h, response.headers.get(h)]));
assert.ok(raw.id);

const stream = await client.chat.completions.create({
  model: "sim-chat", stream: true, stream_options: { include_usage: true },
  messages: [{ role: "user", content: "stream [[sim chunks=4]]" }],
});
let text = "";
let usage = null;
let xnx = null;
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) { usage = chunk.usage; xnx = chunk.x_nx; }
}
out.stream = { text, usage, xnx };

const b64 = await client.embeddings.create({ model: "sim/embed", input: ["a", "b"] });
const flt = await client.embeddings.create({ model: "sim/embed", input: ["a", "b"], encoding_format: "float" });
out.embeddings = {
  default: b64.data.map((d) => Array.from(d.embedding)),
  float: flt.data.map((d) => d.embedding),
  indexes: b64.data.map((d) => d.index),
};

const models = [];
for await (const m of client.models.list()) models.push(m.id);
out.models = models;

async function failure(fn) {
  try {
    await fn();
  } catch (err) {
    return { name: err.constructor.name, status: err.status ?? null, code: err.code ?? null,
             param: err.param ?? null, request_id: err.requestID ?? null, message: String(err.message) };
  }
  return null;
}
const ask = (content, model = "sim-chat", extra = {}) => () =>
  client.chat.completions.create({ model, messages: [{ role: "user", content }], ...extra });
out.errors = {
  rate_limited: await failure(ask("[[sim status=429 retry_after=1]]")),
  upstream_5xx: await failure(ask("[[sim status=500]]")),
  capability: await failure(ask("x", "sim/plain", { tools: [{ type: "function", function: { name: "f" } }] })),
  unknown_model: await failure(ask("x", "no-such-model")),
  bad_key: await failure(() => new OpenAI({ apiKey: "nx_live_wrong", maxRetries: 0 }).models.list()),
  cut: await failure(async () => {
    const s = await client.chat.completions.create({
      model: "sim-chat", stream: true, messages: [{ role: "user", content: "[[sim chunks=10 cut_after=3]]" }] });
    for await (const _ of s) { /* drain */ }
  }),
};
process.stdout.write(JSON.stringify(out));
