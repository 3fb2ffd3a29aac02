"""ImageNet-LT and iNaturalist 2018 from the prepared tfds builders `imagenet_lt` and `i_naturalist2018`.

The second route to two of the benchmarks `data.split_list` reads from split lists and image folders
(tfds has no Places-LT builder). Which tfds split plays which part:

- `imagenet_lt`, 1000 classes: `train` 115,846 images (those of ImageNet_LT_train.txt) -> train;
  `validation` 20,000 (ImageNet_LT_val.txt, 20 per class drawn from ILSVRC train) -> val, for choices made
  during training; `test` 50,000 (the ILSVRC2012 val set, ImageNet_LT_test.txt) -> test, the reported split.
- `i_naturalist2018`, 8142 classes: `train` 437,513 -> train; `validation` 24,426 (3 per class) -> test,
  because iNat18 has no labelled test set and papers report on the official val set; val is None, as in
  `split_list.load_inat18`. tfds's own `test` split holds the unlabelled competition images (label -1)
  and is never read.

Label indices are those of the split lists, so results of the two routes compare directly: tfds numbers
ImageNet classes by sorted WordNet id, as ImageNet_LT_*.txt do (all 70,000 lines of the val and test lists
agree), and its iNat18 label-name file is in category-id order, the number the split lists use.

Reading goes through `tfds.data_source` (ArrayRecord, no tensorflow) with image decoding skipped: a record's
image stays encoded, so the labels are read without decoding a single image, and `__getitem__` decodes
with PIL into RGB. That also makes grayscale and CMYK JPEGs (ILSVRC holds both) 3-channel, which tfds's
own numpy decoder does not do for CMYK (it returns 4 channels).

Cost of the labels: ArrayRecord stores whole examples, so reading the labels reads every record, image
bytes included, though it decodes none. Measured ~90 us per 115 KB record from the page cache, so about
17 s for ImageNet-LT's three splits (185,846 records) and, estimated, a minute or more for iNat18's
461,939 larger records; from a cold disk the whole prepared dataset is read once per job (~20 GB for
ImageNet-LT, ~120 GB for iNat18).

Preparing the files is a one-off step on another machine; nothing here downloads:

    tfds build imagenet_lt --file_format=array_record --data_dir=<dir> --manual_dir=<dir holding
        ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar>
    tfds build i_naturalist2018 --file_format=array_record --data_dir=<dir>

Both need tensorflow and network access (imagenet_lt fetches its two subset lists, i_naturalist2018 all
its archives, the train/val images alone about 120 GB). Then pass `--config.data.tfds_data_dir=<dir>`
(which falls back to `data.root`).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from data import base, split_list, tfds_common

IMAGENET_LT = "imagenet_lt"
INAT18 = "i_naturalist2018"

# How to prepare each builder, and the split-list route that needs no preparation.
_PREPARE = {
  IMAGENET_LT: (
    "`tfds build imagenet_lt --file_format=array_record --data_dir=<dir> --manual_dir=<dir "
    "holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar>` on a machine with those "
    "manual-download archives, network access (for the ImageNet-LT subset lists) and "
    "tensorflow"
  ),
  INAT18: (
    "`tfds build i_naturalist2018 --file_format=array_record --data_dir=<dir>` on a machine with "
    "network access (it downloads the iNat 2018 archives) and tensorflow"
  ),
}
_SPLIT_LIST_ROUTE = {
  IMAGENET_LT: (
    "--config.data.name=imagenet_lt --config.data.root=<dir holding ILSVRC2012 train/ and "
    "val/> [--config.data.split_dir=<dir holding ImageNet_LT_*.txt>]"
  ),
  INAT18: (
    "--config.data.name=inat18 --config.data.root=<dir holding train_val2018/> "
    "[--config.data.split_dir=<dir holding iNaturalist18_*.txt>]"
  ),
}


def _build_hint(builder_name: str) -> str:
  """How to prepare `builder_name`'s files, and the split-list route that needs none."""
  prepare = _PREPARE.get(
    builder_name,
    f"`tfds build {builder_name} --file_format=array_record "
    f"--data_dir=<dir>` on a machine with network access and tensorflow",
  )
  hint = f"Prepare it once with {prepare}, copy <dir>/{builder_name} here and pass --config.data.tfds_data_dir=<dir>"
  if builder_name in _SPLIT_LIST_ROUTE:
    hint += f". Or read the original images through split lists: {_SPLIT_LIST_ROUTE[builder_name]}"
  return hint


def _open_encoded_split(builder_name: str, split: str, data_dir: str | None) -> Any:
  """The tfds random-access source of one split, images left encoded; the errors of `tfds_common.open_split`.

  Records are `{"image": encoded bytes, "label": int, ...}`.
  """
  return tfds_common.open_split(
    builder_name, split, data_dir, build_hint=_build_hint(builder_name), decoders={"image": tfds.decode.SkipDecoding()}
  )


