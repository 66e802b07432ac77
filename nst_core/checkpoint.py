"""Checkpoints of long pairs: a pair killed mid-run resumes from its last save, not from step 0.

Every NST_CHECKPOINT_SECONDS (default 300) of optimising, each job of a batch that has a
checkpoint path gets one .npz beside its output: its current image, its slice of the
optimiser state, the scale and step reached and its loss records. Written to a hidden
temporary and renamed, so a kill mid-write leaves the previous checkpoint whole. A batch
resumes when every one of its jobs has a checkpoint of this very job (same pixels, styles
and parameters) at the same scale and step; the flow removes a pair's file once its image
is saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from keras import ops

from .optimize import Track
from .settings import settings
from .storage import LOCAL

SUFFIX = ".checkpoint.npz"
log = logging.getLogger(__name__)


def path_for(output_uri: str) -> Optional[str]:
    """Where a pair writing `output_uri` keeps its checkpoint: beside a local output; none for a
    remote one (each save would upload an image's worth of optimiser state)."""
    local = output_uri.removeprefix("file://")
    return None if "://" in local else local + SUFFIX


def remove(output_uri: str) -> None:
    """Drop a finished pair's checkpoint."""
    path = path_for(output_uri)
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def interval() -> float:
    return settings().checkpoint_seconds


def job_key(job) -> str:
    """What a checkpoint must have been made from: the job's pixels, styles and parameters."""
    digest = hashlib.sha1(job.params.hash().encode())
    for image in (job.content, *job.styles):
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _batch_axis(array) -> Optional[int]:
    """Where a batch array holds its images: L-BFGS history is (pairs, B, N); a scalar (Adam's t) is shared."""
    return None if array.ndim == 0 else 1 if array.ndim == 3 else 0


def _job_part(array, k: int):
    """Job k's part of one batch array, its batch axis kept (length 1)."""
    array = ops.convert_to_numpy(array)
    axis = _batch_axis(array)
    return array if axis is None else np.take(array, [k], axis)


def _stacked(parts: list):
    """The batch array of the jobs' parts."""
    axis = _batch_axis(parts[0])
    return ops.convert_to_tensor(parts[0] if axis is None else np.concatenate(parts, axis))


def _track_record(track: Track) -> dict:
    return {
        "iterations": track.iterations,
        "history": track.history,
        "part_history": track.part_history,
        "best_parts": track.best_parts,
        "average_weight": track.average_weight,
        "done": track.done,
    }


@dataclass
class Resumed:
    """A batch's state at its last save."""

    scale_index: int
    iteration: int
    images: object
    state: tuple
    saved: list  # per job: (meta, arrays) as read

    def restore(self, tracks: list[Track], states: list, live: list[int]) -> None:
        """Put the saved records into the scale's fresh `tracks` and the finished scales' into `states`."""
        for i, track, (meta, arrays) in zip(live, tracks, self.saved):
            record = meta["track"]
            track.history, track.done = record["history"], record["done"]
            track.average_weight = record["average_weight"]
            track.part_history = [tuple(p) for p in record["part_history"]]
            track.best_parts = tuple(record["best_parts"]) if record["best_parts"] is not None else None
            track.best_image = ops.convert_to_tensor(arrays["best_image"]) if "best_image" in arrays else None
            track.average = arrays.get("average")
            states[i].tracks = [
                Track(len(history), 0.0, 0, history=history, part_history=[tuple(p) for p in parts])
                for history, parts in meta["earlier"]
            ]


class Checkpointer:
    """Saves a batch's progress every interval() seconds, one file per job, and reads it back."""

    def __init__(self, jobs: list, paths: list[Optional[str]]):
        self.paths, self.keys = paths, [job_key(job) if path else None for job, path in zip(jobs, paths)]
        self.interval, self.saved_at = interval(), time.monotonic()

    @property
    def active(self) -> bool:
        return any(self.paths)

    def wrap(self, step, live: list[int], scale_index: int, iteration: int, tracks: list, states: list):
        """`step` that first saves the batch, when due: the images about to be evaluated, the
        state and the tracks as they stand after `iteration` + the steps taken since."""
        if not self.active:
            return step
        taken = [iteration]

        def checkpointed(images, state, loss_args):
            if time.monotonic() - self.saved_at >= self.interval and not any(t.error for t in tracks):
                self.save(live, scale_index, taken[0], images, state, tracks, states)
                self.saved_at = time.monotonic()
            taken[0] += 1
            return step(images, state, loss_args)

        return checkpointed

    def save(self, live, scale_index, iteration, images, state, tracks, states) -> None:
        for k, (i, track) in enumerate(zip(live, tracks)):
            if not self.paths[i]:
                continue
            meta = {
                "key": self.keys[i],
                "scale_index": scale_index,
                "iteration": iteration,
                "state_size": len(state),
                "track": _track_record(track),
                "earlier": [[t.history, t.part_history] for t in states[i].tracks],
            }
            arrays = {f"state{n}": _job_part(part, k) for n, part in enumerate(state)}
            arrays["image"] = _job_part(images, k)
            for name in ("best_image", "average"):
                value = getattr(track, name)
                if value is not None:
                    arrays[name] = ops.convert_to_numpy(value)
            _write(self.paths[i], meta, arrays)
        log.info("checkpoint saved at scale %d, step %d", scale_index, iteration)

    def resume(self, live: list[int]) -> Optional[Resumed]:
        """The batch's last save, if every live job has one of its own at one scale and step."""
        if not self.active or not all(self.paths[i] for i in live):
            return None
        loaded = [_read(self.paths[i]) for i in live]
        if any(found is None or found[0]["key"] != self.keys[i] for i, found in zip(live, loaded)):
            return None
        metas = [meta for meta, _ in loaded]
        if len({(m["scale_index"], m["iteration"]) for m in metas}) > 1:
            return None
        state = tuple(_stacked([arrays[f"state{n}"] for _, arrays in loaded]) for n in range(metas[0]["state_size"]))
        resumed = Resumed(
            metas[0]["scale_index"], metas[0]["iteration"], _stacked([a["image"] for _, a in loaded]), state, loaded
        )
        log.warning("resuming from checkpoint at scale %d, step %d", resumed.scale_index, resumed.iteration)
        return resumed


def _write(path: str, meta: dict, arrays: dict) -> None:
    """The arrays and the JSON of `meta` as one .npz, atomically; streamed to disk, since the
    optimiser's state can be many times an image's size."""
    with LOCAL.open_atomic(path) as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)


def _read(path: str):
    """(meta, arrays) of a checkpoint, or None when there is none or it cannot be read."""
    try:
        with np.load(path) as stored:
            return json.loads(str(stored["meta"])), {name: stored[name] for name in stored.files if name != "meta"}
    except (OSError, ValueError, KeyError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("%s: unreadable checkpoint, starting over (%s)", path, error)
        return None
