"""Exceptions the clients raise instead of their vendors' (the vendor's is kept as `__cause__`).

`Unavailable` is temporary (retry later with backoff, the status says what is waited on);
`Rejected` means the other side refused the request and retrying the same request will not help.
"""

from __future__ import annotations


class ClientError(Exception):
    """A call to an outside system failed."""

    system = "unknown"

    def __init__(self, message: str, system: str | None = None) -> None:
        super().__init__(message)
        if system:
            self.system = system


class Unavailable(ClientError):
    """The system could not be reached or timed out; try again later."""


class Rejected(ClientError):
    """The system refused the request (bad request, forbidden, missing kind)."""
