#!/usr/bin/env bash
# T0++ (11B, T5 1.1 LM-adapted XXL) on the BIG-bench Lite tasks under their unobserved human
# instructions (tasks/instructions/bigbench/). Multiple-choice tasks are ranked, generative ones
# decoded greedily (32 steps). Params split 8 ways over the model axis.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_t0pp_bigbench_lite.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_name="${RUN_NAME:-eval_t0pp_bigbench_lite}"
launch_experiment "${run_name}" eval \
  --model bigscience/T0pp \
  --benchmark bigbench_lite \
  --data_dir "${BBL_DIR}" \
  --instructions tasks/instructions/bigbench \
  --output_dir "${OUT_ROOT}/${run_name}" \
  --gin_file runs/eval.gin \
  --gin_file models/t0pp.gin \
  --gin_file mesh/model_parallel_2d.gin \
  --gin.MESH_MODEL=8 \
  --dtype bfloat16 \
  --gin.evaluate.batch_size=64 \
  --gin.evaluate.max_decode_length=32 \
  "$@"
