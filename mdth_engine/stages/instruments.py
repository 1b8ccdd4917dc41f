"""The point-in-time instrument master: one file per UTC day with every instrument available that day.

Built from `/v1/exchanges/{exchange}` (public: dataset symbols, their data types and availability) and
`/v1/instruments/{exchange}` (metadata, needs a key on real Tardis); what could not be filled in is said, per
row (`missing`) and in the run's warnings. Grouped `OPTIONS` datasets become one OPTION_CHAIN row per underlying.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Event, Kind
from mdth_engine.core.keys import (
    EXCHANGE_TO_VENUE,
    INSTRUMENT_TYPES,
    TARDIS_TYPES,
    VENUE_TO_EXCHANGE,
    key_from_tardis,
    parse_key,
)
from mdth_engine.core.timeframes import UTC
from mdth_engine.sources import tardis
from mdth_engine.stages.base import Outcome, Request, UnitResult, WorkUnit
from mdth_engine.storage import layout

TS = pa.timestamp("us", tz="UTC")
INSTRUMENTS_SCHEMA = pa.schema(
    [
        pa.field("instrument_key", pa.string(), nullable=False),
        pa.field("venue", pa.string(), nullable=False),
        pa.field("instrument_type", pa.string(), nullable=False),
        pa.field("base_asset", pa.string()),
        pa.field("quote_asset", pa.string()),
        pa.field("settle_asset", pa.string()),
        pa.field("underlying", pa.string()),
        pa.field("tardis_exchange", pa.string(), nullable=False),
        pa.field("tardis_symbol", pa.string(), nullable=False),
        pa.field("exchange_raw_symbol", pa.string()),
        pa.field("data_types", pa.list_(pa.string())),
        pa.field("available_from", TS),
        pa.field("available_to", TS),
        pa.field("listing", TS),
        pa.field("expiry", TS),
        pa.field("strike", pa.float64()),
        pa.field("option_type", pa.string()),
        pa.field("contract_type", pa.string()),
        pa.field("inverse", pa.bool_()),
        pa.field("contract_multiplier", pa.float64()),
        pa.field("tick_size", pa.float64()),
        pa.field("amount_increment", pa.float64()),
        pa.field("min_trade_amount", pa.float64()),
        # tradable that day (listed, not yet expired or delisted), not the source's status today
        pa.field("active", pa.bool_()),
        pa.field("missing", pa.string()),  # what could not be filled in, e.g. "metadata: unauthorized"
    ]
)
GROUPED_IDS = frozenset({"SPOT", "FUTURES", "PERPETUALS", "OPTIONS", "COMBOS"})
UNKEYED_SHOWN = 5  # how many symbols a warning about unkeyable symbols names
# Metadata fields whose past values `changes` records, mapped to our columns.
_CHANGE_FIELDS = {
    "priceIncrement": "tick_size",
    "amountIncrement": "amount_increment",
    "minTradeAmount": "min_trade_amount",
    "contractMultiplier": "contract_multiplier",
    "inverse": "inverse",
    "contractType": "contract_type",
    "quoteCurrency": "quote_asset",
    "settlementCurrency": "settle_asset",
}


def parse_venues(text: tuple[str, ...] | list[str]) -> list[str]:
    """Canonical venues from names or Tardis exchange ids; all known venues when empty."""
    if not text:
        return list(VENUE_TO_EXCHANGE)
    out = []
    for item in text:
        name = item.strip()
        venue = name.upper() if name.upper() in VENUE_TO_EXCHANGE else EXCHANGE_TO_VENUE.get(name.lower())
        if venue is None:
            raise UsageError(f"unknown venue {name!r}; known: {', '.join(VENUE_TO_EXCHANGE)}")
        out.append(venue)
    return sorted(set(out), key=list(VENUE_TO_EXCHANGE).index)


def parse_types(text: tuple[str, ...] | list[str]) -> list[str]:
    """Canonical instrument types from names (``PERP`` accepted); empty when none are given."""
    out = []
    for item in text:
        name = item.strip().upper()
        name = "PERPETUAL" if name == "PERP" else name
        if name not in INSTRUMENT_TYPES:
            raise UsageError(f"unknown instrument type {item!r}; known: {', '.join(INSTRUMENT_TYPES)}")
        out.append(name)
    return out


def _ts(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _num(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass
class VenueSnapshot:
    """What the source says about one venue, fetched once per run and reused for every day."""

    venue: str
    exchange: str
    symbols: list[dict[str, Any]]  # datasets.symbols
    infos: dict[str, dict[str, Any]]  # instrument metadata by dataset id
    missing: str = ""  # e.g. "metadata: unauthorized (no API key)"
    available_since: dt.datetime | None = None


async def fetch_venue(settings: Any, venue: str) -> VenueSnapshot:
    exchange = VENUE_TO_EXCHANGE[venue]
    details = await tardis.exchange_details(settings, exchange)
    symbols = list((details.get("datasets") or {}).get("symbols") or [])
    infos: dict[str, dict[str, Any]] = {}
    missing = ""
    try:
        for info in await tardis.instrument_info(settings, exchange):
            dataset_id = str(info.get("datasetId") or info.get("id") or "").upper()
            if dataset_id:
                infos[dataset_id] = info
    except tardis.SourceUnavailable as exc:
        missing = f"metadata: {exc.outcome}" + (" (no API key)" if not settings.api_key() else "")
    return VenueSnapshot(venue, exchange, symbols, infos, missing, _ts(details.get("availableSince")))


def values_in_force(info: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    """Metadata as it was at ``at``: each ``changes`` entry holds the values before its ``until``."""
    values = dict(info)
    pending = sorted(info.get("changes") or [], key=lambda c: str(c.get("until")))
    for field in _CHANGE_FIELDS:
        for change in pending:
            until = _ts(change.get("until"))
            if until is not None and until > at and field in change:
                values[field] = change[field]
                break
    return values


def _available_on(entry: dict[str, Any], day: dt.date) -> bool:
    start = dt.datetime.combine(day, dt.time(), UTC)
    since, until = _ts(entry.get("availableSince")), _ts(entry.get("availableTo"))
    return (since is None or since < start + dt.timedelta(days=1)) and (until is None or until > start)


def active_on(start: dt.datetime | None, end: dt.datetime | None, day_start: dt.datetime) -> bool:
    """Tradable during the UTC day: listed (or its data began) before the day ends, and not expired, delisted
    or out of data before it starts. Point-in-time, unlike the metadata's ``active`` (the status when asked)."""
    return (start is None or start < day_start + dt.timedelta(days=1)) and (end is None or end > day_start)


