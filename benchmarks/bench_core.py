"""Core speed and time-to-quality.

1. Seconds per optimisation step (compiled L-BFGS step: forward, input gradient,
   update) at 128, 256 and 512 px for VGG19 and VGG16, with and without XLA.
   Timings do not depend on weight values; VGG19 uses random weights when its
   ImageNet file cannot be downloaded.
2. At 128 px with real VGG16 weights: the wall time the product's defaults need
   to reach the total loss (the product's loss, its default weights) that a plain
   TensorFlow-tutorial loop reaches after 500 steps (Adam lr 0.02, beta_1 0.99,
   epsilon 0.1, start from the content), both measured in this run.

Section 1 runs on the backend Keras is set to (TensorFlow by default; under
KERAS_BACKEND=jax every step is XLA-compiled, so there is one column); section 2
is TensorFlow's tutorial loop and runs on TensorFlow only.

3. With --compare: seconds per step of each backend and feature precision at 128
   and 256 px (real VGG16 weights), each backend in its own process, ratios to
   TensorFlow float32 measured in the same run; nothing else.

Usage: python benchmarks/bench_core.py [--weights FILE] [--quick]
       python benchmarks/bench_core.py --compare [--backends tensorflow,jax] [--precisions float32,bfloat16]
       KERAS_BACKEND=jax python benchmarks/bench_core.py --quick   # e.g. a GPU image without TensorFlow
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from nst_core import backend, optimize  # noqa: E402
from nst_core.image_io import load_image  # noqa: E402
from nst_core.objective import clear_compiled, compiled_objective  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import Job, stylize  # noqa: E402
from nst_core.targets import loss_args  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"
SHARED = REPO.parent / "shared" / "weights" / "vgg16_imagenet_notop.weights.h5"


def random_vgg19_file() -> str:
    path = Path("/tmp/nst_bench_vgg19_random.weights.h5")
    if not path.exists():
        keras.applications.VGG19(include_top=False, weights=None).save_weights(str(path))
    return str(path)


def seconds_per_step(
    weights: str, arch: str, side: int, jit: bool, steps: int, precision: str = "float32", batch: int = 1
) -> float:
    """Seconds per compiled L-BFGS step on a batch of `batch` images of side x side (compilation excluded)."""
    os.environ["NST_JIT"] = "1" if jit else "0"  # read by the steps compiled next
    clear_compiled()
    params = StyleParams(size=side, arch=arch)
    objective, step = compiled_objective(params, weights, precision)
    content = np.random.default_rng(0).random((side, side, 3)).astype(np.float32)
    _, args = loss_args(objective, [Job(content, [content], params)] * batch, side)
    image = ops.convert_to_tensor(np.stack([content] * batch))
    state = optimize.lbfgs_state(image)
    image, state, loss, _ = step(image, state, args)  # compile
    ops.convert_to_numpy(loss)
    started = time.perf_counter()
    for _ in range(steps):
        image, state, loss, _ = step(image, state, args)
    ops.convert_to_numpy(loss)
    return (time.perf_counter() - started) / steps


def tutorial_baseline(objective, content, args, steps: int, epsilon: float):
    """The TensorFlow tutorial's loop (tf.Variable, Keras Adam, clip) on the product's loss.

    The first step traces the function; the time counts steps 2..N, scaled to N.
    """
    import tensorflow as tf

    image = tf.Variable(content[None])
    opt = keras.optimizers.Adam(learning_rate=0.02, beta_1=0.99, epsilon=epsilon)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss, _ = objective(image, *args)
        opt.apply_gradients([(tape.gradient(loss, image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return loss

    float(train_step())
    started = time.perf_counter()
    for _ in range(steps - 1):
        loss = train_step()
    float(loss)
    seconds = (time.perf_counter() - started) * steps / (steps - 1)
    final_loss = float(objective(ops.convert_to_tensor(image.numpy()), *args)[0])
    return final_loss, seconds


def time_to_loss(content, style, params, weights, target_loss):
    """Seconds (excluding compilation) until the product's loss first reaches `target_loss`."""
    stylize(content, [style], params.replace(iterations=2), weights=weights)  # compile at this size
    marks = []
    started = time.perf_counter()

    def on_step(scale, side, progress, image):
        marks.append((time.perf_counter() - started, progress.total, side))

    result = stylize(content, [style], params, weights=weights, callback=on_step)
    final = [(t, loss) for t, loss, side in marks if side == params.size]
    reached = next(((t, i) for i, (t, loss) in enumerate(final) if loss <= target_loss), None)
    return reached, result, marks


def steps_for(side: int) -> int:
    return max(3, int(20 * (128 / side) ** 2))


