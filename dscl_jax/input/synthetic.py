"""Random batches with a config's real shapes, for smoke tests and benchmarks (no data on disk needed)."""

from __future__ import annotations

import numpy as np

from dscl_jax.input import augment


def pretrain_batch_shapes(
  config, views, channels: int, pixels: bool = False
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{name: (shape, dtype)} of the global pretrain batch holding `views` (a method's
  `requirements.views`; see `pretrain_batch`)."""
  b, s = config.train.batch_size, config.augment.image_size
  pixel_dtype = np.dtype(np.uint8 if pixels else np.float32)
  image = ((b, s, s, channels), pixel_dtype)
  shapes = {"query": image, "key": image, "label": ((b,), np.dtype(np.int32))}
  if "key" not in views:
    del shapes["key"]
  if "class_aware" in views:
    shapes["class_aware"], shapes["class_aware_label"] = image, ((b,), np.dtype(np.int32))
  if "small_crops" in views:
    n, cs = config.pbsd.num_crops, config.pbsd.crop_size
    shapes["small_crops"] = ((b, n, cs, cs, channels), pixel_dtype)
    shapes["boxes"] = ((b, n, 4), np.dtype(np.float32))
  if pixels and config.augment.on_device:  # the views' parameters; the step cuts the small crops
    params = len(augment.VIEW_PARAMS)
    for name in [name for name in shapes if name in ("query", "key", "class_aware")]:
      shapes[name + augment.AUGMENT_SUFFIX] = ((b, params), np.dtype(np.float32))
    if shapes.pop("small_crops", None):
      shapes["small_crops" + augment.AUGMENT_SUFFIX] = ((b, config.pbsd.num_crops, params), np.dtype(np.float32))
    canvas = config.augment.device_canvas
    if canvas:  # and the global crops: their images on canvases, and boxes
      for name in [name for name in shapes if name in augment.CANVAS_OF]:
        shapes.pop(name)
        shapes[augment.CANVAS_OF[name]] = ((b, canvas, canvas, channels), pixel_dtype)
        shapes[name + augment.BOX_SUFFIX] = ((b, 4), np.dtype(np.float32))
  return shapes


def pretrain_batch(
  config, views, channels: int, num_classes: int, rng: np.random.Generator, pixels: bool = False
) -> dict[str, np.ndarray]:
  """A global pretrain batch with `views` (a method's `requirements.views`): "query", "key" [B, S, S, C],
  "label" [B], "small_crops" [B, n, s, s, C] with "boxes" [B, n, 4] drawn like the small-crop boxes
  (inside the S x S view, area fraction in `pbsd.crop_scale`), "class_aware" [B, S, S, C] with
  "class_aware_label" [B]. The query, key and labels are the same numbers whatever the views asked for.

  The image views are standard-normal floats (as if normalised), or with `pixels` uniform uint8 pixels,
  what the input pipeline sends (the step then normalises them, as in training). With `pixels` and
  `augment.on_device`, as the pipeline sends them then: each view's parameters drawn by the recipe
  ('<view>_augment'), and 'small_crops_augment' with whole-pixel boxes instead of 'small_crops'; with
  `augment.device_canvas` too, each global view comes as its canvas of random pixels and a
  RandomResizedCrop box on it ('canvas' and 'query_box', ...)."""
  shapes = pretrain_batch_shapes(config, views, channels, pixels)
  b, s = config.train.batch_size, config.augment.image_size

  def images(shape):
    if pixels:
      return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.normal(size=shape).astype(np.float32)

  view_shape = (b, s, s, channels)
  batch = {
    "query": images(view_shape),
    "key": images(view_shape),
    "label": rng.integers(0, num_classes, size=b).astype(np.int32),
  }
  if "key" not in views:
    del batch["key"]
  if "class_aware_label" in shapes:
    batch["class_aware"] = images(view_shape)
    batch["class_aware_label"] = rng.integers(0, num_classes, size=b).astype(np.int32)
  for name in [name for name in augment.CANVAS_OF if name + augment.BOX_SUFFIX in shapes]:
    batch.pop(name, None)
    canvas_name, canvas = augment.CANVAS_OF[name], config.augment.device_canvas
    if canvas_name not in batch:
      batch[canvas_name] = images(shapes[canvas_name][0])
    boxes = [augment.sample_crop_box(canvas, canvas, rng, config.augment.crop_scale) for _ in range(b)]
    batch[name + augment.BOX_SUFFIX] = np.stack(boxes).astype(np.float32)
  if "small_crops" in shapes:
    n = config.pbsd.num_crops
    batch["small_crops"] = images(shapes["small_crops"][0])
  if "boxes" in shapes:
    n = config.pbsd.num_crops
    side = np.sqrt(rng.uniform(*config.pbsd.crop_scale, size=(b, n, 1))) * s
    xy = rng.uniform(0, 1, size=(b, n, 2)) * (s - side)
    if "small_crops" not in shapes:  # the device cuts them: whole pixels, as the pipeline's boxes
      side, xy = np.maximum(np.round(side), 1), np.floor(xy)
    batch["boxes"] = np.concatenate([xy, xy + side], axis=-1).astype(np.float32)
  for name in [name for name in shapes if name.endswith(augment.AUGMENT_SUFFIX)]:
    view = name[: -len(augment.AUGMENT_SUFFIX)]
    recipe = config.augment.key if view == "key" else config.augment.query
    sigma, flip = (
      (config.pbsd.blur_sigma, config.pbsd.flip_prob) if view == "small_crops" else (config.augment.blur_sigma, 0.5)
    )
    draws = [
      augment.draw_colour(rng, recipe, channels, sigma, flip_prob=flip)
      for _ in range(int(np.prod(shapes[name][0][:-1])))
    ]
    batch[name] = np.stack(draws).reshape(shapes[name][0])
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == shapes
  return batch
