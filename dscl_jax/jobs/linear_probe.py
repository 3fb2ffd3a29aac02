"""Linear probe: a linear classifier on the frozen pretrained trunk, trained with class-balanced sampling.

The trunk (online encoder, inference-mode BatchNorm) comes from the pretrain checkpoint in this workdir
or in `config.pretrained`; only its parameters and statistics are read, so fields the probe never uses
(the queue length, the loss) may differ from the pretrain config. The probe's own state is checkpointed
in `<workdir>/probe/checkpoints` and a rerun resumes it, like pretraining.

Provenance: `<workdir>/probe/trunk.json` records the trunk the probe was trained on (checkpoint, step and
a digest of its arrays). A rerun whose trunk differs (pretraining went on, or `config.pretrained` points
elsewhere) never reuses that probe: `--config.mode=all` moves it aside and trains a new one, a lone
`linear_probe` refuses naming both trunks, and `eval` refuses a probe that is not its trunk's.
"""

from __future__ import annotations

import time

import jax
import ml_collections
from etils import epath
from jax.experimental import multihost_utils

from dscl_jax.core import build, loop, sharding
from dscl_jax.core.state import ProbeState
from dscl_jax.core.step import make_probe_step
from dscl_jax.evaluation.accuracy import count_correct, jit_count_step
from dscl_jax.evaluation.bn_reestimation import reestimate_batch_stats
from dscl_jax.input import pipeline
from dscl_jax.models import build_trunk
from dscl_jax.runtime import checkpoint
from dscl_jax.runtime import workdir as workdirs
from dscl_jax.runtime.files import read_json, write_json
from dscl_jax.runtime.metrics import Progress, log


class ValSelector:
  """Keeps the probe state with the best validation accuracy, checked after every epoch, in
  `<job_dir>/best`, and its record in `<job_dir>/best.json`. The test split is never looked at.

  Datasets without a validation split (digits-LT, Fashion-MNIST-LT, CIFAR-LT, iNaturalist 2018) make no
  choice during training: eval uses the last state.
  """

  def __init__(self, config, dataset, trunk, trunk_variables, mesh, job_dir, feature_stats=None):
    self.enabled = dataset.val is not None
    if not self.enabled:
      return
    self.config, self.dataset, self.trunk_variables, self.mesh = config, dataset, trunk_variables, mesh
    self.feature_stats = feature_stats
    self.count_step = jit_count_step(trunk, config.augment, dataset.num_classes, mesh)
    self.record_path = epath.Path(job_dir) / "best.json"
    self.best = read_json(self.record_path) if self.record_path.exists() else {"val_accuracy": -1.0}
    self.manager = checkpoint.manager(epath.Path(job_dir) / "best", keep=1, job="probe best")

  def update(self, step: int, epoch: float, state: ProbeState) -> None:
    if not self.enabled:
      return
    correct, seen = count_correct(
      self.count_step,
      self.trunk_variables,
      build.probe_classifier(state.params, self.feature_stats),
      self.dataset.val,
      self.config.augment,
      self.config.eval.batch_size,
      self.mesh,
    )
    accuracy = float(100.0 * correct.sum() / seen.sum())
    improved = accuracy > self.best["val_accuracy"]
    log("probe", f"epoch {epoch:.2f}: val top-1 {accuracy:.2f}%" + (" (best so far)" if improved else ""))
    if improved:
      self.manager.save(step, state)
      self.manager.wait_until_finished()
      self.best = {"step": step, "epoch": epoch, "val_accuracy": accuracy}
      if jax.process_index() == 0:
        write_json(self.record_path, self.best)


def set_aside_stale_probe(job_dir: epath.Path, trunk: dict, *, retrain: bool) -> None:
  """The probe in `job_dir` must belong to `trunk` (`build.trunk_record`). One trained on another trunk
  (or written before probes recorded theirs) is moved aside to `probe.replaced_<time>` when `retrain`
  (`--config.mode=all`), else refused: resuming or reusing it would report another trunk's accuracy."""
  if not (checkpoint.has_checkpoint(job_dir / "checkpoints") or checkpoint.has_checkpoint(job_dir / "best")):
    return
  previous = build.probe_trunk(job_dir.parent)
  if previous is not None and previous["digest"] == trunk["digest"]:
    return
  if not retrain:
    raise build.StaleProbe(
      f"{job_dir} holds a probe trained on {build.describe_trunk(previous)}, but this run restores "
      f"{build.describe_trunk(trunk)}; rerun with --config.mode=all to train a new probe (the old one is "
      f"kept aside), or use another --workdir"
    )
  aside = job_dir.parent / f"probe.replaced_{int(time.time())}"
  if jax.process_index() == 0:
    job_dir.rename(aside)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("stale probe set aside")
  log(
    "probe",
    f"the probe in {job_dir} was trained on {build.describe_trunk(previous)}, not on "
    f"{build.describe_trunk(trunk)}: moved it to {aside.name}; training a new one",
  )


