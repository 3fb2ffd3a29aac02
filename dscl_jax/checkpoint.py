"""Orbax checkpointing of whole state pytrees, with resume."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` (created if missing). Saves are asynchronous; atomic on finish."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def abstract_like(state):
  """Shapes, dtypes and shardings of `state`, the target a restore fills in."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def save(mgr: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> None:
  mgr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(mgr: ocp.CheckpointManager, template):
  """The latest checkpoint restored into `template`'s structure and shardings, or None if there is none."""
  step = mgr.latest_step()
  if step is None:
    return None
  return mgr.restore(step, args=ocp.args.StandardRestore(abstract_like(template)))


def has_checkpoint(directory: str) -> bool:
  """True when `directory` holds a finished orbax step (a sub-directory named by an integer)."""
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def find_checkpoint_dir(path: str, job: str = "pretrain") -> str:
  """Accept a workdir, `<workdir>/<job>` or `<workdir>/<job>/checkpoints`; return the checkpoints dir."""
  candidates = (os.path.join(path, job, "checkpoints"), os.path.join(path, "checkpoints"), path)
  for candidate in candidates:
    if has_checkpoint(candidate):
      return os.path.abspath(candidate)
  raise FileNotFoundError(f"no {job} checkpoint under {path!r} (looked in {', '.join(candidates)}); "
                          f"run --config.mode={job} first or point to a directory that has one")


def restore_from(directory: str, abstract_state, sharding) -> tuple:
  """Restore the latest step of `directory` into `abstract_state` (e.g. from `jax.eval_shape`), every
  leaf placed with `sharding`. Returns (state, "<directory>/<step>")."""
  template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state)
  mgr = manager(directory)
  step = mgr.latest_step()
  return mgr.restore(step, args=ocp.args.StandardRestore(template)), f"{directory}/{step}"
