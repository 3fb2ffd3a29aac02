"""Times the jitted pretrain step: compile time, median step time, images/s and memory.

  python benchmarks/step.py                      # every case, table + benchmarks/results/step.json
  python benchmarks/step.py --cases fashion_dscl --repeats 10

Cases: the ResNet-50 ImageNet-LT recipe scaled to a CPU (batch 32 instead of 256, 224x224, K = 65536,
D = 128), with and without PBSD (5 crops of 64x64), and the Fashion-MNIST-LT config (batch 128, 28x28,
ResNet-20, K = 4096), with and without PBSD. Inputs are random arrays of the real shapes: this measures
the step, not the input pipeline (benchmarks/input_pipeline.py does that).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from dscl_jax import optim, sharding, synthetic
from dscl_jax.config_base import fashion_mnist_lt_config, imagenet_recipe_config
from dscl_jax.step import make_pretrain_step
from dscl_jax.train import build_models, init_pretrain_state


def resnet50_config(pbsd: bool):
  c = imagenet_recipe_config("imagenet_lt", depth=50)
  c.train.batch_size = 32  # the recipe's 256, scaled to a CPU
  c.model.key_bn_group_size = 16
  c.pbsd.enabled = pbsd
  return c


def fashion_config(pbsd: bool):
  c = fashion_mnist_lt_config("dscl")
  c.pbsd.enabled = pbsd
  return c


CASES = {
    "resnet50_dscl": (lambda: resnet50_config(False), 3, 1000),
    "resnet50_dscl_pbsd": (lambda: resnet50_config(True), 3, 1000),
    "fashion_dscl": (lambda: fashion_config(False), 1, 10),
    "fashion_dscl_pbsd": (lambda: fashion_config(True), 1, 10),
}


def bench(name: str, repeats: int) -> dict:
  make_config, channels, num_classes = CASES[name]
  config = make_config()
  mesh = sharding.make_mesh(-1)
  schedule = optim.warmup_cosine_schedule(0.1, 10_000, 100)
  tx = optim.sgd(schedule, 0.9, 5e-4)
  online, target = build_models(config, num_classes)
  counts = np.geomspace(1000, 10, num_classes).round()  # a long-tailed prior for the methods that use one
  state = init_pretrain_state(config, online, tx, num_classes, channels, mesh, counts)
  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  step = jax.jit(make_pretrain_step(config, online, target, tx, schedule), in_shardings=(rep, data),
                 out_shardings=(rep, rep), donate_argnums=0)
  batch = sharding.to_global(synthetic.pretrain_batch(config, channels, num_classes, np.random.default_rng(0)), mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i:  # the first call also allocates and warms caches
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  result = {
      "case": name, "batch": config.train.batch_size, "image_size": config.augment.image_size,
      "queue": config.moco.queue_size, "pbsd_crops": config.pbsd.num_crops if config.pbsd.enabled else 0,
      "devices": mesh.devices.size, "compile_s": compile_seconds, "median_step_s": median,
      "min_step_s": min(times), "images_per_s": config.train.batch_size / median, "repeats": repeats,
      "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
      "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "loss": float(metrics["loss"]), "backend": jax.default_backend(),
      "load_average": os.getloadavg(),  # the machine may be shared: read medians with this in mind
  }
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
  parser.add_argument("--repeats", type=int, default=5)
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
        subprocess.run([sys.executable, __file__, "--cases", name, "--repeats", str(args.repeats), "--out", out,
                        "--quiet"], check=True)
        with open(out) as f:
          r = json.load(f)[0]
    else:
      r = bench(name, args.repeats)
    results.append(r)
    temp = r["temp_bytes"] / 2**20 if r["temp_bytes"] is not None else float("nan")
    emit(f"| {name} | {r['batch']} | {r['devices']} | {r['compile_s']:.1f} | {r['median_step_s']:.3f} | "
          f"{r['images_per_s']:.1f} | {temp:.0f} | {r['peak_rss_bytes'] / 2**20:.0f} |", flush=True)
  by_name = {r["case"]: r for r in results}
  for base in ("resnet50_dscl", "fashion_dscl"):
    if base in by_name and base + "_pbsd" in by_name:
      ratio = by_name[base + "_pbsd"]["median_step_s"] / by_name[base]["median_step_s"]
      emit(f"PBSD overhead, {base}: step time x{ratio:.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  emit(f"wrote {args.out}")


if __name__ == "__main__":
  main()