def _non_instrument(entry: dict[str, Any], info: dict[str, Any] | None) -> bool:
    """A combo, prediction or other type that is not an instrument: left out on purpose, not a failure."""
    raw = (info or {}).get("type") or entry.get("type")
    return bool(raw) and str(raw).strip().lower() not in TARDIS_TYPES


def rows_for_day(snap: VenueSnapshot, day: dt.date) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per instrument available on ``day`` (plus OPTION_CHAIN rows), and the instrument symbols that
    could not be turned into keys (so the run can say so)."""
    day_start = dt.datetime.combine(day, dt.time(), UTC)
    rows: list[dict[str, Any]] = []
    unkeyed: list[str] = []
    chain_types: list[str] | None = None
    chain_entry: dict[str, Any] | None = None
    for entry in snap.symbols:
        symbol = str(entry.get("id", "")).upper()
        if not _available_on(entry, day):
            continue
        if symbol in GROUPED_IDS:
            if symbol == "OPTIONS":
                chain_types, chain_entry = list(entry.get("dataTypes") or []), entry
            continue
        info = snap.infos.get(symbol)
        mapped = key_from_tardis(snap.exchange, symbol, info, entry.get("type"))
        if mapped is None:
            if not _non_instrument(entry, info):
                unkeyed.append(symbol)
            continue
        values = values_in_force(info, day_start) if info else {}
        key = mapped.key
        missing = [] if info else [snap.missing or "metadata: not listed by /v1/instruments"]
        available_from, available_to = _ts(entry.get("availableSince")), _ts(entry.get("availableTo"))
        ends = [t for t in (mapped.expiry_at, available_to) if t is not None]
        listed = _ts(values.get("listing")) or available_from
        rows.append(
            {
                "instrument_key": str(key),
                "venue": key.venue,
                "instrument_type": key.type,
                "base_asset": key.base,
                "quote_asset": key.quote,
                "settle_asset": values.get("settlementCurrency") or mapped.settle,
                "underlying": key.underlying if key.type in ("FUTURE", "OPTION") else None,
                "tardis_exchange": snap.exchange,
                "tardis_symbol": symbol,
                "exchange_raw_symbol": (info or {}).get("id") or symbol,
                "data_types": sorted(entry.get("dataTypes") or []),
                "available_from": available_from,
                "available_to": available_to,
                "listing": _ts(values.get("listing")),
                "expiry": mapped.expiry_at,
                "strike": key.strike_value,
                "option_type": key.option_type,
                "contract_type": values.get("contractType") or mapped.contract_type,
                "inverse": values.get("inverse", mapped.inverse),
                "contract_multiplier": _num(values.get("contractMultiplier")),
                "tick_size": _num(values.get("priceIncrement")),
                "amount_increment": _num(values.get("amountIncrement")),
                "min_trade_amount": _num(values.get("minTradeAmount")),
                "active": active_on(listed, min(ends, default=None), day_start),
                "missing": "; ".join(missing) or None,
            }
        )
    if chain_entry is not None:
        chains: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["instrument_type"] == "OPTION":
                chains.setdefault(str(parse_key(row["instrument_key"]).chain_key()), row)
        for key, option in sorted(chains.items()):
            base, quote = option["base_asset"], option["quote_asset"]
            rows.append(
                {
                    "instrument_key": key,
                    "venue": snap.venue,
                    "instrument_type": "OPTION_CHAIN",
                    "base_asset": base,
                    "quote_asset": quote,
                    "settle_asset": option["settle_asset"],
                    "underlying": f"{base}-{quote}",
                    "tardis_exchange": snap.exchange,
                    "tardis_symbol": "OPTIONS",
                    "exchange_raw_symbol": "OPTIONS",
                    "data_types": sorted(chain_types or []),
                    "available_from": _ts(chain_entry.get("availableSince")),
                    "available_to": _ts(chain_entry.get("availableTo")),
                    "listing": None,
                    "expiry": None,
                    "strike": None,
                    "option_type": None,
                    "contract_type": None,
                    "inverse": option["inverse"],
                    "contract_multiplier": None,
                    "tick_size": None,
                    "amount_increment": None,
                    "min_trade_amount": None,
                    "active": None,
                    "missing": None,
                }
            )
    return rows, unkeyed


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as the fixed instruments schema, sorted by key (the same column set every day and venue)."""
    table = pa.Table.from_pylist(rows, schema=INSTRUMENTS_SCHEMA)
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [("instrument_key", "ascending")]))
    return table


