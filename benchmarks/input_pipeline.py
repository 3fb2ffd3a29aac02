"""Input pipeline throughput: DSCL + PBSD views from JPEG files, ours (grain + PIL) beside torchvision.

    python benchmarks/pipeline.py            # about 2 minutes on 2 CPU cores

Writes ~512 ImageNet-sized JPEGs (500x375 .. 640x480, quality 90) in a temporary split-list layout,
then times `dscl_jax.input.pipeline.pretrain_iterator` (224 global crops, 5 small 64x64 crops with boxes,
query / key colour recipes, RGB) with 1 and 2 grain workers, and the same recipe on the same files in a
torchvision DataLoader (benchmarks/torch_input_pipeline.py, run by /usr/bin/python3) with 1 and 2
workers. Throughput is the images of the timed batches over the time they took, after a few warm-up
batches. (Not the median interval: with several workers, batches arrive in bursts, one per worker,
and the median of bursty intervals says little.) "Per worker" divides it by the worker count, the
figure to compare per core. Prints the table with the load average (the machine may be shared) and
writes benchmarks/results/pipeline.json.
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
_OUTPUT = flags.DEFINE_string("output", os.path.join(HERE, "results", "pipeline.json"), "JSON output")


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


def time_ours(split, num_workers: int, batch_size: int, warmup: int, batches: int) -> dict:
  cfg_augment = augment.default_augment_config(224, 3)
  cfg_pbsd = augment.default_pbsd_config()
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
  assert batch["query"].shape == (batch_size, 224, 224, 3), batch["query"].shape
  assert batch["small_crops"].shape == (batch_size, 5, 64, 64, 3), batch["small_crops"].shape
  assert batch["boxes"].shape == (batch_size, 5, 4), batch["boxes"].shape
  del iterator  # stops the worker processes
  return {
    "num_workers": num_workers,
    "images_per_s": batch_size * len(intervals) / sum(intervals),
    "images_per_s_median_interval": batch_size / statistics.median(intervals),
    "batch_seconds": intervals,
  }


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
      ours = time_ours(split, num_workers, args.batch_size, args.warmup, args.batches)
      print(f"ours, {num_workers} workers: {ours['images_per_s']:.1f} img/s", flush=True)
      torch_result = time_torchvision(root, list_path, num_workers, args.batch_size, args.warmup, args.batches)
      if torch_result:
        print(f"torchvision, {num_workers} workers: {torch_result['images_per_s']:.1f} img/s", flush=True)
      rows.append({"num_workers": num_workers, "ours": ours, "torchvision": torch_result})
    load_after = os.getloadavg()

  print(
    f"\nload average (1, 5, 15 min): {_loads(load_before)} before, {_loads(load_after)} after, on {os.cpu_count()} CPUs"
  )
  print(
    "| workers | ours img/s | ours img/s per worker | torchvision img/s | torchvision img/s per worker "
    "| ours / torchvision |"
  )
  print("|---|---|---|---|---|---|")
  for row in rows:
    workers = row["num_workers"]
    ours = row["ours"]["images_per_s"]
    reference = row["torchvision"]["images_per_s"] if row["torchvision"] else float("nan")
    per_worker = max(workers, 1)  # 0 workers: the main process does the work
    print(
      f"| {workers} | {ours:.1f} | {ours / per_worker:.1f} | {reference:.1f} | {reference / per_worker:.1f} "
      f"| {ours / reference:.2f} |"
    )
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(
      {
        "recipe": "DSCL + PBSD pretrain views: 2 x 224 global crops, 5 x 64 small crops + boxes, "
        "query / key colours, RGB",
        "images": f"{args.num_images} synthetic JPEGs, 500x375 .. 640x480, quality 90",
        "batch_size": args.batch_size,
        "warmup_batches": args.warmup,
        "timed_batches": args.batches,
        "mean_file_kb": file_kb,
        "pil_decode_ms_per_image": decode_ms,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
      },
      f,
      indent=2,
    )
  print(f"\nwrote {args.output}")


if __name__ == "__main__":
  app.run(main)
