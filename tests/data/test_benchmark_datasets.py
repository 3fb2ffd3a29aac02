"""The real long-tailed benchmarks: split-list datasets (ImageNet-LT, Places-LT, iNat18) and CIFAR-LT.

Split lists are tested on generated JPEG fixtures and, for their sizes, on the real lists in
../shared/data/splits relative to the repository root (read in place, skipped when absent). CIFAR-LT is tested offline through
`tfds.testing.mock_data` and through real ArrayRecord files written by tfds itself from fake CIFAR binaries.
"""

from __future__ import annotations

import io
import json
import os
from unittest import mock

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data import cifar_lt, long_tail, split_list
from tests import REPO_ROOT

ROOT = REPO_ROOT
REAL_SPLITS = os.path.join(ROOT, "..", "shared", "data", "splits")

# 12 classes whose counts straddle the shot thresholds: many > 100, medium 20..100, few < 20.
FIXTURE_COUNTS = (120, 101, 100, 60, 40, 25, 20, 19, 12, 8, 5, 3)
FIXTURE_EVAL_PER_CLASS = 2


def _class_colour(label: int) -> tuple[int, int, int]:
  """A flat colour per class, far enough apart to survive JPEG: the decoded image tells its class."""
  return (20 * label + 10, 250 - 20 * label, 40 + (label % 3) * 80)


def _write_split(root, split_dir, folder, list_name, counts, rng):
  """JPEGs of varied sizes under `root/folder/c<k>/`, listed in `split_dir/list_name`; returns the sizes."""
  lines, sizes = [], []
  for label, count in enumerate(counts):
    os.makedirs(os.path.join(root, folder, f"c{label}"), exist_ok=True)
    for i in range(count):
      width, height = int(rng.integers(12, 48)), int(rng.integers(10, 40))
      relative = f"{folder}/c{label}/img_{i}.JPEG"
      Image.new("RGB", (width, height), _class_colour(label)).save(os.path.join(root, relative), quality=95)
      lines.append(f"{relative} {label}\n")
      sizes.append((height, width))
  with open(os.path.join(split_dir, list_name), "w") as f:
    f.writelines(lines)
  return sizes


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
  """An image root and a split dir (kept apart, as on a real machine) with train / val / test lists."""
  root = str(tmp_path_factory.mktemp("images"))
  split_dir = str(tmp_path_factory.mktemp("splits"))
  rng = np.random.default_rng(0)
  sizes = {
    "train": _write_split(root, split_dir, "train", "train.txt", FIXTURE_COUNTS, rng),
    "val": _write_split(
      root, split_dir, "train_heldout", "val.txt", [FIXTURE_EVAL_PER_CLASS] * len(FIXTURE_COUNTS), rng
    ),
    "test": _write_split(root, split_dir, "val", "test.txt", [FIXTURE_EVAL_PER_CLASS] * len(FIXTURE_COUNTS), rng),
  }
  return root, split_dir, sizes


def _write_list(path, lines):
  with open(path, "w") as f:
    f.write("".join(lines))
  return str(path)


# --- read_split_list ---------------------------------------------------------------------------------


def test_read_split_list_keeps_order_and_labels(fixture_dirs):
  _, split_dir, _ = fixture_dirs
  paths, labels = split_list.read_split_list(os.path.join(split_dir, "train.txt"), num_classes=12)
  assert labels.dtype == np.int32
  assert len(paths) == len(labels) == sum(FIXTURE_COUNTS) == 513
  np.testing.assert_array_equal(np.bincount(labels, minlength=12), FIXTURE_COUNTS)
  assert paths[0] == "train/c0/img_0.JPEG" and paths[-1] == "train/c11/img_2.JPEG"
  assert np.all(np.diff(labels) >= 0)  # the fixture lists class by class


def test_read_split_list_tolerates_crlf_and_trailing_blank_lines(tmp_path):
  path = _write_list(tmp_path / "l.txt", ["a/x.jpg 0\r\n", "b/y.jpg 2\r\n", "\n", "  \n"])
  paths, labels = split_list.read_split_list(path, num_classes=3)
  assert paths == ["a/x.jpg", "b/y.jpg"]
  np.testing.assert_array_equal(labels, [0, 2])


