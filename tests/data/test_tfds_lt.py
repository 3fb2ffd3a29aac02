"""ImageNet-LT and iNaturalist 2018 through their tfds builders (data.tfds_lt), offline.

Two kinds of fixture:
- real ArrayRecord files written by tfds's own `imagenet_lt` / `i_naturalist2018` builders, with only their
  `_split_generators` replaced (the originals need the ILSVRC tars or a download, and tensorflow), so the
  labels, the images and the split layout are ours to choose and the read path is exactly tfds's;
- `tfds.testing.mock_data` with its own random examples. Its generator encodes images through tensorflow
  when decoders are given (tfds_lt skips image decoding), so PNG encoding is patched to PIL, as in
  tests/test_benchmark_datasets.py.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from unittest import mock

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data import registry, tfds_lt
from tests import REPO_ROOT

# ImageNet-LT fixture: per-class counts of each tfds split (long-tailed train, balanced validation and test).
IMAGENET_TRAIN = {0: 7, 1: 4, 500: 2, 999: 1}
IMAGENET_VALIDATION = {0: 2, 1: 2, 500: 2, 999: 2}
IMAGENET_TEST = {0: 3, 1: 3, 500: 3, 999: 3}
# iNat18 fixture; its tfds `test` split is unlabelled (label -1) and must never be read.
INAT_TRAIN = {0: 5, 4000: 3, 8141: 1}
INAT_VALIDATION = {0: 3, 4000: 3, 8141: 3}
INAT_UNLABELLED_TEST = 4


def _png(label: int, serial: int) -> bytes:
  """A lossless image whose pixel (0, 0) holds (label // 256, label % 256, serial) and whose size varies."""
  pixels = np.full((6 + serial % 3, 9 + serial % 4, 3), 77, np.uint8)
  pixels[0, 0] = (label // 256, label % 256, serial)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def _jpeg(mode: str, colour) -> bytes:
  buffer = io.BytesIO()
  Image.new(mode, (11, 5), colour).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _records(counts: dict[int, int], start: int, key_name: str) -> list[dict]:
  serials = iter(range(start, start + sum(counts.values())))
  return [
    {"image": _png(label, serial), "label": label, key_name: f"img_{serial}"}
    for label, count in counts.items()
    for serial in [next(serials) for _ in range(count)]
  ]


def _prepare(builder_name: str, data_dir: str, splits: dict[str, list[dict]]) -> None:
  """Writes `splits` (split -> records) as ArrayRecord files with tfds's own builder, offline."""
  builder_cls = tfds.builder_cls(builder_name)

  def split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(records) for split, records in splits.items()}

  def generate_examples(self, records):
    del self
    yield from enumerate(records)

  with (
    mock.patch.object(builder_cls, "_split_generators", split_generators),
    mock.patch.object(builder_cls, "_generate_examples", generate_examples),
    mock.patch(
      "tensorflow_datasets.core.dataset_builder.DatasetBuilder.url_infos",
      new_callable=mock.PropertyMock,
      return_value=None,
    ),
  ):
    tfds.builder(builder_name, data_dir=data_dir, file_format="array_record").download_and_prepare()


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_imagenet"))
  train = _records(IMAGENET_TRAIN, 0, "file_name")
  # ILSVRC holds grayscale and CMYK JPEGs: one of each, in class 1.
  train += [
    {"image": _jpeg("L", 128), "label": 1, "file_name": "gray.JPEG"},
    {"image": _jpeg("CMYK", (0, 0, 0, 0)), "label": 1, "file_name": "cmyk.JPEG"},
  ]
  _prepare(
    "imagenet_lt",
    data_dir,
    {
      "train": train,
      "validation": _records(IMAGENET_VALIDATION, 100, "file_name"),
      "test": _records(IMAGENET_TEST, 200, "file_name"),
    },
  )
  return data_dir


@pytest.fixture(scope="module")
def inat_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_inat"))
  unlabelled = [
    {"image": _png(0, 250 + i), "label": -1, "supercategory": -1, "id": f"test_{i}"}
    for i in range(INAT_UNLABELLED_TEST)
  ]
  labelled = lambda counts, start: [dict(r, supercategory=0) for r in _records(counts, start, "id")]
  _prepare(
    "i_naturalist2018",
    data_dir,
    {"train": labelled(INAT_TRAIN, 0), "validation": labelled(INAT_VALIDATION, 100), "test": unlabelled},
  )
  return data_dir


def _counts(labels) -> dict[int, int]:
  values, counts = np.unique(labels, return_counts=True)
  return dict(zip(values.tolist(), counts.tolist()))


def _check_split(split, expected_counts: dict[int, int], serial_range: range, extra: int = 0):
  """Every PNG record of `split` shows its own label and a distinct serial of the split's range."""
  assert len(split) == sum(expected_counts.values()) + extra
  assert split.labels.dtype == np.int32 and split.source.labels is split.labels
  serials = []
  for index in range(len(split)):
    record = split.source[index]
    image = record["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert isinstance(record["label"], int) and record["label"] == split.labels[index]
    if image[1, 1, 0] == 77:  # one of the PNGs (the fixture's JPEGs are flat)
      assert int(image[0, 0, 0]) * 256 + int(image[0, 0, 1]) == record["label"]
      serials.append(int(image[0, 0, 2]))
  assert sorted(serials) == list(serial_range)


def test_imagenet_lt_splits_from_real_array_record_files(imagenet_dir):
  dataset = tfds_lt.load_imagenet_lt_tfds(imagenet_dir)
  assert (dataset.name, dataset.num_classes, dataset.channels) == ("imagenet_lt", 1000, 3)
  assert (dataset.train.name, dataset.val.name, dataset.test.name) == ("train", "val", "test")
  train_counts = {**IMAGENET_TRAIN, 1: IMAGENET_TRAIN[1] + 2}  # + the gray and CMYK JPEGs
  assert _counts(dataset.train.labels) == train_counts
  np.testing.assert_array_equal(np.nonzero(dataset.class_counts)[0], sorted(train_counts))
  assert dataset.class_counts.sum() == 16
  _check_split(dataset.train, IMAGENET_TRAIN, range(0, 14), extra=2)
  # val is tfds's `validation` split, test its `test` split.
  assert _counts(dataset.val.labels) == IMAGENET_VALIDATION
  _check_split(dataset.val, IMAGENET_VALIDATION, range(100, 108))
  assert _counts(dataset.test.labels) == IMAGENET_TEST
  _check_split(dataset.test, IMAGENET_TEST, range(200, 212))
  # tfds numbers the classes by sorted WordNet id, as the ImageNet-LT split lists do.
  assert len(dataset.class_names) == 1000
  assert dataset.class_names[0] == "n01440764" and dataset.class_names == sorted(dataset.class_names)


def test_grayscale_and_cmyk_jpegs_become_rgb(imagenet_dir):
  source = tfds_lt.TfdsImageSource("imagenet_lt", "train", imagenet_dir, num_classes=1000)
  flat = [source[i]["image"] for i in range(len(source)) if source[i]["image"].shape[:2] == (5, 11)]
  assert len(flat) == 2
  for image in flat:
    assert image.dtype == np.uint8 and image.shape == (5, 11, 3)
  gray = [image for image in flat if abs(int(image[2, 2, 0]) - 128) <= 2]
  assert len(gray) == 1 and np.ptp(gray[0].reshape(-1, 3), axis=1).max() == 0  # R == G == B


def test_inat18_uses_validation_as_test_and_never_reads_the_unlabelled_test(inat_dir):
  dataset = tfds_lt.load_inat18_tfds(inat_dir)
  assert (dataset.name, dataset.num_classes, dataset.channels) == ("inat18", 8142, 3)
  assert dataset.val is None and dataset.test.name == "test"
  assert _counts(dataset.train.labels) == INAT_TRAIN
  _check_split(dataset.train, INAT_TRAIN, range(0, 9))
  assert _counts(dataset.test.labels) == INAT_VALIDATION
  _check_split(dataset.test, INAT_VALIDATION, range(100, 109))
  assert len(dataset.class_names) == 8142
  # tfds's own test split is there, unlabelled; reading it as a split is refused.
  with pytest.raises(
    ValueError,
    match=r"i_naturalist2018 split 'test': record 0 has label -1, expected "
    r"\[0, 8142\) \(4 such records; tfds marks unlabelled records",
  ):
    tfds_lt.TfdsImageSource("i_naturalist2018", "test", inat_dir, num_classes=8142)


def test_source_pickles_without_its_tfds_source_and_reopens(imagenet_dir, tmp_path):
  source = tfds_lt.TfdsImageSource("imagenet_lt", "validation", imagenet_dir, num_classes=1000)
  expected = [source[i] for i in range(len(source))]
  copy = pickle.loads(pickle.dumps(source))
  assert copy._source is None  # pylint: disable=protected-access
  np.testing.assert_array_equal(copy.labels, source.labels)
  for index, record in enumerate(expected):
    np.testing.assert_array_equal(copy[index]["image"], record["image"])
    assert copy[index]["label"] == record["label"]
  # A fresh process, as a grain worker: it reopens the files itself.
  pickled = tmp_path / "source.pkl"
  pickled.write_bytes(pickle.dumps(source))
  script = (
    "import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb')); "
    "print(len(s), [s[i]['label'] for i in range(len(s))], s[3]['image'][0, 0].tolist())"
  )
  result = subprocess.run(
    [sys.executable, "-c", script, str(pickled)], capture_output=True, text=True, check=True, timeout=120, cwd=REPO_ROOT
  )
  assert result.stdout.split("\n")[-2] == (
    f"{len(source)} {[r['label'] for r in expected]} {expected[3]['image'][0, 0].tolist()}"
  )


def _encode_png(self, array):
  del self
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.mark.parametrize(
  "loader, num_classes, has_val",
  [
    (tfds_lt.load_imagenet_lt_tfds, 1000, True),
    (tfds_lt.load_inat18_tfds, 8142, False),
  ],
)
def test_through_tfds_mock_data(loader, num_classes, has_val):
  from tensorflow_datasets.core.features import image_feature

  with (
    mock.patch.object(image_feature._ImageEncoder, "_encode_image", _encode_png),
    tfds.testing.mock_data(num_examples=6),
  ):
    dataset = loader("/nonexistent/tfds")
    records = [split.source[i] for split in (dataset.train, dataset.test) for i in range(6)]
  assert (dataset.val is not None) == has_val
  for split in (dataset.train, dataset.val, dataset.test):
    if split is not None:
      assert len(split) == 6 and split.labels.min() >= 0 and split.labels.max() < num_classes
  # tfds's mock draws each label from [0, C): with C >= 1000, six alike would mean a constant.
  assert len(np.unique(dataset.train.labels)) > 1
  np.testing.assert_array_equal(
    [r["label"] for r in records], np.concatenate([dataset.train.labels, dataset.test.labels])
  )
  for record in records:
    assert record["image"].dtype == np.uint8 and record["image"].ndim == 3 and record["image"].shape[2] == 3


def test_registry_dispatch_and_data_dir_fallback(imagenet_dir, inat_dir):
  def config(name, root, tfds_data_dir):
    return ml_collections.ConfigDict(
      {"name": name, "root": root, "tfds_data_dir": tfds_data_dir, "imbalance_factor": 100.0, "seed": 0}
    )

  dataset = registry.get_dataset(config("imagenet_lt_tfds", "", imagenet_dir))
  assert dataset.name == "imagenet_lt" and isinstance(dataset.train.source, tfds_lt.TfdsImageSource)
  assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (16, 8, 12)
  assert "imagenet_lt: 1000 classes, train 16 images (7..0 per class" in registry.summary(dataset)
  # data.root stands in for an empty data.tfds_data_dir, like CIFAR-LT.
  dataset = registry.get_dataset(config("inat18_tfds", inat_dir, ""))
  assert dataset.name == "inat18" and dataset.val is None
  assert (len(dataset.train), len(dataset.test)) == (9, 9)


def test_missing_data_says_how_to_prepare_and_the_split_list_route(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    tfds_lt.load_imagenet_lt_tfds(str(tmp_path))
  text = str(error.value)
  assert f"tfds dataset imagenet_lt is not prepared in {tmp_path} (looked for {tmp_path}/imagenet_lt" in text
  assert (
    "`tfds build imagenet_lt --file_format=array_record --data_dir=<dir> --manual_dir=<dir holding "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar>`"
  ) in text
  assert "--config.data.tfds_data_dir=<dir>" in text
  assert "--config.data.name=imagenet_lt --config.data.root=<dir holding ILSVRC2012 train/ and val/>" in text
  config = ml_collections.ConfigDict(
    {"name": "inat18_tfds", "root": "", "tfds_data_dir": str(tmp_path), "imbalance_factor": 100.0, "seed": 0}
  )
  with pytest.raises(
    FileNotFoundError,
    match=r"i_naturalist2018 is not prepared in .*`tfds build "
    r"i_naturalist2018 --file_format=array_record.*"
    r"--config.data.name=inat18 --config.data.root=",
  ):
    tfds_lt.build_inat18_tfds(config)
  assert not os.listdir(tmp_path)  # nothing was downloaded or created


def test_data_prepared_as_tfrecord_is_refused(imagenet_dir, tmp_path):
  # A copy of the fixture whose metadata says tfrecord, the format tfds cannot random-access.
  version_dir = os.path.join(imagenet_dir, "imagenet_lt", "1.0.0")
  copy_dir = tmp_path / "imagenet_lt" / "1.0.0"
  copy_dir.mkdir(parents=True)
  for name in os.listdir(version_dir):
    (copy_dir / name).write_bytes(open(os.path.join(version_dir, name), "rb").read())
  info = json.loads((copy_dir / "dataset_info.json").read_text())
  info["fileFormat"] = "tfrecord"
  (copy_dir / "dataset_info.json").write_text(json.dumps(info))
  with pytest.raises(
    ValueError,
    match="imagenet_lt in .*1.0.0 is prepared as tfrecord, which tfds cannot "
    "random-access. Prepare it once with `tfds build imagenet_lt "
    "--file_format=array_record",
  ):
    tfds_lt.load_imagenet_lt_tfds(str(tmp_path))
