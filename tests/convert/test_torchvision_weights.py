"""Tests for dscl_jax.convert.torchvision_resnet and tools/convert_torchvision_resnet.py.

Two references: `torchvision_state_shapes`, torchvision's bottleneck ResNet state_dict written out here
from the architecture (name map, placement and error tests, no torch needed), and torchvision itself,
run by /usr/bin/python3 through the converter: an untrained resnet50 with random BatchNorm parameters and
statistics, evaluated on a fixed input, must give our ResNet-50's stage outputs and pooled feature.
"""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dscl_jax.convert.torchvision_resnet import load_torchvision_resnet, replace_trunk, torchvision_arrays_to_variables
from dscl_jax.methods import get_method
from dscl_jax.models import Encoder, ResNet
from tests import REPO_ROOT

SYSTEM_PYTHON = "/usr/bin/python3"
CONVERTER = os.path.join(REPO_ROOT, "tools", "convert_torchvision_resnet.py")
RESNET50_STAGES = (3, 4, 6, 3)
# torchvision stage name -> the last block of that stage in our ResNet-50.
STAGE_OUTPUTS = {
  "layer1": "stage1_block3",
  "layer2": "stage2_block4",
  "layer3": "stage3_block6",
  "layer4": "stage4_block3",
}


def torchvision_state_shapes(stage_sizes):
  """{name: shape} of torchvision's bottleneck ResNet state_dict, without fc and num_batches_tracked."""
  shapes = {"conv1.weight": (64, 3, 7, 7)}

  def add_batchnorm(name, channels):
    for field in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.{field}"] = (channels,)

  add_batchnorm("bn1", 64)
  in_channels = 64
  for stage, num_blocks in enumerate(stage_sizes, start=1):
    width = 64 * 2 ** (stage - 1)
    for block in range(num_blocks):
      prefix = f"layer{stage}.{block}."
      shapes[prefix + "conv1.weight"] = (width, in_channels, 1, 1)
      shapes[prefix + "conv2.weight"] = (width, width, 3, 3)
      shapes[prefix + "conv3.weight"] = (4 * width, width, 1, 1)
      for k, channels in ((1, width), (2, width), (3, 4 * width)):
        add_batchnorm(f"{prefix}bn{k}", channels)
      if block == 0:
        shapes[prefix + "downsample.0.weight"] = (4 * width, in_channels, 1, 1)
        add_batchnorm(prefix + "downsample.1", 4 * width)
      in_channels = 4 * width
  return shapes


@pytest.fixture(scope="module")
def synthetic_arrays():
  """A random ResNet-50 state_dict in torchvision's names and layouts (distinct values everywhere)."""
  rng = np.random.default_rng(0)
  return {
    name: rng.standard_normal(shape).astype(np.float32)
    for name, shape in torchvision_state_shapes(RESNET50_STAGES).items()
  }


@pytest.fixture(scope="module")
def synthetic_variables(synthetic_arrays):
  return torchvision_arrays_to_variables(synthetic_arrays, 50)


