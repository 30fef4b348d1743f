"""The one exception tree for everything the WASend API can do to us.

::

    ApiError                      any failed call; carries ``call`` and ``http_status``
    ├── AuthFailed                401 / 403: the API key is missing, wrong or revoked
    ├── SessionGone               404: no such session
    ├── Conflict                  409 / 422: the session is not in a state for this call
    ├── RateLimited               429: ``retry_after`` is the parsed delay in seconds, or None
    ├── TransientError            worth trying again later
    │   ├── ServerError           5xx (other than those above)
    │   ├── ApiTimeout            the call did not finish within ``request_timeout``
    │   └── ApiUnreachable        connection refused, reset, DNS, TLS, ...
    └── UnexpectedResponse        a body or status we cannot read; ``excerpt`` is a short,
                                  secret-free piece of what came back

``supervisor.api.client`` is the only module that raises these from HTTP responses and
transport errors (``map_response`` and ``map_transport_error``); everything else catches
them. No exception here ever holds the API key: messages are built from the call name,
the status code and a redacted excerpt of the body.
"""

from __future__ import annotations


class ApiError(Exception):
    """A call to the WASend API did not succeed."""

    def __init__(self, message: str, *, call: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.call = call
        self.http_status = http_status

    @property
    def kind(self) -> str:
        """A stable, lower-case name for logs and reports (``auth_failed``, ``timeout``...)."""
        return _KINDS.get(type(self), "api_error")


class AuthFailed(ApiError):
    """401 or 403: the API key was refused."""


class SessionGone(ApiError):
    """404: the session does not exist (any more)."""


class Conflict(ApiError):
    """409 or 422: the call conflicts with the session's current state."""


class RateLimited(ApiError):
    """429: the whole API key must pause; ``retry_after`` seconds if the server said so."""

    def __init__(
        self,
        message: str,
        *,
        call: str = "",
        http_status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, call=call, http_status=http_status)
        self.retry_after = retry_after


class TransientError(ApiError):
    """A failure that may go away by itself: try again later."""


class ServerError(TransientError):
    """A 5xx answer."""


class ApiTimeout(TransientError):
    """The call did not complete within the request timeout."""


class ApiUnreachable(TransientError):
    """The API could not be reached (connection refused or reset, DNS, TLS...)."""


class UnexpectedResponse(ApiError):
    """The answer could not be understood; ``excerpt`` shows a short, redacted piece of it."""

    def __init__(
        self,
        message: str,
        *,
        call: str = "",
        http_status: int | None = None,
        excerpt: str = "",
    ) -> None:
        super().__init__(message, call=call, http_status=http_status)
        self.excerpt = excerpt


_KINDS: dict[type[ApiError], str] = {
    AuthFailed: "auth_failed",
    SessionGone: "gone",
    Conflict: "conflict",
    RateLimited: "rate_limited",
    TransientError: "transient",
    ServerError: "server_error",
    ApiTimeout: "timeout",
    ApiUnreachable: "unreachable",
    UnexpectedResponse: "unexpected_response",
}
