// The demo page of a runyard model server, built from its openapi.json alone: one widget per input,
// examples as one-click buttons, the output drawn as its declared type. No framework, no build step,
// and only this server is talked to (the page's Content-Security-Policy says so too).
"use strict";

const state = { schema: null, inputs: [], values: {}, examples: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

async function start() {
  let schema;
  try {
    const answer = await fetch("openapi.json", { cache: "no-store" });
    schema = await answer.json();
  } catch (e) {
    setStatus(`cannot read this model's description (${e})`, "failed");
    return;
  }
  state.schema = schema;
  const inputs = schema.components.schemas.Inputs;
  const order = inputs["x-order"] || Object.keys(inputs.properties);
  state.inputs = order.map((name) => ({ name, schema: inputs.properties[name], required: inputs.required.includes(name) }));
  state.output = schema.components.schemas.Prediction.properties.output["x-runyard-type"];
  document.getElementById("title").textContent = schema.info.title;
  document.title = `${schema.info.title} · runyard`;
  document.getElementById("description").textContent = schema.info.description || "";
  const fields = document.getElementById("fields");
  for (const input of state.inputs) fields.append(widget(input));
  state.examples = schema["x-runyard-examples"] || [];
  if (state.examples.length) {
    const buttons = document.getElementById("example-buttons");
    state.examples.forEach((example, i) => {
      const button = el("button", { type: "button", class: "secondary example", text: exampleName(example, i) });
      const picture = state.inputs.find((input) => input.schema["x-runyard-type"] === "image"
                                                   && isPixels(example[input.name]));
      if (picture) { // a thumbnail says more than "Example 3"
        const thumb = el("canvas", { class: "thumb", "aria-hidden": "true" });
        drawPixels(thumb, example[picture.name], 32);
        button.prepend(thumb);
      }
      button.addEventListener("click", () => { fill(example); predict(); });
      buttons.append(button);
    });
    document.getElementById("examples").hidden = false;
  }
  document.getElementById("inputs").addEventListener("submit", (event) => { event.preventDefault(); predict(); });
  waitUntilReady();
}

function exampleName(example, i) {
  const shown = Object.values(example).filter((v) => typeof v === "string" || typeof v === "number");
  const text = shown.length ? String(shown[0]) : "";
  return text && text.length <= 24 ? text : `Example ${i + 1}`;
}

async function waitUntilReady() {
  for (;;) {
    try {
      const answer = await fetch("ready", { cache: "no-store" });
      const body = await answer.json();
      if (answer.ok) {
        setStatus("ready", "ready");
        document.getElementById("predict").disabled = false;
        return;
      }
      if (body.status === "failed") { setStatus(`the model failed to load: ${body.error}`, "failed"); return; }
      setStatus("the model is loading…", "");
    } catch (e) {
      setStatus("the server does not answer; trying again…", "failed");
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function setStatus(text, kind) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = `status ${kind}`;
}

function hint(schema) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  if (schema["x-width"]) parts.push(`${schema["x-width"]}×${schema["x-height"] || schema["x-width"]} px`);
  return parts.join(", ");
}

function widget(input) {
  const { name, schema } = input;
  const type = schema["x-runyard-type"];
  const id = `input-${name}`;
  const label = el("label", { for: id, text: name },
    el("span", { class: "hint", text: [schema.description, hint(schema), input.required ? "" : "optional"].filter(Boolean).join(" · ") }));
  const box = el("div", { class: "field", "data-field": name, "data-type": type }, label);
  let control;
  if (schema.enum) {
    control = el("select", { id, name });
    for (const choice of schema.enum) control.append(el("option", { value: JSON.stringify(choice), text: String(choice) }));
  } else if (type === "number" || type === "integer") {
    control = el("input", { id, name, type: "number", step: type === "integer" ? "1" : "any" });
    if (schema.minimum !== undefined) control.min = schema.minimum;
    if (schema.maximum !== undefined) control.max = schema.maximum;
  } else if (type === "text" || type === "json") {
    control = el("textarea", { id, name, placeholder: type === "json" ? '{"key": "value"}' : "" });
  } else if (type === "boolean") {
    control = el("input", { id, name, type: "checkbox" });
  } else if (type === "numbers") {
    control = el("input", { id, name, type: "text", placeholder: "1.5, 2, 3.25" });
  } else if (type === "image") {
    control = el("input", { id, name, type: "file", accept: "image/*" });
    const preview = el("canvas", { class: "preview", id: `preview-${name}`, hidden: "" });
    control.addEventListener("change", () => readImage(name, control.files[0], preview));
    box.append(control, preview);
    return box;
  } else if (type === "table") {
    box.append(tableEditor(name, schema["x-columns"] || ["a", "b"]));
    return box;
  }
  if (schema.default !== undefined) setControl(control, type, schema.default);
  box.append(control);
  return box;
}

function setControl(control, type, value) {
  if (control.tagName === "SELECT") control.value = JSON.stringify(value);
  else if (type === "boolean") control.checked = Boolean(value);
  else if (type === "numbers") control.value = value.join(", ");
  else if (type === "json") control.value = JSON.stringify(value, null, 1);
  else control.value = String(value);
}

function readImage(name, file, canvas) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.values[name] = reader.result; // a data: URL, sent as it is
    const picture = new Image();
    picture.onload = () => {
      canvas.width = picture.naturalWidth;
      canvas.height = picture.naturalHeight;
      canvas.getContext("2d").drawImage(picture, 0, 0);
      scalePreview(canvas);
    };
    picture.src = reader.result;
  };
  reader.readAsDataURL(file);
}

