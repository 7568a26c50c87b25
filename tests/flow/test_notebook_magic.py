"""%%runyard run from a real notebook: a real ipykernel driven by nbclient, a real agent, the local
executor. A cell becomes experiments/model_NNN.py and a run; the cell returns while the run is still
going, the widget keeps changing while the kernel is busy with another cell, the run's outputs come
back with %runyard cp. Without widgets (a plain IPython shell) the same commands print text."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from tests.unit.server.conftest import LiveServer, client_env
from tests.unit.server.conftest import live_server as live_server

from runyard.agent import stop_agents
from runyard.api import Api
from runyard.config import resolve
from runyard.notebook.magic import new_script

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "helpers.py").write_text("SCALE = 2\n")
    return root


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env = {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0",
           "RUNYARD_SLOTS": "2", "RUNYARD_OUTPUTS_INTERVAL": "0.3"}
    yield env
    stop_agents(tmp_path / "home")


class Notebook:
    """One kernel, cells executed one at a time as Jupyter would, outputs and widget state kept."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client
        self.nb = client.nb

    def run(self, source: str) -> tuple[list[Any], float]:
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        t0 = time.monotonic()
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell.outputs, time.monotonic() - t0

    def widget(self, model_id: str) -> dict[str, Any]:
        return self.client.widget_state[model_id]


@pytest.fixture
def notebook(project: Path, env: dict[str, str]) -> Iterator[Notebook]:
    nb = nbformat.v4.new_notebook()
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(project)}})
    with client.setup_kernel(env=env):
        yield Notebook(client)


def text(outputs: list[Any]) -> str:
    out = []
    for o in outputs:
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type == "error":
            out.append(f"{o.ename}: {o.evalue}")
        elif "text/plain" in o.get("data", {}):
            out.append(o.data["text/plain"])
    return "\n".join(out)


def api_of(env: dict[str, str], cwd: Path) -> Api:
    return Api(resolve(environ=env, cwd=cwd))


def wait_for(check: Any, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_a_cell_becomes_a_run_whose_widget_follows_it_and_whose_outputs_come_back(
        notebook: Notebook, project: Path, env: dict[str, str], tmp_path: Path) -> None:
    go = tmp_path / "go"
    notebook.run("%load_ext runyard")
    cell = textwrap.dedent(f"""\
        import json, os, time
        from helpers import SCALE
        while not os.path.exists({str(go)!r}):   # held until the test lets it go
            time.sleep(0.05)
        os.makedirs("outputs/checkpoints", exist_ok=True)
        with open("outputs/checkpoints/ck.txt", "w") as f:
            f.write("weights {{x}} $y")
        for step in range(5):
            print(json.dumps({{"step": step, "loss": SCALE / (step + 1), "gnorm": float("nan") if step == 4 else 1.0}}))
    """)
    outputs, seconds = notebook.run("%%runyard run --name unet --param lr=0.1\n" + cell)
    assert [o.output_type for o in outputs if o.output_type == "error"] == [], text(outputs)
    # The cell is back while its run is held: launching does not wait for the run.
    with api_of(env, project) as api:
        run = api.run(1)
        assert run.status.value in ("queued", "starting", "running")
        assert run.name == "unet" and run.config == {"lr": 0.1}
        assert run.command[-1] == "experiments/model_001.py"
    assert seconds < 30, seconds  # generous: bench/notebook.py measures it (target 300 ms)
    script = project / "experiments" / "model_001.py"
    first, rest = script.read_text().split("\n", 1)
    assert first.endswith("# added by %%runyard run: imports as in the notebook")  # helpers.py is found
    assert rest == cell  # {x} and $y stay as written (no variable expansion)
    views = [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1, outputs
    assert "run 1" in views[0].data["text/html"]  # the fallback for frontends without widgets
    model_id = views[0].data[WIDGET_VIEW]["model_id"]

    outputs, _ = notebook.run("%%runyard run --name second\nprint('two')")
    assert (project / "experiments" / "model_002.py").read_text().endswith("\nprint('two')\n")

    # The kernel is busy with a cell that waits for the run to end; the widget still moves meanwhile:
    # its updates (comm messages from the widget's thread) arrive while that cell runs.
    go.write_text("")
    busy = textwrap.dedent("""\
        import time, runyard
        api = runyard.Api()
        while not api.run(1).refresh().status.is_terminal():
            time.sleep(0.2)
        time.sleep(3)   # the widget reads the run once a second
    """)
    before = dict(notebook.widget(model_id))
    notebook.run(busy)
    after = notebook.widget(model_id)
    assert before.get("status") in (None, "queued", "starting", "running"), before
    assert after["status"] == "finished", after
    assert after["title"] == "unet" and after["url"].endswith("/runs/1")
    loss = [m for m in after["metrics"] if m["key"] == "loss"]
    assert loss and loss[0]["last"] == 2 / 5 and loss[0]["step"] == 4 and len(loss[0]["spark"]) == 5
    gnorm = [m for m in after["metrics"] if m["key"] == "gnorm"]  # NaN crosses to the view as text
    assert gnorm and gnorm[0]["last"] is None and gnorm[0]["text"] == "nan"

    outputs, _ = notebook.run("%runyard cp 1:outputs/checkpoints/ ./ck")
    assert "copied 1 file(s)" in text(outputs)
    assert (project / "ck" / "ck.txt").read_text() == "weights {x} $y"

    outputs, _ = notebook.run("%runyard ls")
    listing = text(outputs)
    assert "unet" in listing and "finished" in listing and "second" in listing

    outputs, _ = notebook.run("%runyard watch unet")
    views = [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1 and "finished" in views[0].data["text/html"]


def test_the_stop_button_stops_the_run(notebook: Notebook, project: Path, env: dict[str, str]) -> None:
    notebook.run("%load_ext runyard")
    outputs, _ = notebook.run("%%runyard run --name long\nimport time\ntime.sleep(600)")
    model_id = next(o.data[WIDGET_VIEW]["model_id"] for o in outputs if WIDGET_VIEW in o.get("data", {}))
    with api_of(env, project) as api:
        wait_for(lambda: api.run(1).status.value == "running", what="run 1 to run")
    # What the view sends when the button is clicked: a custom message on the widget's comm.
    kc = notebook.client.kc
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": model_id, "data": {
        "method": "custom", "content": {"type": "stop"}}}))
    notebook.run(textwrap.dedent("""\
        import time, runyard
        api = runyard.Api()
        deadline = time.monotonic() + 60
        while not api.run(1).status.is_terminal() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
    """))
    state = notebook.widget(model_id)
    assert state["status"] == "stopped", state
    with api_of(env, project) as api:
        assert api.run(1).status.value == "stopped"


