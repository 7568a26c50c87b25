// 2 to 20 runs side by side: every metric overlaid, and the params that differ highlighted.
import { useEffect, useMemo, useState } from "react";
import { api, Run, SeriesInfo } from "../api";
import { Chart, PALETTE } from "../components/Chart";
import { Link, runHref } from "../components/Link";
import { flatten, value } from "../format";
import { useLocation } from "../router";
import { chartOptions, ChartControls, setZoom, zoomOf } from "./Run";

export function ComparePage() {
  const { query } = useLocation();
  const refs = (query.get("runs") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const [runs, setRuns] = useState<Run[] | null>(null);
  const [series, setSeries] = useState<Map<number, SeriesInfo[]>>(new Map());
  const [error, setError] = useState<string | null>(null);
  const options = chartOptions(query);
  const zoom = zoomOf(query);

  useEffect(() => {
    if (refs.length < 2 || refs.length > 20) { setError("Compare takes 2 to 20 runs: /compare?runs=12,15,17"); return; }
    Promise.all(refs.map((r) => api.run(r))).then(async (rs) => {
      setRuns(rs);
      const infos = await Promise.all(rs.map((r) => api.series(r.number)));
      setSeries(new Map(rs.map((r, i) => [r.number, infos[i]])));
    }).catch((e) => setError(String(e.message ?? e)));
  }, [refs.join(",")]); // eslint-disable-line react-hooks/exhaustive-deps

  const keys = useMemo(() => {
    const all = new Set<string>();
    for (const list of series.values()) for (const s of list) if (!s.key.startsWith("system/")) all.add(s.key);
    return [...all].sort();
  }, [series]);

  const params = useMemo(() => {
    if (!runs) return [];
    const flat = runs.map((r) => new Map(flatten(r.config)));
    const names = [...new Set(flat.flatMap((m) => [...m.keys()]))].sort();
    return names.map((name) => {
      const cells = flat.map((m) => value(m.get(name)));
      return { name, cells, differs: new Set(cells).size > 1 };
    });
  }, [runs]);
  const [onlyDiffs, setOnlyDiffs] = useState(false);

  if (error) return <div className="error pad">{error}</div>;
  if (!runs) return <div className="muted pad">Loading…</div>;
  const color = (i: number) => PALETTE[i % PALETTE.length];
  const label = (r: Run) => `#${r.number} ${r.name ?? ""}`.trim();

  return (
    <div className="compare pad" data-testid="compare-page">
      <h1>Compare {runs.length} runs</h1>
      <div className="legend">{runs.map((r, i) => (
        <span key={r.number} style={{ color: color(i) }}>■ <Link href={runHref(r.number)}>{label(r)}</Link> <span className={`status ${r.status}`}>{r.status}</span> </span>
      ))}</div>
      <section className="charts">
        <div className="toolbar"><h2>Metrics</h2><ChartControls options={options} /></div>
        <div className="chart-grid">
          {keys.map((key) => (
            <Chart key={key} metric={key} options={options} zoom={zoom} onZoom={setZoom}
              lines={runs.filter((r) => series.get(r.number)?.some((s) => s.key === key)).map((r) => ({
                run: r.number, label: label(r), color: color(runs.indexOf(r)), info: series.get(r.number)?.find((s) => s.key === key),
              }))} />
          ))}
        </div>
      </section>
      <section data-testid="params-diff">
        <div className="toolbar"><h2>Params</h2>
          <label><input type="checkbox" checked={onlyDiffs} onChange={(e) => setOnlyDiffs(e.target.checked)} /> only differences</label>
        </div>
        <table className="kv compare-table">
          <thead><tr><th />{runs.map((r, i) => <th key={r.number} style={{ color: color(i) }}>{label(r)}</th>)}</tr></thead>
          <tbody>{params.filter((p) => !onlyDiffs || p.differs).map((p) => (
            <tr key={p.name} className={p.differs ? "differs" : ""} data-testid={p.differs ? "param-differs" : "param-same"}>
              <th>{p.name}</th>{p.cells.map((c, i) => <td key={i} className="num">{c}</td>)}
            </tr>
          ))}</tbody>
        </table>
      </section>
    </div>
  );
}