function scalePreview(canvas) {
  canvas.hidden = false;
  const scale = Math.max(1, Math.floor(160 / Math.max(canvas.width, canvas.height)));
  canvas.style.width = `${canvas.width * scale}px`;
  canvas.style.height = `${canvas.height * scale}px`;
}

function isPixels(value) {
  return Array.isArray(value) && value.length > 0 && Array.isArray(value[0]) && value[0].length > 0;
}

function drawPixels(canvas, rows, size) {
  const height = rows.length, width = rows[0].length;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = rows[y][x];
      const [r, g, b] = Array.isArray(p) ? p : [p, p, p];
      image.data.set([r, g, b, 255], (y * width + x) * 4);
    }
  }
  context.putImageData(image, 0, 0);
  if (size) { // a thumbnail: drawn at a fixed size, never shown as the input's preview
    const scale = size / Math.max(width, height);
    canvas.style.width = `${width * scale}px`;
    canvas.style.height = `${height * scale}px`;
  } else scalePreview(canvas);
}

function tableEditor(name, columns) {
  const table = el("table", { class: "editable", id: `input-${name}` });
  const head = el("tr");
  for (const column of columns) head.append(el("th", { text: column }));
  table.append(head);
  const addRow = (values) => {
    const row = el("tr");
    columns.forEach((column, i) => row.append(el("td", {}, el("input", { "aria-label": column, value: values ? String(values[i] ?? "") : "" }))));
    table.append(row);
  };
  addRow();
  const more = el("button", { type: "button", class: "secondary", text: "+ row" });
  more.addEventListener("click", () => addRow());
  table.addRow = addRow;
  table.columns = columns;
  return el("div", {}, table, more);
}

function cell(text) {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  const number = Number(trimmed);
  return Number.isFinite(number) ? number : trimmed;
}

function fill(example) {
  for (const input of state.inputs) {
    if (!(input.name in example)) continue;
    const value = example[input.name];
    const type = input.schema["x-runyard-type"];
    if (type === "image") {
      state.values[input.name] = value;
      const canvas = document.getElementById(`preview-${input.name}`);
      if (isPixels(value)) drawPixels(canvas, value);
      else if (typeof value === "string") {
        const picture = new Image();
        picture.onload = () => { canvas.width = picture.naturalWidth; canvas.height = picture.naturalHeight;
          canvas.getContext("2d").drawImage(picture, 0, 0); scalePreview(canvas); };
        picture.src = value.startsWith("data:") ? value : `data:image/png;base64,${value}`;
      }
    } else if (type === "table") {
      const table = document.getElementById(`input-${input.name}`);
      table.querySelectorAll("tr:not(:first-child)").forEach((row) => row.remove());
      const rows = Array.isArray(value) ? value.map((r) => table.columns.map((c) => r[c])) : value.rows;
      rows.forEach((r) => table.addRow(r));
    } else {
      setControl(document.getElementById(`input-${input.name}`), type, value);
    }
  }
}

