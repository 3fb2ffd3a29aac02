"""torchvision ResNet weights for our ImageNet-style ResNet trunk (Places-LT starts from ImageNet weights).

`tools/convert_torchvision_resnet.py`, run by a Python that has torch, turns a torchvision state_dict into a
.npz keyed by torchvision's names; this module reads that .npz with numpy alone (torch is never imported).

Every torchvision ResNet has its counterpart here: resnet18 / resnet34 (basic blocks, K = 1, 2) load into
`ResNet(18 | 34, "imagenet")`, resnet50 / 101 / 152 (bottlenecks, K = 1, 2, 3) into `ResNet(50 | 101 | 152,
"imagenet")`. Name map (I, J, K from 1, except J from 0 as in torchvision):

  conv1                       -> stem_conv                        [O, I, kH, kW] -> kernel [kH, kW, I, O]
  bn1                         -> stem_bn
  layerI.J.convK / bnK        -> stageI_block{J+1} / Conv_{K-1}, BatchNorm_{K-1}
  layerI.J.downsample.0 / .1  -> stageI_block{J+1} / proj_conv, proj_bn
  BatchNorm weight, bias      -> params scale, bias
  running_mean, running_var   -> batch_stats mean, var

`fc.*` (the ImageNet classifier) and `num_batches_tracked` counters are not part of the trunk and are skipped.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from dscl_jax.models.resnet import ResNet, resnet_block_kind, resnet_stage_sizes

# torchvision's resnet18 / resnet34 (basic blocks) and resnet50 / 101 / 152 (bottlenecks), each the same
# architecture as our imagenet-style ResNet of that depth.
SUPPORTED_DEPTHS = (18, 34, 50, 101, 152)

_BATCHNORM_NAMES = {
  ("params", "scale"): "weight",
  ("params", "bias"): "bias",
  ("batch_stats", "mean"): "running_mean",
  ("batch_stats", "var"): "running_var",
}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")
_BLOCK_LAYER = re.compile(r"(Conv|BatchNorm)_(\d+)$")
_TORCH_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.")
_TORCH_BOTTLENECK_KEY = re.compile(r"layer\d+\.\d+\.(conv|bn)3\.")
_MAX_LISTED = 8


def _check_depth(depth: int) -> None:
  if depth not in SUPPORTED_DEPTHS:
    raise ValueError(f"torchvision weights load into ResNet depth 18, 34, 50, 101 or 152, got depth={depth}")


def _torchvision_module_name(module_path: tuple[str, ...]) -> str:
  """Flax module path -> torchvision module name: ('stage2_block1', 'Conv_1') -> 'layer2.0.conv2'."""
  if module_path == ("stem_conv",):
    return "conv1"
  if module_path == ("stem_bn",):
    return "bn1"
  block = _BLOCK.match(module_path[0]) if len(module_path) == 2 else None
  if block is None:
    raise ValueError(
      f"ResNet module {'/'.join(module_path)} has no torchvision counterpart; the "
      "name map in convert/torchvision_resnet.py must follow models/resnet.py"
    )
  prefix = f"layer{block[1]}.{int(block[2]) - 1}."
  layer = module_path[1]
  if layer == "proj_conv":
    return prefix + "downsample.0"
  if layer == "proj_bn":
    return prefix + "downsample.1"
  match = _BLOCK_LAYER.match(layer)
  if match is None:
    raise ValueError(
      f"ResNet module {'/'.join(module_path)} has no torchvision counterpart; the "
      "name map in convert/torchvision_resnet.py must follow models/resnet.py"
    )
  return prefix + ("conv" if match[1] == "Conv" else "bn") + str(int(match[2]) + 1)


def _torchvision_key(collection: str, path: tuple[str, ...]) -> str:
  """('params', ('stem_bn', 'scale')) -> 'bn1.weight'."""
  module = _torchvision_module_name(path[:-1])
  if path[-1] == "kernel":
    return module + ".weight"
  return module + "." + _BATCHNORM_NAMES[(collection, path[-1])]


@functools.lru_cache(maxsize=None)
def _trunk_leaf_table(depth: int) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """{torchvision key: (collection, flax path, flax shape)} for every leaf of our ResNet-{depth}."""
  # Parameter shapes do not depend on the image size, so a tiny image keeps the trace cheap.
  shapes = jax.eval_shape(
    lambda: ResNet(depth, "imagenet").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
  )
  table = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in flax.traverse_util.flatten_dict(shapes[collection]).items():
      key = _torchvision_key(collection, path)
      if key in table:
        raise ValueError(f"torchvision key {key} maps to both {table[key][1]} and {path}")
      table[key] = (collection, path, tuple(leaf.shape))
  return table


def _is_ignored(key: str) -> bool:
  return key.startswith("fc.") or key.endswith("num_batches_tracked")


def _natural_order(key: str) -> list:
  """Sort key that puts layer3.6 before layer3.10."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _listed(keys: list[str]) -> str:
  shown = ", ".join(keys[:_MAX_LISTED])
  return shown + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def _layout(depth: int) -> tuple[tuple[int, ...], str]:
  """(blocks per stage, block kind) of our ImageNet-style ResNet-{depth}."""
  return resnet_stage_sizes(depth, "imagenet"), resnet_block_kind(depth, "imagenet")