def decode_rgb(encoded: bytes) -> np.ndarray:
  """An encoded image (JPEG, PNG, ...) as uint8 `[H, W, 3]`; grayscale, CMYK and palette images converted."""
  with Image.open(io.BytesIO(encoded)) as image:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_labels(source: Any) -> np.ndarray:
  """The label of every record of a source that leaves images encoded, int32 `[N]`, in record order."""
  # One record at a time: `__getitems__` was 3x slower per record on ArrayRecord files (measured) and
  # tfds's mock source (tfds.testing.mock_data, 4.9.10) cannot serve it.
  return np.fromiter((int(source[index]["label"]) for index in range(len(source))), dtype=np.int32, count=len(source))


class TfdsImageSource:
  """A grain random-access source over one split of a prepared tfds image dataset.

  `source[i]` is `{"image": uint8 [H, W, 3], "label": int}`, decoded with PIL on access (each image keeps
  its own size, so batching needs a crop or resize first). `labels` `[N]` int32 is read once here, without
  decoding images (see the module docstring for what that costs). Pickling drops the open tfds source, so
  a grain worker process reopens it on its first access.
  """

  def __init__(self, builder_name: str, split: str, data_dir: str | None, num_classes: int):
    self.builder_name = builder_name
    self.split = split
    self.data_dir = data_dir
    self._source = _open_encoded_split(builder_name, split, data_dir)
    self.labels = read_labels(self._source)
    if not len(self.labels):
      searched = data_dir or tfds_common.default_data_dir()
      raise ValueError(f"tfds dataset {builder_name} split {split!r} in {searched} holds no record")
    bad = (self.labels < 0) | (self.labels >= num_classes)
    if bad.any():
      index = int(np.argmax(bad))
      raise ValueError(
        f"tfds dataset {builder_name} split {split!r}: record {index} has label "
        f"{self.labels[index]}, expected [0, {num_classes}) ({int(bad.sum())} such records; "
        f"tfds marks unlabelled records with -1)"
      )

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if self._source is None:
      self._source = _open_encoded_split(self.builder_name, self.split, self.data_dir)
    record = self._source[index]
    try:
      image = decode_rgb(record["image"])
    except (OSError, ValueError) as error:
      raise OSError(
        f"cannot decode image {index} of {len(self)} in tfds dataset {self.builder_name} split {self.split!r}: {error}"
      ) from error
    return {"image": image, "label": int(self.labels[index])}

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state["_source"] = None  # reopened lazily in the process that unpickles it
    return state

  def __repr__(self) -> str:
    return f"TfdsImageSource({self.builder_name!r}, split={self.split!r}, {len(self)} images)"


def _split(name: str, builder_name: str, tfds_split: str, data_dir: str | None, num_classes: int) -> base.Split:
  source = TfdsImageSource(builder_name, tfds_split, data_dir, num_classes)
  return base.Split(name=name, source=source, labels=source.labels)


def load_imagenet_lt_tfds(data_dir: str | None = None) -> base.LongTailedDataset:
  """ImageNet-LT from tfds `imagenet_lt`: train (1280 .. 5 per class), val 20 per class, test 50 per class.

  `data_dir` is the tfds data directory (None: tfds's default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
  """
  num_classes = split_list.IMAGENET_LT_CLASSES
  return base.LongTailedDataset(
    name="imagenet_lt",
    num_classes=num_classes,
    channels=3,
    train=_split("train", IMAGENET_LT, "train", data_dir, num_classes),
    val=_split("val", IMAGENET_LT, "validation", data_dir, num_classes),
    test=_split("test", IMAGENET_LT, "test", data_dir, num_classes),
    class_names=tfds_common.class_names(IMAGENET_LT, data_dir, num_classes),
  )


def load_inat18_tfds(data_dir: str | None = None) -> base.LongTailedDataset:
  """iNaturalist 2018 from tfds `i_naturalist2018`: train, and the official val set as `test`; no `val`.

  iNat18 has no labelled test set, so, as in `split_list.load_inat18`, there is no held-out split for
  choices made during training, and none may be made on `test`.
  """
  num_classes = split_list.INAT18_CLASSES
  return base.LongTailedDataset(
    name="inat18",
    num_classes=num_classes,
    channels=3,
    train=_split("train", INAT18, "train", data_dir, num_classes),
    test=_split("test", INAT18, "validation", data_dir, num_classes),
    class_names=tfds_common.class_names(INAT18, data_dir, num_classes),
  )


def build_imagenet_lt_tfds(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: the tfds data directory from `data.tfds_data_dir`, else `data.root`."""
  return load_imagenet_lt_tfds(tfds_common.tfds_data_dir(data_config))


def build_inat18_tfds(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: the tfds data directory from `data.tfds_data_dir`, else `data.root`."""
  return load_inat18_tfds(tfds_common.tfds_data_dir(data_config))
