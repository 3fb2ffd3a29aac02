"""ImageNet-LT, Places-LT and iNaturalist 2018 from split lists and a directory of images you already have.

A split list is a text file with one sample per line, `relative/path.jpg label`, the path relative to an
image root directory (the format the OLTR / DSCL / PaCo releases share). The lists fix which images
form each long-tailed split; the images themselves come from the original releases:

- ImageNet-LT, 1000 classes: `root` holds ILSVRC2012 `train/<wnid>/` and `val/<wnid>/` (val sorted into
  class folders); ImageNet_LT_train.txt 115,846 images (1280 .. 5 per class), ImageNet_LT_val.txt 20,000
  (20 per class, taken from ILSVRC train), ImageNet_LT_test.txt 50,000 (the ILSVRC val set).
- Places-LT, 365 classes: `root` holds Places365-Standard's 256x256 images; Places_LT_train.txt 62,500
  (4980 .. 5 per class), Places_LT_val.txt 7,300 (20 per class), Places_LT_test.txt 36,500 (100 per class).
- iNaturalist 2018, 8142 classes: `root` holds `train_val2018/`; iNaturalist18_train.txt 437,513 images,
  iNaturalist18_val.txt 24,426 (3 per class, the official val set, which papers report on).

The tfds route: tfds 4.9.10 has `imagenet_lt` and `i_naturalist2018` builders (none for Places-LT);
`data/tfds_lt.py` reads them (`imagenet_lt_tfds`, `inat18_tfds`) once prepared as ArrayRecord. Preparing
them needs the original archives, network access for their split files and tensorflow, and re-encodes
every image, so the split lists plus the images people already have remain the default route.

Every image is decoded with PIL on access (RGB, full resolution unless a `decode_size_hint` is given);
EXIF orientation is not applied, as in torchvision's `ImageFolder` loader the reference code uses.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from data import base

IMAGENET_LT_CLASSES = 1000
PLACES_LT_CLASSES = 365
INAT18_CLASSES = 8142

# How many missing images an error lists by name (the count is always complete).
_MISSING_SHOWN = 5


def read_split_list(path: str, num_classes: int | None = None) -> tuple[list[str], np.ndarray]:
  """Paths and labels of a split list, in file order.

  Each line must be exactly `relative/path label` (whitespace-separated, so paths cannot hold spaces),
  with an integer label in `[0, num_classes)` (or `>= 0` when `num_classes` is None). Only trailing blank
  lines are allowed, so sample `i` is always on line `i + 1`. A malformed line raises a ValueError naming
  the file, the line number and the line: no sample is ever dropped silently.

  Returns:
    `(paths, labels)`: `paths` a list of N strings, `labels` int32 `[N]`.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"split list {path} does not exist")
  paths: list[str] = []
  labels: list[int] = []
  first_blank_line = None
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        first_blank_line = first_blank_line or line_number
        continue
      if first_blank_line is not None:
        raise ValueError(
          f"{path}, line {first_blank_line}: blank line before the sample on line "
          f"{line_number}; only trailing blank lines are allowed"
        )
      content = line.rstrip("\r\n")
      if len(fields) != 2:
        raise ValueError(
          f"{path}, line {line_number}: expected 'relative/path label' (2 fields), got "
          f"{len(fields)} fields: {content!r}"
        )
      relative_path, label_text = fields
      try:
        label = int(label_text)
      except ValueError:
        raise ValueError(f"{path}, line {line_number}: label {label_text!r} is not an integer: {content!r}") from None
      if label < 0 or (num_classes is not None and label >= num_classes):
        allowed = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"{path}, line {line_number}: label {label} is outside {allowed}: {content!r}")
      paths.append(relative_path)
      labels.append(label)
  if not paths:
    raise ValueError(f"split list {path} holds no sample")
  return paths, np.asarray(labels, dtype=np.int32)


