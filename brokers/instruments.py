"""The instrument master: load each broker's master file, replace the table safely, look up fast."""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal

import requests
from django.core.cache import cache
from django.db import transaction

from .adapters import errors, registry
from .adapters.base import InstrumentRecord
from .models import BrokerAccount, Instrument

logger = logging.getLogger(__name__)

#: A new download smaller than this share of the current table is refused as truncated.
MIN_SHRINK_RATIO = Decimal("0.5")
LOOKUP_CACHE_SECONDS = 300


class InstrumentMasterRejected(Exception):
    """A downloaded master file failed validation; the old table was left as it was."""


def instrument_master_refresh(*, broker: str, account: BrokerAccount | None = None) -> int:
    """Download ``broker``'s master file, validate it whole, then swap it in one transaction.

    A failed or partial download (network error, truncated file, bad rows) raises and never
    leaves the table empty or half-written. Returns the number of instruments stored.
    """
    adapter_class = registry.get(broker)
    if not adapter_class.supports("instrument_master"):
        raise errors.NotSupported(f"{broker} publishes no instrument master.")
    from .services import adapter_for_account

    adapter = (
        adapter_for_account(account)
        if account is not None
        else adapter_class(credentials={}, base_url="")
    )
    try:
        records = adapter.instrument_master()
    except requests.RequestException as exc:
        # A connection broken in the middle of the body (IncompleteRead) is not mapped by the
        # adapters' transport layer; for us it is the same failed download.
        raise errors.BrokerUnavailable(
            f"{broker}: the instrument master download broke off ({exc.__class__.__name__})."
        ) from exc
    finally:
        adapter.close()
    rows = _validated_rows(broker, records)
    with transaction.atomic():
        current = Instrument.objects.select_for_update().filter(broker=broker)
        current_count = current.count()
        if current_count and len(rows) < current_count * MIN_SHRINK_RATIO:
            raise InstrumentMasterRejected(
                f"{broker}: the new master has {len(rows)} instruments, the current one "
                f"{current_count}; refusing a download that looks truncated."
            )
        current.delete()
        Instrument.objects.bulk_create(rows, batch_size=2000)
        # Retire cached lookups only once the new table is visible to everyone: bumped before
        # an outer transaction commits, a concurrent lookup would cache an old row under the
        # new version and serve it until LOOKUP_CACHE_SECONDS ran out.
        transaction.on_commit(lambda: _bump_cache_version(broker))
    logger.info("Instrument master for %s: %d instruments", broker, len(rows))
    return len(rows)


def _validated_rows(broker: str, records: list[InstrumentRecord]) -> list[Instrument]:
    if not records:
        raise InstrumentMasterRejected(f"{broker}: the master file is empty.")
    rows, seen, problems = [], set(), []
    for index, record in enumerate(records):
        key = (record.exchange, record.symbol)
        if not record.exchange or not record.symbol or not record.broker_symbol:
            problems.append(f"row {index}: missing exchange, symbol or broker symbol")
        elif key in seen:
            continue  # masters list some instruments twice (e.g. per segment): keep the first
        elif record.lot_size is None or record.lot_size <= 0:
            problems.append(f"row {index} ({record.symbol}): lot size must be positive")
        elif record.tick_size is None or record.tick_size <= 0:
            problems.append(f"row {index} ({record.symbol}): tick size must be positive")
        else:
            seen.add(key)
            rows.append(
                Instrument(
                    broker=broker,
                    exchange=record.exchange,
                    symbol=record.symbol,
                    broker_symbol=record.broker_symbol,
                    broker_token=record.broker_token,
                    name=record.name[:200],
                    instrument_type=record.instrument_type[:20],
                    lot_size=record.lot_size,
                    tick_size=record.tick_size,
                    expiry=_parse_date(record.expiry),
                    strike=record.strike,
                )
            )
        if len(problems) > 20:
            break
    if problems:
        raise InstrumentMasterRejected(f"{broker}: bad rows: " + "; ".join(problems[:20]))
    return rows


def _parse_date(value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError as exc:
        raise InstrumentMasterRejected(f"bad expiry date {value!r}") from exc


def _broker_version_key(broker: str) -> str:
    return f"instruments-version:{broker}"


def _bump_cache_version(broker: str) -> None:
    """Cached answers carry the broker's version; a new version retires them all at once."""
    key = _broker_version_key(broker)
    if not cache.add(key, 1, None):
        cache.incr(key)


def _cached_answers(broker: str, *suffixes: str) -> tuple[int, list]:
    """``(version, answers)``: the broker's current version and, per suffix, the answer cached
    under it (None when missing or cached under an older version), in one cache read.

    Answers are kept as ``(version, answer)`` under keys without the version, so the version is
    read in the same round trip as the answers (every order asks).
    """
    keys = [_broker_version_key(broker), *(_answer_key(broker, suffix) for suffix in suffixes)]
    found = cache.get_many(keys)
    version = found.get(keys[0]) or 0
    answers = []
    for key in keys[1:]:
        entry = found.get(key)
        answers.append(entry[1] if entry is not None and entry[0] == version else None)
    return version, answers


def _answer_key(broker: str, suffix: str) -> str:
    return f"instrument-answer:{broker}:{suffix}"


def _cached(broker: str, suffix: str, version: int, load, found=None):
    """``load()``'s answer, cached under the broker's ``version`` until a refresh; ``found``
    if already read."""
    if found is None:
        found = load()
        entry = (version, found if found is not None else False)
        cache.set(_answer_key(broker, suffix), entry, LOOKUP_CACHE_SECONDS)
    return found or None


def _instrument_query(*, broker: str, exchange: str, symbol: str):
    return Instrument.objects.filter(broker=broker, exchange=exchange, symbol=symbol).first()


def _master_loaded_query(broker: str) -> bool:
    return Instrument.objects.filter(broker=broker).exists()


def instrument_lookup(*, broker: str, exchange: str, symbol: str) -> Instrument | None:
    """The instrument row for an order, cached in the shared cache until the next refresh."""
    suffix = f"{exchange}:{symbol}"
    version, (found,) = _cached_answers(broker, suffix)
    return _cached(
        broker,
        suffix,
        version,
        lambda: _instrument_query(broker=broker, exchange=exchange, symbol=symbol),
        found,
    )


def ensure_known_instrument(*, broker: str, exchange: str, symbol: str) -> Instrument | None:
    """The instrument, or InvalidInstrument when the broker's master is loaded and lacks it.

    Asked on every order: the version and both cached answers come back in one read.
    """
    suffix = f"{exchange}:{symbol}"
    version, (found, loaded) = _cached_answers(broker, suffix, "#loaded")
    instrument = _cached(
        broker,
        suffix,
        version,
        lambda: _instrument_query(broker=broker, exchange=exchange, symbol=symbol),
        found,
    )
    if instrument is None and _cached(
        broker, "#loaded", version, lambda: _master_loaded_query(broker), loaded
    ):
        raise errors.InvalidInstrument(f"{exchange}:{symbol} is not in {broker}'s instruments.")
    return instrument
