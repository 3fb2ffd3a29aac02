"""tools/convert_torchvision_resnet.py reads checkpoints without running code from them (issue 28).

The torch side runs in /usr/bin/python3 (Debian torch 1.13, which cannot share a process with this
venv's numpy 2) and is skipped cleanly without it. Two things are checked: the layouts we must read (the
official DSCL checkpoint with its SGD optimizer state, torchvision's bare state_dict in the zip and the
pre-1.6 legacy format) convert in the default safe mode to exactly what the old unrestricted load gave
and to the tensors that were written; and a file whose pickle would create a marker file is refused with
one line on stderr and no marker, while --trust-pickle does run it (so the payload is known to be live).
"""

import os
import subprocess

import numpy as np
import pytest

from tests import REPO_ROOT

ROOT = REPO_ROOT
SYSTEM_PYTHON = "/usr/bin/python3"
CONVERTER = os.path.join(ROOT, "tools", "convert_torchvision_resnet.py")
ENV = dict(os.environ, OMP_NUM_THREADS="2")


def torch_unavailable_reason():
  if not os.path.exists(SYSTEM_PYTHON):
    return f"{SYSTEM_PYTHON} does not exist"
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torch, torchvision"], capture_output=True, text=True)
  if probe.returncode != 0:
    return f"{SYSTEM_PYTHON} cannot import torch and torchvision: {probe.stderr.strip()[-200:]}"
  return None


_REASON = torch_unavailable_reason()
pytestmark = [
  pytest.mark.skipif(
    _REASON is not None, reason=f"needs Debian python3-torch and python3-torchvision for {SYSTEM_PYTHON} ({_REASON})"
  )
]

# argv: output directory. Writes <layout>.pth and <layout>_expected.npz (the converter's names: no
# prefix, no num_batches_tracked) for every layout in LAYOUTS.
TORCH_SIDE = r"""
import sys
import numpy as np
import torch
import torchvision

out = sys.argv[1]


def expected(state, prefix=""):
  return {k[len(prefix):]: v.numpy() for k, v in state.items()
          if k.startswith(prefix) and not k.endswith("num_batches_tracked")}


# The official DSCL layout: encoder_q is a torchvision ResNet whose fc is the projection MLP, saved from
# DDP (keys "module.*"), with the optimizer of a real SGD step, whose state dict holds floats (lr,
# momentum), bools, None (foreach) and momentum buffers.
torch.manual_seed(0)
encoder_q = torchvision.models.resnet18(weights=None, num_classes=32)
encoder_q.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), encoder_q.fc)
optimizer = torch.optim.SGD(encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
encoder_q.train()
encoder_q(torch.randn(2, 3, 32, 32)).square().mean().backward()
optimizer.step()
assert all("momentum_buffer" in s for s in optimizer.state_dict()["state"].values())
state = {"module.encoder_q." + k: v for k, v in encoder_q.state_dict().items()}
state["module.queue"] = torch.nn.functional.normalize(torch.randn(32, 64), dim=0)
state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": optimizer.state_dict()},
           out + "/dscl.pth")
np.savez(out + "/dscl_expected.npz", **expected(state, "module.encoder_q."))

# torchvision's released files: a bare state_dict (an OrderedDict with _metadata), in the zip format
# and in the legacy format of the older releases (e.g. resnet50-19c8e357.pth).
torch.manual_seed(1)
model = torchvision.models.resnet18(weights=None)
with torch.no_grad():
  model.train()
  model(torch.randn(2, 3, 32, 32))  # non-trivial BatchNorm running statistics
state = model.state_dict()
torch.save(state, out + "/torchvision.pth")
torch.save(state, out + "/torchvision_legacy.pth", _use_new_zipfile_serialization=False)
for name in ("torchvision", "torchvision_legacy"):
  np.savez(out + f"/{name}_expected.npz", **expected(state))
"""
LAYOUTS = {"dscl": ["--strip-prefix", "module.encoder_q."], "torchvision": [], "torchvision_legacy": []}

