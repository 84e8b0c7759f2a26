#!/usr/bin/env bash
# Every GPU measurement of chainrule in one call, for a lent GPU machine (one H100/H200; no internet):
# step overhead against a raw loop (ResNet-18 b512 bf16 channels_last; GPT-2 small seq 1024 compiled,
# fused AdamW + clipping) with MFU, the data path, start-up, each default callback's cost, and the sharded
# GPT preset. Each benchmark appends its table to benchmarks/RESULTS.md with the device, versions and date;
# the whole run stays within BUDGET_S seconds (default 480).
#
#   benchmarks/gpu_wheels.sh          # here, with network: the wheels the GPU machine's python lacks
#   bash benchmarks/gpu.sh            # there: carry benchmarks/wheels/ along with the checkout
#   bash benchmarks/gpu.sh --dry-run  # anywhere: every step at tiny size on this machine's python
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
[[ ${1:-} == --dry-run ]] && DRY_RUN=1
BUDGET_S=${BUDGET_S:-480}
START=$(date +%s)
PYTHON=${PYTHON:-python3}

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

if [[ $DRY_RUN == 0 ]]; then
    # The GPU machine has torch and Lightning but not Hydra, OmegaConf, ANTLR's runtime or W&B: install
    # them from the carried wheels into a throwaway environment that sees the system's packages.
    ENV_DIR=$(mktemp -d)/venv
    "$PYTHON" -m venv --system-site-packages "$ENV_DIR"
    "$ENV_DIR/bin/pip" install --quiet --no-index --find-links benchmarks/wheels \
        hydra-core omegaconf antlr4-python3-runtime wandb
    "$ENV_DIR/bin/pip" install --quiet --no-deps --no-build-isolation -e .
    PYTHON="$ENV_DIR/bin/python"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export WANDB_MODE=offline

run() {  # run NAME SECONDS ARGS...: one benchmark within its share of the budget (never past it)
    local name=$1 share=$2
    shift 2
    local limit=$((share < $(left) ? share : $(left)))
    if ((limit < 10)); then
        echo "gpu.sh: no time left for $name" >&2
        return 0
    fi
    echo "== $name (at most ${limit}s)"
    timeout "$limit" "$PYTHON" -m "benchmarks.$name" "$@" || echo "gpu.sh: $name failed or ran out of time" >&2
}

if [[ $DRY_RUN == 1 ]]; then
    run step_overhead 300 --preset tiny --no-record
    run startup 120 --repeats 1 --no-record
    run callback_costs 120 --preset tiny --no-record
    for optional in data_path sharding_memory; do
        [[ -f benchmarks/$optional.py ]] && run "$optional" 300 --preset tiny --no-record
    done
else
    run step_overhead 240 --preset h100
    run startup 60 --repeats 3
    run callback_costs 45
    for optional in data_path sharding_memory; do
        [[ -f benchmarks/$optional.py ]] && run "$optional" 90 --preset gpu
    done
fi
echo "gpu.sh: done in $(($(date +%s) - START))s"
