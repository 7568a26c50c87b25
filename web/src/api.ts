// The dashboard's only door to the server: /api/v1, JSON (msgpack for raw points), and server-sent
// events read through fetch, so that a token travels in a header rather than in a URL.
import { decode } from "@msgpack/msgpack";

export type Status =
  | "queued" | "starting" | "running" | "finished" | "failed" | "stopped" | "timeout" | "lost";

export const ACTIVE: ReadonlySet<Status> = new Set(["queued", "starting", "running"]);
export const BAD: ReadonlySet<Status> = new Set(["failed", "timeout", "lost"]);

/** What a run executes (runyard.types.RunKind): a command, a notebook run headless, or a JupyterLab served. */
export type Kind = "script" | "notebook" | "jupyterlab" | "serve";

export interface Run {
  number: number;
  id: string;
  project: string;
  name: string | null;
  status: Status;
  kind: Kind;
  status_message: string | null;
  command: string[] | null;
  created_at: number;
  queued_at: number | null;
  started_at: number | null;
  ended_at: number | null;
  heartbeat_at: number | null;
  exit_code: number | null;
  executor: string | null;
  host: string | null;
  resources: Record<string, unknown>;
  priority: number;
  snapshot_id: string | null;
  git_commit: string | null;
  git_branch: string | null;
  git_diff_ref: string | null;
  parent: number | null;
  notes: string;
  config: Record<string, unknown>;
  summary: Record<string, unknown>;
  environment: Record<string, unknown>;
  labels: string[];
  launch: Record<string, unknown> | null;
}

export interface SeriesInfo {
  key: string;
  count: number;
  first_step: number | null;
  last_step: number | null;
  last_value: unknown;
  last_time: number | null;
}

export interface Envelope {
  start_step: number[];
  end_step: number[];
  count: number[];
  nan_count: number[];
  min: number[];
  max: number[];
  mean: number[];
  last: number[];
}

export interface Points {
  step: Float64Array;
  time: Float64Array;
  value: Float64Array;
}

export interface LogLine { id: number; time: number; text: string; stream: string }
export interface Artifact { path: string; size: number; sha256: string; created_at: number }
export interface Input { kind: string; sha256: string; source_run: number | null; source_path: string | null; mount: string | null }
export interface Alert { id: number; run: number; kind: string; message: string; time: number; seen_at: number | null }
export interface Project { name: string; run_count?: number; [k: string]: unknown }

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

const TOKEN_KEY = "runyard.token";
export const V1 = "/api/v1";

export function token(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const t = token();
  return t ? { ...extra, authorization: `Bearer ${t}` } : extra;
}

/** JSON numbers the server could not write as JSON (NaN, ±inf) arrive as the strings "NaN", "Infinity",
 * "-Infinity" (older servers: tagged {"$float": ...}); see runyard.jsonvalues. */
export function unplain(v: unknown): unknown {
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    if ("$float" in o && Object.keys(o).length === 1) {
      const f = o.$float;
      return f === "NaN" ? NaN : f === "Infinity" ? Infinity : f === "-Infinity" ? -Infinity : Number(f);
    }
  }
  return v;
}

function numbers(list: unknown[]): number[] {
  return list.map((v) => {
    const u = unplain(v);
    return typeof u === "number" ? u : NaN;
  });
}

/** The server's refusal as an error: its JSON message, or the status line. */
async function failure(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const data = await response.json();
    if (data && typeof data.error === "string") message = data.error;
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, message);
}

