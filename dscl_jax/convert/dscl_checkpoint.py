"""Weights of the official DSCL PyTorch code (github.com/SY-Xuan/DSCL) for our Encoder.

The official checkpoint (`checkpoint.pth.tar`: {"epoch", "arch", "state_dict", "optimizer"}) holds a
MoCo-style model under DistributedDataParallel: `module.encoder_q.*` is a torchvision ResNet whose `fc`
is the projection MLP `Sequential(Linear(F, F), ReLU(), Linear(F, dim))`; `module.encoder_k.*` (the
momentum copy), `module.queue`, `module.main_label_queue` and `module.queue_ptr` are training state.

`tools/convert_torchvision_resnet.py --strip-prefix module.encoder_q.` (run with torch) turns the query
encoder into a .npz keyed by torchvision names; `dscl_arrays_to_variables` maps it onto our Encoder:
  conv1, bn1, layerI.J.*       -> params / batch_stats ["trunk"]   (dscl_jax.convert.torchvision_resnet)
  fc.0.weight [F, F], fc.0.bias -> params["head"]["hidden"] kernel [F, F] (transposed), bias
  fc.2.weight [D, F], fc.2.bias -> params["head"]["out"] kernel [F, D] (transposed), bias
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from dscl_jax.convert.torchvision_resnet import torchvision_arrays_to_variables

HEAD_KEYS = {
  "fc.0.weight": ("hidden", "kernel"),
  "fc.0.bias": ("hidden", "bias"),
  "fc.2.weight": ("out", "kernel"),
  "fc.2.bias": ("out", "bias"),
}


def dscl_arrays_to_variables(arrays: Mapping[str, np.ndarray], model_config, source: str = "arrays") -> dict[str, Any]:
  """{torchvision name of encoder_q: array} -> {"params": {"trunk", "head"}, "batch_stats": {"trunk"}} for
  `build_encoder(model_config, projection_head="mlp")`.

  The trunk must be a width-1 torchvision ResNet of `model_config.depth` (style "imagenet"); the head's
  hidden width must be `model_config.head_hidden_dim` (0: the trunk's width) and its output
  `model_config.embed_dim`. Any missing or surplus key, or a shape that does not fit, raises naming it.
  """
  if model_config.style != "imagenet" or model_config.get("width", 1) != 1:
    raise ValueError(
      f"the official DSCL models are torchvision ResNets: set model.style='imagenet' and "
      f"model.width=1 (got {model_config.style!r}, width {model_config.get('width', 1)})"
    )
  missing = [key for key in HEAD_KEYS if key not in arrays]
  if missing:
    raise ValueError(
      f"{source} has no projection MLP key(s) {', '.join(missing)}; the official DSCL encoder_q "
      f"ends in fc = Sequential(Linear, ReLU, Linear)"
    )
  surplus = sorted(k for k in arrays if k.startswith("fc.") and k not in HEAD_KEYS)
  if surplus:
    raise ValueError(f"{source} has fc key(s) {', '.join(surplus)} that the DSCL projection MLP does not have")
  trunk_arrays = {k: v for k, v in arrays.items() if not k.startswith("fc.")}
  trunk = torchvision_arrays_to_variables(trunk_arrays, model_config.depth, source=source)

  features = trunk["params"]["stage4_block1"]["proj_conv"]["kernel"].shape[-1]
  hidden = model_config.get("head_hidden_dim") or features
  expected = {
    "fc.0.weight": (hidden, features),
    "fc.0.bias": (hidden,),
    "fc.2.weight": (model_config.embed_dim, hidden),
    "fc.2.bias": (model_config.embed_dim,),
  }
  head: dict[str, dict[str, Any]] = {"hidden": {}, "out": {}}
  for key, (layer, name) in HEAD_KEYS.items():
    value = np.asarray(arrays[key], np.float32)
    if value.shape != expected[key]:
      raise ValueError(
        f"{source}: {key} has shape {value.shape} but this config needs {expected[key]} "
        f"(model.embed_dim {model_config.embed_dim}, model.head_hidden_dim "
        f"{model_config.get('head_hidden_dim')}: 0 means the trunk's {features})"
      )
    head[layer][name] = jnp.asarray(value.T if name == "kernel" else value)  # torch Linear is [out, in]
  return {"params": {"trunk": trunk["params"], "head": head}, "batch_stats": {"trunk": trunk["batch_stats"]}}


def save_dscl_checkpoint(config, npz_path, workdir) -> epath.Path:
  """Convert `npz_path` for `config.model` and save it as `<workdir>/pretrain/checkpoints/0`; returns
  that step directory. Fails if the workdir already has pretrain checkpoints."""
  # Imported here: dscl_jax.runtime.checkpoint and the methods import this package's models.
  from dscl_jax import methods
  from dscl_jax.models.encoder import build_encoder
  from dscl_jax.runtime import checkpoint

  needs = methods.get_method(config).requirements
  if needs.projection_head != "mlp":
    raise ValueError(
      f"method {config.method!r} uses a {needs.projection_head!r} head; the official DSCL "
      f"weights have DSCL's 'mlp' head: use a DSCL config"
    )
  directory = epath.Path(workdir) / "pretrain" / "checkpoints"
  if checkpoint.has_checkpoint(directory):
    raise FileExistsError(f"{directory} already holds checkpoints; import into a new --workdir")
  with epath.Path(npz_path).open("rb") as f, np.load(f, allow_pickle=False) as npz:
    arrays = {key: npz[key] for key in npz.files}
  weights = dscl_arrays_to_variables(arrays, config.model, source=str(npz_path))

  # The converted trees must be exactly what this config's Encoder builds (names and shapes).
  channels = len(config.augment.mean)
  encoder = build_encoder(config.model, projection_head="mlp")
  shapes = jax.eval_shape(
    lambda: encoder.init(
      jax.random.PRNGKey(0),
      np.zeros((1, config.augment.image_size, config.augment.image_size, channels), np.float32),
      train=False,
    )
  )
  for collection in ("params", "batch_stats"):
    want = {checkpoint.leaf_name(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(shapes[collection])}
    got = {checkpoint.leaf_name(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(weights[collection])}
    if want != got:
      different = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
      raise ValueError(f"converted {collection} differ from this config's Encoder at {different[:5]}")

  mgr = checkpoint.manager(directory, job="import")
  mgr.save(0, weights)
  mgr.wait_until_finished()
  return directory / "0"
