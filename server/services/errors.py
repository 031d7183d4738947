"""The services' own errors. Each carries a machine-readable `code` and a readable `detail`; the API maps the
class to an HTTP status (server/middleware/errors.py), the CLI to an exit code.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request a service refuses or cannot serve."""

    def __init__(self, code: str, detail: str, *, retry_after: int | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class Invalid(ServiceError):
    """The input is wrong: a bad parameter, a file that is not DICOM, a series that is no volume."""


class NotFound(ServiceError):
    """What the request names does not exist."""


class Conflict(ServiceError):
    """The thing exists but its state does not allow the request (a finished job, a closed room)."""


class TooLarge(ServiceError):
    """The input exceeds a configured limit."""


class Busy(ServiceError):
    """The server is at a bound (a full job queue); try again after `retry_after` seconds."""


class Unavailable(ServiceError):
    """A part the request needs is not configured or not running (no PACS)."""


class UpstreamError(ServiceError):
    """A server this one depends on failed (the PACS)."""
