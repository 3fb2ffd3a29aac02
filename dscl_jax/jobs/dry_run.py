"""`--config.dry_run=True`: size a pretraining job before booking the hardware.

Builds the configured mesh, compiles the pretrain step on abstract inputs (`jax.ShapeDtypeStruct`s of the
state and of a global batch; no data is read, no parameter initialised) and prints the parameter count,
the per-device memory XLA reserves for the step (arguments, outputs, temporaries), the FLOPs of one step
from the compiled program's cost analysis, and the largest global batch that fits
`dry_run_memory_gib` per device.

The largest batch comes from a second compile at half the batch (only with `dry_run_memory_gib` > 0):
the step's memory is affine in the batch (activations and their gradients grow with it; parameters,
optimizer state and queue do not), so the two points give the slope and the intercept. It is rounded
down to a batch the config validation accepts (a multiple of the devices and of the key BatchNorm group
that divides the queue).
"""

from __future__ import annotations

import math
import time

import jax
import ml_collections
import numpy as np

from data.registry import SHAPES
from dscl_jax.config import validation
from dscl_jax.core import build, optim, sharding
from dscl_jax.core.state import param_count
from dscl_jax.input import synthetic
from dscl_jax.runtime.metrics import log

GIB = 2**30


def compile_step(config: ml_collections.ConfigDict, method, mesh, num_classes: int, channels: int):
  """`method`'s pretrain step compiled for `mesh` on abstract inputs: (compiled, abstract state)."""
  schedule = optim.warmup_cosine_schedule(0.1, 1000, 10)  # values do not change the compiled program's size
  tx = optim.sgd(schedule, config.train.momentum, config.train.weight_decay)
  online, target = build.build_models(config, method, num_classes)
  counts = np.ones(num_classes)  # the prior's shape is what matters here
  replicated, batch_sharding = sharding.replicated(mesh), sharding.data_sharded(mesh)
  state = build.abstract_pretrain_state(config, method, online, tx, num_classes, channels, counts)
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
  batch = {
    name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
    for name, (shape, dtype) in synthetic.pretrain_batch_shapes(
      config, method.requirements.views, channels, pixels=True
    ).items()
  }
  start = time.perf_counter()
  lowered = build.jit_pretrain_step(config, method, online, target, tx, schedule, mesh).lower(state, batch)
  traced = time.perf_counter()
  compiled = lowered.compile()
  log(
    "dry_run",
    f"global batch {config.train.batch_size}: traced in {traced - start:.1f} s, compiled in "
    f"{time.perf_counter() - traced:.1f} s",
  )
  return compiled, state


def memory_bytes(compiled) -> dict[str, int]:
  """Per-device bytes of the compiled step: arguments, outputs, temporaries, the outputs that reuse donated
  arguments (alias), generated code, and their total (arguments + outputs - alias + temporaries)."""
  m = compiled.memory_analysis()
  figures = {
    "arguments": m.argument_size_in_bytes,
    "outputs": m.output_size_in_bytes,
    "temporaries": m.temp_size_in_bytes,
    "alias": m.alias_size_in_bytes,
    "generated_code": m.generated_code_size_in_bytes,
  }
  figures["total"] = figures["arguments"] + figures["outputs"] - figures["alias"] + figures["temporaries"]
  return figures


def step_flops(compiled) -> float:
  """FLOPs of one step of the compiled (per-device) program, from XLA's cost analysis."""
  return float(compiled.cost_analysis().get("flops", float("nan")))


def batch_multiple(config, num_devices: int) -> int:
  """Global batches must be a multiple of this: of the devices and of the key BatchNorm group."""
  return math.lcm(num_devices, config.model.get("key_bn_group_size", 0) or 1)


