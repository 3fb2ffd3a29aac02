#!/usr/bin/env bash
# N processes on one machine joined by jax.distributed (the multi-host code path without a cluster):
#
#   launch/multiprocess_local.sh 2 configs/digits_lt_dscl.py /tmp/digits_2proc
#
# Each process sees its own CPU devices; together they form one mesh over every device.
set -euo pipefail
num=$1 config=$2 workdir=$3
shift 3
port=${PORT:-12355}
pids=()
for ((i = 0; i < num; i++)); do
  JAX_COORDINATOR_ADDRESS=localhost:$port JAX_NUM_PROCESSES=$num JAX_PROCESS_ID=$i JAX_PLATFORMS=cpu \
    python3 -m dscl_jax.main --config "$config" --workdir "$workdir" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
