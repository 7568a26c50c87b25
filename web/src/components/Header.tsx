// The header: where you are, and one small chip that says what is running, queued and failed.
// Routine events change the counts quietly; a failed run stays in the chip until its page is seen.
import { useEffect, useState } from "react";
import { Alert, api, BAD, follow, Run } from "../api";
import { useSeen } from "../attention";
import { Link, projectHref, runHref } from "./Link";

export function useAttention(project: string | null): [Run[], Alert[], boolean] {
  const [runs, setRuns] = useState<Run[]>([]);
  const [alerts, setAlerts] = useState<Alert[]>([]);
  const [loaded, setLoaded] = useState(false);
  useEffect(() => {
    const abort = new AbortController();
    let timer: number | undefined;
    const refresh = () => {
      const q = new URLSearchParams({ compact: "true", limit: "2000" });
      if (project) q.set("project", project);
      for (const s of ["queued", "starting", "running", "failed", "lost", "timeout"]) q.append("status", s);
      Promise.all([api.runs(q, abort.signal), api.alerts(true, undefined, abort.signal)])
        .then(([p, a]) => { setRuns(p.items); setAlerts(a); setLoaded(true); })
        .catch(() => undefined);
    };
    refresh();
    follow(project ? `project=${encodeURIComponent(project)}` : "", () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 300);
    }, abort.signal);
    // Fired alerts are marked seen elsewhere (a run's page, `runyard inbox`): look again now and then.
    const poll = window.setInterval(refresh, 5000);
    return () => { abort.abort(); window.clearTimeout(timer); window.clearInterval(poll); };
  }, [project]);
  return [runs, alerts, loaded];
}

export function Header({ project }: { project: string | null }) {
  const [runs, alerts, loaded] = useAttention(project);
  const seen = useSeen();
  const running = runs.filter((r) => r.status === "running" || r.status === "starting").length;
  const queued = runs.filter((r) => r.status === "queued").length;
  const unseen = runs.filter((r) => BAD.has(r.status) && !seen.has(r.id));
  return (
    <header className="top">
      <Link href="/" className="brand">runyard</Link>
      {project && <Link href={projectHref(project)} className="crumb">{project}</Link>}
      <span className="spacer" />
      <span className="chip" data-testid="status-chip" data-loaded={loaded ? "" : undefined}>
        <span className={running ? "dot running" : "dot"} /> {running} running · {queued} queued
        {unseen.length > 0 && (
          <>
            {" · "}
            <Link href={runHref(unseen[0].number)} className="failed" title="failed runs you have not opened yet" testid="unseen-failed">
              {unseen.length} failed
            </Link>
          </>
        )}
        {alerts.length > 0 && (
          <>
            {" · "}
            <Link href={runHref(alerts[0].run)} className="failed" title={alerts[0].message} testid="unseen-alerts">
              {alerts.length} alert{alerts.length > 1 ? "s" : ""}
            </Link>
          </>
        )}
      </span>
    </header>
  );
}
