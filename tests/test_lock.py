"""One run at a time per results table: the second refuses, a dead run's lock is taken over."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, SAMPLES, nst
from flows import lock
from flows.lock import LOCK_NAME, UNSAFE_ENV, RunLockedError, UnsafeLockStoreError, run_lock
from flows.results import read_results
from nst_core.errors import ImageError
from nst_core.storage import LOCAL, Storage


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    results = str(tmp_path / "results")
    with run_lock(results, "first-run", LOCAL):
        with pytest.raises(RunLockedError, match=r"in use by run first-run on .* \(pid \d+"):
            with run_lock(results, "second-run", LOCAL):
                pass
    assert not (tmp_path / "results" / LOCK_NAME).exists()  # released
    with run_lock(results, "third-run", LOCAL):  # free again
        assert json.loads((tmp_path / "results" / LOCK_NAME).read_text())["run_id"] == "third-run"


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "results").mkdir()
    lock = {"run_id": "killed-run", "host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time()}
    (tmp_path / "results" / LOCK_NAME).write_text(json.dumps(lock))
    with run_lock(str(tmp_path / "results"), "next-run", LOCAL):
        assert "next-run" in (tmp_path / "results" / LOCK_NAME).read_text()


def test_a_silent_lock_from_another_host_is_taken_over_but_a_fresh_one_is_not(tmp_path):
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / LOCK_NAME
    path.write_text(json.dumps({"run_id": "busy", "host": "elsewhere", "pid": 1, "heartbeat": time.time()}))
    with pytest.raises(RunLockedError, match="busy on elsewhere"):
        with run_lock(str(tmp_path / "results"), "mine", LOCAL):
            pass
    path.write_text(json.dumps({"run_id": "gone", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}))
    with run_lock(str(tmp_path / "results"), "mine", LOCAL):
        assert "mine" in path.read_text()


def test_nst_run_refuses_a_held_table_within_seconds_before_starting_prefect(tmp_path):
    (tmp_path / "out" / "results").mkdir(parents=True)
    holder = {
        "run_id": "nightly-1",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": "02:00",
        "heartbeat": time.time(),
    }  # this test's process: alive
    (tmp_path / "out" / "results" / LOCK_NAME).write_text(json.dumps(holder))
    (tmp_path / "m.csv").write_text(f"content,style\n{SAMPLES / 'content' / 'chelsea.jpg'},{SAMPLES / 'styles'}\n")
    started = time.time()
    result = subprocess.run(
        nst("run", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.time() - started < 5, "the lock must be checked before Prefect's server starts"
    assert result.returncode == 2 and "is in use by run nightly-1" in result.stderr
    assert "Starting temporary server" not in result.stderr + result.stdout


def test_the_lock_on_s3_is_a_conditional_put(s3):
    """Moto honours If-None-Match (412 on a second conditional create): its probe passes, and leaves no key."""
    fs, options = s3
    with run_lock("s3://nst-test/res", "first", Storage(options)):
        assert fs.find("nst-test/res") == [f"nst-test/res/{LOCK_NAME}"]  # the probe key is gone
        with pytest.raises(RunLockedError, match="in use by run first"):
            with run_lock("s3://nst-test/res", "second", Storage(options)):
                pass
    fs.invalidate_cache()
    assert fs.find("nst-test/res") == []


def _probe_puts(seen: list) -> int:
    return sum(method == "PUT" and f"{LOCK_NAME}.probe-" in path for method, path in seen)


def test_a_store_ignoring_conditional_creates_is_refused_naming_its_endpoint(s3, s3_ignoring_conditions, monkeypatch):
    fs, moto_options = s3
    options, seen = s3_ignoring_conditions
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    with pytest.raises(UnsafeLockStoreError) as refused:
        with run_lock("s3://nst-test/res", "mine", Storage(options)):
            pass
    message = str(refused.value)
    assert "\n" not in message and options["endpoint_url"] in message and f"{UNSAFE_ENV}=1" in message
    assert message.startswith("s3://nst-test/res: ") and "If-None-Match" in message
    assert _probe_puts(seen) == 2  # created, then created again: accepted
    fs.invalidate_cache()
    assert fs.find("nst-test/res") == []  # probe removed, no lock written
    with pytest.raises(UnsafeLockStoreError):  # the verdict is kept for the endpoint: no second probe
        with run_lock("s3://nst-test/other", "mine", Storage(options)):
            pass
    assert _probe_puts(seen) == 2
    with run_lock("s3://nst-test/res", "mine", Storage(moto_options)):  # moto itself, same buckets: its own verdict
        pass


def test_with_the_opt_out_a_store_ignoring_conditions_is_locked_by_look_then_write(
    s3, s3_ignoring_conditions, monkeypatch
):
    fs, _ = s3
    options, _ = s3_ignoring_conditions
    monkeypatch.setenv(UNSAFE_ENV, "1")
    with run_lock("s3://nst-test/res", "first", Storage(options)):
        assert json.loads(fs.cat_file(f"nst-test/res/{LOCK_NAME}"))["run_id"] == "first"
        with pytest.raises(RunLockedError, match="in use by run first"):  # seen before writing, not overwritten
            with run_lock("s3://nst-test/res", "second", Storage(options)):
                pass
        assert json.loads(fs.cat_file(f"nst-test/res/{LOCK_NAME}"))["run_id"] == "first"
    fs.invalidate_cache()
    assert fs.find("nst-test/res") == []


def test_nst_run_refuses_a_store_ignoring_conditional_creates_before_starting_prefect(s3_ignoring_conditions, tmp_path):
    options, _ = s3_ignoring_conditions
    (tmp_path / "m.csv").write_text(f"content,style\n{SAMPLES / 'content' / 'chelsea.jpg'},{SAMPLES / 'styles'}\n")
    env = {key: value for key, value in os.environ.items() if key != UNSAFE_ENV}
    started = time.time()
    result = subprocess.run(
        nst("run", str(tmp_path / "m.csv"), "--out", "s3://nst-test/out", "--s3-endpoint-url", options["endpoint_url"]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.time() - started < 10, "the store must be probed before Prefect's server starts"
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nst: s3://nst-test/out/results: the store at ")
    assert "does not honour conditional creates" in lines[0] and f"{UNSAFE_ENV}=1" in lines[0]


def test_two_runs_at_once_on_one_output_root(prefect_api, tmp_path, samples, weights_path):
    """Started together: one runs, the other refuses with a clear message; the table is whole."""
    samples("photos", "chelsea", "coffee")
    (tmp_path / "m.csv").write_text(f"content,style\nphotos,{SAMPLES / 'styles' / 'shipwreck.jpg'}\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "NST_WEIGHTS": weights_path}
    command = nst(
        "run",
        str(tmp_path / "m.csv"),
        "--out",
        str(tmp_path / "out"),
        "--size",
        "32",
        "--iterations",
        "10",
        "--tolerance",
        "0",
    )  # holds the lock for seconds even so (15 s here, under load): the backend's import, the model's build
    runs = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-1500:] for _, err in results]
    refused = next(err for code, err in results if code == 2)
    assert "is in use by run" in refused and LOCK_NAME in refused
    table = read_results(str(tmp_path / "out" / "results"), storage=LOCAL)
    assert len(table) == 2 and set(table.status) == {"succeeded"} and table.pair_id.is_unique


def _beats(path, seconds: float) -> int:
    """How many times the lock at `path` was refreshed within `seconds`."""
    seen, deadline = set(), time.time() + seconds
    while time.time() < deadline:
        seen.add(json.loads(path.read_text())["heartbeat"])
        time.sleep(0.01)
    return len(seen) - 1


def test_the_heartbeat_stops_when_a_run_asked_to_stop_overstays(tmp_path, monkeypatch):
    """A run hung after a signal must not keep its lock fresh: it goes stale and the next run takes over."""
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / "results" / LOCK_NAME
    with run_lock(str(tmp_path / "results"), "running", LOCAL, stopped_at=lambda: None):
        assert _beats(path, 0.5) >= 3
    stopping = time.monotonic()
    with run_lock(str(tmp_path / "results"), "stopping", LOCAL, stopped_at=lambda: stopping):
        assert _beats(path, 0.5) >= 3  # within its grace
    hung = time.monotonic() - lock.STOP_GRACE_SECONDS
    with run_lock(str(tmp_path / "results"), "hung", LOCAL, stopped_at=lambda: hung):
        assert _beats(path, 0.5) == 0


def test_the_heartbeat_stops_with_the_main_thread(tmp_path):
    """A process whose main thread ended while another thread keeps it alive stops refreshing its lock."""
    script = (
        "import threading, time\n"
        "import flows.lock as lock\n"
        "lock.HEARTBEAT_SECONDS = 0.05\n"
        f"held = lock.run_lock({str(tmp_path / 'results')!r}, 'orphan', lock.Storage())\n"
        "held.__enter__()\n"  # never left: as a main thread that ends without unwinding
        "time.sleep(0.3)\n"
        "threading.Thread(target=time.sleep, args=(3,)).start()\n"  # not a daemon: outlives the main thread
        "print('main thread done', flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "main thread done\n"
    time.sleep(0.2)  # a beat in flight when the main thread ended lands
    assert _beats(tmp_path / "results" / LOCK_NAME, 1.5) == 0
    assert process.wait(timeout=10) == 0


# One contender for a dead run's lock: waits for the start signal (a file), judges the lock with a
# pause between reading it and acting on it, and says whether it got the lock.
CONTENDER = """
import os, sys, time
import flows.lock as lock
from nst_core.storage import Storage

