"""Fashion-MNIST-LT: Zalando's 28x28 grayscale clothing images, train long-tailed, test balanced.

Reads the four gzipped IDX files of the original release (the Debian package `dataset-fashion-mnist`
installs them in /usr/share/datasets/fashion-mnist). The train split (6,000 per class) is cut to the
exponential profile with `n_max = 6000`; the test split is the full balanced t10k set (1,000 per class).
An optional validation split (`val_per_class` > 0) takes images the profile left out of the train split;
class 0 keeps all 6,000 of its images for training, so the validation split has none of class 0.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from data import base, long_tail

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type these files use


def read_idx(path: str, expected_ndim: int) -> np.ndarray:
  """A gzipped IDX file as a uint8 array (`[N, 28, 28]` images or `[N]` labels).

  IDX header: two zero bytes, a type code byte, the number of dimensions, then each dimension as a
  big-endian uint32; the data follow in C order.
  """
  with gzip.open(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(f"{path} is not an IDX file (first bytes {raw[:4]!r})")
  type_code, ndim = raw[2], raw[3]
  if type_code != _IDX_UBYTE:
    raise ValueError(f"{path}: IDX type code {type_code:#04x}, expected unsigned bytes ({_IDX_UBYTE:#04x})")
  if ndim != expected_ndim:
    raise ValueError(f"{path}: {ndim} dimensions, expected {expected_ndim}")
  header_size = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  if len(raw) - header_size != int(np.prod(shape)):
    raise ValueError(
      f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but "
      f"{len(raw) - header_size} data bytes follow; the file is truncated or corrupt"
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images `[N, 28, 28, 1]` and int32 labels `[N]` of 'train' or 'test'."""
  image_file, label_file = (os.path.join(root, name) for name in _FILES[split])
  for path in (image_file, label_file):
    if not os.path.exists(path):
      raise FileNotFoundError(
        f"Fashion-MNIST file {path} not found. Install with `sudo apt-get install dataset-fashion-mnist` "
        f"(Debian package, files in {DEFAULT_ROOT}) or pass --config.data.root=<dir with the IDX files>"
      )
  images = read_idx(image_file, expected_ndim=3)
  labels = read_idx(label_file, expected_ndim=1)
  if len(images) != len(labels):
    raise ValueError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
  return images[..., None], labels.astype(np.int32)


def load_fashion_mnist_lt(
  imbalance_factor: float = 100, seed: int = 0, root: str = DEFAULT_ROOT, val_per_class: int = 0
) -> base.LongTailedDataset:
  """Fashion-MNIST-LT: train `6000 * IF ** (-c / 9)` images of class c, test 1,000 per class, and with
  `val_per_class` > 0 a validation split of up to that many left-out training images per class."""
  train_images, train_labels = _read_split(root, "train")
  test_images, test_labels = _read_split(root, "test")
  keep = long_tail.long_tail_subset(train_labels, imbalance_factor, seed)
  val = None
  if val_per_class:
    held_out = long_tail.held_out_subset(train_labels, keep, val_per_class, seed)
    val = (train_images[held_out], train_labels[held_out])

  def split(name, images, labels):
    source = base.ArraySource(np.ascontiguousarray(images), labels)
    return base.Split(name=name, source=source, labels=labels)

  return base.LongTailedDataset(
    name="fashion_mnist_lt",
    num_classes=10,
    channels=1,
    train=split("train", train_images[keep], train_labels[keep]),
    test=split("test", test_images, test_labels),
    val=None if val is None else split("val", *val),
    class_names=list(CLASS_NAMES),
  )
