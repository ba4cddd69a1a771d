"""Errors a user sees. Each carries a one-line, actionable message."""


class RecsysError(Exception):
    """Base class: a problem with input, configuration or a service, explained in one line."""


class ConfigError(RecsysError):
    """A setting or argument has a bad value."""


class DataNotFoundError(RecsysError):
    """An expected input file or partition does not exist."""


class DataReadError(RecsysError):
    """An input file exists but cannot be read (corrupt, wrong encoding, wrong delimiter)."""


class ValidationFailed(RecsysError):
    """A batch-level data check failed: the batch must not be used for training."""


class GateRejected(RecsysError):
    """Promotion was attempted with a gate decision that did not pass."""
