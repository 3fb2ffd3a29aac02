"""One command for a GPU host: our DSCL + PBSD step there beside PyTorch's, against the chip's measured
peak, with the host input pipeline and a CPU cross-check, in one JSON file and one markdown table.

  python benchmarks/accelerator_check.py              # -> benchmarks/results/accelerator_check.json
  python benchmarks/accelerator_check.py --smoke --output /tmp/check.json   # tiny shapes: ~1 min, 2 CPUs

Sections (progress lines "[accelerator_check] ..." go to stderr):
  torch          the PyTorch step (benchmarks/torch_reference_step.py, resnet50_dscl_pbsd) in a subprocess,
                 before JAX takes the GPU's memory: this Python when it imports torch, else /usr/bin/python3;
                 cuda when torch sees a GPU (NCHW and channels-last both), else cpu; float32 and bfloat16
                 (autocast) at each global batch. Skipped, saying why, when no Python here has torch.
  environment    jax.devices(), the versions of jax (and its CUDA plugin), flax, optax, orbax, numpy, torch ...
  peak           an [n, n] @ [n, n] product (8192; 256 with --smoke) in float32 and bfloat16: the TFLOP/s
                 the utilisations divide by. float32 at XLA's default precision, as the step runs it
                 (TF32 on GPUs that have it).
  step, bare     the ImageNet-scale DSCL + PBSD pretrain step (benchmarks/step.py's resnet50_dscl_pbsd:
                 ResNet-50, 224x224, K 65536, 5 crops of 64x64, synthetic uint8 batches) and its bare
                 backbone (step.py --bare: the same convolutions, nothing else), one device, global batch
                 64 and 128, float32 and bfloat16: compile seconds, median step seconds, images/s, FLOPs per
                 step (XLA's cost analysis), utilisation (FLOPs / step time / measured peak) and peak device
                 memory.
  loss_vs_cpu    one float32 step's loss on the accelerator and on jax.devices("cpu") from the same state
                 and batch, at the default precision and at "highest": the recipe's step at a size the host
                 CPU compiles and runs in seconds (ImageNet-style ResNet-18, 64x64, K 4096, 5 crops of
                 32x32, global batch 16). On a CPU-only machine the CPU against itself ("same_device").
  host_pipeline  the host input pipeline's images/s with a grain worker per host core, PIL path and
                 device-augmentation path (benchmarks/input_pipeline.py's measure_host_pipeline). Skipped,
                 saying why, without grain or that function.
A section that fails does not stop the others; the run then writes <output>.incomplete.json instead of
<output> and exits 1, naming it. Only torch and host_pipeline may be skipped, and only with a reason.
They run in the order torch, environment, peak, step, loss_vs_cpu, host_pipeline, bare. While it runs,
<output>.partial.json holds every section and case so far (rewritten after each), so a run killed from
outside still leaves its numbers; `--time-limit-s S` starts no case or section after S seconds, lists
those under "not_run", and makes the run incomplete rather than cut off mid-case.

Time on one H200 (2026-12-04, benchmarks/results/accelerator_check.md): the PyTorch section 185 s
(8 runs of about 23 s, mostly start-up and cuDNN's autotuning), our step section 256 s (4 compiles of 36
to 49 s), the loss check about 50 s up to its last compile; the rest not yet measured. The whole run
takes longer than the 8 minutes it was meant to: plan on a quarter of an hour (an estimate), or split
it over calls with --time-limit-s and --resume. On a GPU each case's FLOPs come from its program lowered
for the host CPU from the state's shapes (a GPU gives no cost analysis for a lowered program): 9 to 21 s
a case on 2 cores. --smoke takes about a minute on the 2-core development machine (46 s at load 3.4,
75 s at load 5; 4 min at load 6).

What an accelerator host without network needs beyond its jax[cuda], flax, optax, orbax, torch and
torchvision (which bring absl-py, etils, Pillow, protobuf, psutil and PyYAML): ml_collections for every
section, grain and its extras (array_record, cloudpickle, portpicker) for the host pipeline. On a networked
Linux machine, for the host's Python (3.12 on the H200 image this ran on):

  pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d wheels/ \
      ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 cloudpickle==3.1.3 portpicker==1.6.0

then copy wheels/ and this repository to the host and run there, from the repository root:

  pip install --no-deps --no-index --find-links wheels/ ml_collections grain array_record cloudpickle portpicker
  python benchmarks/accelerator_check.py

(pip installs only the ones missing; the versions are constraints.txt's.) No pip install of this
repository is needed: the script puts the repository on sys.path. dscl_jax.core.build imports the data
readers (tensorflow_datasets, grain) only when a job reads data, so the step sections need neither.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _path in (REPO, HERE):  # configs/, dscl_jax/, data/ and the sibling scripts, with or without pip install
  if _path not in sys.path:
    sys.path.insert(0, _path)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import step as step_bench  # noqa: E402  (benchmarks/step.py)
from jax.sharding import Mesh  # noqa: E402

from dscl_jax.config.schema import base_config  # noqa: E402
from dscl_jax.core import sharding  # noqa: E402
from dscl_jax.input import synthetic  # noqa: E402
from dscl_jax.methods import get_method  # noqa: E402

TORCH_STEP = os.path.join(HERE, "torch_reference_step.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's torch on the CPU development machine
DEFAULT_OUTPUT = os.path.join(HERE, "results", "accelerator_check.json")
SECTIONS = ("environment", "peak", "step", "bare", "torch", "host_pipeline", "loss_vs_cpu")  # JSON order
MAY_SKIP = ("torch", "host_pipeline")
HOST_CPU_PROGRAM = "the program lowered for the host CPU"  # case_flops: where a GPU case's FLOPs come from
_START = time.perf_counter()


def log(message: str) -> None:
  print(f"[accelerator_check] {time.perf_counter() - _START:6.1f} s  {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ what runs
def full_config(batch: int, dtype: str):
  """benchmarks/step.py's resnet50_dscl_pbsd at global batch `batch`, activations in `dtype`."""
  c = step_bench.resnet50_config(pbsd=True)
  c.train.batch_size = batch
  c.model.dtype = dtype
  return c


