// One run: what it is, how it goes (live charts, log), what it made, and what to do with it.
import { useEffect, useMemo, useRef, useState } from "react";
import { ACTIVE, api, Artifact, follow, Input, LogLine, Run, SeriesInfo, token, V1 } from "../api";
import { markSeen } from "../attention";
import { Chart, ChartOptions, PALETTE } from "../components/Chart";
import { KindBadge } from "../components/Kind";
import { Labels } from "../components/Labels";
import { LabButton } from "../components/LabButton";
import { Link, projectHref, runHref } from "../components/Link";
import { LogViewer } from "../components/LogViewer";
import { Notes } from "../components/Notes";
import { isNotebook, NotebookView } from "../components/NotebookView";
import { bytes, duration, flatten, runDuration, value, when } from "../format";
import { navigate, useLocation, withQuery } from "../router";

const LOG_LIMIT = 200_000; // lines kept in the browser
/** Hardware samples are taken every few seconds: plotted against wall time, zoomed on their own. */
const SYSTEM_OPTIONS: ChartOptions = { axis: "time", log: false, smoothing: 0 };

export function chartOptions(query: URLSearchParams): ChartOptions {
  return {
    axis: query.get("axis") === "time" ? "time" : "step",
    log: query.get("log") === "1",
    smoothing: Math.min(0.99, Math.max(0, Number(query.get("smooth") ?? 0) || 0)),
  };
}