# argv: output path, marker path, payload. The pickle creates the marker when loaded, through a global
# that is not a tensor rebuild function; the file otherwise holds a valid state_dict, so the unrestricted
# load goes through and converts it.
MALICIOUS_SIDE = r"""
import pathlib
import sys
import torch

path, marker, payload = sys.argv[1:]


class Touch:
  def __reduce__(self):
    return (pathlib.Path.touch, (pathlib.Path(marker),))


class Open:
  def __reduce__(self):
    return (open, (marker, "w"))


payload, protocol = {"touch": (Touch(), 2), "open_protocol4": (Open(), 4)}[payload]
torch.save({"state_dict": {"conv1.weight": torch.ones(4, 3, 1, 1)}, "note": payload}, path,
           pickle_protocol=protocol)
"""


def convert(checkpoint, output, *flags):
  return subprocess.run(
    [SYSTEM_PYTHON, CONVERTER, "--checkpoint", str(checkpoint), "--output", str(output), *flags],
    capture_output=True,
    text=True,
    timeout=300,
    env=ENV,
  )


def read_npz(path):
  with np.load(path) as npz:
    return {k: npz[k] for k in npz.files}


def assert_identical(actual, expected, what):
  assert sorted(actual) == sorted(expected), what
  for name, array in expected.items():
    assert actual[name].dtype == array.dtype, f"{what}: {name}"
    assert np.array_equal(actual[name], array), f"{what}: {name}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  out = tmp_path_factory.mktemp("safe_load")
  subprocess.run([SYSTEM_PYTHON, "-c", TORCH_SIDE, str(out)], check=True, timeout=300, env=ENV)
  return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_safe_mode_reads_the_layouts_we_need_exactly(checkpoints, layout, tmp_path):
  checkpoint = checkpoints / f"{layout}.pth"
  safe = convert(checkpoint, tmp_path / "safe.npz", *LAYOUTS[layout])
  assert safe.returncode == 0, safe.stderr
  assert "--trust-pickle" not in safe.stderr
  trusted = convert(checkpoint, tmp_path / "trusted.npz", "--trust-pickle", *LAYOUTS[layout])
  assert trusted.returncode == 0, trusted.stderr
  assert "runs any code" in trusted.stderr

  safe_arrays = read_npz(tmp_path / "safe.npz")
  assert_identical(safe_arrays, read_npz(tmp_path / "trusted.npz"), f"{layout}: safe vs --trust-pickle")
  assert_identical(safe_arrays, read_npz(checkpoints / f"{layout}_expected.npz"), f"{layout}: vs torch")
  if layout == "dscl":
    assert {"fc.0.weight", "fc.2.bias"} <= set(safe_arrays)  # the projection MLP came along


@pytest.mark.parametrize("payload", ["touch", "open_protocol4"])
def test_code_in_a_checkpoint_is_not_run(payload, tmp_path):
  checkpoint, marker = tmp_path / "untrusted.pth", tmp_path / "marker"
  subprocess.run(
    [SYSTEM_PYTHON, "-c", MALICIOUS_SIDE, str(checkpoint), str(marker), payload], check=True, timeout=300, env=ENV
  )
  assert not marker.exists()  # saving did not run the payload

  refused = convert(checkpoint, tmp_path / "out.npz")
  lines = refused.stderr.splitlines()
  assert refused.returncode != 0
  assert len(lines) == 1, refused.stderr
  assert str(checkpoint) in lines[0]
  assert "objects beyond tensors" in lines[0]
  assert "--trust-pickle" in lines[0]
  assert not marker.exists(), "the safe load ran code from the checkpoint"
  assert not (tmp_path / "out.npz").exists()

  # The payload is live: the unrestricted load runs it (the old behaviour, kept behind the flag).
  trusted = convert(checkpoint, tmp_path / "out.npz", "--trust-pickle")
  assert trusted.returncode == 0, trusted.stderr
  assert marker.exists()
