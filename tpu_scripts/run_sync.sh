#!/usr/bin/env bash
# Runs a short CPU step of robust-prompt (report, instructions, tasks) on one worker of a TPU VM
# pod, or on all of them, in the checkout and its virtual environment, and waits for it: unlike
# launch.sh (accelerator jobs, started in the background), the next step may rely on its output.
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/run_sync.sh 0 report \
#     --per_instruction runs/x/per_instruction.csv --output_dir runs/x/report
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/run_sync.sh all instructions build ...
#
# Worker 0 holds what process 0 wrote (results, reports); `all` is for files that every process
# reads (e.g. instruction sets built on each worker). The exit status is gcloud's, i.e. non-zero when
# the command failed on a worker.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "${here}/common.sh"

if [[ $# -lt 2 ]]; then
  usage_error "usage: $0 {WORKER|all} {report|instructions|tasks} [robust-prompt flags...]"
fi
worker="$1"
shift
check_worker "${worker}"
case "$1" in
  report | instructions | tasks) ;;
  *)
    # Accelerator jobs must start on every worker at once and outlive the ssh session: launch.sh.
    usage_error "run_sync.sh runs report, instructions or tasks; got '$1' (use launch.sh for train/eval/score)"
    ;;
esac

quoted_args="$(shell_quote "$@")"
remote="set -e
  cd ${REMOTE_DIR}
  . ${VENV}/bin/activate
  robust-prompt${quoted_args}"
if [[ "${worker}" == "all" ]]; then
  on_all_workers "${remote}"
else
  on_worker "${worker}" "${remote}"
fi
