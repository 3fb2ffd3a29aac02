"""The training state: one pytree holding everything a pretrain step reads and writes."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax


@flax.struct.dataclass
class PretrainState:
  """The state shared by every method.

  `params` / `batch_stats`: the online encoder. `target_params` / `target_batch_stats`: its momentum
  (EMA) target, which has its own BatchNorm statistics (None for methods without a target). `queue`
  [K, D] holds embeddings of past global batches and `queue_labels` [K] their labels (both None for
  methods without a queue or K = 0); `queue_ptr` is the next row to write. `method_state` is the method's
  own pytree (`Method.init_state`; {} for most). `rng` is a raw uint32 key [2], folded with `step` inside
  the step so a resumed run draws the same numbers. `skipped_in_a_row` / `skipped_total` count the steps
  whose update the numerical guard dropped (`dscl_jax/core/step.py`).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  target_params: Any
  target_batch_stats: Any
  opt_state: Any
  queue: jax.Array
  queue_labels: jax.Array
  queue_ptr: jax.Array
  method_state: Any
  rng: jax.Array
  skipped_in_a_row: jax.Array
  skipped_total: jax.Array


@flax.struct.dataclass
class ProbeState:
  """Linear probe state: the classifier's params and optimiser state (the trunk is frozen elsewhere),
  the numerical guard's counters, and the trunk's re-estimated BatchNorm statistics (None when the
  probe uses the pretrained ones; `dscl_jax/evaluation/bn_reestimation.py`)."""

  step: jax.Array
  params: Any
  opt_state: Any
  skipped_in_a_row: jax.Array
  skipped_total: jax.Array
  trunk_batch_stats: Any = None


def random_queue(rng: jax.Array, queue_size: int, embed_dim: int, num_classes: int):
  """The reference's queue initialisation: random unit vectors [K, D] and random labels [K]."""
  vec_rng, label_rng = jax.random.split(rng)
  queue = jax.random.normal(vec_rng, (queue_size, embed_dim), jnp.float32)
  queue = queue / jnp.maximum(jnp.linalg.norm(queue, axis=1, keepdims=True), 1e-12)
  labels = jax.random.randint(label_rng, (queue_size,), 0, num_classes, jnp.int32)
  return queue, labels


def create_pretrain_state(
  rng: jax.Array,
  model,
  tx: optax.GradientTransformation,
  image_shape,
  queue_size: int,
  num_classes: int,
  *,
  edit_variables: Callable[[Any], Any] | None = None,
  momentum_target: bool = True,
  method_state: Any = None,
) -> PretrainState:
  """Initialise the online encoder, copy it into the target (if any), build the queue (K = `queue_size`,
  0 for none). `image_shape` is (H, W, C); `method_state` the method's own pytree (None: {}).

  `edit_variables` maps the freshly initialised encoder variables to those both encoders start from
  (e.g. a trunk of converted ImageNet weights; the heads stay random).
  """
  init_rng, queue_rng, state_rng = jax.random.split(rng, 3)
  variables = model.init(init_rng, jnp.zeros((2,) + tuple(image_shape), jnp.float32), train=False)
  if edit_variables is not None:
    variables = edit_variables(variables)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  # No queue (K = 0) is None rather than a [0, D] array: orbax cannot save empty arrays.
  queue, queue_labels = None, None
  if queue_size:
    queue, queue_labels = random_queue(queue_rng, queue_size, model.embed_dim, num_classes)
  copy = lambda tree: jax.tree.map(jnp.array, tree) if momentum_target else None
  return PretrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    target_params=copy(params),
    target_batch_stats=copy(batch_stats),
    opt_state=tx.init(params),
    queue=queue,
    queue_labels=queue_labels,
    queue_ptr=jnp.zeros((), jnp.int32),
    method_state={} if method_state is None else method_state,
    rng=state_rng,
    skipped_in_a_row=jnp.zeros((), jnp.int32),
    skipped_total=jnp.zeros((), jnp.int32),
  )


def param_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
