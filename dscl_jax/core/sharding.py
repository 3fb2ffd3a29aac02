"""The device mesh and the shardings every job uses.

One axis, "data": batches are split along it, parameters, optimiser state and the queue are replicated.
Under `jax.jit` the BatchNorm means and the loss reductions over the sharded batch become all-reduces,
so a step computes the same numbers on 1 device or 256.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def maybe_initialize_distributed() -> None:
  """Join a multi-process job when launched as one (TPU pods, multi-node GPU, or an explicit coordinator).

  On Cloud TPU and under SLURM / Open MPI `jax.distributed.initialize()` finds its peers itself; elsewhere
  set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (see launch/).
  """
  if jax.distributed.is_initialized():
    return
  coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if coordinator:
    jax.distributed.initialize(
      coordinator_address=coordinator,
      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
      process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
  elif any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")):
    if int(os.environ.get("SLURM_NTASKS", os.environ.get("OMPI_COMM_WORLD_SIZE", "2"))) > 1:
      jax.distributed.initialize()


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D mesh named "data" over `num_devices` devices (-1: all of them, across every process)."""
  devices = jax.devices()
  if num_devices == -1:
    num_devices = len(devices)
  if not 0 < num_devices <= len(devices):
    raise ValueError(f"mesh.num_devices {num_devices} must be -1 or in [1, {len(devices)}]")
  if num_devices != len(devices) and jax.process_count() > 1:
    raise ValueError("a multi-process job must use every device (mesh.num_devices=-1)")
  return Mesh(np.asarray(devices[:num_devices]), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data"."""
  return NamedSharding(mesh, P("data"))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch (this process's rows) -> global arrays sharded along "data"."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