def largest_batch(
  batch: int, total: int, half_batch: int, half_total: int, budget_bytes: float, multiple: int
) -> tuple[int, float]:
  """From per-device totals at two global batches, the largest multiple of `multiple` whose affine
  estimate fits `budget_bytes`: (batch, bytes per sample of the global batch)."""
  per_sample = (total - half_total) / (batch - half_batch)
  fixed = total - per_sample * batch
  if per_sample <= 0:
    return -1, per_sample
  fits = math.floor((budget_bytes - fixed) / per_sample)
  return max(0, fits // multiple * multiple), per_sample


def accepted_batch(config, upper: int, multiple: int, num_devices: int, num_processes: int) -> int:
  """The largest global batch <= `upper`, a multiple of `multiple`, that `config_validation` accepts with
  the rest of `config` unchanged (e.g. it must divide `moco.queue_size`); 0 if there is none."""
  trial = ml_collections.ConfigDict(config.to_dict())
  for batch in range(upper // multiple * multiple, 0, -multiple):
    trial.train.batch_size = batch
    try:
      validation.validate(trial, num_devices, num_processes)
      return batch
    except validation.ConfigError:
      continue
  return 0


def dry_run(config: ml_collections.ConfigDict) -> dict:
  """Compiles the configured pretrain step on abstract inputs and prints (and returns) its figures."""
  start = time.perf_counter()
  setup = build.setup_job(config, read_data=False)
  mesh = setup.mesh
  if config.data.name not in SHAPES:
    raise ValueError(
      f"dry_run does not know the classes and channels of dataset {config.data.name!r}; add it to data.registry.SHAPES"
    )
  num_classes, channels = SHAPES[config.data.name]
  compiled, state = compile_step(config, setup.method, mesh, num_classes, channels)
  memory = memory_bytes(compiled)
  flops = step_flops(compiled)
  batch, devices, processes = config.train.batch_size, mesh.devices.size, jax.process_count()
  multiple = batch_multiple(config, devices)
  fit, per_sample = -1, float("nan")
  half = accepted_batch(config, batch // 2, multiple, devices, processes) if config.dry_run_memory_gib > 0 else 0
  if half > 0:
    smaller = ml_collections.ConfigDict(config.to_dict())
    smaller.train.batch_size = half
    half_memory = memory_bytes(compile_step(smaller, setup.method, mesh, num_classes, channels)[0])
    fit, per_sample = largest_batch(
      batch, memory["total"], half, half_memory["total"], config.dry_run_memory_gib * GIB, multiple
    )
    if fit > 0:  # the affine estimate, down to a batch the config accepts
      fit = accepted_batch(config, fit, multiple, devices, processes)
  result = {
    "method": config.method,
    "dataset": config.data.name,
    "model": f"ResNet-{config.model.depth}",
    "dtype": config.model.dtype,
    "global_batch": batch,
    "devices": devices,
    "processes": processes,
    "platform": jax.devices()[0].platform,
    "params": param_count(state.params),
    "state_bytes": int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))),
    "memory_per_device": memory,
    "flops_per_step_per_device": flops,
    "flops_per_step": flops * devices,
    "memory_budget_gib": config.dry_run_memory_gib,
    "largest_global_batch": fit,
    "bytes_per_sample": per_sample,
    "seconds": time.perf_counter() - start,
  }
  if jax.process_index() == 0:
    print(format_result(result), flush=True)
  return result


def _size(n: float) -> str:
  return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def format_result(r: dict) -> str:
  m = r["memory_per_device"]
  lines = [
    f"[dry_run] {r['method']} on {r['dataset']}, {r['model']} ({r['dtype']}), global batch {r['global_batch']} "
    f"on {r['devices']} {r['platform']} device(s) x {r['processes']} process(es)",
    f"[dry_run] parameters {r['params']:,} ({r['params'] / 1e6:.2f}M); whole train state {_size(r['state_bytes'])} "
    f"(online + target + optimizer + queue), replicated on every device",
    f"[dry_run] per-device memory of the step: arguments {_size(m['arguments'])}, outputs {_size(m['outputs'])} "
    f"(of which {_size(m['alias'])} reuse the donated state), temporaries {_size(m['temporaries'])}; "
    f"total {_size(m['total'])}",
    f"[dry_run] FLOPs per step: {r['flops_per_step_per_device'] / 1e9:.1f} GFLOP per device, "
    f"{r['flops_per_step'] / 1e12:.3f} TFLOP over the mesh",
  ]
  if r["largest_global_batch"] >= 0:
    lines.append(
      f"[dry_run] largest global batch within {r['memory_budget_gib']:g} GiB per device: "
      f"{r['largest_global_batch']} ({r['bytes_per_sample'] / 2**20:.1f} MiB per sample of the global "
      f"batch, estimated from a second compile at half the batch)"
    )
  elif r["memory_budget_gib"] > 0:
    lines.append("[dry_run] largest batch: not estimated (the batch cannot be halved on this mesh)")
  else:
    lines.append(
      "[dry_run] largest batch: pass --config.dry_run_memory_gib=<GiB per device> to estimate it (a second compile)"
    )
  lines.append(f"[dry_run] done in {r['seconds']:.1f} s; nothing was read or written")
  return "\n".join(lines)
