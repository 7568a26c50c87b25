"""``runyard serve``: a real training run's model behind a real model server process, run as a run.

One digits model is trained per module (examples/digits/train.py through ``runyard run``); each
test serves it (or a handler of its own) and uses it as a teammate would: curl-like requests, the
demo page in Chromium, ``runyard ps``/``stop``, its metrics and an alert on them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.browser import chromium, needs_chromium
from tests.flow.test_execution import TERMINAL, api_of, cli, launch, log_of, wait_for, wait_status

ROOT = Path(__file__).parents[2]
HANDLER = "examples/digits/serve.py:Digits"

#: A handler that raises on a negative input, and one whose load() fails.
CAREFUL = '''
from runyard.serve import Input


class Careful:
    def predict(self, x: float = Input(ge=-100, le=100), label: str = "x") -> float:
        if x < 0:
            raise ValueError(f"negative input {x} for {label}")
        return x * 2


class Broken(Careful):
    def load(self, model_dir):
        raise RuntimeError("the weights are corrupt")
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path, int]]:
    """(env, project, number of the finished training run) shared by the module's tests."""
    base = tmp_path_factory.mktemp("serve")
    project = base / "project"
    shutil.copytree(ROOT / "examples" / "digits", project / "examples" / "digits")
    (project / "careful.py").write_text(CAREFUL)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env = {**keep, "RUNYARD_HOME": str(base / "home"), "RUNYARD_SYSTEM_INTERVAL": "0", "RUNYARD_SLOTS": "1",
           "RUNYARD_OUTPUTS_INTERVAL": "0.3", "RUNYARD_SERVE_WINDOW": "0.5"}
    number = launch(env, project, "--", sys.executable, "examples/digits/train.py")
    assert wait_status(env, project, number, TERMINAL, timeout=120) == "finished", log_of(env, project, number)
    yield env, project, number
    cli(env, project, "stop", *[str(n) for n in _serving(env, project)], check=False)


def _serving(env: dict[str, str], project: Path) -> list[int]:
    rows = json.loads(cli(env, project, "ps", "--json").stdout)
    return [r["number"] for r in rows if r["kind"] == "serve"]


def serve(env: dict[str, str], project: Path, *args: str) -> dict[str, Any]:
    out = cli(env, project, "serve", *args, "--json")
    return dict(json.loads(out.stdout))