def smoke_config(batch: int, dtype: str):
  """torch_reference_step.py's smoke_dscl_pbsd: a CIFAR-style ResNet-8 on 16x16x3, K 256, 2 crops of 8x8,
  key BatchNorm over groups of 4."""
  c = base_config(dataset="cifar100_lt", image_size=16, channels=3, depth=8, style="cifar")
  c.pbsd.enabled = True
  c.pbsd.num_crops = 2
  c.pbsd.crop_size = 8
  c.moco.queue_size = 256
  c.model.key_bn_group_size = 4
  c.train.batch_size = batch
  c.model.dtype = dtype
  return c


def loss_check_config(batch: int, dtype: str):
  """The recipe's step (ImageNet-style ResNet, DSCL + PBSD, key BatchNorm groups) at a size that the host
  CPU compiles and runs in seconds rather than minutes: ResNet-18, 64x64, K 4096, 5 crops of 32x32."""
  c = base_config(dataset="imagenet_lt", image_size=64, channels=3, depth=18, style="imagenet")
  c.pbsd.enabled = True
  c.pbsd.crop_size = 32
  c.moco.queue_size = 4096
  c.model.key_bn_group_size = 8
  c.train.batch_size = batch
  c.model.dtype = dtype
  return c


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one run measures: `make_config(global batch, model.dtype)` at each of `batches` x `dtypes`."""

  make_config: Callable
  num_classes: int
  channels: int
  batches: tuple[int, ...]
  dtypes: tuple[str, ...]
  repeats: int  # timed steps; one more runs first and is dropped
  torch_case: str  # the case of torch_reference_step.py with make_config's shapes
  matmul_size: int
  loss_check_config: Callable  # (global batch, model.dtype) -> config of the accelerator-vs-CPU step
  loss_check_batch: int
  pipeline_images: int
  pipeline_batches: int
  torch_timeout_s: float
  torch_threads: int | None = None  # the PyTorch step's host threads; None: every host core
  pipeline_workers: int | None = None  # the host pipeline's grain workers; None: one per host core
  bare_dtypes: tuple[str, ...] | None = None  # None: `dtypes`

  def dtypes_of(self, bare: bool) -> tuple[str, ...]:
    return self.bare_dtypes or self.dtypes if bare else self.dtypes


FULL = Plan(
  make_config=full_config,
  num_classes=1000,
  channels=3,
  batches=(64, 128),
  dtypes=("float32", "bfloat16"),
  repeats=5,
  torch_case="resnet50_dscl_pbsd",
  matmul_size=8192,
  loss_check_config=loss_check_config,
  loss_check_batch=16,
  pipeline_images=512,
  pipeline_batches=16,
  torch_timeout_s=300,
)
# One torch thread and one grain worker: on a small shared CPU more of them wait for each other (2 torch
# threads ran a 0.05 s step in 4 s here), and the smoke test is about the code paths, not the speed. The
# bare step only in float32: its bfloat16 compile (15 s on the loaded 2-core machine) runs no code that the
# step's bfloat16 case does not.
SMOKE = dataclasses.replace(
  FULL,
  make_config=smoke_config,
  num_classes=10,
  batches=(8,),
  repeats=1,
  torch_case="smoke_dscl_pbsd",
  matmul_size=256,
  loss_check_config=smoke_config,  # the step section's float32 program: compiled once with a cache
  loss_check_batch=8,
  pipeline_images=16,
  pipeline_batches=2,
  torch_timeout_s=120,
  torch_threads=1,
  pipeline_workers=1,
  bare_dtypes=("float32",),
)


def device_mesh(device) -> Mesh:
  """The 1-device "data" mesh of sharding.make_mesh, on `device` rather than the default backend's first."""
  return Mesh(np.asarray([device]), ("data",))


def synthetic_batch(config, num_classes: int, channels: int, mesh: Mesh, seed: int = 0) -> dict:
  """The step's global batch of uint8 views (dscl_jax.input.synthetic), placed on `mesh`."""
  views = get_method(config).requirements.views
  host = synthetic.pretrain_batch(config, views, channels, num_classes, np.random.default_rng(seed), pixels=True)
  return sharding.to_global(host, mesh)


