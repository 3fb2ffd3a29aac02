"""Differences from the DSCL reference recipe, closed: zero-initialised residual BatchNorm scales, small
crops flipped on their own, Gaussian-blur ranges that scale with the view's size."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs.common import fashion_mnist_lt_config, imagenet_recipe_config
from dscl_jax.config.schema import base_config
from dscl_jax.input import augment
from dscl_jax.models import build_encoder


@pytest.mark.parametrize("depth,style,last", [(8, "cifar", "BatchNorm_1"), (50, "imagenet", "BatchNorm_2")])
def test_zero_init_residual_zeroes_the_last_scale_of_every_block(depth, style, last):
  config = base_config(dataset="digits_lt", image_size=32, channels=3, depth=depth, style=style)
  assert config.model.zero_init_residual  # the reference's default
  encoder = build_encoder(config.model)
  params = encoder.init(jax.random.PRNGKey(0), np.zeros((2, 32, 32, 3), np.float32), train=False)["params"]
  scales = {
    "/".join(k[:-1]): np.asarray(v) for k, v in traverse_util.flatten_dict(params["trunk"]).items() if k[-1] == "scale"
  }
  blocks = {name.split("/")[0] for name in scales if name.startswith("stage")}
  assert blocks and all(f"{block}/{last}" in scales for block in blocks)
  for name, scale in scales.items():
    expected = 0.0 if name.endswith(last) else 1.0  # the other BatchNorms, stem and projections: 1
    np.testing.assert_array_equal(scale, np.full_like(scale, expected), err_msg=name)

  config.model.zero_init_residual = False
  params = build_encoder(config.model).init(jax.random.PRNGKey(0), np.zeros((2, 32, 32, 3), np.float32), train=False)[
    "params"
  ]
  block = sorted(blocks)[0]
  np.testing.assert_array_equal(np.asarray(params["trunk"][block][last]["scale"]), 1.0)


def plain_config():
  c = fashion_mnist_lt_config("dscl")
  c.pbsd.enabled = True
  for view in ("query", "key"):  # no colour operations: the pixels show the geometry alone
    c.augment[view]["jitter_prob"] = c.augment[view]["grayscale_prob"] = c.augment[view]["blur_prob"] = 0.0
  return c


def test_small_crops_are_flipped_on_their_own():
  c = plain_config()
  image = np.random.default_rng(0).integers(0, 256, size=(28, 28, 1), dtype=np.uint8)
  c.pbsd.flip_prob = 0.0
  never = augment.pretrain_views(image, np.random.default_rng(5), c.augment, c.pbsd)
  c.pbsd.flip_prob = 1.0
  always = augment.pretrain_views(image, np.random.default_rng(5), c.augment, c.pbsd)
  # Same draws (the flip consumes one number either way): the crops are mirror images, the boxes and the
  # query view are unchanged.
  np.testing.assert_array_equal(always["small_crops"], never["small_crops"][:, :, ::-1])
  np.testing.assert_array_equal(always["boxes"], never["boxes"])
  np.testing.assert_array_equal(always["query"], never["query"])
  assert not np.array_equal(always["small_crops"], never["small_crops"])


def test_blur_range_scales_with_the_view_size(monkeypatch):
  assert augment.scaled_blur_sigma(224, 224) == (0.1, 2.0)
  np.testing.assert_allclose(augment.scaled_blur_sigma(28, 224), (0.0125, 0.25))
  imagenet = imagenet_recipe_config("imagenet_lt")
  assert tuple(imagenet.augment.blur_sigma) == (0.1, 2.0) and tuple(imagenet.pbsd.blur_sigma) == (0.1, 2.0)
  fashion = fashion_mnist_lt_config("dscl")
  np.testing.assert_allclose(fashion.augment.blur_sigma, (0.0125, 0.25))
  np.testing.assert_allclose(fashion.pbsd.blur_sigma, (0.1 * 12 / 64, 2.0 * 12 / 64))

  # The views use them: every blur of a small crop draws from pbsd.blur_sigma, of the query from augment's.
  c = plain_config()
  c.augment.query["blur_prob"] = 1.0
  drawn = []
  real_blur = augment.gaussian_blur
  monkeypatch.setattr(
    augment, "gaussian_blur", lambda image, sigma: drawn.append((image.size, sigma)) or real_blur(image, sigma)
  )
  rng = np.random.default_rng(1)
  for _ in range(20):
    augment.pretrain_views(np.zeros((28, 28, 1), np.uint8), rng, c.augment, c.pbsd)
  crops = [sigma for size, sigma in drawn if size == (12, 12)]
  queries = [sigma for size, sigma in drawn if size == (28, 28)]
  assert len(crops) == 20 * c.pbsd.num_crops and len(queries) == 20
  assert all(c.pbsd.blur_sigma[0] <= s <= c.pbsd.blur_sigma[1] for s in crops)
  assert all(c.augment.blur_sigma[0] <= s <= c.augment.blur_sigma[1] for s in queries)
  assert max(crops) > 0.5 * c.pbsd.blur_sigma[1] and max(queries) > 0.5 * c.augment.blur_sigma[1]


def test_each_crop_batch_is_normalised_on_its_own():
  from dscl_jax.methods.base import OnlineForward

  config = base_config(dataset="digits_lt", image_size=16, channels=1, depth=8, style="cifar")
  assert config.pbsd.crop_bn_groups  # the reference's behaviour by default
  encoder = build_encoder(config.model)
  variables = encoder.init(jax.random.PRNGKey(0), np.zeros((2, 8, 8, 1), np.float32), train=False)
  rng = np.random.default_rng(0)
  crops = rng.normal(size=(2 * 6, 8, 8, 1)).astype(np.float32)  # crop-major: 2 crops x B = 6
  changed = crops.copy()
  changed[6:] = 3.0 * changed[6:] + 1.0  # only the second crop's batch
  embed = lambda x, g: np.asarray(
    OnlineForward(encoder, variables["params"], variables["batch_stats"])(x, g)["embedding"]
  )
  grouped, grouped_changed = embed(crops, 6), embed(changed, 6)
  np.testing.assert_array_equal(grouped[:6], grouped_changed[:6])  # the first crop's batch does not see it
  alone = embed(crops[:6], None)  # one encoder call on the first crop's batch
  np.testing.assert_allclose(grouped[:6], alone, rtol=1e-5, atol=1e-6)
  assert not np.allclose(embed(crops, None)[:6], embed(changed, None)[:6])  # shared statistics would


def test_reference_recipes_reestimate_the_trunk_statistics_before_the_probe():
  # The reference probes with the trunk in training mode: its BatchNorm statistics come from probe images.
  assert imagenet_recipe_config("imagenet_lt").probe.reestimate_bn_batches > 0
  assert fashion_mnist_lt_config("dscl").probe.reestimate_bn_batches > 0
  assert (
    base_config(dataset="digits_lt", image_size=32, channels=3, depth=8, style="cifar").probe.reestimate_bn_batches == 0
  )  # opt-in elsewhere
