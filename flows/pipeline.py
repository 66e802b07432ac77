"""The Prefect flow: a manifest in, stylized images and a results table out.

Thin orchestration over plain functions (flows/manifest.py, flows/pairs.py,
flows/results.py): expand the manifest, skip what a previous run finished,
group the rest into batches, fan out one task per batch, fail the run if any pair failed.
Pairs run on a thread pool in this process, or on a Dask cluster (flows/dask_runner.py).
"""

from __future__ import annotations

import posixpath
import threading
import typing
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.runtime import task_run
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm import tqdm

from nst_core.model import feature_extractor
from nst_core.params import StyleParams
from nst_core.storage import Storage, absolute, join_uri, remove_orphan_temporaries

from .grids import axis_label
from .ledger import Ledger, ledger_line, sort_pairs
from .lock import run_lock
from .manifest import Pair, expand_manifest, unreadable_files
from .pairs import (
    BATCH_SIZE,
    RunStopped,
    base_row,
    default_memory_limit_gb,
    failure_message,
    is_transient,
    plan_batches,
    steps_reported,
    stop_on_signals,
    stop_requested,
    stop_signal,
    stopped_at,
    stylize_pairs,
)
from .parameters import (
    BatchSize,
    MemoryLimitGB,
    OutputFormat,
    StorageOptions,
    StyleOverrides,
    overrides_dict,
    storage_of,
)
from .report import publish_report
from .results import (
    compact_results,
    deliver_spooled,
    flow_run_columns,
    results_location,
    spool_folder,
    spool_rows,
    write_rows,
)
from .runs import COUNTS, record_run, runs_location

RETRY_DELAYS = [2, 10, 30]  # seconds: rides out an S3 endpoint restart or a throttling burst
# Batches submitted at a time: memory stays bounded for collections of any size, and 64 is
# far above any useful --concurrency, so at most concurrency-1 workers idle at a window's end.
SUBMIT_WINDOW = 64
FAILURES_SHOWN = 10  # failures a failed run's closing message names; the report lists them all


class PairsFailedError(RuntimeError):
    """Some pairs failed; their rows in the results table say why."""


class RunInterruptedError(RuntimeError):
    """SIGINT or SIGTERM stopped the run; finished pairs are recorded, a rerun does the rest."""


def _retry_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


def batch_name(parameters: dict) -> str:
    """The task run's name as a person finds it in the UI: "astronaut x starry_night +3" (its first
    pair's photo and painting, and how many more pairs share the batch), not a hash."""
    pairs = parameters["pairs"]
    first = pairs[0]
    name = f"{axis_label('content', first.content)} x {axis_label('style', ' + '.join(first.styles))}"
    return name + (f" +{len(pairs) - 1}" if len(pairs) > 1 else "")


@task(
    name="stylize-batch",
    task_run_name=batch_name,
    cache_policy=NONE,
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retry_transient,
)
def stylize_batch_task(
    pairs: list[Pair],
    run_id: str,
    results_uri: str,
    weights: str | None,
    storage: Storage,
    memory_limit_gb: float | None,
    output_format: str | None = None,
) -> list[dict]:
    return stylize_pairs(
        pairs,
        run_id,
        results_uri,
        weights=weights,
        storage=storage,
        memory_limit_gb=memory_limit_gb,
        attempts=task_run.run_count,
        output_format=output_format,
    )


@task(name="load-network", cache_policy=NONE)
def load_network_task(params: StyleParams, weights: str | None) -> None:
    """Build the network where the pairs run (this process, or a Dask worker, never touching the
    flow process's GPUs then): a weights problem stops the run before any pair."""
    feature_extractor(params.arch, weights, params.content_layers + params.style_layers, params.pooling)


def closed_row(pair: Pair, run_id: str, status: str, **cells) -> dict:
    """The row of a pair this run settles without stylizing it: started and finished now."""
    now = datetime.now(timezone.utc)
    return {**base_row(pair, run_id), "status": status, "started_at": now, "finished_at": now, **cells}


