#!/usr/bin/env bash
# T0++ (11B, T5 1.1 LM-adapted XXL) on the BIG-bench Lite tasks under their unobserved human
# instructions (tasks/instructions/bigbench/). Settings (model axis 8, bfloat16, batch 64, 32 greedy
# steps for generative tasks): gin_configs/experiments/eval_t0pp_bigbench_lite.gin.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_t0pp_bigbench_lite.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_name="${RUN_NAME:-eval_t0pp_bigbench_lite}"
launch_experiment "${run_name}" eval \
  --gin_file experiments/eval_t0pp_bigbench_lite.gin \
  --model bigscience/T0pp \
  --benchmark bigbench_lite \
  --data_dir "${BBL_DIR}" \
  --instructions tasks/instructions/bigbench \
  --output_dir "${OUT_ROOT}/${run_name}" \
  "$@"
