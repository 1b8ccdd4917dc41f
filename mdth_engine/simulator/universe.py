"""The simulated venues and their instruments over time: listings, expiries, tick changes, grouped symbols.

Spot pairs and perpetuals are listed once; futures and options follow expiry calendars (08:00 UTC), with
option strikes placed around the underlying price on their listing day, so the set changes day by day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import re
from collections.abc import Iterable

from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.simulator import calendar as cal
from mdth_engine.simulator.paths import open_price

ALL_BOOK = ("trades", "incremental_book_L2", "quotes", "book_snapshot_25", "book_snapshot_5")
DERIV = (*ALL_BOOK, "derivative_ticker", "liquidations")
LAST_EXPIRY = dt.date(2041, 1, 1)  # the price paths end in 2042


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """How busy and how shaped an instrument's market is, at full scale."""

    trades_per_day: float
    book_per_day: float
    notional_usd: float  # median taker order notional
    level_usd: float  # median resting notional per book level
    spread_ticks: float = 0.2  # mean extra spread beyond one tick
    spread_bps: float = 0.0  # minimum spread in basis points (options, illiquid pairs)
    latency_ms: float = 4.0  # collector latency (local - exchange), typical
    liq_per_day: float = 0.0
    id_style: str = "seq"  # seq | uuid
    level_density: float = 0.7  # chance a price level near the touch holds orders
    oi_usd: float = 0.0  # typical open interest in USD


@dataclasses.dataclass(frozen=True, slots=True)
class Instrument:
    exchange: str
    id: str  # exchange-native id (Binance: lower case)
    dataset_id: str  # CSV dataset symbol (upper case)
    type: str  # spot | perpetual | future | option
    base: str
    quote: str
    underlying: str  # price path driving it (BTC, ETH, SOL, XRP)
    listing_us: int
    profile: Profile
    price_increment: float
    amount_increment: float
    data_types: tuple[str, ...]
    contract_type: str | None = None
    inverse: bool | None = None
    multiplier: float | None = None
    amount_usd: float | None = None  # USD per amount unit for USD-denominated contracts; None = base units
    amount_base: float = 1.0  # base units per amount unit (OKX linear swaps count contracts)
    settlement: str | None = None
    expiry_us: int | None = None
    delist_us: int | None = None
    strike: float | None = None
    strike_text: str | None = None
    option_type: str | None = None
    expiration_type: str | None = None
    underlying_index: str | None = None
    funding: str = ""  # funding style of perpetuals: binance | deribit | bybit | okex
    maker_fee: float = 0.0002
    taker_fee: float = 0.0005
    changes: tuple[tuple[dt.date, tuple[tuple[str, float], ...]], ...] = ()

    @property
    def since(self) -> dt.date:
        return cal.us_day(self.listing_us)

    @property
    def end_us(self) -> int | None:
        return self.expiry_us if self.expiry_us is not None else self.delist_us

    @property
    def until(self) -> dt.date | None:
        """Exclusive end of data: the day after expiry or delisting."""
        end = self.end_us
        return None if end is None else cal.us_day(end - 1) + dt.timedelta(days=1)

    def live_on(self, day: dt.date) -> bool:
        start, end = day_start_us(day), day_start_us(day) + US_PER_DAY
        return self.listing_us < end and (self.end_us is None or self.end_us > start)

    def increments_on(self, day: dt.date) -> tuple[float, float]:
        """(priceIncrement, amountIncrement) in force on ``day`` (``changes`` hold values before ``until``)."""
        price, amount = self.price_increment, self.amount_increment
        for until, values in sorted(self.changes, key=lambda c: c[0], reverse=True):
            if day < until:
                price = dict(values).get("priceIncrement", price)
                amount = dict(values).get("amountIncrement", amount)
        return price, amount


