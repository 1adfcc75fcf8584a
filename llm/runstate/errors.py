"""What can go wrong with a checkpoint: the error and the warning that ``llm.runstate.checkpoint``
and ``llm.runstate.rng`` raise (a module of their own, so neither imports the other)."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, partial, corrupt or not matching the model."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped in favour of an older complete one."""
