"""The dashboard in a real browser (Debian's chromium through Playwright) against a real server with
real runs: scripts log through the server as on a teammate's laptop, and `runyard run` launches on it.

Each test saves a screenshot of its page in tests/ui/screenshots/ (the README shows copies of them).
No test may leave an error in the browser's console.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.browser import needs_chromium
from tests.unit.server.conftest import LiveServer, client_env

playwright_api = pytest.importorskip("playwright.sync_api")

SHOTS = Path(__file__).resolve().parent / "screenshots"
STATIC = Path(__file__).resolve().parents[2] / "src" / "runyard" / "server" / "static" / "index.html"

pytestmark = [
    pytest.mark.timeout(300),
    needs_chromium,
]

SEED = """
import runyard
for name, lr, labels in (("best", 0.01, ["best"]), ("baseline", 0.1, ["baseline"]), ("wider", 0.03, [])):
    run = runyard.init(project="ui", name=name, config={"lr": lr, "layers": 4}, labels=labels)
    for step in range(200):
        run.log({"loss": lr * 10 / (1 + step * lr), "accuracy": 1 - lr / (1 + step)}, step=step)
    print(f"trained {name}")
    run.finish()
"""

LIVE = """
import sys, runyard
run = runyard.init(project="ui", name="live", config={"lr": 0.5})
for step in range(100):
    run.log({"loss": 1.0 / (step + 1)}, step=step)
print("started", flush=True)
for line in sys.stdin:
    if line.strip() == "point":
        run.log({"loss": 0.25}, step=1000)
        print("a fresh line from step 1000", flush=True)
    elif line.strip() == "end":
        break
