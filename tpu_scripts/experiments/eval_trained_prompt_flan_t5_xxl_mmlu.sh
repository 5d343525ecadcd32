#!/usr/bin/env bash
# Flan-T5 XXL with a prompt trained by train_alignment_prompt_flan_t5_xxl.sh (or, with
# TRAIN_RUN=train_ce_only_flan_t5_xxl, by its baseline train_ce_only_prompt_flan_t5_xxl.sh), on MMLU
# under the held-out (unobserved) instructions. Same gin file as eval_flan_t5_xxl_mmlu.sh
# (gin_configs/experiments/eval_flan_t5_xxl_mmlu.gin): the reports differ only in the prompt.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_trained_prompt_flan_t5_xxl_mmlu.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

train_run="${TRAIN_RUN:-train_alignment_flan_t5_xxl}"
run_name="${RUN_NAME:-eval_${train_run}_mmlu}"
launch_experiment "${run_name}" eval \
  --gin_file experiments/eval_flan_t5_xxl_mmlu.gin \
  --model google/flan-t5-xxl \
  --prompt "${OUT_ROOT}/${train_run}/prompt.npy" \
  --benchmark mmlu \
  --data_dir "${MMLU_DIR}" \
  --instructions tasks/instructions/mmlu.jsonl \
  --output_dir "${OUT_ROOT}/${run_name}" \
  "$@"
