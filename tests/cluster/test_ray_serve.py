"""``runyard serve --on ray``: a trained model as a Ray Serve application on a real Ray head.

The serve run is a run of this machine's home (its driver here); its replicas are Ray Serve's, on
the head of ``tests/cluster/conftest.py``. What Ray Serve holds is read from the dashboard's REST
API (``/api/serve/applications/``), so the test process never becomes a Ray driver itself.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cluster.conftest import RayHead
from tests.flow.test_execution import TERMINAL, api_of, cli, launch, log_of, wait_for, wait_status
from tests.flow.test_serve import CAREFUL, HANDLER, ROOT, top
from tests.unit.server.conftest import free_port

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def served(ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path, int]]:
    """(env, project, number of the finished training run), with runyard's ray setting the head."""
    import shutil

    base = tmp_path_factory.mktemp("rayserve")
    project = base / "project"
    shutil.copytree(ROOT / "examples" / "digits", project / "examples" / "digits")
    (project / "careful.py").write_text(CAREFUL)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RUNYARD_", "RAY_ADDRESS"))}
    env = {**keep, "RUNYARD_HOME": str(base / "home"), "RUNYARD_SYSTEM_INTERVAL": "0", "RUNYARD_SLOTS": "1",
           "RUNYARD_OUTPUTS_INTERVAL": "0.3", "RUNYARD_SERVE_WINDOW": "0.5", "RUNYARD_RAY": ray_head.address,
           "RAY_USAGE_STATS_ENABLED": "0"}
    number = launch(env, project, "--", sys.executable, "examples/digits/train.py")
    assert wait_status(env, project, number, TERMINAL, timeout=120) == "finished", log_of(env, project, number)
    yield env, project, number
    rows = json.loads(cli(env, project, "ps", "--json").stdout)
    cli(env, project, "stop", *[str(r["number"]) for r in rows if r["kind"] == "serve"], check=False)


def applications(head: RayHead) -> dict[str, Any]:
    answer = httpx.get(f"{head.address}/api/serve/applications/", timeout=10, trust_env=False)
    if answer.status_code != 200:
        return {}
    return dict(answer.json().get("applications") or {})


def serve(env: dict[str, str], project: Path, *args: str) -> dict[str, Any]:
    out = cli(env, project, "serve", *args, "--on", "ray", "--json")
    return dict(json.loads(out.stdout))


def test_a_model_served_on_ray_by_two_replicas_predicts_counts_and_is_deleted_on_stop(
        served: tuple[dict[str, str], Path, int], ray_head: RayHead) -> None:
    env, project, number = served
    port = free_port()
    started = time.monotonic()
    answer = serve(env, project, f"{number}:model", "--handler", HANDLER, "--name", "digits", "--replicas", "2",
                   "--port", str(port), "--wait", "100")
    ready_in = time.monotonic() - started
    url, run = answer["url"], answer["number"]
    assert url == f"http://127.0.0.1:{port}/digits/", answer
    print(f"ready on Ray Serve in {ready_in:.1f} s")

    app = applications(ray_head)["digits"]
    assert app["status"] == "RUNNING" and app["route_prefix"] == "/digits"
    replicas = app["deployments"]["model"]["replicas"]
    assert [r["state"] for r in replicas] == ["RUNNING", "RUNNING"]

    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        assert client.get("health").json() == {"status": "alive"}
        for _ in range(6):  # each replica has loaded: whichever answers is ready
            assert client.get("ready").json() == {"status": "ready"}
        # The demo page and what its script fetches, relative to the page: under the prefix.
        page = client.get(url)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        scripts = re.findall(r'(?:src|href)="([a-z][a-z0-9.]*)"', page.text)
        assert scripts, page.text[:500]
        for relative in scripts:
            assert client.get(str(httpx.URL(url).join(relative))).status_code == 200, relative
        schema = client.get(str(httpx.URL(url).join("openapi.json"))).json()
        examples = schema["x-runyard-examples"]
        for digit, example in enumerate(examples):
            predicted = client.post(str(httpx.URL(url).join("predict")), json=example)
            assert predicted.status_code == 200, predicted.text
            assert top(predicted.json()["output"]) == str(digit)
        wrong = client.post("predict", json={"image": 7})
        assert wrong.status_code == 422 and wrong.json()["field"] == "image"

    rows = {r["number"]: r for r in json.loads(cli(env, project, "ps", "--json").stdout)}
    assert rows[run]["kind"] == "serve" and rows[run]["url"] == url
    assert cli(env, project, "serve", "--url", str(run)).stdout.strip() == url
    api = api_of(env, project)
    try:
        wait_for(lambda: api.run(run).summary.get("serve/requests", 0) >= 6, 30, "the requests as a metric")
        view = api.run(run)
        assert view.summary["serve/errors"] == 0 and view.summary["serve/rejected"] >= 1
        assert len(view.history("serve/latency_p50_ms"))
    finally:
        api.close()

    cli(env, project, "stop", str(run))
    assert wait_status(env, project, run, TERMINAL, timeout=60) == "stopped"
    wait_for(lambda: "digits" not in applications(ray_head), 30, "the application deleted")
    lines = [text for _, text in log_of(env, project, run)]
    assert any("deleted the Ray Serve application 'digits'" in text for text in lines), lines[-20:]
    gone = cli(env, project, "serve", "--url", str(run), check=False)
    assert gone.returncode == 2


