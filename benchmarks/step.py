"""Times the jitted pretrain step: compile time, median step time, images/s and memory.

  python benchmarks/step.py                      # every case, table + benchmarks/results/step.json
  python benchmarks/step.py --cases fashion_dscl --repeats 10
  python benchmarks/step.py --cases resnet50_dscl_pbsd --bare   # the same convolutions, nothing else
  python benchmarks/step.py --cases fashion_dscl_pbsd --profile /tmp/trace   # + where the time goes

Cases: the ResNet-50 ImageNet-LT recipe scaled to a CPU (batch 32 instead of 256, 224x224, K = 65536,
D = 128), with and without PBSD (5 crops of 64x64), and the Fashion-MNIST-LT configs (batch 128, 28x28,
ResNet-20, K = 4096): DSCL with and without PBSD, PaCo, cross-entropy. Inputs are random arrays of the
real shapes and dtypes (uint8 pixels, normalised in the step): this measures the step, not the input
pipeline (benchmarks/input_pipeline.py does that).

`--bare` times a step that does the same convolutions as the case's step and nothing else: the online
encoder's forward and backward on the query (and the small crops), the target's forward on the key, a
sum-of-squares loss, the SGD update; no queue, no EMA, no RoIAlign, no contrastive loss, no guard. The
ratio of the two is what the method costs beyond its backbone.

`--profile DIR` also runs 3 steps under `jax.profiler.trace(DIR)` (open it in Perfetto or TensorBoard's
profile plugin) and prints the time per step of each kind of compiled op on the XLA threads (the top 40
ops one by one go to the JSON).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.common import fashion_mnist_lt_config, imagenet_recipe_config
from dscl_jax.config.schema import load_config_file
from dscl_jax.core import optim, sharding
from dscl_jax.core.build import abstract_pretrain_state, build_models, init_pretrain_state, jit_pretrain_step
from dscl_jax.input import pixels, synthetic
from dscl_jax.methods import OnlineForward, get_method
from dscl_jax.methods.queue_contrastive import batch_major


def resnet50_config(pbsd: bool):
  c = imagenet_recipe_config("imagenet_lt", depth=50)
  c.train.batch_size = 32  # the recipe's 256, scaled to a CPU
  c.model.key_bn_group_size = 16
  c.pbsd.enabled = pbsd
  return c


def fashion_config(pbsd: bool, method: str = "dscl"):
  c = fashion_mnist_lt_config(method)
  c.pbsd.enabled = pbsd
  return c


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


CASES = {
  "resnet50_dscl": (lambda: resnet50_config(False), 3, 1000),
  "resnet50_dscl_pbsd": (lambda: resnet50_config(True), 3, 1000),
  "fashion_dscl": (lambda: fashion_config(False), 1, 10),
  "fashion_dscl_pbsd": (lambda: fashion_config(True), 1, 10),
  "fashion_paco": (lambda: load_config_file(os.path.join(CONFIGS, "fashion_mnist_lt_paco.py")), 1, 10),
  "fashion_ce": (lambda: fashion_config(False, "ce"), 1, 10),
}


def make_bare_step(online, target, tx, cfg_augment):
  """`(state, batch) -> (state, metrics)` with the case's convolutions only (see the module docstring),
  after the same on-device normalisation of the uint8 pixels as the real step."""

  def step(state, batch):
    batch = pixels.normalize_views(batch, cfg_augment)

    def output(out):  # the head the method trains: the projection, or the classifier (cross-entropy)
      return out["embedding"] if "embedding" in out else out["logits"]

    def loss_fn(params):
      forward = OnlineForward(online, params, state.batch_stats)
      loss = jnp.mean(jnp.square(output(forward(batch["query"]))))
      if "small_crops" in batch:
        crops = forward(batch_major(batch["small_crops"]), bn_group_size=batch["query"].shape[0], interleaved=True)
        loss = loss + jnp.mean(jnp.square(output(crops)))
      return loss, forward.batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(
      params=jax.tree.map(jnp.add, state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
      step=state.step + 1,
    )
    metrics = {"loss": loss}
    if target is not None:  # the keys are an output, so XLA cannot drop the target's forward
      out, mutated = target.apply(
        {"params": state.target_params, "batch_stats": state.target_batch_stats},
        batch["key"],
        train=True,
        mutable=["batch_stats"],
      )
      state = state.replace(target_batch_stats=mutated["batch_stats"])
      metrics["key_mean"] = jnp.mean(out["embedding"])
    return state, metrics

  return step


def op_times(trace_dir: str, steps: int) -> list[tuple[str, float]]:
  """[(compiled op, ms per step)] from the newest trace under `trace_dir`, most expensive first: the
  complete events of the XLA threads (not Python, not the executor waiting for them)."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz")))
  if not paths:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}/plugins/profile")
  with gzip.open(paths[-1]) as f:
    events = json.load(f)["traceEvents"]
  threads = {
    (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
  }
  totals = collections.Counter()
  for e in events:
    thread = threads.get((e.get("pid"), e.get("tid")), "")
    if e.get("ph") != "X" or not thread.startswith("tf_XLA") or e["name"].startswith(("end:", "ThunkExecutor")):
      continue
    totals[e["name"]] += e["dur"] / 1e3 / steps
  return totals.most_common()


def build_step(config, num_classes: int, channels: int, mesh, bare: bool = False, abstract: bool = False):
  """(initial state, jitted step) for `config` as training builds them (dscl_jax.core.build, which imports
  the data readers only when a job reads data, so a host without tensorflow_datasets or grain can build the
  step), with a fixed schedule and optimiser and a long-tailed class prior for the methods that use one.
  `bare`: `make_bare_step`, the same convolutions and nothing else. `abstract`: the state's shapes and
  dtypes only (enough to lower the step, not to run it), without compiling or running the initialiser."""
  method = get_method(config)
  schedule = optim.warmup_cosine_schedule(0.1, 10_000, 100)
  tx = optim.sgd(schedule, 0.9, 5e-4)
  online, target = build_models(config, method, num_classes)
  counts = np.geomspace(1000, 10, num_classes).round()
  if abstract:
    state = abstract_pretrain_state(config, method, online, tx, num_classes, channels, counts)
  else:
    state = init_pretrain_state(config, method, online, tx, num_classes, channels, mesh, counts)
  if not bare:
    return state, jit_pretrain_step(config, method, online, target, tx, schedule, mesh)
  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  step = make_bare_step(online, target, tx, config.augment)
  return state, jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)


