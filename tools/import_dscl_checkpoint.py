"""Imports released weights of the official DSCL PyTorch code as a dscl_jax pretrain checkpoint.

Two steps, because the dscl_jax environment never imports torch:

  # 1. With a Python that has torch: keep the query encoder of the official checkpoint, torchvision names.
  /usr/bin/python3 tools/convert_torchvision_resnet.py --checkpoint checkpoint.pth.tar \
      --strip-prefix module.encoder_q. --output dscl_encoder_q.npz
  # 2. In the dscl_jax environment: write <workdir>/pretrain/checkpoints/0 for the config's model.
  python tools/import_dscl_checkpoint.py --npz dscl_encoder_q.npz \
      --config configs/imagenet_lt_dscl_pbsd.py --workdir <workdir>
  # Then the class-balanced probe and the evaluation, as after our own pretraining:
  python -m dscl_jax.main --config configs/imagenet_lt_dscl_pbsd.py --workdir <workdir> --config.mode=linear_probe
  python -m dscl_jax.main --config configs/imagenet_lt_dscl_pbsd.py --workdir <workdir> --config.mode=eval

The checkpoint holds the online encoder's weights only (trunk and projection MLP: params and BatchNorm
statistics, with checksums), which is all `linear_probe` and `eval` restore. It is no training state: a
`pretrain` run on this workdir refuses it (no optimiser state, queue or target) rather than resume.
Its step is 0, since the official checkpoint counts epochs, not our steps.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from dscl_jax.convert.dscl_checkpoint import save_dscl_checkpoint

_CONFIG = config_flags.DEFINE_config_file("config", None, "The dscl_jax config the weights are for.", lock_config=True)
_NPZ = flags.DEFINE_string(
  "npz", None, "encoder_q as a .npz (tools/convert_torchvision_resnet.py --strip-prefix module.encoder_q.)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The dscl_jax workdir to write pretrain/checkpoints/0 into.")
flags.mark_flags_as_required(["config", "npz", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  step_dir = save_dscl_checkpoint(_CONFIG.value, _NPZ.value, _WORKDIR.value)
  print(
    f"wrote {step_dir}: the DSCL encoder_q trunk and projection MLP. Next: --config.mode=linear_probe, "
    f"then --config.mode=eval, with the same --config and --workdir"
  )


if __name__ == "__main__":
  app.run(main)
