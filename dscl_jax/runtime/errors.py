"""The errors a user fixes by changing a config, a flag or a file (main prints them without a traceback)."""

from dscl_jax.runtime.checkpoint import DamagedCheckpoint, ShapeMismatch
from dscl_jax.config.validation import ConfigError
from dscl_jax.core.loop import Diverged
from dscl_jax.runtime.workdir import ConfigChanged, WorkdirLocked

USER_ERRORS = (ConfigError, ConfigChanged, WorkdirLocked, Diverged, DamagedCheckpoint, ShapeMismatch,
               FileNotFoundError)