def digit_image(index: int, size: int) -> bytes:
    """A PNG of bundled digit ``index``, dark on light, ``size`` pixels square (as a user's upload)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (255 - load_digits().images[index] / 16 * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def top(scores: dict[str, float]) -> str:
    return max(scores, key=lambda k: scores[k])


def test_a_trained_model_is_served_as_a_run_that_predicts_counts_its_requests_and_stops(
        trained: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = trained
    served = serve(env, project, f"{number}:model", "--handler", HANDLER, "--name", "digits")
    url = served["url"]
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        assert client.get("health").json() == {"status": "alive"}
        assert client.get("ready").status_code == 200  # the URL is printed once load() has returned
        schema = client.get("openapi.json").json()
        image = schema["components"]["schemas"]["Inputs"]["properties"]["image"]
        assert (image["x-runyard-type"], image["x-width"], image["x-height"]) == ("image", 8, 8)
        examples = schema["x-runyard-examples"]
        assert len(examples) == 5
        # The bundled digits 0..4, as rows of pixels: each predicted as itself.
        for digit, example in enumerate(examples):
            answer = client.post("predict", json=example)
            assert answer.status_code == 200, answer.text
            assert top(answer.json()["output"]) == str(digit)
        # A 64x64 PNG upload (multipart, as a form sends it) and the same as base64 JSON: resized to 8x8.
        upload = client.post("predict", files={"image": ("three.png", digit_image(3, 64), "image/png")})
        assert upload.status_code == 200 and top(upload.json()["output"]) == "3", upload.text
        import base64

        as_json = client.post("predict", json={"image": base64.b64encode(digit_image(3, 32)).decode()})
        assert top(as_json.json()["output"]) == "3"
        batch = client.post("predict", json=examples[:3])
        assert [top(o) for o in batch.json()["outputs"]] == ["0", "1", "2"]
        # A wrong input: 422 naming the field, and the server goes on.
        wrong = client.post("predict", json={"image": 7})
        assert wrong.status_code == 422 and wrong.json()["field"] == "image"
        unknown = client.post("predict", json={"picture": examples[0]["image"]})
        assert unknown.status_code == 422 and unknown.json()["field"] == "picture"
        assert "image" in unknown.json()["error"]
        assert client.post("predict", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422

    rows = {r["number"]: r for r in json.loads(cli(env, project, "ps", "--json").stdout)}
    run = served["number"]
    assert rows[run]["kind"] == "serve" and rows[run]["url"] == url and rows[run]["name"] == "digits"
    assert url in cli(env, project, "ps").stdout
    assert cli(env, project, "serve", "--url", str(run)).stdout.strip() == url
    # A second server under the same name is refused while the first serves.
    again = cli(env, project, "serve", f"{number}:model", "--handler", HANDLER, "--name", "digits", check=False)
    assert again.returncode == 2 and f"run {run} already serves 'digits'" in again.stderr

    api = api_of(env, project)
    try:
        wait_for(lambda: api.run(run).summary.get("serve/requests", 0) >= 11, 30, "the request count as a metric")
        view = api.run(run)
        assert view.summary["serve/errors"] == 0
        assert view.parent == number  # the model's run is the server's parent
        latencies = view.history("serve/latency_p50_ms")
        assert len(latencies) and (latencies.value > 0).all()
    finally:
        api.close()
    assert f"served-model <- run {number}:model" in cli(env, project, "show", str(run)).stdout  # lineage
    lines = [text for _, text in log_of(env, project, run)]
    assert any(text.startswith("POST /predict 200 ") for text in lines)
    assert any(text.startswith("POST /predict 422 ") for text in lines)
    assert not any("[[" in text for text in lines)  # inputs are never logged unless asked

    cli(env, project, "stop", str(run))
    assert wait_status(env, project, run, TERMINAL, timeout=60) == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "health", timeout=5, trust_env=False)
    gone = cli(env, project, "serve", "--url", str(run), check=False)
    assert gone.returncode == 2 and "no model server answering" in gone.stderr


def test_a_handler_that_raises_answers_500_with_its_message_and_the_server_lives_on(
        trained: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = trained
    served = serve(env, project, f"{number}:model", "--handler", "careful.py:Careful", "--name", "careful",
                   "--log-inputs")
    with httpx.Client(base_url=served["url"], timeout=30, trust_env=False) as client:
        assert client.post("predict", json={"x": 2.5}).json()["output"] == 5.0
        failed = client.post("predict", json={"x": -1, "label": "left"})
        assert failed.status_code == 500
        assert failed.json()["error"] == "ValueError: negative input -1 for left"
        out_of_range = client.post("predict", json={"x": 1000})
        assert out_of_range.status_code == 422 and out_of_range.json()["field"] == "x"
        assert "at most 100" in out_of_range.json()["error"]
        assert client.post("predict", json={"x": "two"}).json()["field"] == "x"
        assert client.post("predict", json={}).json() == {"error": "x: required (a number)", "field": "x"}
        assert client.post("predict", json={"x": 1}).json()["output"] == 2.0  # alive after all that
        # `curl -d '{"x": 3}' URL/predict`, which says form-urlencoded: JSON all the same.
        curl_style = client.post("predict", content=b'{"x": 3}',
                                 headers={"content-type": "application/x-www-form-urlencoded"})
        assert curl_style.json()["output"] == 6.0
        odd = client.post("predict", content=b"x", headers={"content-type": "image/png"})
        assert odd.status_code == 422 and "send JSON" in odd.json()["error"]
    api = api_of(env, project)
    try:
        wait_for(lambda: api.run(served["number"]).summary.get("serve/errors", 0) >= 1, 30, "the error counted")
    finally:
        api.close()
    lines = [text for _, text in log_of(env, project, served["number"])]
    assert any("POST /predict 500" in text and '"label":"left"' in text for text in lines)  # --log-inputs
    assert any("ValueError: negative input -1 for left" in text for text in lines)  # the traceback, in the log
    cli(env, project, "stop", str(served["number"]))
    wait_status(env, project, served["number"], TERMINAL, timeout=60)


def test_a_load_that_raises_fails_the_serve_run_and_says_so(trained: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = trained
    failed = cli(env, project, "serve", f"{number}:model", "--handler", "careful.py:Broken", "--name", "broken",
                 check=False)
    assert failed.returncode == 1 and "ended (failed) before its model was ready" in failed.stderr
    assert "RuntimeError: the weights are corrupt" in failed.stderr  # the end of its log, said at once
    run = int(failed.stderr.split("run ")[1].split()[0])
    assert any("RuntimeError: the weights are corrupt" in text for _, text in log_of(env, project, run))


def test_wrong_sources_and_handlers_are_refused_before_anything_runs(
        trained: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = trained
    cases = [
        ((f"{number}:nothere", "--handler", HANDLER), f"run {number} has no artifact at nothere"),
        ((f"{number}:model", "--handler", "serve.py"), "expected FILE.py:Class"),
        ((f"{number}:model", "--handler", "../up.py:X"), "a path inside the served code"),
        ((f"{number}:model", "--handler", HANDLER, "--name", "Bad_Name"), "lower-case letters"),
        ((f"{number}:model", "--handler", HANDLER, "--replicas", "2"), "--replicas is for --on ray"),
        (("999:model", "--handler", HANDLER), "999"),
    ]
    before = len(api_runs(env, project))
    for args, message in cases:
        result = cli(env, project, "serve", *args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert len(api_runs(env, project)) == before  # nothing queued
    missing = cli(env, project, "serve", f"{number}:model", "--handler", "examples/digits/serve.py:Nope",
                  "--name", "nope", check=False)
    assert missing.returncode == 1
    run = int(missing.stderr.split("run ")[1].split()[0])
    assert any("has no class Nope; classes with predict(): Digits" in text for _, text in log_of(env, project, run))


def api_runs(env: dict[str, str], project: Path) -> list[Any]:
    api = api_of(env, project)
    try:
        return api.runs()
    finally:
        api.close()


def test_a_model_server_takes_no_slot_from_training_runs(trained: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = trained  # one slot (RUNYARD_SLOTS=1)
    served = serve(env, project, f"{number}:model", "--handler", HANDLER, "--name", "slots")
    training = launch(env, project, "--", sys.executable, "-c", "print('trained')")
    assert wait_status(env, project, training, TERMINAL, timeout=60) == "finished"
    cli(env, project, "stop", str(served["number"]))
    wait_status(env, project, served["number"], TERMINAL, timeout=60)


def test_an_alert_on_the_error_rate_fires_for_a_failing_model_server(
        trained: tuple[dict[str, str], Path, int]) -> None:
    env, project, number = trained
    cli(env, project, "alert", "add", "--when", "above", "--metric", "serve/error_rate", "--value", "0.2",
        "--name", "serve-errors")
    served = serve(env, project, f"{number}:model", "--handler", "careful.py:Careful", "--name", "alerting")
    try:
        with httpx.Client(base_url=served["url"], timeout=30, trust_env=False) as client:
            deadline = time.monotonic() + 60
            events: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not events:
                for _ in range(5):
                    client.post("predict", json={"x": -1})
                time.sleep(0.5)
                inbox = cli(env, project, "inbox", "--json").stdout.splitlines()
                events = [e for e in map(json.loads, inbox) if e.get("run") == served["number"]]
        assert events and events[0]["kind"] == "above", events
        assert events[0]["message"].startswith("serve-errors: serve/error_rate"), events
    finally:
        cli(env, project, "stop", str(served["number"]))
        cli(env, project, "alert", "rm", "serve-errors", check=False)
    wait_status(env, project, served["number"], TERMINAL, timeout=60)


@needs_chromium
def test_the_demo_page_takes_an_upload_or_an_example_and_shows_the_scores(
        trained: tuple[dict[str, str], Path, int], tmp_path: Path) -> None:
    env, project, number = trained
    from playwright.sync_api import expect

    served = serve(env, project, f"{number}:model", "--handler", HANDLER, "--name", "demo")
    picture = tmp_path / "four.png"
    picture.write_bytes(digit_image(4, 96))
    errors: list[str] = []
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(served["url"])
            page.wait_for_selector("#status.ready", timeout=20_000)
            assert page.text_content("#title") == "Digits"
            assert page.locator(".field[data-type=image] input[type=file]").count() == 1
            # An example, one click: the form filled and predicted.
            page.click("#example-buttons .example >> nth=2")
            page.wait_for_selector("#scores", timeout=20_000)
            assert page.text_content("#answer") == "2"
            assert page.locator("#scores .bar").count() == 10
            assert page.is_visible("#preview-image")
            # An upload: previewed, predicted.
            page.set_input_files("#input-image", str(picture))
            expect(page.locator("#preview-image")).to_have_attribute("width", "96")
            page.click("#predict")
            expect(page.locator("#answer")).to_have_text("4", timeout=20_000)
            assert "ms in the model server" in (page.text_content("#timing") or "")
            page.screenshot(path=str(ROOT / "tests" / "ui" / "screenshots" / "serve-demo.png"), full_page=True)
    finally:
        cli(env, project, "stop", str(served["number"]))
    assert not errors, errors


def test_a_registered_model_is_served_by_its_alias_and_exported_for_kubernetes(
        trained: tuple[dict[str, str], Path, int], tmp_path: Path) -> None:
    env, project, number = trained
    cli(env, project, "model", "register", f"{number}:model", "--name", "digits", "--alias", "production")
    served = serve(env, project, "model:digits@production", "--handler", HANDLER, "--name", "registered")
    try:
        with httpx.Client(base_url=served["url"], timeout=30, trust_env=False) as client:
            example = client.get("openapi.json").json()["x-runyard-examples"][1]
            assert top(client.post("predict", json=example).json()["output"]) == "1"
    finally:
        cli(env, project, "stop", str(served["number"]))
    unknown = cli(env, project, "serve", "model:digits@staging", "--handler", HANDLER, check=False)
    assert unknown.returncode == 2 and "production" in unknown.stderr  # what exists is said

    deploy = tmp_path / "deploy"
    out = cli(env, project, "serve", "model:digits@production", "--handler", HANDLER, "--name", "digits",
              "--export", "k8s", str(deploy), "--json")
    assert json.loads(out.stdout)["number"] == number
    assert (deploy / "model" / "model.pkl").exists() and (deploy / "code" / "examples" / "digits" / "serve.py").exists()
    assert "--handler examples/digits/serve.py:Digits" in " ".join(
        (deploy / "Dockerfile").read_text().replace('"', "").replace(",", " ").split())
    again = cli(env, project, "serve", f"{number}:model", "--handler", HANDLER, "--export", "k8s", str(deploy),
                check=False)
    assert again.returncode != 0 and "not empty" in again.stderr
    wait_status(env, project, served["number"], TERMINAL, timeout=60)


def test_a_model_server_killed_hard_ends_its_run_and_frees_its_name(trained: tuple[dict[str, str], Path, int]) -> None:
    import signal

    env, project, number = trained
    served = serve(env, project, f"{number}:model", "--handler", HANDLER, "--name", "killed")
    api = api_of(env, project)
    try:
        run_id = api.run(served["number"]).id
    finally:
        api.close()
    from runyard.config import resolve
    from runyard.serve.connection import read_serve_file

    pid = int(read_serve_file(resolve(environ=env, cwd=project).home, run_id)["pid"])
    os.kill(pid, signal.SIGKILL)  # the OOM killer, say
    assert wait_status(env, project, served["number"], TERMINAL, timeout=60) == "failed"
    assert "url" not in next((r for r in json.loads(cli(env, project, "ps", "--json").stdout)
                              if r["number"] == served["number"]), {})
    again = serve(env, project, f"{number}:model", "--handler", HANDLER, "--name", "killed")
    assert again["number"] != served["number"]
    assert httpx.get(again["url"] + "ready", timeout=10, trust_env=False).status_code == 200
    cli(env, project, "stop", str(again["number"]))
    wait_status(env, project, again["number"], TERMINAL, timeout=60)


def test_a_projects_runyard_toml_names_the_handler_and_declares_its_inputs(tmp_path: Path) -> None:
    """[serve] in runyard.toml: `runyard serve RUN` needs no --handler, and a handler that annotates
    nothing gets its inputs checked as declared there."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "runyard.toml").write_text(
        '[serve]\nhandler = "plain.py:Plain"\noutput = "number"\n'
        '[serve.inputs.x]\ntype = "number"\nle = 10\n')
    (project / "plain.py").write_text("class Plain:\n    def predict(self, x):\n        return x + 1\n")
    (project / "train.py").write_text("import os\nos.makedirs('model', exist_ok=True)\n"
                                      "open('model/weights.txt', 'w').write('1')\n")
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env = {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0"}
    number = launch(env, project, "--", sys.executable, "train.py")
    assert wait_status(env, project, number, TERMINAL, timeout=60) == "finished"
    served = serve(env, project, f"{number}:model")
    try:
        with httpx.Client(base_url=served["url"], timeout=30, trust_env=False) as client:
            assert client.post("predict", json={"x": 2}).json()["output"] == 3
            refused = client.post("predict", json={"x": 11})
            assert refused.status_code == 422 and "at most 10" in refused.json()["error"]
    finally:
        cli(env, project, "stop", str(served["number"]))
    assert wait_status(env, project, served["number"], TERMINAL, timeout=60) == "stopped"
    (project / "runyard.toml").write_text("")
    nameless = cli(env, project, "serve", f"{number}:model", check=False)
    assert nameless.returncode == 2 and "give --handler FILE.py:Class" in nameless.stderr
