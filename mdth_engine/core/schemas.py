"""Arrow schemas of every tick data type in the lake, and how Tardis CSV columns map onto them.

Timestamps are ``timestamp[us, tz=UTC]``; book levels are 1-based (``ask_price_1`` is the best ask).
Per-instrument files drop Tardis' constant ``exchange``/``symbol`` columns (the footer names them);
grouped files (``options_chain``) keep ``symbol`` and add ``instrument_key``.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

TS = pa.timestamp("us", tz="UTC")
F64 = pa.float64()
DICT_STR = pa.dictionary(pa.int32(), pa.string())

DATA_TYPES: tuple[str, ...] = (
    "trades",
    "book_snapshot_5",
    "book_snapshot_25",
    "quotes",
    "book_ticker",
    "derivative_ticker",
    "liquidations",
    "options_chain",
    "incremental_book_L2",
)

# Data types stored once per underlying (grouped Tardis symbol), not per instrument.
GROUPED_DATA_TYPES = frozenset({"options_chain"})


def _book_csv_columns(depth: int) -> list[str]:
    cols: list[str] = []
    for i in range(depth):
        cols += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    return cols


def _book_fields(depth: int) -> list[pa.Field]:
    fields: list[pa.Field] = []
    for level in range(1, depth + 1):
        fields += [
            pa.field(f"ask_price_{level}", F64),
            pa.field(f"ask_amount_{level}", F64),
            pa.field(f"bid_price_{level}", F64),
            pa.field(f"bid_amount_{level}", F64),
        ]
    return fields


_TIMES = [pa.field("timestamp", TS, nullable=False), pa.field("local_timestamp", TS, nullable=False)]
_TRADE_LIKE = [
    *_TIMES,
    pa.field("id", pa.string()),
    pa.field("side", DICT_STR),
    pa.field("price", F64),
    pa.field("amount", F64),
]
_QUOTE_LIKE = [
    *_TIMES,
    pa.field("ask_amount", F64),
    pa.field("ask_price", F64),
    pa.field("bid_price", F64),
    pa.field("bid_amount", F64),
]

SCHEMAS: dict[str, pa.Schema] = {
    "trades": pa.schema(_TRADE_LIKE),
    "liquidations": pa.schema(_TRADE_LIKE),
    "book_snapshot_5": pa.schema([*_TIMES, *_book_fields(5)]),
    "book_snapshot_25": pa.schema([*_TIMES, *_book_fields(25)]),
    "quotes": pa.schema(_QUOTE_LIKE),
    "book_ticker": pa.schema(_QUOTE_LIKE),
    "derivative_ticker": pa.schema(
        [
            *_TIMES,
            pa.field("funding_timestamp", TS),
            pa.field("funding_rate", F64),
            pa.field("predicted_funding_rate", F64),
            pa.field("open_interest", F64),
            pa.field("last_price", F64),
            pa.field("index_price", F64),
            pa.field("mark_price", F64),
        ]
    ),
    "options_chain": pa.schema(
        [
            *_TIMES,
            pa.field("symbol", DICT_STR, nullable=False),
            pa.field("instrument_key", DICT_STR),
            pa.field("type", DICT_STR),
            pa.field("strike_price", F64),
            pa.field("expiration", TS),
            pa.field("open_interest", F64),
            pa.field("last_price", F64),
            pa.field("bid_price", F64),
            pa.field("bid_amount", F64),
            pa.field("bid_iv", F64),
            pa.field("ask_price", F64),
            pa.field("ask_amount", F64),
            pa.field("ask_iv", F64),
            pa.field("mark_price", F64),
            pa.field("mark_iv", F64),
            pa.field("underlying_index", DICT_STR),
            pa.field("underlying_price", F64),
            pa.field("delta", F64),
            pa.field("gamma", F64),
            pa.field("vega", F64),
            pa.field("theta", F64),
            pa.field("rho", F64),
        ]
    ),
    "incremental_book_L2": pa.schema(
        [
            *_TIMES,
            pa.field("is_snapshot", pa.bool_()),
            pa.field("side", DICT_STR),
            pa.field("price", F64),
            pa.field("amount", F64),
        ]
    ),
}

# Exact Tardis CSV headers (FORMATS.md section 2), in file order.
_HEAD = ["exchange", "symbol", "timestamp", "local_timestamp"]
CSV_COLUMNS: dict[str, list[str]] = {
    "trades": [*_HEAD, "id", "side", "price", "amount"],
    "liquidations": [*_HEAD, "id", "side", "price", "amount"],
    "book_snapshot_5": [*_HEAD, *_book_csv_columns(5)],
    "book_snapshot_25": [*_HEAD, *_book_csv_columns(25)],
    "quotes": [*_HEAD, "ask_amount", "ask_price", "bid_price", "bid_amount"],
    "book_ticker": [*_HEAD, "ask_amount", "ask_price", "bid_price", "bid_amount"],
    "derivative_ticker": [
        *_HEAD,
        "funding_timestamp",
        "funding_rate",
        "predicted_funding_rate",
        "open_interest",
        "last_price",
        "index_price",
        "mark_price",
    ],
    "options_chain": [
        *_HEAD,
        "type",
        "strike_price",
        "expiration",
        "open_interest",
        "last_price",
        "bid_price",
        "bid_amount",
        "bid_iv",
        "ask_price",
        "ask_amount",
        "ask_iv",
        "mark_price",
        "mark_iv",
        "underlying_index",
        "underlying_price",
        "delta",
        "gamma",
        "vega",
        "theta",
        "rho",
    ],
    "incremental_book_L2": [*_HEAD, "is_snapshot", "side", "price", "amount"],
}

# Allowed values of categorical columns; anything else in a source row is malformed.
SIDE_DOMAIN: dict[str, frozenset[str]] = {
    "trades": frozenset({"buy", "sell", "unknown"}),
    "liquidations": frozenset({"buy", "sell", "unknown"}),
    "incremental_book_L2": frozenset({"bid", "ask"}),
}
OPTION_TYPE_DOMAIN = frozenset({"call", "put"})


def csv_to_lake_name(data_type: str, csv_name: str) -> str:
    """Lake column name for a Tardis CSV column (book levels become 1-based ``ask_price_1``...)."""
    if csv_name.startswith(("asks[", "bids[")):
        side = "ask" if csv_name.startswith("asks") else "bid"
        index = int(csv_name[5 : csv_name.index("]")])
        field = csv_name.rsplit(".", 1)[1]
        return f"{side}_{field}_{index + 1}"
    return csv_name


def schema_for(data_type: str) -> pa.Schema:
    """The lake schema of a data type, or a ``ValueError`` naming the known ones."""
    try:
        return SCHEMAS[data_type]
    except KeyError:
        raise ValueError(f"unknown data type {data_type!r}; known: {', '.join(DATA_TYPES)}") from None