function collect() {
  const body = {};
  for (const input of state.inputs) {
    const type = input.schema["x-runyard-type"];
    const control = document.getElementById(`input-${input.name}`);
    let value;
    if (type === "image") value = state.values[input.name];
    else if (type === "table") {
      const rows = [...control.querySelectorAll("tr:not(:first-child)")]
        .map((row) => [...row.querySelectorAll("input")].map((i) => cell(i.value)))
        .filter((row) => row.some((v) => v !== null));
      value = { columns: control.columns, rows };
    } else if (control.tagName === "SELECT") value = JSON.parse(control.value);
    else if (type === "boolean") value = control.checked;
    else if (control.value.trim() === "") value = undefined;
    else if (type === "number" || type === "integer") value = Number(control.value);
    else if (type === "numbers") value = control.value.split(/[\s,]+/).filter(Boolean).map(Number);
    else if (type === "json") { try { value = JSON.parse(control.value); } catch (e) { value = control.value; } }
    else value = control.value;
    if (value !== undefined) body[input.name] = value;
  }
  return body;
}

async function predict() {
  const button = document.getElementById("predict");
  const error = document.getElementById("error");
  document.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
  error.hidden = true;
  button.disabled = true;
  const started = performance.now();
  try {
    const answer = await fetch("predict", { method: "POST", headers: { "content-type": "application/json" },
                                            body: JSON.stringify(collect()) });
    const body = await answer.json().catch(() => ({ error: `the server answered ${answer.status}` }));
    if (!answer.ok) {
      error.textContent = body.error || `the server answered ${answer.status}`;
      error.hidden = false;
      const field = body.field && document.querySelector(`.field[data-field="${CSS.escape(body.field)}"]`);
      if (field) field.classList.add("invalid");
      document.getElementById("output").replaceChildren();
      return;
    }
    show(body.output);
    document.getElementById("timing").textContent =
      `${body.ms.toFixed(1)} ms in the model server, ${(performance.now() - started).toFixed(0)} ms here`;
  } catch (e) {
    error.textContent = `the server does not answer (${e})`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function show(output) {
  const place = document.getElementById("output");
  const type = state.output;
  let node;
  if (type === "scores") {
    // A score the server could not send as a number (NaN) arrives as null: shown as such, last.
    const entries = Object.entries(output).map(([k, v]) => [k, typeof v === "number" ? v : null])
      .sort((a, b) => (b[1] ?? -Infinity) - (a[1] ?? -Infinity));
    const top = entries.length ? entries[0][1] : 0;
    const most = Math.max(...entries.map((e) => Math.abs(e[1] ?? 0)), 1e-12);
    node = el("div", { class: "bars", id: "scores" });
    entries.forEach(([label, score], i) => {
      const bar = el("div", { class: `bar${i === 0 ? " top" : ""}` });
      bar.style.width = `${(100 * Math.abs(score ?? 0)) / most}%`;
      node.append(el("span", { class: `label${i === 0 && score === top ? " top" : ""}`, text: label }), bar,
                  el("span", { class: "score", text: score === null ? "NaN" : score.toFixed(3) }));
    });
    if (entries.length) place.replaceChildren(el("p", { class: "answer", id: "answer", text: entries[0][0] }), node);
    else place.replaceChildren(node);
    return;
  }
  if (type === "image") node = el("img", { class: "preview", src: output, alt: "output image" });
  else if (type === "table") {
    node = el("table", { class: "result" });
    node.append(el("tr", {}, ...output.columns.map((c) => el("th", { text: String(c) }))));
    for (const row of output.rows) {
      const cells = Array.isArray(row) ? row : [row];
      node.append(el("tr", {}, ...cells.map((v) => el("td", { text: String(v) }))));
    }
  } else if (type === "json" || type === "numbers") node = el("pre", { id: "answer", text: JSON.stringify(output, null, 1) });
  else node = el("p", { class: "answer", id: "answer", text: String(output) });
  place.replaceChildren(node);
}

start();
