#!/usr/bin/env bash
# The robustness study (Sun et al. 2023) for Alpaca-7B: observed instructions from Alpaca's
# alpaca_data.json, the study's settings (gin_configs/experiments/sun2024_alpaca_7b.gin:
# runs/sun2024.gin, model axis 4). Needs the decoder-only model family (gin_configs/models/
# alpaca_7b.gin); until it lands the evaluation step fails at gin parsing. Steps and settings:
# sun2024_common.sh. For each BENCHMARK in mmlu, bigbench_lite:
#
#   export TPU_NAME=my-pod ZONE=us-central2-b ALPACA_MODEL=/path/to/alpaca-7b \
#     OBSERVED_SOURCE=/path/to/alpaca_data.json
#   tpu_scripts/experiments/sun2024_alpaca_7b.sh observed BENCHMARK
#   tpu_scripts/experiments/sun2024_alpaca_7b.sh eval BENCHMARK
#   tpu_scripts/experiments/sun2024_alpaca_7b.sh report BENCHMARK     # after the evaluation ended
#
# ALPACA_MODEL: the Alpaca-7B weights as a Hugging Face directory (a path on the workers).
# Stanford released Alpaca-7B as a weight diff against LLaMA-7B, not as a hub checkpoint, so the
# script takes whichever recovered copy you hold instead of naming one.
set -euo pipefail
# shellcheck source=sun2024_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/sun2024_common.sh"

model="${ALPACA_MODEL:-}"
if [[ -z "${model}" && "${1:-}" == "eval" ]]; then
  echo "set ALPACA_MODEL to the Alpaca-7B weights (a Hugging Face directory)" >&2
  exit 2
fi
sun2024_run alpaca "${model}" experiments/sun2024_alpaca_7b.gin alpaca_7b "$@"