run.finish()
"""


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not STATIC.exists():
        pytest.fail("the dashboard is not built: run `make ui`")
    root = tmp_path_factory.mktemp("ui")
    live = LiveServer(root / "server-home", f"sqlite:///{root / 'runyard.db'}")
    live.start()
    env = client_env(root / "laptop", live.url)
    seeded = subprocess.run([sys.executable, "-c", textwrap.dedent(SEED)], env=env, capture_output=True, text=True,
                            timeout=120, cwd=root)
    assert seeded.returncode == 0, seeded.stderr
    wait_until(lambda: _finished(live.url) == 3, 60, "the seeded runs reach the server")
    yield live
    live.kill()


def _finished(url: str) -> int:
    items = httpx.get(f"{url}/api/v1/runs", params={"project": "ui", "status": "finished"}).json()["items"]
    return sum(1 for r in items if r["summary"].get("loss") is not None)


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], f"errors in the browser console: {errors}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def numbers_in_table(page: Any) -> list[int]:
    return [int(n) for n in page.locator("[data-testid=run-row]").evaluate_all(
        "rows => rows.map(r => r.dataset.number)")]


def test_the_runs_table_sorts_by_a_metric_and_filters(page: Any, server: LiveServer) -> None:
    page.goto("/")  # one project: the app goes straight to it
    page.wait_for_url("**/projects/ui")
    page.wait_for_selector("[data-testid=run-row]")
    assert numbers_in_table(page) == [3, 2, 1]  # newest first
    page.select_option("[data-testid=add-column]", "summary.loss")
    page.locator("[data-testid='col-summary.loss']").click()  # ascending: the lowest final loss first
    wait_until(lambda: numbers_in_table(page) == [1, 3, 2], 5, "ascending sort by summary.loss")
    assert "sort=summary.loss" in page.url
    page.locator("[data-testid='col-summary.loss']").click()
    wait_until(lambda: numbers_in_table(page) == [2, 3, 1], 5, "descending sort")
    page.fill("[data-testid=filter]", "label:best")
    page.press("[data-testid=filter]", "Enter")
    wait_until(lambda: numbers_in_table(page) == [1], 5, "filter by label")
    assert "1 of" in page.inner_text("[data-testid=row-count]")
    page.fill("[data-testid=filter]", "config.lr>=0.03")
    page.press("[data-testid=filter]", "Enter")
    wait_until(lambda: numbers_in_table(page) == [2, 3], 5, "filter by a param (sorted by loss, descending)")
    page.reload()  # the filter, the sort and the columns are in the URL
    page.wait_for_selector("[data-testid=run-row]")
    assert numbers_in_table(page) == [2, 3] and page.input_value("[data-testid=filter]") == "config.lr>=0.03"
    page.goto("/projects/ui?cols=config.lr,summary.loss")
    page.wait_for_selector("[data-testid=run-row]")
    shot(page, "project")


def test_a_live_point_and_log_line_appear_within_two_seconds(page: Any, server: LiveServer, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LIVE)],
                             env=client_env(tmp_path / "live", server.url), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "started"
        number = wait_until(lambda: _run_number(server.url, "live", points=100), 30, "the live run's first points")
        page.goto(f"/runs/{number}")
        plot = page.locator("[data-testid=chart-loss] .plot")
        wait_until(lambda: plot.get_attribute("data-points") == "100", 10, "the chart draws the first 100 points")
        assert page.inner_text("[data-testid=run-status]") == "running"
        child.stdin.write("point\n")
        child.stdin.flush()
        logged = time.monotonic()
        wait_until(lambda: plot.get_attribute("data-points") == "101", 2.0, "the new point on the chart")
        left_ms = max(100, 2000 - (time.monotonic() - logged) * 1000)  # the same 2 s for the log line
        page.get_by_text("a fresh line from step 1000").wait_for(timeout=left_ms)
        shot(page, "run")
        child.stdin.write("end\n")
        child.stdin.flush()
        child.wait(60)
        page.locator("[data-testid=run-status]", has_text="finished").wait_for(timeout=10_000)
    finally:
        if child.poll() is None:
            child.kill()


def _run_number(url: str, name: str, points: int) -> int | None:
    r = httpx.get(f"{url}/api/v1/runs/{name}")
    if r.status_code != 200:
        return None
    series = httpx.get(f"{url}/api/v1/runs/{name}/metrics").json()
    return int(r.json()["number"]) if any(s["key"] == "loss" and s["count"] >= points for s in series) else None


def test_notes_survive_a_reload_and_render_markdown_safely(page: Any, server: LiveServer) -> None:
    page.goto("/runs/1")
    page.click("[data-testid=notes-edit]")
    page.fill("[data-testid=notes-editor]", "## Why\nThe **baseline** for the sweep.\n\n<img src=x onerror=alert(1)>")
    page.click("[data-testid=notes-save]")
    page.locator("[data-testid=notes-view] strong", has_text="baseline").wait_for()
    page.reload()
    view = page.locator("[data-testid=notes-view]")
    view.locator("h2", has_text="Why").wait_for()
    assert view.locator("img").count() == 0  # HTML in notes is shown as text, never run
    assert "<img src=x onerror=alert(1)>" in view.inner_text()
    assert httpx.get(f"{server.url}/api/v1/runs/1").json()["notes"].startswith("## Why")
    page.fill("[data-testid=label-input]", "reviewed")
    page.press("[data-testid=label-input]", "Enter")
    page.locator("[data-testid=labels] .label", has_text="reviewed").wait_for()
    assert "reviewed" in httpx.get(f"{server.url}/api/v1/runs/1").json()["labels"]


def test_compare_overlays_two_runs_and_highlights_params_that_differ(page: Any, server: LiveServer) -> None:
    page.goto("/projects/ui")
    page.wait_for_selector("[data-testid=run-row]")
    page.check("[aria-label='select run 1']")
    page.check("[aria-label='select run 3']")
    page.click("[data-testid=compare]")
    page.wait_for_url("**/compare?runs=1,3")
    plot = page.locator("[data-testid=chart-loss] .plot")
    wait_until(lambda: plot.get_attribute("data-points") == "400", 10, "both runs' 200 points on one chart")
    assert page.locator("[data-testid=chart-loss] .legend span").count() == 2
    differs = page.locator("[data-testid=param-differs] th").all_inner_texts()
    same = page.locator("[data-testid=param-same] th").all_inner_texts()
    assert differs == ["lr"] and same == ["layers"]
    shot(page, "compare")


def test_zoom_is_a_link_and_draws_raw_points(page: Any, server: LiveServer) -> None:
    page.goto("/runs/2?zoom=50-59&log=1")
    plot = page.locator("[data-testid=chart-loss] .plot")
    wait_until(lambda: plot.get_attribute("data-points") == "10", 10, "the ten points of the zoomed range")
    assert plot.get_attribute("data-mode") == "raw"
    assert page.is_checked("[data-testid=log-scale]")


def test_the_stop_button_ends_a_running_run(page: Any, server: LiveServer, tmp_path: Path) -> None:
    project = tmp_path / "code"
    project.mkdir()
    (project / "sleep.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n")
    launched = subprocess.run([sys.executable, "-m", "runyard.cli.main", "run", "--project", "ui", "--name", "sleeper",
                               "--", "python", "sleep.py"], env=client_env(tmp_path / "laptop", server.url),
                              cwd=project, capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr
    wait_until(lambda: httpx.get(f"{server.url}/api/v1/runs/sleeper").json()["status"] == "running", 60,
               "the launched run starts")
    page.goto("/runs/sleeper")
    page.locator("[data-testid=run-status]", has_text="running").wait_for()
    page.get_by_text("sleeping").wait_for(timeout=10_000)
    assert "1 running" in page.inner_text("[data-testid=status-chip]")
    page.click("[data-testid=stop]")
    page.locator("[data-testid=run-status]", has_text="stopped").wait_for(timeout=30_000)
    assert httpx.get(f"{server.url}/api/v1/runs/sleeper").json()["status"] == "stopped"
    shot(page, "stopped")


def test_a_failed_run_stays_marked_until_seen(page: Any, server: LiveServer, tmp_path: Path) -> None:
    crashed = subprocess.run([sys.executable, "-c", "import runyard\nrunyard.init(project='ui', name='crash')\n"
                              "raise RuntimeError('diverged')"], env=client_env(tmp_path / "c", server.url),
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert crashed.returncode == 1
    wait_until(lambda: httpx.get(f"{server.url}/api/v1/runs/crash").json()["status"] == "failed", 30,
               "the crashed run reaches the server")
    page.goto("/projects/ui")
    chip = page.locator("[data-testid=unseen-failed]")
    chip.wait_for()
    assert chip.inner_text() == "1 failed"
    page.reload()  # still marked after a reload: nothing marks it seen but opening it
    chip.wait_for()
    chip.click()
    page.locator("[data-testid=run-status]", has_text="failed").wait_for()
    page.get_by_text("diverged").first.wait_for()
    page.goto("/projects/ui")
    page.wait_for_selector("[data-testid=status-chip][data-loaded]")  # the chip has its counts
    assert page.locator("[data-testid=unseen-failed]").count() == 0


def test_a_fired_alert_stays_in_the_chip_until_its_run_is_opened(page: Any, server: LiveServer,
                                                                   tmp_path: Path) -> None:
    from tests.unit.server.conftest import home_env

    added = subprocess.run([sys.executable, "-m", "runyard.cli.main", "alert", "add", "--when", "nan", "--metric",
                            "loss", "--project", "ui"], env=home_env(server.home, server.db_url),
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    logged = subprocess.run([sys.executable, "-c", "import math, runyard\nrun = runyard.init(project='ui', "
                             "name='diverged')\nrun.log({'loss': math.nan})\nrun.finish()"],
                            env=client_env(tmp_path / "d", server.url), capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert logged.returncode == 0, logged.stderr
    wait_until(lambda: httpx.get(f"{server.url}/api/v1/alerts", params={"unseen": True}).json(), 30,
               "the alert on the server")
    page.goto("/projects/ui")
    chip = page.locator("[data-testid=unseen-alerts]")
    chip.wait_for()
    assert chip.inner_text() == "1 alert"
    chip.click()
    page.wait_for_url("**/runs/*")
    assert page.url.endswith("/runs/diverged") or "diverged" in page.inner_text("[data-testid=run-page] h1")
    wait_until(lambda: not httpx.get(f"{server.url}/api/v1/alerts", params={"unseen": True}).json(), 10,
               "opening the run marks its alert seen")
    page.goto("/projects/ui")
    page.wait_for_selector("[data-testid=status-chip][data-loaded]")  # the chip has its counts
    assert page.locator("[data-testid=unseen-alerts]").count() == 0
