"""The demo behind `make demo`: launch a training run in the background, follow it, read it back.

Launches examples/train.py with `runyard run -f` (snapshot, queue, supervisor, logging SDK), then
draws its loss curve in the terminal from the store's exact min/max envelope, and starts the local
server (`runyard ui`) so the run can be opened in the dashboard. Last, it trains the digits model
(examples/digits/) and serves it with `runyard serve`: a URL with a demo page.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import runyard

BARS = "▁▂▃▄▅▆▇█"
ROOT = Path(__file__).resolve().parents[1]


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    return "".join(BARS[int((v - lo) / (hi - lo or 1) * (len(BARS) - 1))] for v in values)


def typed(program: str) -> str:
    """How to type this installation's ``program`` in a new shell, where no virtual environment is
    active: its bare name only when the PATH finds it without activation (a link in ~/.local/bin,
    say), else its path, relative in the checkout where `make demo` runs (.venv/bin/runyard)."""
    installed = Path(sys.executable).parent / program
    found = shutil.which(program)
    if found and Path(found).resolve() == installed.resolve() and Path(found).parent != installed.parent:
        return program
    try:
        return str(installed.relative_to(Path.cwd()))
    except ValueError:
        return str(installed)


def main() -> int:
    runyard_cli = typed("runyard")
    launch = [sys.executable, "-m", "runyard.cli.main", "run", "--project", "demo", "--label", "demo", "-f",
              "--note", "A synthetic run launched by `make demo`.", "--", sys.executable, "examples/train.py"]
    # The run uses the Python this shell would find; the demo names the one with runyard installed.
    print(f"$ {runyard_cli} run --project demo --label demo -f -- {typed('python')} examples/train.py", flush=True)
    code = subprocess.call(launch, cwd=ROOT)
    if code != 0:
        print(f"the demo run failed (exit code {code}); `{runyard_cli} logs 1` shows why", file=sys.stderr)
        return code
    api = runyard.Api()
    run = api.runs(project="demo", limit=1)[0]
    env = run.envelope("train/loss", buckets=60)
    print(f"\nrun {run.number}: {run.status.value}; train/loss over {int(env.count.sum()):,} steps in "
          f"{len(env)} buckets (exact min/max/mean of every point):")
    print("  max  " + sparkline(env.max.tolist()))
    print("  mean " + sparkline(env.mean.tolist()))
    peak = int(env.max.argmax())
    print(f"  the spike at step {int(env.start_step[peak]):,}-{int(env.end_step[peak]):,} is kept: "
          f"max {env.max[peak]:.1f}, mean {env.mean[peak]:.3f}")
    print(f"  summary: {', '.join(f'{k} {v:.3f}' for k, v in sorted(run.summary.items()))}")
    print(f"  outputs: {', '.join(a.path for a in run.artifacts()) or 'none'}")
    r, n = runyard_cli, run.number
    print(f"\nTry: {r} ps | {r} show {n} | {r} logs {n} | {r} cp {n}:outputs/model.json .")
    if r != "runyard":
        print("(after `source .venv/bin/activate` plain `runyard` works; README.md, \"Daily use\", has other ways)")
    print(f"An ordinary script, as it is (README.md, \"An ordinary script\"): {r} run --param lr=0.05 -- "
          f"{typed('python')} examples/digits.py --lr {{lr}}")
    api.close()
    # `runyard ui` starts the local server when none answers, and prints its address.
    ui = subprocess.run([sys.executable, "-m", "runyard.cli.main", "ui", "--no-browser"], cwd=ROOT,
                        capture_output=True, text=True)
    if ui.returncode == 0:
        link = ui.stdout.strip().splitlines()[-1]
        # The link logs the browser in once (a code in it); `next` leads it on to the run's page.
        page = f"{link}&next=/runs/{run.number}" if "?code=" in link else f"{link}/runs/{run.number}"
        print(f"\nThe dashboard: {page} (the local server keeps running; `{runyard_cli} ui` prints a new "
              "link)")
    else:
        print(f"the local server did not start: {ui.stderr.strip()}", file=sys.stderr)
    return serve_digits(runyard_cli)


def serve_digits(runyard_cli: str) -> int:
    """Train the digits classifier and serve it: the model behind an endpoint with a demo page."""
    cli = [sys.executable, "-m", "runyard.cli.main"]
    print(f"\n$ {runyard_cli} run --project digits -f -- {typed('python')} examples/digits/train.py", flush=True)
    code = subprocess.call([*cli, "run", "--project", "digits", "-f", "--", sys.executable,
                            "examples/digits/train.py"], cwd=ROOT)
    if code != 0:
        print(f"the digits run failed (exit code {code})", file=sys.stderr)
        return code
    api = runyard.Api()
    number = api.runs(project="digits", limit=1)[0].number
    active = [r for r in api.runs(status=["queued", "starting", "running"]) if r.kind.value == "serve"
              and r.name == "digits"]
    api.close()
    handler = "examples/digits/serve.py:Digits"
    print(f"$ {runyard_cli} serve {number}:model --handler {handler} --name digits", flush=True)
    if active:  # a demo before this one serves it still
        served = subprocess.run([*cli, "serve", "--url", str(active[0].number)], cwd=ROOT, capture_output=True,
                                text=True)
        number_served = active[0].number
    else:
        served = subprocess.run([*cli, "serve", f"{number}:model", "--handler", handler, "--name", "digits",
                                 "--json"], cwd=ROOT, capture_output=True, text=True)
        number_served = int(json.loads(served.stdout)["number"]) if served.returncode == 0 else 0
    if served.returncode != 0:
        print(f"the model server did not start: {served.stderr.strip()}", file=sys.stderr)
        return served.returncode
    url = served.stdout.strip() if active else json.loads(served.stdout)["url"]
    print(f"The digits model, served by run {number_served}: {url} (a demo page: upload a digit or pick an "
          f"example; POST {url}predict for scripts; `{runyard_cli} stop {number_served}` stops it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