# ---------------------------------------------------------------------------------------------- measuring
def peak_bytes(device) -> int | None:
  """The device's peak bytes in use since the process started; None where memory_stats() has none (CPU)."""
  stats = device.memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure_peak(n: int, dtype: str, calls: int = 20, repeats: int = 3) -> dict:
  """TFLOP/s of [n, n] @ [n, n] in `dtype` (2 n^3 FLOPs) on the default device: the best of `repeats`
  runs of `calls` back-to-back products, so that dispatch overlaps the work."""
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a, b = jax.random.normal(ka, (n, n), dtype), jax.random.normal(kb, (n, n), dtype)
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  compiled(a, b).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = compiled(a, b)
    out.block_until_ready()
    best = min(best, time.perf_counter() - start)
  return {"n": n, "seconds_per_product": best / calls, "tflops": 2 * n**3 * calls / best / 1e12}


def peak_section(plan: Plan) -> dict:
  """{dtype: measure_peak(...)} for each of the plan's dtypes on the default device."""
  device = jax.devices()[0]
  result = {"device": f"{device.platform} {device.device_kind}", "precision": "XLA default (TF32 where the GPU has it)"}
  for dtype in plan.dtypes:
    result[dtype] = measure_peak(plan.matmul_size, dtype)
    log(f"peak {dtype} {plan.matmul_size}^3: {result[dtype]['tflops']:.2f} TFLOP/s")
  return result


def measure_case(plan: Plan, batch_size: int, dtype: str, bare: bool, peak: dict) -> dict:
  """Compile, run 1 + `plan.repeats` steps (the first dropped) and measure one (batch, dtype) case."""
  mesh = sharding.make_mesh(1)
  device = mesh.devices.flat[0]
  config = plan.make_config(batch_size, dtype)
  state, step = step_bench.build_step(config, plan.num_classes, plan.channels, mesh, bare)
  batch = synthetic_batch(config, plan.num_classes, plan.channels, mesh)
  peak_before = peak_bytes(device)
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  lower_seconds = time.perf_counter() - start
  compiled, compile_seconds, times, state, metrics = step_bench.compile_and_time(
    step, state, batch, plan.repeats, lowered
  )
  median = statistics.median(times)
  memory = compiled.memory_analysis()
  result = {
    "batch": batch_size,
    "dtype": dtype,
    "compile_s": lower_seconds + compile_seconds,
    "median_step_s": median,
    "step_times_s": times,
    "images_per_s": batch_size / median,
    "compiled_flops_per_step": step_bench.compiled_flops(compiled),
    "loss": float(metrics["loss"]),
    "xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
    "xla_argument_bytes": getattr(memory, "argument_size_in_bytes", None),
  }
  flops, source = step_bench.lowered_flops(lowered), f"the lowered program on {device.platform}"
  if not flops:  # a GPU (jax 0.11): count the same program lowered for the host CPU
    flops, source = case_flops(plan, batch_size, dtype, bare), HOST_CPU_PROGRAM
  result |= flops_fields(flops, median, peak.get(dtype, {}).get("tflops"), source)
  # JAX cannot reset the peak counter: the reading after this case is this case's own peak only if it rose.
  peak_after = peak_bytes(device)
  if peak_after is None:
    result["peak_memory_bytes"] = None
    result["peak_memory_note"] = f"memory_stats() has no peak_bytes_in_use on {device.platform}"
  elif peak_before is None or peak_after > peak_before:
    result["peak_memory_bytes"] = peak_after
  else:
    result["peak_memory_bytes"] = None
    result["peak_memory_at_most_bytes"] = peak_after
    result["peak_memory_note"] = "not above an earlier case's peak, and JAX cannot reset the counter"
  log(
    f"{'bare' if bare else 'step'} batch {batch_size} {dtype}: compile {compile_seconds:.1f} s, "
    f"{median:.4f} s/step, {result['images_per_s']:.1f} images/s"
  )
  return result


def flops_fields(flops: float | None, median_step_s: float, peak_tflops: float | None, source: str) -> dict:
  """A case's FLOPs by XLA's cost analysis of `source` (a lowered program), TFLOP/s and utilisation."""
  if not flops:
    return {"flops_per_step": None, "tflops": None, "utilisation": None, "flops_note": f"no cost analysis of {source}"}
  return {
    "flops_per_step": flops,
    "flops_source": f"XLA's cost analysis of {source}",
    "tflops": flops / median_step_s / 1e12,
    "utilisation": flops / median_step_s / (peak_tflops * 1e12) if peak_tflops else None,
  }


def case_flops(plan: Plan, batch_size: int, dtype: str, bare: bool) -> float | None:
  """The FLOPs of one (batch, dtype) case's program as lowered for the host CPU from the state's shapes
  alone: nothing is initialised, compiled or run (9 to 21 s for a ResNet-50 case on the 2-core machine).
  The count of a lowered program is the same on any backend (within 3% of the compiled CPU program's on
  the smoke step), but a GPU gives none for a lowered program and, for a compiled one, counts the
  convolutions it hands to cuDNN as zero (58 GFLOP for the step at batch 64 on an H200, against 2626)."""
  mesh = device_mesh(jax.devices("cpu")[0])
  config = plan.make_config(batch_size, dtype)
  state, step = step_bench.build_step(config, plan.num_classes, plan.channels, mesh, bare, abstract=True)
  return step_bench.lowered_flops(step.lower(state, synthetic_batch(config, plan.num_classes, plan.channels, mesh)))


