"""The one set of typed errors every broker adapter raises.

Each adapter maps its broker's error envelopes and HTTP statuses onto these classes. The broker's
own error code and message stay on the exception (``broker_code``, ``message``) so that the API and
the order's event log can show exactly what the broker said. Messages never carry secrets.
"""

from __future__ import annotations

from decimal import Decimal


class BrokerError(Exception):
    """Base class: something the broker said (or failed to say)."""

    #: HTTP status the platform's API answers with when this error reaches a client.
    api_status = 502
    #: Stable machine-readable code for API clients.
    code = "broker_error"

    def __init__(
        self,
        message: str = "",
        *,
        broker_code: str | None = None,
        http_status: int | None = None,
    ):
        self.message = message or self.__class__.__doc__ or self.__class__.__name__
        self.broker_code = broker_code
        self.http_status = http_status
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.broker_code:
            return f"{self.message} [{self.broker_code}]"
        return self.message


class AuthError(BrokerError):
    """The broker did not accept our identity."""

    api_status = 401
    code = "broker_auth_error"


class InvalidCredentials(AuthError):
    """The stored credentials (password, PIN, TOTP secret, API secret) were refused."""

    code = "broker_invalid_credentials"


class SessionExpired(AuthError):
    """The broker session has expired or was invalidated; log in again."""

    code = "broker_session_expired"


class AccountLocked(AuthError):
    """The broker has locked or blocked the account."""

    code = "broker_account_locked"


class InputError(BrokerError):
    """The broker refused the request's parameters."""

    api_status = 400
    code = "broker_input_error"


class InvalidInstrument(InputError):
    """The symbol or instrument is unknown to the broker."""

    code = "broker_invalid_instrument"


class OrderRejected(BrokerError):
    """The broker received the order and refused it."""

    api_status = 409
    code = "broker_order_rejected"


class InsufficientFunds(OrderRejected):
    """The order needs more margin or cash than the account has."""

    code = "broker_insufficient_funds"


class NotFound(BrokerError):
    """The order, position or other entity does not exist at the broker."""

    api_status = 404
    code = "broker_not_found"


class RateLimited(BrokerError):
    """The broker throttled us; wait ``retry_after`` seconds before the next call."""

    api_status = 429
    code = "broker_rate_limited"

    def __init__(self, message: str = "", *, retry_after: Decimal | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BrokerUnavailable(BrokerError):
    """The broker could not be reached or failed (connection refused, 5xx, read timeout).

    For a write this means the broker did not take the request; for a read it may be retried.
    """

    api_status = 502
    code = "broker_unavailable"


class OutcomeUnknown(BrokerError):
    """A write was sent but its answer never came: it may or may not have happened.

    The caller must reconcile with the broker (find the order by its client id), never resend.
    """

    api_status = 502
    code = "broker_outcome_unknown"


class NotSupported(BrokerError):
    """The broker (or this adapter) does not offer the operation."""

    api_status = 400
    code = "broker_not_supported"
