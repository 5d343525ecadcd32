#!/usr/bin/env bash
# Runs a robust-prompt command as N cooperating processes on THIS machine (CPU devices, collectives
# over gloo), the way a pod runs it: for debugging multi-host behaviour without a cluster.
#
#   tpu_scripts/local_multiprocess.sh 2 eval --model ... --output_dir out/x --mesh data=4,model=2
#
# Each process gets DEVICES_PER_PROCESS fake CPU devices (default 4), the coordinator is
# 127.0.0.1:PORT (default: a free port), and process i logs to ${LOG_DIR:-local_logs}/process_i.log;
# process 0's log is also streamed. Ctrl-C or any failing process stops all of them; TIMEOUT
# (seconds, default 3600) bounds the whole run. ROBUST_PROMPT (default: robust-prompt) is the
# program to start.
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES COMMAND [robust-prompt flags...]" >&2
  exit 2
fi
num_processes="$1"
shift
program="${ROBUST_PROMPT:-robust-prompt}"
devices="${DEVICES_PER_PROCESS:-4}"
log_dir="${LOG_DIR:-local_logs}"
timeout_s="${TIMEOUT:-3600}"
port="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
mkdir -p "${log_dir}"

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "${pid}" 2> /dev/null || true
  done
}
trap stop_all EXIT INT TERM

for ((i = 0; i < num_processes; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" JAX_PLATFORMS=cpu \
    timeout "${timeout_s}" "${program}" "$@" \
    --coordinator_address "127.0.0.1:${port}" --num_processes "${num_processes}" --process_id "${i}" \
    > "${log_dir}/process_${i}.log" 2>&1 &
  pids+=("$!")
done
echo "started ${num_processes} processes (coordinator 127.0.0.1:${port}); logs in ${log_dir}/"
tail -n +1 -F "${log_dir}/process_0.log" --pid "${pids[0]}" &
tail_pid=$!

# Poll rather than wait in order: a crashed process leaves the others blocked in a collective.
status=0
running=("${!pids[@]}")
while ((${#running[@]} > 0)); do
  still=()
  for i in "${running[@]}"; do
    if kill -0 "${pids[${i}]}" 2> /dev/null; then
      still+=("${i}")
    elif ! wait "${pids[${i}]}"; then
      echo "process ${i} failed: see ${log_dir}/process_${i}.log" >&2
      status=1
      stop_all
    fi
  done
  running=("${still[@]}")
  sleep 1
done
wait "${tail_pid}" 2> /dev/null || true
exit "${status}"