async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const init: RequestInit = { method, headers: headers(body === undefined ? {} : { "content-type": "application/json" }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

const enc = encodeURIComponent;

export const api = {
  health: () => call<{ status: string; version: string }>("GET", "/api/health"),
  projects: () => call<Project[]>("GET", `${V1}/projects`),
  runs: (params: URLSearchParams, signal?: AbortSignal) =>
    call<{ items: Run[]; next_cursor: string | null }>("GET", `${V1}/runs?${params}`, undefined, signal),
  run: (ref: string | number) => call<Run>("GET", `${V1}/runs/${enc(String(ref))}`),
  children: (ref: number) => call<Run[]>("GET", `${V1}/runs/${ref}/children`),
  inputs: (ref: number) => call<Input[]>("GET", `${V1}/runs/${ref}/inputs`),
  series: (ref: number) => call<SeriesInfo[]>("GET", `${V1}/runs/${ref}/metrics`),
  envelope: async (ref: number, key: string, buckets: number, start?: number, end?: number, signal?: AbortSignal) => {
    const q = new URLSearchParams({ buckets: String(buckets) });
    if (start !== undefined) q.set("start", String(Math.floor(start)));
    if (end !== undefined) q.set("end", String(Math.ceil(end)));
    const raw = await call<Record<string, unknown[]>>("GET", `${V1}/runs/${ref}/metrics/${encodeKey(key)}?${q}`, undefined, signal);
    const out = {} as Envelope;
    for (const name of ["start_step", "end_step", "count", "nan_count", "min", "max", "mean", "last"] as const) {
      out[name] = numbers(raw[name] ?? []);
    }
    return out;
  },
  points: async (ref: number, key: string, start?: number, end?: number, signal?: AbortSignal): Promise<Points> => {
    const q = new URLSearchParams();
    if (start !== undefined) q.set("start", String(Math.floor(start)));
    if (end !== undefined) q.set("end", String(Math.ceil(end)));
    const response = await fetch(`${V1}/runs/${ref}/points/${encodeKey(key)}?${q}`,
      { headers: headers({ accept: "application/msgpack" }), signal });
    if (!response.ok) throw new ApiError(response.status, `${response.status} ${response.statusText}`);
    const data = decode(new Uint8Array(await response.arrayBuffer())) as Record<string, Uint8Array>;
    return { step: int64s(data.step), time: floats(data.time), value: floats(data.value) };
  },
  logs: (ref: number, after: number, limit = 10_000) =>
    call<LogLine[]>("GET", `${V1}/runs/${ref}/logs?after=${after}&limit=${limit}`),
  artifacts: (ref: number) => call<Artifact[]>("GET", `${V1}/runs/${ref}/artifacts`),
  artifactUrl: (ref: number, path: string) => `${V1}/runs/${ref}/artifacts/${path.split("/").map(enc).join("/")}`,
  patch: (ref: number, change: Record<string, unknown>) => call<Run>("PATCH", `${V1}/runs/${ref}`, change),
  stop: (ref: number) => call<{ message: string; run: Run }>("POST", `${V1}/runs/${ref}/stop`, {}),
  rerun: (ref: number) => call<{ number: number; run: Run }>("POST", `${V1}/runs/${ref}/rerun`, {}),
  /** A one-time address of a JupyterLab run's lab (good for ``expires_in`` seconds); refused with 404
   * when the run is no JupyterLab or its lab is not answering, 409 once it ended, 503 when the server
   * serves no labs. */
  lab: (ref: number) => call<{ url: string; expires_in: number }>("POST", `${V1}/runs/${ref}/lab`, {}),
  /** A one-time address of the demo page of the model served as ``name`` (runyard serve), on the lab origin. */
  serveLink: (name: string) =>
    call<{ url: string; expires_in: number }>("POST", `${V1}/serve/${encodeURIComponent(name)}/link`, {}),
  alerts: (unseen: boolean, run?: number, signal?: AbortSignal) =>
    call<Alert[]>("GET", `${V1}/alerts?unseen=${unseen}${run !== undefined ? `&run=${run}` : ""}`, undefined, signal),
  alertsSeen: (ids: number[]) => call<{ marked: number }>("POST", `${V1}/alerts/seen`, { ids }),
  /** A notebook artifact as the server renders it (sanitised, script-free HTML), fetched with the
   * token in a header: shown through an iframe's srcdoc, since an iframe's src could not carry it. */
  notebookHtml: async (ref: number, path: string, signal?: AbortSignal): Promise<string> => {
    const response = await fetch(`${V1}/runs/${ref}/rendered/${path.split("/").map(enc).join("/")}`,
      { headers: headers({ accept: "text/html" }), signal });
    if (!response.ok) throw await failure(response);
    return response.text();
  },
  text: async (path: string, limit = 2_000_000): Promise<string> => {
    const response = await fetch(path, { headers: headers({ range: `bytes=0-${limit - 1}` }) });
    if (!response.ok) throw new ApiError(response.status, `${response.status} ${response.statusText}`);
    return response.text();
  },
};

function encodeKey(key: string): string {
  return key.split("/").map(enc).join("/");
}

function floats(bytes: Uint8Array): Float64Array {
  // msgpack hands out views into its buffer, not always 8-byte aligned: copy.
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float64Array(copy.buffer);
}

function int64s(bytes: Uint8Array): Float64Array {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  const ints = new BigInt64Array(copy.buffer);
  const out = new Float64Array(ints.length);
  for (let i = 0; i < ints.length; i++) out[i] = Number(ints[i]);
  return out;
}

export type EventHandler = (kind: string, data: unknown) => void;

/**
 * Follow /api/v1/events (server-sent events) until ``signal`` aborts; reconnect with back-off when
 * the server goes away. Returns at once.
 */
export function follow(query: string, onEvent: EventHandler, signal: AbortSignal): void {
  let delay = 500;
  const loop = async () => {
    while (!signal.aborted) {
      try {
        const response = await fetch(`${V1}/events?${query}`, { headers: headers({ accept: "text/event-stream" }), signal });
        if (!response.ok || !response.body) throw new ApiError(response.status, "events refused");
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut: number;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let kind = "message";
            const data: string[] = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) kind = line.slice(7);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  };
  void loop();
}