def fail_unreadable(run: RunContext, todo: list[Pair], tally: Tally) -> list[Pair]:
    """The pairs whose files all open as images (their headers read, nothing decoded); the others
    fail here, before the network loads, their rows naming the file and why."""
    problems = unreadable_files(todo, run.storage)
    rows, readable = [], []
    for pair in todo:
        reason = next((problems[uri] for uri in pair.files if uri in problems), None)
        if reason is None:
            readable.append(pair)
        else:
            rows.append(closed_row(pair, run.run_id, "failed", error=reason, attempts=1, transient=False))
    write_rows(run.results_uri, rows, storage=run.storage)
    for row in rows:
        tally.add(row, run.logger)
    return readable


def summary_markdown(run_id: str, counts: Counter, failures: list[dict], seconds: list[float]) -> str:
    lines = [
        f"# Run {run_id}",
        "",
        "| succeeded | failed | skipped |",
        "|---|---|---|",
        f"| {counts['succeeded']} | {counts['failed']} | {counts['skipped']} |",
        "",
        f"Pairs: {ledger_line(counts)}.",
        "",
    ]
    if seconds:
        lines.append(f"Stylization time: {sum(seconds):.1f} s in all, {sum(seconds) / len(seconds):.1f} s per pair.")
    if failures:
        lines += ["", "## Failures", ""] + [
            f"- `{row['content_uri']}` x `{row['style_uri']}`: {row['error']}" for row in failures
        ]
    return "\n".join(lines)


# Deployments served by `nst serve` or run by a Prefect worker use this default: one pair at a
# time (Prefect's own default thread pool has no limit). `nst run` picks its runner per call.
@flow(name="stylize-manifest", task_runner=ThreadPoolTaskRunner(max_workers=1))
def stylize_manifest(
    manifest: str,
    out: str,
    results: str | None = None,
    force: bool = False,
    overrides: StyleOverrides | None = None,
    weights: str | None = None,
    storage_options: StorageOptions | None = None,
    progress: bool = False,
    memory_limit_gb: MemoryLimitGB | None = None,
    retry_delays: list[float] = RETRY_DELAYS,
    sweep: str | None = None,
    since_last: bool = False,
    batch_size: BatchSize | None = None,
    allow_empty: bool = False,
    output_format: OutputFormat | None = None,
) -> dict:
    """Stylize every pair of `manifest` into `out`; rows go to `results` (default OUT/results).

    `overrides` (flows/parameters.py: a field per StyleParams field, or a plain dict) win over the
    manifest's cells; `storage_options` reach S3 (a model or a plain dict).

    Pairs new or changed since their last succeeded row run; unchanged ones are skipped
    (flows/ledger.py). With `since_last`, pairs that failed on bad input that has not
    changed since are skipped too (what nightly deployments use); `force` redoes everything.

    Pairs of one size and parameter structure are optimised together, `batch_size` (default
    BATCH_SIZE) at a time or as many as fit in `memory_limit_gb` (default $NST_MEMORY_LIMIT_GB
    or two thirds of RAM); a pair whose own estimated memory exceeds it fails alone, before it starts.
    Transient storage errors are retried after each of `retry_delays` seconds. `sweep`
    (flows/sweeps.py) applies to rows without their own. A manifest matching no images at all
    is a ManifestError unless `allow_empty`. Outputs keep their photo's EXIF; `output_format` png16
    or tiff16 writes 16 bits per channel (tiff16: outputs named `.tif`, without EXIF).

    Returns counts per status and per ledger class (new, changed, unchanged, still_failing);
    raises PairsFailedError when any pair failed, and RunInterruptedError after SIGINT/SIGTERM
    (finished pairs recorded, the rest left).
    """
    run = RunContext(
        run_id=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
        out=out,
        results_uri=results_location(out, results),
        weights=weights,
        storage=storage_of(storage_options),
        memory_limit_gb=memory_limit_gb,
        logger=get_run_logger(),
        output_format=output_format,
    )
    pairs = expand(run, manifest, overrides_dict(overrides), sweep, allow_empty)
    with run_lock(run.results_uri, run.run_id, run.storage, stopped_at):  # one run per results table at a time
        ledger = prepare(run, pairs, force, since_last)
        tally = Tally(Counter(skipped=len(ledger.skipped), **ledger.counts()))
        todo = fail_unreadable(run, ledger.todo, tally)
        run_batches(run, todo, tally, batch_size or BATCH_SIZE, retry_delays, progress)
        record(run, manifest, ledger, tally)
    report = publish(run, tally)
    return finish(run, tally, report, len(pairs))


