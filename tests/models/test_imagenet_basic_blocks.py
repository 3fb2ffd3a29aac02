"""ImageNet-style ResNet-18 / 34 are torchvision's basic-block nets (issue 24), not bottleneck nets.

Depth 18 and 34 used to build bottleneck blocks with 2048 features. Here: the parameter counts equal
torchvision's resnet18 / resnet34 (hard-coded, and measured by torchvision itself), the feature width is
512, zero_init_residual and dtype behave as in the bottleneck path, the existing depths keep their
parameter paths, and a random torchvision resnet18 converted by tools/convert_torchvision_resnet.py gives
our ResNet-18's stage outputs and pooled feature. torch runs only in a /usr/bin/python3 subprocess.
"""

import json
import os
import subprocess

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.common import imagenet_recipe_config
from dscl_jax.config import validation
from dscl_jax.convert.torchvision_resnet import load_torchvision_resnet, torchvision_arrays_to_variables
from dscl_jax.models import Encoder, ResNet
from dscl_jax.models import resnet as resnet_module
from tests import REPO_ROOT

SYSTEM_PYTHON = "/usr/bin/python3"
REPO = REPO_ROOT
CONVERTER = os.path.join(REPO, "tools", "convert_torchvision_resnet.py")
TORCH_ENV = dict(os.environ, OMP_NUM_THREADS="2")
# torchvision's documented parameter counts of the whole models (trunk + 1000-class fc).
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032}
STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _variables(depth, image_size=64, **kwargs):
  return jax.eval_shape(
    lambda: ResNet(depth, "imagenet", **kwargs).init(
      jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)), train=False
    )
  )


def _count(tree):
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _with_classifier(depth):
  """Trunk parameters + a 1000-class linear classifier on the pooled feature (torchvision's fc)."""
  return _count(_variables(depth)["params"]) + ResNet(depth, "imagenet").num_features * 1000 + 1000


def _torch_available():
  probe = subprocess.run(
    [SYSTEM_PYTHON, "-c", "import torch, torchvision"], capture_output=True, check=False, env=TORCH_ENV
  )
  if probe.returncode != 0:
    return False, (
      f"{SYSTEM_PYTHON} cannot import torch and torchvision: {probe.stderr.decode(errors='replace').strip()[-200:]}"
    )
  return True, ""


@pytest.fixture(scope="module")
def torch_side():
  available, reason = _torch_available()
  if not available:
    pytest.skip(reason)


@pytest.mark.parametrize("depth", [18, 34])
def test_basic_block_trunk_has_torchvision_parameter_count(depth):
  assert ResNet(depth, "imagenet").num_features == 512
  assert ResNet(depth, "imagenet", width=2).num_features == 1024
  assert resnet_module.resnet_block_kind(depth, "imagenet") == "basic"
  assert _with_classifier(depth) == TORCHVISION_PARAMS[depth]


def test_bottleneck_depths_unchanged():
  assert ResNet(50, "imagenet").num_features == 2048
  assert [resnet_module.resnet_block_kind(d, "imagenet") for d in (50, 101, 152)] == ["bottleneck"] * 3
  assert _with_classifier(50) == TORCHVISION_PARAMS[50]
  params = flax.traverse_util.flatten_dict(_variables(50)["params"])
  block = sorted("/".join(p[1:]) for p in params if p[0] == "stage2_block1")
  assert block == sorted(
    f"{layer}/{leaf}"
    for layer, leaves in (
      ("Conv_0", ["kernel"]),
      ("Conv_1", ["kernel"]),
      ("Conv_2", ["kernel"]),
      ("proj_conv", ["kernel"]),
      ("BatchNorm_0", ["scale", "bias"]),
      ("BatchNorm_1", ["scale", "bias"]),
      ("BatchNorm_2", ["scale", "bias"]),
      ("proj_bn", ["scale", "bias"]),
    )
    for leaf in leaves
  )


