"""The metadata API bodies: ``/v1/exchanges``, ``/v1/exchanges/{id}`` and ``/v1/instruments/{id}`` (FORMATS.md 4-5)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from mdth_engine.core.timeframes import datetime_to_us
from mdth_engine.simulator import calendar as cal
from mdth_engine.simulator.universe import (
    EXCHANGES,
    Exchange,
    Instrument,
    find_instrument,
    instruments_listed,
)

FILTER_KEYS = (
    "baseCurrency",
    "quoteCurrency",
    "type",
    "contractType",
    "underlyingType",
    "active",
    "availableSince",
    "availableTo",
)


class BadFilter(ValueError):
    """The ``filter`` query parameter is not valid JSON of the documented shape."""


def _clean(value: float) -> float | int:
    return int(value) if float(value).is_integer() and abs(value) < 1e15 else float(value)


def exchanges_list() -> list[dict[str, Any]]:
    return [
        {
            "id": ex.id,
            "name": ex.name,
            "enabled": True,
            "supportsDatasets": True,
            "availableSince": cal.iso_day(ex.since),
            "availableChannels": list(ex.channels),
        }
        for ex in EXCHANGES.values()
    ]


def _active(inst: Instrument, now_us: int) -> bool:
    return inst.listing_us <= now_us and (inst.end_us is None or inst.end_us > now_us)


def _since(inst: Instrument) -> str:
    return cal.iso_day(inst.since)


def _to(inst: Instrument) -> str | None:
    return cal.iso_day(inst.until) if inst.until else None


def exchange_details(exchange: str, now: dt.datetime, exported_until: dt.datetime) -> dict[str, Any]:
    ex: Exchange = EXCHANGES[exchange]
    now_day = now.date() + dt.timedelta(days=1)
    listed = instruments_listed(exchange, now_day)
    now_us = datetime_to_us(now)
    export_us = datetime_to_us(exported_until)
    available_symbols = []
    for inst in listed:
        item: dict[str, Any] = {"id": inst.id, "type": inst.type, "availableSince": _since(inst)}
        if inst.until and inst.end_us is not None and inst.end_us <= now_us:
            item["availableTo"] = _to(inst)
        available_symbols.append(item)
    symbols: list[dict[str, Any]] = []
    for group in ex.grouped:
        members = [i for i in listed if i.type == group.type]
        if not members:
            continue
        symbols.append(
            {
                "id": group.id,
                "type": group.type,
                "availableSince": cal.iso_day(max(ex.since, min(i.since for i in members))),
                "dataTypes": list(group.data_types),
            }
        )
    trades_total = 0
    for inst in listed:
        if inst.listing_us >= export_us:
            continue
        item = {"id": inst.dataset_id, "type": inst.type, "availableSince": _since(inst)}
        if inst.until and inst.end_us is not None and inst.end_us <= export_us:
            item["availableTo"] = _to(inst)
        item["dataTypes"] = list(inst.data_types)
        full = int(inst.profile.trades_per_day)
        item["stats"] = {"trades": full * 30, "bookChanges": int(inst.profile.book_per_day) * 30 * 20}
        trades_total += full * 30
        symbols.append(item)
    return {
        "id": ex.id,
        "name": ex.name,
        "enabled": True,
        "availableSince": cal.iso_day(ex.since),
        "availableChannels": list(ex.channels),
        "availableSymbols": available_symbols,
        "incidentReports": [{"from": f, "to": t, "status": s, "details": d} for f, t, s, d in ex.incidents],
        "channelDetails": [],
        "apiDocsUrl": f"https://docs.tardis.dev/historical-data-details/{ex.id}",
        "datasets": {
            "formats": ["csv"],
            "exportedFrom": cal.iso_day(ex.since),
            "exportedUntil": cal.iso_ms(export_us),
            "stats": {"trades": trades_total, "bookChanges": trades_total * 20},
            "symbols": symbols,
        },
    }


def instrument_info(inst: Instrument, now: dt.datetime, exported_until: dt.datetime) -> dict[str, Any]:
    """One instrument object with the fields of FORMATS.md section 5, in the order Tardis writes them."""
    now_us = datetime_to_us(now)
    out: dict[str, Any] = {"id": inst.id}
    if inst.listing_us < datetime_to_us(exported_until):
        out["datasetId"] = inst.dataset_id
    out.update(
        {
            "exchange": inst.exchange,
            "baseCurrency": inst.base,
            "quoteCurrency": inst.quote,
            "type": inst.type,
            "active": _active(inst, now_us),
            "availableSince": _since(inst),
        }
    )
    if inst.until and inst.end_us is not None and inst.end_us <= now_us:
        out["availableTo"] = _to(inst)
    if inst.expiry_us is not None:
        out["expiry"] = cal.iso_ms(inst.expiry_us)
    if inst.expiration_type:
        out["expirationType"] = inst.expiration_type
    out.update(
        {
            "priceIncrement": _clean(inst.price_increment),
            "amountIncrement": _clean(inst.amount_increment),
            "minTradeAmount": _clean(inst.amount_increment),
            "makerFee": inst.maker_fee,
            "takerFee": inst.taker_fee,
        }
    )
    if inst.inverse is not None:
        out["inverse"] = inst.inverse
    if inst.contract_type:
        out["contractType"] = inst.contract_type
    if inst.multiplier is not None:
        out["contractMultiplier"] = _clean(inst.multiplier)
    if inst.settlement:
        out["settlementCurrency"] = inst.settlement
    if inst.underlying_index:
        out["underlyingIndex"] = inst.underlying_index
    if inst.type != "spot":
        out["underlyingType"] = "native"
    if inst.strike is not None:
        out["strikePrice"] = _clean(inst.strike)
        out["optionType"] = inst.option_type
    out["listing"] = cal.iso_ms(inst.listing_us)
    if inst.changes:
        out["changes"] = [
            {"until": cal.iso_day(until), **{k: _clean(v) for k, v in values}}
            for until, values in sorted(inst.changes, key=lambda c: c[0])
        ]
    return out


def parse_filter(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadFilter(f"Invalid 'filter' param: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise BadFilter("Invalid 'filter' param: expected a JSON object")
    unknown = [k for k in value if k not in FILTER_KEYS]
    if unknown:
        raise BadFilter(
            f"Invalid 'filter' param: unknown key {unknown[0]!r}; allowed: {', '.join(FILTER_KEYS)}"
        )
    return value


def _parse_instant(value: Any, key: str) -> int:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"Invalid 'filter' param: {key} must be an ISO 8601 date") from None
    return datetime_to_us(parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC))


def matches(item: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Whether an instrument object passes a filter (lists mean "any of"; dates select overlapping data)."""
    for key in ("baseCurrency", "quoteCurrency", "type", "contractType", "underlyingType"):
        if key in flt:
            wanted = flt[key] if isinstance(flt[key], list) else [flt[key]]
            if item.get(key) not in wanted:
                return False
    if "active" in flt and bool(item["active"]) != bool(flt["active"]):
        return False
    end = item.get("availableTo")
    # availableSince: instruments with data at or after that instant; availableTo: with data before it.
    after = _parse_instant(flt["availableSince"], "availableSince") if "availableSince" in flt else None
    if after is not None and end is not None and _parse_instant(end, "availableTo") <= after:
        return False
    before = _parse_instant(flt["availableTo"], "availableTo") if "availableTo" in flt else None
    return before is None or _parse_instant(item["availableSince"], "availableSince") < before


def instruments(
    exchange: str, now: dt.datetime, exported_until: dt.datetime, flt: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    listed = instruments_listed(exchange, now.date() + dt.timedelta(days=1))
    now_us = datetime_to_us(now)
    items = [instrument_info(i, now, exported_until) for i in listed if i.listing_us <= now_us]
    return [i for i in items if flt is None or matches(i, flt)]


def instrument(
    exchange: str, symbol: str, now: dt.datetime, exported_until: dt.datetime
) -> dict[str, Any] | None:
    """One instrument by native id or dataset id (case-insensitive), or ``None``."""
    inst = find_instrument(exchange, symbol)
    if inst is None or inst.listing_us > datetime_to_us(now):
        return None
    return instrument_info(inst, now, exported_until)
