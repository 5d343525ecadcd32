#!/usr/bin/env bash
# Stops leftover robust-prompt processes on every worker of a TPU VM pod and frees the TPU (a
# crashed run can keep /dev/accel* busy, and the next launch then fails with "TPU in use").
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/cleanup.sh
#
# It stops the processes that launch.sh recorded in ${LOG_DIR}/*/<hostname>.pid, then any other
# `robust-prompt` process (the pattern is written '[r]obust-prompt' so that it never matches the
# remote shell that runs this very command), then whatever still holds the TPU device files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "${here}/common.sh"

on_all_workers "for f in ${LOG_DIR}/*/\$(hostname).pid; do
    [ -f \"\${f}\" ] || continue
    kill \"\$(cat \"\${f}\")\" 2> /dev/null || true
    rm -f \"\${f}\"
  done
  pkill -f '[r]obust-prompt' || true
  sleep 2
  pkill -9 -f '[r]obust-prompt' || true
  if command -v lsof > /dev/null; then
    for pid in \$(sudo lsof -t /dev/accel* /dev/vfio/* 2> /dev/null | sort -u); do sudo kill -9 \"\${pid}\" || true; done
  fi
  sudo rm -f /tmp/libtpu_lockfile
  echo \"\$(hostname): clean\""
