// One metric of one or more runs, drawn with uPlot on a canvas.
//
// Zoomed out, a series is drawn as its exact envelope (per bucket min, max and mean, one bucket per
// pixel column) so a million points cost a thousand; once the visible range holds few enough
// points, the raw points themselves are fetched and drawn. Dragging zooms (the range goes into the
// URL), a double click zooms out.
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, SeriesInfo } from "../api";

/** Below this many points in the visible range, raw points are drawn instead of the envelope. */
export const RAW_LIMIT = 4000;
/** The time axis needs raw points (the envelope is by step): up to this many. */
const TIME_AXIS_LIMIT = 250_000;

export interface Line {
  run: number;
  label: string;
  color: string;
  info: SeriesInfo | undefined;
}

export interface ChartOptions {
  axis: "step" | "time";
  log: boolean;
  smoothing: number; // 0 (none) .. 0.99
}

interface Props {
  metric: string;
  lines: Line[];
  options: ChartOptions;
  zoom: [number, number] | null;
  onZoom: (range: [number, number] | null) => void;
  height?: number;
}

interface Drawn {
  xs: number[];
  mean: (number | null)[];
  min: (number | null)[];
  max: (number | null)[];
  raw: boolean;
}

export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
  "#4f46e5", "#65a30d", "#0d9488", "#b91c1c", "#7c3aed", "#c2410c", "#0369a1", "#a16207", "#be185d", "#15803d",
  "#6d28d9", "#334155"];

function expectedPoints(info: SeriesInfo | undefined, zoom: [number, number] | null): number {
  if (!info || info.first_step === null || info.last_step === null) return 0;
  if (!zoom) return info.count;
  const span = Math.max(1, info.last_step - info.first_step + 1);
  const lo = Math.max(zoom[0], info.first_step);
  const hi = Math.min(zoom[1], info.last_step);
  return hi < lo ? 0 : Math.ceil((info.count * (hi - lo + 1)) / span);
}

function ema(values: (number | null)[], alpha: number): (number | null)[] {
  if (alpha <= 0) return values;
  let last: number | null = null;
  return values.map((v) => {
    if (v === null || !isFinite(v)) return v;
    last = last === null ? v : alpha * last + (1 - alpha) * v;
    return last;
  });
}

const finite = (v: number): number | null => (isFinite(v) ? v : null);

async function load(line: Line, metric: string, zoom: [number, number] | null, buckets: number,
  axis: "step" | "time", signal: AbortSignal): Promise<Drawn> {
  const expected = expectedPoints(line.info, zoom);
  const start = zoom ? zoom[0] : undefined;
  const end = zoom ? zoom[1] : undefined;
  const raw = axis === "time" ? expected <= TIME_AXIS_LIMIT : expected <= RAW_LIMIT;
  if (raw) {
    const p = await api.points(line.run, metric, axis === "step" ? start : undefined, axis === "step" ? end : undefined, signal);
    const xs = Array.from(axis === "time" ? p.time : p.step);
    const ys = Array.from(p.value, finite);
    return { xs, mean: ys, min: ys, max: ys, raw: true };
  }
  const e = await api.envelope(line.run, metric, buckets, start, end, signal);
  const xs = e.start_step.map((s, i) => (s + e.end_step[i]) / 2);
  return { xs, mean: e.mean.map(finite), min: e.min.map(finite), max: e.max.map(finite), raw: false };
}

