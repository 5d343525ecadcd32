#!/usr/bin/env bash
# Copies this checkout to every worker of a TPU VM pod and installs it in a virtual environment
# there (the pinned set from constraints.txt, with jax's TPU runtime).
#
#   TPU_NAME=my-pod ZONE=us-central2-b tpu_scripts/setup_pod.sh
#
# Requires: gcloud, authenticated, with the TPU VM already created. Safe to re-run (updates the code,
# keeps the environment).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh source-path=SCRIPTDIR
source "${here}/common.sh"
repo="$(cd "${here}/.." && pwd)"

archive="$(mktemp -t robust_prompt.XXXXXX.tar.gz)"
trap 'rm -f "${archive}"' EXIT
# Ship the tracked files only (no virtual environments, outputs or caches).
git -C "${repo}" ls-files -z | tar -C "${repo}" --null -T - -czf "${archive}"

echo "copying the checkout to every worker of ${TPU_NAME}"
gcloud_tpu scp "${archive}" "${TPU_NAME}:/tmp/robust_prompt.tar.gz" --worker=all

jax_version="$(grep -E '^jax==' "${repo}/constraints.txt" | cut -d= -f3)"
echo "installing (jax[tpu]==${jax_version}) on every worker"
on_all_workers "set -e
  mkdir -p ${REMOTE_DIR} && tar -xzf /tmp/robust_prompt.tar.gz -C ${REMOTE_DIR}
  [ -d ${VENV} ] || python3 -m venv ${VENV}
  . ${VENV}/bin/activate
  pip install -q --upgrade pip
  pip install -q -c ${REMOTE_DIR}/constraints.txt -e ${REMOTE_DIR}
  pip install -q 'jax[tpu]==${jax_version}'
  python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].platform)'"
echo "done: run tpu_scripts/launch.sh next"