# `nst serve` ships the flow to its runs pickled by value (prefect.bundles), with only the globals its
# body names: its parameters' types must be objects there, not the strings `from __future__` leaves.
stylize_manifest.fn.__annotations__ = typing.get_type_hints(stylize_manifest.fn, include_extras=True)  # ranges too


@dataclass(frozen=True)
class RunContext:
    """What every step of one run needs: its id, where it reads and writes, how pairs run, its log."""

    run_id: str
    out: str
    results_uri: str
    weights: str | None
    storage: Storage
    memory_limit_gb: float | None
    logger: object
    output_format: str | None = None  # nst_core.image_io.OUTPUT_FORMATS; None: 8-bit, by extension
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def expand(run: RunContext, manifest: str, overrides: dict | None, sweep: str | None, allow_empty: bool) -> list[Pair]:
    """The manifest's pairs, its warnings logged."""
    pairs, warnings = expand_manifest(
        manifest,
        run.out,
        overrides=overrides,
        storage=run.storage,
        sweep=sweep,
        allow_empty=allow_empty,
        output_format=run.output_format,
    )
    for warning in warnings:
        run.logger.warning(warning)
    return pairs


def prepare(run: RunContext, pairs: list[Pair], force: bool, since_last: bool) -> Ledger:
    """Tidy what killed runs left, read the table, and sort the pairs into to do and skipped (no row
    is written for a skipped pair: the run's record lists them, `record`)."""
    remove_killed_writes(pairs, run.out, run.results_uri, run.logger)
    delivered = deliver_spooled(run.results_uri, storage=run.storage)
    if delivered:
        run.logger.info(f"delivered {delivered} spooled result file(s) from an earlier run")
    ledger = sort_pairs(pairs, run.results_uri, run.storage, force=force, since_last=since_last)
    run.logger.info(
        f"run {run.run_id}: {len(pairs)} pairs: {ledger_line(Counter(ledger.counts()))}; {len(ledger.todo)} to stylize"
    )
    return ledger


def run_batches(
    run: RunContext, todo: list[Pair], tally: Tally, batch_size: int, retry_delays: list[float], progress: bool
) -> None:
    """The pairs to do, in batches on the task runner, SUBMIT_WINDOW batches in flight at a time.
    Stops early at SIGINT/SIGTERM, counting the pairs left as stopped."""
    before = tally.finished()  # failed in planning
    shown = RunProgress(run, todo, tally.counts, progress)
    task = stylize_batch_task.with_options(retries=len(retry_delays), retry_delay_seconds=retry_delays)
    batches = plan_batches(todo, batch_size, run.memory_limit_gb or default_memory_limit_gb())
    if todo:
        load_network_task.submit(todo[0].params, run.weights).result()
        run.logger.info(f"{len(todo)} pairs in {len(batches)} batches of up to {batch_size}")

    with stop_on_signals(), steps_reported(run.run_id, shown):
        for start in range(0, len(batches), SUBMIT_WINDOW):
            futures = {
                task.submit(
                    batch, run.run_id, run.results_uri, run.weights, run.storage, run.memory_limit_gb, run.output_format
                ): batch
                for batch in batches[start : start + SUBMIT_WINDOW]
            }
            _count_finished(run, futures, tally, shown, attempts=len(retry_delays) + 1)
            if stop_requested():
                tally.counts["stopped"] = len(todo) - (tally.finished() - before)
                run.logger.warning(f"{stop_signal()}: stopped; {tally.counts['stopped']} pairs left for the next run")
                break
    shown.close()