export function Chart({ metric, lines, options, zoom, onZoom, height = 220 }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const zoomRef = useRef(onZoom);
  zoomRef.current = onZoom;
  const [width, setWidth] = useState(0);
  const [drawn, setDrawn] = useState<Drawn[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [mode, setMode] = useState("");

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setWidth(Math.floor(el.clientWidth)));
    observer.observe(el);
    setWidth(Math.floor(el.clientWidth));
    return () => observer.disconnect();
  }, []);

  const axis = options.axis === "time" && lines.some((l) => expectedPoints(l.info, zoom) > TIME_AXIS_LIMIT) ? "step" : options.axis;
  const buckets = Math.max(100, Math.min(2000, width || 800));
  const key = lines.map((l) => `${l.run}:${l.info?.count ?? 0}`).join(",");

  useEffect(() => {
    if (!width) return;
    const abort = new AbortController();
    Promise.all(lines.map((l) => load(l, metric, zoom, buckets, axis, abort.signal)))
      .then((d) => { setDrawn(d); setError(null); setMode(d.every((x) => x.raw) ? "raw points" : "min/max envelope"); })
      .catch((e) => { if (!abort.signal.aborted) setError(String(e.message ?? e)); });
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [metric, key, zoom?.[0], zoom?.[1], buckets, axis]); // key: a new point count refetches

  useEffect(() => {
    const el = box.current;
    if (!el || !drawn || !width) return;
    const tables: uPlot.AlignedData[] = drawn.map((d) => [d.xs, ema(d.mean, options.smoothing), d.min, d.max] as uPlot.AlignedData);
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables as uPlot.AlignedData[]);
    const series: uPlot.Series[] = [{ label: axis }];
    const bands: uPlot.Band[] = [];
    lines.forEach((l, i) => {
      const base = 1 + i * 3;
      series.push({ label: l.label, stroke: l.color, width: 1.5, spanGaps: true, points: { show: drawn[i].raw && drawn[i].xs.length < 200 } });
      series.push({ label: `${l.label} min`, stroke: "transparent", spanGaps: true, points: { show: false } });
      series.push({ label: `${l.label} max`, stroke: "transparent", spanGaps: true, points: { show: false } });
      if (!drawn[i].raw) bands.push({ series: [base + 2, base + 1], fill: `${l.color}30` });
    });
    const opts: uPlot.Options = {
      width,
      height,
      series,
      bands,
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: axis === "time" }, y: { distr: options.log ? 3 : 1 } },
      axes: [{ stroke: "#555", grid: { stroke: "#eee" } }, { stroke: "#555", grid: { stroke: "#eee" }, size: 60 }],
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const lo = u.posToVal(u.select.left, "x");
          const hi = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          if (axis === "step") zoomRef.current([Math.floor(lo), Math.ceil(hi)]);
          else u.setScale("x", { min: lo, max: hi });
        }],
      },
    };
    if (options.log) {
      for (let s = 1; s < data.length; s++) {
        (data as unknown as (number | null)[][])[s] = Array.from(data[s] as ArrayLike<number | null>, (v) => (v !== null && v > 0 ? v : null));
      }
    }
    plot.current?.destroy();
    plot.current = new uPlot(opts, data as uPlot.AlignedData, el);
    el.dataset.drawn = String(performance.now()); // read by bench/ui.py
    el.dataset.points = String(drawn.reduce((n, d) => n + d.xs.length, 0));
    el.dataset.mode = drawn.every((d) => d.raw) ? "raw" : "envelope";
    const onDbl = () => zoomRef.current(null);
    el.addEventListener("dblclick", onDbl);
    return () => el.removeEventListener("dblclick", onDbl);
  }, [drawn, width, height, options.log, options.smoothing, axis, lines.map((l) => l.label + l.color).join()]); // eslint-disable-line react-hooks/exhaustive-deps

  useEffect(() => () => plot.current?.destroy(), []);

  return (
    <figure className="chart" data-testid={`chart-${metric}`}>
      <figcaption>
        <strong>{metric}</strong>
        <span className="muted"> {mode}{options.axis === "time" && axis === "step" ? " · time axis needs ≤ 250,000 points: zoom in" : ""}</span>
        {zoom && <button className="link" onClick={() => onZoom(null)}>reset zoom</button>}
        {lines.length > 1 && (
          <span className="legend">{lines.map((l) => <span key={l.run} style={{ color: l.color }}>■ {l.label} </span>)}</span>
        )}
      </figcaption>
      {error && <div className="error">{error}</div>}
      <div ref={box} className="plot" />
    </figure>
  );
}
