#!/usr/bin/env bash
# The baseline of train_alignment_prompt_flan_t5_xxl.sh: plain prompt tuning (cross-entropy only)
# of the same 100-vector prompt for frozen Flan-T5 XXL on MMLU. Settings:
# gin_configs/experiments/train_ce_only_prompt_flan_t5_xxl.gin, which includes the same
# experiments/flan_t5_xxl_mmlu_train.gin as the alignment run and differs from it only in the loss
# file (losses/ce_only.gin): same model, mesh, groups, data order, optimizer and steps.
# Evaluate it with TRAIN_RUN=train_ce_only_flan_t5_xxl eval_trained_prompt_flan_t5_xxl_mmlu.sh.
#
#   TRAIN_INSTRUCTIONS=observed/flan_t5_mmlu.jsonl TPU_NAME=my-pod ZONE=us-central2-b \
#     tpu_scripts/experiments/train_ce_only_prompt_flan_t5_xxl.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
: "${TRAIN_INSTRUCTIONS:?set TRAIN_INSTRUCTIONS to the training pool (JSONL files or folders)}"

launch_flan_t5_xxl_mmlu_train "${RUN_NAME:-train_ce_only_flan_t5_xxl}" \
  experiments/train_ce_only_prompt_flan_t5_xxl.gin "$@"