def linear_probe(
  config: ml_collections.ConfigDict, workdir, setup: build.JobSetup | None = None, *, retrain_stale: bool | None = None
) -> ProbeState:
  """Train (or resume) the probe into `<workdir>/probe` on the pretrained trunk. `setup`: the job
  preamble's result (`build.setup_job`), when the caller has one already. A probe of another trunk is
  retrained with `retrain_stale` (default: `config.mode == "all"`) and refused otherwise."""
  setup = setup or build.setup_job(config)
  mesh, dataset = setup.mesh, setup.dataset
  job_dir = epath.Path(workdir) / "probe"
  loaded, source = build.load_pretrained(config, setup, workdir)
  trunk_variables = loaded["trunk"]
  trunk_id = build.trunk_record(trunk_variables, source)
  set_aside_stale_probe(job_dir, trunk_id, retrain=config.mode == "all" if retrain_stale is None else retrain_stale)
  workdirs.check_config(config, job_dir, "probe")
  if jax.process_index() == 0:
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / build.PROBE_TRUNK_RECORD, trunk_id, indent=2)
  trunk = build_trunk(config.model)
  num_features = trunk.num_features
  log(
    "probe",
    f"frozen trunk from {source} (digest {trunk_id['digest']}); {num_features}-d features, {dataset.num_classes} classes, class-balanced sampling",
  )

  steps_per_epoch, total_steps, schedule, tx = build.probe_optimizer(config, len(dataset.train))
  replicated = sharding.replicated(mesh)
  stats = None
  if config.probe.reestimate_bn_batches:
    # Deterministic (its own seed), so a resumed probe recomputes the statistics it saved.
    stream = pipeline.probe_iterator(
      dataset.train,
      config.augment,
      global_batch_size=config.probe.batch_size,
      seed=config.seed + 2,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      num_workers=config.train.num_workers,
      class_balanced=True,
    )
    stats = reestimate_batch_stats(
      trunk, trunk_variables, stream, config.probe.reestimate_bn_batches, mesh, config.augment
    )
    trunk_variables = {"params": trunk_variables["params"], "batch_stats": stats}
    log(
      "probe",
      f"BatchNorm statistics re-estimated on {config.probe.reestimate_bn_batches} batches of "
      f"{config.probe.batch_size} probe training images",
    )
  feature_stats = build.probe_feature_stats(config, trunk, trunk_variables, dataset.train, mesh)
  if feature_stats is not None:
    log("probe", f"features standardised with their mean and std over the {len(dataset.train)} training images")
  create = lambda: build.create_probe_state(tx, num_features, dataset.num_classes, stats)
  state = jax.jit(create, out_shardings=replicated)()
  ckpt = checkpoint.manager(job_dir / "checkpoints", job="probe")
  state = loop.resume(ckpt, state, "probe")
  start_step = int(state.step)
  if start_step >= total_steps:
    log("probe", f"already finished ({start_step} steps)")
    return state
  # Before the probe step is compiled; `best` holds one more probe state when there is a validation split.
  checkpoint.preflight(job_dir / "checkpoints", state, job="probe")
  if dataset.val is not None:
    checkpoint.preflight(job_dir / "best", state, job="probe")

  probe_step = jax.jit(
    make_probe_step(trunk, config.augment, tx, schedule),
    in_shardings=(replicated, replicated, sharding.data_sharded(mesh), replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )
  batches = pipeline.probe_iterator(
    dataset.train,
    config.augment,
    global_batch_size=config.probe.batch_size,
    seed=config.seed + 1,
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_workers=config.train.num_workers,
    class_balanced=True,
  )
  progress = Progress("probe", job_dir, total_steps, steps_per_epoch, config.probe.batch_size, start_step)
  selector = ValSelector(config, dataset, trunk, trunk_variables, mesh, job_dir, feature_stats)

  def after_step(done, state):
    if done % steps_per_epoch == 0 or done == total_steps:
      selector.update(done, done / steps_per_epoch, state)

  return loop.run(
    "probe",
    state,
    lambda state, batch: probe_step(state, trunk_variables, batch, feature_stats),
    batches,
    mesh=mesh,
    mgr=ckpt,
    progress=progress,
    start_step=start_step,
    total_steps=total_steps,
    log_every=config.probe.log_every,
    checkpoint_every=config.probe.checkpoint_every,
    max_skipped_steps=config.train.max_skipped_steps,
    after_step=after_step,
  )
