#!/usr/bin/env bash
# Flan-T5 XL (2.85B) on all 57 MMLU subjects under the 16 unobserved human instructions. Settings
# (model axis 4, bfloat16, batch 128): gin_configs/experiments/eval_flan_t5_xl_mmlu.gin.
# Results: ${OUT_ROOT}/RUN_NAME/.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_flan_t5_xl_mmlu.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

launch_mmlu_eval "${RUN_NAME:-eval_flan_t5_xl_mmlu}" experiments/eval_flan_t5_xl_mmlu.gin \
  google/flan-t5-xl "$@"