@pytest.mark.parametrize(
  "bad_line, message",
  [
    ("a/z.jpg 1 extra\n", r"line 3: expected 'relative/path label' \(2 fields\), got 3 fields: 'a/z.jpg 1 extra'"),
    ("a/z.jpg\n", r"line 3: expected 'relative/path label' \(2 fields\), got 1 fields: 'a/z.jpg'"),
    ("a/z.jpg one\n", r"line 3: label 'one' is not an integer: 'a/z.jpg one'"),
    ("a/z.jpg 1.0\n", r"line 3: label '1.0' is not an integer"),
    ("a/z.jpg 5\n", r"line 3: label 5 is outside \[0, 5\): 'a/z.jpg 5'"),
    ("a/z.jpg -1\n", r"line 3: label -1 is outside \[0, 5\)"),
    ("\n", r"line 3: blank line before the sample on line 4"),
  ],
)
def test_read_split_list_names_file_line_and_content(tmp_path, bad_line, message):
  path = _write_list(tmp_path / "bad.txt", ["a/x.jpg 0\n", "a/y.jpg 4\n", bad_line, "a/w.jpg 3\n"])
  with pytest.raises(ValueError, match=message) as error:
    split_list.read_split_list(path, num_classes=5)
  assert str(error.value).startswith(f"{path}, line 3")


def test_read_split_list_without_num_classes_still_rejects_negative(tmp_path):
  path = _write_list(tmp_path / "l.txt", ["a/x.jpg 7000\n", "a/y.jpg -2\n"])
  with pytest.raises(ValueError, match=r"line 2: label -2 is outside >= 0"):
    split_list.read_split_list(path)
  paths, labels = split_list.read_split_list(_write_list(tmp_path / "ok.txt", ["a/x.jpg 7000\n"]))
  assert labels.tolist() == [7000]


def test_read_split_list_missing_or_empty_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="split list .*nope.txt does not exist"):
    split_list.read_split_list(str(tmp_path / "nope.txt"))
  with pytest.raises(ValueError, match="holds no sample"):
    split_list.read_split_list(_write_list(tmp_path / "empty.txt", ["\n"]))


# --- check_files -------------------------------------------------------------------------------------


def test_check_files_missing_root(tmp_path):
  missing_root = str(tmp_path / "no_such_root")
  with pytest.raises(FileNotFoundError, match=rf"root {missing_root} does not exist; pass --config.data.root=<dir>"):
    split_list.check_files(missing_root, ["a/x.jpg"], "train.txt")


def test_check_files_names_missing_images_with_count_and_lines(fixture_dirs, tmp_path):
  root, split_dir, _ = fixture_dirs
  paths, _ = split_list.read_split_list(os.path.join(split_dir, "train.txt"))
  split_list.check_files(root, paths, "train.txt")  # all present
  paths = list(paths)
  paths[4] = "train/c0/gone_a.JPEG"
  paths[300] = "train/c3/gone_b.JPEG"
  paths[512] = "no_such_dir/gone_c.JPEG"
  with pytest.raises(FileNotFoundError) as error:
    split_list.check_files(root, paths, "/lists/train.txt")
  text = str(error.value)
  assert text.startswith(f"3 of the 513 images listed in /lists/train.txt are missing under {root}: ")
  assert "line 5: train/c0/gone_a.JPEG, line 301: train/c3/gone_b.JPEG, line 513: no_such_dir/gone_c.JPEG" in text


def test_check_files_shows_first_five_and_counts_the_rest(tmp_path):
  paths = [f"d/missing_{i}.jpg" for i in range(8)]
  with pytest.raises(FileNotFoundError, match=r"^8 of the 8 images .*line 5: d/missing_4.jpg, \.\.\. \(3 more\)$"):
    split_list.check_files(str(tmp_path), paths, "l.txt")


# --- JpegFileSource ----------------------------------------------------------------------------------


