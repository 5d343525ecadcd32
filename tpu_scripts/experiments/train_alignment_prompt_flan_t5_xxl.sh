#!/usr/bin/env bash
# A 100-vector soft prompt for frozen Flan-T5 XXL on MMLU: cross-entropy + paraphrase alignment
# (cosine to the group mean, weight 1) + KL to the anchor instruction (weight 1), groups of one
# question under 4 training instructions, 3000 steps. Settings:
# gin_configs/experiments/train_alignment_prompt_flan_t5_xxl.gin (the shared
# experiments/flan_t5_xxl_mmlu_train.gin + losses/alignment.gin; sized for a TPU v4-64, see there).
# The unobserved MMLU instructions are held out (training refuses any overlap). Writes checkpoints
# (resumable: rerun the script) and prompt.npy into ${OUT_ROOT}/RUN_NAME/;
# eval_trained_prompt_flan_t5_xxl_mmlu.sh evaluates it. Its baseline is
# train_ce_only_prompt_flan_t5_xxl.sh.
#
#   TRAIN_INSTRUCTIONS=observed/flan_t5_mmlu.jsonl TPU_NAME=my-pod ZONE=us-central2-b \
#     tpu_scripts/experiments/train_alignment_prompt_flan_t5_xxl.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
: "${TRAIN_INSTRUCTIONS:?set TRAIN_INSTRUCTIONS to the training pool (JSONL files or folders)}"

launch_flan_t5_xxl_mmlu_train "${RUN_NAME:-train_alignment_flan_t5_xxl}" \
  experiments/train_alignment_prompt_flan_t5_xxl.gin "$@"
