// The console's only script: copy buttons, and the playground (prompt counter, the request
// body built from the generated form, code snippets, running it plain or streamed).
// Pages work without it except the playground. No token is ever read or stored here: the
// session cookie is HttpOnly and the CSRF token comes from the page's <meta>.
"use strict";

(function () {
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = () => $('meta[name="csrf-token"]').content;

  // copy buttons: <button data-copy="#id">, the target's value or text ----------------------
  async function copyFrom(button) {
    const target = $(button.dataset.copy);
    if (!target) return;
    const text = "value" in target ? target.value : target.textContent;
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch (_) {
      if ("select" in target) {
        target.select();
        copied = document.execCommand("copy");
      }
    }
    const status = button.closest("section, .card")?.querySelector(".copy-status");
    if (status) status.textContent = copied ? "Copied." : "Select the text and copy it.";
    button.textContent = copied ? "Copied" : "Copy";
  }
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy]");
    if (button) copyFrom(button);
  });

  // the playground ---------------------------------------------------------------------------
  const form = () => $("#playground");
  const fields = () => $("#pg-fields");

  function usd(value) {
    let text = Number(value).toFixed(6).replace(/0+$/, "");
    const [whole, frac = ""] = text.split(".");
    return `$${whole}.${frac.padEnd(2, "0")}`;
  }

  function readValue(element) {
    const type = element.dataset.type;
    if (type === "boolean") return element.checked;
    if (type === "enum") return JSON.parse(element.value);
    if (element.value === "") return null;
    if (type === "integer") return Number.parseInt(element.value, 10);
    if (type === "number") return Number(element.value);
    return element.value;
  }

  // the exact JSON body of POST /v1/images/generations: only what differs from the defaults
  function requestBody() {
    const root = fields();
    const body = { model: root.dataset.model, prompt: $("#pg-prompt").value };
    const stream = $("#pg-stream")?.checked === true;
    for (const element of root.querySelectorAll("[data-param]")) {
      if (element.hasAttribute("data-stream-only") && !stream) continue;
      const value = readValue(element);
      const fallback = JSON.parse(element.dataset.default || "null");
      const same = element.dataset.type === "boolean" ? value === Boolean(fallback) : value === fallback;
      if (value === null || same) continue;
      body[element.dataset.param] = value;
    }
    return body;
  }

  function referenceFiles() {
    const input = $("#pg-images");
    return input ? Array.from(input.files) : [];
  }

  // snippets -----------------------------------------------------------------------------------
  const SDK_FIELDS = new Set([
    "n", "size", "quality", "response_format", "output_format", "stream", "partial_images",
    "user", "background", "moderation", "output_compression", "style",
  ]);

  function python(value) {
    if (value === true) return "True";
    if (value === false) return "False";
    if (value === null) return "None";
    if (typeof value === "object") {
      const items = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${python(v)}`);
      return `{${items.join(", ")}}`;
    }
    return JSON.stringify(value);
  }

  function shellQuote(text) {
    return `'${text.replace(/'/g, `'\\''`)}'`;
  }

  function snippets(body, files) {
    const origin = window.location.origin;
    const edit = files.length > 0;
    const names = files.map((_, i) => `reference-${i + 1}${extension(files[i])}`);
    const { model, prompt, ...rest } = body;
    const known = Object.entries(rest).filter(([k]) => SDK_FIELDS.has(k));
    const extra = Object.fromEntries(Object.entries(rest).filter(([k]) => !SDK_FIELDS.has(k)));
    const call = edit ? "edit" : "generate";

    const py = [`    model=${python(model)},`, `    prompt=${python(prompt)},`];
    if (edit) py.push(`    image=[${names.map((n) => `open(${python(n)}, "rb")`).join(", ")}],`);
    for (const [k, v] of known) py.push(`    ${k}=${python(v)},`);
    if (Object.keys(extra).length) py.push(`    extra_body=${python(extra)},  # model-specific fields`);
    const pyLines = [
      "import base64, os",
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url=${python(origin + "/v1")}, api_key=os.environ["IMAGE_GATEWAY_KEY"])`,
      body.stream ? `for event in client.images.${call}(` : `result = client.images.${call}(`,
      ...py,
      body.stream ? "):" : ")",
    ];
    if (body.stream) pyLines.push("    print(event.type)");
    else pyLines.push('open("image.png", "wb").write(base64.b64decode(result.data[0].b64_json))');

    const nodeBody = { model, prompt, ...rest };
    const nodeArgs = JSON.stringify(nodeBody, null, 2).split("\n");
    if (edit) {
      nodeArgs.splice(1, 0, `  "image": [${names.map((n) => `fs.createReadStream(${JSON.stringify(n)})`).join(", ")}],`);
    }
    const nodeLines = [
      ...(edit ? ['import fs from "node:fs";'] : []),
      'import OpenAI from "openai";',
      "",
      `const client = new OpenAI({ baseURL: ${JSON.stringify(origin + "/v1")}, apiKey: process.env.IMAGE_GATEWAY_KEY });`,
      `const result = await client.images.${call}(${nodeArgs.join("\n")});`,
      body.stream ? "for await (const event of result) console.log(event.type);" : "console.log(result.size, result.usage);",
    ];

    let curl;
    if (edit) {
      const parts = Object.entries(body).map(([k, v]) => `  -F ${shellQuote(`${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)}`);
      parts.push(...names.map((n) => `  -F ${shellQuote(`image[]=@${n}`)}`));
      curl = [`curl${body.stream ? " -N" : ""} ${origin}/v1/images/edits`, '  -H "Authorization: Bearer $IMAGE_GATEWAY_KEY"', ...parts];
    } else {
      curl = [
        `curl${body.stream ? " -N" : ""} ${origin}/v1/images/generations`,
        '  -H "Authorization: Bearer $IMAGE_GATEWAY_KEY"',
        '  -H "Content-Type: application/json"',
        `  -d ${shellQuote(JSON.stringify(body))}`,
      ];
    }
    return { python: pyLines.join("\n"), node: nodeLines.join("\n"), curl: curl.join(" \\\n") };
  }

  function extension(file) {
    return { "image/jpeg": ".jpg", "image/webp": ".webp" }[file.type] || ".png";
  }

  function refresh() {
    if (!fields()) return;
    const prompt = $("#pg-prompt");
    const max = Number(prompt.dataset.max);
    const count = $("[data-count]");
    count.textContent = String(prompt.value.length);
    const over = prompt.value.length > max;
    prompt.setAttribute("aria-invalid", over ? "true" : "false");
    $("#pg-prompt-count").classList.toggle("over", over);
    const partials = $("#pg-partials");
    if (partials) partials.disabled = $("#pg-stream")?.checked !== true;
    const code = snippets(requestBody(), referenceFiles());
    for (const [lang, text] of Object.entries(code)) $(`#snippet-${lang}`).textContent = text;
  }

  // running it ---------------------------------------------------------------------------------
  function status(text, kind) {
    const element = $("#pg-status");
    element.textContent = text;
    element.className = kind || "";
  }

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function imageSource(item, format) {
    return item.url || `data:image/${format};base64,${item.b64_json}`;
  }

  function showImage(src, caption, { partial = false } = {}) {
    const output = $("#pg-output");
    let figure = partial ? $("figure.partial", output) : null;
    if (!figure) {
      figure = document.createElement("figure");
      figure.append(document.createElement("img"), document.createElement("figcaption"));
      output.append(figure);
    }
    figure.className = partial ? "partial" : "final";
    const img = figure.querySelector("img");
    const label = figure.querySelector("figcaption");
    img.alt = caption;
    img.addEventListener("load", () => {
      label.textContent = `${caption}: ${img.naturalWidth}x${img.naturalHeight} px`;
      label.dataset.size = `${img.naturalWidth}x${img.naturalHeight}`;
    }, { once: true });
    img.src = src;
    return figure;
  }

  function charged(usage, accountName, requestId) {
    const cost = usage?.cost?.total_cost;
    const line = document.createElement("p");
    line.className = "charged";
    line.dataset.testid = "charged";
    line.textContent = `Charged ${cost === undefined ? "(unknown)" : usd(cost)} to ${accountName}.`;
    if (requestId) {
      const link = document.createElement("a");
      link.href = `/console/requests/${encodeURIComponent(requestId)}`;
      link.textContent = " Open the request";
      line.append(link);
    }
    $("#pg-output").append(line);
  }

  function errorText(payload, fallback) {
    return payload?.error?.message || fallback;
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  async function run(event) {
    event.preventDefault();
    const keyId = $("#pg-key")?.value;
    if (!keyId) return status("Choose an account with an active key first.", "error");
    const prompt = $("#pg-prompt");
    if (prompt.value.length > Number(prompt.dataset.max)) {
      return status(`The prompt is longer than ${prompt.dataset.max} characters.`, "error");
    }
    const body = requestBody();
    const files = referenceFiles();
    const limit = Number($("#pg-images")?.dataset.maxFiles || 0);
    if (files.length > limit) return status(`At most ${limit} reference images.`, "error");
    const endpoint = files.length ? "edits" : "generations";
    if (files.length) {
      body.images = await Promise.all(files.map(async (f) => ({ image_url: await readAsDataUrl(f) })));
    }
    const format = body.output_format || JSON.parse($("#pg-format").dataset.default);
    const account = $("#pg-account").selectedOptions[0]?.dataset.name || "the account";
    const button = $("#pg-run");
    button.disabled = true;
    $("#pg-output").replaceChildren();
    status(body.stream ? "Streaming…" : "Generating…");
    try {
      const response = await fetch(`/console/playground/${endpoint}?key_id=${encodeURIComponent(keyId)}`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify(body),
      });
      const requestId = response.headers.get("x-request-id");
      if (!response.ok) {
        const payload = await response.json().catch(() => null);
        return status(`Refused (${response.status}): ${errorText(payload, response.statusText)}`, "error");
      }
      if (!body.stream) {
        const result = await response.json();
        result.data.forEach((item, i) => showImage(imageSource(item, format), `Image ${i + 1} of ${result.data.length}`));
        charged(result.usage, account, requestId);
        return status(`Done: ${result.data.length} image(s), ${result.size}.`, "done");
      }
      let partials = 0;
      let images = 0;
      let failed = null;
      await readEvents(response, (name, payload) => {
        if (name.endsWith(".partial_image")) {
          partials += 1;
          showImage(imageSource(payload, format), `Partial image ${payload.partial_image_index + 1}`, { partial: true });
          status(`Streaming: partial image ${partials} received…`);
        } else if (name.endsWith(".completed")) {
          images += 1;
          $("figure.partial")?.remove();
          showImage(imageSource(payload, format), `Image ${payload.index + 1}`);
          if (payload.usage) charged(payload.usage, account, requestId);
        } else if (name === "error") {
          failed = errorText(payload, "the stream failed");
        }
      });
      if (failed) return status(`Failed: ${failed}`, "error");
      status(`Done (streamed): ${images} image(s) after ${partials} partial image(s).`, "done");
    } catch (error) {
      status(`Failed: ${error}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const playground = form();
    if (!playground) return;
    playground.addEventListener("input", refresh);
    playground.addEventListener("change", refresh);
    playground.addEventListener("submit", run);
    // another model's form keeps what was typed as the prompt
    let keptPrompt = null;
    document.body.addEventListener("htmx:beforeSwap", (event) => {
      if (event.detail.target.id === "pg-fields-slot") keptPrompt = $("#pg-prompt")?.value ?? null;
    });
    document.body.addEventListener("htmx:afterSwap", () => {
      const prompt = $("#pg-prompt");
      if (keptPrompt !== null && prompt) prompt.value = keptPrompt;
      keptPrompt = null;
      refresh();
    });
    refresh();
  });
})();
