"""Dashboard benchmark: a real `runyard server` and Debian's chromium driven by Playwright.

    python bench/ui.py              # 4 series x 1,000,000 points, 10,000 runs, 5 rounds each
    python bench/ui.py --quick      # small sizes: checks the benchmark itself runs
    python bench/ui.py --json F     # also write the figures as JSON

Times are read in the page (``performance.now()``): from navigation start to the moment each chart
has drawn (the Chart component stamps ``data-drawn``) or the runs table first shows its rows (the
``runyard:runs-ready`` mark); a zoom from the mouse release to the last of the four charts
redrawn; a sort from the click to the new first row in the DOM. Each navigation uses a fresh
browser context (no HTTP cache), so the bundle is fetched every time.
"""

from __future__ import annotations

# This folder holds logging.py (the name the issue gives the benchmark), which would shadow the
# standard library's logging module for any script run from here: take the folder off the path.
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import gzip
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "runyard" / "server" / "static"
CHROMIUM = os.environ.get("RUNYARD_CHROMIUM", "/usr/bin/chromium")
KEYS = ("loss", "accuracy", "lr", "grad_norm")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def store_bench() -> Any:
    spec = importlib.util.spec_from_file_location("store_bench", ROOT / "bench" / "store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def seed(home: Path, points: int, runs: int) -> int:
    """A run with 4 series of ``points`` points, and a project "table" of ``runs`` runs."""
    from runyard.config import resolve
    from runyard.store.api import NewRun
    from runyard.store.home import open_store
    from runyard.store.series import Points
    from runyard.types import RunStatus

    opened = open_store(resolve(environ={"RUNYARD_HOME": str(home)}))
    store = opened.store
    number = store.create_run(NewRun(project="charts", name="million", status=RunStatus.FINISHED)).number
    rng = np.random.default_rng(5)
    batch = 250_000
    for begin in range(0, points, batch):
        steps = np.arange(begin, min(points, begin + batch), dtype=np.int64)
        noise = rng.normal(size=(len(KEYS), steps.shape[0]))
        curve = 1.0 / (1 + steps * 1e-4)
        store.append_points(number, {key: Points(steps, 1.7e9 + steps * 0.01, curve + 0.05 * noise[i])
                                     for i, key in enumerate(KEYS)})
        progress(f"seeded {min(points, begin + batch):,} of {points:,} points per series")
    store_bench().insert_runs(store, "table", runs)
    progress(f"seeded {runs:,} runs")
    opened.close()
    return number


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["RUNYARD_HOME"] = str(home)
    # Open (--insecure-local) on a throw-away home: the benchmark measures drawing, not logging in.
    server = subprocess.Popen([sys.executable, "-m", "runyard.cli.main", "server", "--port", str(port),
                               "--insecure-local"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start")


CHARTS_DRAWN = """async (count) => {
  const deadline = performance.now() + 20000;
  for (;;) {
    const plots = [...document.querySelectorAll('.plot')].filter(p => p.dataset.drawn);
    if (plots.length >= count) return Math.max(...plots.map(p => Number(p.dataset.drawn)));
    if (performance.now() > deadline) throw new Error('charts not drawn');
    await new Promise(r => setTimeout(r, 5));
  }
}"""

ZOOM_ARM = """() => {
  const plots = [...document.querySelectorAll('[data-testid=charts] .plot')];
  window.__before = plots.map(p => p.dataset.drawn);
  window.addEventListener('mouseup', () => { window.__released = performance.now(); }, {capture: true, once: true});
  const box = plots[0].querySelector('.u-over').getBoundingClientRect();
  return {left: box.left, top: box.top, width: box.width, height: box.height};
}"""

ZOOM_WAIT = """async () => {
  const plots = [...document.querySelectorAll('[data-testid=charts] .plot')];
  const deadline = performance.now() + 10000;
  for (;;) {
    if (window.__released && plots.every((p, i) => p.isConnected && p.dataset.drawn !== window.__before[i])) {
      return {ms: Math.max(...plots.map(p => Number(p.dataset.drawn))) - window.__released,
              mode: plots[0].dataset.mode, points: Number(plots[0].dataset.points), url: location.search};
    }
    if (performance.now() > deadline) throw new Error('no redraw after zoom');
    await new Promise(r => requestAnimationFrame(r));
  }
}"""


def zoom(page: Any, lo: float, hi: float) -> dict[str, Any]:
    """Drag across the first chart from ``lo`` to ``hi`` (fractions of its width) with the mouse."""
    box = page.evaluate(ZOOM_ARM)
    y = box["top"] + box["height"] / 2
    page.mouse.move(box["left"] + lo * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["left"] + hi * box["width"], y, steps=4)
    page.mouse.up()
    try:
        return dict(page.evaluate(ZOOM_WAIT))
    except Exception:
        state = page.evaluate("[window.__released, window.__before, "
                              "[...document.querySelectorAll('[data-testid=charts] .plot')].map(p => p.dataset.drawn)]")
        progress(f"zoom {lo}-{hi} failed at {page.url}: {state}")
        raise


SORT = """async () => {
  const first = () => document.querySelector('[data-testid=run-row]')?.dataset.number;
  const before = first();
  const t0 = performance.now();
  document.querySelector("[data-testid='col-summary.loss']").click();
  for (;;) {
    await new Promise(r => requestAnimationFrame(r));
    if (first() !== before) return performance.now() - t0;
    if (performance.now() - t0 > 10000) throw new Error('no re-sort');
  }
}"""


def measure(base: str, run: int, rounds: int, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"charts_ms": [], "zoom_envelope_ms": [], "zoom_raw_ms": [], "table_ms": [],
                                   "sort_ms": []}
    modes: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for i in range(rounds):
            progress(f"round {i + 1} of {rounds}")
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{base}/runs/{run}")
            out["charts_ms"].append(page.evaluate(CHARTS_DRAWN, len(KEYS)))
            # Zoom into the middle half (hundreds of thousands of points: an envelope), then into a
            # tenth of the view again and again until the range is few enough points to draw raw.
            step = zoom(page, 0.25, 0.75)
            for _ in range(8):
                out["zoom_raw_ms" if step["mode"] == "raw" else "zoom_envelope_ms"].append(step["ms"])
                modes[step["mode"]] = step
                if step["mode"] == "raw":
                    break
                step = zoom(page, 0.45, 0.55)
            context.close()

            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{base}/projects/table?cols=summary.loss,config.param_0")
            page.wait_for_selector("[data-testid=run-row]")
            ready = page.evaluate("performance.getEntriesByName('runyard:runs-ready')[0]?.startTime")
            assert page.inner_text("[data-testid=row-count]").startswith(f"{runs:,} of"), "not every run loaded"
            out["table_ms"].append(float(ready))
            out["sort_ms"].append(page.evaluate(SORT))
            context.close()
        browser.close()
    result: dict[str, Any] = {k: {"median": statistics.median(v), "max": max(v), "all": v} for k, v in out.items()}
    result["zoom_modes"] = modes
    return result


def bundle_gzip_bytes() -> int:
    files = [f for f in (STATIC / "assets").iterdir() if f.suffix in (".js", ".css")] + [STATIC / "index.html"]
    return sum(len(gzip.compress(f.read_bytes(), 9)) for f in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    if not (STATIC / "index.html").exists():
        raise SystemExit("the dashboard is not built: run `make ui`")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no chromium at {CHROMIUM}: run scripts/ensure-chromium")
    points, runs, rounds = (20_000, 500, 1) if args.quick else (1_000_000, 10_000, 5)
    with tempfile.TemporaryDirectory(prefix="runyard-bench-ui-") as d:
        home = Path(d) / "home"
        number = seed(home, points, runs)
        port = free_port()
        server = start_server(home, port)
        try:
            figures = measure(f"http://127.0.0.1:{port}", number, rounds, runs)
        finally:
            server.kill()
            server.wait(10)
    figures["bundle_gzip_kb"] = bundle_gzip_bytes() / 1000
    m = figures
    rows = [
        (f"run page, 4 series x {points:,} points: charts drawn after navigation", "<= 1000 ms",
         m["charts_ms"], 1000),
        ("zoom, envelope drawn (half, then tenths of the view): re-query and redraw all 4", "<= 150 ms",
         m["zoom_envelope_ms"], 150),
        (f"zoom to {m['zoom_modes']['raw']['points']:,} points, drawn raw: re-query and redraw all 4", "<= 150 ms",
         m["zoom_raw_ms"], 150),
        (f"project page, {runs:,} runs: table usable after navigation", "<= 1500 ms", m["table_ms"], 1500),
        (f"sort {runs:,} runs by a metric", "<= 200 ms", m["sort_ms"], 200),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'target':<11}  {'median':>9}  {'worst':>9}  result   (rounds: {rounds})")
    missed = 0
    for name, target, fig, limit in rows:
        ok = fig["median"] <= limit
        missed += not ok
        verdict = "met" if ok else "NOT MET"
        print(f"{name:<{width}}  {target:<11}  {fig['median']:>6.0f} ms  {fig['max']:>6.0f} ms  {verdict}")
    ok = m["bundle_gzip_kb"] <= 350
    missed += not ok
    print(f"{'bundle (JS + CSS + HTML, gzip -9)':<{width}}  {'<= 350 KB':<11}  {m['bundle_gzip_kb']:>6.0f} KB  "
          f"{'':>9}  {'met' if ok else 'NOT MET'}")
    print(f"\nlast raw zoom: {m['zoom_modes']['raw']['url']}; zooms measured: {len(m['zoom_envelope_ms']['all'])} "
          f"envelope, {len(m['zoom_raw_ms']['all'])} raw")
    if args.json:
        args.json.write_text(json.dumps(m, indent=2))
    return 0 if args.quick or not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
