#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md in one command, for a short lease of a GPU machine that
# has jax[cuda], torch, torchvision and timm installed but no network (the team's H100/H200
# machines): the rest (grain, ml-collections, lightly and its light deps) comes as wheels in .whl/
# (benchmarks/README.md, "GPU"), real images in $BENCH_DATA_DIR (CIFAR-10 test set, Imagenette).
#
#   bash benchmarks/gpu_run.sh OUT_DIR [BUDGET_S] [STEPS...]
#
# Runs the STEPS (default: all, in the order below) one after the other, each under its own
# timeout, skipping a step when less than its minimum time is left of BUDGET_S (default 540 s; on an
# H200 the steps took: env 13 s, simclr 67 s, byol 86 s, dino 198 s, mfu 171 s, augment 32 s).
# Issue 24 (ViT speed; not yet run on a GPU, budget guesses from the ViT-S compile times of 48-78 s):
#   bash benchmarks/gpu_run.sh OUT 560 env dino_cudnn vit_mae vit_dino multicrop
# (minimum times 10 + 150 + 120 + 150 + 150 s: what the budget cannot fit is skipped, in this order;
# `PY=echo bash benchmarks/gpu_run.sh /tmp/x 560 STEPS...` prints the commands without running them).
# dino_cudnn: throughput_dino.py (jaxssl / hand-written / lightly) with cuDNN flash attention;
# vit_mae: MAE ViT-B/16 batch 256 s/step, images/s and MFU, XLA vs cuDNN attention; vit_dino: DINO
# ViT-S/16 b64 per attention path and remat policy (speed and XLA memory analysis); multicrop: DINO
# ViT-S/16 b64 with same-size crops in one backbone call vs one call per crop (crop_grouping), cuDNN
# attention, alternating (multicrop_grouping.py; its lowered counts are the CPU's); host_trace: the
# profiler trace of the trainer, needs the CIFAR-10 subset (BENCH_TFDS_DIR, tests/conftest.py).
# Everything printed goes to OUT_DIR/log.txt, the JSON files to OUT_DIR/results/ (packed into
# OUT_DIR/results.tar at the end). A failing step does not stop the others.
set -u
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_run.sh OUT_DIR [BUDGET_S] [STEPS...]}
BUDGET=${2:-540}
shift $(( $# >= 2 ? 2 : $# ))
STEPS=${*:-env simclr dino mfu byol augment simclr_bf16}
mkdir -p "$OUT/results"
LOG=$OUT/log.txt
START=$(date +%s)
export BENCH_RESULTS_DIR=$OUT/results BENCH_DATA_DIR=${BENCH_DATA_DIR:-$PWD/.benchdata} PYTHONUNBUFFERED=1
# jax and torch share the GPU in one process: jax takes 40% of its memory instead of 75%
# (_common.torch_setup would set 45% when unset).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.4}
PY=${PY:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
W=$(( $(nproc) > 4 ? $(nproc) - 4 : 0 ))  # DataLoader workers for lightly: all cores but the main process's

step() {  # step NAME MIN_S MAX_S CMD...: run CMD if MIN_S are left, for at most MAX_S
  local name=$1 min=$2 max=$3; shift 3
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt "$min" ]; then echo "=== $name skipped: ${left}s left, needs ${min}s" | tee -a "$LOG"; return; fi
  local t=$(( left < max ? left : max ))
  echo "=== $name ($(date -u +%T), timeout ${t}s): $*" | tee -a "$LOG"
  local s=$(date +%s)
  timeout -k 5 "$t" "$@" >>"$LOG" 2>&1
  echo "=== $name rc=$? in $(( $(date +%s) - s ))s" | tee -a "$LOG"
}

for s in $STEPS; do
  case $s in
    env) step env 10 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; \
      $PY -c 'import jax, flax, optax, torch, torchvision, timm, lightly, grain, ml_collections; \
print(\"jax\", jax.__version__, jax.devices(), \"flax\", flax.__version__, \"optax\", optax.__version__, \
\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"timm\", timm.__version__, \
\"lightly\", lightly.__version__, \"cuda\", torch.cuda.get_device_name(0))'; nproc; free -g | head -2" ;;
    simclr) step simclr 90 150 $PY benchmarks/throughput.py --method simclr --width 1.0 --batch 256 \
      --warmup 3 --blocks 5 --steps 5 --workers $W --tag _gpu ;;
    simclr_bf16) step simclr_bf16 90 150 $PY benchmarks/throughput.py --method simclr --width 1.0 --batch 256 \
      --dtype bfloat16 --warmup 3 --blocks 5 --steps 5 --workers $W --tag _gpu_bf16 ;;
    byol) step byol 90 150 $PY benchmarks/throughput.py --method byol --width 1.0 --batch 256 \
      --warmup 3 --blocks 5 --steps 5 --workers $W --tag _gpu ;;
    dino) step dino 150 260 $PY benchmarks/throughput_dino.py --batch 64 --dtype bfloat16 \
      --warmup 3 --blocks 4 --steps 4 --workers $W --tag _gpu ;;
    mfu) step mfu 150 240 $PY benchmarks/mfu.py --batch 128 --dtype bfloat16 --local_views 6 \
      --warmup 2 --steps 10 --tag _b128 ;;
    dino_cudnn) step dino_cudnn 150 260 $PY benchmarks/throughput_dino.py --batch 64 --dtype bfloat16 \
      --attention_impl cudnn --warmup 3 --blocks 4 --steps 4 --workers $W --tag _gpu_cudnn ;;
    vit_mae) step vit_mae 120 240 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 $PY benchmarks/vit_step.py --models mae_vitb16 --batch 256 --time \
      --variants fused:none,cudnn:none --warmup 3 --steps 10 --tag _gpu_mae ;;
    vit_dino) step vit_dino 150 300 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 $PY benchmarks/vit_step.py --models dino_vits16 --batch 64 --time \
      --variants fused:none,cudnn:none,cudnn:dots_saveable --warmup 3 --steps 10 --tag _gpu_dino ;;
    multicrop) step multicrop 150 260 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 $PY benchmarks/multicrop_grouping.py \
      --no_lowered --time --time_batch 64 --time_backbone S/16 --attention cudnn --warmup 3 --blocks 4 --steps 4 \
      --tag _gpu ;;
    host_trace) step host_trace 90 200 $PY benchmarks/host_trace.py --batch 256 --steps 40 \
      --data_dir ${BENCH_TFDS_DIR:-$PWD/.cache/tfds_test} --tag _gpu ;;
    augment) step augment 40 90 $PY benchmarks/augment_throughput.py --size 224 --batch 64 --blocks 2 --steps $(( 2 * W )) \
      --contenders jaxssl,torchvision_v2_nw$W,lightly_nw$W --threads 1 --tag _gpu ;;
    *) echo "unknown step $s" | tee -a "$LOG" ;;
  esac
done
tar -C "$OUT" -cf "$OUT/results.tar" results && rm -rf "$OUT/results"
echo "total $(( $(date +%s) - START ))s" | tee -a "$LOG"
