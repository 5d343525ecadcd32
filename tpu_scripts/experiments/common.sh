#!/usr/bin/env bash
# Shared by the experiment scripts in this folder: where data lives and how to launch a run.
# Source it; every value can be overridden in the environment.
#
# Every experiment's settings live in ONE gin file under gin_configs/experiments/ (model, mesh,
# dtype, batch sizes, losses, steps); a script passes that file plus what gin cannot hold: the model
# id, the benchmark and task selection, and the data, instruction and output paths.
#
#   LAUNCHER      tpu (default): tpu_scripts/launch.sh on every worker of TPU_NAME (needs TPU_NAME,
#                 ZONE; paths below are paths ON THE WORKERS, relative to their checkout);
#                 slurm: sbatch tpu_scripts/slurm_gpu.sbatch (NODES nodes, default 1);
#                 local: robust-prompt on this machine.
#   DRY_RUN=1     print the command instead of running it.
#   DATA_DIR      the folder holding mmlu/ and bigbench_lite/          (default: data)
#   MMLU_DIR      the MMLU CSV release (holding test/)                 (default: DATA_DIR/mmlu)
#   BBL_DIR       BIG-bench Lite task folders (task.json each)         (default: DATA_DIR/bigbench_lite)
#   OUT_ROOT      where results and trained prompts go                 (default: runs)
#                 Training writes orbax checkpoints from every process: on a pod, OUT_ROOT must
#                 be a folder all workers share (e.g. a Filestore/NFS mount); evaluation results
#                 are written by process 0 only, on worker 0.
#   TRAIN_INSTRUCTIONS  the training pool of (observed) instructions, JSONL files or folders;
#                 required by the train_* scripts (see docs/instructions.md to import FLAN's).
set -euo pipefail

experiments_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scripts_dir="$(dirname "${experiments_dir}")"
LAUNCHER="${LAUNCHER:-tpu}"
DATA_DIR="${DATA_DIR:-data}"
MMLU_DIR="${MMLU_DIR:-${DATA_DIR}/mmlu}"
BBL_DIR="${BBL_DIR:-${DATA_DIR}/bigbench_lite}"
OUT_ROOT="${OUT_ROOT:-runs}"

# run_or_print COMMAND...: runs the command, or prints it (quoted) under DRY_RUN=1.
run_or_print() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "$@"
    echo
    return 0
  fi
  "$@"
}

# check_launcher: fails (status 2) on an unknown LAUNCHER.
check_launcher() {
  case "${LAUNCHER}" in
    tpu | slurm | local) ;;
    *)
      echo "LAUNCHER must be tpu, slurm or local; got '${LAUNCHER}'" >&2
      return 2
      ;;
  esac
}

# launch_experiment RUN_NAME COMMAND [robust-prompt flags...]: an accelerator job (train, eval) on
# every host. On a pod and under SLURM it returns once the job is started, not when it ends.
launch_experiment() {
  check_launcher
  local run_name="$1"
  shift
  local cmd=()
  case "${LAUNCHER}" in
    tpu) cmd=("${scripts_dir}/launch.sh" "${run_name}" "$@") ;;
    slurm) cmd=(sbatch --nodes="${NODES:-1}" --job-name="${run_name}" "${scripts_dir}/slurm_gpu.sbatch" "$@") ;;
    local) cmd=(robust-prompt "$@") ;;
  esac
  run_or_print "${cmd[@]}"
}

# run_short WHERE COMMAND [robust-prompt flags...]: a short CPU step (report, instructions build),
# run to its end. WHERE is `main` (where process 0 wrote the results: worker 0 on a pod) or `all`
# (every worker, for files that every process reads, such as instruction sets). Under SLURM it runs
# on this machine, which sees the cluster's shared file system.
run_short() {
  check_launcher
  local where="$1"
  shift
  local cmd=()
  case "${LAUNCHER}" in
    tpu)
      local worker=0
      if [[ "${where}" == "all" ]]; then
        worker=all
      fi
      cmd=("${scripts_dir}/run_sync.sh" "${worker}" "$@")
      ;;
    slurm | local) cmd=(robust-prompt "$@") ;;
  esac
  run_or_print "${cmd[@]}"
}

# launch_mmlu_eval RUN_NAME GIN_FILE MODEL [robust-prompt flags...]: evaluates MODEL on all of
# MMLU under the shipped unobserved instructions; results in OUT_ROOT/RUN_NAME.
launch_mmlu_eval() {
  local run_name="$1" gin_file="$2" model="$3"
  shift 3
  launch_experiment "${run_name}" eval \
    --gin_file "${gin_file}" \
    --model "${model}" \
    --benchmark mmlu \
    --data_dir "${MMLU_DIR}" \
    --instructions tasks/instructions/mmlu.jsonl \
    --output_dir "${OUT_ROOT}/${run_name}" \
    "$@"
}

# launch_flan_t5_xxl_mmlu_train RUN_NAME GIN_FILE [robust-prompt flags...]: a soft prompt for
# frozen Flan-T5 XXL on MMLU from the TRAIN_INSTRUCTIONS pool (the caller checks that it is set,
# so that the error names the script), the shipped unobserved MMLU instructions held out;
# checkpoints and prompt.npy in OUT_ROOT/RUN_NAME. One function for the alignment run and its
# CE-only baseline, so that their command lines differ only in GIN_FILE.
launch_flan_t5_xxl_mmlu_train() {
  local run_name="$1" gin_file="$2"
  shift 2
  # shellcheck disable=SC2086 # TRAIN_INSTRUCTIONS may list several paths.
  launch_experiment "${run_name}" train \
    --gin_file "${gin_file}" \
    --model google/flan-t5-xxl \
    --benchmark mmlu \
    --data_dir "${MMLU_DIR}" \
    --train_instructions ${TRAIN_INSTRUCTIONS} \
    --heldout_instructions tasks/instructions/mmlu.jsonl \
    --model_dir "${OUT_ROOT}/${run_name}" \
    "$@"
}
