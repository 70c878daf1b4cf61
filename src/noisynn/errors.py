"""The package's error types: every user-facing failure is one of these, with a one-line message."""

from __future__ import annotations


class NoisynnError(Exception):
    """Base class of every error noisynn raises on bad input; its message names the problem and the fix."""


class DataError(NoisynnError):
    """A data set is missing, corrupt, or unknown (message names the file and the fix)."""


class ModelError(NoisynnError, ValueError):
    """Unknown model name, or an input whose shape the model cannot take."""


class CheckpointError(NoisynnError):
    """A checkpoint file is missing, corrupt, or belongs to another model."""
