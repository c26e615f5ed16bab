"""The errors an engine call raises. Neither ever carries a code, a token or a key."""

from __future__ import annotations

__all__ = ["MfaError", "MfaUnavailable"]


class MfaError(Exception):
    """The component's ``mfa-error``: ``kind`` (a WIT ``error-kind`` case name), ``message`` (a
    sentence for the caller), ``field`` (for ``invalid-input``), ``retry_after_seconds`` (for
    ``throttled``). Never carries a code, a token or a key."""

    def __init__(self, kind: str, message: str, field: str | None = None, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.retry_after_seconds = retry_after_seconds

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, message={self.message!r}, field={self.field!r}, "
            f"retry_after_seconds={self.retry_after_seconds!r})"
        )


class MfaUnavailable(MfaError):
    """Kind ``unavailable``: the component answered it (a store, mailer or audit failure), or the
    call could not complete (a trap, a host failure inside an import, the component could not be
    loaded). Nothing was granted, nothing uncommitted was kept. Safe to retry; never let the
    login through."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)
