"""TensorBoard event files written without TensorFlow: CRC-32C on known vectors, TFRecord framing parsed
independently, and the records read back by TensorBoard's own loader (when the `tensorboard` package is
installed: it is a test dependency)."""

import math
import struct

import pytest

from dscl_jax.runtime import tensorboard


def test_crc32c_known_vectors():
  assert tensorboard.crc32c(b"") == 0
  assert tensorboard.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
  assert tensorboard.crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4: ascending bytes


def records(data):
  """TFRecord payloads of `data`, checking both masked CRCs of each."""
  out, offset = [], 0
  while offset < len(data):
    header = data[offset : offset + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
    assert length_crc == tensorboard.masked_crc32c(header)
    payload = data[offset + 12 : offset + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
    assert payload_crc == tensorboard.masked_crc32c(payload)
    out.append(payload)
    offset += 16 + length
  assert offset == len(data)
  return out


def write_run(directory):
  with tensorboard.EventWriter(directory) as writer:
    writer.scalars(10, {"loss": 2.5, "lr": 0.1}, wall_time=1000.0)
    writer.scalars(20, {"loss": float("nan"), "lr": 0.05}, wall_time=1001.5)
  return writer.path


def test_framing_and_first_record(tmp_path):
  path = write_run(tmp_path)
  assert path.name.startswith("events.out.tfevents.")
  payloads = records(path.read_bytes())
  assert len(payloads) == 3
  assert b"brain.Event:2" in payloads[0]
  assert b"loss" in payloads[1] and struct.pack("<f", 2.5) in payloads[1]


def test_tensorboard_reads_the_scalars(tmp_path):
  loader_module = pytest.importorskip(
    "tensorboard.backend.event_processing.event_file_loader",
    reason="the tensorboard package (a test dependency) is not installed",
  )
  path = write_run(tmp_path)
  events = list(loader_module.LegacyEventFileLoader(str(path)).Load())
  assert events[0].file_version == "brain.Event:2"
  scalars = [(e.step, e.wall_time, {v.tag: v.simple_value for v in e.summary.value}) for e in events[1:]]
  assert scalars[0] == (10, 1000.0, {"loss": 2.5, "lr": pytest.approx(0.1)})
  step, wall_time, values = scalars[1]
  assert (step, wall_time) == (20, 1001.5) and math.isnan(values["loss"]) and values["lr"] == pytest.approx(0.05)
