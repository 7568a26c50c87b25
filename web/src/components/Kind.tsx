import { Kind } from "../api";

/** A small badge saying a run is a notebook or a JupyterLab; nothing for a script, the usual kind. */
export function KindBadge({ kind }: { kind: Kind | undefined }) {
  if (!kind || kind === "script") return null;
  return <span className={`kind ${kind}`} data-testid="run-kind" title={`a ${kind} run`}>{kind}</span>;
}
