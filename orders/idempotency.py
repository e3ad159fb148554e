"""Safe retries for create endpoints: the ``Idempotency-Key`` header.

The first request with a key claims it (a row unique per team, committed at once so concurrent
requests see it). A retry with the same key and the same request gets the first response again
(status and body); with a different request, 422; while the first is still being answered, 409.
Keys are kept at least 24 hours (``IDEMPOTENCY_KEY_TTL_HOURS``), then forgotten.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from .models import IdempotencyRecord, IdempotencyStatus

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(exceptions.APIException):
    status_code = 422
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used with a different request."


class IdempotencyKeyInFlight(exceptions.APIException):
    status_code = 409
    default_code = "idempotency_key_in_flight"
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."


def ttl() -> timedelta:
    return timedelta(hours=max(24, int(getattr(settings, "IDEMPOTENCY_KEY_TTL_HOURS", 24))))


def stale_after() -> timedelta:
    """An in-flight claim older than this belongs to a request that died (a crashed web
    process): the longest legitimate request is a ``Prefer: wait`` plus its own work."""
    return timedelta(seconds=max(60.0, 6 * float(getattr(settings, "ORDERS_WAIT_MAX_SECONDS", 10))))


class StaleClaim(Exception):
    """The key's first request died in flight; ``record`` is its abandoned claim."""

    def __init__(self, record: IdempotencyRecord):
        super().__init__("stale idempotency claim")
        self.record = record


def request_fingerprint(request) -> str:
    """sha256 of the method, the path (with query) and the body as canonical JSON."""
    data = request.data
    if hasattr(data, "lists"):  # a QueryDict (form posts): keep repeated values
        data = {key: values for key, values in data.lists()}
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    raw = f"{request.method}\n{request.get_full_path()}\n{body}"
    return hashlib.sha256(raw.encode()).hexdigest()


def idempotency_claim(*, team, key: str, fingerprint: str):
    """``(record, None)`` when this request owns the key now, or ``(None, replayed response)``.

    Raises IdempotencyKeyReused or IdempotencyKeyInFlight.
    """
    for _ in range(3):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    team=team, key=key, request_fingerprint=fingerprint
                )
            return record, None
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(team=team, key=key).first()
            if existing is None:
                continue  # released by a failed first request meanwhile: claim it again
            if existing.created_at < timezone.now() - ttl():
                IdempotencyRecord.objects.filter(pk=existing.pk).delete()
                continue
            if existing.request_fingerprint != fingerprint:
                raise IdempotencyKeyReused()
            if existing.status == IdempotencyStatus.IN_FLIGHT:
                if existing.created_at < timezone.now() - stale_after():
                    raise StaleClaim(existing)
                raise IdempotencyKeyInFlight()
            response = Response(
                existing.response_body,
                status=existing.response_status,
                headers={"Idempotent-Replayed": "true"},
            )
            return None, response
    raise IdempotencyKeyInFlight()


def idempotency_complete(record: IdempotencyRecord, response) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status=IdempotencyStatus.COMPLETED,
        response_status=response.status_code,
        response_body=json.loads(json.dumps(response.data, default=str)),
        completed_at=timezone.now(),
    )


def idempotency_release(record: IdempotencyRecord) -> None:
    """Forget a claim whose request failed before doing anything: a retry runs afresh."""
    IdempotencyRecord.objects.filter(pk=record.pk, status=IdempotencyStatus.IN_FLIGHT).delete()


def _take_over(stale: IdempotencyRecord) -> IdempotencyRecord | None:
    """Claim an abandoned key for this request; None when another retry got there first."""
    now = timezone.now()
    taken = IdempotencyRecord.objects.filter(
        pk=stale.pk, status=IdempotencyStatus.IN_FLIGHT, created_at=stale.created_at
    ).update(created_at=now)
    if not taken:
        return None
    stale.created_at = now
    return stale


def idempotent(view_method=None, *, recover=None):
    """Decorate a team-scoped view's create method to honour ``Idempotency-Key``.

    ``recover(view, request, key)`` finds what a first request that died in flight had already
    done (for orders: the order it created) and answers with it; when it returns None the
    retry takes the key over and runs afresh.
    """
    if view_method is None:
        return functools.partial(idempotent, recover=recover)

    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER, "").strip()
        if not key:
            return view_method(view, request, *args, **kwargs)
        if len(key) > MAX_KEY_LENGTH:
            raise serializers.ValidationError(
                {HEADER: [f"Ensure this header has no more than {MAX_KEY_LENGTH} characters."]}
            )
        try:
            record, replay = idempotency_claim(
                team=view.team, key=key, fingerprint=request_fingerprint(request)
            )
        except StaleClaim as stale:
            if recover is None:
                raise IdempotencyKeyInFlight() from None
            found = recover(view, request, key)
            if found is not None:
                idempotency_complete(stale.record, found)
                found["Idempotent-Replayed"] = "true"
                return found
            record, replay = _take_over(stale.record), None
            if record is None:
                raise IdempotencyKeyInFlight() from None
        if replay is not None:
            return replay
        try:
            response = view_method(view, request, *args, **kwargs)
        except BaseException:
            idempotency_release(record)
            raise
        if response.status_code >= 500:
            idempotency_release(record)
        else:
            idempotency_complete(record, response)
        return response

    return wrapper
