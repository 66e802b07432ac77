"""Scheduled runs: `nst serve` against the real Prefect server `nst ui` starts, and the repo's prefect.yaml.

Schedules need a server that keeps running (a temporary one cannot schedule), so this module starts
one, once, with its own PREFECT_HOME and SQLite database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

from conftest import REPO, nst, tiny_run
from flows.results import read_results
from flows.server import free_port
from nst_core.storage import LOCAL

DEPLOYMENT = "stylize-manifest/nightly-test"


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def prefect_server(prefect_home):
    """`nst ui` on a free loopback port, its history in its own PREFECT_HOME; yields the API URL it
    says to send runs to."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    log = prefect_home / "ui.log"
    with open(log, "w") as out:
        server = subprocess.Popen(nst("ui", "--port", port), env=env, stdout=out, stderr=subprocess.STDOUT)
    said = _wait_for(lambda: re.search(r"export PREFECT_API_URL=(\S+)", log.read_text()), 90, "nst ui said nothing")
    assert server.poll() is None, log.read_text()
    yield said.group(1)
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def test_ui_keeps_history_and_shows_it_in_the_browser(prefect_server, prefect_home):
    """`nst ui`: a server whose UI page answers, its database in PREFECT_HOME, and the lines it printed."""
    root = prefect_server.removesuffix("/api")
    page = requests.get(root, headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert requests.get(f"{prefect_server}/health", timeout=10).ok and (prefect_home / "prefect.db").exists()
    printed = (prefect_home / "ui.log").read_text()
    assert f"Prefect UI: {root}" in printed and "  nst run manifests/example.csv --out out/example" in printed


def _client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return get_client(sync_client=True)


def _wait_for(check, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} within {seconds} s")


def _deployment(api: str, name: str):
    from prefect.exceptions import ObjectNotFound

    with _client(api) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def _assert_one_run_at_a_time(deployment) -> None:
    """Overlapping scheduled runs queue: a deployment limit of 1 that enqueues the later run."""
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == "ENQUEUE"


def _serve(tmp_path, api: str, *flags: str) -> subprocess.Popen:
    """`nst serve m.csv --out out` against the server at `api`, polling for runs every second."""
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    command = nst("serve", "m.csv", "--out", "out", *flags)
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(serve: subprocess.Popen) -> str:
    """Ctrl-C to `nst serve`; its output."""
    serve.send_signal(signal.SIGINT)
    try:
        output, _ = serve.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        serve.kill()
        output, _ = serve.communicate()
    return output


def _flow_runs(api: str, deployment, state: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter

    with _client(api) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id={"any_": [deployment.id]}, state={"type": {"any_": [state]}})
        )


def test_serve_registers_a_cron_deployment(prefect_server, tmp_path, samples, weights_path):
    samples("photos", "chelsea", "coffee")
    samples("", the_scream="scream.jpg")
    (tmp_path / "m.csv").write_text("content,style\nphotos,scream.jpg\n")
    out = tmp_path / "out"
    serve = _serve(
        tmp_path,
        prefect_server,
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--name",
        "nightly-test",
        *tiny_run(weights_path),
    )
    try:
        deployment = _wait_for(lambda: _deployment(prefect_server, DEPLOYMENT), 120, "no deployment")
        (schedule,) = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
            "0 2 * * *",
            "Europe/Paris",
            True,
        )
        parameters = deployment.parameters
        assert parameters["manifest"] == str(tmp_path / "m.csv") and parameters["out"] == str(out)  # made absolute
        assert parameters["overrides"] == {"size": 32, "iterations": 3, "tolerance": 0.0}
        assert parameters["since_last"] is True and parameters["weights"] == weights_path
        form = deployment.parameter_openapi_schema["definitions"]["StyleOverrides"]["properties"]  # the UI's form
        assert form["init"]["anyOf"][0]["enum"] == ["noise", "content", "style", "fast", "recolored"]
        assert form["size"]["minimum"] == 16 and "longest side" in form["size"]["description"]
        _assert_one_run_at_a_time(deployment)

        # The real server's scheduler fills in the nights ahead.
        runs = _wait_for(lambda: _flow_runs(prefect_server, deployment, "SCHEDULED"), 60, "no scheduled runs")
        for run in runs:
            local = run.expected_start_time.astimezone(ZoneInfo("Europe/Paris"))
            assert (local.hour, local.minute) == (2, 0) and local > datetime.now(ZoneInfo("Europe/Paris"))
    finally:
        output = _stop(serve)
    assert serve.returncode is not None and "Traceback" not in output, output[-3000:]


