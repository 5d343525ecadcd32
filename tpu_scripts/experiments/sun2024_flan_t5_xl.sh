#!/usr/bin/env bash
# The robustness study (Sun et al. 2023) for Flan-T5 XL: observed instructions from FLAN v2, the
# study's settings (gin_configs/experiments/sun2024_flan_t5_xl.gin: runs/sun2024.gin, model axis 4).
# Steps and settings: sun2024_common.sh. For each BENCHMARK in mmlu, bigbench_lite:
#
#   export TPU_NAME=my-pod ZONE=us-central2-b
#   tpu_scripts/experiments/sun2024_flan_t5_xl.sh observed BENCHMARK
#   tpu_scripts/experiments/sun2024_flan_t5_xl.sh eval BENCHMARK
#   tpu_scripts/experiments/sun2024_flan_t5_xl.sh report BENCHMARK     # after the evaluation ended
set -euo pipefail
# shellcheck source=sun2024_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/sun2024_common.sh"

sun2024_run flan_t5 google/flan-t5-xl experiments/sun2024_flan_t5_xl.gin flan_t5_xl "$@"