def compile_and_time(step, state, batch, repeats: int, lowered=None):
  """Compiles `step` for (state, batch) (from `lowered`, its `step.lower(state, batch)`, when given) and
  runs it 1 + `repeats` times, threading the donated state: (compiled, compile seconds, the `repeats` step
  times after the first call, which also allocates and warms caches, the last state, the last metrics)."""
  start = time.perf_counter()
  compiled = (lowered or step.lower(state, batch)).compile()
  compile_seconds = time.perf_counter() - start
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i:
      times.append(time.perf_counter() - start)
  return compiled, compile_seconds, times, state, metrics


def lowered_flops(lowered) -> float | None:
  """FLOPs of one call by XLA's cost analysis of the program as lowered, before the backend's passes
  (within 3% of the compiled CPU program's on the smoke step), or None where the backend gives none: a
  GPU does not (jax 0.11.2), and its compiled program counts the convolutions handed to cuDNN as zero
  (58 GFLOP for the ImageNet step at batch 64 on an H200, where the lowered CPU program has 2626)."""
  return flops_of(lowered.cost_analysis())


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled program by XLA's cost analysis (per device), or None where the backend
  has none. A loop body counts once (the step's lax.map over the crops' loss: well under 1% of the
  ImageNet step)."""
  return flops_of(compiled.cost_analysis())


def flops_of(analysis) -> float | None:
  """The positive "flops" of a cost analysis (a dict, a list of one dict per program in older jax, or
  None), else None."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def bench(name: str, repeats: int, batch_size: int = 0, bare: bool = False, profile: str = "") -> dict:
  make_config, channels, num_classes = CASES[name]
  config = make_config()
  if batch_size:
    config.train.batch_size = batch_size
  mesh = sharding.make_mesh(-1)
  state, step = build_step(config, num_classes, channels, mesh, bare)
  batch = synthetic.pretrain_batch(
    config, get_method(config).requirements.views, channels, num_classes, np.random.default_rng(0), pixels=True
  )
  batch = sharding.to_global(batch, mesh)
  compiled, compile_seconds, times, state, metrics = compile_and_time(step, state, batch, repeats)
  memory = compiled.memory_analysis()
  median = statistics.median(times)
  profiled = []
  if profile:
    with jax.profiler.trace(profile):
      for _ in range(3):
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
    profiled = op_times(profile, 3)
  by_kind = collections.Counter()
  for op, ms in profiled:  # "transpose_copy_fusion.53" -> "transpose_copy_fusion"
    by_kind[op.rsplit(".", 1)[0] if op.rsplit(".", 1)[-1].isdigit() else op] += ms
  result = {
    "case": name,
    "bare": bare,
    "batch": config.train.batch_size,
    "image_size": config.augment.image_size,
    "queue": config.moco.queue_size,
    "pbsd_crops": config.pbsd.num_crops if config.pbsd.enabled else 0,
    "devices": mesh.devices.size,
    "compile_s": compile_seconds,
    "median_step_s": median,
    "min_step_s": min(times),
    "images_per_s": config.train.batch_size / median,
    "repeats": repeats,
    "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
    "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "loss": float(metrics["loss"]),
    "backend": jax.default_backend(),
    "load_average": os.getloadavg(),  # the machine may be shared: read medians with this in mind
    "profile_ms_per_step": profiled[:40],
    "profile_ms_per_step_by_kind": by_kind.most_common(),
  }
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=0, help="global batch (0: the case's)")
  parser.add_argument("--bare", action="store_true", help="the backbone's convolutions only")
  parser.add_argument("--profile", default="", metavar="DIR", help="trace 3 steps into DIR; print the top ops")
  parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "step.json"))
  args = parser.parse_args()
  results = []
  emit = (lambda *a, **k: None) if args.quiet else print
  emit("| case | batch | devices | compile s | median step s | images/s | XLA temp MiB | peak RSS MiB |")
  emit("|---|---|---|---|---|---|---|---|")
  for name in args.cases:
    if len(args.cases) > 1:  # one process per case, so that peak RSS is the case's own
      with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "case.json")
        subprocess.run(
          [
            sys.executable,
            __file__,
            "--cases",
            name,
            "--repeats",
            str(args.repeats),
            "--out",
            out,
            "--batch",
            str(args.batch),
            "--quiet",
          ]
          + ["--bare"] * args.bare
          + (["--profile", os.path.join(args.profile, name)] if args.profile else []),
          check=True,
        )
        with open(out) as f:
          r = json.load(f)[0]
    else:
      r = bench(name, args.repeats, args.batch, args.bare, args.profile)
    results.append(r)
    temp = r["temp_bytes"] / 2**20 if r["temp_bytes"] is not None else float("nan")
    emit(
      f"| {name} | {r['batch']} | {r['devices']} | {r['compile_s']:.1f} | {r['median_step_s']:.3f} | "
      f"{r['images_per_s']:.1f} | {temp:.0f} | {r['peak_rss_bytes'] / 2**20:.0f} |",
      flush=True,
    )
  by_name = {r["case"]: r for r in results}
  for base in ("resnet50_dscl", "fashion_dscl"):
    if base in by_name and base + "_pbsd" in by_name:
      ratio = by_name[base + "_pbsd"]["median_step_s"] / by_name[base]["median_step_s"]
      emit(f"PBSD overhead, {base}: step time x{ratio:.2f}")
  for r in results:
    if r["profile_ms_per_step_by_kind"]:
      total = sum(ms for _, ms in r["profile_ms_per_step_by_kind"])
      emit(
        f"\n{r['case']}: time on the XLA threads per step by kind of compiled op ({total:.0f} ms in all for a "
        f"{1e3 * r['median_step_s']:.0f} ms step: two threads may run ops at once)"
      )
      emit("| kind of op | ms per step | share |\n|---|---|---|")
      for kind, ms in r["profile_ms_per_step_by_kind"][:12]:
        emit(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  emit(f"wrote {args.out}")


if __name__ == "__main__":
  main()
