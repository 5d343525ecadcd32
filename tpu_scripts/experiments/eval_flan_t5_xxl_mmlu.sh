#!/usr/bin/env bash
# Flan-T5 XXL (11.3B; 42 GiB of float32 params, more than one accelerator holds) on MMLU under the
# 16 unobserved human instructions. Params split 8 ways over the model axis (check the fit first:
# python -m robust_prompt.cli.aot --gin_file models/flan_t5_xxl.gin --mesh data=2,model=8).
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/experiments/eval_flan_t5_xxl_mmlu.sh
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

run_name="${RUN_NAME:-eval_flan_t5_xxl_mmlu}"
launch_experiment "${run_name}" eval \
  --model google/flan-t5-xxl \
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
