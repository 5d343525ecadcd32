#!/usr/bin/env bash
# Streams (or summarises) the logs of a run started with launch.sh.
#
#   tpu_scripts/logs.sh RUN_NAME        # follow worker 0's log (process 0: progress, reports)
#   tpu_scripts/logs.sh RUN_NAME 3      # follow worker 3's log
#   tpu_scripts/logs.sh RUN_NAME all    # the last lines of every worker's log, once
#
# Needs TPU_NAME and ZONE (see common.sh). Ctrl-C stops following; the run goes on.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "${here}/common.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
  usage_error "usage: $0 RUN_NAME [WORKER|all]"
fi
log="${LOG_DIR}/$1"
worker="${2:-0}"
check_worker "${worker}"
if [[ "${worker}" == "all" ]]; then
  on_all_workers "echo \"== \$(hostname)\"; tail -n ${TAIL_LINES:-20} ${log}/\$(hostname).log"
else
  on_worker "${worker}" "tail -n +1 -F ${log}/\$(hostname).log"
fi
