"""Errors raised by the converters. Each message names the module, parameter or
file at fault: a network we cannot convert exactly is refused, never guessed."""


class ConversionError(ValueError):
    """The input cannot be converted exactly (bad shapes, bad file, bad graph)."""


class UnsupportedModuleError(ConversionError, TypeError):
    """A module, layer type or traced operation the converter does not wire."""


class NonFiniteWeightError(ConversionError):
    """A parameter holds NaN or Inf (pass ``allow_nonfinite=True`` to accept)."""


class UnsafeCheckpointError(ConversionError):
    """A checkpoint that would run code when unpickled; nothing of it was run."""


class CheckpointNotFoundError(ConversionError, FileNotFoundError):
    """A checkpoint path that does not exist (also a ``FileNotFoundError``)."""
