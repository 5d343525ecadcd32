#!/usr/bin/env bash
# A 100-vector soft prompt for frozen Flan-T5 XXL on MMLU: cross-entropy + paraphrase alignment
# (cosine to the group mean, weight 1) + KL to the anchor instruction (weight 1), groups of one
# question under 4 training instructions. The unobserved MMLU instructions are held out (training
# refuses any overlap). Writes checkpoints (resumable: rerun the script) and prompt.npy into
# ${OUT_ROOT}/RUN_NAME/; eval_trained_prompt_flan_t5_xxl_mmlu.sh evaluates it.
# Sized for 32 devices of 32 GiB (a TPU v4-64: data=4 x model=8): 128 rows per step in 16
# microbatches keep 2 rows per device at a time, 26.3 GiB peak per device by the ahead-of-time
# check (python -m robust_prompt.cli.aot --gin_file models/flan_t5_xxl.gin --mesh data=4,model=8
# --groups 32 --members 4 --num_microbatches 16 --gin.T5Config.dtype="'bfloat16'").
#
#   TRAIN_INSTRUCTIONS=tasks/instructions/flan_mmlu.jsonl TPU_NAME=my-pod ZONE=us-central2-b \
#     tpu_scripts/experiments/train_alignment_prompt_flan_t5_xxl.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
: "${TRAIN_INSTRUCTIONS:?set TRAIN_INSTRUCTIONS to the training pool (JSONL files or folders)}"

run_name="${RUN_NAME:-train_alignment_flan_t5_xxl}"
# shellcheck disable=SC2086 # TRAIN_INSTRUCTIONS may list several paths.
launch_experiment "${run_name}" train \
  --model google/flan-t5-xxl \
  --benchmark mmlu \
  --data_dir "${MMLU_DIR}" \
  --train_instructions ${TRAIN_INSTRUCTIONS} \
  --heldout_instructions tasks/instructions/mmlu.jsonl \
  --model_dir "${OUT_ROOT}/${run_name}" \
  --num_steps "${NUM_STEPS:-3000}" \
  --mesh data=-1,model=8 \
  --gin_file runs/train_soft_prompt.gin \
  --gin_file models/flan_t5_xxl.gin \
  --gin_file losses/alignment.gin \
  --gin_file prompts/from_vocab.gin \
  --dtype bfloat16 \
  --gin.prompt.length=100 \
  --gin.data.groups_per_batch=32 \
  --gin.data.members_per_group=4 \
  --gin.train.num_microbatches=16 \
  --gin.losses.lambda_sim=1.0 \
  --gin.losses.lambda_kl=1.0 \
  "$@"
