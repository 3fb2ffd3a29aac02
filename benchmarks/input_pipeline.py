"""Input pipeline throughput: DSCL + PBSD views from JPEG files, the PIL path against the device path, and
torchvision beside them.

    python benchmarks/input_pipeline.py          # about 10 minutes on 2 CPU cores

Writes ~512 ImageNet-sized JPEGs (500x375 .. 640x480, quality 90) in a temporary split-list layout,
then times `dscl_jax.input.pipeline.pretrain_iterator` for the full ImageNet DSCL + PBSD recipe (224
global crops, 5 small 64x64 crops with boxes, query / key colour recipes, RGB) with 1 and 2 grain
workers, two ways:
  - the PIL path (`augment.on_device` False, the default): the host does every crop, flip, colour and
    blur in PIL;
  - the device path (`augment.on_device` True, `augment.device_canvas` 640, the JPEGs' longest side):
    the host decodes, puts the image on a 640 px canvas and draws the crop boxes and every other
    parameter; cutting and resizing the crops and the rest run in the jitted step
    (`dscl_jax.input.device_augment`);
  - the device path with the crops on the host (`device_canvas` 0): the host also cuts and resizes the
    two 224 px crops;
and the same recipe on the same files in a torchvision DataLoader (benchmarks/torch_input_pipeline.py,
run by /usr/bin/python3). Each (path, workers) is timed `--repeats` times, alternating the paths, and
the median is reported. Throughput is the images of the timed batches over the time they took, after a
few warm-up batches. (Not the median interval: with several workers, batches arrive in bursts, one per
worker, and the median of bursty intervals says little.) "Per worker" divides it by the worker count,
the figure to compare per core; `device_vs_pil_per_core` is the ratio of the medians with 1 worker
(`device_host_crops_vs_pil_per_core` the same for the host-crop variant).

What the device path costs the step (`--device_cost`, on by default): the ImageNet DSCL + PBSD step
(ResNet-50, batch 8) compiled with and without device augmentation, its FLOPs from XLA's cost analysis;
and on this CPU the time of the augmentation alone (`device_augment.finish_views`, jitted) against the
step's (the augmentation alone is also compiled with the crops on the host). Prints the tables with the load average (the machine may be shared) and writes
benchmarks/results/input_pipeline.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import split_list  # noqa: E402
from dscl_jax.input import (
  augment,  # noqa: E402
  pipeline,  # noqa: E402
)

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = "/usr/bin/python3"
NUM_CLASSES = 16

# absl flags, since grain's worker processes read absl flags and need them parsed.
_NUM_IMAGES = flags.DEFINE_integer("num_images", 512, "synthetic JPEGs to write")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "images per batch")
_WARMUP = flags.DEFINE_integer("warmup", 4, "batches skipped before timing")
_BATCHES = flags.DEFINE_integer("batches", 16, "timed batches (a multiple of the worker counts evens out bursts)")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "worker counts to time")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timings of each (path, workers), alternating the paths")
_TORCHVISION = flags.DEFINE_bool("torchvision", True, "also time torchvision's DataLoader on the same files")
_DEVICE_COST = flags.DEFINE_bool("device_cost", True, "also measure what device augmentation adds to the step")
_COST_BATCH = flags.DEFINE_integer("cost_batch", 8, "batch of the ImageNet step whose FLOPs are measured")
_OUTPUT = flags.DEFINE_string("output", os.path.join(HERE, "results", "input_pipeline.json"), "JSON output")


def synthetic_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
  """Smooth colour fields, a few solid shapes and sensor-like noise: JPEG sizes close to real photos."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  channels = []
  for _ in range(3):
    field = np.zeros((height, width), np.float32)
    for _ in range(4):
      fx, fy, phase = rng.uniform(0.002, 0.03), rng.uniform(0.002, 0.03), rng.uniform(0, 2 * np.pi)
      field += np.sin(fx * x + fy * y + phase)
    channels.append(128 + 30 * field)
  pixels = np.stack(channels, -1) + rng.normal(0, 10, (height, width, 3))
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(5, 15))):
    x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
    x2, y2 = x1 + int(rng.integers(10, width // 2)), y1 + int(rng.integers(10, height // 2))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x1, y1, x2, y2], fill=colour)
  return image


def write_images(root: str, num_images: int, seed: int = 0) -> str:
  """`num_images` JPEGs under `root/train/c<k>/` and their split list; returns the list's path."""
  rng = np.random.default_rng(seed)
  lines = []
  for index in range(num_images):
    label = index % NUM_CLASSES
    width, height = int(rng.integers(500, 641)), int(rng.integers(375, 481))
    if rng.random() < 0.2:  # some portrait photos
      width, height = height, width
    relative = f"train/c{label}/{index:05d}.JPEG"
    os.makedirs(os.path.join(root, os.path.dirname(relative)), exist_ok=True)
    synthetic_photo(rng, width, height).save(os.path.join(root, relative), quality=90)
    lines.append(f"{relative} {label}\n")
  list_path = os.path.join(root, "train.txt")
  with open(list_path, "w") as f:
    f.writelines(lines)
  return list_path


# The benchmark's JPEGs are at most 640 px a side: on a 640 px canvas none is resized, so the device path
# cuts exactly the PIL path's boxes.
CANVAS = 640
# path -> (augment.on_device, augment.device_canvas)
PATHS = {"pil": (False, 0), "device": (True, CANVAS), "device_host_crops": (True, 0)}


def imagenet_recipe(path: str):
  """(augment, pbsd) configs of the ImageNet DSCL + PBSD recipe at 224 px for one of `PATHS`."""
  cfg_augment = augment.default_augment_config(224, 3)
  cfg_augment.on_device, cfg_augment.device_canvas = PATHS[path]
  return cfg_augment, augment.default_pbsd_config()


def time_ours(split, num_workers: int, batch_size: int, warmup: int, batches: int, path: str = "pil") -> dict:
  cfg_augment, cfg_pbsd = imagenet_recipe(path)
  on_device, canvas = PATHS[path]
  iterator = pipeline.pretrain_iterator(
    split, cfg_augment, cfg_pbsd, global_batch_size=batch_size, seed=0, num_workers=num_workers
  )
  for _ in range(warmup):
    next(iterator)
  intervals = []
  last = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
    now = time.perf_counter()
    intervals.append(now - last)
    last = now
  if canvas:
    assert batch["canvas"].shape == (batch_size, canvas, canvas, 3), batch["canvas"].shape
  else:
    assert batch["query"].shape == (batch_size, 224, 224, 3), batch["query"].shape
  assert batch["boxes"].shape == (batch_size, 5, 4), batch["boxes"].shape
  crops = "small_crops_augment" if on_device else "small_crops"
  assert batch[crops].shape[:2] == (batch_size, 5), batch[crops].shape
  del iterator  # stops the worker processes
  return {
    "num_workers": num_workers,
    "path": path,
    "on_device": on_device,
    "device_canvas": canvas,
    "images_per_s": batch_size * len(intervals) / sum(intervals),
    "images_per_s_median_interval": batch_size / statistics.median(intervals),
    "batch_seconds": intervals,
  }


def measure_host_pipeline(num_workers: int, device_augment: bool, num_images: int = 256, batches: int = 8) -> dict:
  """Host images/s of the ImageNet DSCL + PBSD recipe with `num_workers` grain workers on `num_images` fresh
  synthetic JPEGs, PIL path or device path (`device_augment`, crops on the device): `time_ours`'s result."""
  with tempfile.TemporaryDirectory(prefix="input_pipeline_bench_") as root:
    split = split_list.split_from_list("train", root, write_images(root, num_images), NUM_CLASSES)
    batch_size = min(64, num_images // 4)
    return time_ours(split, num_workers, batch_size, 2, batches, path="device" if device_augment else "pil")


def device_cost(batch_size: int) -> dict:
  """FLOPs of the ImageNet DSCL + PBSD step with and without device augmentation (XLA's cost analysis),
  and on this CPU the time of the augmentation alone against the step's."""
  import jax
  import step as step_bench  # benchmarks/step.py, beside this script

  from dscl_jax.core import sharding
  from dscl_jax.input import device_augment, synthetic
  from dscl_jax.methods import get_method

  result = {"batch": batch_size, "case": "ResNet-50, 224 px, K 65536, 5 crops of 64 px (benchmarks/step.py)"}
  mesh = sharding.make_mesh(-1)
  for on_device in (False, True):
    config = step_bench.resnet50_config(True)
    config.train.batch_size = batch_size
    config.model.key_bn_group_size = batch_size
    config.augment.on_device, config.augment.device_canvas = PATHS["device" if on_device else "pil"]
    state, step = step_bench.build_step(config, 1000, 3, mesh)
    views = get_method(config).requirements.views
    batch = synthetic.pretrain_batch(config, views, 3, 1000, np.random.default_rng(0), pixels=True)
    batch = sharding.to_global(batch, mesh)
    name = "device" if on_device else "pil"
    if on_device:  # compiled and timed; the PIL path's step is only compiled, for its FLOPs
      compiled, compile_s, times, _, _ = step_bench.compile_and_time(step, state, batch, repeats=2)
      result["step_s"] = statistics.median(times)
    else:
      start = time.perf_counter()
      compiled = step.lower(state, batch).compile()
      compile_s = time.perf_counter() - start
    result[f"{name}_compile_s"] = compile_s
    result[f"{name}_step_flops"] = step_bench.compiled_flops(compiled)
    print(f"step with on_device={on_device}: {result[f'{name}_step_flops'] / 1e9:.1f} GFLOP", flush=True)
  augment_only = jax.jit(lambda b: device_augment.finish_views(b, config.augment, config.pbsd)).lower(batch).compile()
  result["augment_flops"] = step_bench.compiled_flops(augment_only)
  host_crops = config.copy_and_resolve_references()
  host_crops.augment.device_canvas = 0
  views = get_method(host_crops).requirements.views
  batch_host_crops = synthetic.pretrain_batch(host_crops, views, 3, 1000, np.random.default_rng(0), pixels=True)
  result["augment_host_crops_flops"] = step_bench.compiled_flops(
    jax.jit(lambda b: device_augment.finish_views(b, host_crops.augment, host_crops.pbsd))
    .lower(batch_host_crops)
    .compile()
  )
  result["device_canvas"] = CANVAS
  times = []
  for _ in range(4):
    start = time.perf_counter()
    jax.block_until_ready(augment_only(batch))
    times.append(time.perf_counter() - start)
  result["augment_s"] = statistics.median(times[1:])  # the first call also allocates
  result["added_flops_fraction"] = result["device_step_flops"] / result["pil_step_flops"] - 1
  result["augment_flops_fraction"] = result["augment_flops"] / result["pil_step_flops"]
  result["augment_host_crops_flops_fraction"] = result["augment_host_crops_flops"] / result["pil_step_flops"]
  result["augment_time_fraction_cpu"] = result["augment_s"] / result["step_s"]
  return result


def time_torchvision(
  root: str, list_path: str, num_workers: int, batch_size: int, warmup: int, batches: int
) -> dict | None:
  if subprocess.run([TORCH_PYTHON, "-c", "import torchvision"], capture_output=True).returncode:
    print(f"{TORCH_PYTHON} cannot import torchvision: no reference column", flush=True)
    return None
  command = [
    TORCH_PYTHON,
    os.path.join(HERE, "torch_input_pipeline.py"),
    "--root",
    root,
    "--split_list",
    list_path,
    "--num_workers",
    str(num_workers),
    "--batch_size",
    str(batch_size),
    "--warmup",
    str(warmup),
    "--batches",
    str(batches),
  ]
  result = subprocess.run(command, capture_output=True, text=True, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def mean_decode_ms(split, count: int = 64) -> float:
  """Milliseconds to read and decode one JPEG in full (the part of a sample that is not augmentation)."""
  count = min(count, len(split))
  start = time.perf_counter()
  for index in range(count):
    split.source[index]
  return 1000 * (time.perf_counter() - start) / count


def _loads(load_average) -> str:
  return ", ".join(f"{value:.2f}" for value in load_average)


def main(argv):
  del argv  # flags only
  args = types.SimpleNamespace(
    num_images=_NUM_IMAGES.value,
    batch_size=_BATCH_SIZE.value,
    warmup=_WARMUP.value,
    batches=_BATCHES.value,
    workers=[int(w) for w in _WORKERS.value],
    repeats=_REPEATS.value,
    output=_OUTPUT.value,
  )

  with tempfile.TemporaryDirectory(prefix="input_pipeline_bench_") as root:
    start = time.perf_counter()
    list_path = write_images(root, args.num_images)
    print(f"wrote {args.num_images} JPEGs in {time.perf_counter() - start:.1f}s", flush=True)
    split = split_list.split_from_list("train", root, list_path, NUM_CLASSES)
    decode_ms = mean_decode_ms(split)
    file_kb = np.mean([os.path.getsize(os.path.join(root, p)) for p in split.source.paths]) / 1024
    print(f"JPEG files {file_kb:.0f} KB on average, PIL decode {decode_ms:.1f} ms per image", flush=True)
    load_before = os.getloadavg()
    rows = []
    for num_workers in args.workers:
      runs = {path: [] for path in PATHS}
      for repeat in range(args.repeats):
        for path in PATHS:
          run = time_ours(split, num_workers, args.batch_size, args.warmup, args.batches, path=path)
          runs[path].append(run)
          print(f"{path} path, {num_workers} workers, try {repeat + 1}: {run['images_per_s']:.1f} img/s", flush=True)
      torch_result = None
      if _TORCHVISION.value:
        torch_result = time_torchvision(root, list_path, num_workers, args.batch_size, args.warmup, args.batches)
      if torch_result:
        print(f"torchvision, {num_workers} workers: {torch_result['images_per_s']:.1f} img/s", flush=True)
      rows.append(
        {
          "num_workers": num_workers,
          **{f"{path}_images_per_s": statistics.median(r["images_per_s"] for r in runs[path]) for path in PATHS},
          "runs": runs,
          "torchvision": torch_result,
        }
      )
    load_after = os.getloadavg()

  one_worker = next((row for row in rows if row["num_workers"] == 1), None)
  ratio = one_worker["device_images_per_s"] / one_worker["pil_images_per_s"] if one_worker else None
  ratio_host_crops = (
    one_worker["device_host_crops_images_per_s"] / one_worker["pil_images_per_s"] if one_worker else None
  )
  cost = device_cost(_COST_BATCH.value) if _DEVICE_COST.value else None

  print(
    f"\nload average (1, 5, 15 min): {_loads(load_before)} before, {_loads(load_after)} after, on {os.cpu_count()} CPUs"
  )
  print(
    "| workers | PIL path | device path | device / PIL | device path, crops on the host | that / PIL | torchvision |"
  )
  print("|---|---|---|---|---|---|---|")
  for row in rows:
    workers = max(row["num_workers"], 1)  # 0 workers: the main process does the work
    reference = row["torchvision"]["images_per_s"] if row["torchvision"] else float("nan")
    pil, device, host_crops = (row[f"{path}_images_per_s"] for path in ("pil", "device", "device_host_crops"))
    print(
      f"| {row['num_workers']} | {pil / workers:.1f} | {device / workers:.1f} | {device / pil:.2f} "
      f"| {host_crops / workers:.1f} | {host_crops / pil:.2f} | {reference / workers:.1f} |"
    )
  print("(images/s per worker; medians)")
  if ratio is not None:
    print(f"\ndevice_vs_pil_per_core (1 worker, medians of {args.repeats}): {ratio:.2f}")
    print(f"device_host_crops_vs_pil_per_core: {ratio_host_crops:.2f}")
  if cost:
    print(
      f"device augmentation in the ImageNet DSCL + PBSD step (batch {cost['batch']}): step "
      f"{cost['pil_step_flops'] / 1e9:.1f} -> {cost['device_step_flops'] / 1e9:.1f} GFLOP "
      f"(+{100 * cost['added_flops_fraction']:.2f}%); the augmentation alone {cost['augment_flops'] / 1e9:.2f} GFLOP "
      f"({100 * cost['augment_flops_fraction']:.2f}%), {cost['augment_s']:.3f} s of a {cost['step_s']:.1f} s step "
      f"on this CPU ({100 * cost['augment_time_fraction_cpu']:.2f}%); with the crops on the host the "
      f"augmentation is {cost['augment_host_crops_flops'] / 1e9:.2f} GFLOP "
      f"({100 * cost['augment_host_crops_flops_fraction']:.2f}%)"
    )
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(
      {
        "recipe": "ImageNet DSCL + PBSD pretrain views: 2 x 224 global crops, 5 x 64 small crops + boxes, "
        "query / key colours, RGB",
        "images": f"{args.num_images} synthetic JPEGs, 500x375 .. 640x480, quality 90",
        "batch_size": args.batch_size,
        "warmup_batches": args.warmup,
        "timed_batches": args.batches,
        "repeats": args.repeats,
        "mean_file_kb": file_kb,
        "pil_decode_ms_per_image": decode_ms,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "machine": platform.processor() or platform.machine(),
        "device_canvas": CANVAS,
        "device_vs_pil_per_core": ratio,
        "device_host_crops_vs_pil_per_core": ratio_host_crops,
        "rows": rows,
        "device_cost": cost,
      },
      f,
      indent=2,
    )
  print(f"\nwrote {args.output}")


if __name__ == "__main__":
  app.run(main)
