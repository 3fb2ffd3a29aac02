"""How far each device image op (dscl_jax.ops.image, float, torchvision's tensor semantics) lands from
its counterpart on the PIL path the input pipeline uses today (dscl_jax.input.augment, uint8).

    python benchmarks/device_vs_pil_ops.py       # about 15 s on one CPU core

Both sides start from the same uint8 images: `--images` synthetic photo-like 224 x 224 RGB images
(smooth colour fields, solid shapes, sensor noise: benchmarks/input_pipeline.py's `synthetic_photo`),
each drawn `--draws` times with parameters uniform over the recipe's ranges: brightness, contrast and
saturation factors in [0.6, 1.4], hue shifts in [-0.1, 0.1], blur sigma in [0.1, 2.0] px (the device
kernel has radius 6), RandomResizedCrop boxes to 224 (scale (0.08, 1): enlarging) and PBSD boxes to 64
(scale (0.05, 0.6): mostly shrinking). The device op runs as `jax.jit(jax.vmap(op))` on x / 255; its
output times 255 is compared with PIL's uint8 output, in uint8 levels: mean absolute difference, 99th
percentile, maximum, and the share of values more than one level apart. Even a perfect match shows up
to 0.5 level (PIL rounds or truncates to integers, the device does not). Prints a markdown table and
writes benchmarks/results/device_vs_pil_ops.json.

What the PIL side does differently (dscl_jax/input/augment.py): uint8 blends truncated to integers;
contrast blends with the mean luma rounded to an integer; hue moves by int(shift * 255) levels of PIL's
8-bit HSV; the blur is three box blurs with extended edges; grayscale is PIL's integer luma.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `dscl_jax` from this checkout
  sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from input_pipeline import synthetic_photo  # noqa: E402

from dscl_jax.input import augment  # noqa: E402
from dscl_jax.ops import image as image_ops  # noqa: E402

SIZE = 224
BLUR_RADIUS = 6
FACTOR_RANGE = (0.6, 1.4)  # jitter 0.4 around 1
HUE_RANGE = (-0.1, 0.1)
SIGMA_RANGE = (0.1, 2.0)


def _uniform(low, high):
  return lambda rng: float(rng.uniform(low, high))


def _crop_box(scale):
  return lambda rng: augment.sample_crop_box(SIZE, SIZE, rng, scale=scale).astype(np.float32)


# name -> (device op, PIL op, parameter sampler, what the parameters are). The PIL ops take a PIL image
# and the parameter and return a PIL image.
OPS = {
  "adjust_brightness": (
    image_ops.adjust_brightness,
    augment.adjust_brightness,
    _uniform(*FACTOR_RANGE),
    f"factor U{FACTOR_RANGE}",
  ),
  "adjust_contrast": (
    image_ops.adjust_contrast,
    augment.adjust_contrast,
    _uniform(*FACTOR_RANGE),
    f"factor U{FACTOR_RANGE}",
  ),
  "adjust_saturation": (
    image_ops.adjust_saturation,
    augment.adjust_saturation,
    _uniform(*FACTOR_RANGE),
    f"factor U{FACTOR_RANGE}",
  ),
  "adjust_hue": (image_ops.adjust_hue, augment.adjust_hue, _uniform(*HUE_RANGE), f"shift U{HUE_RANGE}"),
  "rgb_to_grayscale": (
    lambda image, _: image_ops.rgb_to_grayscale(image),
    lambda image, _: augment.to_grayscale(image),
    lambda rng: 0.0,
    "-",
  ),
  "gaussian_blur": (
    functools.partial(image_ops.gaussian_blur, radius=BLUR_RADIUS),
    augment.gaussian_blur,
    _uniform(*SIGMA_RANGE),
    f"sigma U{SIGMA_RANGE}, radius {BLUR_RADIUS}",
  ),
  # The same draws again, 6 px away from the border: reflect padding vs PIL's extended edges apart.
  "gaussian_blur_interior": (
    functools.partial(image_ops.gaussian_blur, radius=BLUR_RADIUS),
    augment.gaussian_blur,
    _uniform(*SIGMA_RANGE),
    f"as above, {BLUR_RADIUS} px border left out",
  ),
  "resized_crop_224": (
    functools.partial(image_ops.resized_crop, size=(SIZE, SIZE)),
    lambda image, box: augment.resized_crop(image, box, SIZE),
    _crop_box((0.08, 1.0)),
    "RandomResizedCrop box, scale (0.08, 1) -> 224",
  ),
  "resized_crop_64": (
    functools.partial(image_ops.resized_crop, size=(64, 64)),
    lambda image, box: augment.resized_crop(image, box, 64),
    _crop_box((0.05, 0.6)),
    "PBSD box, scale (0.05, 0.6) -> 64",
  ),
}


def compare(name: str, images: np.ndarray, rng: np.random.Generator, draws: int) -> dict:
  """Differences in uint8 levels between the device op and PIL for one op, `draws` per image.

  Each op draws its parameters from its own generator (seeded by `rng`), so adding an op leaves the
  others' draws as they were."""
  device_op, pil_op, sample, described = OPS[name]
  inputs = np.repeat(images, draws, axis=0)  # [N, H, W, 3] uint8
  params = np.stack([np.asarray(sample(rng), np.float32) for _ in inputs])
  start = time.perf_counter()
  device = np.asarray(jax.jit(jax.vmap(device_op))(inputs.astype(np.float32) / 255, params))
  device_seconds = time.perf_counter() - start
  # The same float32 values on both sides: PIL gets scalars as Python floats, boxes as arrays.
  pil = np.stack(
    [
      augment.to_array(pil_op(augment.to_pil(image), param if param.ndim else float(param)))
      for image, param in zip(inputs, params)
    ]
  )
  if name == "rgb_to_grayscale":
    pil = pil[..., :1]  # PIL's grayscale repeats its luma over 3 channels
  diff = np.abs(device.astype(np.float64) * 255 - pil.astype(np.float64))
  if name.endswith("_interior"):
    diff = diff[:, BLUR_RADIUS:-BLUR_RADIUS, BLUR_RADIUS:-BLUR_RADIUS]
  return dict(
    params=described,
    samples=len(inputs),
    mean=float(diff.mean()),
    p99=float(np.percentile(diff, 99)),
    max=float(diff.max()),
    over_one_level=float((diff > 1).mean()),
    device_seconds_with_compile=device_seconds,
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=12, help="synthetic 224 x 224 images")
  parser.add_argument("--draws", type=int, default=4, help="parameter draws per image and op")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "device_vs_pil_ops.json"))
  args = parser.parse_args()
  start = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  images = np.stack([np.asarray(synthetic_photo(rng, SIZE, SIZE)) for _ in range(args.images)])
  results = {
    name: compare(name, images, np.random.default_rng([args.seed, k]), args.draws) for k, name in enumerate(OPS)
  }
  seconds = time.perf_counter() - start

  print(f"Device op (x 255) vs PIL uint8, in uint8 levels; {args.images} images x {args.draws} draws each.\n")
  print("| op | parameters | mean abs | p99 | max | > 1 level |")
  print("|---|---|---:|---:|---:|---:|")
  for name, r in results.items():
    print(
      f"| {name} | {r['params']} | {r['mean']:.3f} | {r['p99']:.2f} | {r['max']:.2f} | {100 * r['over_one_level']:.2f}% |"
    )
  print(f"\n{seconds:.1f} s in all")

  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(
      dict(
        description="|device op * 255 - PIL uint8 op| in uint8 levels, same uint8 inputs and parameters",
        images=args.images,
        image_size=SIZE,
        draws_per_image=args.draws,
        seed=args.seed,
        ops=results,
        seconds=seconds,
        machine=dict(platform=platform.platform(), jax=jax.__version__, backend=jax.default_backend()),
      ),
      f,
      indent=2,
    )
    f.write("\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
