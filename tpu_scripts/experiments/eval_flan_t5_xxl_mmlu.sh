#!/usr/bin/env bash
# Flan-T5 XXL (11.1B; 42 GiB of float32 params, more than one accelerator holds) on MMLU under the
# 16 unobserved human instructions. Settings (model axis 8, bfloat16, batch 64):
# gin_configs/experiments/eval_flan_t5_xxl_mmlu.gin, shared with
# eval_trained_prompt_flan_t5_xxl_mmlu.sh so that the two reports differ only in the prompt.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_flan_t5_xxl_mmlu.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

launch_mmlu_eval "${RUN_NAME:-eval_flan_t5_xxl_mmlu}" experiments/eval_flan_t5_xxl_mmlu.gin \
  google/flan-t5-xxl "$@"