class RunProgress:
    """How far the run is, where people look: `nst run`'s bar (`show`) and the `stylize-progress`
    artifact in the Prefect UI (percent of the manifest's pairs done, those `counts` settled before
    any batch, skipped or failed in planning, included).

    The bar counts the work left: optimiser steps of the pairs to do, each pair its budget
    (StyleParams.steps(), 1 for the fast method), so it moves within a long pair: steps taken in
    this process (the threads runner) advance it as they happen; when a batch finishes, its pairs
    fill what they did not report (an early stop, or a Dask worker, whose steps are not seen here).
    While the first batch of a shape compiles (minutes, at large sizes) the bar says so. The
    artifact moves per batch.
    """

    def __init__(self, run: RunContext, todo: list[Pair], counts: Counter, show: bool):
        self.budgets = {pair.pair_id: max(1, pair.params.steps()) for pair in todo}
        self.seen: Counter = Counter()
        self.counts = Counter(counts)
        self.done, self.already = 0, counts["skipped"] + counts["failed"]
        self.shapes: set = set()  # the batch keys this run has started
        self.compiling: set[str] = set()  # the pairs of the batch compiling now
        self.lock = threading.Lock()  # steps arrive from the task runner's threads
        self.bar = tqdm(total=sum(self.budgets.values()), unit="step", disable=not show, dynamic_ncols=True)
        self.show()
        self.artifact = create_progress_artifact(
            self.percent(), key="stylize-progress", description=f"run {run.run_id}: percent of its pairs done"
        )

    def percent(self) -> float:
        total = self.already + len(self.budgets)
        return 100.0 * (self.already + self.done) / total if total else 100.0

    def show(self) -> None:
        if self.compiling:
            return  # starting() said what the wait is
        counts = self.counts
        self.bar.set_postfix_str(
            f"pairs {self.done}/{len(self.budgets)}, {counts['failed']} failed, {counts['skipped']} skipped"
        )

    def starting(self, pair_ids: list[str], key: tuple, shape: tuple) -> None:
        """A batch is about to be optimised (called from its thread): the first of its key compiles first."""
        with self.lock:
            if key in self.shapes:
                return
            self.shapes.add(key)
            self.compiling = set(pair_ids)
            self.bar.set_postfix_str(f"compiling for {shape[1]}x{shape[0]} (first pair of this shape)")

    def step(self, pair_id: str) -> None:
        """One optimiser step of a pair (called from the pair's thread)."""
        with self.lock:
            if pair_id in self.compiling:
                self.compiling = set()
                self.show()
            if self.seen[pair_id] < self.budgets.get(pair_id, 0):
                self.seen[pair_id] += 1
                self.bar.update(1)

    def finished(self, rows: list, counts: Counter) -> None:
        """A batch's rows are in (None: abandoned after a signal): its pairs' steps filled, the artifact moved."""
        with self.lock:
            for row in filter(None, rows):
                self.bar.update(self.budgets[row["pair_id"]] - self.seen[row["pair_id"]])
                self.seen[row["pair_id"]] = self.budgets[row["pair_id"]]
                self.compiling.discard(row["pair_id"])
                self.done += 1
            self.counts = Counter(counts)
            self.show()
        update_progress_artifact(self.artifact, self.percent())

    def close(self) -> None:
        self.bar.close()


def _count_finished(run: RunContext, futures: dict, tally: Tally, shown: RunProgress, attempts: int) -> None:
    """Each batch's rows as it finishes: counted and shown, and written here when its task could not."""
    for future in as_completed(list(futures)):
        rows, unrecorded = _finished_rows(future, futures[future], run.run_id, attempts)
        if unrecorded:
            record_failure(run.results_uri, rows, run.storage, run.logger)
        for row in rows:
            tally.add(row, run.logger)
        shown.finished(rows, tally.counts)
        if stop_requested():  # batches on Dask workers never see STOP: stop waiting for them here
            break


def publish(run: RunContext, tally: Tally) -> str | None:
    """The summary (log and artifacts) and the HTML report; returns the report's URI (None if unwritten)."""
    publish_summary(run.run_id, tally, run.logger)
    return publish_report(run.run_id, run.results_uri, run.out, run.storage, run.logger)


