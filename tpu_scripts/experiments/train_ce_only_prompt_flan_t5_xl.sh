#!/usr/bin/env bash
# The baseline of the alignment runs: plain prompt tuning (cross-entropy only, losses/ce_only.gin)
# of a 100-vector prompt for frozen Flan-T5 XL on MMLU, with the same groups and data order as the
# alignment run, so the two differ only in the loss.
#
#   TRAIN_INSTRUCTIONS=tasks/instructions/flan_mmlu.jsonl TPU_NAME=my-pod ZONE=us-central2-b \
#     tpu_scripts/experiments/train_ce_only_prompt_flan_t5_xl.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
: "${TRAIN_INSTRUCTIONS:?set TRAIN_INSTRUCTIONS to the training pool (JSONL files or folders)}"

run_name="${RUN_NAME:-train_ce_only_flan_t5_xl}"
# shellcheck disable=SC2086 # TRAIN_INSTRUCTIONS may list several paths.
launch_experiment "${run_name}" train \
  --model google/flan-t5-xl \
  --benchmark mmlu \
  --data_dir "${MMLU_DIR}" \
  --train_instructions ${TRAIN_INSTRUCTIONS} \
  --heldout_instructions tasks/instructions/mmlu.jsonl \
  --model_dir "${OUT_ROOT}/${run_name}" \
  --num_steps "${NUM_STEPS:-3000}" \
  --mesh data=-1,model=4 \
  --gin_file runs/train_soft_prompt.gin \
  --gin_file models/flan_t5_xl.gin \
  --gin_file losses/ce_only.gin \
  --gin_file prompts/from_vocab.gin \
  --dtype bfloat16 \
  --gin.prompt.length=100 \
  --gin.data.groups_per_batch=32 \
  --gin.data.members_per_group=4 \
  "$@"
