#!/usr/bin/env bash
# Shared settings for the TPU VM pod scripts. Source it; override any value in the environment.
#
#   TPU_NAME   name of the TPU VM (pod slice)                       (required)
#   ZONE       its zone, e.g. us-central2-b                          (required)
#   PROJECT    Google Cloud project (default: gcloud's configured one)
#   REMOTE_DIR where the checkout lives on every worker              (default: ~/robust_prompt)
#   VENV       virtual environment on every worker                   (default: ~/robust_prompt_venv)
#   LOG_DIR    per-run log folders on every worker                   (default: ~/robust_prompt_logs)

set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the name of your TPU VM}"
: "${ZONE:?set ZONE to the zone of your TPU VM}"
PROJECT="${PROJECT:-}"
REMOTE_DIR="${REMOTE_DIR:-\$HOME/robust_prompt}"
VENV="${VENV:-\$HOME/robust_prompt_venv}"
LOG_DIR="${LOG_DIR:-\$HOME/robust_prompt_logs}"

gcloud_tpu() {
  local project_flag=()
  if [[ -n "${PROJECT}" ]]; then
    project_flag=(--project "${PROJECT}")
  fi
  gcloud compute tpus tpu-vm "$@" --zone "${ZONE}" "${project_flag[@]}"
}

# on_all_workers COMMAND: runs a shell command on every worker of the pod, in parallel.
on_all_workers() {
  gcloud_tpu ssh "${TPU_NAME}" --worker=all --command "$1"
}

# on_worker N COMMAND: runs a shell command on worker N only.
on_worker() {
  gcloud_tpu ssh "${TPU_NAME}" --worker="$1" --command "$2"
}

# shell_quote ARGS...: prints the arguments, each quoted once and preceded by a space, for a
# command line a worker's shell reads, so that gin bindings, paths and titles with spaces and
# quotes reach it intact.
shell_quote() {
  local arg quoted=""
  for arg in "$@"; do
    quoted+=" $(printf '%q' "${arg}")"
  done
  printf '%s' "${quoted}"
}

# usage_error MESSAGE: says what is wrong with the script's arguments and exits with status 2.
usage_error() {
  echo "$1" >&2
  exit 2
}

# check_worker WORKER: a usage error unless WORKER is a worker number or `all`.
check_worker() {
  if [[ ! "$1" =~ ^([0-9]+|all)$ ]]; then
    usage_error "WORKER must be a number or 'all', got '$1'"
  fi
}
