"""Speed of dscl_jax.ops.roi_align beside torchvision's CPU kernel.

    python benchmarks/roi_align.py     # about 1 minute on 2 CPU cores

Cases:
  pbsd   features [256, 7, 7, 2048], 1280 boxes (5 per image) drawn like PBSD's
         small crops (RandomResizedCrop scale (0.05, 0.6), ratio (3/4, 4/3)
         inside a 224 x 224 global crop), output 2 x 2, spatial_scale 1/32,
         adaptive sampling (sampling_ratio -1, bound 4 x 4), aligned=False.
  large  features [8, 64, 64, 256], 512 boxes of 16..192 pixels inside a
         256 x 256 image, output 7 x 7, sampling_ratio 2, spatial_scale 1/4.

For each case it times the jitted forward and the jitted backward (jax.grad of
the sum of the output with respect to the features), and torchvision's forward
and backward (`out.sum().backward()`) in a /usr/bin/python3 subprocess that
reads the same features and boxes from .npy files. Both sides use the same
policy: `--warmup` untimed calls, then the median of `--repeats` timed calls
(JAX waits with block_until_ready). torch runs with as many threads as the
machine has cores, like XLA. Prints a table and writes JSON to `--out`.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dscl_jax.ops import roi_align  # noqa: E402

TORCH_PYTHON = "/usr/bin/python3"

CASES = {
  "pbsd": dict(
    feature_shape=(256, 7, 7, 2048),
    boxes_per_image=5,
    output_size=(2, 2),
    spatial_scale=1 / 32,
    sampling_ratio=-1,
    aligned=False,
  ),
  "large": dict(
    feature_shape=(8, 64, 64, 256),
    boxes_per_image=64,
    output_size=(7, 7),
    spatial_scale=1 / 4,
    sampling_ratio=2,
    aligned=False,
  ),
}

# Run by /usr/bin/python3: times torchvision on CASE_DIR/{features,boxes,
# box_indices}.npy with the same warm-up / median policy, saves its output.
TORCH_TIMER = r"""
import json, statistics, sys, time
import numpy as np, torch, torchvision
case_dir, params = sys.argv[1], json.loads(sys.argv[2])
torch.set_num_threads(params["threads"])
features = torch.from_numpy(
    np.load(case_dir + "/features.npy").transpose(0, 3, 1, 2).copy())
boxes = np.load(case_dir + "/boxes.npy")
box_indices = np.load(case_dir + "/box_indices.npy")
rois = torch.from_numpy(np.concatenate(
    [box_indices[:, None].astype(np.float32), boxes], axis=1))

def forward(x):
  return torchvision.ops.roi_align(
      x, rois, output_size=tuple(params["output_size"]),
      spatial_scale=params["spatial_scale"],
      sampling_ratio=params["sampling_ratio"], aligned=params["aligned"])

def backward():
  x = features.clone().requires_grad_(True)
  forward(x).sum().backward()
  return x.grad

def median_ms(fn):
  for _ in range(params["warmup"]):
    fn()
  times = []
  for _ in range(params["repeats"]):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)

with torch.no_grad():
  forward_ms = median_ms(lambda: forward(features))
  out = forward(features)
backward_ms = median_ms(backward)
np.save(case_dir + "/torch_out.npy", out.numpy().transpose(0, 2, 3, 1))
print(json.dumps({"forward_ms": forward_ms, "backward_ms": backward_ms,
                  "threads": torch.get_num_threads(),
                  "torch": torch.__version__,
                  "torchvision": torchvision.__version__}))