def finish(run: RunContext, tally: Tally, report: str | None, pair_count: int) -> dict:
    """The run's outcome; PairsFailedError or RunInterruptedError when it is not a success."""
    # Where to look, in the error too: a run with failures is when the report is wanted most.
    see = f"see {run.results_uri}" + (f" and the report {report}" if report else "")
    counts = tally.counts
    outcome = {
        "run_id": run.run_id,
        "results": run.results_uri,
        "report": report,
        **{
            k: counts[k]
            for k in (
                "succeeded",
                "failed",
                "skipped",
                "new",
                "changed",
                "unchanged",
                "earlier_defaults",
                "still_failing",
            )
        },
    }
    if stop_requested():
        raise RunInterruptedError(
            f"stopped by a signal: {counts['succeeded']} succeeded, {counts['failed']} failed, "
            f"{counts['stopped']} left for the next run; {see}"
        )
    if counts["failed"]:
        raise PairsFailedError(
            "\n".join(
                [
                    f"{counts['failed']} of {pair_count} pairs failed ({ledger_line(counts)}); {see}",
                    *failure_lines(tally.failures, report or run.results_uri),
                ]
            )
        )
    return outcome


def failure_lines(failures: list[dict], see: str) -> list[str]:
    """What failed, for the run's last words: a line per distinct failure, naming the file and why
    (a missing photo crossed with 20 paintings is one line), the first FAILURES_SHOWN, then how many
    more `see` lists."""
    lines = Counter(_failure_line(row) for row in failures)  # in order of failure
    shown = list(lines.items())[:FAILURES_SHOWN]
    more = len(failures) - sum(count for _, count in shown)
    return [f"  {line}" + (f" ({count} pairs)" if count > 1 else "") for line, count in shown] + (
        [f"  and {more} more, see {see}"] if more else []
    )


def _failure_line(row: dict) -> str:
    """The row's error, which names the file when a file is at fault; else the pair, then the error."""
    files = (row["content_uri"], *str(row["style_uri"]).split(" + "))
    error = str(row["error"])
    return error if error.startswith(files) else f"{row['content_uri']} x {row['style_uri']}: {error}"


@dataclass
class Tally:
    """What a run did so far: counts per status, the failed rows, the seconds per finished pair."""

    counts: Counter
    failures: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def finished(self) -> int:
        """Pairs this run stylized, successfully or not."""
        return self.counts["succeeded"] + self.counts["failed"]

    def add(self, row: dict | None, logger) -> None:
        if row is None:  # abandoned after a signal
            self.counts["stopped"] += 1
        elif row["status"] == "failed":
            self.counts["failed"] += 1
            self.failures.append(row)
            logger.error(f"failed: {row['content_uri']} x {row['style_uri']}: {row['error']}")
        else:
            self.counts[row["status"]] += 1
            self.seconds.append(row["total_seconds"])
            logger.info(f"done: {row['output_uri']} in {row['total_seconds']:.1f} s, loss {row['total_loss']:.4g}")


def record(run: RunContext, manifest: str, ledger: Ledger, tally: Tally) -> None:
    """The run's row in the run table (its counts, the pairs it covered; left out, with a warning, when
    the table cannot be reached), then the table's small files merged, leaving a month at most
    MONTH_PARTS (a failed merge only warns: the next run or `nst compact` finishes it, and no row is
    lost either way)."""
    row = {
        "run_id": run.run_id,
        "manifest": absolute(manifest),
        "started_at": run.started_at,
        "finished_at": datetime.now(timezone.utc),
        **{name: tally.counts[name] for name in COUNTS},
        **flow_run_columns(),
    }
    try:
        record_run(run.results_uri, row, [pair.pair_id for pair in ledger.skipped + ledger.todo], run.storage)
    except Exception as error:  # noqa: BLE001 - the pairs' rows are written or spooled; this row only describes them
        if not is_transient(error):
            raise
        # The next recorded run states its pairs against the last recorded one, so the chain stays whole.
        run.logger.warning(f"run table unreachable ({type(error).__name__}); this run's row is not recorded")
        return
    try:
        for done in compact_results(run.results_uri, storage=run.storage, whole=False):
            if done.after < done.before:
                run.logger.info(f"merged the files of {done.folder}: {done.before} -> {done.after}")
    except Exception as error:  # noqa: BLE001 - the night's work is recorded; merging can wait
        run.logger.warning(f"could not merge the table's files ({type(error).__name__}: {error}); `nst compact` will")