def test_split_decodes_every_image_at_its_size_with_its_class(fixture_dirs):
  root, split_dir, sizes = fixture_dirs
  split = split_list.split_from_list("train", root, os.path.join(split_dir, "train.txt"), num_classes=12)
  assert len(split) == len(split.source) == 513
  for index in range(0, 513, 7):
    record = split.source[index]
    assert record["image"].dtype == np.uint8
    assert record["image"].shape == sizes["train"][index] + (3,)
    assert record["label"] == split.labels[index]
    mean_colour = record["image"].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(mean_colour, _class_colour(record["label"]), atol=6)


def test_grayscale_cmyk_and_png_files_decode_to_rgb(tmp_path):
  Image.new("L", (20, 10), 77).save(tmp_path / "gray.jpg")
  Image.new("CMYK", (9, 7), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
  Image.new("RGBA", (5, 6), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
  source = split_list.JpegFileSource(str(tmp_path), ["gray.jpg", "cmyk.jpg", "rgba.png"], np.array([0, 1, 2]))
  gray, cmyk, png = (source[i]["image"] for i in range(3))
  assert gray.shape == (10, 20, 3) and np.abs(gray.astype(int) - 77).max() <= 2
  assert cmyk.shape == (7, 9, 3) and cmyk[..., 0].min() > 240 and cmyk[..., 1:].max() < 15
  assert png.shape == (6, 5, 3) and png[0, 0].tolist() == [1, 2, 3]


def test_decode_size_hint_drafts_jpeg_to_the_smallest_scale_still_covering_the_hint(tmp_path):
  y, x = np.mgrid[0:480, 0:640]
  smooth = np.stack([x * 255 / 639, y * 255 / 479, 128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)], -1)
  Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.jpg", quality=90)
  Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.png")
  full = split_list.JpegFileSource(str(tmp_path), ["big.jpg"], np.array([0]))[0]["image"]
  assert full.shape == (480, 640, 3)
  # DCT scales are 1/1, 1/2, 1/4, 1/8: the largest reduction whose shorter side is still >= the hint.
  for hint, expected in [
    (256, (480, 640)),
    (240, (240, 320)),
    (100, (120, 160)),
    (60, (60, 80)),
    (10, (60, 80)),
    (1000, (480, 640)),
  ]:
    source = split_list.JpegFileSource(str(tmp_path), ["big.jpg", "big.png"], np.array([0, 0]), decode_size_hint=hint)
    assert source[0]["image"].shape == expected + (3,), hint
    assert source[1]["image"].shape == (480, 640, 3)  # PNG: no draft
  half = split_list.JpegFileSource(str(tmp_path), ["big.jpg"], np.array([0]), decode_size_hint=200)[0]["image"]
  # The draft is a faithful downscale: close to a 2x2 box average of the full decode.
  box = full.reshape(240, 2, 320, 2, 3).astype(float).mean((1, 3))
  assert np.abs(half.astype(float) - box).mean() < 1


def test_source_errors(tmp_path):
  with pytest.raises(ValueError, match="2 paths but 1 labels"):
    split_list.JpegFileSource(str(tmp_path), ["a", "b"], np.array([0]))
  with pytest.raises(ValueError, match="decode_size_hint must be None or >= 1, got 0"):
    split_list.JpegFileSource(str(tmp_path), ["a"], np.array([0]), decode_size_hint=0)
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  source = split_list.JpegFileSource(str(tmp_path), ["broken.jpg"], np.array([0]))
  with pytest.raises(OSError, match=r"cannot decode image 0 of 1 \(.*broken.jpg\)"):
    source[0]


def test_source_pickles_for_grain_workers(fixture_dirs):
  import pickle

  root, split_dir, _ = fixture_dirs
  split = split_list.split_from_list(
    "val", root, os.path.join(split_dir, "val.txt"), num_classes=12, decode_size_hint=16
  )
  clone = pickle.loads(pickle.dumps(split.source))
  np.testing.assert_array_equal(clone[5]["image"], split.source[5]["image"])
  assert clone.decode_size_hint == 16 and len(clone) == 24


# --- the dataset builders ----------------------------------------------------------------------------


def _standard_lists(fixture_dirs, tmp_path, names):
  """The fixture lists copied under the standard file names in a fresh split dir."""
  _, split_dir, _ = fixture_dirs
  for source_name, standard_name in names.items():
    with open(os.path.join(split_dir, source_name)) as f:
      (tmp_path / standard_name).write_text(f.read())
  return str(tmp_path)


def test_imagenet_lt_builder_reads_standard_names(fixture_dirs, tmp_path):
  root = fixture_dirs[0]
  split_dir = _standard_lists(
    fixture_dirs,
    tmp_path,
    {"train.txt": "ImageNet_LT_train.txt", "val.txt": "ImageNet_LT_val.txt", "test.txt": "ImageNet_LT_test.txt"},
  )
  dataset = split_list.load_imagenet_lt(root, split_dir, eval_decode_size_hint=8)
  assert dataset.name == "imagenet_lt" and dataset.num_classes == 1000 and dataset.channels == 3
  assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (513, 24, 24)
  np.testing.assert_array_equal(dataset.class_counts[:12], FIXTURE_COUNTS)
  assert dataset.class_counts[12:].sum() == 0
  assert dataset.train.source.decode_size_hint is None and dataset.test.source.decode_size_hint == 8
  assert dataset.test.source.paths[0] == "val/c0/img_0.JPEG"


def test_places_lt_and_inat18_builders(fixture_dirs, tmp_path):
  root = fixture_dirs[0]
  (tmp_path / "p").mkdir()
  places_dir = _standard_lists(
    fixture_dirs,
    tmp_path / "p",
    {"train.txt": "Places_LT_train.txt", "val.txt": "Places_LT_val.txt", "test.txt": "Places_LT_test.txt"},
  )
  places = split_list.load_places_lt(root, places_dir)
  assert places.num_classes == 365 and (len(places.train), len(places.val), len(places.test)) == (513, 24, 24)
  (tmp_path / "i").mkdir()
  inat_dir = _standard_lists(
    fixture_dirs, tmp_path / "i", {"train.txt": "iNaturalist18_train.txt", "test.txt": "iNaturalist18_val.txt"}
  )
  inat = split_list.load_inat18(root, inat_dir)
  assert inat.num_classes == 8142 and inat.val is None
  assert len(inat.test) == 24 and inat.test.name == "test"


def test_fixture_shot_groups_follow_the_thresholds(fixture_dirs):
  root, split_dir, _ = fixture_dirs
  train = split_list.split_from_list("train", root, os.path.join(split_dir, "train.txt"), num_classes=12)
  groups, scheme = long_tail.shot_groups(np.bincount(train.labels, minlength=12))
  assert scheme == "shots"
  assert groups["many"].tolist() == [0, 1]  # 120, 101
  assert groups["medium"].tolist() == [2, 3, 4, 5, 6]  # 100, 60, 40, 25, 20
  assert groups["few"].tolist() == [7, 8, 9, 10, 11]  # 19, 12, 8, 5, 3


def test_builder_errors(fixture_dirs, tmp_path):
  root = fixture_dirs[0]
  with pytest.raises(
    FileNotFoundError,
    match="split list directory .*nowhere does not exist; pass "
    "--config.data.split_dir=<dir holding ImageNet_LT_train.txt",
  ):
    split_list.load_imagenet_lt(root, str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="split list .*Places_LT_train.txt does not exist"):
    split_list.load_places_lt(root, str(tmp_path))
  split_dir = _standard_lists(
    fixture_dirs, tmp_path, {"train.txt": "iNaturalist18_train.txt", "test.txt": "iNaturalist18_val.txt"}
  )
  with pytest.raises(FileNotFoundError, match="root .*absent does not exist; pass --config.data.root=<dir>"):
    split_list.load_inat18(str(tmp_path / "absent"), split_dir)
  config = ml_collections.ConfigDict({"name": "imagenet_lt", "root": "", "imbalance_factor": 100.0, "seed": 0})
  with pytest.raises(ValueError, match="imagenet_lt reads images from disk: pass --config.data.root="):
    split_list.build_imagenet_lt(config)


def test_registry_builder_defaults_split_dir_to_root(fixture_dirs, tmp_path):
  root = fixture_dirs[0]
  _standard_lists(fixture_dirs, tmp_path, {"train.txt": "iNaturalist18_train.txt", "test.txt": "iNaturalist18_val.txt"})
  os.symlink(os.path.join(root, "train"), tmp_path / "train")
  os.symlink(os.path.join(root, "val"), tmp_path / "val")
  config = ml_collections.ConfigDict({"name": "inat18", "root": str(tmp_path), "imbalance_factor": 1.0, "seed": 0})
  dataset = split_list.build_inat18(config)
  assert len(dataset.train) == 513 and len(dataset.test) == 24


# --- the real split lists ----------------------------------------------------------------------------


def _real(name):
  path = os.path.join(REAL_SPLITS, name)
  if not os.path.exists(path):
    pytest.skip(f"{path} is not on this machine (the real split lists live in {REAL_SPLITS})")
  return path


@pytest.mark.parametrize(
  "name, num_classes, size, per_class",
  [
    ("ImageNet_LT_val.txt", 1000, 20_000, 20),
    ("ImageNet_LT_test.txt", 1000, 50_000, 50),
    ("Places_LT_val.txt", 365, 7_300, 20),
    ("iNaturalist18_val.txt", 8142, 24_426, 3),
  ],
)
def test_real_balanced_lists(name, num_classes, size, per_class):
  paths, labels = split_list.read_split_list(_real(name), num_classes)
  assert len(paths) == size
  np.testing.assert_array_equal(np.bincount(labels, minlength=num_classes), per_class)
  assert len(set(paths)) == size


def test_real_places_lt_train_list():
  _, labels = split_list.read_split_list(_real("Places_LT_train.txt"), split_list.PLACES_LT_CLASSES)
  counts = np.bincount(labels, minlength=365)
  assert (len(labels), counts.max(), counts.min()) == (62_500, 4980, 5)
  groups, scheme = long_tail.shot_groups(counts)
  assert scheme == "shots"
  assert [len(groups[g]) for g in ("many", "medium", "few")] == [131, 163, 71]


def test_imagenet_lt_train_counts_from_the_class_number_json(tmp_path):
  with open(_real("ImageNet_LT_train_class_number.json")) as f:
    by_class = json.load(f)
  assert sorted(int(k) for k in by_class) == list(range(1000))
  counts = np.array([by_class[str(c)] for c in range(1000)])
  assert (counts.max(), counts.min(), counts.sum()) == (1280, 5, 115_846)
  groups, scheme = long_tail.shot_groups(counts)
  assert scheme == "shots"
  assert [len(groups[g]) for g in ("many", "medium", "few")] == [385, 479, 136]
  # A train list with those counts reads back to the same counts.
  lines = [f"train/c{c}/{i}.JPEG {c}\n" for c in range(1000) for i in range(counts[c])]
  train_list = _write_list(tmp_path / "ImageNet_LT_train.txt", lines)
  _, labels = split_list.read_split_list(train_list, split_list.IMAGENET_LT_CLASSES)
  np.testing.assert_array_equal(np.bincount(labels, minlength=1000), counts)


# --- CIFAR-LT through tfds ---------------------------------------------------------------------------


class _FakeCifar:
  """A tfds-like split of `per_class` records per class, interleaved; pixels encode (label, index)."""

  def __init__(self, num_classes: int, per_class: int):
    self.labels = np.tile(np.arange(num_classes), per_class)

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, index):
    image = np.zeros((32, 32, 3), np.uint8)
    image[0, 0] = (self.labels[index], index // 256, index % 256)
    return {"image": image, "label": int(self.labels[index]), "id": f"{index:05d}"}


def _fake_as_data_source(builder, split, decoders=None, deserialize_method=None):
  num_classes = cifar_lt.NUM_CLASSES[builder.name]
  per_class = cifar_lt.TRAIN_PER_CLASS[builder.name] if split == "train" else 10_000 // num_classes
  return _FakeCifar(num_classes, per_class)


def _pixel_index(images):
  return images[:, 0, 0, 1].astype(int) * 256 + images[:, 0, 0, 2]


@pytest.mark.parametrize(
  "builder_name, imbalance_factor, total, head, tail",
  [
    ("cifar100", 100, 10_847, 500, 5),
    ("cifar100", 50, 12_608, 500, 10),
    ("cifar100", 10, 19_573, 500, 50),
    ("cifar10", 100, 12_406, 5000, 50),
    ("cifar10", 50, 13_996, 5000, 100),
    ("cifar10", 10, 20_431, 5000, 500),
  ],
)
def test_cifar_lt_counts_and_untouched_test(builder_name, imbalance_factor, total, head, tail):
  num_classes = cifar_lt.NUM_CLASSES[builder_name]
  # Independent closed form: n_c = floor(n_max * IF^(-c / (C - 1))).
  expected = [int(head * imbalance_factor ** (-c / (num_classes - 1))) for c in range(num_classes)]
  assert sum(expected) == total
  with tfds.testing.mock_data(as_data_source_fn=_fake_as_data_source):
    dataset = cifar_lt.load_cifar_lt(builder_name, imbalance_factor, seed=0, data_dir="/nonexistent/tfds")
  assert dataset.name == f"{builder_name}_lt" and dataset.channels == 3 and dataset.val is None
  np.testing.assert_array_equal(dataset.class_counts, expected)
  assert (len(dataset.train), dataset.class_counts[0], dataset.class_counts[-1]) == (total, head, tail)
  train_images = dataset.train.source.images
  # Every kept image is a distinct original record of its own class.
  np.testing.assert_array_equal(train_images[:, 0, 0, 0], dataset.train.labels)
  assert len(np.unique(_pixel_index(train_images))) == total
  # The test split is the whole balanced split, in order.
  assert len(dataset.test) == 10_000
  np.testing.assert_array_equal(np.bincount(dataset.test.labels), 10_000 // num_classes)
  np.testing.assert_array_equal(_pixel_index(dataset.test.source.images), np.arange(10_000))
  record = dataset.train.source[0]
  assert record["image"].shape == (32, 32, 3) and record["label"] == dataset.train.labels[0]


def test_cifar_lt_seed_picks_images_not_counts():
  with tfds.testing.mock_data(as_data_source_fn=_fake_as_data_source):
    a = cifar_lt.load_cifar100_lt(100, seed=0, data_dir="/nonexistent/tfds")
    a_again = cifar_lt.load_cifar100_lt(100, seed=0, data_dir="/nonexistent/tfds")
    b = cifar_lt.load_cifar100_lt(100, seed=1, data_dir="/nonexistent/tfds")
  np.testing.assert_array_equal(a.class_counts, b.class_counts)
  np.testing.assert_array_equal(a.train.source.images, a_again.train.source.images)
  assert not np.array_equal(_pixel_index(a.train.source.images), _pixel_index(b.train.source.images))
  # Class 0 keeps all 500 whatever the seed.
  assert set(_pixel_index(a.train.source.images[a.train.labels == 0])) == set(
    _pixel_index(b.train.source.images[b.train.labels == 0])
  )


def test_cifar_lt_through_tfds_default_mock():
  # tfds's own random mock (random labels, so n_max must be small enough for every class).
  with tfds.testing.mock_data(num_examples=400):
    dataset = cifar_lt.load_cifar_lt("cifar10", 10, seed=0, data_dir="/nonexistent/tfds", n_max=20)
  np.testing.assert_array_equal(dataset.class_counts, long_tail.long_tail_counts(20, 10, 10))
  assert len(dataset.test) == 400 and dataset.test.source.images.shape == (400, 32, 32, 3)
  assert dataset.class_names == [str(c) for c in range(10)]


def test_cifar_lt_missing_data_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    cifar_lt.load_cifar100_lt(100, data_dir=str(tmp_path))
  text = str(error.value)
  assert f"tfds dataset cifar100 is not prepared in {tmp_path}" in text
  assert "tfds build cifar100 --file_format=array_record" in text
  assert "--config.data.tfds_data_dir=<dir>" in text
  config = ml_collections.ConfigDict(
    {"name": "cifar10_lt", "root": "", "tfds_data_dir": str(tmp_path), "imbalance_factor": 100.0, "seed": 0}
  )
  with pytest.raises(FileNotFoundError, match=f"cifar10 is not prepared in {tmp_path}"):
    cifar_lt.build_cifar10_lt(config)


def _prepare_fake_cifar10(data_dir, raw_dir, per_class_train, per_class_test):
  """Real ArrayRecord files written by tfds's own cifar10 builder from fake CIFAR binaries, offline.

  Patches only what needs the network or tensorflow to *write* (download, file reads through tf.io,
  PNG encoding through tf.image, the checksum registry); reading is left untouched.
  """
  from tensorflow_datasets.core.features import image_feature
  from tensorflow_datasets.image_classification import cifar

  prefix = os.path.join(raw_dir, "cifar-10-batches-bin")
  os.makedirs(prefix)
  rng = np.random.default_rng(0)

  def write(name, per_class):
    labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
    pixels = rng.integers(0, 256, (labels.size, 3072), dtype=np.uint8)
    pixels[:, 0] = labels  # red channel of pixel (0, 0) holds the label
    np.concatenate([labels[:, None], pixels], 1).tofile(os.path.join(prefix, name))

  write("data_batch_1.bin", per_class_train)
  for name in ("data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"):
    open(os.path.join(prefix, name), "wb").close()
  write("test_batch.bin", per_class_test)
  with open(os.path.join(prefix, "batches.meta.txt"), "w") as f:
    f.write("\n".join(f"name{c}" for c in range(10)))

  def load_data(path, labels_number=1):
    records = np.fromfile(path, np.uint8).reshape(-1, labels_number + 3072)
    for row in records:
      yield row[:labels_number], row[labels_number:].reshape(3, 32, 32).transpose(1, 2, 0)

  def encode_png(self, array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()

  with (
    mock.patch.object(cifar, "_load_data", load_data),
    mock.patch.object(image_feature._ImageEncoder, "_encode_image", encode_png),
    mock.patch(
      "tensorflow_datasets.core.dataset_builder.DatasetBuilder.url_infos",
      new_callable=mock.PropertyMock,
      return_value=None,
    ),
    mock.patch("tensorflow_datasets.core.download.DownloadManager.download_and_extract", lambda self, url: raw_dir),
  ):
    builder = tfds.builder("cifar10", data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()


def test_cifar_lt_reads_real_array_record_files_without_tensorflow(tmp_path):
  # tensorflow is not installed in this venv: tfds reads ArrayRecord + PNG with array_record and PIL.
  data_dir, raw_dir = str(tmp_path / "tfds"), str(tmp_path / "raw")
  try:
    _prepare_fake_cifar10(data_dir, raw_dir, per_class_train=30, per_class_test=4)
  except (ImportError, AttributeError, TypeError) as error:
    pytest.skip(f"this tfds version cannot write the offline fixture ({error!r}); reading is untested")
  dataset = cifar_lt.load_cifar_lt("cifar10", 10, seed=0, data_dir=data_dir, n_max=30)
  np.testing.assert_array_equal(dataset.class_counts, long_tail.long_tail_counts(30, 10, 10))
  np.testing.assert_array_equal(dataset.train.source.images[:, 0, 0, 0], dataset.train.labels)
  assert len(dataset.test) == 40 and dataset.class_names == [f"name{c}" for c in range(10)]


def test_registry_knows_the_benchmarks_and_summarises_cifar():
  from data import registry

  for name in ("cifar10_lt", "cifar100_lt", "imagenet_lt", "places_lt", "inat18"):
    assert name in registry.BUILDERS
  config = ml_collections.ConfigDict(
    {"name": "cifar10_lt", "root": "", "tfds_data_dir": "/nonexistent/tfds", "imbalance_factor": 100.0, "seed": 3}
  )
  with tfds.testing.mock_data(as_data_source_fn=_fake_as_data_source):
    dataset = registry.get_dataset(config)
  assert len(dataset.train) == 12_406
  assert "cifar10_lt: 10 classes, train 12406 images (5000..50 per class" in registry.summary(dataset)