@pytest.mark.parametrize("depth", [18, 34])
def test_basic_block_layout(depth):
  """Two 3x3 convolutions per block, a 1x1 stride-2 projection + BatchNorm only where the shape changes,
  512 output channels and stride 32."""
  params = _variables(depth)["params"]
  blocks = sorted(name for name in params if name.startswith("stage"))
  assert len(blocks) == sum(STAGES[depth])
  for stage, num_blocks in enumerate(STAGES[depth], start=1):
    width = 64 * 2 ** (stage - 1)
    for j in range(1, num_blocks + 1):
      block = params[f"stage{stage}_block{j}"]
      in_channels = width if j > 1 or stage == 1 else width // 2
      expected = {"Conv_0", "BatchNorm_0", "Conv_1", "BatchNorm_1"}
      if j == 1 and stage > 1:
        expected |= {"proj_conv", "proj_bn"}
        assert block["proj_conv"]["kernel"].shape == (1, 1, in_channels, width)
      assert set(block) == expected
      assert block["Conv_0"]["kernel"].shape == (3, 3, in_channels, width)
      assert block["Conv_1"]["kernel"].shape == (3, 3, width, width)
  out = jax.eval_shape(
    lambda: ResNet(depth, "imagenet").init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 64, 64, 3)), train=False)
  )[0]
  assert out["feature_map"].shape == (2, 2, 2, 512)
  assert out["pooled"].shape == (2, 512)