def fill_flops(sections: dict, plan: Plan, progress: "Progress | None" = None) -> list[str]:
  """Gives every step and bare case without FLOPs those of its program lowered on the host CPU (case_flops),
  with TFLOP/s and utilisation against `sections`' peak; saves after each with `progress`; returns the
  cases filled ("step 64 bfloat16", ...)."""
  peak = sections.get("peak", {})
  filled = []
  for name in ("step", "bare"):
    for case in sections.get(name, {}).get("cases", []):
      if case.get("flops_per_step") or (progress and progress.late()):
        continue
      flops = case_flops(plan, case["batch"], case["dtype"], name == "bare")
      case.pop("flops_note", None)
      case |= flops_fields(flops, case["median_step_s"], peak.get(case["dtype"], {}).get("tflops"), HOST_CPU_PROGRAM)
      filled.append(f"{name} {case['batch']} {case['dtype']}")
      log(f"FLOPs of {filled[-1]}: {flops / 1e9:.1f} GFLOP (lowered for the host CPU)")
      if progress:
        progress.save()
  return filled


def cases_section(
  plan: Plan, bare: bool, peak: dict, progress: "Progress | None" = None, earlier: tuple[dict, ...] = ()
) -> dict:
  """Every (batch, dtype) case of the step (or of its bare backbone), each from a fresh state. With
  `progress`, the section so far is saved after each case, and a case not started by its time limit is
  listed under "not_run" instead. A case in `earlier` (an earlier run's, --resume) is kept, not run again."""
  what = "the same convolutions only (step.py --bare)" if bare else "the DSCL + PBSD pretrain step"
  shapes = describe(plan.make_config(plan.batches[0], "float32"))
  section = {"what": what, "shapes": shapes, "devices": 1, "cases": []}
  kept = {(c["batch"], c["dtype"]): c for c in earlier}
  for batch_size in plan.batches:  # smaller first, bfloat16 first: each peak-memory reading more likely its own
    for dtype in sorted(plan.dtypes_of(bare), key=lambda d: d != "bfloat16"):
      late = progress.late() if progress else None
      if (batch_size, dtype) in kept:
        case = dict(kept[batch_size, dtype], from_earlier_run=True)
        if "compiled_flops_per_step" not in case:  # a run from before the FLOPs of the lowered program
          case["compiled_flops_per_step"] = case.pop("flops_per_step", None)
          case |= {"flops_per_step": None, "tflops": None, "utilisation": None}
        section["cases"].append(case)
        log(f"{'bare' if bare else 'step'} batch {batch_size} {dtype}: kept from the earlier run")
      elif late:
        section.setdefault("not_run", []).append({"batch": batch_size, "dtype": dtype, "why": late})
      else:
        section["cases"].append(measure_case(plan, batch_size, dtype, bare, peak))
        gc.collect()  # the case's state and batch go before the next one's
      if progress:
        progress.save({"bare" if bare else "step": section})
  return section


def describe(config) -> str:
  """The shapes of a pretrain config, e.g. "ResNet-50 (imagenet), 224x224, K 65536, 5 crops of 64x64"."""
  s, crop = config.augment.image_size, config.pbsd.crop_size
  crops = f", {config.pbsd.num_crops} crops of {crop}x{crop}" if config.pbsd.enabled else ""
  return f"ResNet-{config.model.depth} ({config.model.style}), {s}x{s}, K {config.moco.queue_size}{crops}"


def loss_vs_cpu_section(plan: Plan, progress: "Progress | None" = None) -> dict:
  """One float32 step from the same state (same seed) and batch on the default device and on the host
  CPU: the loss it reports (computed before its update) on each. With `progress`, the two losses are
  saved (marked "incomplete") before the highest-precision step compiles."""
  config = plan.loss_check_config(plan.loss_check_batch, "float32")
  accelerator = jax.devices()[0]
  try:
    cpu = jax.devices("cpu")[0]
  except RuntimeError as error:
    raise RuntimeError(f"no CPU backend ({error}): unset JAX_PLATFORMS or set it to e.g. 'cuda,cpu'") from None

  def one_step(device, precision=None) -> float:
    mesh = device_mesh(device)
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
      state, step = step_bench.build_step(config, plan.num_classes, plan.channels, mesh)
      _, metrics = step(state, synthetic_batch(config, plan.num_classes, plan.channels, mesh))
    return float(metrics["loss"])

  loss_cpu = one_step(cpu)
  log(f"loss on the CPU: {loss_cpu:.6f}")
  loss_accelerator = one_step(accelerator)
  log(f"loss on {accelerator.platform}: {loss_accelerator:.6f}")
  relative = lambda loss: abs(loss - loss_cpu) / abs(loss_cpu)
  result = {
    "accelerator": f"{accelerator.platform} {accelerator.device_kind} {accelerator.id}",
    "cpu": f"{cpu.platform} {cpu.device_kind} {cpu.id}",
    "same_device": accelerator == cpu,
    "shapes": describe(config),
    "batch": plan.loss_check_batch,
    "loss_accelerator": loss_accelerator,
    "loss_cpu": loss_cpu,
    "relative_difference": relative(loss_accelerator),
  }
  if result["same_device"]:  # the CPU's float32 is full float32 at any precision setting
    return result | {"note": "no accelerator: the CPU against itself"}
  if progress:
    progress.save({"loss_vs_cpu": result | {"incomplete": "the highest-precision step has not run yet"}})
  loss_highest = one_step(accelerator, "highest")
  log(f"loss on {accelerator.platform} at the highest precision: {loss_highest:.6f}")
  return result | {
    "loss_accelerator_highest_precision": loss_highest,
    "relative_difference_highest_precision": relative(loss_highest),
    "note": "float32 at XLA's default precision may use TF32 on a GPU; 'highest' shows what is left without it",
  }


