"""One error shape for every API error: ``{"error": {"code", "message", "fields"?}}``."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from brokers.adapters.errors import BrokerError, RateLimited

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    error = {"code": code, "message": message, **extra}
    if fields:
        error["fields"] = fields
    return {"error": error}


def exception_handler(exc, context):
    if isinstance(exc, BrokerError):
        return broker_error_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(_django_validation_detail(exc))
    if isinstance(exc, RequestDataTooBig):
        # Bad input, like any other: 400 with the one error shape, saying what the limit is.
        return Response(
            error_body(
                "request_too_large",
                f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django log it and answer 500
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            fields = detail
            non_field = detail.get("non_field_errors")
            message = str(non_field[0]) if non_field else "Some fields are invalid."
        else:
            fields = {"non_field_errors": detail}
            message = str(detail[0]) if detail else "Invalid input."
        response.data = error_body("invalid", message, fields)
    else:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(code, str(getattr(exc, "detail", exc)))
    return response


def broker_error_response(exc: BrokerError) -> Response:
    """A broker failure as a clear API error with the broker's own code and message."""
    extra = {"broker_code": exc.broker_code} if exc.broker_code else {}
    headers = {}
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers["Retry-After"] = str(int(exc.retry_after.to_integral_value(rounding="ROUND_UP")))
    return Response(
        error_body(exc.code, exc.message, **extra), status=exc.api_status, headers=headers
    )


def _django_validation_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        return {
            field: [m for e in errs for m in e.messages] for field, errs in exc.error_dict.items()
        }
    return list(exc.messages)