def remove_killed_writes(pairs: list[Pair], out: str, results_uri: str, logger) -> None:
    """Remove the hidden temporaries a killed run left mid-write beside the outputs, rows, spooled rows
    and reports (readers ignore them, but they would pile up night after night)."""
    folders = {
        results_uri,
        runs_location(results_uri),
        str(spool_folder(results_uri)),
        join_uri(absolute(out), "reports"),
        *(posixpath.dirname(pair.output) for pair in pairs),
    }
    removed = [path for folder in sorted(folders) for path in remove_orphan_temporaries(folder)]
    if removed:
        logger.info(f"removed {len(removed)} temporary file(s) left by a killed run")


def record_failure(results_uri: str, rows: list[dict], storage: Storage, logger) -> None:
    """Write failed rows; if the table itself is unreachable, spool them locally for the next run."""
    try:
        write_rows(results_uri, rows, storage=storage)
    except Exception as error:  # noqa: BLE001 - whatever broke, the rows must not be lost
        if not is_transient(error):
            raise
        spooled = spool_rows(results_uri, rows)
        logger.warning(f"results table unreachable ({type(error).__name__}); rows kept in {spooled} until the next run")


def _finished_rows(future, pairs: list[Pair], run_id: str, attempts: int) -> tuple[list[dict], bool]:
    """(the task's rows, whether they still need writing); ([None] * len(pairs), False) for a batch
    abandoned after a signal.

    The task writes its own rows; only when its retries ran out does the flow write them.
    """
    try:
        return future.result(), False
    except RunStopped:
        return [None] * len(pairs), False
    except Exception as error:  # retries exhausted on a transient error: record it, don't lose it
        return [
            closed_row(pair, run_id, "failed", error=failure_message(error, pair), attempts=attempts, transient=True)
            for pair in pairs
        ], True


def publish_summary(run_id: str, tally: Tally, logger) -> None:
    """The run's summary in the log and as Prefect artifacts (markdown and a table of failures)."""
    summary = summary_markdown(run_id, tally.counts, tally.failures, tally.seconds)
    create_markdown_artifact(summary, key="stylize-summary", description=f"run {run_id}")
    create_table_artifact(
        [{"content": r["content_uri"], "style": r["style_uri"], "error": r["error"]} for r in tally.failures]
        or [{"content": "", "style": "", "error": "no failures"}],
        key="stylize-failures",
        description=f"run {run_id}",
    )
    logger.info(summary)


def configured_flow(
    concurrency: int = 1, task_runner: str = "threads", dask_address: str | None = None, dask_workers: int | None = None
):
    """The flow with its task runner: `concurrency` threads sharing one model in this process,
    or a Dask cluster (at `dask_address`, else local with `dask_workers` processes)."""
    if task_runner == "dask":
        from .dask_runner import dask_task_runner

        return stylize_manifest.with_options(task_runner=dask_task_runner(dask_address, dask_workers))
    if task_runner != "threads":
        raise ValueError(f"task runner must be 'threads' or 'dask', got {task_runner!r}")
    return stylize_manifest.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, concurrency)))


def run_manifest(
    manifest: str,
    out: str,
    *,
    concurrency: int = 1,
    task_runner: str = "threads",
    dask_address: str | None = None,
    dask_workers: int | None = None,
    **kwargs,
) -> dict:
    """Run the flow on the task runner configured_flow builds from the same arguments."""
    return configured_flow(concurrency, task_runner, dask_address, dask_workers)(manifest, out, **kwargs)