def test_serve_fires_its_schedule_and_the_run_stylizes(prefect_server, tmp_path, samples, weights_path):
    """A real scheduled run, every minute: the server's scheduler makes it, `nst serve` runs it."""
    samples("", "chelsea", the_scream="scream.jpg")
    (tmp_path / "m.csv").write_text("content,style\nchelsea.jpg,scream.jpg\n")
    started = time.time()
    serve = _serve(tmp_path, prefect_server, "--cron", "* * * * *", "--name", "every-minute", *tiny_run(weights_path))
    try:
        name = "stylize-manifest/every-minute"
        deployment = _wait_for(lambda: _deployment(prefect_server, name), 120, "no deployment")
        # Up to a minute to the next one, then the run itself.
        (run, *_) = _wait_for(lambda: _flow_runs(prefect_server, deployment, "COMPLETED"), 150, "no completed run")
        print(f"serve to first scheduled run completed: {time.time() - started:.0f} s")
    finally:
        output = _stop(serve)
    assert run.auto_scheduled and "Traceback" not in output, output[-3000:]
    table = read_results(str(tmp_path / "out" / "results"), storage=LOCAL)
    assert list(table.status) == ["succeeded"] and set(table.flow_run_id) == {str(run.id)}
    assert Path(table.output_uri.iloc[0]).is_file()


def test_serve_refuses_without_a_server_that_keeps_running(tmp_path, capsys, monkeypatch):
    """Prefect's temporary server cannot fire a schedule: `nst serve` says what to run instead, in one line."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / "m.csv").write_text("content,style\na.jpg,b.jpg\n")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["serve", "m.csv", "--out", "out", "--cron", "* * * * *"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nst ui" in error and "PREFECT_API_URL=" in error, error


@pytest.mark.backends  # on JAX: `nst serve` loads the backend and the flow without TensorFlow
def test_serve_rejects_a_bad_cron_or_timezone_before_registering(tmp_path, capsys, monkeypatch):
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.csv").write_text("content,style\na.jpg,b.jpg\n")
    for flags, message in (
        (["--cron", "0 25 * * *"], "Invalid cron"),
        (["--cron", "0 2 * * *", "--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
    ):
        assert main(["serve", "m.csv", "--out", "out", *flags]) == 2
        assert message in capsys.readouterr().err


def test_prefect_yaml_deploys_the_nightly_flow(prefect_server, tmp_path):
    """The repo's prefect.yaml: the entrypoint is the flow, its parameters fit it, and `prefect deploy`
    registers it on a real server with its cron schedule."""
    import inspect

    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (nightly,) = spec["deployments"]
    flow = load_flow_from_entrypoint(str(REPO / nightly["entrypoint"]))
    assert flow.name == "stylize-manifest"
    assert set(nightly["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    flow.validate_parameters(nightly["parameters"])  # types fit the flow's signature
    (schedule,) = nightly["schedules"]
    Cron(schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron
    ZoneInfo(schedule["timezone"])

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "NST_REPO_DIR": str(REPO)}
    from prefect.client.schemas.actions import WorkPoolCreate

    with _client(prefect_server) as client:
        client.create_work_pool(WorkPoolCreate(name="nst", type="process"), overwrite=True)
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    deployment = _deployment(prefect_server, "stylize-manifest/nightly")
    (registered,) = deployment.schedules
    assert (registered.schedule.cron, registered.schedule.timezone) == ("0 2 * * *", "Europe/Paris")
    assert deployment.parameters["since_last"] is True and deployment.work_pool_name == "nst"
    _assert_one_run_at_a_time(deployment)
    assert deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