results, endpoint, go = sys.argv[1:4]
judge = lock._is_stale


def slow_judge(holder):
    stale = judge(holder)
    time.sleep(0.3)  # the others read the same dead lock meanwhile
    return stale


lock._is_stale = slow_judge
storage = Storage({"endpoint_url": endpoint} if endpoint else None)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    with lock.run_lock(results, f"contender-{os.getpid()}", storage):
        print("held", flush=True)
        time.sleep(3)  # past every other contender's attempt
except lock.RunLockedError as error:
    print(f"refused: {error}", flush=True)
"""


@pytest.mark.parametrize("where", ["local", "s3"])
def test_runs_started_together_after_a_crash_take_the_dead_runs_lock_once(where, tmp_path, request):
    """Four runs find the same dead run's lock and take it over at the same moment: one holds it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = json.dumps(
        {"run_id": "killed-run", "host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time()}
    )
    if where == "s3":
        fs, options = request.getfixturevalue("s3")
        results, endpoint = "s3://nst-test/res", options["endpoint_url"]
        fs.pipe_file(f"nst-test/res/{LOCK_NAME}", stale.encode())
    else:
        results, endpoint = str(tmp_path / "results"), ""
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / LOCK_NAME).write_text(stale)
    go = tmp_path / "go"
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, results, endpoint, str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for contender in contenders:
        assert contender.stdout.readline() == "ready\n"
    go.touch()
    said = sorted(contender.communicate(timeout=60)[0].strip() for contender in contenders)
    assert said[0] == "held" and all(line.startswith("refused: ") for line in said[1:]), said
    assert all("is in use by run contender-" in line for line in said[1:]), said  # the winner named


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a real file system with no space left: a 64 KB tmpfs, filled (dd stops at ENOSPC)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN (the next test covers the same call without it)")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_is_named_in_the_error_of_every_write(full_disk):
    results = full_disk / "results"
    with pytest.raises(OSError) as caught:
        with run_lock(str(results), "r1", LOCAL):
            pass
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(results / LOCK_NAME)
    assert str(results / LOCK_NAME) in str(caught.value)  # what `nst run` prints
    assert os.listdir(results) == []  # no temporary left behind
    with pytest.raises(ImageError, match=f"^{full_disk / 'a.png'}: cannot write it: no space left on device$"):
        LOCAL.write_atomic(str(full_disk / "a.png"), bytes(10_000))  # outputs, row files, reports
    assert sorted(os.listdir(full_disk)) == ["filler", "results"]


def test_a_write_the_kernel_refuses_is_named_when_the_lock_cannot_be_written(tmp_path):
    """The same call without root: a file-size limit of 0 bytes makes the kernel refuse the lock's
    write (EFBIG), as a full disk refuses it (ENOSPC)."""
    code = (
        "import resource, signal, sys\n"
        "from flows.lock import run_lock\nfrom nst_core.storage import LOCAL\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))\n"
        "with run_lock(sys.argv[1], 'r1', LOCAL):\n    pass\n"
    )
    results = tmp_path / "results"
    child = subprocess.run([sys.executable, "-c", code, str(results)], cwd=REPO, capture_output=True, text=True)
    assert child.returncode == 1
    assert child.stderr.splitlines()[-1] == f"OSError: [Errno {errno.EFBIG}] File too large: '{results / LOCK_NAME}'"
    assert os.listdir(results) == []
