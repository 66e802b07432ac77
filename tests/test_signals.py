"""A signal stops a run whatever its main thread is doing, even inside Prefect's log sender."""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

from conftest import REPO

# A flow that logs through Prefect's run logger (and so its API log sender) as fast as it can,
# round after round; a signal ends each round, and the round logs the stop as a run does.
BUSY_LOGGER = """
import sys

from prefect import flow, get_run_logger

from flows.pairs import stop_on_signals, stop_requested, stop_signal


@flow
def busy(rounds: int) -> None:
    logger = get_run_logger()
    for i in range(rounds):
        with stop_on_signals():
            print(f"ready {i}", flush=True)
            while not stop_requested():
                logger.info("busy " * 20)
        logger.warning(f"{stop_signal()}: stopped")
        print(f"stopped {i} {stop_signal()}", flush=True)


busy(int(sys.argv[1]))
"""


def _lines(process: subprocess.Popen):
    """A function giving the process's next line of output, or '' when none comes within its
    `seconds` (a hang); the lines are read on a thread, so a hang cannot block the test."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()

    def next_line(seconds: float) -> str:
        try:
            return lines.get(timeout=seconds)
        except queue.Empty:
            return ""

    return next_line


def test_a_hundred_signals_landing_while_prefect_logs_never_hang_a_run(prefect_api, tmp_path):
    rounds, chosen = 100, random.Random(7)
    (tmp_path / "busy.py").write_text(BUSY_LOGGER)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(tmp_path / "busy.py"), str(rounds)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    line = _lines(process)
    try:
        assert line(60) == "ready 0\n", "the flow never started"
        for i in range(rounds):
            time.sleep(chosen.uniform(0, 0.05))  # anywhere in the logger's work
            signum = chosen.choice([signal.SIGINT, signal.SIGTERM])
            process.send_signal(signum)
            assert line(10) == f"stopped {i} {signum.name}\n", f"hung after signal {i + 1}"
            if i + 1 < rounds:
                assert line(10) == f"ready {i + 1}\n"
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    told = (tmp_path / "stderr.txt").read_text()
    assert told.count("abandoning the batch in progress and stopping") == rounds  # each signal said so at once
