#!/usr/bin/env bash
# Flan-T5 XXL with the prompt trained by train_alignment_prompt_flan_t5_xxl.sh, on MMLU under the
# held-out (unobserved) instructions: compare its report with eval_flan_t5_xxl_mmlu.sh's.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_trained_prompt_flan_t5_xxl_mmlu.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

train_run="${TRAIN_RUN:-train_alignment_flan_t5_xxl}"
run_name="${RUN_NAME:-eval_${train_run}_mmlu}"
launch_experiment "${run_name}" eval \
  --model google/flan-t5-xxl \
  --prompt "${OUT_ROOT}/${train_run}/prompt.npy" \
  --benchmark mmlu \
  --data_dir "${MMLU_DIR}" \
  --instructions tasks/instructions/mmlu.jsonl \
  --output_dir "${OUT_ROOT}/${run_name}" \
  --gin_file runs/eval.gin \
  --gin_file models/flan_t5_xxl.gin \
  --gin_file mesh/model_parallel_2d.gin \
  --gin.MESH_MODEL=8 \
  --dtype bfloat16 \
  --gin.evaluate.batch_size=64 \
  "$@"