def _depth_hint(keys, depth: int) -> str:
  """Names the depth a checkpoint's blocks per stage and block kind belong to when they differ from
  `depth`'s (ResNet-34 and ResNet-50 share (3, 4, 6, 3) and differ only in the block)."""
  blocks: dict[int, set[int]] = {}
  bottleneck = False
  for key in keys:
    match = _TORCH_BLOCK_KEY.match(key)
    if match:
      blocks.setdefault(int(match[1]), set()).add(int(match[2]))
      bottleneck = bottleneck or _TORCH_BOTTLENECK_KEY.match(key) is not None
  if not blocks:
    return ""
  found = (tuple(len(blocks[stage]) for stage in sorted(blocks)), "bottleneck" if bottleneck else "basic")
  expected = _layout(depth)
  if found == expected:
    return ""
  matching = [d for d in SUPPORTED_DEPTHS if _layout(d) == found]
  named = f" (a ResNet-{matching[0]})" if matching else ""
  return (
    f" The checkpoint has {found[0]} {found[1]} blocks per stage{named} but ResNet-{depth} has "
    f"{expected[0]} {expected[1]} blocks: pass the checkpoint's depth."
  )


def torchvision_arrays_to_variables(
  arrays: Mapping[str, np.ndarray], depth: int, source: str = "arrays"
) -> dict[str, Any]:
  """{torchvision name: array} -> {"params", "batch_stats"} of `ResNet(depth, "imagenet")`.

  Every trunk key must be present exactly as the trunk needs it and every other key (except `fc.*` and
  `num_batches_tracked`) is an error, so a wrong depth or a non-ResNet checkpoint cannot load half-way.
  `source` names the arrays in error messages.
  """
  _check_depth(depth)
  table = _trunk_leaf_table(depth)
  unexpected = sorted((k for k in arrays if k not in table and not _is_ignored(k)), key=_natural_order)
  missing = sorted((k for k in table if k not in arrays), key=_natural_order)
  if unexpected or missing:
    problems = []
    if missing:
      problems.append(f"missing {len(missing)} key(s): {_listed(missing)}")
    if unexpected:
      problems.append(f"{len(unexpected)} key(s) with no place in the trunk: {_listed(unexpected)}")
    raise ValueError(
      f"{source} does not match torchvision ResNet-{depth}: " + "; ".join(problems) + "." + _depth_hint(arrays, depth)
    )

  flat = {"params": {}, "batch_stats": {}}
  for key, (collection, path, shape) in table.items():
    value = np.asarray(arrays[key])
    is_kernel = path[-1] == "kernel"
    # torchvision stores convolutions [O, I, kH, kW]; flax wants [kH, kW, I, O].
    torch_shape = (shape[3], shape[2], shape[0], shape[1]) if is_kernel else shape
    if value.shape != torch_shape:
      raise ValueError(
        f"{source}: {key} has shape {value.shape} but ResNet-{depth} (width 1) needs "
        f"{torch_shape} for {collection}/{'/'.join(path)}"
      )
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f"{source}: {key} has dtype {value.dtype}; expected floating point weights")
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{source}: {key} holds non-finite values; the checkpoint is corrupt")
    if is_kernel:
      value = value.transpose(2, 3, 1, 0)
    flat[collection][path] = jnp.asarray(value, jnp.float32)
  return {collection: flax.traverse_util.unflatten_dict(leaves) for collection, leaves in flat.items()}


def load_torchvision_resnet(npz_path: str | os.PathLike, depth: int) -> dict[str, Any]:
  """A .npz written by tools/convert_torchvision_resnet.py -> {"params", "batch_stats"} of our ResNet trunk.

  The result plugs into `ResNet(depth, style="imagenet", width=1).apply(...)`; see the module docstring
  for the name map.
  """
  _check_depth(depth)
  with np.load(npz_path, allow_pickle=False) as npz:
    arrays = {key: npz[key] for key in npz.files}
  return torchvision_arrays_to_variables(arrays, depth, source=os.fspath(npz_path))


def replace_trunk(variables: Mapping[str, Any], loaded: Mapping[str, Any], depth: int) -> dict[str, Any]:
  """Encoder variables with params["trunk"] and batch_stats["trunk"] replaced by `loaded` (what
  `load_torchvision_resnet` returns). Pure and shape-checked, so it runs inside `jax.jit` too.

  The projection head, the classifier and every other collection are returned as they were.
  `variables` is what `Encoder.init` returns; the Encoder must be `style="imagenet"`, `width=1` at `depth`.
  """
  for collection in ("params", "batch_stats"):
    if collection not in variables or "trunk" not in variables[collection]:
      raise ValueError(
        f"variables have no {collection}['trunk'] (collections: {sorted(variables)}); "
        "pass the variables of an Encoder, as returned by Encoder.init"
      )
  for collection in ("params", "batch_stats"):
    current = flax.traverse_util.flatten_dict(variables[collection]["trunk"])
    new = flax.traverse_util.flatten_dict(loaded[collection])
    mismatched = sorted(
      "/".join(path)
      for path in current.keys() | new.keys()
      if path not in current or path not in new or tuple(current[path].shape) != new[path].shape
    )
    if mismatched:
      raise ValueError(
        f"the Encoder's trunk is not a width-1 ResNet-{depth}: {collection} leaves "
        f"{_listed(mismatched)} differ; set the model's depth to {depth}, style "
        "'imagenet' and width 1, or convert a checkpoint of the model's depth"
      )
  return {
    **variables,
    "params": {**variables["params"], "trunk": loaded["params"]},
    "batch_stats": {**variables["batch_stats"], "trunk": loaded["batch_stats"]},
  }
