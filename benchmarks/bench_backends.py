"""`nst run` on the example manifest under TensorFlow and under JAX (TensorFlow blocked), end to end.

The CPU target: JAX no more than 1.5x TensorFlow's wall time. Each repeat runs, one after
another, into fresh output folders:
- TensorFlow;
- JAX with an empty compilation cache (NST_JAX_CACHE in a new folder): a first run on a machine;
- JAX again on the cache that run filled: a rerun, as a nightly run is.
It prints each run's wall seconds, the load average after it (other work on the cores skews a
repeat) and the ratios to the repeat's TensorFlow run.

Usage: python benchmarks/bench_backends.py [--repeats 3] [--manifest manifests/example.csv]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK_TENSORFLOW = str(REPO / "tests" / "no_tensorflow")  # its sitecustomize refuses `import tensorflow`


def timed_run(manifest: str, out: Path, **env) -> float:
    """Wall seconds of one `nst run`, which must succeed."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", manifest, "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(f"nst run failed ({env}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--manifest", default="manifests/example.csv")
    args = parser.parse_args()
    jax = {
        "KERAS_BACKEND": "jax",
        "NST_BLOCK_TENSORFLOW": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [BLOCK_TENSORFLOW, os.environ.get("PYTHONPATH")])),
    }
    print("| repeat | TensorFlow | JAX, empty cache | JAX, warm cache |\n|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(1, args.repeats + 1):
            folder, cache = Path(scratch) / str(index), Path(scratch) / f"cache{index}"
            cells = []
            for name, env in (
                ("tensorflow", {"KERAS_BACKEND": "tensorflow"}),
                ("jax-empty", {**jax, "NST_JAX_CACHE": str(cache)}),
                ("jax-warm", {**jax, "NST_JAX_CACHE": str(cache)}),
            ):
                seconds = timed_run(args.manifest, folder / name, **env)
                cells.append((seconds, os.getloadavg()[0]))
            base = cells[0][0]
            print(
                f"| {index} | "
                + " | ".join(
                    f"{s:.1f} s (load {load:.1f})" + ("" if i == 0 else f": **{s / base:.2f}x**")
                    for i, (s, load) in enumerate(cells)
                )
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
