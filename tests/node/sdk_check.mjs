// Drives a running gateway with the official openai Node SDK, exactly as users' code would.
// Usage: node sdk_check.mjs BASE_URL API_KEY   -> prints one JSON line with what it saw.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const models = [];
for await (const model of client.models.list()) models.push(model.id);

const image = await client.images.generate({
  model: "local-preview",
  prompt: "a lighthouse at dusk",
  size: "320x200",
  output_format: "jpeg",
});

let error = null;
try {
  await client.images.generate({ model: "no-such-model", prompt: "x" });
} catch (e) {
  error = { status: e.status, code: e.code, param: e.param, type: e.type, name: e.constructor.name };
}

const bytes = Buffer.from(image.data[0].b64_json, "base64");
console.log(JSON.stringify({
  models,
  size: image.size,
  jpeg: bytes[0] === 0xff && bytes[1] === 0xd8,
  bytes: bytes.length,
  cost: image.usage?.cost?.total_cost,
  error,
}));