def test_encoder_head_follows_the_feature_width():
  variables = jax.eval_shape(
    lambda: Encoder(18, "imagenet", num_classes=10).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  assert variables["params"]["classifier"]["kernel"].shape == (512, 10)
  first_head_kernel = [
    leaf for path, leaf in flax.traverse_util.flatten_dict(variables["params"]["head"]).items() if path[-1] == "kernel"
  ][0]
  assert first_head_kernel.shape[0] == 512


@pytest.mark.parametrize("zero", [False, True])
def test_zero_init_residual_zeroes_the_last_batchnorm_of_each_basic_block(zero):
  model = ResNet(18, "imagenet", zero_init_residual=zero)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
  for name, block in params.items():
    if not name.startswith("stage"):
      continue
    np.testing.assert_array_equal(block["BatchNorm_1"]["scale"], 0.0 if zero else 1.0, err_msg=name)
    np.testing.assert_array_equal(block["BatchNorm_0"]["scale"], 1.0, err_msg=name)
    if "proj_bn" in block:
      np.testing.assert_array_equal(block["proj_bn"]["scale"], 1.0, err_msg=name)


def test_bfloat16_activations_float32_parameters():
  model = ResNet(18, "imagenet", dtype=jnp.bfloat16)
  images = jnp.asarray(np.random.default_rng(0).standard_normal((4, 64, 64, 3)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
  assert out["feature_map"].dtype == jnp.bfloat16
  assert out["pooled"].dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(updates)} == {jnp.dtype(jnp.float32)}
  # Same weights in float32: bfloat16 activations stay within a few percent (relative L2 norm).
  pooled = model.apply(variables, images, train=False)["pooled"]
  reference = ResNet(18, "imagenet").apply(variables, images, train=False)["pooled"]
  assert np.linalg.norm(pooled - reference) < 0.05 * np.linalg.norm(reference)


@pytest.mark.parametrize("depth", [0, 20, 26, 42, 200])
def test_unknown_imagenet_depth_is_refused(depth):
  with pytest.raises(ValueError, match=r"depth %d must be one of \[18, 34, 50, 101, 152\]" % depth):
    _variables(depth)
  config = imagenet_recipe_config("imagenet_lt", depth=50)
  config.model.depth = depth
  with pytest.raises(
    validation.ConfigError, match=r"model\.depth %d: .* must be one of \[18, 34, 50, 101, 152\]" % depth
  ):
    validation.validate(config, num_devices=1)


@pytest.mark.parametrize("depth", [18, 34])
def test_basic_block_depths_pass_validation(depth):
  config = imagenet_recipe_config("imagenet_lt", depth=depth)
  validation.validate(config, num_devices=1)


def _torchvision_state_shapes(depth):
  """{name: shape} of torchvision's basic-block ResNet state_dict, without fc and num_batches_tracked."""
  shapes = {"conv1.weight": (64, 3, 7, 7)}

  def add_batchnorm(name, channels):
    for field in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.{field}"] = (channels,)

  add_batchnorm("bn1", 64)
  in_channels = 64
  for stage, num_blocks in enumerate(STAGES[depth], start=1):
    width = 64 * 2 ** (stage - 1)
    for block in range(num_blocks):
      prefix = f"layer{stage}.{block}."
      shapes[prefix + "conv1.weight"] = (width, in_channels, 3, 3)
      shapes[prefix + "conv2.weight"] = (width, width, 3, 3)
      add_batchnorm(prefix + "bn1", width)
      add_batchnorm(prefix + "bn2", width)
      if in_channels != width:
        shapes[prefix + "downsample.0.weight"] = (width, in_channels, 1, 1)
        add_batchnorm(prefix + "downsample.1", width)
      in_channels = width
  return shapes


@pytest.mark.parametrize("depth", [18, 34])
def test_converter_places_basic_block_arrays(depth):
  rng = np.random.default_rng(depth)
  arrays = {
    name: rng.standard_normal(shape).astype(np.float32) for name, shape in _torchvision_state_shapes(depth).items()
  }
  variables = torchvision_arrays_to_variables(arrays, depth)
  shapes = _variables(depth, image_size=32)
  assert jax.tree.map(lambda a: a.shape, variables) == jax.tree.map(lambda a: a.shape, shapes)
  assert len(jax.tree.leaves(variables)) == len(arrays)
  params, stats = variables["params"], variables["batch_stats"]
  last = STAGES[depth][3] - 1
  for name, leaf in {
    "layer1.0.conv1.weight": params["stage1_block1"]["Conv_0"]["kernel"],
    "layer1.1.conv2.weight": params["stage1_block2"]["Conv_1"]["kernel"],
    "layer2.0.bn1.weight": params["stage2_block1"]["BatchNorm_0"]["scale"],
    "layer3.1.bn2.running_var": stats["stage3_block2"]["BatchNorm_1"]["var"],
    "layer4.0.downsample.0.weight": params["stage4_block1"]["proj_conv"]["kernel"],
    "layer4.0.downsample.1.running_mean": stats["stage4_block1"]["proj_bn"]["mean"],
    f"layer4.{last}.conv2.weight": params[f"stage4_block{last + 1}"]["Conv_1"]["kernel"],
  }.items():
    is_conv = arrays[name].ndim == 4  # [O, I, kH, kW] -> [kH, kW, I, O]
    want = arrays[name].transpose(2, 3, 1, 0) if is_conv else arrays[name]
    np.testing.assert_array_equal(np.asarray(leaf), want, err_msg=name)


def test_converter_tells_resnet34_from_resnet50():
  """Same blocks per stage, different blocks: the error names the checkpoint's depth either way."""
  rng = np.random.default_rng(0)
  arrays34 = {
    name: rng.standard_normal(shape).astype(np.float32) for name, shape in _torchvision_state_shapes(34).items()
  }
  with pytest.raises(ValueError, match=r"basic blocks per stage \(a ResNet-34\).*pass the checkpoint's depth"):
    torchvision_arrays_to_variables(arrays34, 50)
  arrays18 = {
    name: rng.standard_normal(shape).astype(np.float32) for name, shape in _torchvision_state_shapes(18).items()
  }
  with pytest.raises(ValueError, match=r"\(a ResNet-18\).*pass the checkpoint's depth"):
    torchvision_arrays_to_variables(arrays18, 34)
  with pytest.raises(ValueError, match=r"depth 18, 34, 50, 101 or 152, got depth=42"):
    torchvision_arrays_to_variables(arrays18, 42)


# ----------------------------------------------------------------------------
# Against torchvision itself (in a /usr/bin/python3 subprocess).

_COUNT_SCRIPT = """
import json, torchvision
counts = {}
for arch in ("resnet18", "resnet34"):
  model = getattr(torchvision.models, arch)(weights=None)
  total = sum(p.numel() for p in model.parameters())
  fc = sum(p.numel() for p in model.fc.parameters())
  counts[arch] = {"total": total, "trunk": total - fc, "features": model.fc.in_features}
print(json.dumps(counts))
"""


def test_parameter_count_matches_torchvision(torch_side):
  run = subprocess.run([SYSTEM_PYTHON, "-c", _COUNT_SCRIPT], capture_output=True, check=False, env=TORCH_ENV)
  assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
  counts = json.loads(run.stdout.decode().strip().splitlines()[-1])
  for depth in (18, 34):
    torchvision_count = counts[f"resnet{depth}"]
    assert _count(_variables(depth)["params"]) == torchvision_count["trunk"]
    assert _with_classifier(depth) == torchvision_count["total"] == TORCHVISION_PARAMS[depth]
    assert ResNet(depth, "imagenet").num_features == torchvision_count["features"] == 512


STAGE_OUTPUTS = {
  "layer1": "stage1_block2",
  "layer2": "stage2_block2",
  "layer3": "stage3_block2",
  "layer4": "stage4_block2",
}


@pytest.fixture(scope="module")
def resnet18_case(torch_side, tmp_path_factory):
  """A random torchvision resnet18 (random BatchNorm too), converted, and its eval outputs on [2, 3, 64, 64]."""
  case_dir = tmp_path_factory.mktemp("torchvision_resnet18")
  images = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
  np.save(case_dir / "images.npy", images)
  run = subprocess.run(
    [
      SYSTEM_PYTHON,
      CONVERTER,
      "--arch",
      "resnet18",
      "--random-init",
      "--seed",
      "0",
      "--random-batchnorm",
      "--output",
      str(case_dir / "resnet18.npz"),
      "--reference-input",
      str(case_dir / "images.npy"),
    ],
    capture_output=True,
    check=False,
    env=TORCH_ENV,
  )
  if run.returncode != 0:
    pytest.fail(f"converter failed:\n{run.stderr.decode(errors='replace')[-2000:]}")
  outputs = {name: np.load(case_dir / f"resnet18_{name}.npy") for name in (*STAGE_OUTPUTS, "pooled")}
  return {"npz": case_dir / "resnet18.npz", "images": images, "torchvision": outputs}


@pytest.fixture(scope="module")
def resnet18_outputs(resnet18_case):
  variables = load_torchvision_resnet(resnet18_case["npz"], 18)
  images = jnp.asarray(resnet18_case["images"].transpose(0, 2, 3, 1))
  out, state = ResNet(18, "imagenet").apply(
    variables,
    images,
    train=False,
    mutable=["intermediates"],
    capture_intermediates=lambda module, method: module.name in STAGE_OUTPUTS.values(),
  )
  out, state = jax.device_get((out, state))
  stages = {name: state["intermediates"][block]["__call__"][0] for name, block in STAGE_OUTPUTS.items()}
  np.testing.assert_array_equal(stages["layer4"], out["feature_map"])
  return dict(stages, pooled=out["pooled"])


def test_converted_resnet18_has_torchvision_names(resnet18_case):
  with np.load(resnet18_case["npz"]) as npz:
    shapes = {k: npz[k].shape for k in npz.files if not k.startswith("fc.")}
    assert npz["fc.weight"].shape == (1000, 512)
    # The converted BatchNorms are not the fresh-model defaults, so dropping one would be noticed.
    for field, default in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
      assert np.abs(npz[f"layer3.1.bn2.{field}"] - default).max() > 0.05, field
  assert shapes == _torchvision_state_shapes(18)


@pytest.mark.parametrize("name", [*STAGE_OUTPUTS, "pooled"])
def test_resnet18_matches_torchvision(name, resnet18_case, resnet18_outputs):
  expected = resnet18_case["torchvision"][name]
  if expected.ndim == 4:
    expected = expected.transpose(0, 2, 3, 1)  # NCHW -> NHWC
  actual = resnet18_outputs[name]
  assert actual.shape == expected.shape
  # As in tests/test_torchvision_weights.py: the absolute tolerance scales with the largest activation.
  scale = float(np.abs(expected).max())
  assert 1.0 < scale < 1e3, "the calibrated BatchNorm statistics should keep activations between 1 and 1000"
  np.testing.assert_allclose(
    actual,
    expected,
    rtol=1e-4,
    atol=1e-4 * scale,
    err_msg=f"{name} (torchvision) vs our ResNet-18; max |ref| {scale:.3g}",
  )
