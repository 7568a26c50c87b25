// "Open JupyterLab" for a running JupyterLab run, "Open demo page" for a running model server: the
// server hands out a one-time address of it on its lab origin.
import { useState } from "react";
import { api, Run } from "../api";

export function LabButton({ run }: { run: Run }) {
  const serve = run.kind === "serve";
  const [opening, setOpening] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const open = () => {
    setError(null);
    // Opened now, in the click itself: a tab opened after the request returns is a pop-up browsers block.
    const tab = window.open("", "_blank");
    if (!tab) {
      setError("The browser blocked the new tab: allow pop-ups for this page.");
      return;
    }
    tab.opener = null; // the lab gets no handle on the dashboard
    setOpening(true);
    (serve ? api.serveLink(run.name ?? "") : api.lab(run.number))
      .then((r) => {
        // Only a web address goes into the tab: it is this page's origin until it navigates.
        const url = new URL(r.url, window.location.href);
        if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`not a web address: ${r.url}`);
        tab.location.replace(url.href); // no blank page left in the tab's history
      })
      .catch((e) => { tab.close(); setError(String(e.message ?? e)); })
      .finally(() => setOpening(false));
  };
  return (
    <span className="lab">
      <button data-testid={serve ? "open-demo" : "open-lab"} disabled={opening} onClick={open}
        title={serve ? "open this model's demo page in a new tab" : "open this run's JupyterLab in a new tab"}>
        {opening ? "Opening…" : serve ? "Open demo page" : "Open JupyterLab"}</button>
      {error && <span className="error" data-testid="lab-error" role="alert">{error}</span>}
    </span>
  );
}
