// The official openai npm SDK on /v1/responses (run by tests/responses/test_node_sdk_responses.py
// against a platform wired to the provider simulator). Prints one JSON object with what it saw.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });
const out = { models: {} };
const weather = { type: "function", name: "get_weather", strict: true, parameters: {
  type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false } };

for (const model of ["sim/chat", "sim/openai", "sim/claude"]) {
  const created = await client.responses.create({ model, input: "hello from node" });
  const stream = client.responses.stream({ model, input: "stream [[sim chunks=5]]" });
  let deltas = "";
  stream.on("response.output_text.delta", (e) => { deltas += e.delta; });
  const final = await stream.finalResponse();
  out.models[model] = { create: { id: created.id, status: created.status, text: created.output_text },
                        stream: { status: final.status, text: final.output_text, deltas } };
}

const first = await client.responses.create({ model: "sim/chat", input: "Weather in Oslo?", tools: [weather] });
const call = first.output.find((i) => i.type === "function_call");
const second = await client.responses.create({ model: "sim/chat", previous_response_id: first.id, tools: [weather],
  input: [{ type: "function_call_output", call_id: call.call_id, output: "5C" }] });
out.tools = { name: call.name, arguments: JSON.parse(call.arguments), second: second.status,
              previous: second.previous_response_id === first.id };

const queued = await client.responses.create({ model: "sim/chat", input: "[[sim chunks=4 chunk_ms=20]]",
                                               background: true });
let polled = queued;
for (let i = 0; i < 200 && ["queued", "in_progress"].includes(polled.status); i++) {
  await new Promise((r) => setTimeout(r, 50));
  polled = await client.responses.retrieve(queued.id);
}
out.background = { first: queued.status, last: polled.status, text: polled.output_text };

try {
  await client.responses.create({ model: "sim/plain", input: "x", tools: [weather] });
  out.capability = null;
} catch (err) {
  out.capability = { status: err.status, code: err.code, param: err.param, request_id: err.requestID ?? null };
}
process.stdout.write(JSON.stringify(out));
