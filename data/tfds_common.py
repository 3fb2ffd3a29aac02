"""What the tfds-backed datasets share: where the prepared files live, opening a split, the label names.

`data.cifar_lt` (CIFAR-10/100-LT) and `data.tfds_lt` (ImageNet-LT, iNat18) read prepared ArrayRecord files
through `tfds.data_source`, which needs no tensorflow. Nothing here downloads or prepares data: when the
files are missing or in a format tfds cannot random-access, `open_split` says so and passes on the
caller's own instructions for preparing them.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow_datasets as tfds


def default_data_dir() -> str:
  """Where tfds looks when no data_dir is given: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(os.path.join("~", "tensorflow_datasets"))


def tfds_data_dir(data_config: Any) -> str | None:
  """`data.tfds_data_dir`, else `data.root`, else None (tfds's default location)."""
  return data_config.get("tfds_data_dir") or data_config.get("root") or None


def open_split(builder_name: str, split: str, data_dir: str | None, *, build_hint: str, decoders: Any = None) -> Any:
  """The tfds random-access source of one split; a clear error when the prepared files are missing.

  `build_hint` ends both errors (data not prepared, data not ArrayRecord): the caller's sentence on how to
  prepare this builder's files. `decoders` goes to `tfds.data_source` as is (e.g. to leave images
  encoded). tfds is asked first and the failure diagnosed only afterwards, so `tfds.testing.mock_data`
  (which fakes the source, not the files) works in tests.
  """
  try:
    # download=False: missing data must fail here, never start a download.
    return tfds.data_source(builder_name, split=split, data_dir=data_dir or None, download=False, decoders=decoders)
  except Exception as error:  # tfds raises several exception types for missing or unprepared data
    builder = tfds.builder(builder_name, data_dir=data_dir or None)
    if not builder.is_prepared():
      searched = data_dir or default_data_dir()
      raise FileNotFoundError(
        f"tfds dataset {builder_name} is not prepared in {searched} (looked for {builder.data_dir}). {build_hint}"
      ) from error
    file_format = builder.info.file_format
    if file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise ValueError(
        f"tfds dataset {builder_name} in {builder.data_dir} is prepared as "
        f"{getattr(file_format, 'value', file_format)}, which tfds cannot random-access. "
        f"{build_hint}"
      ) from error
    raise


def class_names(builder_name: str, data_dir: str | None, num_classes: int) -> list[str]:
  """Label names from the prepared dataset's metadata, or the class indices when it has none."""
  names = tfds.builder(builder_name, data_dir=data_dir or None).info.features["label"].names
  return list(names) if len(names) == num_classes else [str(c) for c in range(num_classes)]
