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


class InfrastructureError(RecsysError):
    """A file system or a service the run depends on is at fault, not the input or the code.

    ``retryable``: whether running the same thing again later can succeed without anyone changing a
    setting (a full disk may be freed, a service restarted); the Airflow tasks retry those and fail
    the others at once (:func:`recsys.airflow.tasks.fail_fast`)."""

    retryable = False


class ServiceUnavailable(InfrastructureError):
    """A service (MLflow tracking server, Spark master, object store) does not answer."""

    retryable = True


class StorageFull(InfrastructureError):
    """A write failed because the file system (or the MLflow store's) is full."""

    retryable = True


class StorageReadOnly(InfrastructureError):
    """A write failed because the file, directory or MLflow store is read-only or not writable by us."""


class TrackingStoreMissing(InfrastructureError):
    """The configured MLflow store does not exist although the lake has registered weeks."""
