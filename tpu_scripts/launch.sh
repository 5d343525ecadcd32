#!/usr/bin/env bash
# Launches `robust-prompt train|eval|score ...` on every worker of a TPU VM pod at once and streams
# the log of one worker. jax.distributed finds the pod's coordinator by itself (no flags needed).
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/launch.sh RUN_NAME train \
#     --gin_file=runs/train_soft_prompt.gin --gin_file=models/flan_t5_xl.gin ...
#
# Each worker writes ${LOG_DIR}/RUN_NAME/<its hostname>.log (and .pid). Ctrl-C stops the streaming
# only: tpu_scripts/logs.sh RUN_NAME re-attaches, tpu_scripts/cleanup.sh stops the run.
# STREAM_WORKER=N streams worker N instead of 0 (process 0, which writes the reports, is on
# worker 0); STREAM_WORKER=none returns at once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "${here}/common.sh"

if [[ $# -lt 2 ]]; then
  usage_error "usage: $0 RUN_NAME {train|eval|score} [robust-prompt flags...]"
fi
run_name="$1"
shift
case "$1" in
  train | eval | score) ;;
  *) usage_error "unknown command '$1': expected train, eval or score" ;;
esac
if [[ ! "${run_name}" =~ ^[A-Za-z0-9._-]+$ ]]; then
  usage_error "RUN_NAME '${run_name}' may only hold letters, digits, '.', '_' and '-'"
fi

quoted_args="$(shell_quote "$@")"
log="${LOG_DIR}/${run_name}"
on_all_workers "set -e
  mkdir -p ${log}
  cd ${REMOTE_DIR}
  . ${VENV}/bin/activate
  nohup robust-prompt${quoted_args} > ${log}/\$(hostname).log 2>&1 < /dev/null &
  echo \$! > ${log}/\$(hostname).pid
  echo \"\$(hostname): started (pid \$!)\""

stream_worker="${STREAM_WORKER:-0}"
if [[ "${stream_worker}" == "none" ]]; then
  exit 0
fi
echo "streaming worker ${stream_worker} (Ctrl-C stops streaming, not the run)"
"${here}/logs.sh" "${run_name}" "${stream_worker}"
