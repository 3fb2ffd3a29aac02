"""Methods as plug-ins: `get_method(config)` finds `dscl_jax/methods/<config.method>.py` by name.

Each module defines `Method`, a subclass of `dscl_jax.methods.base.Method`. Adding a method is adding a
module here (and its configs); the shared step, state and loops never name a method.
"""

from __future__ import annotations

import importlib
import pkgutil

from dscl_jax.methods.base import LossOutput, Method, OnlineForward, Requirements, StepInputs

_NOT_METHODS = {"base", "queue_contrastive"}


def available() -> tuple[str, ...]:
  """Names `config.method` accepts: the method modules of this package."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_METHODS))


def get_method(config) -> Method:
  """The method `config.method` names, built from the config."""
  name = config.method
  if name not in available():
    raise ValueError(f"method {name!r} is not one of {available()} (modules of dscl_jax/methods/)")
  return importlib.import_module(f"dscl_jax.methods.{name}").Method(config)


__all__ = ["LossOutput", "Method", "OnlineForward", "Requirements", "StepInputs", "available", "get_method"]
