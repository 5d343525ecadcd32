#!/usr/bin/env bash
# The robustness study (Sun et al. 2023) for Alpaca-7B: observed instructions from Alpaca's
# alpaca_data.json, the study's settings (gin_configs/experiments/sun2024_alpaca_7b.gin:
# runs/sun2024.gin, model axis 4, on the decoder-only family's models/alpaca_7b.gin). Steps and
# settings: sun2024_common.sh. For each BENCHMARK in mmlu, bigbench_lite:
#
#   export TPU_NAME=my-pod ZONE=us-central2-b OBSERVED_SOURCE=/path/to/alpaca_data.json
#   tpu_scripts/experiments/sun2024_alpaca_7b.sh observed BENCHMARK
#   tpu_scripts/experiments/sun2024_alpaca_7b.sh eval BENCHMARK
#   tpu_scripts/experiments/sun2024_alpaca_7b.sh report BENCHMARK     # after the evaluation ended
#
# ALPACA_MODEL: the weights (default: chavinlo/alpaca-native, the HF_MODEL_ID of
# models/alpaca_7b.gin, a re-training with Stanford's recipe). Stanford released Alpaca-7B only as a
# weight diff against LLaMA-7B; to evaluate weights recovered from it, point ALPACA_MODEL at their
# Hugging Face directory (a path on the workers).
set -euo pipefail
# shellcheck source=sun2024_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/sun2024_common.sh"

sun2024_run alpaca "${ALPACA_MODEL:-chavinlo/alpaca-native}" experiments/sun2024_alpaca_7b.gin \
  alpaca_7b "$@"
