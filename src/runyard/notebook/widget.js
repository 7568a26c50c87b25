// The view of runyard.notebook.widget.RunWidget (anywidget: https://anywidget.dev). It ticks the
// elapsed time itself between the kernel's updates, which come once a second at most.
const ENDED = new Set(["finished", "failed", "stopped", "timeout", "lost"]);
function clock(seconds) {
  if (seconds === null || seconds === undefined) return "not started";
  const s = Math.max(0, Math.floor(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}
function spark(values) {
  const ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "80"); svg.setAttribute("height", "18"); svg.style.verticalAlign = "middle";
  if (values.length > 1) {
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const pts = values.map((v, i) => `${(i * 78 / (values.length - 1) + 1).toFixed(1)},${(16 - (v - lo) / span * 14 + 1).toFixed(1)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" ")); line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor"); line.setAttribute("stroke-width", "1.2");
    svg.appendChild(line);
  }
  return svg;
}
function render({ model, el }) {
  const box = document.createElement("div");
  box.style.cssText = "font-family: var(--jp-ui-font-family, sans-serif); font-size: 13px; padding: 4px 0;";
  el.appendChild(box);
  let received = Date.now();
  const head = document.createElement("div"), time = document.createElement("span");
  const status = document.createElement("b"), link = document.createElement("a"), stop = document.createElement("button");
  const note = document.createElement("span"), table = document.createElement("div");
  link.target = "_blank"; stop.textContent = "Stop"; stop.style.marginLeft = "8px";
  note.style.cssText = "margin-left: 8px; opacity: 0.7;";
  head.append(link, document.createTextNode(" "), status, document.createTextNode(" "), time, stop, note);
  box.append(head, table);
  stop.addEventListener("click", () => { stop.disabled = true; model.send({ type: "stop" }); });
  const tick = () => {
    const e = model.get("elapsed"), st = model.get("status");
    time.textContent = clock(e === null ? null : (ENDED.has(st) || st !== "running" ? e : e + (Date.now() - received) / 1000));
  };
  const draw = () => {
    received = Date.now();
    const st = model.get("status");
    link.href = model.get("url"); link.textContent = `run ${model.get("number")} ${model.get("title")}`;
    status.textContent = st;
    status.style.color = st === "finished" ? "#1a7f37" : (ENDED.has(st) ? "#cf222e" : "inherit");
    stop.style.display = ENDED.has(st) ? "none" : "";
    note.textContent = model.get("message");
    table.replaceChildren(...model.get("metrics").map((m) => {
      const row = document.createElement("div"), key = document.createElement("span");
      key.textContent = `${m.key} `; key.style.opacity = "0.8";
      const val = document.createElement("span"); val.textContent = ` ${m.text}` + (m.step === null ? "" : ` (step ${m.step})`);
      row.append(key, spark(m.spark), val);
      return row;
    }));
    tick();
  };
  model.on("change", draw);
  draw();
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}
export default { render };
