"""The per-pixel half of augmentation, in the jitted step (`augment.on_device`).

With `augment.on_device` the host decodes, crops and resizes each view to its size (uint8) and draws every
random parameter with the same per-sample generator and in the same order as the PIL path
(`augment.pretrain_views(on_device=True)`); the parameters travel beside the pixels as one float32
vector per view (`augment.VIEW_PARAMS`). Here, vectorised over the batch: the flip, the colour jitter in
its drawn order, grayscale, the Gaussian blur, PBSD's small crops (cut from the query's flipped,
uncoloured view, resized, flipped and coloured on their own) and the normalisation. With
`augment.device_canvas` the host does not crop either: it sends each decoded image on a fixed canvas
with the global crops' boxes, and the crops are cut and resized here first (`uncoloured_view`).

These are torchvision's float tensor ops (`dscl_jax.ops.image`), not PIL's uint8 ones: values are not
rounded to 8 bits between steps, the hue turns in float HSV instead of PIL's 8-bit HSV, the blur is a
true truncated Gaussian (radius ceil(3 sigma_max), reflected edges) instead of PIL's three box blurs with
extended edges, and the small crops are resized from float pixels. The distributions of the views are
the recipe's; the pixels differ from the PIL path's by the amounts benchmarks/device_vs_pil_ops.py
measures (docs/design.md).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from dscl_jax.input import augment, pixels
from dscl_jax.input.batch_spec import IMAGE_VIEWS
from dscl_jax.ops import image as image_ops

_FIELD = {name: index for index, name in enumerate(augment.VIEW_PARAMS)}
_JITTER = ("brightness", "contrast", "saturation", "hue")


def blur_radius(blur_sigma, view_size: int) -> int:
  """The blur kernel's radius for a view: 3 of the recipe's largest sigma, and less than the view."""
  return max(1, min(math.ceil(3 * blur_sigma[1]), view_size - 1))


def _jitter(image: jax.Array, params: jax.Array) -> jax.Array:
  """ColorJitter on `[H, W, C]` in the order `params` names; a part at its identity value is skipped."""
  channels = image.shape[-1]
  ops = [
    lambda x: image_ops.adjust_brightness(x, params[_FIELD["brightness"]]),
    lambda x: image_ops.adjust_contrast(x, params[_FIELD["contrast"]]),
  ]
  if channels == 3:  # a 1-channel view has no saturation or hue (the host drew none)
    ops += [
      lambda x: image_ops.adjust_saturation(x, params[_FIELD["saturation"]]),
      # a hue round trip through HSV is not the identity in float: skipped when not drawn
      lambda x: jnp.where(params[_FIELD["hue"]] == 0, x, image_ops.adjust_hue(x, params[_FIELD["hue"]])),
    ]
  for slot in range(4):
    part = params[_FIELD[f"order_{slot}"]]
    image = jnp.select([part == k for k in range(len(ops))], [op(image) for op in ops], image)
  return image


def colour_view(image: jax.Array, params: jax.Array, blur_radius_px: int) -> jax.Array:
  """One view `[H, W, C]` float in [0, 1] through its `VIEW_PARAMS` `[11]`: flip, jitter, grayscale, blur."""
  image = image_ops.horizontal_flip(image, params[_FIELD["flip"]] > 0)
  image = _jitter(image, params)
  if image.shape[-1] == 3:
    gray = jnp.broadcast_to(image_ops.rgb_to_grayscale(image), image.shape)
    image = jnp.where(params[_FIELD["grayscale"]] > 0, gray, image)
  sigma = params[_FIELD["blur_sigma"]]
  blurred = image_ops.gaussian_blur(image, jnp.where(sigma > 0, sigma, 1.0), blur_radius_px)
  return jnp.where(sigma > 0, blurred, image)


def _normalize(image: jax.Array, cfg_augment: Any) -> jax.Array:
  mean, std = jnp.asarray(cfg_augment.mean, jnp.float32), jnp.asarray(cfg_augment.std, jnp.float32)
  return (image - mean) / std


def small_crops(query: jax.Array, boxes: jax.Array, params: jax.Array, cfg_augment: Any, cfg_pbsd: Any) -> jax.Array:
  """PBSD's small crops of one sample: `query` `[S, S, C]` in [0, 1] (flipped, not coloured), `boxes`
  `[n, 4]` in its pixels, `params` `[n, 11]` -> `[n, s, s, C]` in [0, 1]."""
  size = cfg_pbsd.crop_size
  radius = blur_radius(cfg_pbsd.blur_sigma, size)
  cut = jax.vmap(lambda box: image_ops.resized_crop(query, box, (size, size)))(boxes)
  return jax.vmap(lambda crop, p: colour_view(crop, p, radius))(cut, params)


def _check_uint8(batch: dict, name: str, reason: str) -> jax.Array:
  if batch[name].dtype != jnp.uint8:
    raise ValueError(f"batch[{name!r}] comes with {reason}, so it must be uint8 pixels, got {batch[name].dtype}")
  return batch[name]


def uncoloured_view(batch: dict, name: str, size: int) -> jax.Array:
  """View `name` before its flip and colours, float32 `[B, S, S, C]` in [0, 1] (S = `size`).

  Its uint8 pixels from the host, or with `name + "_box"` (`augment.device_canvas`) that box of its
  canvas resized to S x S here (`ops.image.resized_crop`: torchvision's antialiased bilinear, in float).
  """
  box_name = name + augment.BOX_SUFFIX
  if box_name in batch:
    canvas_name = augment.CANVAS_OF[name]
    canvas = _check_uint8(batch, canvas_name, f"{box_name!r}").astype(jnp.float32) / 255.0
    return jax.vmap(lambda image, box: image_ops.resized_crop(image, box, (size, size)))(canvas, batch[box_name])
  return _check_uint8(batch, name, f"{name + augment.AUGMENT_SUFFIX!r}").astype(jnp.float32) / 255.0  # ToTensor


def finish_views(batch: dict, cfg_augment: Any, cfg_pbsd: Any) -> dict:
  """`batch` with every image view as the model takes it (float32, normalised).

  A view `v` that comes with `v + "_augment"` (`augment.on_device`) is augmented here (cut from its
  canvas first when it comes as `v + "_box"`), and 'small_crops_augment' makes 'small_crops' from the
  query; any other view goes through `pixels.to_float` as before. The parameters, boxes and canvases
  are dropped.
  """
  suffix = augment.AUGMENT_SUFFIX
  dropped = {augment.CANVAS_OF[name] for name in augment.CANVAS_OF if name + augment.BOX_SUFFIX in batch}
  out = {
    name: value
    for name, value in batch.items()
    if not name.endswith((suffix, augment.BOX_SUFFIX)) and name not in dropped
  }
  size = cfg_augment.image_size
  radius = blur_radius(cfg_augment.blur_sigma, size)
  for name in IMAGE_VIEWS:
    if name == "small_crops" and name not in batch:  # cut from the query below
      continue
    if name + suffix not in batch:
      if name in batch:
        out[name] = pixels.to_float(batch[name], cfg_augment, name)
      continue
    unit = uncoloured_view(batch, name, size)
    params = batch[name + suffix]
    if name == "query" and "small_crops" + suffix in batch:
      flipped = jax.vmap(image_ops.horizontal_flip)(unit, params[:, _FIELD["flip"]] > 0)
      crops = jax.vmap(lambda q, b, p: small_crops(q, b, p, cfg_augment, cfg_pbsd))(
        flipped, batch["boxes"], batch["small_crops" + suffix]
      )
      out["small_crops"] = _normalize(crops, cfg_augment)
    out[name] = _normalize(jax.vmap(lambda x, p: colour_view(x, p, radius))(unit, params), cfg_augment)
  return out
