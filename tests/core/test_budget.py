"""The budget a comparison record carries (dscl_jax/core/budget.py), against independent counts: the
issue's hand-worked Fashion-MNIST-LT figures, the images the real input pipeline draws over whole
epochs, and the images the real pretrain step sends through the online encoder and the momentum target."""

import itertools

import jax
import numpy as np
import pytest

from data import base
from dscl_jax.core import budget
from dscl_jax.core import step as step_module
from dscl_jax.core.build import abstract_pretrain_state, build_models
from dscl_jax.core.optim import sgd, warmup_cosine_schedule
from dscl_jax.core.step import make_pretrain_step
from dscl_jax.input import augment, pipeline, synthetic
from dscl_jax.methods import get_method
from dscl_jax.methods.base import OnlineForward, Requirements
from tests.step_runner import CASES, case_config

FASHION_COUNTS = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]  # Fashion-MNIST-LT, IF 100


def test_fashion_mnist_lt_figures_by_hand():
  """15 epochs of 116 steps at batch 128 (1740 steps, 222,720 positions) on 14,886 images."""
  ce = Requirements(momentum_target=False, queue=False, views=("query",), projection_head=None)
  iccl = Requirements(
    momentum_target=True, queue=False, views=("query", "key", "class_aware"), sampler="instance_and_class_aware"
  )
  assert budget.pretrain_budget(ce, 5, FASHION_COUNTS, 128, 1740) == {
    "images_drawn": 222_720,
    "online_forward_images": 222_720,
    "target_forward_images": 0,
    "rarest_class_draws_per_image": round(222_720 / 14_886, 2),  # 14.96: one draw per epoch
  }
  # ICCL: class-uniform second sample, p = 1/10 for the 60-image class: 222,720 / 10 / 60 = 371.2 more.
  assert budget.pretrain_budget(iccl, 5, FASHION_COUNTS, 128, 1740) == {
    "images_drawn": 445_440,
    "online_forward_images": 445_440,
    "target_forward_images": 222_720,
    "rarest_class_draws_per_image": round(222_720 / 14_886 + 371.2, 2),
  }


def _long_tailed_split(counts):
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  images = np.random.default_rng(0).integers(0, 256, (labels.size, 14, 14, 1), dtype=np.uint8)
  return base.Split("train", base.ArraySource(images, labels), labels)


@pytest.mark.parametrize(
  "sampler, power", [("instance", 0.0), ("instance_and_class_aware", 0.0), ("instance_and_class_aware", 0.5)]
)
def test_draws_match_the_real_pipeline(sampler, power):
  counts = (60, 30, 15, 8, 4)  # 117 images; batch 9: 13 steps per epoch
  batch, epochs = 9, 8
  steps = epochs * 13
  views = ("query", "key", "class_aware") if sampler != "instance" else ("query", "key")
  cfg_augment = augment.default_augment_config(12, 1)
  stream = pipeline.pretrain_iterator(
    _long_tailed_split(counts),
    cfg_augment,
    augment.default_pbsd_config(),
    views=views,
    sampler=sampler,
    class_aware_power=power,
    global_batch_size=batch,
    seed=5,
  )
  drawn, rarest = 0, 0
  for b in itertools.islice(stream, steps):
    for key in ("label", "class_aware_label"):
      if key in b:
        drawn += b[key].size
        rarest += int(np.sum(b[key] == len(counts) - 1))
  stream.close()
  requirements = Requirements(momentum_target=True, queue=True, views=views, sampler=sampler, class_aware_power=power)
  expected = budget.pretrain_budget(requirements, 0, counts, batch, steps)
  assert drawn == expected["images_drawn"]
  observed = rarest / counts[-1]
  if sampler == "instance":
    assert observed == expected["rarest_class_draws_per_image"] == epochs  # whole epochs: each image once each
  else:
    p = budget.class_aware_probabilities(counts, power)[-1]
    sigma = np.sqrt(steps * batch * p * (1 - p)) / counts[-1]  # binomial spread of the class-aware draws
    assert abs(observed - expected["rarest_class_draws_per_image"]) < 4 * sigma
    assert expected["rarest_class_draws_per_image"] > epochs + 5 * sigma  # the class-aware draws are counted


@pytest.mark.parametrize("case", CASES)
def test_forward_images_match_the_real_step(case, monkeypatch):
  """Rows the traced pretrain step sends through OnlineForward (with gradient) and the momentum target."""
  seen = {"online": 0, "target": 0}
  online_call, target_call = OnlineForward.__call__, step_module.momentum_keys

  def counting_online(self, images, *args, **kwargs):
    seen["online"] += images.shape[0]
    return online_call(self, images, *args, **kwargs)

  def counting_target(target_model, target_params, target_batch_stats, key_images, *args, **kwargs):
    seen["target"] += key_images.shape[0]
    return target_call(target_model, target_params, target_batch_stats, key_images, *args, **kwargs)

  monkeypatch.setattr(OnlineForward, "__call__", counting_online)
  monkeypatch.setattr(step_module, "momentum_keys", counting_target)
  config, num_classes = case_config(case), 10
  method = get_method(config)
  schedule = warmup_cosine_schedule(0.01, 100, 2)
  tx = sgd(schedule, 0.9, 5e-4)
  online, target = build_models(config, method, num_classes)
  step = make_pretrain_step(config, method, online, target, tx, schedule)
  counts = np.arange(20, 10, -1)
  state = abstract_pretrain_state(config, method, online, tx, num_classes, 1, counts)
  batch = synthetic.pretrain_batch(config, method.requirements.views, 1, num_classes, np.random.default_rng(0))
  jax.eval_shape(step, state, batch)
  b = config.train.batch_size
  expected = budget.pretrain_budget(method.requirements, config.pbsd.num_crops, counts, b, 1)
  assert seen == {"online": expected["online_forward_images"], "target": expected["target_forward_images"]}
  assert seen["online"] >= b
