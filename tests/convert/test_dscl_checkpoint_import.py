"""Import of the official DSCL PyTorch checkpoint layout (tools/import_dscl_checkpoint.py).

A randomly initialised network is built in the official layout by the Debian PyTorch (/usr/bin/python3,
skipped cleanly without it): a torchvision ResNet-50 whose fc is the DSCL projection MLP, with non-trivial
BatchNorm statistics, saved under `module.encoder_q.*` beside encoder_k and the queue buffers, in the
official {"epoch", "arch", "state_dict", "optimizer"} dict. Its L2-normalised embeddings and pooled
features on a fixed input are the reference; the converted checkpoint, restored the way probe and eval
restore it, must give the same numbers to 1e-4.
"""

import os
import subprocess

import jax
import numpy as np
import pytest

from dscl_jax.convert.dscl_checkpoint import dscl_arrays_to_variables, save_dscl_checkpoint
from dscl_jax.core import optim, sharding
from dscl_jax.core.build import abstract_pretrain_state, build_models
from dscl_jax.methods import get_method
from dscl_jax.models import build_encoder
from dscl_jax.runtime import checkpoint
from tests import REPO_ROOT
from tests.config.test_configs import load_config

ROOT = REPO_ROOT
SYSTEM_PYTHON = "/usr/bin/python3"
TOOLS = os.path.join(ROOT, "tools")

TORCH_SIDE = r"""
import sys
import numpy as np
import torch
import torchvision
sys.path.insert(0, sys.argv[1])
from convert_torchvision_resnet import randomize_batchnorm

out = sys.argv[2]
generator = torch.Generator().manual_seed(0)
torch.manual_seed(0)
encoder_q = torchvision.models.resnet50(weights=None, num_classes=128)
dim_mlp = encoder_q.fc.weight.shape[1]
encoder_q.fc = torch.nn.Sequential(torch.nn.Linear(dim_mlp, dim_mlp), torch.nn.ReLU(), encoder_q.fc)
randomize_batchnorm(encoder_q, generator)
encoder_q.eval()
state = {}
for name, tensor in encoder_q.state_dict().items():
  state["module.encoder_q." + name] = tensor
  state["module.encoder_k." + name] = tensor.clone() + 1.0  # the momentum copy: must not be picked up
state["module.queue"] = torch.nn.functional.normalize(torch.randn(128, 256), dim=0)
state["module.main_label_queue"] = torch.randint(0, 1000, (1, 256))
state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {}}, out + "/checkpoint.pth.tar")

images = torch.from_numpy(np.load(out + "/images.npy"))
pooled = {}
encoder_q.avgpool.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", torch.flatten(o, 1)))
with torch.no_grad():
  embedding = torch.nn.functional.normalize(encoder_q(images), dim=1)
np.save(out + "/embedding.npy", embedding.numpy())
np.save(out + "/pooled.npy", pooled["x"].numpy())
"""


def torch_available():
  if not os.path.exists(SYSTEM_PYTHON):
    return False
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torch, torchvision"], capture_output=True)
  return probe.returncode == 0


pytestmark = [
  pytest.mark.skipif(
    not torch_available(),
    reason="needs PyTorch and torchvision for /usr/bin/python3 (Debian "
    "python3-torch, python3-torchvision) to build the official layout",
  )
]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  out = tmp_path_factory.mktemp("dscl_official")
  images = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
  np.save(out / "images.npy", images)
  subprocess.run([SYSTEM_PYTHON, "-c", TORCH_SIDE, TOOLS, str(out)], check=True, timeout=600)
  subprocess.run(
    [
      SYSTEM_PYTHON,
      os.path.join(TOOLS, "convert_torchvision_resnet.py"),
      "--checkpoint",
      str(out / "checkpoint.pth.tar"),
      "--strip-prefix",
      "module.encoder_q.",
      "--output",
      str(out / "encoder_q.npz"),
    ],
    check=True,
    timeout=600,
    capture_output=True,
  )
  return out


def config():
  c = load_config(os.path.join(ROOT, "configs", "imagenet_lt_dscl_pbsd.py"))
  return c


def test_converted_weights_give_the_official_embeddings(official, tmp_path):
  c = config()
  step_dir = save_dscl_checkpoint(c, official / "encoder_q.npz", tmp_path / "run")
  assert str(step_dir).endswith("pretrain/checkpoints/0")

  # Restore the way probe and eval do: a partial restore of what the Encoder needs.
  encoder = build_encoder(c.model, projection_head="mlp")
  images = np.load(official / "images.npy").transpose(0, 2, 3, 1)  # NCHW -> NHWC
  shapes = jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0), images, train=False))
  mesh = sharding.make_mesh(1)
  variables, source = checkpoint.restore_from(
    checkpoint.find_checkpoint_dir(tmp_path / "run", "pretrain"), shapes, sharding.replicated(mesh), partial=True
  )
  assert source.endswith("/0")
  out = encoder.apply(variables, images, train=False)
  embedding = np.array(out["embedding"], np.float64)
  embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
  embedding_error = np.abs(embedding - np.load(official / "embedding.npy")).max()
  pooled_error = np.abs(np.asarray(out["pooled"]) - np.load(official / "pooled.npy")).max()
  print(f"max |embedding - torch| {embedding_error:.2e}, max |pooled - torch| {pooled_error:.2e}")
  assert embedding_error < 1e-4
  assert pooled_error < 1e-4 * max(1.0, np.abs(np.load(official / "pooled.npy")).max())

  # Not a training state: pretraining on this workdir refuses it instead of resuming half a state.
  online, _ = build_models(c, get_method(c), 1000)
  tx = optim.sgd(optim.warmup_cosine_schedule(0.1, 10, 1), 0.9, 5e-4)
  full = abstract_pretrain_state(c, get_method(c), online, tx, 1000, 3, np.linspace(1280, 5, 1000).round())
  with pytest.raises(checkpoint.ShapeMismatch, match="weights-only checkpoint"):
    checkpoint.manager(step_dir.parent).restore_latest(checkpoint.abstract_like(full, sharding.replicated(mesh)))


def test_missing_or_misshapen_keys_are_named(official, tmp_path):
  with np.load(official / "encoder_q.npz") as npz:
    arrays = {k: npz[k] for k in npz.files}
  c = config()
  without = {k: v for k, v in arrays.items() if k != "layer3.2.bn2.running_var"}
  with pytest.raises(ValueError, match=r"missing 1 key\(s\): layer3\.2\.bn2\.running_var"):
    dscl_arrays_to_variables(without, c.model)
  without_head = {k: v for k, v in arrays.items() if k != "fc.2.bias"}
  with pytest.raises(ValueError, match="no projection MLP key"):
    dscl_arrays_to_variables(without_head, c.model)
  c.model.embed_dim = 64
  with pytest.raises(ValueError, match=r"fc.2.weight has shape \(128, 2048\) but this config needs \(64, 2048\)"):
    dscl_arrays_to_variables(arrays, c.model)
  c = config()
  (tmp_path / "run" / "pretrain" / "checkpoints" / "5").mkdir(parents=True)
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    save_dscl_checkpoint(c, official / "encoder_q.npz", tmp_path / "run")