# ---------------------------------------------------------------------------------------------- PyTorch
def find_torch_python() -> tuple[str | None, dict | str]:
  """(the Python that runs the PyTorch step, what it reports): this one when it imports torch and
  torchvision (the accelerator image), else /usr/bin/python3 (Debian's torch on the CPU machine);
  (None, why) when neither does."""
  probe = (
    "import json, torch, torchvision; cuda = torch.cuda.is_available(); print(json.dumps({'torch': "
    "torch.__version__, 'torchvision': torchvision.__version__, 'cuda': cuda, "
    "'device_name': torch.cuda.get_device_name(0) if cuda else 'cpu'}))"
  )
  reasons = []
  for python in dict.fromkeys((sys.executable, SYSTEM_PYTHON)):
    if not os.path.exists(python):
      reasons.append(f"{python}: not found")
      continue
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
      return python, json.loads(done.stdout.strip().splitlines()[-1])
    reasons.append(f"{python}: {(done.stderr.strip().splitlines() or ['exit %d' % done.returncode])[-1]}")
  return None, "no Python here imports torch and torchvision: " + "; ".join(reasons)


def torch_section(plan: Plan, python: str | None, probe: dict | str) -> dict:
  """torch_reference_step.py at each (batch, dtype, layout), one subprocess each; the first failure makes
  the section a skip naming it (with the runs before it)."""
  if python is None:
    return {"skipped": probe}
  device = "cuda" if probe["cuda"] else "cpu"
  layouts = (False, True) if device == "cuda" else (False,)  # channels-last matters to cuDNN, not here
  result = {"python": python, "device": device, "device_name": probe["device_name"], "cases": []}
  if device == "cuda":  # PyTorch's defaults, against XLA's TF32 for both (the peak section)
    result["precision"] = "float32: cuDNN convolutions in TF32, matmuls in float32; bfloat16: autocast"
  for batch_size in plan.batches:
    for dtype in plan.dtypes:
      for channels_last in layouts:
        with tempfile.TemporaryDirectory() as tmp:
          out = os.path.join(tmp, "torch.json")
          command = [python, TORCH_STEP, "--case", plan.torch_case, "--batch", str(batch_size)]
          threads = plan.torch_threads or os.cpu_count()
          command += ["--repeats", str(plan.repeats), "--threads", str(threads), "--device", device]
          command += ["--dtype", dtype, "--out", out] + ["--channels-last"] * channels_last
          what = f"{plan.torch_case} batch {batch_size} {dtype} {'NHWC' if channels_last else 'NCHW'} on {device}"
          try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=plan.torch_timeout_s)
          except subprocess.TimeoutExpired:
            return dict(result, skipped=f"{what}: no result within {plan.torch_timeout_s:.0f} s")
          if done.returncode:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return dict(result, skipped=f"{what}: exit {done.returncode}: {tail}")
          with open(out) as f:
            case = json.load(f)
        keep = ("batch", "dtype", "channels_last", "median_step_s", "images_per_s", "loss", "peak_memory_bytes")
        result["cases"].append({k: case.get(k) for k in keep} | {"step_times_s": case["step_times_s"]})
        log(f"PyTorch {what}: {case['median_step_s']:.4f} s/step, {case['images_per_s']:.1f} images/s")
  return result


def ours_over_torch(step: dict, torch: dict) -> list[dict]:
  """Per (batch, dtype): our step's images/s over PyTorch's best layout's."""
  rows = []
  for ours in step.get("cases", []):
    theirs = [c for c in torch.get("cases", []) if (c["batch"], c["dtype"]) == (ours["batch"], ours["dtype"])]
    if theirs:
      best = max(theirs, key=lambda c: c["images_per_s"])
      rows.append(
        {
          "batch": ours["batch"],
          "dtype": ours["dtype"],
          "ours_images_per_s": ours["images_per_s"],
          "pytorch_images_per_s": best["images_per_s"],
          "pytorch_layout": "NHWC" if best["channels_last"] else "NCHW",
          "ours_over_pytorch": ours["images_per_s"] / best["images_per_s"],
        }
      )
  return rows