export function zoomOf(query: URLSearchParams): [number, number] | null {
  const m = (query.get("zoom") ?? "").match(/^(-?\d+)-(-?\d+)$/);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

export function ChartControls({ options }: { options: ChartOptions }) {
  return (
    <span className="chart-controls">
      <label>x <select data-testid="axis" value={options.axis} onChange={(e) => navigate(withQuery({ axis: e.target.value === "time" ? "time" : null, zoom: null }), true)}>
        <option value="step">step</option><option value="time">time</option></select></label>
      <label><input type="checkbox" data-testid="log-scale" checked={options.log} onChange={(e) => navigate(withQuery({ log: e.target.checked ? "1" : null }), true)} /> log scale</label>
      <label>smoothing <input type="range" min={0} max={0.99} step={0.01} value={options.smoothing} data-testid="smoothing"
        onChange={(e) => navigate(withQuery({ smooth: Number(e.target.value) > 0 ? e.target.value : null }), true)} /></label>
    </span>
  );
}

export function setZoom(range: [number, number] | null): void {
  navigate(withQuery({ zoom: range ? `${range[0]}-${range[1]}` : null }), true);
}

async function download(run: number, path: string): Promise<void> {
  const url = api.artifactUrl(run, path);
  if (!token()) { window.location.assign(url); return; }
  const response = await fetch(url, { headers: { authorization: `Bearer ${token()}` } });
  const blob = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = blob;
  a.download = path.split("/").pop() ?? "artifact";
  a.click();
  URL.revokeObjectURL(blob);
}

function KeyValues({ title, data, testid }: { title: string; data: Record<string, unknown>; testid: string }) {
  const rows = flatten(data);
  return (
    <section data-testid={testid}>
      <h2>{title}</h2>
      {rows.length ? (
        <table className="kv"><tbody>{rows.map(([k, v]) => <tr key={k}><th>{k}</th><td className="num">{value(v)}</td></tr>)}</tbody></table>
      ) : <p className="muted">None.</p>}
    </section>
  );
}

export function RunPage({ ref_ }: { ref_: string }) {
  const { query } = useLocation();
  const [run, setRun] = useState<Run | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [series, setSeries] = useState<SeriesInfo[]>([]);
  const [lines, setLines] = useState<LogLine[]>([]);
  const [artifacts, setArtifacts] = useState<Artifact[]>([]);
  const [children, setChildren] = useState<Run[]>([]);
  const [inputs, setInputs] = useState<Input[]>([]);
  const [diff, setDiff] = useState<string | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [now, setNow] = useState(Date.now() / 1000);
  const [artifactFilter, setArtifactFilter] = useState("");
  const refreshSeries = useRef<number | undefined>(undefined);
  const options = chartOptions(query);
  const zoom = zoomOf(query);

  useEffect(() => {
    const abort = new AbortController();
    let number = 0;
    api.run(ref_).then(async (r) => {
      number = r.number;
      setRun(r);
      markSeen(r.id);
      // Its fired alerts are seen too, now that someone has opened the run (readers may not mark).
      api.alerts(true, r.number).then((a) => { if (a.length) return api.alertsSeen(a.map((x) => x.id)); })
        .catch(() => undefined);
      const [s, a, c, i, l] = await Promise.all([api.series(r.number), api.artifacts(r.number), api.children(r.number),
        api.inputs(r.number), api.logs(r.number, 0, 10_000)]);
      setSeries(s); setArtifacts(a); setChildren(c); setInputs(i);
      setLines((old) => merge(l, old));
      follow(`run=${r.number}`, (kind, data) => {
        if (kind === "run") {
          const next = data as Run;
          setRun(next);
          if (!ACTIVE.has(next.status)) api.artifacts(number).then(setArtifacts).catch(() => undefined);
        } else if (kind === "log") setLines((old) => merge(old, data as LogLine[]));
        else if (kind === "metric") {
          window.clearTimeout(refreshSeries.current);
          refreshSeries.current = window.setTimeout(() => {
            api.series(number).then(setSeries).catch(() => undefined); // a new count redraws its chart
          }, 150);
        }
      }, abort.signal);
    }).catch((e) => setError(String(e.message ?? e)));
    const tick = window.setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => { abort.abort(); window.clearInterval(tick); window.clearTimeout(refreshSeries.current); };
  }, [ref_]);

  const user = useMemo(() => series.filter((s) => !s.key.startsWith("system/")), [series]);
  const system = useMemo(() => series.filter((s) => s.key.startsWith("system/")), [series]);

  if (error) return <div className="error pad">{error}</div>;
  if (!run) return <div className="muted pad">Loading…</div>;

  const act = (p: Promise<unknown>, done: string) =>
    p.then(() => setMessage(done)).catch((e) => setMessage(String(e.message ?? e)));
  const patch = async (change: Record<string, unknown>) => { setRun(await api.patch(run.number, change)); };
  const active = ACTIVE.has(run.status);
  const shownArtifacts = artifacts.filter((a) => a.path.includes(artifactFilter));
  // The notebook being viewed is in the URL (?notebook=path), so that a view can be shared.
  const notebook = query.get("notebook");
  const viewNotebook = (path: string | null) => navigate(withQuery({ notebook: path }), true);

  return (
    <div className="run pad" data-testid="run-page">
      <div className="run-head">
        <h1>
          <span className="muted">#{run.number}</span> {run.name ?? `run ${run.number}`}{" "}
          <span className={`status ${run.status}`} data-testid="run-status">{run.status}</span>{" "}
          <KindBadge kind={run.kind} />
        </h1>
        <span className="spacer" />
        {(run.kind === "jupyterlab" || run.kind === "serve") && (run.status === "starting" || run.status === "running")
          && <LabButton run={run} />}
        <button data-testid="stop" disabled={!active} onClick={() => act(api.stop(run.number).then((r) => setRun(r.run)), "Stop requested.")}>Stop</button>
        <button data-testid="rerun" onClick={() => act(api.rerun(run.number).then((r) => navigate(runHref(r.number))), "Queued again.")}
          disabled={!run.snapshot_id} title={run.snapshot_id ? "queue the same code again" : "only runs launched with `runyard run` can be rerun"}>Rerun</button>
      </div>
      {message && <div className="message" data-testid="message">{message}</div>}
      {run.status_message && <div className={run.status === "failed" || run.status === "lost" ? "error" : "muted"}>{run.status_message}</div>}
      <div className="facts">
        <div><b>project</b> <Link href={projectHref(run.project)}>{run.project}</Link></div>
        <div><b>duration</b> {duration(runDuration(run, now))}{run.exit_code !== null ? ` · exit ${run.exit_code}` : ""}</div>
        <div><b>created</b> {when(run.created_at)}</div>
        {run.host && <div><b>host</b> {run.host} {run.executor ? `(${run.executor})` : ""}</div>}
        {run.command && <div className="wide"><b>command</b> <code>{run.command.join(" ")}</code></div>}
        {run.git_commit && (
          <div className="wide"><b>git</b> <code>{run.git_commit.slice(0, 12)}</code> {run.git_branch ?? ""}
            {run.git_diff_ref && <button className="link" data-testid="show-diff" onClick={() => diff === null
              ? api.text(`${V1}/runs/${run.number}/diff`).then(setDiff).catch((e) => setDiff(String(e.message ?? e))) : setDiff(null)}>
              {diff === null ? "uncommitted changes" : "hide changes"}</button>}
          </div>
        )}
        {run.parent !== null && <div><b>parent</b> <Link href={runHref(run.parent)}>#{run.parent}</Link></div>}
        {children.length > 0 && <div><b>children</b> {children.map((c) => <Link key={c.number} href={runHref(c.number)}>#{c.number} </Link>)}</div>}
        <div className="wide"><b>labels</b> <Labels labels={run.labels} onChange={(add, remove) => patch({ add_labels: add, remove_labels: remove })} /></div>
      </div>
      {diff !== null && <pre className="diff" data-testid="diff">{diff.split("\n").map((l, i) => (
        <div key={i} className={l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : l.startsWith("@@") ? "hunk" : ""}>{l}</div>
      ))}</pre>}

      <section className="charts" data-testid="charts">
        <div className="toolbar"><h2>Metrics</h2><ChartControls options={options} /></div>
        {user.length === 0 && <p className="muted">No metrics yet.</p>}
        <div className="chart-grid">
          {user.map((s) => (
            <Chart key={s.key} metric={s.key} options={options} zoom={zoom} onZoom={setZoom}
              lines={[{ run: run.number, label: `#${run.number}`, color: PALETTE[0], info: s }]} />
          ))}
        </div>
      </section>
      {system.length > 0 && (
        <section className="charts" data-testid="system-charts">
          <h2>System</h2>
          <div className="chart-grid">
            {system.map((s) => (
              <Chart key={s.key} metric={s.key} options={SYSTEM_OPTIONS} zoom={null} onZoom={() => undefined} height={160}
                lines={[{ run: run.number, label: `#${run.number}`, color: PALETTE[5], info: s }]} />
            ))}
          </div>
        </section>
      )}

      <LogViewer lines={lines} />

      <div className="columns">
        <KeyValues title="Params" data={run.config} testid="params" />
        <KeyValues title="Summary" data={run.summary} testid="summary" />
      </div>

      <section data-testid="artifacts">
        <div className="toolbar"><h2>Artifacts</h2>
          {artifacts.length > 10 && <input placeholder="filter paths" value={artifactFilter} onChange={(e) => setArtifactFilter(e.target.value)} />}
        </div>
        {shownArtifacts.length ? (
          <table className="kv"><tbody>{shownArtifacts.map((a) => (
            <tr key={a.path}>
              <th><a href={api.artifactUrl(run.number, a.path)} onClick={(e) => { e.preventDefault(); void download(run.number, a.path); }}>{a.path}</a></th>
              <td className="num">{bytes(a.size)}</td><td className="muted">{a.sha256.slice(0, 12)}</td>
              <td>{isNotebook(a.path) && (
                <button className="link" data-testid="view-notebook" aria-label={`view ${a.path}`}
                  onClick={() => viewNotebook(notebook === a.path ? null : a.path)}>{notebook === a.path ? "hide" : "view"}</button>
              )}</td>
            </tr>
          ))}</tbody></table>
        ) : <p className="muted">None.</p>}
        {notebook !== null && isNotebook(notebook) && (
          <NotebookView run={run.number} path={notebook} onClose={() => viewNotebook(null)}
            onDownload={() => void download(run.number, notebook)} />
        )}
        {inputs.length > 0 && (
          <>
            <h3>Inputs</h3>
            <ul>{inputs.map((i) => (
              <li key={`${i.sha256}${i.mount}`}>{i.kind} {i.source_run !== null ? <Link href={runHref(i.source_run)}>#{i.source_run}:{i.source_path}</Link> : i.source_path}
                {i.mount ? <span className="muted"> at {i.mount}</span> : null} <span className="muted">{i.sha256.slice(0, 12)}</span></li>
            ))}</ul>
          </>
        )}
      </section>

      <Notes text={run.notes} onSave={(text) => patch({ notes: text })} />
    </div>
  );
}

function merge(a: LogLine[], b: LogLine[]): LogLine[] {
  if (!b.length) return a;
  if (!a.length) return b;
  const byId = new Map<number, LogLine>();
  for (const l of a) byId.set(l.id, l);
  for (const l of b) byId.set(l.id, l);
  const out = [...byId.values()].sort((x, y) => x.id - y.id);
  return out.length > LOG_LIMIT ? out.slice(-LOG_LIMIT) : out;
}
