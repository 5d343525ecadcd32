#!/usr/bin/env bash
# The robustness study (Sun et al. 2023) for T0++: observed instructions from PromptSource (the P3
# prompts T0 was tuned on), the study's settings (gin_configs/experiments/sun2024_t0pp.gin:
# runs/sun2024.gin, model axis 8). Steps and settings: sun2024_common.sh. For each BENCHMARK in
# mmlu, bigbench_lite:
#
#   export TPU_NAME=my-pod ZONE=us-central2-b
#   tpu_scripts/experiments/sun2024_t0pp.sh observed BENCHMARK
#   tpu_scripts/experiments/sun2024_t0pp.sh eval BENCHMARK
#   tpu_scripts/experiments/sun2024_t0pp.sh report BENCHMARK     # after the evaluation ended
set -euo pipefail
# shellcheck source=sun2024_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/sun2024_common.sh"

sun2024_run t0 bigscience/T0pp experiments/sun2024_t0pp.gin t0pp "$@"
