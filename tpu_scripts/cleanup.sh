#!/usr/bin/env bash
# Stops leftover robust-prompt processes on every worker of a TPU VM pod and frees the TPU (a
# crashed run can keep /dev/accel* busy, and the next launch then fails with "TPU in use").
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/cleanup.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_scripts/common.sh
source "${here}/common.sh"

on_all_workers "pkill -f 'robust-prompt' || true
  sleep 2
  pkill -9 -f 'robust-prompt' || true
  if command -v lsof > /dev/null; then
    for pid in \$(sudo lsof -t /dev/accel* /dev/vfio/* 2> /dev/null | sort -u); do sudo kill -9 \"\${pid}\" || true; done
  fi
  sudo rm -f /tmp/libtpu_lockfile
  echo \"\$(hostname): clean\""