def test_a_handler_that_raises_on_ray_answers_500_with_its_message(
        served: tuple[dict[str, str], Path, int], ray_head: RayHead) -> None:
    env, project, number = served
    # A GPU for each replica, from the cluster's two (this machine has none: the driver takes none of its own).
    answer = serve(env, project, f"{number}:model", "--handler", "careful.py:Careful", "--name", "careful",
                   "--gpus", "1", "--port", str(free_port()), "--wait", "100")
    try:
        deployment = applications(ray_head)["careful"]["deployments"]["model"]
        assert deployment["deployment_config"]["ray_actor_options"]["num_gpus"] == 1, deployment
        with httpx.Client(base_url=answer["url"], timeout=30, trust_env=False) as client:
            assert client.post("predict", json={"x": 2.5}).json()["output"] == 5.0
            failed = client.post("predict", json={"x": -1, "label": "left"})
            assert failed.status_code == 500
            assert failed.json()["error"] == "ValueError: negative input -1 for left"
            assert client.post("predict", json={"x": 1}).json()["output"] == 2.0
        api = api_of(env, project)
        try:
            wait_for(lambda: api.run(answer["number"]).summary.get("serve/errors", 0) >= 1, 30, "the error counted")
        finally:
            api.close()
    finally:
        cli(env, project, "stop", str(answer["number"]))
    assert wait_status(env, project, answer["number"], TERMINAL, timeout=60) == "stopped"
    wait_for(lambda: "careful" not in applications(ray_head), 30, "the application deleted")


def test_serving_on_ray_needs_a_cluster(served: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = served
    alone = {k: v for k, v in env.items() if k != "RUNYARD_RAY"}
    refused = cli(alone, project, "serve", f"{number}:model", "--handler", HANDLER, "--on", "ray", check=False)
    assert refused.returncode != 0 and "RUNYARD_RAY" in refused.stderr, refused.stderr


def test_a_load_that_raises_in_a_replica_fails_the_run_and_deletes_the_application(
        served: tuple[dict[str, str], Path, int], ray_head: RayHead) -> None:
    env, project, number = served
    failed = cli(env, project, "serve", f"{number}:model", "--handler", "careful.py:Broken", "--name", "broken",
                 "--on", "ray", "--port", str(free_port()), "--wait", "100", check=False)
    assert failed.returncode == 1 and "ended (failed) before its model was ready" in failed.stderr, failed.stderr
    assert "RuntimeError: the weights are corrupt" in failed.stderr
    wait_for(lambda: "broken" not in applications(ray_head), 30, "the application deleted")