def test_bad_options_say_what_is_wrong_and_launch_nothing(notebook: Notebook, project: Path,
                                                          env: dict[str, str]) -> None:
    notebook.run("%load_ext runyard")
    cases = {
        "%%runyard run --gpus lots\nprint(1)": "'lots' is not a valid integer",
        "%%runyard run --pip '-f http://evil'\nprint(1)": "not a package requirement",
        "%%runyard run --timeout soon\nprint(1)": "--timeout 'soon'",
        "%%runyard run --follow\nprint(1)": "--follow would hold the kernel",
        "%%runyard run train.py\nprint(1)": "options only, the cell is the command",
        "%%runyard ls\nprint(1)": "%%runyard takes `run [OPTIONS]`",
        "%runyard run --gpus 1": "is a cell magic",
        "%runyard cp 7:outputs ./x": "7",
    }
    for source, said in cases.items():
        outputs, _ = notebook.run(source)
        # IPython's way for a magic's refusal: one line, no traceback (and the cell counts as failed)
        said_here = text(outputs)
        assert said_here.startswith("UsageError: ") and "Traceback" not in said_here, (source, outputs)
        assert said in said_here, (source, said_here)
    assert not (project / "experiments").exists() or not list((project / "experiments").iterdir())
    with api_of(env, project) as api:
        assert api.runs() == []


def test_without_widgets_the_commands_print_text(project: Path, env: dict[str, str]) -> None:
    # A plain IPython shell (a terminal, no kernel to carry widgets), in a process of its own.
    code = textwrap.dedent("""\
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "runyard")
        shell.run_cell("lr = 0.1")
        shell.run_cell("%%runyard run --name plain\\n!echo from-the-shell\\n%time x = 1\\nprint({'a': 1}, x, lr)")
        shell.run_cell("%runyard watch 1")
        shell.run_cell("%runyard logs 1")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=project, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run 1 queued: ") and lines[0].endswith(
        "experiments/model_001.py (%runyard watch 1 follows it)"), lines
    # The script is plain Python: IPython syntax turned into the calls IPython makes of it.
    script = (project / "experiments" / "model_001.py").read_text()
    assert "get_ipython().system('echo from-the-shell')" in script
    assert "get_ipython().run_line_magic('time', 'x = 1')" in script
    # watch prints a line as the run changes, until it ends (no IPython in a plain python run: it fails)
    watched = [line for line in lines if line.startswith("run 1 plain: ")]
    assert watched and watched[-1].startswith("run 1 plain: failed"), lines
    assert "NameError" in out.stdout  # the run's log, from %runyard logs
    # ...as the launch warned: what works in the notebook and will not in the run
    assert "runyard: warning: the cell uses IPython syntax" in out.stderr
    assert "runyard: warning: the cell uses lr from earlier cells" in out.stderr


@pytest.mark.engines("sqlite")
def test_with_a_server_the_cell_runs_on_the_servers_machine(live_server: LiveServer, project: Path,
                                                            tmp_path: Path) -> None:
    env = client_env(tmp_path / "laptop", live_server.url)
    code = textwrap.dedent("""\
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "runyard")
        shell.run_cell("%%runyard run --name remote\\nimport json\\nprint(json.dumps({'step': 0, 'acc': 0.5}))")
        shell.run_cell("%runyard watch remote")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=project, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The kernel's interpreter is this machine's: the server's machine runs its own `python`.
    assert lines[0] == "run 1 queued: python experiments/model_001.py (%runyard watch 1 follows it)", lines
    assert lines[-1].startswith("run 1 remote: finished") and lines[-1].endswith("acc=0.5"), lines
    try:
        with Api(resolve(environ=env, cwd=project)) as api:
            assert api.remote and api.run(1).status.value == "finished"
    finally:
        stop_agents(live_server.home)
        stop_agents(tmp_path / "laptop")


def test_two_launches_at_once_never_share_a_number(tmp_path: Path) -> None:
    directory = tmp_path / "experiments"
    made: list[Path] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        made.append(new_script(directory, f"print({i})\n"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in made) == [f"model_{n:03d}.py" for n in range(1, 9)]
    assert sorted(p.read_text() for p in made) == sorted(f"print({i})\n" for i in range(8))



def test_what_the_kernels_threads_print_during_a_launch_does_not_lose_the_runs_number() -> None:
    # The launch's output is captured process-wide: a progress bar or a log line of another thread
    # may land after runyard run's JSON line. The run is queued all the same; its number is found.
    from runyard.notebook.magic import _queued_number

    assert _queued_number('{"number": 7, "id": "01J"}\n 50%|#####     | 5/10 [00:01<00:01]\n') == 7
    assert _queued_number('INFO loading data\n{"number": 8, "id": "01K"}') == 8
