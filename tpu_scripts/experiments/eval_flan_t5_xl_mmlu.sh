#!/usr/bin/env bash
# Flan-T5 XL (2.85B) on all 57 MMLU subjects under the 16 unobserved human instructions.
# Params (11 GiB in float32) are split 4 ways over the model axis (mesh/model_parallel_2d.gin), the
# batch over the remaining devices; activations in bfloat16. Results: ${OUT_ROOT}/RUN_NAME/.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_flan_t5_xl_mmlu.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_name="${RUN_NAME:-eval_flan_t5_xl_mmlu}"
launch_experiment "${run_name}" eval \
  --model google/flan-t5-xl \
  --benchmark mmlu \
  --data_dir "${MMLU_DIR}" \
  --instructions tasks/instructions/mmlu.jsonl \
  --output_dir "${OUT_ROOT}/${run_name}" \
  --gin_file runs/eval.gin \
  --gin_file models/flan_t5_xl.gin \
  --gin_file mesh/model_parallel_2d.gin \
  --gin.MESH_MODEL=4 \
  --dtype bfloat16 \
  --gin.evaluate.batch_size=128 \
  --gin.evaluate.score_mode="'sum'" \
  "$@"
