#!/usr/bin/env bash
# GPU check, at most --minutes (default 8): on JAX, without TensorFlow or Prefect, prints
#   1. seconds per L-BFGS step at --size px (bench_core --compare), float32 and bfloat16 features;
#   2. the fraction of the measured bf16 matmul peak one step reaches, batches of 1 and --batch (bench_flops);
#   3. pairs per hour at --size px, one at a time and in a batch of --batch (bench_batch, --iterations steps);
#   4. the largest size that fits in one pass (bench_largest).
# Each section has its share of the time and is cut off, saying so, when it overruns.
#
# Needs: python3 with jax (jax[cuda12] on a GPU), numpy, pillow, and keras, h5py, fsspec with their
# small dependencies. Missing ones are installed with --no-deps from --wheels DIR when given, e.g. a
# folder made on a connected machine with:
#   pip download --no-deps -d wheels keras h5py fsspec absl-py rich markdown-it-py mdurl pygments namex optree
# and the VGG16 weights (--weights, default $NST_WEIGHTS or ../shared/weights/ or shared/weights/).
#
# On a CPU, to prove it runs end to end in a few minutes:
#   benchmarks/gpu_check.sh --size 64 --batch 2 --iterations 5 --max-side 256 --matmul-size 1024 --minutes 4
set -euo pipefail

SIZE=512 BATCH=8 ITERATIONS=300 MAX_SIDE=8192 MATMUL=8192 MINUTES=8 WHEELS="" WEIGHTS="${NST_WEIGHTS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2 ;; --batch) BATCH=$2 ;; --iterations) ITERATIONS=$2 ;; --max-side) MAX_SIDE=$2 ;;
    --matmul-size) MATMUL=$2 ;; --minutes) MINUTES=$2 ;; --wheels) WHEELS=$2 ;; --weights) WEIGHTS=$2 ;;
    *) echo "gpu_check: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
  shift 2
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-python3}
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# Module to install -> its package (pip name); jax itself must come with the machine (CUDA build).
NEEDED="numpy:numpy PIL:pillow keras:keras h5py:h5py fsspec:fsspec absl:absl-py rich:rich markdown_it:markdown-it-py
mdurl:mdurl pygments:pygments namex:namex optree:optree ml_dtypes:ml-dtypes packaging:packaging"
missing_packages() {
  for pair in $NEEDED; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || printf '%s ' "${pair#*:}"
  done
}

"$PY" -c "import jax" 2>/dev/null || { echo "gpu_check: jax is not importable by $PY: pip install 'jax[cuda12]'" >&2; exit 2; }
MISSING=$(missing_packages)
if [ -n "$MISSING" ] && [ -n "$WHEELS" ]; then
  SITE=$(mktemp -d)
  echo "installing from $WHEELS into $SITE: $MISSING"
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" $MISSING
  export PYTHONPATH="$PYTHONPATH:$SITE"
  MISSING=$(missing_packages)
fi
if [ -n "$MISSING" ]; then
  echo "gpu_check: missing Python packages: $MISSING- carry their wheels and pass --wheels DIR" >&2
  exit 2
fi
for candidate in "$WEIGHTS" "$REPO/../shared/weights/vgg16_imagenet_notop.weights.h5" \
                 "$REPO/shared/weights/vgg16_imagenet_notop.weights.h5"; do
  [ -n "$candidate" ] && [ -f "$candidate" ] && { WEIGHTS=$candidate; break; }
done
[ -f "$WEIGHTS" ] || { echo "gpu_check: no VGG16 weights file: pass --weights FILE" >&2; exit 2; }
export NST_WEIGHTS=$WEIGHTS

"$PY" -c "import jax, keras; print(f'jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), keras {keras.__version__}')"
"$PY" -c "import onnxruntime" 2>/dev/null && echo "onnxruntime: present (the fast lane could run)" \
  || echo "onnxruntime: absent (not needed for these measurements)"
"$PY" -c "import sys, nst_core.stylize; sys.exit('tensorflow' in sys.modules)" \
  || { echo "gpu_check: nst_core imported TensorFlow under JAX" >&2; exit 1; }

# Shares of the time: steps 20%, peak 20%, pairs per hour 40%, largest size 20%.
TOTAL=$((MINUTES * 60))
section() {  # section TITLE SHARE_PERCENT COMMAND...
  local title=$1 limit=$(($2 * TOTAL / 100)) started=$SECONDS
  shift 2
  echo; echo "== $title (limit ${limit} s)"
  if timeout --kill-after=10 "$limit" "$@"; then
    echo "($((SECONDS - started)) s)"
  else
    echo "$title: did not finish within ${limit} s (exit $?)"
  fi
}
section "1. seconds per step at $SIZE px" 20 \
  "$PY" "$HERE/bench_core.py" --compare --backends jax --sizes "$SIZE" --precisions float32,bfloat16
section "2. fraction of the bf16 matmul peak at $SIZE px" 20 \
  "$PY" "$HERE/bench_flops.py" --sizes "$SIZE" --batches "1,$BATCH" --precision bfloat16 --steps 5 --matmul-size "$MATMUL"
section "3. pairs per hour at $SIZE px, $ITERATIONS steps: one at a time and a batch of $BATCH" 40 \
  "$PY" "$HERE/bench_batch.py" --sizes "$SIZE" --pairs "$BATCH" --iterations "$ITERATIONS"
section "4. largest size in one pass" 20 \
  "$PY" "$HERE/bench_largest.py" --start "$SIZE" --max-side "$MAX_SIDE" --seconds $((TOTAL * 20 / 100 - 20))
