"""A collection run night after night, for the soak test (test_table_growth.py) and
benchmarks/bench_ledger.py: photos added, changed and removed between nights, each night through
the flow's own bookkeeping (pipeline.expand, prepare, plan_batches, record, under the run lock)
without Prefect or a network. The stand-in for stylizing writes each photo as its pair's output
and the pair's row, a batch at a time, as stylize_pairs does; an output therefore shows which
version of its photo it was made from.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
import traceback
import uuid
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from PIL import Image

from flows.lock import run_lock
from flows.manifest import Pair
from flows.pairs import base_row, plan_batches
from flows.pipeline import BATCH_SIZE, RunContext, Tally, expand, prepare, record
from flows.results import results_location, write_rows
from nst_core.image_io import load_image, save_image
from nst_core.storage import LOCAL

LOG = logging.getLogger("nights")
FIRST_NIGHT = date(2026, 1, 20)  # 30 nights from here span two months: two months of files to merge


class Collection:
    """photos/*.png (8 px, one colour each) x styles/*.png in one manifest row."""

    def __init__(self, root: Path, photos: int, styles: int, seed: int = 0):
        self.root, self.rng, self.made, self.versions = root, random.Random(seed), 0, 0
        self.colours: dict[str, tuple] = {}  # photo path -> its colour now
        (root / "photos").mkdir(parents=True)
        (root / "styles").mkdir()
        for index in range(styles):
            Image.new("RGB", (8, 8), (index, 0, 0)).save(root / "styles" / f"s{index}.png")
        self.manifest = str(root / "m.csv")
        Path(self.manifest).write_text("content,style,size\nphotos,styles,16\n")
        self.add(photos)

    def add(self, count: int) -> None:
        for _ in range(count):
            self.made += 1
            self.paint(str(self.root / "photos" / f"p{self.made:04d}.png"))

    def paint(self, path: str) -> None:
        """A new colour for the photo, and a modification time of its own (a new version, whatever
        the clock's resolution)."""
        colour = tuple(self.rng.randrange(256) for _ in range(3))
        Image.new("RGB", (8, 8), colour).save(path)
        self.versions += 1
        os.utime(path, (1_700_000_000 + self.versions,) * 2)
        self.colours[path] = colour

    def change(self, added: int, changed: int, removed: int) -> None:
        """The day's changes to the collection."""
        for path in self.rng.sample(sorted(self.colours), changed + removed)[:changed]:
            self.paint(path)
        for path in self.rng.sample(sorted(self.colours), removed):
            os.remove(path)
            del self.colours[path]
        self.add(added)


def night(collection: Collection, out: Path, number: int) -> Counter:
    """Night `number`: the collection's pairs through the run's bookkeeping; returns the run's counts."""
    run = RunContext(
        run_id=f"{FIRST_NIGHT + timedelta(days=number - 1):%Y%m%d}T020000-{uuid.uuid4().hex[:6]}",
        out=str(out),
        results_uri=results_location(str(out), None),
        weights=None,
        storage=LOCAL,
        memory_limit_gb=None,
        logger=LOG,
    )
    pairs = expand(run, collection.manifest, None, None, False)
    with run_lock(run.results_uri, run.run_id, LOCAL):
        ledger = prepare(run, pairs, force=False, since_last=False)
        tally = Tally(Counter(skipped=len(ledger.skipped), **ledger.counts()))
        for batch in plan_batches(ledger.todo, BATCH_SIZE, memory_limit_gb=1.0):
            for row in stand_in(batch, run.run_id, run.results_uri):
                tally.add(row, LOG)
        record(run, collection.manifest, ledger, tally)
    return tally.counts


def stand_in(batch: list[Pair], run_id: str, results_uri: str) -> list[dict]:
    """Each pair's photo saved as its output, then the batch's rows written together."""
    rows = []
    for pair in batch:
        save_image(load_image(pair.content, LOCAL), pair.output, LOCAL)
        now = datetime.now(timezone.utc)
        rows.append(
            {
                **base_row(pair, run_id),
                "status": "succeeded",
                "started_at": now,
                "finished_at": now,
                "total_seconds": 0.0,
                "total_loss": 0.0,
            }
        )
    write_rows(results_uri, rows, storage=LOCAL)
    return rows


def in_child(work, kill_when=None) -> bool:
    """work() in a forked process, SIGKILLed as soon as kill_when() is true (polled every 2 ms) unless
    it is done by then (None: never killed); True when it finished."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    while kill_when is None or not kill_when():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def after(seconds: float):
    """A kill_when: `seconds` from now."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline
