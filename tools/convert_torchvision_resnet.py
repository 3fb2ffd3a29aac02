"""Converts a torchvision ResNet state_dict into a .npz that dscl_jax can load without torch.

Run with a Python that has torch and torchvision (never the dscl_jax venv, which must not import torch):

  # An ImageNet-pretrained checkpoint you already have on disk (Places-LT recipes start from one):
  /usr/bin/python3 tools/convert_torchvision_resnet.py --checkpoint resnet152-394f9c45.pth \
      --output resnet152.npz
  # An untrained torchvision model, built locally (tests; nothing is downloaded):
  /usr/bin/python3 tools/convert_torchvision_resnet.py --arch resnet50 --random-init --seed 0 \
      --output resnet50_random.npz

The .npz keeps torchvision's names and layouts (conv weights [O, I, kH, kW]; BatchNorm weight, bias,
running_mean, running_var; fc); `dscl_jax.convert.torchvision_resnet.load_torchvision_resnet` maps them
onto our ResNet. `--reference-input x.npy` ([B, 3, H, W] float32) also runs the torchvision model in
eval mode and saves its stage outputs (layer1..layer4, NCHW; layer4 is [B, F, H/32, W/32], F = 512 for
resnet18/34 and 2048 otherwise) and avgpool feature [B, F] next to the output, so a conversion can be
checked against our ResNet on the same input.

This script never downloads weights: it only reads the file given or builds an untrained model.

A checkpoint is read without running code from it: only what torch's weights-only loader allows (tensors,
dicts and OrderedDicts, lists, tuples, numbers, strings, None) is rebuilt, so a file from an untrusted
mirror that would import or call anything else is refused with one line naming it. `--trust-pickle`
loads such a file anyway with the full unpickler, which runs whatever code it holds: only for files you
trust (e.g. one you saved yourself with a whole model or a custom class inside).
"""

import argparse
import collections
import io
import os
import pickle
import sys
import types

import numpy as np
import torch
import torch._weights_only_unpickler
import torchvision

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build_torchvision_resnet(arch):
  """An untrained torchvision ResNet (`weights=None`, so nothing is fetched)."""
  if arch not in ARCHS:
    raise ValueError(f"--arch {arch!r} must be one of {ARCHS}")
  return getattr(torchvision.models, arch)(weights=None)


def randomize_batchnorm(model, generator):
  """Gives every BatchNorm non-trivial affine parameters and running statistics.

  A freshly built model has scale 1, bias 0, mean 0, var 1, which would let a converter that swaps or
  drops BatchNorm tensors pass a comparison unnoticed. The running statistics are first measured on a
  random calibration batch (so eval-mode activations stay in the tens through all the blocks, as in a
  trained net, instead of growing into the thousands) and then perturbed channel by channel.
  """
  batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for bn in batchnorms:
      n = bn.num_features
      bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
      bn.bias.copy_(0.2 * torch.randn(n, generator=generator))
      bn.momentum = 1.0  # running statistics := this batch's statistics
    model.train()
    model(torch.randn(8, 3, 96, 96, generator=generator))
    model.eval()
    for bn in batchnorms:
      n = bn.num_features
      bn.momentum = 0.1
      bn.running_mean.add_(0.2 * torch.randn(n, generator=generator) * bn.running_var.sqrt())
      bn.running_var.mul_(0.7 + 0.6 * torch.rand(n, generator=generator))


class UntrustedPickleError(pickle.UnpicklingError):
  """The checkpoint's pickle reaches for something beyond tensors and plain containers."""


class _TensorsOnlyUnpickler(pickle._Unpickler):
  """Python's own unpickler, held to the rules of torch's weights-only one.

  torch 1.13's `weights_only=True` loader walks the pickle opcodes itself and has no BINFLOAT, so it
  refuses every Python float (pytorch/pytorch#94670, fixed in torch 2.0): the official DSCL checkpoint
  fails on its optimizer's lr and momentum. Here every standard opcode is understood, and the two ways
  a pickle can reach code are held to torch's own rules: a global, the only way to get a callable for
  REDUCE or NEWOBJ to call, must be on torch's weights-only allowlist (tensor rebuild functions,
  storages, dtypes, torch.Size, Parameter, OrderedDict), and BUILD, which sets attributes, only fills
  tensors, parameters and OrderedDicts (a state_dict's `_metadata`), so a file cannot patch an allowed
  class or function. Persistent ids go to torch's loader, which only reads storages from the archive.
  The pure-Python unpickler is used because only it lets an opcode be replaced; tensor data, the bulk
  of a checkpoint, is read by torch outside the pickle.
  """

  _BUILDABLE = (torch.Tensor, torch.nn.Parameter, collections.OrderedDict)

  def find_class(self, module, name):
    allowed = torch._weights_only_unpickler._get_allowed_globals()
    qualified = f"{module}.{name}"
    if qualified not in allowed:
      raise UntrustedPickleError(f"its pickle imports {qualified}")
    return allowed[qualified]

  def load_build(self):
    if type(self.stack[-2]) not in self._BUILDABLE:
      raise UntrustedPickleError(f"its pickle sets the state of a {type(self.stack[-2]).__name__}")
    super().load_build()

  dispatch = dict(pickle._Unpickler.dispatch)
  dispatch[pickle.BUILD[0]] = load_build


# Stands in for the module torch.load(weights_only=True) unpickles with, torch._weights_only_unpickler.
# Passing it as torch.load's `pickle_module` instead would not work: torch 1.13.0 replaces any
# pickle_module by the unrestricted `pickle` whenever weights_only is False.
_TENSORS_ONLY_PICKLE = types.ModuleType("tensors_only_pickle")
_TENSORS_ONLY_PICKLE.Unpickler = _TensorsOnlyUnpickler
_TENSORS_ONLY_PICKLE.load = lambda file, **kwargs: _TensorsOnlyUnpickler(file, **kwargs).load()


def _torch_weights_only_reads_floats():
  """False on torch 1.13; from 2.0 on, torch's own weights-only loader is used unchanged."""
  try:
    return torch._weights_only_unpickler.load(io.BytesIO(pickle.dumps(0.5, protocol=2))) == 0.5
  except Exception:  # torch 1.13: RuntimeError("Unsupported operand 71")
    return False


def load_checkpoint(path, trust_pickle=False):
  """torch.load without running the file's code, unless `trust_pickle`; exits with one line if it would."""
  if trust_pickle:
    print(
      f"warning: --trust-pickle: unpickling {path} runs any code it holds; use it only on files you trust",
      file=sys.stderr,
    )
    return torch.load(path, map_location="cpu", weights_only=False)
  # torch.load(weights_only=True) looks this module up by name on every call; swapped for this call only.
  original = torch.serialization._weights_only_unpickler
  if not _torch_weights_only_reads_floats():
    torch.serialization._weights_only_unpickler = _TENSORS_ONLY_PICKLE
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    # torch wraps its own refusals in a long preamble; the part after this marker names what was refused.
    detail = str(e).split("WeightsUnpickler error:")[-1].strip()
    detail = detail.splitlines()[0] if detail else type(e).__name__
    # One line and no traceback: refusing such a file is the expected outcome, not a crash.
    sys.exit(
      f"error: {path} holds objects beyond tensors, dicts, lists, numbers and strings ({detail}); "
      "it was not loaded, since unpickling it could run code from the file. Pass --trust-pickle "
      "to load it anyway, only if you trust where it came from."
    )
  finally:
    torch.serialization._weights_only_unpickler = original


def read_state_dict(path, strip_prefix, trust_pickle=False):
  """The tensors of a .pth file: a bare state_dict or one stored under "state_dict" / "model"."""
  checkpoint = load_checkpoint(path, trust_pickle)
  if isinstance(checkpoint, dict):
    for field in ("state_dict", "model"):
      if field in checkpoint and isinstance(checkpoint[field], dict):
        checkpoint = checkpoint[field]
        break
  if not isinstance(checkpoint, dict):
    raise ValueError(
      f"{path} holds a {type(checkpoint).__name__}, not a state_dict; save "
      "model.state_dict() instead of the whole model"
    )
  tensors = {k: v for k, v in checkpoint.items() if torch.is_tensor(v)}
  if strip_prefix:
    kept = {k[len(strip_prefix) :]: v for k, v in tensors.items() if k.startswith(strip_prefix)}
    if not kept:
      raise ValueError(
        f"no key of {path} starts with --strip-prefix {strip_prefix!r}; first keys: {sorted(tensors)[:5]}"
      )
    tensors = kept
  elif tensors and all(k.startswith("module.") for k in tensors):
    # Saved from nn.DataParallel / DistributedDataParallel.
    tensors = {k[len("module.") :]: v for k, v in tensors.items()}
  if "conv1.weight" not in tensors:
    raise ValueError(
      f"{path} has no 'conv1.weight' (first keys: {sorted(tensors)[:5]}); pass "
      "--strip-prefix to drop the prefix in front of the ResNet's own names"
    )
  return tensors


def state_dict_to_arrays(tensors):
  """{torchvision name: float32 numpy array}, without the num_batches_tracked counters."""
  return {
    name: tensor.detach().cpu().float().numpy()
    for name, tensor in tensors.items()
    if not name.endswith("num_batches_tracked")
  }


def save_reference_outputs(model, input_path, output_prefix):
  """Runs `model` in eval mode on [B, 3, H, W]; saves every stage's output and the avgpool feature.

  Writes <prefix>_layer{1..4}.npy (NCHW, as torchvision computes them) and <prefix>_pooled.npy [B, F].
  The per-stage outputs tell which stage a mismatch starts in.
  """
  images = torch.from_numpy(np.load(input_path).astype(np.float32))
  if images.ndim != 4 or images.shape[1] != 3:
    raise ValueError(f"--reference-input {input_path} has shape {tuple(images.shape)}; expected [B, 3, H, W] (NCHW)")
  captured = {}

  def keep_output(name):
    return lambda module, inputs, output: captured.__setitem__(name, output)

  names = ["layer1", "layer2", "layer3", "layer4", "avgpool"]
  hooks = [getattr(model, name).register_forward_hook(keep_output(name)) for name in names]
  model.eval()
  with torch.no_grad():
    model(images)
  for hook in hooks:
    hook.remove()
  for name in names[:4]:
    np.save(f"{output_prefix}_{name}.npy", captured[name].numpy())
  np.save(output_prefix + "_pooled.npy", torch.flatten(captured["avgpool"], 1).numpy())


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="a torchvision ResNet state_dict (.pth) already on disk")
  source.add_argument(
    "--random-init", action="store_true", help="build an untrained --arch model instead of reading a checkpoint"
  )
  parser.add_argument(
    "--arch", choices=ARCHS, help="torchvision architecture (required with --random-init and --reference-input)"
  )
  parser.add_argument("--seed", type=int, default=0, help="torch seed for --random-init")
  parser.add_argument(
    "--random-batchnorm",
    action="store_true",
    help="with --random-init, also draw BatchNorm affine parameters and running statistics",
  )
  parser.add_argument(
    "--strip-prefix", default="", help="keep only keys with this prefix, without it (e.g. 'module.encoder_q.')"
  )
  parser.add_argument(
    "--trust-pickle",
    action="store_true",
    help="load --checkpoint with the full unpickler even if it holds more than tensors "
    "(runs the file's code: only for files you trust)",
  )
  parser.add_argument("--output", required=True, help="the .npz to write")
  parser.add_argument("--reference-input", help="[B, 3, H, W] float32 .npy to run through the model")
  parser.add_argument(
    "--reference-prefix",
    help="path prefix for <prefix>_layer{1..4}.npy and <prefix>_pooled.npy (default: --output without .npz)",
  )
  args = parser.parse_args(argv)
  if not args.output.endswith(".npz"):
    parser.error(f"--output {args.output!r} must end in .npz (numpy would otherwise append it)")
  if args.random_init and not args.arch:
    parser.error("--random-init needs --arch (one of %s)" % ", ".join(ARCHS))
  if args.random_batchnorm and not args.random_init:
    parser.error("--random-batchnorm only applies to --random-init")
  if args.reference_input and not args.arch:
    parser.error("--reference-input needs --arch to rebuild the model around the weights")
  return args


def main(argv):
  args = parse_args(argv)
  if args.random_init:
    torch.manual_seed(args.seed)
    model = build_torchvision_resnet(args.arch)
    if args.random_batchnorm:
      randomize_batchnorm(model, torch.Generator().manual_seed(args.seed + 1))
    tensors = model.state_dict()
  else:
    tensors = read_state_dict(args.checkpoint, args.strip_prefix, args.trust_pickle)
    model = None
    if args.reference_input:
      model = build_torchvision_resnet(args.arch)
      # The classifier does not touch the reference outputs (a MoCo-style checkpoint may hold an MLP
      # there); every other tensor must fit, or the reference would come from half-random weights.
      result = model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("fc.")}, strict=False)
      problems = [
        k
        for k in result.missing_keys + result.unexpected_keys
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
      ]
      if problems:
        raise ValueError(f"{args.checkpoint} does not fit torchvision {args.arch}: {problems[:8]}")
  arrays = state_dict_to_arrays(tensors)
  np.savez(args.output, **arrays)
  print(f"wrote {len(arrays)} arrays to {args.output}")
  if args.reference_input:
    prefix = args.reference_prefix or os.path.splitext(args.output)[0]
    save_reference_outputs(model, args.reference_input, prefix)
    print(f"wrote {prefix}_layer{{1,2,3,4}}.npy and {prefix}_pooled.npy")


if __name__ == "__main__":
  main(sys.argv[1:])
