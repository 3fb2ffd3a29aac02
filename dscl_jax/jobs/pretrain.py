"""Pretraining: `pretrain(config, workdir)` runs (or resumes) the representation stage of any method.

Resume rules:
1. `<workdir>/pretrain/checkpoints` has a checkpoint: restore the whole state from the newest intact step
   (damaged steps are reported and skipped) and continue from its step; the input pipeline is a pure
   function of (seed, step), so the run sees exactly the batches and augmentations an uninterrupted run
   would. The config must be the one the checkpoints were trained with (`dscl_jax/runtime/workdir.py`).
2. Otherwise start from step 0 with the config's seed.
3. SIGTERM / Ctrl-C: checkpoint at the end of the current step, then stop; rerunning the same command resumes.
"""

from __future__ import annotations

import jax
import ml_collections
from etils import epath

from dscl_jax.core import build, loop
from dscl_jax.core.state import PretrainState, param_count
from dscl_jax.input import pipeline
from dscl_jax.runtime import checkpoint
from dscl_jax.runtime import workdir as workdirs
from dscl_jax.runtime.metrics import Progress, log


def pretrain(config: ml_collections.ConfigDict, workdir, setup: build.JobSetup | None = None) -> PretrainState:
  """Pretrain (or resume) `config.method` into `<workdir>/pretrain`. `setup`: the job preamble's result
  (`build.setup_job`), when the caller has one already."""
  setup = setup or build.setup_job(config)
  mesh, method, dataset = setup.mesh, setup.method, setup.dataset
  job_dir = epath.Path(workdir) / "pretrain"
  workdirs.check_config(config, job_dir, "pretrain")

  schedule, steps_per_epoch, total_steps = build.pretrain_schedule(config, len(dataset.train))
  if config.train.max_steps >= 0:
    total_steps = min(total_steps, config.train.max_steps)
  tx = build.pretrain_optimizer(config, schedule)
  online, target = build.build_models(config, method, dataset.num_classes)
  state = build.init_pretrain_state(
    config, method, online, tx, dataset.num_classes, dataset.channels, mesh, dataset.class_counts
  )

  ckpt = checkpoint.manager(job_dir / "checkpoints", job="pretrain")
  state = loop.resume(ckpt, state, "pretrain")
  start_step = int(state.step)
  log(
    "pretrain",
    f"{config.method} on {dataset.name}: ResNet-{config.model.depth} "
    f"({param_count(state.params) / 1e6:.2f}M params), batch {config.train.batch_size} on "
    f"{mesh.devices.size} device(s) x {jax.process_count()} process(es), {steps_per_epoch} steps/epoch, "
    f"{total_steps} steps",
  )
  if start_step >= total_steps:
    log("pretrain", f"already finished ({start_step} steps)")
    return state
  # Before the step is compiled: an unwritable or full checkpoint folder would otherwise fail at the first
  # save, after compiling and training up to it. (A finished run writes nothing, so is not refused.)
  checkpoint.preflight(job_dir / "checkpoints", state, job="pretrain")

  needs = method.requirements
  train_step = build.jit_pretrain_step(config, method, online, target, tx, schedule, mesh)
  batches = pipeline.pretrain_iterator(
    dataset.train,
    config.augment,
    config.pbsd,
    views=needs.views,
    sampler=needs.sampler,
    class_aware_power=needs.class_aware_power,
    global_batch_size=config.train.batch_size,
    seed=config.seed,
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_workers=config.train.num_workers,
  )
  progress = Progress("pretrain", job_dir, total_steps, steps_per_epoch, config.train.batch_size, start_step)
  return loop.run(
    "pretrain",
    state,
    train_step,
    batches,
    mesh=mesh,
    mgr=ckpt,
    progress=progress,
    start_step=start_step,
    total_steps=total_steps,
    log_every=config.train.log_every,
    checkpoint_every=config.train.checkpoint_every,
    max_skipped_steps=config.train.max_skipped_steps,
  )
