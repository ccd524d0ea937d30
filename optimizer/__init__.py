"""Metaprompt optimization runs: search for better prompts on Ray.

The Python driver API is :func:`optimize` (see ``optimizer.driver``);
``RunConfig`` is a run's configuration.
"""

from optimizer.config import RunConfig
from optimizer.driver import optimize

__all__ = ["RunConfig", "optimize"]
