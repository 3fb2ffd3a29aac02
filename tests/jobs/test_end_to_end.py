"""The whole command on a split-list dataset on disk: pretrain (DSCL + PBSD, RGB JPEGs through the grain
pipeline), linear probe with the best epoch chosen on the validation split, and eval on the test split.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests import REPO_ROOT

pytestmark = pytest.mark.slow
ROOT = REPO_ROOT
TRAIN_COUNTS = (110, 30, 20, 8, 4, 3)


def write_split(root, list_path, folder, counts, rng):
  lines = []
  for label, count in enumerate(counts):
    os.makedirs(os.path.join(root, folder, f"n{label:03d}"), exist_ok=True)
    for i in range(count):
      relative = f"{folder}/n{label:03d}/{i}.JPEG"
      base = np.array([40 * label, 255 - 40 * label, 120], np.float32)
      pixels = np.clip(base + rng.normal(0, 20, size=(36 + i % 7, 44, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, relative), quality=90)
      lines.append(f"{relative} {label}\n")
  with open(list_path, "w") as f:
    f.writelines(lines)


def test_pretrain_probe_eval_on_split_lists(tmp_path):
  rng = np.random.default_rng(0)
  images, splits, workdir = tmp_path / "images", tmp_path / "splits", tmp_path / "work"
  splits.mkdir()
  write_split(str(images), splits / "ImageNet_LT_train.txt", "train", TRAIN_COUNTS, rng)
  write_split(str(images), splits / "ImageNet_LT_val.txt", "heldout", [3] * 6, rng)
  write_split(str(images), splits / "ImageNet_LT_test.txt", "val", [4] * 6, rng)
  overrides = [
    f"--config.data.root={images}",
    f"--config.data.split_dir={splits}",
    "--config.model.style=cifar",
    "--config.model.depth=8",
    "--config.augment.image_size=32",
    "--config.pbsd.crop_size=8",
    "--config.train.batch_size=16",
    "--config.moco.queue_size=32",
    "--config.model.key_bn_group_size=8",
    "--config.train.epochs=3",
    "--config.train.warmup_epochs=1",
    "--config.train.num_workers=0",
    "--config.train.log_every=2",
    "--config.probe.batch_size=16",
    "--config.probe.epochs=3",
    "--config.probe.lr=0.5",
    "--config.eval.batch_size=8",
  ]
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "dscl_jax.main",
      "--config",
      "configs/imagenet_lt_dscl_pbsd.py",
      "--workdir",
      str(workdir),
      *overrides,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  log = out.stdout
  assert "imagenet_lt: 1000 classes, train 175 images" in log
  assert "pbsd" in log and "val top-1" in log
  best = json.loads((workdir / "probe" / "best.json").read_text())
  assert 0 <= best["val_accuracy"] <= 100 and best["step"] > 0
  report = json.loads((workdir / "eval_test.json").read_text())
  assert report["split"] == "test" and report["num_images"] == 24
  assert "/probe/best/" in report["probe_checkpoint"]
  assert report["group_scheme"] == "shots"
  # 1000 classes, 6 present: many / medium / few by training counts; the 994 empty classes count as few
  # but hold no test images, so few-shot accuracy is over classes 3, 4, 5 only.
  assert report["groups"]["few"]["num_images"] == 12
  assert report["groups"]["medium"]["num_images"] == 8 and report["groups"]["many"]["num_images"] == 4
  # The fixture is easy: each class has its own colour. Chance is 1/6 even for a probe that has learnt to
  # predict only the six trained classes. With fixture and training seeds 0-4 the test split reaches 100,
  # 83.3, 100, 100, 83.3% (seed 0, this test: 100%) and validation the same; the misses are few-shot
  # images. A floor of 60% (15 of 24) leaves room for seed and float noise and fails if the trunk, probe
  # or eval stops carrying the colour.
  assert report["overall"] >= 60.0, report["classifiers"]["linear_probe"]["per_class_accuracy"][:6]
  assert best["val_accuracy"] >= 60.0
