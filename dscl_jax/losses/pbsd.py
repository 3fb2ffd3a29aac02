"""Patch-based self distillation (PBSD) loss."""

import jax
import jax.numpy as jnp

from dscl_jax.losses.dscl import check_positive_scalar


def _crop_cross_entropy(teacher_crop, student_crop, key, queue, temperature):
  """`[B, D]` crop embeddings -> `[B]` H(teacher, student) over key + queue."""

  def logits(crop):  # [B, 1+K]: [crop_b . key_b, crop_b . queue] / T
    own_key = jnp.sum(crop * key, axis=1, keepdims=True)
    with_queue = jnp.matmul(crop, queue.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([own_key, with_queue], axis=1) / temperature

  teacher_probs = jax.nn.softmax(logits(teacher_crop), axis=1)
  student_log_probs = jax.nn.log_softmax(logits(student_crop), axis=1)
  return -jnp.sum(teacher_probs * student_log_probs, axis=1)


def pbsd_loss(teacher, student, key, queue, *, temperature=0.07):
  """Distils the teacher's similarity to key and queue into the student.

  For small crop j of anchor b, with teacher embedding r = teacher[j, b]
  (RoIAlign of the crop's box on the global view) and student embedding
  s = student[j, b] (the crop encoded alone):

      t = softmax([r . key_b, r . queue] / T)          (no gradient)
      L = mean_{j, b} -sum_c t_c * log_softmax([s . key_b, s . queue] / T)_c

  i.e. the mean over anchors of (1/n) * sum over crops of H(t, s). Teacher,
  key and queue are constants here (stop_gradient); only the student learns.

  Args:
    teacher: `[n, B, D]` L2-normalised teacher embeddings of the n crops.
    student: `[n, B, D]` L2-normalised student embeddings of the same crops.
    key: `[B, D]` L2-normalised target embeddings of each anchor.
    queue: `[K, D]` L2-normalised queued target embeddings; K may be 0.
    temperature: softmax temperature T (> 0), shared by teacher and student.

  Returns:
    Scalar float32 loss.
  """
  teacher, student, key, queue = (jnp.asarray(x) for x in (teacher, student, key, queue))
  if teacher.ndim != 3 or student.shape != teacher.shape:
    raise ValueError(f"teacher {teacher.shape} and student {student.shape} must both be [n, B, D] with the same shape.")
  if key.shape != teacher.shape[1:]:
    raise ValueError(f"key shape {key.shape} must be [B, D]={teacher.shape[1:]}.")
  if queue.ndim != 2 or queue.shape[1] != key.shape[1]:
    raise ValueError(
      f"queue must be [K, D] with D={key.shape[1]}, got {queue.shape}; pass jnp.zeros((0, D)) for an empty queue."
    )
  check_positive_scalar("temperature", temperature)
  teacher, key, queue = (jax.lax.stop_gradient(x.astype(jnp.float32)) for x in (teacher, key, queue))
  student = student.astype(jnp.float32)

  # One crop at a time, recomputed in the backward pass, so the [B, 1+K]
  # distributions never exist for all n crops at once: value and gradient at
  # n=5, B=256, K=65536 need 320 MiB of temporaries instead of 1.6 GiB.
  @jax.checkpoint
  def crop_cross_entropy(crops):
    teacher_crop, student_crop = crops
    return _crop_cross_entropy(teacher_crop, student_crop, key, queue, temperature)

  cross_entropy = jax.lax.map(crop_cross_entropy, (teacher, student))  # [n, B]
  return jnp.mean(cross_entropy)
