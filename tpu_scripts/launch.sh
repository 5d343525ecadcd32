#!/usr/bin/env bash
# Launches `robust-prompt train|eval ...` on every worker of a TPU VM pod at once and streams the
# log of worker 0. jax.distributed finds the pod's coordinator by itself (no flags needed).
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/launch.sh RUN_NAME train \
#     --gin_file=runs/train_soft_prompt.gin --gin_file=models/flan_t5_xl.gin ...
#
# Each worker writes ${LOG_DIR}/RUN_NAME/<its hostname>.log. Ctrl-C stops the streaming only; use
# tpu_scripts/cleanup.sh to stop the run itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_scripts/common.sh
source "${here}/common.sh"

if [[ $# -lt 2 ]]; then
  echo "usage: $0 RUN_NAME {train|eval|score} [robust-prompt flags...]" >&2
  exit 2
fi
run_name="$1"
shift
case "$1" in
  train | eval | score) ;;
  *)
    echo "unknown command '$1': expected train, eval or score" >&2
    exit 2
    ;;
esac

# Quote every argument once so that gin bindings with spaces and quotes reach the workers intact.
quoted_args=""
for arg in "$@"; do
  quoted_args+=" $(printf '%q' "${arg}")"
done

log="${LOG_DIR}/${run_name}"
on_all_workers "set -e
  mkdir -p ${log}
  cd ${REMOTE_DIR}
  . ${VENV}/bin/activate
  nohup robust-prompt${quoted_args} > ${log}/\$(hostname).log 2>&1 < /dev/null &
  echo \"\$(hostname): started (pid \$!)\""

echo "streaming worker 0 (Ctrl-C stops streaming, not the run)"
on_worker 0 "tail -n +1 -F ${log}/\$(hostname).log"
