"""Scheduled runs: `nst serve` against a real `prefect server start`, and the repo's prefect.yaml.

Schedules need a real server (the ephemeral one cannot schedule), so this module starts
one, once, with its own PREFECT_HOME and SQLite database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
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
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/p.db",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"{api}/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        assert server.poll() is None, "prefect server start exited"
        time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("prefect server did not answer /api/health within 90 s")
    yield api
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


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


def test_serve_registers_a_cron_deployment_whose_runs_stylize(prefect_server, tmp_path, samples, weights_path):
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    samples("photos", "chelsea", "coffee")
    samples("", the_scream="scream.jpg")
    (tmp_path / "m.csv").write_text("content,style\nphotos,scream.jpg\n")
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve = subprocess.Popen(
        nst(
            "serve",
            "m.csv",
            "--out",
            "out",
            "--cron",
            "0 2 * * *",
            "--timezone",
            "Europe/Paris",
            "--name",
            "nightly-test",
            *tiny_run(weights_path),
        ),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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

        def scheduled_runs():  # the real server's scheduler fills in the nights ahead
            with _client(prefect_server) as client:
                return client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id={"any_": [deployment.id]}, state={"type": {"any_": ["SCHEDULED"]}}
                    )
                )

        runs = _wait_for(scheduled_runs, 60, "no scheduled runs")
        for run in runs:
            local = run.expected_start_time.astimezone(ZoneInfo("Europe/Paris"))
            assert (local.hour, local.minute) == (2, 0) and local > datetime.now(ZoneInfo("Europe/Paris"))

        started = time.time()
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            flow_run = run_deployment(DEPLOYMENT, timeout=240, poll_interval=1)
        assert flow_run.state.is_completed(), flow_run.state
        print(f"deployment run: {time.time() - started:.1f} s from trigger to completed")
        table = read_results(str(out / "results"), storage=LOCAL)
        assert len(table) == 2 and (table.status == "succeeded").all()
        assert table.content_fingerprint.notna().all() and len(list(out.glob("*.png"))) == 2
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            output, _ = serve.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            output, _ = serve.communicate()
    assert serve.returncode is not None and "Traceback" not in output, output[-3000:]


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
