#!/usr/bin/env bash
# Shared by the experiment scripts in this folder: where data lives and how to launch a run.
# Source it; every value can be overridden in the environment.
#
#   LAUNCHER      tpu (default): tpu_scripts/launch.sh on every worker of TPU_NAME (needs TPU_NAME,
#                 ZONE; paths below are paths ON THE WORKERS, relative to their checkout);
#                 slurm: sbatch tpu_scripts/slurm_gpu.sbatch (NODES nodes, default 1);
#                 local: robust-prompt on this machine.
#   DRY_RUN=1     print the command instead of running it.
#   MMLU_DIR      the MMLU CSV release (holding test/)              (default: data/mmlu)
#   BBL_DIR       BIG-bench Lite task folders (task.json each)      (default: data/bigbench_lite)
#   OUT_ROOT      where results and trained prompts go              (default: runs)
#                 Training writes orbax checkpoints from every process: on a pod, OUT_ROOT must
#                 be a folder all workers share (e.g. a Filestore/NFS mount); evaluation results
#                 are written by process 0 only, on worker 0.
#   TRAIN_INSTRUCTIONS  the training pool of (observed) instructions, JSONL files or folders;
#                 required by the train_* scripts (see docs/instructions.md to import FLAN's).
set -euo pipefail

experiments_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scripts_dir="$(dirname "${experiments_dir}")"
LAUNCHER="${LAUNCHER:-tpu}"
MMLU_DIR="${MMLU_DIR:-data/mmlu}"
BBL_DIR="${BBL_DIR:-data/bigbench_lite}"
OUT_ROOT="${OUT_ROOT:-runs}"

# launch_experiment RUN_NAME COMMAND [robust-prompt flags...]
launch_experiment() {
  local run_name="$1"
  shift
  local cmd=()
  case "${LAUNCHER}" in
    tpu) cmd=("${scripts_dir}/launch.sh" "${run_name}" "$@") ;;
    slurm) cmd=(sbatch --nodes="${NODES:-1}" --job-name="${run_name}" "${scripts_dir}/slurm_gpu.sbatch" "$@") ;;
    local) cmd=(robust-prompt "$@") ;;
    *)
      echo "LAUNCHER must be tpu, slurm or local; got '${LAUNCHER}'" >&2
      return 2
      ;;
  esac
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  "${cmd[@]}"
}
