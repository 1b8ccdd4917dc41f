"""Golden tests of the canonical key grammar (DESIGN.md section 3) and the Tardis symbol/metadata mapping.

Expected values come from DESIGN.md section 3, SEED_FACTS 4.3/4.4 (with the original's bugs corrected) and the
real `/v1/instruments` objects in reference/tardis/samples/api (copied below so the tests need no shared files).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pathlib
from decimal import Decimal

import pytest

from mdth_engine.core.errors import KeyFormatError, UsageError
from mdth_engine.core.keys import (
    EXCHANGE_TO_VENUE,
    INSTRUMENT_TYPES,
    VENUE_TO_EXCHANGE,
    InstrumentKey,
    closest_keys,
    exchange_for_venue,
    format_key,
    key_from_tardis,
    parse_key,
    venue_for_exchange,
)

UTC = dt.UTC
D = dt.date


def at8(year: int, month: int, day: int) -> dt.datetime:
    """08:00 UTC, when Deribit (and crypto futures generally) expire."""
    return dt.datetime(year, month, day, 8, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------
# Grammar: golden keys with their parts, written out by hand

# fmt: off
GOLDEN_KEYS = {
    # DESIGN.md section 3 examples
    "BINANCE:SPOT_PAIR:BTC-USDT": ("BINANCE", "SPOT_PAIR", "BTC", "USDT", None, None, None),
    "BINANCE-FUTURES:PERPETUAL:BTC-USDT": ("BINANCE-FUTURES", "PERPETUAL", "BTC", "USDT", None, None, None),
    "DERIBIT:PERPETUAL:BTC-USD": ("DERIBIT", "PERPETUAL", "BTC", "USD", None, None, None),
    "DERIBIT:FUTURE:BTC-USD-240628": ("DERIBIT", "FUTURE", "BTC", "USD", D(2024, 6, 28), None, None),
    "DERIBIT:OPTION:BTC-USD-240628-60000-CALL":
        ("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28), "60000", "CALL"),
    "DERIBIT:OPTION_CHAIN:BTC-USD": ("DERIBIT", "OPTION_CHAIN", "BTC", "USD", None, None, None),
    # SEED_FACTS 4.3 rows and other shapes
    "DERIBIT:OPTION:XRP-USDC-231229-1.14-CALL":
        ("DERIBIT", "OPTION", "XRP", "USDC", D(2023, 12, 29), "1.14", "CALL"),
    "DERIBIT:OPTION:BTC-USD-251107-100000-PUT":
        ("DERIBIT", "OPTION", "BTC", "USD", D(2025, 11, 7), "100000", "PUT"),
    "DERIBIT:FUTURE:BTCDVOL-USDC-230830": ("DERIBIT", "FUTURE", "BTCDVOL", "USDC", D(2023, 8, 30), None, None),
    "BINANCE:SPOT_PAIR:USDT-TRY": ("BINANCE", "SPOT_PAIR", "USDT", "TRY", None, None, None),
    "BINANCE:SPOT_PAIR:ETH-BTC": ("BINANCE", "SPOT_PAIR", "ETH", "BTC", None, None, None),
    "BINANCE-FUTURES:FUTURE:BTC-USDT-240628":
        ("BINANCE-FUTURES", "FUTURE", "BTC", "USDT", D(2024, 6, 28), None, None),
    "BYBIT:PERPETUAL:BTC-USD": ("BYBIT", "PERPETUAL", "BTC", "USD", None, None, None),
    "BYBIT-SPOT:SPOT_PAIR:BTC-USDT": ("BYBIT-SPOT", "SPOT_PAIR", "BTC", "USDT", None, None, None),
    "OKX:SPOT_PAIR:ETH-BTC": ("OKX", "SPOT_PAIR", "ETH", "BTC", None, None, None),
    "OKX-SWAP:PERPETUAL:BTC-USD": ("OKX-SWAP", "PERPETUAL", "BTC", "USD", None, None, None),
    "OKX-FUTURES:FUTURE:BTC-USD-240628": ("OKX-FUTURES", "FUTURE", "BTC", "USD", D(2024, 6, 28), None, None),
    "BINANCE-FUTURES:PERPETUAL:1000PEPE-USDT":
        ("BINANCE-FUTURES", "PERPETUAL", "1000PEPE", "USDT", None, None, None),
    "DERIBIT:OPTION:DOGE-USDC-250124-0.3968-CALL":
        ("DERIBIT", "OPTION", "DOGE", "USDC", D(2025, 1, 24), "0.3968", "CALL"),
}
# fmt: on
FIELDS = ("venue", "type", "base", "quote", "expiry", "strike", "option_type")


@pytest.mark.parametrize("text", GOLDEN_KEYS)
def test_golden_keys_parse_into_their_parts(text):
    key = parse_key(text)
    assert tuple(getattr(key, f) for f in FIELDS) == GOLDEN_KEYS[text]
    assert str(key) == text
    venue, _, symbol = text.split(":")
    assert (key.symbol, key.exchange) == (symbol, VENUE_TO_EXCHANGE[venue])
    assert key.underlying == "-".join(symbol.split("-")[:2])


@pytest.mark.parametrize("text", GOLDEN_KEYS)
def test_round_trips(text):
    parts = GOLDEN_KEYS[text]
    assert format_key(*parts) == text  # format(x) == s
    assert parse_key(format_key(*parts)) == InstrumentKey(*parts)  # parse(format(x)) == x
    assert format_key(**dict(zip(FIELDS, parts, strict=True))) == text
    assert str(parse_key(str(parse_key(text)))) == text  # format(parse(s)) == s


def test_input_is_normalised_upper_case_and_perp_alias():
    assert str(parse_key("deribit:perp:btc-usd")) == "DERIBIT:PERPETUAL:BTC-USD"
    assert parse_key("BYBIT:PERP:ETH-USDT") == parse_key("BYBIT:PERPETUAL:ETH-USDT")
    assert str(parse_key("  okx-swap:Perp:btc-usdt ")) == "OKX-SWAP:PERPETUAL:BTC-USDT"
    assert parse_key(" binance:spot_pair:btc-usdt ") == parse_key("BINANCE:SPOT_PAIR:BTC-USDT")
    assert (
        str(parse_key("deribit:option:btc-usd-240628-60000-call"))
        == "DERIBIT:OPTION:BTC-USD-240628-60000-CALL"
    )
    assert format_key("deribit", "perp", "btc", "usd") == "DERIBIT:PERPETUAL:BTC-USD"
    assert InstrumentKey("BYBIT", "PERP", "BTC", "USDT").type == "PERPETUAL"


@pytest.mark.parametrize(
    ("strike", "canonical"),
    [("60000", "60000"), ("60000.0", "60000"), ("060000", "60000"), ("1.140", "1.14"), ("0.3968", "0.3968")],
)
def test_strike_text_is_canonical_decimal(strike, canonical):
    key = parse_key(f"DERIBIT:OPTION:BTC-USD-240628-{strike}-CALL")
    assert key.strike == canonical
    assert key.strike_value == float(canonical)
    assert str(key) == f"DERIBIT:OPTION:BTC-USD-240628-{canonical}-CALL"


@pytest.mark.parametrize(
    ("strike", "canonical"),
    [(60000, "60000"), (60000.0, "60000"), (1.14, "1.14"), (Decimal("1E+5"), "100000"), (1e-05, "0.00001")],
)
def test_numeric_strikes_format_without_exponent_or_trailing_zeros(strike, canonical):
    text = format_key("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28), strike, "put")
    assert text == f"DERIBIT:OPTION:BTC-USD-240628-{canonical}-PUT"


def test_key_properties_chain_and_strike_value():
    option = parse_key("DERIBIT:OPTION:XRP-USDC-231229-1.14-CALL")
    assert option.chain_key() == parse_key("DERIBIT:OPTION_CHAIN:XRP-USDC")
    assert str(option.chain_key()) == "DERIBIT:OPTION_CHAIN:XRP-USDC"
    assert option.strike_value == pytest.approx(1.14)
    assert option.exchange == "deribit"
    chain = parse_key("DERIBIT:OPTION_CHAIN:BTC-USD")
    assert chain.chain_key() == chain and chain.strike_value is None
    assert parse_key("OKX-SWAP:PERPETUAL:BTC-USDT").exchange == "okex-swap"
    with pytest.raises(UsageError, match="only options"):
        parse_key("DERIBIT:FUTURE:BTC-USD-240628").chain_key()


def test_keys_are_hashable_ordered_and_immutable():
    texts = [
        "DERIBIT:OPTION:BTC-USD-240628-60000-PUT",
        "BINANCE:SPOT_PAIR:ETH-BTC",
        "DERIBIT:FUTURE:BTC-USD-240927",
        "DERIBIT:FUTURE:BTC-USD-240628",
        "BINANCE:SPOT_PAIR:BTC-USDT",
        "DERIBIT:OPTION:BTC-USD-240628-60000-CALL",
    ]
    keys = sorted(parse_key(t) for t in texts)
    assert [str(k) for k in keys] == [
        "BINANCE:SPOT_PAIR:BTC-USDT",
        "BINANCE:SPOT_PAIR:ETH-BTC",
        "DERIBIT:FUTURE:BTC-USD-240628",
        "DERIBIT:FUTURE:BTC-USD-240927",
        "DERIBIT:OPTION:BTC-USD-240628-60000-CALL",
        "DERIBIT:OPTION:BTC-USD-240628-60000-PUT",
    ]
    assert len({parse_key(t) for t in [*texts, "binance:spot_pair:btc-usdt"]}) == len(texts)
    with pytest.raises(AttributeError):
        keys[0].base = "ETH"  # type: ignore[misc]


def test_datetime_expiry_becomes_its_utc_date():
    new_york = dt.timezone(dt.timedelta(hours=-5))
    late_evening = dt.datetime(2024, 6, 27, 22, 0, tzinfo=new_york)  # 2024-06-28 03:00 UTC
    key = InstrumentKey("DERIBIT", "FUTURE", "BTC", "USD", late_evening)
    assert key.expiry == D(2024, 6, 28) and type(key.expiry) is dt.date
    assert key == parse_key("DERIBIT:FUTURE:BTC-USD-240628")


# ---------------------------------------------------------------------------------------------------------
# Bad keys: each message is one line, quotes the key and names the wrong part

BAD_KEYS = [
    (
        "BINANCE:SPOT:BTCUSDT",
        ["type 'SPOT' is not one of SPOT_PAIR, PERPETUAL, FUTURE, OPTION, OPTION_CHAIN"],
    ),
    ("BINANCE:SPOT_PAIR:BTCUSDT", ["symbol 'BTCUSDT' must be BASE-QUOTE"]),
    ("DERIBIT:FUTURE:BTC-USD-241340", ["expiry '241340' is not a YYMMDD date"]),
    ("DERIBIT:FUTURE:BTC-USD-240631", ["expiry '240631' is not a YYMMDD date"]),
    ("DERIBIT:FUTURE:BTC-USD-28JUN24", ["expiry '28JUN24' is not a YYMMDD date"]),
    ("FOO:SPOT_PAIR:BTC-USDT", ["venue 'FOO' is unknown; known: BINANCE, BINANCE-FUTURES, DERIBIT"]),
    ("OKEX:SPOT_PAIR:BTC-USDT", ["venue 'OKEX' is unknown", "Tardis exchange of venue OKX"]),
    (
        "BINANCE-FUTURE:PERPETUAL:BTC-USDT",
        ["venue 'BINANCE-FUTURE' is unknown", "did you mean BINANCE-FUTURES"],
    ),
    ("DERIBIT:FUTURE:BTC-USD:231229", ["must be VENUE:TYPE:SYMBOL", "found 4"]),
    ("BTC-USD", ["must be VENUE:TYPE:SYMBOL", "found 1"]),
    ("", ["must be VENUE:TYPE:SYMBOL"]),
    ("DERIBIT:OPTION:BTC-USD-240628-60000-C", ["option type 'C' must be CALL or PUT"]),
    ("DERIBIT:OPTION:BTC-USD-240628-1D14-CALL", ["strike '1D14' is not a positive decimal number"]),
    ("DERIBIT:OPTION:BTC-USD-240628-0-CALL", ["strike '0' is not a positive decimal number"]),
    ("DERIBIT:OPTION:BTC-USD-240628-1E5-CALL", ["strike '1E5'"]),
    ("DERIBIT:OPTION:BTC-USD-50000-240628-CALL", ["expiry '50000' is not a YYMMDD date"]),  # strike first
    ("DERIBIT:FUTURE:BTC-USD", ["symbol 'BTC-USD' must be BASE-QUOTE-YYMMDD"]),
    ("DERIBIT:FUTURE:BTC-USD-240628-60000-CALL", ["must be BASE-QUOTE-YYMMDD for FUTURE", "fits OPTION"]),
    ("DERIBIT:OPTION:BTC-USD-240628", ["must be BASE-QUOTE-YYMMDD-STRIKE-CALL|PUT", "fits FUTURE"]),
    ("DERIBIT:PERP:BTC-USD-240628", ["symbol 'BTC-USD-240628' must be BASE-QUOTE for PERPETUAL"]),
    ("DERIBIT:OPTION_CHAIN:BTC-USD-240628", ["symbol 'BTC-USD-240628' must be BASE-QUOTE"]),
    ("BINANCE:SPOT_PAIR:BTC_X-USDT", ["base 'BTC_X' must be letters and digits"]),
    ("BINANCE:SPOT_PAIR:BTC-", ["quote '' must be letters and digits"]),
    ("BINANCE:SPOT_PAIR:-USDT", ["base '' must be letters and digits"]),
    ("BINANCE::BTC-USDT", ["type '' is not one of"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_KEYS)
def test_bad_keys_name_the_wrong_part(text, fragments):
    with pytest.raises(KeyFormatError) as caught:
        parse_key(text)
    message = str(caught.value)
    assert message.startswith(f"key {text!r}")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert isinstance(caught.value, UsageError)  # the CLI maps it to exit 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("DERIBIT", "FUTURE", "BTC", "USD"), "needs an expiry"),
        (("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28)), "needs a strike"),
        (("BINANCE", "SPOT_PAIR", "BTC", "USDT", D(2024, 6, 28)), "expiry"),
        (("DERIBIT", "FUTURE", "BTC", "USD", D(2024, 6, 28), "60000"), "strike"),
        (("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28), -5, "CALL"), "strike -5"),
        (("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28), float("nan"), "CALL"), "strike nan"),
        (("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28), True, "CALL"), "strike True"),
        (("DERIBIT", "OPTION", "BTC", "USD", D(2024, 6, 28), 1, "C"), "option type 'C'"),
        (("DERIBIT", "FUTURE", "BTC", "USD", D(1999, 12, 31)), "outside 2000-2099"),
        (("NOPE", "FUTURE", "BTC", "USD", D(2024, 6, 28)), "venue 'NOPE'"),
        (("DERIBIT", "SPOT", "BTC", "USD"), "type 'SPOT'"),
        (("DERIBIT", "PERPETUAL", "BTC-X", "USD"), "base 'BTC-X'"),
    ],
)
def test_format_key_rejects_inconsistent_parts(args, fragment):
    with pytest.raises(KeyFormatError) as caught:
        format_key(*args)
    assert fragment in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# Venues <-> Tardis exchanges


def test_venues_and_exchanges_map_one_to_one():
    expected = {
        "BINANCE": "binance",
        "BINANCE-FUTURES": "binance-futures",
        "DERIBIT": "deribit",
        "BYBIT": "bybit",
        "BYBIT-SPOT": "bybit-spot",
        "OKX": "okex",
        "OKX-SWAP": "okex-swap",
        "OKX-FUTURES": "okex-futures",
    }
    assert expected == VENUE_TO_EXCHANGE
    assert {v: k for k, v in expected.items()} == EXCHANGE_TO_VENUE
    for venue, exchange in expected.items():
        assert venue_for_exchange(exchange) == venue
        assert venue_for_exchange(exchange.upper()) == venue
        assert exchange_for_venue(venue) == exchange
        assert exchange_for_venue(venue.lower()) == exchange
    assert INSTRUMENT_TYPES == ("SPOT_PAIR", "PERPETUAL", "FUTURE", "OPTION", "OPTION_CHAIN")


def test_unknown_venues_and_exchanges_are_usage_errors_listing_the_known():
    with pytest.raises(
        UsageError, match="exchange 'upbit' is not supported; known: binance, binance-futures"
    ):
        venue_for_exchange("upbit")
    with pytest.raises(UsageError, match="venue 'KRAKEN' is unknown; known: BINANCE, BINANCE-FUTURES"):
        exchange_for_venue("KRAKEN")
    with pytest.raises(UsageError, match="Tardis exchange of venue OKX"):
        exchange_for_venue("okex")


def test_closest_keys_suggests_near_misses():
    known = [
        "BINANCE:SPOT_PAIR:BTC-USDT",
        "BINANCE:SPOT_PAIR:ETH-USDT",
        "BINANCE-FUTURES:PERPETUAL:BTC-USDT",
        "DERIBIT:PERPETUAL:BTC-USD",
        "DERIBIT:OPTION:BTC-USD-240628-60000-CALL",
        "DERIBIT:OPTION:BTC-USD-240628-70000-CALL",
    ]
    assert closest_keys("BINANCE:SPOT_PAIR:BTCUSDT", known)[0] == "BINANCE:SPOT_PAIR:BTC-USDT"
    assert closest_keys("deribit:perp:btc-usd", known)[0] == "DERIBIT:PERPETUAL:BTC-USD"
    assert closest_keys("DERIBIT:OPTION:BTC-USD-240628-65000-CALL", known, n=2) == [
        "DERIBIT:OPTION:BTC-USD-240628-60000-CALL",
        "DERIBIT:OPTION:BTC-USD-240628-70000-CALL",
    ]
    assert len(closest_keys("BINANCE:SPOT_PAIR:BTC-USDT", known, n=1)) == 1
    assert closest_keys("something else entirely", known) == []
    assert closest_keys("BINANCE:SPOT_PAIR:BTC-USDT", known, n=0) == []
    assert closest_keys("BINANCE:SPOT_PAIR:BTC-USDT", iter([])) == []


# ---------------------------------------------------------------------------------------------------------
# Tardis dataset symbols without metadata (SEED_FACTS 4.3, corrected)

# (exchange, dataset symbol, datasets.symbols[].type, key, settle, inverse, expiry instant)
SYMBOL_GOLDEN = [
    ("binance", "BTCUSDT", "spot", "BINANCE:SPOT_PAIR:BTC-USDT", "USDT", None, None),
    ("binance", "ETHBTC", "spot", "BINANCE:SPOT_PAIR:ETH-BTC", "BTC", None, None),  # was ETHBTC-USD
    ("binance", "USDTTRY", "spot", "BINANCE:SPOT_PAIR:USDT-TRY", "TRY", None, None),  # was inverted TRY-USDT
    ("binance", "BTCFDUSD", "spot", "BINANCE:SPOT_PAIR:BTC-FDUSD", "FDUSD", None, None),  # not BTCFD-USD
    ("binance", "BTCTUSD", "spot", "BINANCE:SPOT_PAIR:BTC-TUSD", "TUSD", None, None),
    ("binance", "BNBBUSD", "spot", "BINANCE:SPOT_PAIR:BNB-BUSD", "BUSD", None, None),
    ("binance", "ETHEUR", None, "BINANCE:SPOT_PAIR:ETH-EUR", "EUR", None, None),
    ("binance", "WBTCBTC", None, "BINANCE:SPOT_PAIR:WBTC-BTC", "BTC", None, None),
    ("binance", "1000SATSUSDT", "spot", "BINANCE:SPOT_PAIR:1000SATS-USDT", "USDT", None, None),
    ("binance", "JUPUSDT", "spot", "BINANCE:SPOT_PAIR:JUP-USDT", "USDT", None, None),  # not a leveraged token
    ("binance-futures", "BTCUSDT", "perpetual", "BINANCE-FUTURES:PERPETUAL:BTC-USDT", "USDT", False, None),
    ("binance-futures", "ETHUSDC", None, "BINANCE-FUTURES:PERPETUAL:ETH-USDC", "USDC", False, None),
    ("binance-futures", "BTCUSDT_240628", "future", "BINANCE-FUTURES:FUTURE:BTC-USDT-240628", "USDT", False,
     at8(2024, 6, 28)),
    ("binance-futures", "BTCUSD_PERP", "perpetual", "BINANCE-FUTURES:PERPETUAL:BTC-USD", "BTC", True, None),
    ("binance-futures", "BNBUSD_PERP", None, "BINANCE-FUTURES:PERPETUAL:BNB-USD", "BNB", True, None),
    ("binance-futures", "BTCUSD_240628", "future", "BINANCE-FUTURES:FUTURE:BTC-USD-240628", "BTC", True,
     at8(2024, 6, 28)),
    ("deribit", "BTC-PERPETUAL", "perpetual", "DERIBIT:PERPETUAL:BTC-USD", "BTC", True, None),  # was dropped
    ("deribit", "ETH_USDC-PERPETUAL", "perpetual", "DERIBIT:PERPETUAL:ETH-USDC", "USDC", False, None),
    ("deribit", "BTC-28JUN24", "future", "DERIBIT:FUTURE:BTC-USD-240628", "BTC", True, at8(2024, 6, 28)),
    ("deribit", "BTC-29DEC23", "future", "DERIBIT:FUTURE:BTC-USD-231229", "BTC", True, at8(2023, 12, 29)),
    ("deribit", "BTC-28JUN24-60000-C", "option", "DERIBIT:OPTION:BTC-USD-240628-60000-CALL", "BTC", True,
     at8(2024, 6, 28)),
    ("deribit", "BTC-29DEC23-50000-C", "option", "DERIBIT:OPTION:BTC-USD-231229-50000-CALL", "BTC", True,
     at8(2023, 12, 29)),
    ("deribit", "BTC-7NOV25-100000-P", "option", "DERIBIT:OPTION:BTC-USD-251107-100000-PUT", "BTC", True,
     at8(2025, 11, 7)),
    ("deribit", "BTC-9JUN20-9875-P", None, "DERIBIT:OPTION:BTC-USD-200609-9875-PUT", "BTC", True,
     at8(2020, 6, 9)),
    ("deribit", "XRP_USDC-29DEC23-1d14-C", "option", "DERIBIT:OPTION:XRP-USDC-231229-1.14-CALL", "USDC",
     False, at8(2023, 12, 29)),
    ("deribit", "AVAX_USDC-29MAY26-8D6-P", "option", "DERIBIT:OPTION:AVAX-USDC-260529-8.6-PUT", "USDC", False,
     at8(2026, 5, 29)),
    ("deribit", "BTCDVOL_USDC-30AUG23", "future", "DERIBIT:FUTURE:BTCDVOL-USDC-230830", "USDC", False,
     at8(2023, 8, 30)),
    ("deribit", "BTC_USDC", "spot", "DERIBIT:SPOT_PAIR:BTC-USDC", "USDC", None, None),
    ("bybit", "BTCUSDT", "perpetual", "BYBIT:PERPETUAL:BTC-USDT", "USDT", False, None),
    ("bybit", "BTCUSD", "perpetual", "BYBIT:PERPETUAL:BTC-USD", "BTC", True, None),  # was dropped (USD quote)
    ("bybit", "BTCUSDT-26DEC25", "future", "BYBIT:FUTURE:BTC-USDT-251226", "USDT", False, at8(2025, 12, 26)),
    ("bybit-spot", "BTCUSDT", "spot", "BYBIT-SPOT:SPOT_PAIR:BTC-USDT", "USDT", None, None),
    ("bybit-spot", "ETHUSDC", "spot", "BYBIT-SPOT:SPOT_PAIR:ETH-USDC", "USDC", None, None),
    ("okex", "BTC-USDT", "spot", "OKX:SPOT_PAIR:BTC-USDT", "USDT", None, None),
    ("okex", "ETH-BTC", "spot", "OKX:SPOT_PAIR:ETH-BTC", "BTC", None, None),
    ("okex-swap", "BTC-USDT-SWAP", "perpetual", "OKX-SWAP:PERPETUAL:BTC-USDT", "USDT", False, None),
    ("okex-swap", "BTC-USD-SWAP", "perpetual", "OKX-SWAP:PERPETUAL:BTC-USD", "BTC", True, None),
    ("okex-futures", "BTC-USDT-240628", "future", "OKX-FUTURES:FUTURE:BTC-USDT-240628", "USDT", False,
     at8(2024, 6, 28)),
    ("okex-futures", "BTC-USD-240628", "future", "OKX-FUTURES:FUTURE:BTC-USD-240628", "BTC", True,
     at8(2024, 6, 28)),  # was filtered out (USD quote)
]  # fmt: skip


@pytest.mark.parametrize(
    ("exchange", "symbol", "stype", "key", "settle", "inverse", "expiry_at"), SYMBOL_GOLDEN
)
def test_tardis_symbols_map_to_golden_keys(exchange, symbol, stype, key, settle, inverse, expiry_at):
    mapped = key_from_tardis(exchange, symbol, symbol_type=stype)
    assert mapped is not None
    assert str(mapped.key) == key
    assert (mapped.settle, mapped.inverse, mapped.expiry_at) == (settle, inverse, expiry_at)
    assert (mapped.tardis_exchange, mapped.tardis_symbol) == (exchange, symbol.upper())
    assert mapped.key == parse_key(key) and mapped.key.exchange == exchange
    if mapped.expiry_at is not None:  # the key's YYMMDD is the expiry's UTC date, never a day early
        assert mapped.key.expiry == mapped.expiry_at.astimezone(UTC).date()


def test_quotes_are_matched_at_the_end_longest_first():
    from mdth_engine.core.keys import _split_concat

    assert _split_concat("BTCFDUSD", ("USD", "FDUSD")) == ("BTC", "FDUSD")
    assert _split_concat("BTCTUSD", ("USD", "TUSD")) == ("BTC", "TUSD")
    assert _split_concat("USDTTRY", ("USDT", "TRY")) == (
        "USDT",
        "TRY",
    )  # USDT inside the text is not the quote
    assert _split_concat("USDT", ("USDT",)) is None  # no base left
    assert _split_concat("BTC-USDT", ("USDT",)) is None  # base must be letters and digits


@pytest.mark.parametrize(
    ("exchange", "symbol", "contract_type"),
    [
        ("binance", "BTCUSDT", None),
        ("binance-futures", "BTCUSDT", "linear_perpetual"),
        ("binance-futures", "BTCUSD_240628", "inverse_future"),
        ("deribit", "BTC-PERPETUAL", "inverse_perpetual"),
        ("deribit", "BTC-28JUN24-60000-C", "call_option"),
        ("deribit", "XRP_USDC-29DEC23-1d14-P", "put_option"),
        ("okex-futures", "BTC-USDT-240628", "linear_future"),
    ],
)
def test_contract_type_follows_the_tardis_vocabulary_without_metadata(exchange, symbol, contract_type):
    assert key_from_tardis(exchange, symbol).contract_type == contract_type


def test_lower_case_dataset_symbols_are_upper_cased():
    mapped = key_from_tardis("deribit", "xrp_usdc-29dec23-1d14-c")
    assert str(mapped.key) == "DERIBIT:OPTION:XRP-USDC-231229-1.14-CALL"
    assert mapped.tardis_symbol == "XRP_USDC-29DEC23-1D14-C"


@pytest.mark.parametrize(
    ("exchange", "symbol", "stype"),
    [
        # grouped ids hold many instruments (callers add OPTION_CHAIN rows themselves)
        *[(ex, grouped, None) for ex in EXCHANGE_TO_VENUE for grouped in ("SPOT", "FUTURES", "PERPETUALS")],
        ("deribit", "OPTIONS", None),
        ("deribit", "COMBOS", None),
        ("binance", "SPOT", "spot"),
        # combos
        ("deribit", "BTC-FS-28MAR25_PERP", "combo"),
        ("deribit", "BTC-FS-28MAR25_PERP", None),
        ("deribit", "BTC-28JUN24", "combo"),
        # Binance leveraged tokens
        ("binance", "BTCUPUSDT", "spot"),
        ("binance", "ETHDOWNUSDT", "spot"),
        ("binance", "BNBUPBUSD", None),
        ("binance", "ADADOWNUSDT", None),
        ("binance", "BULLUSDT", None),
        ("binance", "ETHBEARUSDT", None),
        # Bybit month-code and USDC-dated futures: expiry day / quote not certain from the symbol alone
        ("bybit", "BTCUSDM25", "future"),
        ("bybit", "BTCUSDZ24", None),
        ("bybit", "BTC-26DEC25", "future"),
        # ambiguous or unknown quotes: ADAEUR is ADA-EUR but BTCAEUR is BTC-AEUR
        ("binance", "ADAEUR", "spot"),
        ("binance", "BTCAEUR", "spot"),
        ("binance", "BTCUSD1", "spot"),
        ("binance", "USDT", "spot"),
        # the symbol's shape contradicts the Tardis type, or the type is not an instrument
        ("deribit", "BTC-28JUN24", "perpetual"),
        ("binance-futures", "BTCUSDT", "future"),
        ("okex-swap", "BTC-USDT-SWAP", "prediction"),
        # not parseable at all
        ("deribit", "BTC-31FEB24", "future"),
        ("okex-futures", "BTC-USDT-241340", "future"),
        ("okex", "BTCUSDT", "spot"),
        ("deribit", "", None),
    ],
)
def test_non_instruments_and_uncertain_symbols_map_to_none(exchange, symbol, stype):
    assert key_from_tardis(exchange, symbol, symbol_type=stype) is None


def test_unknown_exchange_is_a_usage_error():
    with pytest.raises(UsageError, match="exchange 'bitmex' is not supported"):
        key_from_tardis("bitmex", "XBTUSD")


# ---------------------------------------------------------------------------------------------------------
# Real /v1/instruments objects (reference/tardis/samples/api/nautilus_instrument_*.json, verbatim)

SAMPLES: dict[str, dict] = {
    "combo": {
        "id": "BTC-FS-28MAR25_PERP", "exchange": "deribit", "baseCurrency": "BTC", "quoteCurrency": "USD",
        "type": "combo", "active": True, "availableSince": "2024-03-29T00:00:00.000Z",
        "expiry": "2025-03-28T08:00:00.000Z", "priceIncrement": 0.5, "amountIncrement": 10, "minTradeAmount": 10,
        "makerFee": 0, "takerFee": 0, "inverse": True, "contractType": "spread", "contractMultiplier": 1,
        "underlyingIndex": "btc_usd", "listing": "2024-03-29T08:48:59.000Z", "datasetId": "BTC-FS-28MAR25_PERP",
    },
    "future": {
        "id": "BTC-14FEB25", "datasetId": "BTC-14FEB25", "exchange": "deribit", "baseCurrency": "BTC",
        "quoteCurrency": "USD", "type": "future", "active": True, "availableSince": "2025-01-31T00:00:00.000Z",
        "expiry": "2025-02-14T08:00:00.000Z", "priceIncrement": 2.5, "amountIncrement": 10, "minTradeAmount": 10,
        "makerFee": -0.0001, "takerFee": 0.0005, "inverse": True, "contractType": "inverse_future",
        "contractMultiplier": 1, "underlyingIndex": "btc_usd", "listing": "2025-01-31T08:00:21.000Z",
    },
    "option": {
        "id": "BTC-25APR25-200000-P", "datasetId": "BTC-25APR25-200000-P", "exchange": "deribit",
        "baseCurrency": "BTC", "quoteCurrency": "BTC", "type": "option", "active": True,
        "availableSince": "2025-01-31T00:00:00.000Z", "expiry": "2025-04-25T08:00:00.000Z",
        "priceIncrement": 0.0001, "amountIncrement": 0.1, "minTradeAmount": 0.1, "makerFee": 0.0003,
        "takerFee": 0.0003, "inverse": True, "contractType": "put_option", "contractMultiplier": 1,
        "strikePrice": 200000, "optionType": "put", "listing": "2025-01-31T20:38:40.000Z",
    },
    "perpetual": {
        "id": "XBTUSD", "datasetId": "XBTUSD", "exchange": "bitmex", "baseCurrency": "BTC",
        "quoteCurrency": "USD", "settlementCurrency": "BTC", "type": "perpetual", "active": True,
        "availableSince": "2019-03-30T00:00:00.000Z", "priceIncrement": 0.1, "amountIncrement": 100,
        "minTradeAmount": 100, "makerFee": 0.0005, "takerFee": 0.0005, "inverse": True,
        "contractType": "inverse_perpetual", "contractMultiplier": 1, "underlyingIndex": ".BXBT",
        "changes": [
            {"until": "2021-06-08T04:30:00.000Z", "amountIncrement": 1, "minTradeAmount": 1},
            {"until": "2024-07-31T04:00:00.000Z", "priceIncrement": 0.5},
            {"until": "2024-10-22T00:00:00.000Z", "makerFee": 0.0002, "takerFee": 0.00075},
        ],
    },
    "spot": {
        "id": "BTC_USDC", "exchange": "deribit", "baseCurrency": "BTC", "quoteCurrency": "USDC", "type": "spot",
        "active": True, "availableSince": "2023-04-24T00:00:00.000Z", "priceIncrement": 1,
        "amountIncrement": 0.0001, "minTradeAmount": 0.0001, "makerFee": 0, "takerFee": 0,
        "listing": "2023-04-24T13:00:02.000Z", "changes": [{"until": "2024-04-02T12:10:00.000Z", "priceIncrement": 0.01}],
        "datasetId": "BTC_USDC",
    },
}  # fmt: skip
SAMPLES_DIR = (
    pathlib.Path(__file__).parent / "data" / "tardis_samples" / "api"
)  # copies of the reference files


def meta(name: str, **changes) -> dict:
    info = copy.deepcopy(SAMPLES[name])
    info.update(changes)
    return info


@pytest.mark.parametrize("name", SAMPLES)
def test_embedded_samples_match_the_reference_files(name):
    assert json.loads((SAMPLES_DIR / f"nautilus_instrument_{name}.json").read_text()) == SAMPLES[name]


def test_real_deribit_future_metadata():
    mapped = key_from_tardis("deribit", "BTC-14FEB25", SAMPLES["future"], "future")
    assert str(mapped.key) == "DERIBIT:FUTURE:BTC-USD-250214"
    assert mapped.expiry_at == at8(2025, 2, 14)
    assert (mapped.settle, mapped.inverse, mapped.contract_type) == ("BTC", True, "inverse_future")
    assert (mapped.tardis_exchange, mapped.tardis_symbol) == ("deribit", "BTC-14FEB25")


def test_real_deribit_option_metadata_keeps_the_strike_currency_as_quote():
    # Tardis gives the premium currency (BTC) as quoteCurrency; the key names the USD strike currency.
    mapped = key_from_tardis("deribit", "BTC-25APR25-200000-P", SAMPLES["option"], "option")
    assert str(mapped.key) == "DERIBIT:OPTION:BTC-USD-250425-200000-PUT"
    assert mapped.expiry_at == at8(2025, 4, 25)
    assert (mapped.settle, mapped.inverse, mapped.contract_type) == ("BTC", True, "put_option")
    assert mapped.key.strike_value == 200000.0
    assert str(mapped.key.chain_key()) == "DERIBIT:OPTION_CHAIN:BTC-USD"


def test_real_deribit_spot_metadata():
    mapped = key_from_tardis("deribit", "BTC_USDC", SAMPLES["spot"], "spot")
    assert str(mapped.key) == "DERIBIT:SPOT_PAIR:BTC-USDC"
    assert (mapped.settle, mapped.inverse, mapped.expiry_at) == ("USDC", None, None)


def test_real_deribit_combo_metadata_is_not_an_instrument():
    assert key_from_tardis("deribit", "BTC-FS-28MAR25_PERP", SAMPLES["combo"]) is None
    assert key_from_tardis("deribit", "BTC-FS-28MAR25_PERP", SAMPLES["combo"], "perpetual") is None


def test_real_bitmex_metadata_is_an_unsupported_exchange():
    with pytest.raises(UsageError, match="'bitmex'"):
        key_from_tardis("bitmex", "XBTUSD", SAMPLES["perpetual"], "perpetual")


def test_metadata_settlement_currency_wins():
    # The BitMEX sample's contract facts, on a venue we support: settlementCurrency is used as given.
    info = meta("perpetual", id="BTCUSD", datasetId="BTCUSD", exchange="bybit", settlementCurrency="BTC")
    mapped = key_from_tardis("bybit", "BTCUSD", info, "perpetual")
    assert str(mapped.key) == "BYBIT:PERPETUAL:BTC-USD"
    assert (mapped.settle, mapped.inverse, mapped.contract_type) == ("BTC", True, "inverse_perpetual")
    info["settlementCurrency"] = "USDT"  # a quanto contract
    assert key_from_tardis("bybit", "BTCUSD", info).settle == "USDT"


# ---------------------------------------------------------------------------------------------------------
# Metadata wins over symbol parsing


def test_active_contract_without_available_to_keeps_its_expiry_day():
    # SEED 4.4: the original derived YYMMDD from availableTo-16h and keyed a live BTC-29DEC23 as ...-231228.
    live = meta("future", id="BTC-29DEC23", datasetId="BTC-29DEC23", expiry="2023-12-29T08:00:00.000Z")
    assert str(key_from_tardis("deribit", "BTC-29DEC23", live).key) == "DERIBIT:FUTURE:BTC-USD-231229"
    expired = dict(live, availableTo="2023-12-29T00:00:00.000Z", active=False)
    assert str(key_from_tardis("deribit", "BTC-29DEC23", expired).key) == "DERIBIT:FUTURE:BTC-USD-231229"
    no_expiry = {k: v for k, v in expired.items() if k != "expiry"}  # availableTo alone is never the expiry
    mapped = key_from_tardis("deribit", "BTC-29DEC23", no_expiry)
    assert str(mapped.key) == "DERIBIT:FUTURE:BTC-USD-231229" and mapped.expiry_at == at8(2023, 12, 29)


def test_metadata_expiry_instant_is_converted_to_utc():
    info = meta("future", id="BTC-28JUN24", datasetId="BTC-28JUN24", expiry="2024-06-28T10:00:00+02:00")
    mapped = key_from_tardis("deribit", "BTC-28JUN24", info)
    assert mapped.expiry_at == at8(2024, 6, 28) and mapped.expiry_at.tzinfo is not None
    assert str(mapped.key) == "DERIBIT:FUTURE:BTC-USD-240628"


def test_metadata_expiry_wins_over_the_symbol_date():
    info = meta("future", id="BTC-28JUN24", datasetId="BTC-28JUN24", expiry="2024-06-29T08:00:00.000Z")
    assert str(key_from_tardis("deribit", "BTC-28JUN24", info).key) == "DERIBIT:FUTURE:BTC-USD-240629"


def test_bybit_month_code_and_dated_futures_map_with_metadata():
    inverse = {
        "id": "BTCUSDM25", "datasetId": "BTCUSDM25", "exchange": "bybit", "baseCurrency": "BTC",
        "quoteCurrency": "USD", "type": "future", "expiry": "2025-06-27T08:00:00.000Z", "inverse": True,
        "contractType": "inverse_future",
    }  # fmt: skip
    mapped = key_from_tardis("bybit", "BTCUSDM25", inverse, "future")
    assert str(mapped.key) == "BYBIT:FUTURE:BTC-USD-250627"
    assert (mapped.settle, mapped.inverse, mapped.expiry_at) == ("BTC", True, at8(2025, 6, 27))
    dated = {
        "id": "BTC-26DEC25", "datasetId": "BTC-26DEC25", "exchange": "bybit", "baseCurrency": "BTC",
        "quoteCurrency": "USDC", "settlementCurrency": "USDC", "type": "future",
        "expiry": "2025-12-26T08:00:00.000Z", "inverse": False, "contractType": "linear_future",
    }  # fmt: skip
    mapped = key_from_tardis("bybit", "BTC-26DEC25", dated, "future")
    assert str(mapped.key) == "BYBIT:FUTURE:BTC-USDC-251226"
    assert (mapped.settle, mapped.inverse, mapped.expiry_at) == ("USDC", False, at8(2025, 12, 26))
    assert key_from_tardis("bybit", "BTCUSDM25", {k: v for k, v in inverse.items() if k != "expiry"}) is None


def test_metadata_resolves_quotes_the_symbol_cannot():
    def spot(symbol, base, quote):
        return {"id": symbol.lower(), "datasetId": symbol, "exchange": "binance", "baseCurrency": base,
                "quoteCurrency": quote, "type": "spot"}  # fmt: skip

    assert (
        str(key_from_tardis("binance", "ADAEUR", spot("ADAEUR", "ADA", "EUR")).key)
        == "BINANCE:SPOT_PAIR:ADA-EUR"
    )
    assert str(key_from_tardis("binance", "BTCAEUR", spot("BTCAEUR", "BTC", "AEUR")).key) == (
        "BINANCE:SPOT_PAIR:BTC-AEUR"
    )
    mapped = key_from_tardis("binance", "BTCUSD1", spot("BTCUSD1", "BTC", "USD1"))
    assert str(mapped.key) == "BINANCE:SPOT_PAIR:BTC-USD1" and mapped.settle == "USD1"
    # the exchange-native lower-case id and the dataset id both identify the metadata object
    assert key_from_tardis("binance", "btcusdt", spot("BTCUSDT", "BTC", "USDT")).tardis_symbol == "BTCUSDT"
    # leveraged tokens stay out even with metadata
    assert key_from_tardis("binance", "BTCUPUSDT", spot("BTCUPUSDT", "BTCUP", "USDT")) is None


def test_normalised_metadata_currencies_do_not_rename_a_concatenated_symbol():
    # Keys must stay unique and stable: if metadata called 1000PEPEUSDT's base "PEPE" the key would collide
    # with PEPEUSDT, so currencies that do not spell the symbol yield to the symbol's own letters.
    info = {"id": "1000PEPEUSDT", "datasetId": "1000PEPEUSDT", "exchange": "binance-futures",
            "baseCurrency": "PEPE", "quoteCurrency": "USDT", "type": "perpetual", "inverse": False}  # fmt: skip
    assert str(key_from_tardis("binance-futures", "1000PEPEUSDT", info).key) == (
        "BINANCE-FUTURES:PERPETUAL:1000PEPE-USDT"
    )


def test_metadata_type_wins_over_the_symbol_type_argument():
    assert key_from_tardis("deribit", "BTC-14FEB25", SAMPLES["future"], "spot").key.type == "FUTURE"


def test_metadata_inverse_flag_and_contract_type_are_passed_through():
    info = meta(
        "future", id="BTC-28JUN24", datasetId="BTC-28JUN24", inverse=False, contractType="quanto_future"
    )
    mapped = key_from_tardis("deribit", "BTC-28JUN24", info)
    assert (mapped.inverse, mapped.contract_type, mapped.settle) == (False, "quanto_future", "USD")
    no_flag = {k: v for k, v in SAMPLES["future"].items() if k not in ("inverse", "contractType")}
    mapped = key_from_tardis("deribit", "BTC-14FEB25", no_flag)
    assert (mapped.inverse, mapped.settle, mapped.contract_type) == (True, "BTC", "inverse_future")


def test_fractional_metadata_strike_matches_the_symbol_strike():
    info = {"id": "XRP_USDC-29DEC23-1d14-C", "datasetId": "XRP_USDC-29DEC23-1D14-C", "exchange": "deribit",
            "baseCurrency": "XRP", "quoteCurrency": "USDC", "type": "option", "strikePrice": 1.14,
            "optionType": "call", "expiry": "2023-12-29T08:00:00.000Z", "inverse": False}  # fmt: skip
    mapped = key_from_tardis("deribit", "XRP_USDC-29DEC23-1D14-C", info)
    assert mapped.key == key_from_tardis("deribit", "XRP_USDC-29DEC23-1d14-C").key
    assert str(mapped.key) == "DERIBIT:OPTION:XRP-USDC-231229-1.14-CALL"
    assert (mapped.settle, mapped.inverse, mapped.contract_type) == ("USDC", False, "call_option")


def test_metadata_for_another_symbol_is_refused():
    with pytest.raises(UsageError, match="'BTC-14FEB25' given for symbol 'BTC-28MAR25'"):
        key_from_tardis("deribit", "BTC-28MAR25", SAMPLES["future"])


def test_every_mapped_key_round_trips():
    mapped = [key_from_tardis(ex, sym, symbol_type=st) for ex, sym, st, *_ in SYMBOL_GOLDEN]
    mapped += [key_from_tardis("deribit", SAMPLES[n]["id"], SAMPLES[n]) for n in ("future", "option", "spot")]
    for item in mapped:
        key = item.key
        assert parse_key(str(key)) == key
        assert format_key(
            key.venue, key.type, key.base, key.quote, key.expiry, key.strike, key.option_type
        ) == (str(key))