"""


def random_resized_crop_box(rng, size, scale, ratio):
  """[x1, y1, x2, y2] of a RandomResizedCrop-style box in a size x size image.

  Up to 10 tries of an area fraction uniform in `scale` and a log-uniform
  aspect ratio; integer width and height; a uniform integer position. Falls
  back to the whole image when no try fits.
  """
  for _ in range(10):
    area = size * size * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    width = int(round(math.sqrt(area * aspect)))
    height = int(round(math.sqrt(area / aspect)))
    if 0 < width <= size and 0 < height <= size:
      x1 = int(rng.integers(0, size - width + 1))
      y1 = int(rng.integers(0, size - height + 1))
      return [x1, y1, x1 + width, y1 + height]
  return [0, 0, size, size]


def make_inputs(name, rng):
  """features [N, H, W, C], boxes [R, 4], box_indices [R] for a case."""
  case = CASES[name]
  num_images, height, width, _ = case["feature_shape"]
  features = rng.standard_normal(case["feature_shape"], np.float32)
  num_boxes = num_images * case["boxes_per_image"]
  box_indices = np.repeat(np.arange(num_images, dtype=np.int32), case["boxes_per_image"])
  if name == "pbsd":
    image_size = round(height / case["spatial_scale"])  # 224
    boxes = [random_resized_crop_box(rng, image_size, (0.05, 0.6), (3 / 4, 4 / 3)) for _ in range(num_boxes)]
    boxes = np.array(boxes, np.float32)
  else:
    image_size = height / case["spatial_scale"]  # 256
    box_size = rng.uniform(16, 192, (num_boxes, 2))
    corner = rng.uniform(0, 1, (num_boxes, 2)) * (image_size - box_size)
    boxes = np.concatenate([corner, corner + box_size], 1).astype(np.float32)
  return features, boxes, box_indices


def median_ms(fn, warmup, repeats):
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def time_jax(name, features, boxes, box_indices, warmup, repeats):
  case = CASES[name]
  static = dict(output_size=case["output_size"], sampling_ratio=case["sampling_ratio"], aligned=case["aligned"])

  @jax.jit
  def forward(x, boxes, box_indices):
    return roi_align(x, boxes, box_indices, spatial_scale=case["spatial_scale"], **static)

  backward = jax.jit(jax.grad(lambda x, b, i: jnp.sum(forward(x, b, i))))
  args = [jnp.asarray(a) for a in (features, boxes, box_indices)]
  out = np.asarray(forward(*args))
  return dict(
    forward_ms=median_ms(lambda: forward(*args), warmup, repeats),
    backward_ms=median_ms(lambda: backward(*args), warmup, repeats),
  ), out


def time_torchvision(name, features, boxes, box_indices, warmup, repeats, threads):
  """torchvision timings and output, or None when torchvision is missing."""
  probe = subprocess.run([TORCH_PYTHON, "-c", "import torchvision"], capture_output=True, check=False)
  if probe.returncode != 0:
    return None, None
  case = CASES[name]
  with tempfile.TemporaryDirectory() as case_dir:
    np.save(os.path.join(case_dir, "features.npy"), features)
    np.save(os.path.join(case_dir, "boxes.npy"), boxes)
    np.save(os.path.join(case_dir, "box_indices.npy"), box_indices)
    params = dict(
      output_size=case["output_size"],
      spatial_scale=case["spatial_scale"],
      sampling_ratio=case["sampling_ratio"],
      aligned=case["aligned"],
      warmup=warmup,
      repeats=repeats,
      threads=threads,
    )
    result = subprocess.run(
      [TORCH_PYTHON, "-c", TORCH_TIMER, case_dir, json.dumps(params)], capture_output=True, text=True, check=True
    )
    out = np.load(os.path.join(case_dir, "torch_out.npy"))
  return json.loads(result.stdout.strip().splitlines()[-1]), out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (median reported)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count(), help="torch.set_num_threads for torchvision")
  parser.add_argument(
    "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "roi_align.json")
  )
  args = parser.parse_args()

  rows = []
  for name in args.cases:
    rng = np.random.default_rng(0)
    features, boxes, box_indices = make_inputs(name, rng)
    jax_times, jax_out = time_jax(name, features, boxes, box_indices, args.warmup, args.repeats)
    torch_times, torch_out = time_torchvision(
      name, features, boxes, box_indices, args.warmup, args.repeats, args.torch_threads
    )
    for direction in ("forward", "backward"):
      row = dict(
        case=name,
        direction=direction,
        features=list(features.shape),
        boxes=len(boxes),
        **{k: CASES[name][k] for k in ("output_size", "spatial_scale", "sampling_ratio", "aligned")},
        jax_median_ms=jax_times[direction + "_ms"],
        torchvision_median_ms=None,
        ratio=None,
      )
      if torch_times is not None:
        row["torchvision_median_ms"] = torch_times[direction + "_ms"]
        row["ratio"] = row["jax_median_ms"] / row["torchvision_median_ms"]
        row["max_abs_diff_vs_torchvision"] = float(np.abs(jax_out - torch_out).max())
        row["torch_threads"] = torch_times["threads"]
      rows.append(row)

  print(f"{'case':<16}{'jax ms':>10}{'torchvision ms':>16}{'jax / tv':>10}")
  for row in rows:
    torch_ms = row["torchvision_median_ms"]
    print(
      f"{row['case'] + ' ' + row['direction']:<16}"
      f"{row['jax_median_ms']:>10.1f}"
      + (f"{torch_ms:>16.1f}{row['ratio']:>10.2f}" if torch_ms else f"{'n/a':>16}{'n/a':>10}")
    )
  if rows and rows[0]["torchvision_median_ms"] is None:
    print(f"torchvision not importable by {TORCH_PYTHON}: JAX timings only.")

  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(
      dict(
        rows=rows,
        repeats=args.repeats,
        warmup=args.warmup,
        jax=jax.__version__,
        backend=jax.default_backend(),
        cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
      ),
      f,
      indent=2,
    )
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