def content_hash(table: pa.Table) -> str:
    """A digest of the rows, so a re-run that changes nothing rewrites nothing."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


class InstrumentsStage:
    """Plans one unit per day; fetches each venue once per run and writes the day's file for all its venues."""

    name = "instruments"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._snapshots: dict[str, asyncio.Task[VenueSnapshot]] = {}
        self._warned: set[tuple[str, ...]] = set()

    def plan(self, request: Request) -> list[WorkUnit]:
        venues = parse_venues(request.venues)
        types = parse_types(request.types) or list(INSTRUMENT_TYPES)
        return [
            WorkUnit(
                self.name,
                f"{day.isoformat()}/instruments",
                day,
                layout.instruments_path(day),
                est_bytes=50_000,
                params={
                    "venues": venues,
                    "types": types,
                    "explicit": bool(request.venues),
                    "force": bool(request.options.get("force")),
                },
            )
            for day in request.days()
        ]

    def snapshot(self, venue: str) -> asyncio.Task[VenueSnapshot]:
        if venue not in self._snapshots:
            self._snapshots[venue] = asyncio.ensure_future(fetch_venue(self.ctx.settings, venue))
        return self._snapshots[venue]

    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        from mdth_engine.storage.parquet import read_provenance, write_table

        venues: list[str] = unit.params["venues"]
        types: list[str] = unit.params.get("types") or list(INSTRUMENT_TYPES)
        on_file = await asyncio.to_thread(read_instruments, self.ctx.store, unit.output)
        # A venue enters a day's master whole: a later request for other types must find them there.
        known = set(on_file["venue"].to_pylist()) if on_file is not None and on_file.num_rows else set()
        rows: list[dict[str, Any]] = []
        unkeyed: dict[str, dict[str, Any]] = {}
        for venue in venues:
            try:
                snap = await self.snapshot(venue)
            except tardis.SourceNotFound:
                if unit.params.get("explicit"):
                    return UnitResult(
                        unit.unit_id, Outcome.FAILED, reason=f"venue {venue}: not offered by the source"
                    )
                self._warn((venue,), f"venue {venue}: not offered by the source, skipped")
                continue
            except tardis.SourceUnavailable as exc:
                return UnitResult(unit.unit_id, Outcome(exc.outcome), reason=str(exc))
            if snap.missing:
                self._warn((venue,), f"venue {venue}: {snap.missing}; tick sizes, expiries from symbols only")
            venue_rows, venue_unkeyed = rows_for_day(snap, unit.day)
            rows += [r for r in venue_rows if venue not in known or r["instrument_type"] in types]
            if venue_unkeyed:
                unkeyed[venue] = {"count": len(venue_unkeyed), "first": venue_unkeyed[:UNKEYED_SHOWN]}
                self._warn(("unkeyed", venue, *venue_unkeyed), self._unkeyed_message(snap, venue_unkeyed))
        store = self.ctx.store
        existing = self._existing_rows(on_file, venues, types)
        table = to_table(existing + rows)
        digest = content_hash(table)
        extra = {"unkeyed": unkeyed} if unkeyed else {}
        old = await asyncio.to_thread(read_provenance, store, unit.output)
        if old and old.get("content_sha256") == digest and not unit.params.get("force"):
            return UnitResult(
                unit.unit_id, Outcome.SKIPPED, rows=table.num_rows, output=unit.output, extra=extra
            )
        provenance = {
            "source_url": self.ctx.settings.tardis_api_url,
            "data_type": "instruments",
            "content_sha256": digest,
            "venues": ",".join(sorted({r["venue"] for r in table.to_pylist()})) if table.num_rows else "",
        }
        written = await asyncio.to_thread(write_table, store, unit.output, table, provenance)
        return UnitResult(
            unit.unit_id,
            Outcome.WRITTEN,
            rows=table.num_rows,
            bytes=written.bytes,
            output=unit.output,
            extra=extra,
        )

    @staticmethod
    def _existing_rows(table: pa.Table | None, venues: list[str], types: list[str]) -> list[dict[str, Any]]:
        """Rows of the (venue, type) pairs this run does not rebuild, kept as they are."""
        if table is None or not table.num_rows:
            return []
        rebuilt = pc.and_(
            pc.is_in(table["venue"], pa.array(sorted(venues), pa.string())),
            pc.is_in(table["instrument_type"], pa.array(sorted(types), pa.string())),
        )
        return table.filter(pc.invert(rebuilt)).to_pylist()

    @staticmethod
    def _unkeyed_message(snap: VenueSnapshot, symbols: list[str]) -> str:
        """One line naming how many symbols are left out of the master and the first few of them."""
        how = " without metadata" if snap.missing else ""
        shown = ", ".join(symbols[:UNKEYED_SHOWN]) + (", ..." if len(symbols) > UNKEYED_SHOWN else "")
        return f"{snap.venue}: {len(symbols)} symbols could not be keyed{how} (not in the master): {shown}"

    def _warn(self, key: tuple[str, ...], message: str) -> None:
        """Emit a warning once per run for ``key`` (a venue, or "unkeyed", a venue and its symbols)."""
        if key not in self._warned:
            self._warned.add(key)
            self.ctx.sink(Event(Kind.WARNING, self.name, job=self.ctx.job_id, message=message))


def read_instruments(store: Any, path: str) -> pa.Table | None:
    """The day's master as written, or None when that day was never built."""
    from mdth_engine.storage.parquet import read_whole

    if not store.exists(path):
        return None
    with store.open_read(path) as handle:
        return read_whole(handle, schema=INSTRUMENTS_SCHEMA)


def make_stage(ctx: Any) -> InstrumentsStage:
    return InstrumentsStage(ctx)