# ----------------------------------------------------------------------------------- host input pipeline
def host_pipeline_section(plan: Plan) -> dict:
  """benchmarks/input_pipeline.py's `measure_host_pipeline(num_workers, device_augment, num_images,
  batches) -> dict` (with at least "images_per_s") with a grain worker per host core (`plan.pipeline_workers`),
  PIL path and device-augmentation path. Skipped, saying why, when grain / ml_collections or the function
  are missing."""
  try:
    import grain  # noqa: F401
    import ml_collections  # noqa: F401
  except ImportError as error:
    return {"skipped": f"the host pipeline needs grain and ml_collections (see this file's docstring): {error}"}
  try:
    import input_pipeline
  except ImportError as error:
    return {"skipped": f"benchmarks/input_pipeline.py does not import here: {error}"}
  measure = getattr(input_pipeline, "measure_host_pipeline", None)
  if measure is None:
    return {
      "skipped": "benchmarks/input_pipeline.py has no measure_host_pipeline(num_workers, device_augment, "
      "num_images, batches) yet"
    }
  workers = plan.pipeline_workers or os.cpu_count()
  result = {"num_workers": workers}
  for name, device_augment in (("pil", False), ("device_augment", True)):
    result[name] = measure(
      num_workers=workers, device_augment=device_augment, num_images=plan.pipeline_images, batches=plan.pipeline_batches
    )
    log(f"host pipeline, {name}: {result[name].get('images_per_s', float('nan')):.1f} images/s")
  return result