def compare_backends(weights: str, backends: list[str], precisions: list[str], sizes) -> None:
    """Each backend in its own process (Keras picks its backend once per process)."""
    measured = {}
    for name in backends:
        command = [
            sys.executable,
            __file__,
            "--step-json",
            "--weights",
            weights,
            "--precisions",
            ",".join(precisions),
            "--sizes",
            ",".join(map(str, sizes)),
        ]
        done = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": name}, capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-1500:]}")
            continue
        measured[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print("\n## Seconds per step by backend and feature precision (vgg16, compiled L-BFGS step)")
    print("| backend | precision | size | s/step | vs tensorflow float32 |\n|---|---|---|---|---|")
    baseline = measured.get("tensorflow", {}).get("float32", {})
    for name, by_precision in measured.items():
        for precision, by_size in by_precision.items():
            for side, seconds in by_size.items():
                ratio = f"{seconds / baseline[side]:.2f}x" if side in baseline else "-"
                print(f"| {name} | {precision} | {side} | {seconds:.3f} | {ratio} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS") or str(SHARED))
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    parser.add_argument("--compare", action="store_true", help="only section 3: backends and precisions")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--step-json", action="store_true", help=argparse.SUPPRESS)  # one backend, for --compare
    args = parser.parse_args()
    if args.step_json:
        sizes = [int(s) for s in args.sizes.split(",")]
        print(
            json.dumps(
                {
                    precision: {
                        side: seconds_per_step(args.weights, "vgg16", side, False, steps_for(side), precision)
                        for side in sizes
                    }
                    for precision in args.precisions.split(",")
                }
            )
        )
        return
    print(f"Keras {keras.__version__} on {backend.NAME}, {os.cpu_count()} CPU cores, weights {args.weights}")
    if args.compare:
        compare_backends(
            args.weights, args.backends.split(","), args.precisions.split(","), [int(s) for s in args.sizes.split(",")]
        )
        return

    print("\n## Seconds per step (compiled L-BFGS step)")
    jit_setting = os.environ.get("NST_JIT", "0")
    if backend.NAME == "tensorflow":
        print("| arch | size | graph | XLA | XLA speed-up |\n|---|---|---|---|---|")
    else:
        print(f"| arch | size | {backend.NAME} (XLA) |\n|---|---|---|")
    sizes = (128, 256) if args.quick else (128, 256, 512)
    for arch, weights in (("vgg19", random_vgg19_file()), ("vgg16", args.weights)):
        for side in sizes:
            graph = seconds_per_step(weights, arch, side, jit=False, steps=steps_for(side))
            if backend.NAME != "tensorflow":
                print(f"| {arch} | {side} | {graph:.3f} |", flush=True)
                continue
            xla = seconds_per_step(weights, arch, side, jit=True, steps=steps_for(side))
            print(f"| {arch} | {side} | {graph:.3f} | {xla:.3f} | {graph / xla:.2f}x |", flush=True)
    os.environ["NST_JIT"] = jit_setting  # the product's run below as configured
    clear_compiled()
    if backend.NAME != "tensorflow":
        print("\n(time to the tutorial loop's loss: TensorFlow only, the loop is TensorFlow's)")
        return

    print("\n## Time to the tutorial loop's loss at 128 px (real VGG16 weights)")
    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL, max_side=128)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL, max_side=128)
    params = StyleParams(size=128, arch="auto")
    objective, _ = compiled_objective(params, args.weights)
    (content_at,), inputs = loss_args(objective, [Job(content, [style], params)], 128)
    baselines = {eps: tutorial_baseline(objective, content_at, inputs, 500, eps) for eps in (0.1, 1e-8)}
    for eps, (loss, seconds) in baselines.items():
        print(
            f"tutorial loop, epsilon {eps:g}: loss after 500 steps {loss:.4f} in {seconds:.1f} s "
            f"({seconds / 500 * 1000:.1f} ms/step)"
        )
    # The stronger of the two baselines is the one to beat.
    eps, (target, baseline_seconds) = min(baselines.items(), key=lambda item: item[1][0])
    reached, result, marks = time_to_loss(content, style, params, args.weights, target)
    product_ms = 1000 * marks[-1][0] / len(marks)
    print(
        f"product defaults ({params.optimizer}, init {params.init}, scales {params.scales or 'none'}): "
        f"{result.iterations} steps, final loss {result.total_loss:.4f}, {product_ms:.1f} ms/step"
    )
    if reached:
        seconds, step = reached
        print(
            f"reached {target:.4f} after {step + 1} steps, {seconds:.2f} s: "
            f"{baseline_seconds / seconds:.1f}x less time than the baseline (epsilon {eps:g})"
        )
    else:
        print(f"did NOT reach the baseline loss {target:.4f} (best {min(m[1] for m in marks):.4f})")


if __name__ == "__main__":
    main()