@dataclasses.dataclass(frozen=True, slots=True)
class Grouped:
    id: str  # SPOT | PERPETUALS | FUTURES | OPTIONS
    type: str  # spot | perpetual | future | option
    data_types: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Exchange:
    id: str
    name: str
    since: dt.date
    channels: tuple[str, ...]
    grouped: tuple[Grouped, ...]
    incidents: tuple[tuple[str, str, str, str], ...]  # (from ISO, to ISO, status, details)


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _at(text: str) -> int:
    """Microseconds of an ISO instant (``2020-08-11T06:00``)."""
    value = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return int((value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() * 1_000_000)


EXCHANGES: dict[str, Exchange] = {
    "binance": Exchange(
        "binance",
        "Binance Spot",
        _d("2019-03-30"),
        ("trade", "aggTrade", "ticker", "depth", "depthSnapshot", "bookTicker", "recentTrades"),
        (Grouped("SPOT", "spot", ("trades",)),),
        (
            (
                "2023-03-24T12:00:00.000Z",
                "2023-03-24T13:45:00.000Z",
                "resolved",
                "Collector lost its connection to the spot streams; market data missing (the exchange kept trading).",
            ),
        ),
    ),
    "binance-futures": Exchange(
        "binance-futures",
        "Binance USDT Futures",
        _d("2019-11-17"),
        (
            "trade",
            "aggTrade",
            "ticker",
            "depth",
            "depthSnapshot",
            "markPrice",
            "bookTicker",
            "forceOrder",
            "openInterest",
            "recentTrades",
        ),
        (
            Grouped("PERPETUALS", "perpetual", ("trades", "derivative_ticker", "liquidations")),
            Grouped(
                "FUTURES", "future", ("trades", "incremental_book_L2", "derivative_ticker", "liquidations")
            ),
        ),
        (
            (
                "2021-05-19T13:00:00.000Z",
                "2021-05-19T13:40:00.000Z",
                "resolved",
                "Exchange API unavailable during extreme volatility; partial data loss.",
            ),
        ),
    ),
    "deribit": Exchange(
        "deribit",
        "Deribit",
        _d("2019-03-30"),
        (
            "book",
            "deribit_price_index",
            "trades",
            "ticker",
            "quote",
            "perpetual",
            "markprice.options",
            "estimated_expiration_price",
            "platform_state",
        ),
        (
            Grouped("PERPETUALS", "perpetual", ("trades", "derivative_ticker", "liquidations")),
            Grouped(
                "FUTURES", "future", ("trades", "incremental_book_L2", "derivative_ticker", "liquidations")
            ),
            Grouped("OPTIONS", "option", ("trades", "quotes", "options_chain", "liquidations")),
        ),
        (
            (
                "2022-06-07T04:00:00.000Z",
                "2022-06-07T04:40:00.000Z",
                "resolved",
                "Collector lost its connection during exchange maintenance.",
            ),
        ),
    ),
    "bybit": Exchange(
        "bybit",
        "Bybit Derivatives",
        _d("2019-11-07"),
        (
            "trade",
            "instrument_info",
            "orderBookL2_25",
            "insurance",
            "liquidation",
            "publicTrade",
            "tickers",
            "orderbook.50",
            "allLiquidation",
        ),
        (Grouped("PERPETUALS", "perpetual", ("trades", "derivative_ticker", "liquidations")),),
        (
            (
                "2024-02-20T00:00:00.000Z",
                "2024-02-21T00:00:00.000Z",
                "wontfix",
                "Data collection outage for the whole day; files for this day are empty.",
            ),
        ),
    ),
    "okex-swap": Exchange(
        "okex-swap",
        "OKX Swap",
        _d("2019-03-30"),
        (
            "trades",
            "books-l2-tbt",
            "bbo-tbt",
            "tickers",
            "open-interest",
            "mark-price",
            "funding-rate",
            "index-tickers",
            "liquidations",
        ),
        (Grouped("PERPETUALS", "perpetual", ("trades", "derivative_ticker", "liquidations")),),
        (
            (
                "2021-11-20T08:00:00.000Z",
                "2021-11-20T09:30:00.000Z",
                "resolved",
                "Collector restart; data missing for 90 minutes.",
            ),
        ),
    ),
}


def incident_windows_us(exchange: str) -> list[tuple[int, int]]:
    return [(_at(f[:-1]), _at(t[:-1])) for f, t, _, _ in EXCHANGES[exchange].incidents]


# ---------------------------------------------------------------------------------------------------------
# Static instruments (spot pairs, perpetuals)

_BINANCE_DT = (
    "trades",
    "incremental_book_L2",
    "quotes",
    "book_snapshot_25",
    "book_snapshot_5",
    "book_ticker",
)


def _binance_spot() -> list[Instrument]:
    def pair(
        sym: str,
        base: str,
        quote: str,
        listed: str,
        tick: float,
        step: float,
        tpd: float,
        notional: float,
        *,
        delist: str | None = None,
        changes=(),
    ) -> Instrument:
        return Instrument(
            "binance",
            sym.lower(),
            sym,
            "spot",
            base,
            quote,
            base,
            _at(listed),
            Profile(tpd, tpd * 2.2, notional, notional * 12, latency_ms=3.0, level_density=0.6),
            tick,
            step,
            _BINANCE_DT,
            delist_us=_at(delist) if delist else None,
            maker_fee=0.001,
            taker_fee=0.001,
            changes=changes,
        )

    return [
        pair(
            "BTCUSDT",
            "BTC",
            "USDT",
            "2019-03-30T00:00",
            0.01,
            0.00001,
            1_200_000,
            900,
            changes=((_d("2021-06-01"), (("amountIncrement", 0.000001),)),),
        ),
        pair("ETHUSDT", "ETH", "USDT", "2019-03-30T00:00", 0.01, 0.0001, 700_000, 700),
        pair(
            "ETHBTC",
            "ETH",
            "BTC",
            "2019-03-30T00:00",
            0.00001,
            0.0001,
            90_000,
            400,
            changes=((_d("2020-05-01"), (("priceIncrement", 0.000001),)),),
        ),
        pair("XRPUSDT", "XRP", "USDT", "2019-03-30T00:00", 0.0001, 1.0, 250_000, 300),
        pair(
            "SOLUSDT",
            "SOL",
            "USDT",
            "2020-08-11T06:00",
            0.01,
            0.001,
            300_000,
            400,
            changes=((_d("2021-02-01"), (("priceIncrement", 0.0001), ("amountIncrement", 0.01))),),
        ),
        pair(
            "BTCBUSD",
            "BTC",
            "BUSD",
            "2019-09-19T08:00",
            0.01,
            0.00001,
            300_000,
            800,
            delist="2023-12-15T03:00",
        ),
        pair("BTCFDUSD", "BTC", "FDUSD", "2023-08-16T08:00", 0.01, 0.00001, 800_000, 600),
    ]


def _perp(
    exchange: str,
    native: str,
    dataset: str,
    base: str,
    quote: str,
    listed: str,
    tick: float,
    step: float,
    profile: Profile,
    *,
    inverse: bool,
    funding: str,
    multiplier: float,
    amount_usd: float | None = None,
    amount_base: float = 1.0,
    changes=(),
    data_types: tuple[str, ...] = DERIV,
    index: str = "",
) -> Instrument:
    return Instrument(
        exchange,
        native,
        dataset,
        "perpetual",
        base,
        quote,
        base,
        _at(listed),
        profile,
        tick,
        step,
        data_types,
        contract_type="inverse_perpetual" if inverse else "linear_perpetual",
        inverse=inverse,
        multiplier=multiplier,
        amount_usd=amount_usd,
        amount_base=amount_base,
        settlement=base if inverse else quote,
        funding=funding,
        underlying_index=index or None,
        changes=changes,
    )


def _binance_futures_perps() -> list[Instrument]:
    dts = (*DERIV, "book_ticker")
    return [
        _perp(
            "binance-futures",
            "btcusdt",
            "BTCUSDT",
            "BTC",
            "USDT",
            "2019-11-17T00:00",
            0.1,
            0.001,
            Profile(
                2_000_000,
                4_400_000,
                1500,
                40_000,
                latency_ms=4.0,
                liq_per_day=1500,
                oi_usd=6e9,
                level_density=0.8,
            ),
            inverse=False,
            funding="binance",
            multiplier=1,
            data_types=dts,
            changes=((_d("2021-03-01"), (("priceIncrement", 0.01),)),),
        ),
        _perp(
            "binance-futures",
            "ethusdt",
            "ETHUSDT",
            "ETH",
            "USDT",
            "2019-11-27T08:00",
            0.01,
            0.001,
            Profile(1_400_000, 3_000_000, 1000, 25_000, latency_ms=4.0, liq_per_day=1200, oi_usd=3e9),
            inverse=False,
            funding="binance",
            multiplier=1,
            data_types=dts,
        ),
        _perp(
            "binance-futures",
            "solusdt",
            "SOLUSDT",
            "SOL",
            "USDT",
            "2020-09-14T08:00",
            0.01,
            1.0,
            Profile(400_000, 900_000, 600, 8_000, latency_ms=4.0, liq_per_day=500, oi_usd=6e8),
            inverse=False,
            funding="binance",
            multiplier=1,
            data_types=dts,
            changes=((_d("2021-06-01"), (("priceIncrement", 0.001),)),),
        ),
        _perp(
            "binance-futures",
            "btcusd_perp",
            "BTCUSD_PERP",
            "BTC",
            "USD",
            "2020-08-10T08:00",
            0.1,
            1.0,
            Profile(300_000, 700_000, 2000, 60_000, latency_ms=4.0, liq_per_day=300, oi_usd=5e8),
            inverse=True,
            funding="binance",
            multiplier=100,
            amount_usd=100,
            data_types=dts,
        ),
    ]


def _deribit_perps() -> list[Instrument]:
    return [
        _perp(
            "deribit",
            "BTC-PERPETUAL",
            "BTC-PERPETUAL",
            "BTC",
            "USD",
            "2019-03-30T00:00",
            0.5,
            10.0,
            Profile(
                150_000,
                1_500_000,
                3000,
                120_000,
                latency_ms=9.0,
                liq_per_day=120,
                oi_usd=9e8,
                level_density=0.85,
            ),
            inverse=True,
            funding="deribit",
            multiplier=10,
            amount_usd=1,
            index="btc_usd",
            data_types=(*DERIV, "book_ticker"),
        ),
        _perp(
            "deribit",
            "ETH-PERPETUAL",
            "ETH-PERPETUAL",
            "ETH",
            "USD",
            "2019-03-30T00:00",
            0.05,
            1.0,
            Profile(80_000, 900_000, 2000, 60_000, latency_ms=9.0, liq_per_day=80, oi_usd=4e8),
            inverse=True,
            funding="deribit",
            multiplier=1,
            amount_usd=1,
            index="eth_usd",
            data_types=(*DERIV, "book_ticker"),
        ),
        _perp(
            "deribit",
            "ETH_USDC-PERPETUAL",
            "ETH_USDC-PERPETUAL",
            "ETH",
            "USDC",
            "2022-04-26T08:00",
            0.1,
            0.001,
            Profile(10_000, 200_000, 800, 15_000, latency_ms=9.0, liq_per_day=10, oi_usd=3e7),
            inverse=False,
            funding="deribit",
            multiplier=1,
            index="eth_usdc",
        ),
    ]


def _bybit_perps() -> list[Instrument]:
    return [
        _perp(
            "bybit",
            "BTCUSD",
            "BTCUSD",
            "BTC",
            "USD",
            "2019-11-07T00:00",
            0.5,
            1.0,
            Profile(
                200_000, 900_000, 2500, 80_000, latency_ms=12.0, liq_per_day=200, id_style="uuid", oi_usd=6e8
            ),
            inverse=True,
            funding="bybit",
            multiplier=1,
            amount_usd=1,
        ),
        _perp(
            "bybit",
            "BTCUSDT",
            "BTCUSDT",
            "BTC",
            "USDT",
            "2020-03-25T08:00",
            0.1,
            0.001,
            Profile(
                600_000,
                1_800_000,
                1500,
                40_000,
                latency_ms=12.0,
                liq_per_day=600,
                id_style="uuid",
                oi_usd=2e9,
            ),
            inverse=False,
            funding="bybit",
            multiplier=1,
            changes=((_d("2022-11-01"), (("priceIncrement", 0.5),)),),
        ),
        _perp(
            "bybit",
            "ETHUSDT",
            "ETHUSDT",
            "ETH",
            "USDT",
            "2020-10-21T08:00",
            0.01,
            0.01,
            Profile(
                300_000,
                1_000_000,
                1000,
                20_000,
                latency_ms=12.0,
                liq_per_day=300,
                id_style="uuid",
                oi_usd=1e9,
            ),
            inverse=False,
            funding="bybit",
            multiplier=1,
            changes=((_d("2022-11-01"), (("priceIncrement", 0.05),)),),
        ),
    ]


def _okex_perps() -> list[Instrument]:
    return [
        _perp(
            "okex-swap",
            "BTC-USD-SWAP",
            "BTC-USD-SWAP",
            "BTC",
            "USD",
            "2019-03-30T00:00",
            0.1,
            1.0,
            Profile(100_000, 800_000, 2500, 80_000, latency_ms=15.0, liq_per_day=150, oi_usd=4e8),
            inverse=True,
            funding="okex",
            multiplier=100,
            amount_usd=100,
        ),
        _perp(
            "okex-swap",
            "BTC-USDT-SWAP",
            "BTC-USDT-SWAP",
            "BTC",
            "USDT",
            "2019-12-11T08:00",
            0.1,
            1.0,
            Profile(400_000, 1_500_000, 1500, 40_000, latency_ms=15.0, liq_per_day=400, oi_usd=1.5e9),
            inverse=False,
            funding="okex",
            multiplier=0.01,
            amount_base=0.01,
        ),
        _perp(
            "okex-swap",
            "ETH-USDT-SWAP",
            "ETH-USDT-SWAP",
            "ETH",
            "USDT",
            "2019-12-11T08:00",
            0.01,
            1.0,
            Profile(250_000, 1_000_000, 1000, 20_000, latency_ms=15.0, liq_per_day=250, oi_usd=8e8),
            inverse=False,
            funding="okex",
            multiplier=0.1,
            amount_base=0.1,
        ),
    ]


@functools.cache
def static_instruments(exchange: str) -> tuple[Instrument, ...]:
    builders = {
        "binance": _binance_spot,
        "binance-futures": _binance_futures_perps,
        "deribit": _deribit_perps,
        "bybit": _bybit_perps,
        "okex-swap": _okex_perps,
    }
    return tuple(builders[exchange]())


# ---------------------------------------------------------------------------------------------------------
# Dated instruments: futures and options, enumerated by expiry


@dataclasses.dataclass(frozen=True, slots=True)
class Expiry:
    day: dt.date
    kind: str  # daily | weekly | month | quarter
    listing_us: int

    @property
    def us(self) -> int:
        return cal.expiry_us(self.day)


_KIND_RANK = {"daily": 0, "weekly": 1, "month": 2, "quarter": 3}


def _expiries(
    first: dt.date, last: dt.date, rules: dict[str, int], daily_since: dt.date | None, series_since: dt.date
) -> list[Expiry]:
    """Expiries in ``[first, last]`` (by expiry day) for the kinds in ``rules`` (kind -> days listed ahead)."""
    found: dict[dt.date, Expiry] = {}

    def add(day: dt.date, kind: str) -> None:
        listing = max(
            day_start_us(day - dt.timedelta(days=rules[kind])) + cal.EXPIRY_HOUR_US,
            day_start_us(series_since),
        )
        prev = found.get(day)
        if prev is None or _KIND_RANK[kind] > _KIND_RANK[prev.kind]:
            listing = min(listing, prev.listing_us) if prev else listing
            found[day] = Expiry(day, kind, listing)
        else:
            found[day] = dataclasses.replace(prev, listing_us=min(prev.listing_us, listing))

    if "daily" in rules and daily_since is not None:
        day = max(first, daily_since)
        while day <= last:
            add(day, "daily")
            day += dt.timedelta(days=1)
    if "weekly" in rules:
        for day in cal.fridays_between(first, last):
            add(day, "weekly")
    if "month" in rules:
        for day in cal.month_ends_between(first, last):
            add(day, "month")
    if "quarter" in rules:
        for day in cal.month_ends_between(first, last, (3, 6, 9, 12)):
            add(day, "quarter")
    # An expiry exists only once its series has started listing.
    return sorted(
        (e for e in found.values() if e.listing_us < e.us and e.day > series_since), key=lambda e: e.day
    )


_OPTION_RULES = {"daily": 3, "weekly": 28, "month": 91, "quarter": 273}
_OPTION_STRIKES = {"daily": (4, 0.012), "weekly": (6, 0.025), "month": (8, 0.05), "quarter": (10, 0.09)}
_DERIBIT_FUTURE_RULES = {"month": 61, "quarter": 273}
_BINANCE_QUARTER_RULES = {"quarter": 182}
_OPTION_UNDERLYINGS = {
    # underlying -> (dataset prefix, quote, inverse, series start, daily options since, kinds)
    "BTC": ("BTC", "BTC", True, _d("2019-03-30"), _d("2023-01-01"), ("daily", "weekly", "month", "quarter")),
    "ETH": ("ETH", "ETH", True, _d("2019-03-30"), _d("2023-01-01"), ("daily", "weekly", "month", "quarter")),
    "XRP": ("XRP_USDC", "USDC", False, _d("2024-03-01"), None, ("month",)),
}
_MAX_LIST_AHEAD = dt.timedelta(days=280)


def _nice_step(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for mult in (1, 2, 2.5, 5, 10):
        step = mult * 10.0**exp
        if step >= value:
            return float(f"{step:.12g}")
    return 10.0 ** (exp + 1)


def _strike_text(strike: float, linear: bool) -> str:
    text = f"{strike:.10f}".rstrip("0").rstrip(".")
    return text.replace(".", "d") if linear else text


@functools.lru_cache(maxsize=4096)
def _option_strikes(underlying: str, listing_day: dt.date, kind: str) -> tuple[float, ...]:
    n, pct = _OPTION_STRIKES[kind]
    if underlying == "XRP":
        n = 5
    spot = open_price(underlying, listing_day)
    step = _nice_step(spot * pct)
    center = round(spot / step) * step
    strikes = [round(center + j * step, 10) for j in range(-n, n + 1)]
    return tuple(s for s in strikes if s > 0)


def _option_profile(underlying: str, kind: str, moneyness: float) -> Profile:
    weight = math.exp(-0.5 * moneyness * moneyness)
    tpd = {"daily": 60, "weekly": 40, "month": 30, "quarter": 20}[kind] * weight + 1
    return Profile(
        tpd,
        900 * (0.3 + weight),
        20_000,
        80_000,
        spread_ticks=2.0,
        spread_bps=300,
        latency_ms=9.0,
        level_density=0.35,
    )


def _deribit_options_for(underlying: str, expiry: Expiry) -> list[Instrument]:
    prefix, quote, inverse, _, _, _ = _OPTION_UNDERLYINGS[underlying]
    listing_day = cal.us_day(expiry.listing_us)
    code = cal.deribit_code(expiry.day)
    spot = open_price(underlying, listing_day)
    years = max((expiry.us - expiry.listing_us) / (365 * US_PER_DAY), 1 / 365)
    out = []
    for strike in _option_strikes(underlying, listing_day, expiry.kind):
        text = _strike_text(strike, not inverse)
        m = math.log(strike / spot) / (0.7 * math.sqrt(years))
        for opt, letter in (("call", "C"), ("put", "P")):
            native = f"{prefix}-{code}-{text}-{letter}"
            out.append(
                Instrument(
                    "deribit",
                    native,
                    native.upper(),
                    "option",
                    underlying,
                    quote if inverse else "USDC",
                    underlying,
                    expiry.listing_us,
                    _option_profile(underlying, expiry.kind, m),
                    0.0005 if inverse else 0.0001,
                    0.1 if inverse else 1.0,
                    ("trades", "incremental_book_L2", "quotes", "book_snapshot_25", "book_snapshot_5"),
                    contract_type=f"{opt}_option",
                    inverse=inverse,
                    multiplier=1.0,
                    settlement=underlying if inverse else "USDC",
                    expiry_us=expiry.us,
                    strike=strike,
                    strike_text=text,
                    option_type=opt,
                    expiration_type=expiry.kind if expiry.kind != "month" else "month",
                    maker_fee=0.0003,
                    taker_fee=0.0003,
                )
            )
    return out


def _deribit_future(underlying: str, expiry: Expiry) -> Instrument:
    name = f"{underlying}-{cal.deribit_code(expiry.day)}"
    tick = 2.5 if underlying == "BTC" else 0.25
    weight = 1.0 if expiry.kind == "quarter" else 0.5
    return Instrument(
        "deribit",
        name,
        name,
        "future",
        underlying,
        "USD",
        underlying,
        expiry.listing_us,
        Profile(
            8_000 * weight, 120_000 * weight, 3000, 60_000, latency_ms=9.0, liq_per_day=4, oi_usd=1e8 * weight
        ),
        tick,
        10.0 if underlying == "BTC" else 1.0,
        DERIV,
        contract_type="inverse_future",
        inverse=True,
        multiplier=10 if underlying == "BTC" else 1,
        amount_usd=1,
        settlement=underlying,
        expiry_us=expiry.us,
        expiration_type=expiry.kind,
        underlying_index=f"{underlying.lower()}_usd",
        changes=((_d("2021-01-01"), (("priceIncrement", 0.5 if underlying == "BTC" else 0.05),)),),
    )


def _binance_quarterly(underlying: str, expiry: Expiry) -> Instrument:
    name = f"{underlying}USDT_{cal.yymmdd(expiry.day)}"
    return Instrument(
        "binance-futures",
        name.lower(),
        name,
        "future",
        underlying,
        "USDT",
        underlying,
        expiry.listing_us,
        Profile(60_000, 300_000, 1500, 20_000, latency_ms=4.0, liq_per_day=30, oi_usd=2e8),
        0.1 if underlying == "BTC" else 0.01,
        0.001,
        DERIV,
        contract_type="linear_future",
        inverse=False,
        multiplier=1,
        settlement="USDT",
        expiry_us=expiry.us,
        expiration_type="quarter",
    )


@functools.lru_cache(maxsize=512)
def _dated_expiring(exchange: str, first: dt.date, last: dt.date) -> tuple[Instrument, ...]:
    """Futures and options of ``exchange`` whose expiry day is in ``[first, last]``."""
    out: list[Instrument] = []
    if exchange == "deribit":
        for und in ("BTC", "ETH"):
            for e in _expiries(first, last, _DERIBIT_FUTURE_RULES, None, _d("2019-03-30")):
                out.append(_deribit_future(und, e))
        for und, (_, _, _, since, daily, kinds) in _OPTION_UNDERLYINGS.items():
            rules = {k: _OPTION_RULES[k] for k in kinds}
            for e in _expiries(first, last, rules, daily, since):
                out.extend(_deribit_options_for(und, e))
    elif exchange == "binance-futures":
        for und in ("BTC", "ETH"):
            for e in _expiries(
                max(first, _d("2021-03-26")), last, _BINANCE_QUARTER_RULES, None, _d("2020-09-01")
            ):
                out.append(_binance_quarterly(und, e))
    return tuple(out)


def instruments_live(exchange: str, day: dt.date) -> list[Instrument]:
    """Every instrument of ``exchange`` with data on ``day``, in a fixed order."""
    out = [i for i in static_instruments(exchange) if i.live_on(day)]
    dated = _dated_expiring(exchange, day, day + _MAX_LIST_AHEAD)
    out.extend(i for i in dated if i.live_on(day))
    return out


def instruments_listed(exchange: str, until: dt.date) -> list[Instrument]:
    """Every instrument of ``exchange`` listed before ``until`` (exclusive), expired or not."""
    since = EXCHANGES[exchange].since
    out = [i for i in static_instruments(exchange) if i.since < until]
    out.extend(i for i in _dated_expiring(exchange, since, until + _MAX_LIST_AHEAD) if i.since < until)
    return out


_DERIBIT_DATED = re.compile(r"^([A-Z]+(?:_USDC)?)-(\d{1,2})([A-Z]{3})(\d{2})(?:-|$)")
_BINANCE_QUARTER = re.compile(r"^[A-Z]+USDT_(\d{6})$")


def find_instrument(exchange: str, dataset_id: str) -> Instrument | None:
    """The instrument with this dataset symbol (any date), or ``None``."""
    symbol = dataset_id.upper()
    for inst in static_instruments(exchange):
        if inst.dataset_id == symbol:
            return inst
    expiry: dt.date | None = None
    if exchange == "deribit" and (m := _DERIBIT_DATED.match(symbol)):
        try:
            expiry = dt.date(2000 + int(m.group(4)), cal.MONTHS.index(m.group(3)) + 1, int(m.group(2)))
        except ValueError:
            return None
    elif exchange == "binance-futures" and (m := _BINANCE_QUARTER.match(symbol)):
        try:
            expiry = dt.datetime.strptime(m.group(1), "%y%m%d").date()
        except ValueError:
            return None
    if expiry is None or not (EXCHANGES[exchange].since < expiry < LAST_EXPIRY):
        return None
    for inst in _dated_expiring(exchange, expiry, expiry):
        if inst.dataset_id == symbol:
            return inst
    return None


def grouped_symbol(exchange: str, symbol: str) -> Grouped | None:
    for g in EXCHANGES[exchange].grouped:
        if g.id == symbol.upper():
            return g
    return None


def grouped_members(exchange: str, group: Grouped, day: dt.date) -> list[Instrument]:
    """Instruments of the group's type with data on ``day`` or in the last minutes of the day before."""
    seen: dict[str, Instrument] = {}
    for d in (day - dt.timedelta(days=1), day):
        for inst in instruments_live(exchange, d):
            if inst.type == group.type:
                seen.setdefault(inst.dataset_id, inst)
    return list(seen.values())


def iter_exchanges() -> Iterable[Exchange]:
    return EXCHANGES.values()