def test_places_every_array_where_resnet_expects_it(synthetic_arrays, synthetic_variables):
  init_shapes = jax.eval_shape(
    lambda: ResNet(50, "imagenet").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  assert jax.tree.structure(synthetic_variables) == jax.tree.structure(init_shapes)
  assert jax.tree.map(lambda a: a.shape, synthetic_variables) == jax.tree.map(lambda a: a.shape, init_shapes)
  # Every torchvision array is used exactly once: as many leaves as arrays, all values distinct.
  assert len(jax.tree.leaves(synthetic_variables)) == len(synthetic_arrays)
  params, stats = synthetic_variables["params"], synthetic_variables["batch_stats"]
  expected = {
    ("conv1.weight", True): params["stem_conv"]["kernel"],
    ("bn1.weight", False): params["stem_bn"]["scale"],
    ("bn1.running_var", False): stats["stem_bn"]["var"],
    ("layer1.0.conv2.weight", True): params["stage1_block1"]["Conv_1"]["kernel"],
    ("layer2.0.conv2.weight", True): params["stage2_block1"]["Conv_1"]["kernel"],
    ("layer3.5.bn3.bias", False): params["stage3_block6"]["BatchNorm_2"]["bias"],
    ("layer3.5.bn3.running_mean", False): stats["stage3_block6"]["BatchNorm_2"]["mean"],
    ("layer4.0.downsample.0.weight", True): params["stage4_block1"]["proj_conv"]["kernel"],
    ("layer4.0.downsample.1.weight", False): params["stage4_block1"]["proj_bn"]["scale"],
    ("layer4.2.conv3.weight", True): params["stage4_block3"]["Conv_2"]["kernel"],
  }
  for (name, is_conv), leaf in expected.items():
    torch_layout = np.asarray(synthetic_arrays[name])
    # [O, I, kH, kW] -> [kH, kW, I, O]
    want = torch_layout.transpose(2, 3, 1, 0) if is_conv else torch_layout
    np.testing.assert_array_equal(np.asarray(leaf), want, err_msg=name)


def test_skips_classifier_and_batch_counters(synthetic_arrays, synthetic_variables):
  extended = dict(
    synthetic_arrays,
    **{
      "fc.weight": np.zeros((1000, 2048), np.float32),
      "fc.bias": np.zeros((1000,), np.float32),
      "layer1.0.bn1.num_batches_tracked": np.array(7),
    },
  )
  loaded = torchvision_arrays_to_variables(extended, 50)
  jax.tree.map(np.testing.assert_array_equal, loaded, synthetic_variables)


def test_missing_key_is_named(synthetic_arrays):
  arrays = dict(synthetic_arrays)
  del arrays["layer3.2.bn2.running_var"]
  with pytest.raises(ValueError, match=r"missing 1 key\(s\): layer3\.2\.bn2\.running_var"):
    torchvision_arrays_to_variables(arrays, 50)


def test_extra_key_is_named(synthetic_arrays):
  arrays = dict(synthetic_arrays, **{"layer1.0.conv4.weight": np.zeros((64, 64, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"1 key\(s\) with no place in the trunk: layer1\.0\.conv4\.weight"):
    torchvision_arrays_to_variables(arrays, 50)


def test_wrong_shape_is_named(synthetic_arrays):
  arrays = dict(synthetic_arrays)
  arrays["layer2.1.conv2.weight"] = arrays["layer2.1.conv2.weight"][:, :64]
  with pytest.raises(
    ValueError,
    match=r"layer2\.1\.conv2\.weight has shape \(128, 64, 3, 3\).*"
    r"\(128, 128, 3, 3\)",
  ):
    torchvision_arrays_to_variables(arrays, 50)


def test_depth_mismatch_names_the_checkpoint_depth(synthetic_arrays):
  with pytest.raises(ValueError, match=r"missing .*layer3\.6\..*a ResNet-50.*pass the checkpoint's depth"):
    torchvision_arrays_to_variables(synthetic_arrays, 101)


def test_unsupported_depth():
  with pytest.raises(ValueError, match="depth 18, 34, 50, 101 or 152, got depth=42"):
    torchvision_arrays_to_variables({}, 42)


def test_file_errors_name_the_file(synthetic_arrays, tmp_path):
  arrays = {k: v for k, v in synthetic_arrays.items() if k != "conv1.weight"}
  path = tmp_path / "broken.npz"
  np.savez(path, **arrays)
  with pytest.raises(
    ValueError,
    match=r"broken\.npz does not match torchvision ResNet-50: missing 1 key"
    r"\(s\): conv1\.weight",
  ):
    load_torchvision_resnet(path, 50)


def _encoder_variables(width):
  """Shapes-only Encoder variables: enough for replace_trunk, which never reads the old trunk values."""
  return jax.eval_shape(
    lambda: Encoder(50, "imagenet", width=width, num_classes=10).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False
    )
  )


def test_replace_trunk_replaces_only_the_trunk(synthetic_arrays, synthetic_variables, tmp_path):
  path = tmp_path / "resnet50.npz"
  np.savez(path, **synthetic_arrays)
  variables = _encoder_variables(width=1)
  updated = replace_trunk(variables, load_torchvision_resnet(path, 50), 50)
  for collection in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, updated[collection]["trunk"], synthetic_variables[collection])
  assert updated["params"]["head"] is variables["params"]["head"]
  assert updated["params"]["classifier"] is variables["params"]["classifier"]
  # The caller's variables are not modified.
  assert isinstance(jax.tree.leaves(variables["params"]["trunk"])[0], jax.ShapeDtypeStruct)


def test_replace_trunk_rejects_a_different_trunk(synthetic_arrays, tmp_path):
  path = tmp_path / "resnet50.npz"
  np.savez(path, **synthetic_arrays)
  with pytest.raises(ValueError, match=r"trunk is not a width-1 ResNet-50"):
    replace_trunk(_encoder_variables(width=2), load_torchvision_resnet(path, 50), 50)
  with pytest.raises(ValueError, match=r"no params\['trunk'\]"):
    replace_trunk({"params": {"Conv_0": {}}, "batch_stats": {}}, load_torchvision_resnet(path, 50), 50)


# ----------------------------------------------------------------------------
# Against torchvision itself.


@pytest.fixture(scope="module")
def torchvision_case(tmp_path_factory):
  """Converts a random torchvision resnet50 and records its outputs on a fixed [2, 3, 224, 224] input."""
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True, check=False)
  if probe.returncode != 0:
    pytest.skip(f"{SYSTEM_PYTHON} cannot import torchvision: {probe.stderr.decode(errors='replace').strip()[-200:]}")
  case_dir = tmp_path_factory.mktemp("torchvision_resnet50")
  images = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
  np.save(case_dir / "images.npy", images)
  run = subprocess.run(
    [
      SYSTEM_PYTHON,
      CONVERTER,
      "--arch",
      "resnet50",
      "--random-init",
      "--seed",
      "0",
      "--random-batchnorm",
      "--output",
      str(case_dir / "resnet50.npz"),
      "--reference-input",
      str(case_dir / "images.npy"),
    ],
    capture_output=True,
    check=False,
    env=dict(os.environ, OMP_NUM_THREADS="2"),
  )
  if run.returncode != 0:
    pytest.fail(f"converter failed:\n{run.stderr.decode(errors='replace')[-2000:]}")
  outputs = {name: np.load(case_dir / f"resnet50_{name}.npy") for name in (*STAGE_OUTPUTS, "pooled")}
  return {"npz": case_dir / "resnet50.npz", "images": images, "torchvision": outputs}


@pytest.fixture(scope="module")
def our_outputs(torchvision_case):
  """Our ResNet-50 (train=False) on the same images: stage outputs (NHWC) and the pooled feature."""
  variables = load_torchvision_resnet(torchvision_case["npz"], 50)
  images = jnp.asarray(torchvision_case["images"].transpose(0, 2, 3, 1))

  @jax.jit
  def forward(variables, images):
    return ResNet(50, "imagenet").apply(
      variables,
      images,
      train=False,
      mutable=["intermediates"],
      capture_intermediates=lambda module, method: module.name in STAGE_OUTPUTS.values(),
    )

  out, state = jax.device_get(forward(variables, images))
  stages = {name: state["intermediates"][block]["__call__"][0] for name, block in STAGE_OUTPUTS.items()}
  np.testing.assert_array_equal(stages["layer4"], out["feature_map"])
  return dict(stages, pooled=out["pooled"])


def test_converted_names_are_torchvision_resnet50(torchvision_case):
  with np.load(torchvision_case["npz"]) as npz:
    shapes = {k: npz[k].shape for k in npz.files if not k.startswith("fc.")}
    # The converted BatchNorms are not the fresh-model defaults, so dropping one would be noticed.
    for field, default in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
      assert np.abs(npz[f"layer3.4.bn2.{field}"] - default).max() > 0.05, field
  assert shapes == torchvision_state_shapes(RESNET50_STAGES)


@pytest.mark.parametrize("name", [*STAGE_OUTPUTS, "pooled"])
def test_matches_torchvision(name, torchvision_case, our_outputs):
  expected = torchvision_case["torchvision"][name]
  if expected.ndim == 4:
    expected = expected.transpose(0, 2, 3, 1)  # NCHW -> NHWC
  actual = our_outputs[name]
  assert actual.shape == expected.shape
  # Activations reach ~100 here and float32 sums of ~4600 terms per conv round differently in XLA and
  # in torch, so the absolute tolerance scales with the largest activation (values near 0 come from
  # cancellation and carry the same absolute error as the large ones).
  scale = float(np.abs(expected).max())
  assert 1.0 < scale < 1e3, "the calibrated BatchNorm statistics should keep activations between 1 and 1000"
  np.testing.assert_allclose(
    actual,
    expected,
    rtol=1e-4,
    atol=1e-4 * scale,
    err_msg=f"{name} (torchvision) vs our ResNet-50; max |ref| {scale:.3g}",
  )


def test_model_init_from_starts_both_encoders_from_the_weights(synthetic_arrays, tmp_path):
  """`--config.model.init_from=<npz>`: online and target trunks are the converted weights, heads random."""
  from configs.common import imagenet_recipe_config
  from dscl_jax.core import optim, sharding
  from dscl_jax.core.build import build_models, init_pretrain_state

  path = tmp_path / "weights.npz"
  np.savez(path, **synthetic_arrays)
  config = imagenet_recipe_config("imagenet_lt", depth=50)
  config.model.init_from = str(path)
  config.moco.queue_size = 256
  tx = optim.sgd(optim.warmup_cosine_schedule(0.1, 10, 1), 0.9, 0.0)
  online, _ = build_models(config, get_method(config), 1000)
  state = init_pretrain_state(config, get_method(config), online, tx, 1000, 3, sharding.make_mesh(1))
  expected = load_torchvision_resnet(path, 50)
  for tree in (state.params, state.target_params):
    np.testing.assert_array_equal(tree["trunk"]["stem_conv"]["kernel"], expected["params"]["stem_conv"]["kernel"])
    np.testing.assert_array_equal(
      tree["trunk"]["stage4_block3"]["Conv_2"]["kernel"], expected["params"]["stage4_block3"]["Conv_2"]["kernel"]
    )
  np.testing.assert_array_equal(state.batch_stats["trunk"]["stem_bn"]["var"], expected["batch_stats"]["stem_bn"]["var"])
  config.model.style = "cifar"
  with pytest.raises(ValueError, match="model.init_from loads torchvision ResNet weights"):
    init_pretrain_state(config, get_method(config), online, tx, 1000, 3, sharding.make_mesh(1))


def test_restore_template_does_not_read_init_from(synthetic_arrays, tmp_path):
  """Probe / eval restore a checkpoint into shapes alone: the init_from file need not exist any more."""
  from configs.common import imagenet_recipe_config
  from dscl_jax.core import optim, sharding
  from dscl_jax.core.build import abstract_pretrain_state, build_models, init_pretrain_state

  config = imagenet_recipe_config("imagenet_lt", depth=50)
  config.moco.queue_size = 256
  tx = optim.sgd(optim.warmup_cosine_schedule(0.1, 10, 1), 0.9, 0.0)
  online, _ = build_models(config, get_method(config), 1000)
  plain = abstract_pretrain_state(config, get_method(config), online, tx, 1000, 3)
  path = tmp_path / "weights.npz"
  np.savez(path, **synthetic_arrays)
  config.model.init_from = str(path)
  state = init_pretrain_state(config, get_method(config), online, tx, 1000, 3, sharding.make_mesh(1))
  config.model.init_from = str(tmp_path / "moved_away.npz")
  template = abstract_pretrain_state(config, get_method(config), online, tx, 1000, 3)
  assert jax.tree.structure(template) == jax.tree.structure(state) == jax.tree.structure(plain)
  for a, b in zip(jax.tree.leaves(template), jax.tree.leaves(state)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