def check_files(root: str, paths: Sequence[str], split_file: str) -> None:
  """Raises unless `root` is a directory holding every image of `paths` (relative to `root`).

  The error for missing images names `split_file`, how many are missing and the first few with their
  line numbers (`paths[i]` is on line `i + 1`, as `read_split_list` guarantees). Each directory is listed
  once instead of stat-ing every image (8,142 listings for iNaturalist's 437,513 images), which is what
  keeps the check cheap on network file systems.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(
      f"image root {root} does not exist; pass --config.data.root=<dir> (the "
      f"directory the paths in {split_file} are relative to)"
    )
  by_directory: dict[str, list[int]] = collections.defaultdict(list)
  for index, relative_path in enumerate(paths):
    by_directory[os.path.dirname(relative_path)].append(index)
  missing: list[int] = []
  for directory, indices in by_directory.items():
    try:
      present = set(os.listdir(os.path.join(root, directory)))
    except (FileNotFoundError, NotADirectoryError):
      present = set()
    missing.extend(i for i in indices if os.path.basename(paths[i]) not in present)
  if missing:
    missing.sort()
    shown = ", ".join(f"line {i + 1}: {paths[i]}" for i in missing[:_MISSING_SHOWN])
    more = f", ... ({len(missing) - _MISSING_SHOWN} more)" if len(missing) > _MISSING_SHOWN else ""
    raise FileNotFoundError(
      f"{len(missing)} of the {len(paths)} images listed in {split_file} are missing under {root}: {shown}{more}"
    )


class JpegFileSource:
  """A grain random-access source of image files: `source[i]` is `{"image": uint8 [H, W, 3], "label": int}`.

  Images are decoded with PIL and converted to RGB (grayscale and CMYK JPEGs included); `H, W` are each
  image's own size, so batching needs a crop or resize first.

  `decode_size_hint` (e.g. 256): the shorter side the consumer needs. For JPEG files the decoder then
  uses PIL's `draft`, which decodes at a reduced DCT scale (1/2, 1/4 or 1/8) whose result is still at
  least the hint on the shorter side. Only photos at least twice the hint gain: with hint 256, an
  800x600 JPEG decodes 1.2x faster and a 1600x1200 one 1.7x (measured), and the resize that follows
  works on fewer pixels. It changes the pixels a random crop sees, so leave it None (full resolution,
  as the reference) for training crops; it suits evaluation that resizes the shorter side to the hint
  anyway. Non-JPEG files ignore it.
  """

  def __init__(self, root: str, paths: Sequence[str], labels: np.ndarray, decode_size_hint: int | None = None):
    if len(paths) != len(labels):
      raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if decode_size_hint is not None and decode_size_hint < 1:
      raise ValueError(f"decode_size_hint must be None or >= 1, got {decode_size_hint}")
    self.root = os.fspath(root)
    self.paths = list(paths)
    self.labels = np.asarray(labels, dtype=np.int32)
    self.decode_size_hint = decode_size_hint

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    path = os.path.join(self.root, self.paths[index])
    try:
      with Image.open(path) as image:
        if self.decode_size_hint is not None and image.format == "JPEG":
          image.draft("RGB", _draft_request(image.size, self.decode_size_hint))
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as error:
      raise OSError(f"cannot decode image {index} of {len(self)} ({path}): {error}") from error
    return {"image": pixels, "label": int(self.labels[index])}

  def __repr__(self) -> str:
    return f"JpegFileSource(root={self.root!r}, {len(self)} images, decode_size_hint={self.decode_size_hint})"


def _draft_request(size: tuple[int, int], shorter_side: int) -> tuple[int, int]:
  """The `(width, height)` to ask `draft` for: the image's aspect ratio with the shorter side `shorter_side`.

  `draft` only reduces by a factor that keeps both sides >= the request, so the shorter side stays
  >= `shorter_side` (an image already smaller is decoded at full size).
  """
  width, height = size
  scale = shorter_side / min(width, height)
  return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def split_from_list(
  name: str, root: str, split_file: str, num_classes: int, decode_size_hint: int | None = None, check: bool = True
) -> base.Split:
  """One `Split` from a split list: labels read and range-checked, every image checked to exist."""
  paths, labels = read_split_list(split_file, num_classes)
  if check:
    check_files(root, paths, split_file)
  source = JpegFileSource(root, paths, labels, decode_size_hint=decode_size_hint)
  return base.Split(name=name, source=source, labels=labels)


def _load(
  name: str,
  num_classes: int,
  root: str,
  split_dir: str,
  files: dict[str, str | None],
  train_decode_size_hint: int | None,
  eval_decode_size_hint: int | None,
  check: bool,
) -> base.LongTailedDataset:
  """The dataset whose `files` maps 'train' / 'val' / 'test' to list names in `split_dir` (None: no such split)."""
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(
      f"split list directory {split_dir} does not exist; pass --config.data.split_dir="
      f"<dir holding {', '.join(f for f in files.values() if f)}>"
    )
  splits = {}
  for split_name, file_name in files.items():
    if file_name is None:
      splits[split_name] = None
      continue
    hint = train_decode_size_hint if split_name == "train" else eval_decode_size_hint
    splits[split_name] = split_from_list(
      split_name, root, os.path.join(split_dir, file_name), num_classes, decode_size_hint=hint, check=check
    )
  return base.LongTailedDataset(
    name=name, num_classes=num_classes, channels=3, train=splits["train"], test=splits["test"], val=splits["val"]
  )


def load_imagenet_lt(
  root: str,
  split_dir: str,
  *,
  train_decode_size_hint: int | None = None,
  eval_decode_size_hint: int | None = None,
  check: bool = True,
) -> base.LongTailedDataset:
  """ImageNet-LT (Liu et al. 2019): 1000 classes, train 115,846 images (1280 .. 5 per class).

  `root` holds ILSVRC2012 `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (val sorted into class folders);
  `split_dir` holds ImageNet_LT_train.txt, ImageNet_LT_val.txt (20 per class, drawn from ILSVRC train,
  for model selection) and ImageNet_LT_test.txt (the 50,000 ILSVRC val images, the reported split).
  `check` verifies every listed image exists (seconds); the decode hints are `JpegFileSource`'s.
  """
  files = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
  return _load(
    "imagenet_lt", IMAGENET_LT_CLASSES, root, split_dir, files, train_decode_size_hint, eval_decode_size_hint, check
  )


def load_places_lt(
  root: str,
  split_dir: str,
  *,
  train_decode_size_hint: int | None = None,
  eval_decode_size_hint: int | None = None,
  check: bool = True,
) -> base.LongTailedDataset:
  """Places-LT (Liu et al. 2019): 365 classes, train 62,500 images (4980 .. 5 per class).

  `root` holds Places365-Standard's 256x256 images (`data_256/...` for train and val, and the folder
  Places_LT_test.txt names for the 36,500 test images, 100 per class, from the Places365 val set);
  `split_dir` holds Places_LT_train.txt, Places_LT_val.txt (20 per class) and Places_LT_test.txt.
  """
  files = {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"}
  return _load(
    "places_lt", PLACES_LT_CLASSES, root, split_dir, files, train_decode_size_hint, eval_decode_size_hint, check
  )


def load_inat18(
  root: str,
  split_dir: str,
  *,
  train_decode_size_hint: int | None = None,
  eval_decode_size_hint: int | None = None,
  check: bool = True,
) -> base.LongTailedDataset:
  """iNaturalist 2018: 8142 species, train 437,513 images (naturally long-tailed).

  `root` holds `train_val2018/<kingdom>/<class>/*.jpg`; `split_dir` holds iNaturalist18_train.txt and
  iNaturalist18_val.txt. iNat18 has no public labelled test set: papers report top-1 on the official
  val set (24,426 images, 3 per class). So that list is this dataset's `test` split, and `val` is None:
  there is no held-out split for choices made during training, and none may be made on `test`.
  """
  files = {"train": "iNaturalist18_train.txt", "val": None, "test": "iNaturalist18_val.txt"}
  return _load("inat18", INAT18_CLASSES, root, split_dir, files, train_decode_size_hint, eval_decode_size_hint, check)


def _build(loader, data_config: Any, root_holds: str) -> base.LongTailedDataset:
  """`loader(root, split_dir)` from a data config: `root` is required, `split_dir` defaults to `root`."""
  root = data_config.root
  if not root:
    raise ValueError(f"{data_config.name} reads images from disk: pass --config.data.root=<dir holding {root_holds}>")
  return loader(root, data_config.get("split_dir") or root)


def build_imagenet_lt(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: `data_config.root` (ILSVRC2012 train/ and val/), optional `split_dir`."""
  return _build(load_imagenet_lt, data_config, "ILSVRC2012 train/ and val/")


def build_places_lt(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: `data_config.root` (Places365 images), optional `split_dir`."""
  return _build(load_places_lt, data_config, "Places365-Standard data_256/")


def build_inat18(data_config: Any) -> base.LongTailedDataset:
  """Registry builder: `data_config.root` (iNaturalist 2018 images), optional `split_dir`."""
  return _build(load_inat18, data_config, "train_val2018/")