# ------------------------------------------------------------------------------------------------- report
JAX_PACKAGES = (
  *("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "chex"),
  *("numpy", "ml_collections", "grain"),
)


def versions(torch_probe: dict | str) -> dict:
  def version(name):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return None

  found = {name: version(name) for name in JAX_PACKAGES}
  found["python"] = platform.python_version()
  torch = torch_probe if isinstance(torch_probe, dict) else {}
  found["torch"], found["torchvision"] = torch.get("torch"), torch.get("torchvision")
  return found


def environment_section(torch_python: str | None, torch_probe: dict | str) -> dict:
  devices = jax.devices()
  return {
    "devices": [{"id": d.id, "platform": d.platform, "device_kind": d.device_kind} for d in devices],
    "device_count": len(devices),
    "default_backend": jax.default_backend(),
    "host_cpus": os.cpu_count(),
    "host": platform.platform(),
    "versions": versions(torch_probe),
    "torch_python": torch_python,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "jax_platforms": os.environ.get("JAX_PLATFORMS", ""),
  }


def problems(sections: dict, plan: Plan) -> list[str]:
  """What keeps `sections` from being a full result: a missing or failed section, a skip where none is
  allowed or without a reason; in a section without those, a (batch, dtype) case without a positive
  images/s and a finite loss, a dtype without a peak, a loss check without finite losses."""
  found = []
  for name in SECTIONS:
    section = sections.get(name)
    if section is None:
      found.append(f"{name}: missing")
    elif "error" in section:
      found.append(f"{name}: failed: {section['error'].strip().splitlines()[-1]}")
    elif "not_run" in section and "cases" not in section:
      found.append(f"{name}: not run ({section['not_run']})")
    elif "incomplete" in section:
      found.append(f"{name}: incomplete ({section['incomplete']})")
    elif "skipped" in section and (name not in MAY_SKIP or not str(section["skipped"]).strip()):
      found.append(f"{name}: skipped ({section['skipped']!r}); only {' and '.join(MAY_SKIP)} may be, with a reason")
  reported = {line.split(":")[0] for line in found}
  ran = lambda name: name not in reported and "skipped" not in sections[name]
  for name in ("step", "bare"):
    wanted = {(b, d) for b in plan.batches for d in plan.dtypes_of(name == "bare")}
    cases = sections[name].get("cases", []) if ran(name) else []
    good = {(c["batch"], c["dtype"]) for c in cases if c["images_per_s"] > 0 and math.isfinite(c["loss"])}
    if ran(name) and good != wanted:
      found.append(f"{name}: cases with numbers {sorted(good)}, wanted {sorted(wanted)}")
  if ran("peak") and not all(sections["peak"].get(d, {}).get("tflops", 0) > 0 for d in plan.dtypes):
    found.append(f"peak: no TFLOP/s for every dtype of {plan.dtypes}")
  losses = (
    [sections["loss_vs_cpu"].get(k, math.nan) for k in ("loss_accelerator", "loss_cpu")] if ran("loss_vs_cpu") else []
  )
  if not all(math.isfinite(loss) for loss in losses):
    found.append("loss_vs_cpu: a loss is not finite")
  return found


def markdown(result: dict) -> str:
  """The run's table (a partial run's too: a section it did not reach reads as not run)."""
  s = {name: result["sections"].get(name, {"not_run": "not reached"}) for name in SECTIONS}
  env = s["environment"]
  kinds = sorted({f"{d['device_kind']} ({d['platform']})" for d in env.get("devices", [])})
  v = env.get("versions", {})
  lines = [
    f"## accelerator check{' (smoke)' if result['smoke'] else ''}: {', '.join(kinds)} x{env.get('device_count')}",
    f"jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, torch {v.get('torch')}, "
    f"torchvision {v.get('torchvision')}; {result['total_s']:.0f} s in all"
    + (" (a partial run: stopped before its end)" if result.get("partial") else ""),
    "",
  ]
  peak = s["peak"]
  fmt = lambda x, spec: "-" if x is None else format(x, spec)
  if "error" not in peak:
    lines.append(
      "peak: " + ", ".join(f"{d} {v['n']}^3 {v['tflops']:.2f} TFLOP/s" for d, v in peak.items() if isinstance(v, dict))
    )
  lines += [
    "",
    "| side | dtype | batch | layout | compile s | step s | images/s | GFLOP/step | utilisation | peak GiB |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for side, name in (("ours", "step"), ("ours, bare", "bare")):
    for c in s[name].get("cases", []):
      flops = c["flops_per_step"] / 1e9 if c["flops_per_step"] else None
      memory = c["peak_memory_bytes"] / 2**30 if c["peak_memory_bytes"] else None
      lines.append(
        f"| {side} | {c['dtype']} | {c['batch']} | NHWC | {c['compile_s']:.1f} | {c['median_step_s']:.4f} | "
        f"{c['images_per_s']:.1f} | {fmt(flops, '.1f')} | {fmt(c['utilisation'], '.1%')} | {fmt(memory, '.1f')} |"
      )
  for c in s["torch"].get("cases", []):
    memory = c["peak_memory_bytes"] / 2**30 if c["peak_memory_bytes"] else None
    lines.append(
      f"| PyTorch | {c['dtype']} | {c['batch']} | {'NHWC' if c['channels_last'] else 'NCHW'} | - | "
      f"{c['median_step_s']:.4f} | {c['images_per_s']:.1f} | - | - | {fmt(memory, '.1f')} |"
    )
  if "skipped" in s["torch"]:
    lines.append(f"\nPyTorch: skipped: {s['torch']['skipped']}")
  rows = s["torch"].get("ours_over_pytorch", [])
  if rows:
    lines += [
      "",
      "| dtype | batch | ours images/s | PyTorch images/s (layout) | ours / PyTorch |",
      "|---|---|---|---|---|",
    ]
    for r in rows:
      lines.append(
        f"| {r['dtype']} | {r['batch']} | {r['ours_images_per_s']:.1f} | {r['pytorch_images_per_s']:.1f} "
        f"({r['pytorch_layout']}) | {r['ours_over_pytorch']:.2f} |"
      )
  check = s["loss_vs_cpu"]
  if "loss_cpu" in check:
    lines.append(
      f"\nloss of one float32 step, batch {check['batch']}: {check['accelerator']} {check['loss_accelerator']:.6f}, "
      f"{check['cpu']} {check['loss_cpu']:.6f}, relative difference {check['relative_difference']:.2e}"
      + (" (same device)" if check["same_device"] else "")
      + (
        f" (highest precision {check['relative_difference_highest_precision']:.2e})"
        if "relative_difference_highest_precision" in check
        else ""
      )
    )
  pipe = s["host_pipeline"]
  if "skipped" in pipe:
    lines.append(f"host pipeline: skipped: {pipe['skipped']}")
  elif "pil" in pipe:
    lines.append(
      f"host pipeline, grain workers {pipe['num_workers']}: PIL {pipe['pil'].get('images_per_s', float('nan')):.1f} "
      f"images/s, device augmentation {pipe['device_augment'].get('images_per_s', float('nan')):.1f} images/s"
    )
  resumed = result.get("resumed_from")
  if resumed:
    machine = ", ".join(sorted({d["device_kind"] for d in (resumed["environment"] or {}).get("devices", [])}))
    lines.append(f"kept from {resumed['file']} (its machine: {machine or '?'}): {', '.join(resumed['kept'])}")
  for name in SECTIONS:
    not_run = s[name].get("not_run")
    if not_run:
      lines.append(f"{name}: not run: {not_run}")
  return "\n".join(lines)


def run_section(name: str, fn, *args) -> dict:
  """`fn(*args)` with its seconds; an exception becomes {"error": traceback}, so that a failing section
  keeps neither the others from running nor their numbers from being written (the run still fails)."""
  log(f"{name} ...")
  start = time.perf_counter()
  try:
    result = fn(*args)
  except Exception:  # noqa: BLE001  (recorded, reported, and the run exits 1)
    result = {"error": traceback.format_exc()}
    log(f"{name} FAILED: {result['error'].strip().splitlines()[-1]}")
  result["seconds"] = time.perf_counter() - start
  return result


@dataclasses.dataclass
class Progress:
  """Where a run stands. The sections so far go to `partial_path` after every section and every case, so a
  run stopped from outside (a lease's time limit, a kill) still leaves what it measured; no case or section
  starts after `deadline` (time.perf_counter() seconds), and the run then says which did not."""

  partial_path: str
  deadline: float = math.inf
  smoke: bool = False
  sections: dict = dataclasses.field(default_factory=dict)

  def late(self) -> str | None:
    """Why nothing more may start, or None while it may."""
    if time.perf_counter() <= self.deadline:
      return None
    return f"not started: past the time limit ({self.deadline - _START:.0f} s after the start)"

  def save(self, update: dict | None = None) -> None:
    self.sections.update(update or {})
    with open(self.partial_path + ".tmp", "w") as f:  # then renamed: a kill mid-write leaves the last whole one
      now = time.perf_counter() - _START
      json.dump({"partial": True, "smoke": self.smoke, "total_s": now, "sections": self.sections}, f, indent=2)
    os.replace(self.partial_path + ".tmp", self.partial_path)


def load_earlier(path: str, smoke: bool) -> dict:
  """The sections of an earlier run (--resume) worth keeping: those with numbers (no "error", "not_run",
  "skipped" or "incomplete"; for step and bare, their cases with numbers, which cases_section keeps), and
  its environment, for the record. Refuses a run of the other plan (--smoke or not)."""
  with open(path) as f:
    run = json.load(f)
  earlier_smoke = run.get("smoke")
  if earlier_smoke is None:
    raise SystemExit(f"--resume {path}: not a run of this script (no 'smoke' field)")
  if earlier_smoke != smoke:
    raise SystemExit(f"--resume {path}: a {'--smoke' if earlier_smoke else 'full'} run; this one is not")
  kept = {}
  for name, section in run["sections"].items():
    if name in ("step", "bare"):
      good = [c for c in section.get("cases", []) if c.get("images_per_s", 0) > 0 and math.isfinite(c["loss"])]
      kept[name] = {"cases": good}
    elif not {"error", "not_run", "skipped", "incomplete"} & set(section):
      kept[name] = {k: v for k, v in section.items() if k != "from_earlier_run"}
  return kept


def fill_flops_of_file(path: str) -> int:
  """--fill-flops: fill_flops on a run's file (final, incomplete or partial), rewritten in place."""
  with open(path) as f:
    result = json.load(f)
  filled = fill_flops(result["sections"], SMOKE if result["smoke"] else FULL)
  if filled:
    result["flops_filled_later"] = {"cases": filled, "host": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    with open(path + ".tmp", "w") as f:
      json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
  print(markdown(result), flush=True)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the JSON file to write")
  parser.add_argument("--smoke", action="store_true", help="the same code paths at tiny shapes (~1 min on a CPU)")
  parser.add_argument(
    "--time-limit-s",
    type=float,
    default=math.inf,
    help="start no case or section after this many seconds (a lease's limit); the run is then incomplete",
  )
  parser.add_argument(
    "--resume",
    metavar="JSON",
    help="an earlier run's .partial.json or .incomplete.json (same --smoke or not): keep its sections and "
    "cases that have numbers, run the rest",
  )
  parser.add_argument(
    "--fill-flops",
    metavar="JSON",
    help="measure nothing: give the cases of this run's file that lack FLOPs those of their programs lowered "
    "on this host's CPU (as a run does at its end), rewrite it and print its table",
  )
  args = parser.parse_args(argv)
  if args.fill_flops:
    return fill_flops_of_file(args.fill_flops)
  plan = SMOKE if args.smoke else FULL
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  progress = Progress(os.path.splitext(args.output)[0] + ".partial.json", _START + args.time_limit_s, args.smoke)
  sections = progress.sections
  earlier = load_earlier(args.resume, args.smoke) if args.resume else {}

  def section(name: str, fn, *fn_args) -> dict:
    late = progress.late()
    if name in earlier and name not in ("step", "bare", "environment"):
      progress.save({name: dict(earlier[name], from_earlier_run=True)})
      log(f"{name}: kept from {args.resume}")
    else:
      progress.save({name: {"not_run": late} if late else run_section(name, fn, *fn_args)})
    return sections[name]

  # PyTorch first: a subprocess that has the GPU to itself, before JAX reserves most of its memory. Then
  # in order of what the check is for: the step against PyTorch, the loss against the CPU, the host
  # pipeline, and the bare backbone last (the least needed, should a time limit cut the run short).
  log("looking for a Python with torch ...")
  torch_python, torch_probe = find_torch_python()
  section("torch", torch_section, plan, torch_python, torch_probe)
  section("environment", environment_section, torch_python, torch_probe)
  peak = section("peak", peak_section, plan)
  peak = peak if "error" not in peak and "not_run" not in peak else {}
  earlier_cases = lambda name: tuple(earlier.get(name, {}).get("cases", ()))
  section("step", cases_section, plan, False, peak, progress, earlier_cases("step"))
  sections["torch"]["ours_over_pytorch"] = ours_over_torch(sections["step"], sections["torch"])
  section("loss_vs_cpu", loss_vs_cpu_section, plan, progress)
  section("host_pipeline", host_pipeline_section, plan)
  section("bare", cases_section, plan, True, peak, progress, earlier_cases("bare"))
  fill_flops(sections, plan, progress)  # kept cases from before the FLOPs were counted this way

  result = {
    "smoke": args.smoke,
    "command": [os.path.relpath(__file__, REPO)] + (argv if argv is not None else sys.argv[1:]),
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "total_s": time.perf_counter() - _START,
    "load_average": os.getloadavg(),
    "sections": {name: sections[name] for name in SECTIONS},
  }
  if args.resume:  # what came from where: the earlier run's machine and date beside this one's
    result["resumed_from"] = {
      "file": os.path.basename(args.resume),
      "environment": earlier.get("environment"),
      "kept": sorted(name for name in sections if sections[name].get("from_earlier_run"))
      + [
        f"{n} {c['batch']} {c['dtype']}"
        for n in ("step", "bare")
        for c in sections[n].get("cases", [])
        if c.get("from_earlier_run")
      ],
    }
  missing = problems(result["sections"], plan)
  output = args.output if not missing else os.path.splitext(args.output)[0] + ".incomplete.json"
  with open(output, "w") as f:
    json.dump(result, f, indent=2)
  os.remove(progress.partial_path)  # the whole result is written: the partial one says nothing more
  if missing:
    print(f"INCOMPLETE, so written to {output}, not {args.output}:\n  " + "\n  ".join(missing), file=sys.stderr)
  else:
    log(f"wrote {output}")
  print(markdown(result), flush=True)
  return 1 if missing else 0


if __name__ == "__main__":
  sys.exit(main())
