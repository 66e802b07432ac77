"""Settings from the environment, in one place: each is one field naming its variable, its default
and what it does. `settings()` reads them; `settings_table()` is the table of them in docs/running.md.

Settings say how this machine runs (which weights file, which precision, how much memory),
never what a picture looks like: that is StyleParams, recorded with every row.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from typing import Optional

from nst_core import markdown


def _flag(text: str) -> bool:
    return text == "1"


MAX_LINK_SECONDS = 7 * 24 * 3600  # SigV4's longest presigned link


def _link_seconds(text: str) -> int:
    seconds = int(text) if text.isdigit() else 0
    if not 1 <= seconds <= MAX_LINK_SECONDS:
        raise ValueError(f"NST_LINK_SECONDS={text!r}: give whole seconds from 1 to {MAX_LINK_SECONDS} (7 days)")
    return seconds


def _gigabytes(text: str) -> float:
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = math.nan
    if not 0 < gigabytes < math.inf:  # NaN too
        raise ValueError(f"NST_MEMORY_LIMIT_GB={text!r}: give a number of GB above 0")
    return gigabytes


def setting(variable: str, default, help: str, parse=str):
    """A Settings field read from `variable`; unset or empty keeps `default`."""
    return dataclasses.field(default=default, metadata={"variable": variable, "help": help, "parse": parse})


@dataclass(frozen=True)
class Settings:
    weights: Optional[str] = setting(
        "NST_WEIGHTS",
        None,
        "VGG weights file used when `--weights` is not given; unset: Keras downloads the ImageNet VGG19 weights",
    )
    precision: str = setting(
        "NST_PRECISION",
        "auto",
        "VGG features in `float32` or `bfloat16`; `auto`: bfloat16 on "
        "a GPU and, under TensorFlow, on a CPU with AVX512_BF16 or AMX_BF16, else float32 "
        "(Gram matrices and losses stay float32)",
    )
    jit: bool = setting(
        "NST_JIT",
        False,
        "`1`: TensorFlow compiles the steps with XLA (0.72-0.79x the speed of "
        "graph mode on a CPU, bench_core); JAX always does",
        parse=_flag,
    )
    jax_cache: str = setting(
        "NST_JAX_CACHE",
        "~/.cache/nst/jax",
        "under JAX, the folder where compiled programs are kept between runs, so a rerun skips "
        "compiling them (some hundred KB per image size; safe to delete); `off`: none kept; "
        "`JAX_COMPILATION_CACHE_DIR`, when set, wins",
    )
    memory_limit_gb: Optional[float] = setting(
        "NST_MEMORY_LIMIT_GB",
        None,
        "`nst run`'s memory budget when `--memory-limit-gb` is not given; unset: two thirds of RAM",
        parse=_gigabytes,
    )
    spool: str = setting(
        "NST_SPOOL",
        "~/.cache/nst/spool",
        "where rows wait while their results table cannot be reached; the next run delivers them",
        parse=os.path.expanduser,
    )
    speed_cache: str = setting(
        "NST_SPEED_CACHE",
        "~/.cache/nst/speed.json",
        "where `nst run --plan` keeps this machine's measured speed (about 20 s to measure; measured again "
        "after 30 days, or on another machine, backend or precision, or for other style layers or statistic)",
        parse=os.path.expanduser,
    )
    tile: Optional[int] = setting(
        "NST_TILE",
        None,
        "tile core side in px: forces tiles at every scale larger than "
        "one tile (tests, debugging); unset: the memory plan decides",
        parse=int,
    )
    checkpoint_seconds: float = setting(
        "NST_CHECKPOINT_SECONDS",
        300.0,
        "how often a running pair saves its image "
        "and optimiser state beside its output: a killed pair loses at most this "
        "much work",
        parse=float,
    )
    server_start_seconds: float = setting(
        "NST_SERVER_START_SECONDS",
        120.0,
        "how long `nst run` waits for its temporary Prefect server to answer while the server's process "
        "is starting (it tries twice); a busy machine may need longer",
        parse=float,
    )
    unsafe_lock: bool = setting(
        "NST_UNSAFE_LOCK",
        False,
        "`1`: lock a results table on a store that ignores conditional creates by look-then-write",
        parse=_flag,
    )
    link_seconds: int = setting(
        "NST_LINK_SECONDS",
        3600,
        "how long the presigned https links to S3 objects in reports and the Prefect UI stay valid, in "
        "seconds (at most 604800, 7 days); a link carries the S3 access key id, never the secret",
        parse=_link_seconds,
    )
    fault_write_delay: float = setting(
        "NST_FAULT_WRITE_DELAY",
        0.0,
        "tests only: seconds between writing a temporary file and renaming it into place, and before each "
        "file a compaction removes",
        parse=float,
    )

    @classmethod
    def from_environment(cls, environ) -> "Settings":
        values = {}
        for f in dataclasses.fields(cls):
            text = environ.get(f.metadata["variable"])
            if text:
                values[f.name] = f.metadata["parse"](text)
        return cls(**values)


VARIABLES = tuple(f.metadata["variable"] for f in dataclasses.fields(Settings))


def settings() -> Settings:
    """This process's settings: read once, and again only when one of the variables changed (tests
    and benchmarks set them)."""
    return _read(tuple(os.environ.get(variable) for variable in VARIABLES))


@functools.lru_cache(maxsize=8)
def _read(values: tuple) -> Settings:
    return Settings.from_environment(dict(zip(VARIABLES, values)))


def settings_table() -> str:
    """The settings as a Markdown table: variable, default, what it does."""
    return markdown.table(
        ("variable", "default", "what it does"),
        (
            (f"`{f.metadata['variable']}`", "unset" if f.default is None else f"`{f.default}`", f.metadata["help"])
            for f in dataclasses.fields(Settings)
        ),
    )


def variable(name: str) -> str:
    """The environment variable of the Settings field `name`, for messages: "NST_WEIGHTS"."""
    return next(f.metadata["variable"] for f in dataclasses.fields(Settings) if f.name == name)
