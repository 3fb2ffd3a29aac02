#!/usr/bin/env bash
# Run one dscl_jax job on every host of a Cloud TPU VM slice (v4-32, v5e-64, ...).
#
#   launch/tpu_pod.sh <tpu-name> <zone> configs/imagenet_lt_dscl_pbsd.py gs://bucket/workdirs/imagenet_lt \
#       --config.data.root=/mnt/imagenet
#
# Every host runs the same command; `jax.distributed.initialize()` discovers the slice itself (see
# dscl_jax/core/sharding.py), each host reads its own rows of every global batch, and orbax writes the
# checkpoint to the shared --workdir (use a GCS bucket or a filesystem every host mounts).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 <tpu-name> <zone> <config.py> <workdir> [--config.overrides ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
root=$(cd "$(dirname "$0")/.." && pwd)
# Ship this checkout to every host (no repository URL assumed), then install and run.
gcloud compute tpus tpu-vm scp --recurse "$root" "$tpu":~/dscl_jax --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  cd ~/dscl_jax && python3 -m pip install -q -e . 'jax[tpu]'
  python3 -m dscl_jax.main --config $config --workdir $workdir $*
"
