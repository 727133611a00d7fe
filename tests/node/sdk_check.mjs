// Drives a running gateway with the official openai Node SDK, exactly as users' code would.
// Usage: node sdk_check.mjs BASE_URL API_KEY   -> prints one JSON line with what it saw.
import OpenAI, { toFile } from "openai";

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

// An edit of two reference images (multipart, `image[]`), then a streamed generation.
const edited = await client.images.edit({
  model: "local-preview",
  image: [
    await toFile(bytes, "a.jpg", { type: "image/jpeg" }),
    await toFile(bytes, "b.jpg", { type: "image/jpeg" }),
  ],
  prompt: "the same, warmer",
  size: "128x96",
});
const events = [];
const stream = await client.images.generate({
  model: "local-preview", prompt: "a fox", size: "96x64", n: 2, stream: true,
});
for await (const event of stream) events.push(event);

console.log(JSON.stringify({
  editSize: edited.size,
  streamTypes: events.map((event) => event.type),
  streamCost: events.at(-1)?.usage?.cost?.total_cost,
  models,
  size: image.size,
  jpeg: bytes[0] === 0xff && bytes[1] === 0xd8,
  bytes: bytes.length,
  cost: image.usage?.cost?.total_cost,
  error,
}));
