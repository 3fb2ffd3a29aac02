"""The custom BatchNorm (dscl_jax/models/resnet.py) against NumPy written from the definition, float64:
whole-batch and grouped ("ghost") statistics in training mode, PyTorch's running-statistics update with the
unbiased variance, and inference from the running statistics; the whole-batch rule also against
torch.nn.BatchNorm1d / 2d (run by /usr/bin/python3 on .npy files, skipped when torch is missing)."""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dscl_jax.models.resnet import BatchNorm

EPS, MOMENTUM = 1e-5, 0.9  # flax momentum 0.9 = PyTorch momentum 0.1


def variables(features, rng):
  return {
    "params": {
      "scale": rng.uniform(0.5, 1.5, features).astype(np.float32),
      "bias": rng.normal(0, 0.3, features).astype(np.float32),
    },
    "batch_stats": {
      "mean": rng.normal(0, 1, features).astype(np.float32),
      "var": rng.uniform(0.5, 2.0, features).astype(np.float32),
    },
  }


def numpy_batchnorm(x, v, group_size=None):
  """(output, new running mean, new running var) from the definition, in float64."""
  x = x.astype(np.float64)
  batch, features = x.shape[0], x.shape[-1]
  g = batch if group_size is None else group_size
  groups = x.reshape((batch // g, g) + x.shape[1:])
  outputs, means, unbiased = [], [], []
  for group in groups:
    flat = group.reshape(-1, features)  # every element of a channel: samples x positions
    mean, var = flat.mean(0), flat.var(0)  # biased variance normalises
    outputs.append((group - mean) / np.sqrt(var + EPS) * v["params"]["scale"] + v["params"]["bias"])
    means.append(mean)
    unbiased.append(flat.var(0, ddof=1))  # the running variance is unbiased, as in PyTorch
  stats = v["batch_stats"]
  new_mean = MOMENTUM * stats["mean"] + (1 - MOMENTUM) * np.mean(means, 0)
  new_var = MOMENTUM * stats["var"] + (1 - MOMENTUM) * np.mean(unbiased, 0)
  return np.concatenate(outputs).reshape(x.shape), new_mean, new_var


def apply_train(x, v, group_size=None):
  module = BatchNorm(use_running_average=False, momentum=MOMENTUM, epsilon=EPS, group_size=group_size)
  y, mutated = module.apply(v, jnp.asarray(x), mutable=["batch_stats"])
  return np.asarray(y), np.asarray(mutated["batch_stats"]["mean"]), np.asarray(mutated["batch_stats"]["var"])


SHAPES = {"nhwc": (8, 5, 3, 6), "flat": (12, 7)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("group_size", [None, 2, 4])
def test_training_mode_matches_numpy(shape, group_size):
  rng = np.random.default_rng(0)
  x = (rng.normal(2.0, 3.0, shape)).astype(np.float32)  # non-zero mean, non-unit variance
  v = variables(shape[-1], rng)
  y, mean, var = apply_train(x, v, group_size)
  y_ref, mean_ref, var_ref = numpy_batchnorm(x, v, group_size)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(mean, mean_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var, var_ref, rtol=1e-5, atol=1e-6)


def test_unbiased_running_variance_on_a_hand_worked_case():
  # One channel, batch [1, 3]: mean 2, biased variance 1, unbiased 2.
  x = np.array([[1.0], [3.0]], np.float32)
  v = {
    "params": {"scale": np.ones(1, np.float32), "bias": np.zeros(1, np.float32)},
    "batch_stats": {"mean": np.zeros(1, np.float32), "var": np.ones(1, np.float32)},
  }
  y, mean, var = apply_train(x, v)
  np.testing.assert_allclose(y[:, 0], [-1 / np.sqrt(1 + EPS), 1 / np.sqrt(1 + EPS)], rtol=1e-6)
  np.testing.assert_allclose(mean, [0.9 * 0 + 0.1 * 2], rtol=1e-6)
  np.testing.assert_allclose(var, [0.9 * 1 + 0.1 * 2], rtol=1e-6)


def test_groups_are_the_whole_batch_rule_applied_per_group():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, 4, 4, 3)).astype(np.float32)
  v = variables(3, rng)
  grouped, _, _ = apply_train(x, v, group_size=4)
  for start in (0, 4):
    alone, _, _ = apply_train(x[start : start + 4], v)
    np.testing.assert_allclose(grouped[start : start + 4], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_inference_uses_the_running_statistics(shape):
  rng = np.random.default_rng(2)
  x = rng.normal(1.0, 2.0, shape).astype(np.float32)
  v = variables(shape[-1], rng)
  y = BatchNorm(use_running_average=True, epsilon=EPS).apply(v, jnp.asarray(x))
  s, p = v["batch_stats"], v["params"]
  expected = (x.astype(np.float64) - s["mean"]) / np.sqrt(s["var"] + EPS) * p["scale"] + p["bias"]
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_a_group_size_that_does_not_divide_the_batch_is_refused():
  x = jnp.ones((6, 2))
  module = BatchNorm(use_running_average=False, group_size=4)
  v = module.init(jax.random.PRNGKey(0), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="group_size 4 must divide the batch 6"):
    module.apply(v, x, mutable=["batch_stats"])


SYSTEM_PYTHON = "/usr/bin/python3"
# Two training steps of torch's BatchNorm (float64, momentum 0.1 = flax 0.9) from the given parameters and
# running statistics, then one inference step; NHWC inputs go through BatchNorm2d as NCHW.
TORCH_SIDE = """
import sys
import numpy as np
import torch
d = sys.argv[1]
for name in sys.argv[2:]:
  x, scale, bias, mean, var = (np.load(f"{d}/{name}_{k}.npy").astype(np.float64)
                               for k in ("x", "scale", "bias", "mean", "var"))
  bn = (torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d)(x.shape[-1], eps=1e-5, momentum=0.1)
  bn = bn.double()
  with torch.no_grad():
    bn.weight.copy_(torch.from_numpy(scale)); bn.bias.copy_(torch.from_numpy(bias))
    bn.running_mean.copy_(torch.from_numpy(mean)); bn.running_var.copy_(torch.from_numpy(var))
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  to_torch = nchw if x.ndim == 4 else (lambda a: torch.from_numpy(np.ascontiguousarray(a)))
  from_torch = (lambda t: t.numpy().transpose(0, 2, 3, 1)) if x.ndim == 4 else (lambda t: t.numpy())
  outputs = {}
  with torch.no_grad():
    bn.train()
    outputs["y1"] = from_torch(bn(to_torch(x)))
    outputs["y2"] = from_torch(bn(to_torch(x[::-1] * 0.5 + 1.0)))
    bn.eval()
    outputs["y_eval"] = from_torch(bn(to_torch(x)))
  outputs["mean"], outputs["var"] = bn.running_mean.numpy(), bn.running_var.numpy()
  for k, value in outputs.items():
    np.save(f"{d}/{name}_torch_{k}.npy", value)
"""


@pytest.fixture(scope="module")
def torch_outputs(tmp_path_factory):
  """torch's outputs for every shape, computed in one subprocess."""
  if not os.path.exists(SYSTEM_PYTHON):
    pytest.skip(f"{SYSTEM_PYTHON} does not exist, so there is no PyTorch to compare with")
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torch"], capture_output=True, check=False)
  if probe.returncode != 0:
    pytest.skip(f"{SYSTEM_PYTHON} cannot import torch: {probe.stderr.decode(errors='replace').strip()[-200:]}")
  d = tmp_path_factory.mktemp("torch_batchnorm")
  inputs = {}
  for i, (name, shape) in enumerate(SHAPES.items()):
    rng = np.random.default_rng(10 + i)
    x, v = rng.normal(-1.0, 2.5, shape).astype(np.float32), variables(shape[-1], rng)
    inputs[name] = (x, v)
    arrays = {"x": x, **v["params"], **v["batch_stats"]}
    for k, value in arrays.items():
      np.save(d / f"{name}_{k}.npy", value)
  subprocess.run(
    [SYSTEM_PYTHON, "-c", TORCH_SIDE, str(d), *SHAPES],
    check=True,
    capture_output=True,
    timeout=300,
    env=dict(os.environ, OMP_NUM_THREADS="1"),
  )
  return {
    name: (inputs[name], {k: np.load(d / f"{name}_torch_{k}.npy") for k in ("y1", "y2", "y_eval", "mean", "var")})
    for name in SHAPES
  }


@pytest.mark.parametrize("name", SHAPES)
def test_whole_batch_matches_torch(name, torch_outputs):
  (x, v), expected = torch_outputs[name]
  y1, mean, var = apply_train(x, v)
  v1 = {"params": v["params"], "batch_stats": {"mean": mean, "var": var}}
  y2, mean, var = apply_train(x[::-1] * 0.5 + 1.0, v1)
  v2 = {"params": v["params"], "batch_stats": {"mean": mean, "var": var}}
  y_eval = np.asarray(BatchNorm(use_running_average=True, epsilon=EPS).apply(v2, jnp.asarray(x)))
  for key, actual in (("y1", y1), ("y2", y2), ("y_eval", y_eval)):
    np.testing.assert_allclose(actual, expected[key], rtol=1e-5, atol=2e-5, err_msg=key)
  np.testing.assert_allclose(mean, expected["mean"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var, expected["var"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_interleaved_groups_are_the_strided_samples(shape):
  # A batch-major stack of n = 2 crops per image ([B, n] flattened): group k is every n-th sample from k,
  # i.e. blocks after un-interleaving. NumPy reference on the crop-major order, outputs put back.
  rng = np.random.default_rng(3)
  x = rng.normal(-0.5, 2.0, shape).astype(np.float32)
  v = variables(shape[-1], rng)
  n, batch = 2, shape[0] // 2
  module = BatchNorm(use_running_average=False, momentum=MOMENTUM, epsilon=EPS, group_size=batch, interleaved=True)
  y, mutated = module.apply(v, jnp.asarray(x), mutable=["batch_stats"])
  crop_major = x.reshape((batch, n) + shape[1:]).swapaxes(0, 1).reshape(shape)
  y_ref, mean_ref, var_ref = numpy_batchnorm(crop_major, v, group_size=batch)
  y_ref = y_ref.reshape((n, batch) + shape[1:]).swapaxes(0, 1).reshape(shape)
  np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(np.asarray(mutated["batch_stats"]["mean"]), mean_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(mutated["batch_stats"]["var"]), var_ref, rtol=1e-5, atol=1e-6)
