"""Re-estimated BatchNorm statistics equal the batch statistics of the probe images, layer by layer:
the mean and unbiased variance of every BatchNorm's input, computed with NumPy from the captured
training-mode activations, averaged over the batches. The probe stream's uint8 pixels are normalised on
the device; the expectation uses the host's `augment.normalize`."""

import jax
import numpy as np
from flax import traverse_util

from dscl_jax.core import sharding
from dscl_jax.evaluation.bn_reestimation import reestimate_batch_stats
from dscl_jax.input import augment
from dscl_jax.models.resnet import ResNet
from tests import REPO_ROOT


def trunk_and_variables():
  trunk = ResNet(8, "cifar")
  variables = trunk.init(jax.random.PRNGKey(0), np.zeros((2, 16, 16, 1), np.float32), train=False)
  rng = np.random.default_rng(0)
  # Running statistics far from the truth: re-estimation must replace them, not blend into them.
  stats = jax.tree.map(lambda x: rng.uniform(3.0, 5.0, x.shape).astype(np.float32), variables["batch_stats"])
  return trunk, {"params": variables["params"], "batch_stats": stats}


def batch_statistics(trunk, variables, images):
  """{BatchNorm path: (mean, unbiased var)} of every BatchNorm's input on `images` (NumPy, float64)."""
  _, state = trunk.apply(
    variables, images, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True
  )
  captured = traverse_util.flatten_dict(state["intermediates"])
  expected = {}
  for path in traverse_util.flatten_dict(variables["batch_stats"]):
    if path[-1] != "mean":
      continue
    bn = path[:-1]
    # The input of a BatchNorm is the output of the convolution that feeds it.
    conv = bn[:-1] + ((bn[-1].replace("BatchNorm", "Conv").replace("_bn", "_conv")),)
    x = np.asarray(captured[conv + ("__call__",)][0], np.float64).reshape(
      -1, np.asarray(captured[conv + ("__call__",)][0]).shape[-1]
    )
    expected[bn] = (x.mean(0), x.var(0, ddof=1))
  return expected


def test_running_statistics_become_the_probe_batch_statistics():
  trunk, variables = trunk_and_variables()
  mesh = sharding.make_mesh(1)
  rng = np.random.default_rng(1)
  cfg_augment = augment.default_augment_config(16, 1)
  cfg_augment.mean, cfg_augment.std = (0.3,), (0.2,)
  batches = [{"image": rng.integers(0, 256, size=(8, 16, 16, 1), dtype=np.uint8)} for _ in range(2)]
  stats = reestimate_batch_stats(trunk, variables, iter(batches), 2, mesh, cfg_augment)
  per_batch = [batch_statistics(trunk, variables, augment.normalize(b["image"], (0.3,), (0.2,))) for b in batches]
  flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, stats))
  assert len(per_batch[0]) == len([p for p in flat if p[-1] == "mean"]) > 5
  for bn, _ in per_batch[0].items():
    mean = (per_batch[0][bn][0] + per_batch[1][bn][0]) / 2
    var = (per_batch[0][bn][1] + per_batch[1][bn][1]) / 2
    np.testing.assert_allclose(flat[bn + ("mean",)], mean, rtol=1e-4, atol=1e-5, err_msg=str(bn))
    np.testing.assert_allclose(flat[bn + ("var",)], var, rtol=1e-4, atol=1e-5, err_msg=str(bn))


def test_device_augmented_probe_batches_are_flipped_first():
  """With `augment.on_device` a probe batch holds unflipped crops and their flips ("image_augment"):
  the statistics are those of the flipped images, as the probe step sees them."""
  trunk, variables = trunk_and_variables()
  rng = np.random.default_rng(3)
  cfg_augment = augment.default_augment_config(16, 1)
  cfg_augment.on_device = True
  crops = rng.integers(0, 256, size=(8, 16, 16, 1), dtype=np.uint8)
  flips = np.array([1, 0, 1, 1, 0, 0, 1, 0], np.float32)
  params = np.stack([augment.ColourDraw().vector(bool(f)) for f in flips])
  batch = {"image": crops, "image_augment": params, "label": np.zeros(8, np.int32)}
  stats = reestimate_batch_stats(trunk, variables, iter([batch]), 1, sharding.make_mesh(1), cfg_augment)
  flipped = np.where(flips[:, None, None, None] > 0, crops[:, :, ::-1], crops)
  expected = batch_statistics(trunk, variables, augment.normalize(flipped, cfg_augment.mean, cfg_augment.std))
  unflipped = batch_statistics(trunk, variables, augment.normalize(crops, cfg_augment.mean, cfg_augment.std))
  flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, stats))
  moved = 0
  for bn, (mean, var) in expected.items():
    np.testing.assert_allclose(flat[bn + ("mean",)], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flat[bn + ("var",)], var, rtol=1e-4, atol=1e-5)
    moved += not np.allclose(unflipped[bn][0], mean, rtol=1e-4, atol=1e-5)
  assert moved > 0  # the flips matter to some layer, so the check above can tell the two apart


def test_one_batch_gives_its_own_statistics():
  trunk, variables = trunk_and_variables()
  images = np.random.default_rng(2).normal(size=(8, 16, 16, 1)).astype(np.float32)
  # Float images are taken as normalised already (the mean / std are then unused).
  stats = reestimate_batch_stats(
    trunk, variables, iter([{"image": images}]), 1, sharding.make_mesh(-1), augment.default_augment_config(16, 1)
  )
  expected = batch_statistics(trunk, variables, images)
  flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, stats))
  for bn, (mean, var) in expected.items():
    np.testing.assert_allclose(flat[bn + ("mean",)], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flat[bn + ("var",)], var, rtol=1e-4, atol=1e-5)


def test_probe_and_eval_use_the_reestimated_statistics(tmp_path):
  """End to end: the probe saves the re-estimated statistics in its state and eval restores them."""
  import json
  import os
  import subprocess
  import sys

  import orbax.checkpoint as ocp

  root = REPO_ROOT
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "dscl_jax.main",
      "--config",
      "configs/digits_lt_dscl.py",
      "--workdir",
      str(tmp_path),
      "--config.train.max_steps=4",
      "--config.probe.max_steps=3",
      "--config.probe.reestimate_bn_batches=2",
      "--config.probe.batch_size=64",
    ],
    cwd=root,
    capture_output=True,
    text=True,
    timeout=600,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "BatchNorm statistics re-estimated on 2 batches of 64 probe training images" in out.stdout
  probe_dir = tmp_path / "probe" / "checkpoints" / "3" / "state"
  pretrain_dir = tmp_path / "pretrain" / "checkpoints" / "4" / "state"
  probe = ocp.PyTreeCheckpointer().restore(str(probe_dir))
  pretrained = ocp.PyTreeCheckpointer().restore(str(pretrain_dir))
  saved = np.asarray(probe["trunk_batch_stats"]["stem_bn"]["mean"])
  assert not np.allclose(saved, np.asarray(pretrained["batch_stats"]["trunk"]["stem_bn"]["mean"]))
  assert json.loads((tmp_path / "eval_test.json").read_text())["num_images"] == 500
