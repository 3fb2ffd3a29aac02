"""The errors a user fixes by changing a config, a flag or a file (main prints them without a traceback)."""

from dscl_jax.checkpoint import DamagedCheckpoint, ShapeMismatch
from dscl_jax.config_validation import ConfigError
from dscl_jax.loop import Diverged
from dscl_jax.workdir import ConfigChanged, WorkdirLocked

USER_ERRORS = (ConfigError, ConfigChanged, WorkdirLocked, Diverged, DamagedCheckpoint, ShapeMismatch,
               FileNotFoundError)
