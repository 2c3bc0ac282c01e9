"""Typed domain errors. The API maps each to one HTTP status and one error body."""

from __future__ import annotations


class MeteringError(Exception):
    """Base class: `code` is machine-readable, the message is for people."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(MeteringError):
    code = "bad_request"
    status = 400


class Unauthorized(MeteringError):
    code = "unauthorized"
    status = 401


class Forbidden(MeteringError):
    code = "forbidden"
    status = 403


class NotFound(MeteringError):
    code = "not_found"
    status = 404


class Conflict(MeteringError):
    code = "conflict"
    status = 409


class PeriodClosed(Conflict):
    """A change to the figures of a closed billing month (re-rating it)."""

    code = "period_closed"


class PeriodOrder(Conflict):
    """A month that cannot be closed now: not ended yet, or an earlier month is still open."""

    code = "period_order"


class RequestTimeout(MeteringError):
    code = "request_timeout"
    status = 408


class PayloadTooLarge(MeteringError):
    code = "payload_too_large"
    status = 413


class TooManyRequests(MeteringError):
    """One principal asked for more expensive reads at once than it may, or a read ran past the
    query time limit; `retry_after` (seconds) goes out as the Retry-After header."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryTimeout(TooManyRequests):
    code = "query_timeout"


class UnsupportedMediaType(MeteringError):
    code = "unsupported_media_type"
    status = 415


class DatabaseLocked(MeteringError):
    code = "database_locked"
    status = 503


class StorageUnavailable(MeteringError):
    """The database file could not be written (a full disk, an I/O error): nothing of the request
    was stored, the service goes on, and the same request can be sent again."""

    code = "storage_unavailable"
    status = 503


class RateCardError(MeteringError):
    """A malformed rate card or rate version; the message names file, model and field."""

    code = "invalid_rate_card"
    status = 422


class RecordError(MeteringError):
    """One usage record broke a rule; `field` names the field (dotted path for native usage)."""

    code = "invalid_record"
    status = 422

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
