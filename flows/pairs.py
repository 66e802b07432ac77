"""A batch of pairs, start to finish, as plain functions: plan, load, stylize, save, record.

load_pairs and stylize_and_save are the one way from files to stylized files, for the flow's
batches (stylize_pairs) and `nst stylize` alike. No Prefect here, so it is testable on its own;
flows/pipeline.py wraps it in a task.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import signal
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

import aiohttp
import botocore.exceptions

from nst_core import checkpoint, memory, runtime
from nst_core.errors import PERMANENT_ERRNOS, ImageError, InputError
from nst_core.image_io import load_image, read_exif, save_image, size_for
from nst_core.model import min_input_side
from nst_core.params import StyleParams
from nst_core.storage import Storage
from nst_core.stylize import Job, StylizeResult, batch_key, painting_pixels, scale_shapes, stylize_batch
from nst_core.targets import style_load_side, style_shape

from .manifest import Pair
from .results import params_columns, write_rows

# Errors that are the input's fault (and bad parameters, a ValueError): recorded as failed, never retried.
PERMANENT_ERRORS = (InputError, ValueError)
# Network errors as they reach us from s3fs, aiohttp and botocore: retried.
TRANSIENT_ERRORS = (
    OSError,
    aiohttp.ClientError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionError,
)


def is_transient(error: BaseException) -> bool:
    """Network and storage hiccups (S3 timeouts, throttling, connection resets): worth a retry.
    A file-system error about a path or a disk (read-only, full, a symlink loop: PERMANENT_ERRNOS) is not."""
    if isinstance(error, PERMANENT_ERRORS) or isinstance(error, (FileNotFoundError, PermissionError)):
        return False
    if runtime.is_out_of_memory(error):  # the pair is too large for the device: not a network error
        return False
    if isinstance(error, OSError) and error.errno in PERMANENT_ERRNOS:
        return False
    text = f"{type(error).__name__} {error}"
    return isinstance(error, TRANSIENT_ERRORS) or "Throttl" in text or "SlowDown" in text


# Set by SIGINT/SIGTERM during a run: the signal's name and when (time.monotonic()). The pair in
# progress is abandoned, the rest left for the next run. A plain dict, not an Event: setting an
# Event takes a lock, which a second signal landing inside the first handler would wait on forever.
_STOPPED: dict = {}


class RunStopped(Exception):
    """The run was asked to stop; this pair was abandoned, not failed (it has no row)."""


@contextlib.contextmanager
def stop_on_signals():
    """While inside, SIGINT and SIGTERM ask the run to stop (stop_requested) instead of killing the process.

    The handler only records the signal and writes one line straight to stderr: it runs in the main
    thread between two bytecodes, possibly inside a logging handler holding a lock (Prefect's log
    sender's), so logging from it would wait forever on a lock its own thread holds. The run logs
    the stop from its own code when it sees it (stop_signal).
    """
    _STOPPED.clear()

    def handler(signum, frame):
        name = signal.Signals(signum).name
        _STOPPED.setdefault("at", time.monotonic())
        _STOPPED.setdefault("signal", name)
        os.write(2, f"\n{name}: abandoning the batch in progress and stopping\n".encode())

    previous = {}
    with contextlib.suppress(ValueError):  # signals can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stop_requested() -> bool:
    """Whether SIGINT/SIGTERM asked this run to stop. Flows call this rather than reading _STOPPED:
    cloudpickle copies a flow's globals by value (serve, Dask)."""
    return "at" in _STOPPED


def stop_signal() -> str | None:
    """The name of the signal that asked this run to stop (None: none did)."""
    return _STOPPED.get("signal")


def stopped_at() -> float | None:
    """When (time.monotonic()) a signal asked this run to stop; None: none did."""
    return _STOPPED.get("at")


def _raise_if_stopped(*_):
    if stop_requested():
        raise RunStopped("stopped by a signal before this pair finished")


# Who listens to optimiser steps in this process, by run id: the run's progress bar (flows/pipeline.py).
# A Dask worker's process has none, so there the bar moves as batches finish.
_STEP_LISTENERS: dict = {}


@contextlib.contextmanager
def steps_reported(run_id: str, listener):
    """While inside, this run's pairs stylized in this process report to `listener`: every optimiser
    step calls listener.step(pair_id), and each batch, before it is optimised (and compiled, the
    first of its batch_key), listener.starting(pair_ids, batch_key, content shape)."""
    _STEP_LISTENERS[run_id] = listener
    try:
        yield
    finally:
        _STEP_LISTENERS.pop(run_id, None)


def _on_step(run_id: str):
    """stylize_and_save's on_step for this run's pairs: stop at a signal, report the step."""
    listener = _STEP_LISTENERS.get(run_id)

    def on_step(pair: Pair, *_):
        _raise_if_stopped()
        if listener is not None:
            listener.step(pair.pair_id)

    return on_step


def _on_batch(run_id: str):
    """stylize_and_save's on_batch for this run's pairs: tell the listener a batch starts."""
    listener = _STEP_LISTENERS.get(run_id)
    return (
        None
        if listener is None
        else lambda pairs, key, shape: listener.starting([p.pair_id for p in pairs], key, shape)
    )


class MemoryBudgetError(InputError, ValueError):
    """The pair would need more memory than the run allows."""


def default_memory_limit_gb() -> float:
    """$NST_MEMORY_LIMIT_GB, else two thirds of this machine's memory."""
    return memory.default_limit_bytes() / 2**30


def check_memory(pair: Pair, job: Job, limit_gb: float) -> None:
    """Refuse a pair before it starts rather than let the OS kill the whole run mid-night: one that
    does not fit in one pass is planned in tiles (nst_core.memory), one that fits not even so is
    refused. Its painting counts, at the size style_scale gives it."""
    height, width = size_for(job.content.shape, pair.params.size)
    shapes = scale_shapes(job.content.shape, pair.params)
    try:
        memory.check(shapes, 1, limit_gb * 2**30, pair.params.arch, painting_pixels([job]))
    except memory.MemoryPlanError as error:
        raise MemoryBudgetError(
            f"{pair.content}: size {pair.params.size} ({width} x {height}) {error}; lower `size` or `style_scale` "
            "for this pair"
        ) from None


class ImageTooSmallError(ImageError):
    """An image whose shorter side would shrink to nothing before VGG's deepest layer used."""


def check_sides(content: tuple[str, tuple], styles: list[tuple[str, tuple]], params: StyleParams) -> None:
    """Refuse a photo or painting too thin for the network, before any work: (uri, shape) each, at
    every scale the stylization uses (the style at style_shape, so style_scale and its aspect count)."""
    least = min_input_side(params.content_layers + params.style_layers)
    # Under the long fit the short fit is a remedy: it widens the painting's short side to the output's
    # (up to targets.SHORT_FIT_MAX); under the short fit only `size` and `style_scale` remain.
    style_knob = "`size` or `style_scale`" + (", set `style_fit` short," if params.style_fit == "long" else "")
    for side in params.sides():
        output = size_for(content[1], side)
        sized = [(content, output, "`size`")] + [
            (style, style_shape(style[1], output, params), style_knob) for style in styles
        ]
        for (uri, _), (height, width), knob in sized:
            longest, shorter = max(height, width), min(height, width)
            if shorter < least:
                raise ImageTooSmallError(
                    f"{uri}: too thin for VGG: at {longest} px its shorter side is {shorter} px, under the minimum "
                    f"of {least} px; raise {knob} or use a less elongated image"
                )


@functools.cache
def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def base_row(pair: Pair, run_id: str) -> dict:
    """The cells every row of this pair has, whatever its outcome."""
    return {
        "run_id": run_id,
        "pair_id": pair.pair_id,
        "row": pair.row,
        "content_uri": pair.content,
        "style_uri": " + ".join(pair.styles),
        "output_uri": pair.output,
        "params_hash": pair.params.hash(),
        "sweep": pair.sweep,
        "content_fingerprint": pair.content_fingerprint,
        "style_fingerprint": pair.style_fingerprint,
        **params_columns(pair.params),
        "host": socket.gethostname(),
        "nst_version": _version("nst-pipeline"),
        "backend": runtime.name(),
        "backend_version": runtime.version(),
        "tensorflow_version": runtime.version() if runtime.name() == "tensorflow" else None,
        "keras_version": _version("keras"),
        "prefect_version": _version("prefect"),
        "python_version": platform.python_version(),
    }


def failure_message(error: BaseException, pair: Pair) -> str:
    """One line a person can act on."""
    if runtime.is_out_of_memory(error):
        return f"out of memory at size {pair.params.size}; lower `size` for this pair"
    if isinstance(error, FileNotFoundError):
        return f"{error.filename or error}: file not found"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    # Input errors already read as a sentence; others get their type for context.
    return message if isinstance(error, InputError) else f"{type(error).__name__}: {message}"


# Pairs optimised together: on a 2-core CPU 1.25x the pairs per hour of one at a time at 256 px,
# 1.18x at 512 px (bench_batch), 1.46x per step at 128 px (bench_flops). Memory caps it.
BATCH_SIZE = 4


def plan_batches(pairs: list[Pair], batch_size: int, memory_limit_gb: float) -> list[list[Pair]]:
    """Pairs grouped into batches of at most `batch_size` that may share one optimisation, each
    batch's memory (every pair counted at its largest, size x size, in one pass) within
    `memory_limit_gb`; a pair that fits no batch runs alone, in tiles.

    Pairs of one content image and one parameter set are kept together: they share an image
    size, which is what a batch needs (stylize_pairs splits any batch whose sizes differ).
    """

    def flow_key(pair: Pair) -> tuple:
        # batch_key() without the content's shape, unknown until the image is read.
        return batch_key((pair.params.size, pair.params.size), pair.params)

    groups: dict[tuple, list[Pair]] = {}
    for pair in sorted(pairs, key=lambda p: (p.content, p.row)):
        groups.setdefault(flow_key(pair), []).append(pair)
    batches = []
    for group in groups.values():
        fits = min(
            batch_size, memory.batch_fits(group[0].params.size ** 2, memory_limit_gb * 2**30, group[0].params.arch)
        )
        batches += [group[start : start + fits] for start in range(0, len(group), fits)]
    return batches


def _stylize_jobs(jobs: list[Job], weights: str | None, callback, memory_limit_gb: float) -> list:
    """stylize_batch's outcome per job. A batch that fails as a whole (out of memory, or one pair's
    value that validation let through) is retried one job at a time, so one pair's fault fails that
    pair alone; a signal or a network error is every job's (the caller stops, or retries the batch)."""
    try:
        return stylize_batch(jobs, weights=weights, callback=callback, memory_limit=memory_limit_gb * 2**30)
    except Exception as error:  # noqa: BLE001 - sorted per pair by the caller
        if len(jobs) > 1 and not isinstance(error, RunStopped) and not is_transient(error):  # each job as itself
            return [
                outcome
                for k, job in enumerate(jobs)
                for outcome in _stylize_jobs([job], weights, lambda _, *step, k=k: callback(k, *step), memory_limit_gb)
            ]
        return [error] * len(jobs)


@dataclass
class Loaded:
    """A pair whose images are read and checked: its Job, and the seconds reading them took."""

    pair: Pair
    job: Job
    seconds: float


def load_pairs(pairs: list[Pair], storage: Storage, memory_limit_gb: float, on_error) -> list[Loaded]:
    """Each pair's images, read through `storage` and checked before any work. A pair that cannot
    be loaded goes to on_error(pair, error), which records it or raises."""
    loaded = []
    for pair in pairs:
        clock = time.perf_counter()
        try:
            job = _load_job(pair, storage, memory_limit_gb)
        except Exception as error:  # noqa: BLE001 - on_error sorts it
            on_error(pair, error)
            continue
        loaded.append(Loaded(pair, job, time.perf_counter() - clock))
    return loaded


def _load_job(pair: Pair, storage: Storage, memory_limit_gb: float) -> Job:
    """The photo at `size`, the paintings at their load side, the checkpoint beside the output;
    refused when too thin for VGG or over the memory budget (the paintings' shapes count in it)."""
    content = load_image(pair.content, storage, max_side=pair.params.size)
    style_side = style_load_side(pair.params.size, pair.params)
    styles = [load_image(uri, storage, max_side=style_side) for uri in pair.styles]
    check_sides((pair.content, content.shape), [(u, s.shape) for u, s in zip(pair.styles, styles)], pair.params)
    job = Job(content, styles, pair.params, checkpoint.path_for(pair.output))
    check_memory(pair, job, memory_limit_gb)
    return job


def stylize_and_save(
    loaded: list[Loaded],
    storage: Storage,
    *,
    weights: str | None,
    memory_limit_gb: float,
    output_format: str | None,
    on_step,
    on_error,
    on_batch=None,
) -> list[tuple[Pair, StylizeResult, float]]:
    """Stylize loaded pairs, those of one batch_key together, and write each output through
    `storage` with its photo's EXIF (camera, date, place), its checkpoint then dropped;
    `output_format` png16 or tiff16 writes 16 bits per channel. Returns (pair, result, seconds
    saving) per saved pair; a pair that fails goes to on_error(pair, error).
    on_step(pair, scale_index, side, progress, image) follows every optimiser step;
    on_batch(pairs, batch_key, content shape) precedes each optimisation."""
    batches: dict[tuple, list[Loaded]] = {}
    for item in loaded:
        batches.setdefault(batch_key(item.job.content.shape, item.job.params), []).append(item)
    saved = []
    for key, batch in batches.items():
        if on_batch is not None:
            on_batch([item.pair for item in batch], key, batch[0].job.content.shape)
        outcomes = _stylize_jobs([item.job for item in batch], weights, _batch_steps(batch, on_step), memory_limit_gb)
        for item, outcome in zip(batch, outcomes):
            clock = time.perf_counter()
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                exif = read_exif(item.pair.content, storage)
                save_image(outcome.image, item.pair.output, storage, encoding=output_format, exif=exif)
                checkpoint.remove(item.pair.output)
            except Exception as error:  # noqa: BLE001 - on_error sorts it
                on_error(item.pair, error)
                continue
            saved.append((item.pair, outcome, time.perf_counter() - clock))
    return saved


def _batch_steps(batch: list[Loaded], on_step):
    """stylize_batch's callback (the job's index in the batch first) as on_step(pair, ...)."""
    return lambda job_index, *step: on_step(batch[job_index].pair, *step)


def stylize_pairs(
    pairs: list[Pair],
    run_id: str,
    results_uri: str,
    *,
    weights: str | None = None,
    storage: Storage,
    attempts: int = 1,
    memory_limit_gb: float | None = None,
    output_format: str | None = None,
) -> list[dict]:
    """Stylize a batch of pairs (plan_batches) and append their rows to the results table; returns the rows.

    Pairs whose images turn out to differ in size run as separate batches. Bad input fails
    its pair only (a `failed` row, no exception); transient errors propagate so the caller
    can retry the batch. The rows are written together at the end, so a batch is recorded
    whole or not at all. Seconds are each pair's own (load, save) plus its share of the batch.
    """
    started_at = datetime.now(timezone.utc)
    common = {
        "started_at": started_at,
        "attempts": attempts,
        "device": runtime.device(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    rows = {pair.pair_id: {**base_row(pair, run_id), **common} for pair in pairs}
    _raise_if_stopped()
    limit = memory_limit_gb or default_memory_limit_gb()

    def record(pair: Pair, error: Exception) -> None:
        _fail_or_raise(rows[pair.pair_id], error, pair)

    loaded = load_pairs(pairs, storage, limit, record)
    for item in loaded:
        rows[item.pair.pair_id]["load_seconds"] = item.seconds
    saved = stylize_and_save(
        loaded,
        storage,
        weights=weights,
        memory_limit_gb=limit,
        output_format=output_format,
        on_step=_on_step(run_id),
        on_error=record,
        on_batch=_on_batch(run_id),
    )
    for pair, result, seconds in saved:
        rows[pair.pair_id].update(status="succeeded", **result.to_row(), save_seconds=seconds)
    finished_at = datetime.now(timezone.utc)
    for row in rows.values():
        parts = ("load_seconds", "targets_seconds", "optimize_seconds", "save_seconds")
        row.update(finished_at=finished_at, total_seconds=sum(row.get(name) or 0.0 for name in parts))
    write_rows(results_uri, rows.values(), storage=storage)
    return list(rows.values())


def _fail_or_raise(row: dict, error: Exception, pair: Pair) -> None:
    """Record a pair's bad input in its row; let a signal stop or a transient error through."""
    if isinstance(error, RunStopped) or is_transient(error):
        raise error
    row.update(status="failed", error=failure_message(error, pair), transient=False)
