"""Canonical instrument keys ``VENUE:TYPE:SYMBOL`` (DESIGN.md section 3) and the Tardis symbol -> key mapping.

Every layer names instruments with these keys (lake file names, the instrument master, CLI, console), so the
grammar lives here once: parsing and formatting round-trip, and a key is validated whenever one is built.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from mdth_engine.core.errors import KeyFormatError, UsageError

__all__ = [
    "EXCHANGE_TO_VENUE",
    "EXPIRY_TIME_UTC",
    "GROUPED_SYMBOLS",
    "INSTRUMENT_TYPES",
    "TARDIS_TYPES",
    "VENUE_TO_EXCHANGE",
    "InstrumentKey",
    "TardisInstrument",
    "closest_keys",
    "exchange_for_venue",
    "format_key",
    "key_from_tardis",
    "parse_key",
    "venue_for_exchange",
]

VENUE_TO_EXCHANGE: dict[str, str] = {
    "BINANCE": "binance",
    "BINANCE-FUTURES": "binance-futures",
    "DERIBIT": "deribit",
    "BYBIT": "bybit",
    "BYBIT-SPOT": "bybit-spot",
    "OKX": "okex",
    "OKX-SWAP": "okex-swap",
    "OKX-FUTURES": "okex-futures",
}
EXCHANGE_TO_VENUE: dict[str, str] = {exchange: venue for venue, exchange in VENUE_TO_EXCHANGE.items()}

INSTRUMENT_TYPES: tuple[str, ...] = ("SPOT_PAIR", "PERPETUAL", "FUTURE", "OPTION", "OPTION_CHAIN")
_TYPE_ALIASES = {"PERP": "PERPETUAL"}
_DATED_TYPES = frozenset({"FUTURE", "OPTION"})
_SHAPES = {
    "SPOT_PAIR": "BASE-QUOTE",
    "PERPETUAL": "BASE-QUOTE",
    "OPTION_CHAIN": "BASE-QUOTE",
    "FUTURE": "BASE-QUOTE-YYMMDD",
    "OPTION": "BASE-QUOTE-YYMMDD-STRIKE-CALL|PUT",
}

# Tardis `datasets.symbols[].type` / metadata `type` -> instrument type; combo and prediction are not instruments.
TARDIS_TYPES: dict[str, str] = {
    "spot": "SPOT_PAIR",
    "perpetual": "PERPETUAL",
    "future": "FUTURE",
    "option": "OPTION",
}
# Tardis dataset ids that group many instruments in one file.
GROUPED_SYMBOLS = frozenset({"SPOT", "FUTURES", "PERPETUALS", "OPTIONS", "COMBOS"})
# Crypto futures and options expire at 08:00 UTC on the date their symbol names (used without metadata).
EXPIRY_TIME_UTC = dt.time(8, 0, tzinfo=dt.UTC)

_ASSET = re.compile(r"[A-Z0-9]+")
_YYMMDD = re.compile(r"\d{6}")
_STRIKE_TEXT = re.compile(r"\d+(\.\d+)?")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


# ---------------------------------------------------------------------------------------------------------
# Validation of the parts of a key (each raises KeyFormatError naming the part)


def _unknown_venue(venue: object) -> str:
    """The one-line reason for an unknown venue, with a hint when it is a Tardis id or a near miss."""
    message = f"venue {venue!r} is unknown; known: {', '.join(VENUE_TO_EXCHANGE)}"
    text = str(venue).strip()
    if text.lower() in EXCHANGE_TO_VENUE:
        return (
            f"{message} ('{text.lower()}' is the Tardis exchange of venue {EXCHANGE_TO_VENUE[text.lower()]})"
        )
    near = difflib.get_close_matches(text.upper(), list(VENUE_TO_EXCHANGE), n=1)
    return f"{message} (did you mean {near[0]}?)" if near else message


def _norm_venue(venue: object) -> str:
    text = venue.strip().upper() if isinstance(venue, str) else ""
    if text not in VENUE_TO_EXCHANGE:
        raise KeyFormatError(_unknown_venue(venue))
    return text


def _norm_type(itype: object) -> str:
    text = itype.strip().upper() if isinstance(itype, str) else ""
    text = _TYPE_ALIASES.get(text, text)
    if text not in INSTRUMENT_TYPES:
        raise KeyFormatError(
            f"type {itype!r} is not one of {', '.join(INSTRUMENT_TYPES)} (PERP is accepted for PERPETUAL)"
        )
    return text


def _norm_asset(part: str, value: object) -> str:
    text = value.strip().upper() if isinstance(value, str) else ""
    if not _ASSET.fullmatch(text):
        raise KeyFormatError(f"{part} {value!r} must be letters and digits (A-Z, 0-9)")
    return text


def _norm_expiry(value: object) -> dt.date:
    """A date (datetimes become their UTC date) or ``YYMMDD`` text."""
    if isinstance(value, dt.datetime):
        value = (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    elif isinstance(value, str):
        text = value.strip()
        try:
            if not _YYMMDD.fullmatch(text):
                raise ValueError
            value = dt.date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
        except ValueError:
            raise KeyFormatError(f"expiry {value!r} is not a YYMMDD date") from None
    if not isinstance(value, dt.date):
        raise KeyFormatError(f"expiry {value!r} is not a date")
    if not 2000 <= value.year <= 2099:
        raise KeyFormatError(f"expiry {value.isoformat()} is outside 2000-2099 (YYMMDD cannot hold it)")
    return value


def _norm_strike(value: object) -> str:
    """Canonical decimal text: no exponent, no leading zeros, no trailing fractional zeros ("60000", "1.14")."""
    if isinstance(value, bool):
        raise KeyFormatError(f"strike {value!r} is not a positive decimal number")
    if isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else ""
    elif isinstance(value, str):
        text = value.strip()
        if not _STRIKE_TEXT.fullmatch(text):
            raise KeyFormatError(f"strike {value!r} is not a positive decimal number (use '.' for decimals)")
    else:
        text = ""
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise KeyFormatError(f"strike {value!r} is not a positive decimal number") from None
    if not number.is_finite() or number <= 0:
        raise KeyFormatError(f"strike {value!r} is not a positive decimal number")
    return format(number.normalize(), "f")


def _norm_option_type(value: object) -> str:
    text = value.strip().upper() if isinstance(value, str) else ""
    if text not in ("CALL", "PUT"):
        raise KeyFormatError(f"option type {value!r} must be CALL or PUT")
    return text


# ---------------------------------------------------------------------------------------------------------
# The key


@dataclass(frozen=True, slots=True, order=True)
class InstrumentKey:
    """One instrument (or option chain), validated and normalised on construction; ``str()`` is the key."""

    venue: str
    type: str
    base: str
    quote: str
    expiry: dt.date | None = None
    strike: str | None = None
    option_type: str | None = None

    def __post_init__(self) -> None:
        itype = _norm_type(self.type)
        values: dict[str, Any] = {
            "venue": _norm_venue(self.venue),
            "type": itype,
            "base": _norm_asset("base", self.base),
            "quote": _norm_asset("quote", self.quote),
        }
        if itype in _DATED_TYPES:
            if self.expiry is None:
                raise KeyFormatError(f"a {itype} needs an expiry (YYMMDD)")
            values["expiry"] = _norm_expiry(self.expiry)
        elif self.expiry is not None:
            raise KeyFormatError(f"expiry {self.expiry!r} given for a {itype}, which has none")
        if itype == "OPTION":
            if self.strike is None or self.option_type is None:
                raise KeyFormatError("an OPTION needs a strike and an option type (CALL or PUT)")
            values["strike"] = _norm_strike(self.strike)
            values["option_type"] = _norm_option_type(self.option_type)
        elif self.strike is not None or self.option_type is not None:
            raise KeyFormatError(f"strike/option type given for a {itype}; only an OPTION has them")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def symbol(self) -> str:
        parts = [self.base, self.quote]
        if self.expiry is not None:
            parts.append(self.expiry.strftime("%y%m%d"))
        if self.strike is not None and self.option_type is not None:
            parts += [self.strike, self.option_type]
        return "-".join(parts)

    @property
    def exchange(self) -> str:
        """The Tardis exchange id of the venue."""
        return VENUE_TO_EXCHANGE[self.venue]

    @property
    def underlying(self) -> str:
        return f"{self.base}-{self.quote}"

    @property
    def strike_value(self) -> float | None:
        return float(self.strike) if self.strike is not None else None

    def chain_key(self) -> InstrumentKey:
        """The OPTION_CHAIN key whose grouped file holds this option's chain rows."""
        if self.type not in ("OPTION", "OPTION_CHAIN"):
            raise UsageError(f"{self} is a {self.type}; only options belong to an option chain")
        return InstrumentKey(self.venue, "OPTION_CHAIN", self.base, self.quote)

    def __str__(self) -> str:
        return f"{self.venue}:{self.type}:{self.symbol}"


def _symbol_parts(itype: str, symbol: str) -> dict[str, str]:
    shape = _SHAPES[itype]
    want = shape.count("-") + 1
    pieces = symbol.strip().split("-")
    if len(pieces) != want:
        others = [t for t, s in _SHAPES.items() if s.count("-") + 1 == len(pieces)]
        hint = f" (that shape fits {' or '.join(others)})" if others else ""
        raise KeyFormatError(f"symbol {symbol!r} must be {shape} for {itype}{hint}")
    names = ("base", "quote", "expiry", "strike", "option_type")
    return dict(zip(names, pieces, strict=False))


def parse_key(text: str) -> InstrumentKey:
    """A key string as an ``InstrumentKey``; case-insensitive, ``PERP`` accepted; errors name the wrong part."""
    if not isinstance(text, str):
        raise KeyFormatError(f"key {text!r} must be text VENUE:TYPE:SYMBOL")
    parts = text.strip().upper().split(":")
    if len(parts) != 3:
        raise KeyFormatError(
            f"key {text!r} must be VENUE:TYPE:SYMBOL (3 parts separated by ':'), found {len(parts)}"
        )
    venue, itype, symbol = parts
    try:
        venue = _norm_venue(venue)
        itype = _norm_type(itype)
        return InstrumentKey(venue, itype, **_symbol_parts(itype, symbol))  # type: ignore[arg-type]
    except KeyFormatError as exc:
        raise KeyFormatError(f"key {text!r}: {exc}") from None


def format_key(
    venue: str,
    type: str,
    base: str,
    quote: str,
    expiry: dt.date | str | None = None,
    strike: str | float | int | Decimal | None = None,
    option_type: str | None = None,
) -> str:
    """The canonical key text for these parts (validated; raises KeyFormatError naming the wrong part)."""
    return str(InstrumentKey(venue, type, base, quote, expiry, strike, option_type))  # type: ignore[arg-type]


def venue_for_exchange(exchange: str) -> str:
    """The venue of a Tardis exchange id (``okex`` -> ``OKX``)."""
    name = exchange.strip().lower() if isinstance(exchange, str) else ""
    if name not in EXCHANGE_TO_VENUE:
        raise UsageError(f"exchange {exchange!r} is not supported; known: {', '.join(EXCHANGE_TO_VENUE)}")
    return EXCHANGE_TO_VENUE[name]


def exchange_for_venue(venue: str) -> str:
    """The Tardis exchange id of a venue (case-insensitive: ``okx`` -> ``okex``)."""
    text = venue.strip().upper() if isinstance(venue, str) else ""
    if text not in VENUE_TO_EXCHANGE:
        raise UsageError(_unknown_venue(venue))
    return VENUE_TO_EXCHANGE[text]


def closest_keys(text: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` candidates most like ``text`` (case-insensitive, PERP read as PERPETUAL), for "did you mean"."""
    if n <= 0:
        return []
    pool: dict[str, str] = {}
    for candidate in candidates:
        pool.setdefault(candidate.upper(), candidate)
    probe = ":".join(
        _TYPE_ALIASES.get(p, p) if i == 1 else p for i, p in enumerate(text.strip().upper().split(":"))
    )
    return [pool[m] for m in difflib.get_close_matches(probe, list(pool), n=n, cutoff=0.6)]


# ---------------------------------------------------------------------------------------------------------
# Tardis symbols and metadata -> keys


@dataclass(frozen=True)
class TardisInstrument:
    """A Tardis dataset symbol mapped to its key, with the contract facts the key does not carry."""

    key: InstrumentKey
    settle: str
    expiry_at: dt.datetime | None  # exact UTC expiry instant (futures, options)
    inverse: bool | None  # None for spot
    contract_type: str | None  # Tardis vocabulary: linear_perpetual, inverse_future, call_option, ...
    tardis_exchange: str
    tardis_symbol: str  # the dataset id, upper case


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What a symbol alone says about an instrument."""

    type: str
    base: str
    quote: str
    expiry: dt.date | None = None
    strike: str | None = None
    option_type: str | None = None
    inverse: bool | None = None
    settle: str | None = None


# Quote currencies for concatenated symbols, matched at the end of the symbol, longest first.
# fmt: off
_BINANCE_QUOTES = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "PAX", "DAI", "UST",
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", "DOT",
    "EUR", "EURI", "GBP", "TRY", "BRL", "AUD", "RUB", "UAH", "NGN", "ZAR", "BIDR", "IDRT", "BVND", "BKRW",
    "ARS", "PLN", "RON", "JPY", "MXN", "COP", "CZK",
)
_LEVERAGED_COINS = (
    "BTC", "ETH", "BNB", "ADA", "XRP", "LINK", "DOT", "TRX", "EOS", "LTC",
    "XTZ", "SXP", "FIL", "YFI", "SUSHI", "UNI", "AAVE", "1INCH", "BCH", "XLM",
)
# fmt: on
# Suffixes that read two ways without metadata: ADAEUR is ADA-EUR, BTCAEUR is BTC-AEUR.
_BINANCE_AMBIGUOUS = ("AEUR",)
_BYBIT_SPOT_QUOTES = ("USDT", "USDC", "USDE", "BTC", "ETH", "EUR", "DAI", "BRZ", "BRL", "TRY", "PLN")
_LINEAR_PERP_QUOTES = ("USDT", "USDC", "BUSD")
_DATED_QUOTES = ("USDT", "USDC", "USD")
_BYBIT_QUOTES = ("USDT", "USDC", "USD")

# Binance leveraged tokens (BTCUP, ETHDOWN, BULL, ...): spot-listed funds, not instruments we key.
_LEVERAGED_BASES = frozenset(
    {f"{coin}{side}" for coin in _LEVERAGED_COINS for side in ("UP", "DOWN")}
    | {f"{coin}{side}" for coin in ("", "ETH", "EOS", "XRP", "BNB") for side in ("BULL", "BEAR")}
)


def _split_concat(text: str, quotes: Iterable[str], ambiguous: Iterable[str] = ()) -> tuple[str, str] | None:
    """``BTCUSDT`` -> (BTC, USDT) by the longest known quote the text ends with; None when unsure."""
    if any(text.endswith(a) for a in ambiguous):
        return None
    for quote in sorted(quotes, key=len, reverse=True):
        base = text[: -len(quote)]
        if text.endswith(quote) and _ASSET.fullmatch(base):
            return base, quote
    return None


def _dmy(text: str) -> dt.date | None:
    """Deribit/Bybit ``DMMMYY`` or ``DDMMMYY`` (``7NOV25``, ``28JUN24``)."""
    match = re.fullmatch(r"(\d{1,2})([A-Z]{3})(\d{2})", text)
    if not match or match.group(2) not in _MONTHS:
        return None
    try:
        return dt.date(2000 + int(match.group(3)), _MONTHS.index(match.group(2)) + 1, int(match.group(1)))
    except ValueError:
        return None


def _yymmdd(text: str) -> dt.date | None:
    try:
        return _norm_expiry(text)
    except KeyFormatError:
        return None


def _margined(itype: str, base: str, quote: str, inverse: bool, **extra: Any) -> _Parsed:
    """A derivative settled in the base (inverse, coin-margined) or in the quote (linear)."""
    return _Parsed(itype, base, quote, inverse=inverse, settle=base if inverse else quote, **extra)


def _spot(base: str, quote: str) -> _Parsed:
    return _Parsed("SPOT_PAIR", base, quote, settle=quote)


def _parse_binance(sym: str) -> _Parsed | None:
    pair = _split_concat(sym, _BINANCE_QUOTES, _BINANCE_AMBIGUOUS)
    return _spot(*pair) if pair else None


def _parse_binance_futures(sym: str) -> _Parsed | None:
    core, _, suffix = sym.partition("_")
    if suffix == "PERP":  # coin-margined perpetual, always USD-quoted: BTCUSD_PERP
        pair = _split_concat(core, ("USD",))
        return _margined("PERPETUAL", *pair, inverse=True) if pair else None
    if suffix:  # quarterly: BTCUSDT_240628 (linear) or BTCUSD_240628 (coin-margined)
        expiry = _yymmdd(suffix)
        pair = _split_concat(core, _DATED_QUOTES)
        if expiry is None or pair is None:
            return None
        return _margined("FUTURE", *pair, inverse=pair[1] == "USD", expiry=expiry)
    pair = _split_concat(core, _LINEAR_PERP_QUOTES)
    return _margined("PERPETUAL", *pair, inverse=False) if pair else None


_DERIBIT_UNDERLYING = r"([A-Z0-9]+)(?:_([A-Z0-9]+))?"
_DERIBIT_PERP = re.compile(rf"{_DERIBIT_UNDERLYING}-PERPETUAL")
_DERIBIT_FUTURE = re.compile(rf"{_DERIBIT_UNDERLYING}-(\d{{1,2}}[A-Z]{{3}}\d{{2}})")
_DERIBIT_OPTION = re.compile(rf"{_DERIBIT_UNDERLYING}-(\d{{1,2}}[A-Z]{{3}}\d{{2}})-(\d+(?:D\d+)?)-([CP])")
_DERIBIT_SPOT = re.compile(r"([A-Z0-9]+)_([A-Z0-9]+)")


def _parse_deribit(sym: str) -> _Parsed | None:
    """``BTC-…`` is USD-quoted and coin-settled (inverse); ``XRP_USDC-…`` is linear in the named currency."""

    def contract(itype: str, base: str, quote: str | None, **extra: Any) -> _Parsed:
        return _margined(itype, base, quote or "USD", inverse=quote is None, **extra)

    if match := _DERIBIT_PERP.fullmatch(sym):
        return contract("PERPETUAL", match.group(1), match.group(2))
    if match := _DERIBIT_FUTURE.fullmatch(sym):
        expiry = _dmy(match.group(3))
        return contract("FUTURE", match.group(1), match.group(2), expiry=expiry) if expiry else None
    if match := _DERIBIT_OPTION.fullmatch(sym):
        expiry = _dmy(match.group(3))
        if expiry is None:
            return None
        strike = match.group(4).replace("D", ".")
        option_type = "CALL" if match.group(5) == "C" else "PUT"
        return contract(
            "OPTION", match.group(1), match.group(2), expiry=expiry, strike=strike, option_type=option_type
        )
    if match := _DERIBIT_SPOT.fullmatch(sym):
        return _spot(match.group(1), match.group(2))
    return None  # combos (BTC-FS-28MAR25_PERP) and anything unknown


def _parse_bybit(sym: str) -> _Parsed | None:
    """Linear/inverse perpetuals and USDT-dated futures; month-code (BTCUSDM25) and BTC-26DEC25 need metadata."""
    core, _, dated = sym.partition("-")
    if dated:
        expiry = _dmy(dated)
        pair = _split_concat(core, ("USDT", "USDC"))
        if expiry is None or pair is None:
            return None
        return _margined("FUTURE", *pair, inverse=False, expiry=expiry)
    if pair := _split_concat(core, _BYBIT_QUOTES):
        return _margined("PERPETUAL", *pair, inverse=pair[1] == "USD")
    if core.endswith("PERP") and _ASSET.fullmatch(core[:-4]):  # USDC perpetuals: BTCPERP
        return _margined("PERPETUAL", core[:-4], "USDC", inverse=False)
    return None


def _parse_bybit_spot(sym: str) -> _Parsed | None:
    pair = _split_concat(sym, _BYBIT_SPOT_QUOTES)
    return _spot(*pair) if pair else None


_DASH_PAIR = r"([A-Z0-9]+)-([A-Z0-9]+)"


def _parse_okex(sym: str) -> _Parsed | None:
    match = re.fullmatch(_DASH_PAIR, sym)
    return _spot(match.group(1), match.group(2)) if match else None


def _parse_okex_swap(sym: str) -> _Parsed | None:
    match = re.fullmatch(rf"{_DASH_PAIR}-SWAP", sym)
    if not match:
        return None
    return _margined("PERPETUAL", match.group(1), match.group(2), inverse=match.group(2) == "USD")


def _parse_okex_futures(sym: str) -> _Parsed | None:
    match = re.fullmatch(rf"{_DASH_PAIR}-(\d{{6}})", sym)
    expiry = _yymmdd(match.group(3)) if match else None
    if not match or expiry is None:
        return None
    base, quote = match.group(1), match.group(2)
    return _margined("FUTURE", base, quote, inverse=quote == "USD", expiry=expiry)


_PARSERS = {
    "BINANCE": _parse_binance,
    "BINANCE-FUTURES": _parse_binance_futures,
    "DERIBIT": _parse_deribit,
    "BYBIT": _parse_bybit,
    "BYBIT-SPOT": _parse_bybit_spot,
    "OKX": _parse_okex,
    "OKX-SWAP": _parse_okex_swap,
    "OKX-FUTURES": _parse_okex_futures,
}
# Venues whose symbols spell base and quote explicitly; there the symbol names the key's currencies
# (Deribit option metadata gives the premium currency BTC as quoteCurrency, the key needs the strike's USD).
_EXPLICIT_VENUES = frozenset({"DERIBIT", "OKX", "OKX-SWAP", "OKX-FUTURES"})


def _currency(value: object) -> str | None:
    text = value.strip().upper() if isinstance(value, str) else ""
    return text if _ASSET.fullmatch(text) else None


def _instant(value: object) -> dt.datetime | None:
    """An ISO-8601 metadata timestamp as an aware UTC datetime (naive means UTC)."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _contract_type(itype: str, inverse: bool | None, option_type: str | None) -> str | None:
    """The Tardis ``contractType`` a parsed symbol implies."""
    if itype == "OPTION" and option_type:
        return f"{option_type.lower()}_option"
    if itype in ("PERPETUAL", "FUTURE") and inverse is not None:
        return f"{'inverse' if inverse else 'linear'}_{itype.lower()}"
    return None


@dataclass(frozen=True, slots=True)
class _Resolved:
    """Everything a key and its TardisInstrument need, after symbol and metadata are combined."""

    base: str
    quote: str
    expiry_at: dt.datetime | None
    strike: Any
    option_type: str | None
    inverse: bool | None
    settle: str
    contract_type: str | None


def _from_symbol(parsed: _Parsed) -> _Resolved:
    expiry_at = dt.datetime.combine(parsed.expiry, EXPIRY_TIME_UTC) if parsed.expiry else None
    settle = parsed.settle or parsed.quote
    return _Resolved(
        parsed.base, parsed.quote, expiry_at, parsed.strike, parsed.option_type, parsed.inverse, settle, None
    )


def _from_metadata(
    venue: str, sym: str, itype: str, parsed: _Parsed | None, info: Mapping[str, Any]
) -> _Resolved | None:
    """Metadata wins for expiry instant, strike, option type, inverse and settle; see ``key_from_tardis``."""
    meta_base, meta_quote = _currency(info.get("baseCurrency")), _currency(info.get("quoteCurrency"))
    if venue in _EXPLICIT_VENUES:
        if parsed is None:
            return None
        base, quote = parsed.base, parsed.quote
    elif meta_base and meta_quote and re.split(r"[_-]", sym)[0] == meta_base + meta_quote:
        base, quote = meta_base, meta_quote
    elif parsed is not None:  # metadata names normalised currencies that do not spell the symbol
        base, quote = parsed.base, parsed.quote
    elif meta_base and meta_quote:
        base, quote = meta_base, meta_quote
    else:
        return None
    if itype == "OPTION" and venue != "DERIBIT":
        return None  # the strike currency of other venues' options is not known here

    expiry_at = None
    if itype in _DATED_TYPES:
        if info.get("expiry") is not None:
            expiry_at = _instant(info["expiry"])
        elif parsed is not None and parsed.expiry is not None:
            expiry_at = dt.datetime.combine(parsed.expiry, EXPIRY_TIME_UTC)
        if expiry_at is None:
            return None

    strike = option_type = None
    if itype == "OPTION":
        strike = info.get("strikePrice")
        if strike is None and parsed is not None:
            strike = parsed.strike
        option_type = info.get("optionType") or (parsed.option_type if parsed else None)
        if strike is None or option_type is None:
            return None

    contract_type = info.get("contractType") if isinstance(info.get("contractType"), str) else None
    inverse: bool | None = None
    if itype != "SPOT_PAIR":
        if isinstance(info.get("inverse"), bool):
            inverse = info["inverse"]
        elif contract_type and contract_type.split("_")[0] in ("inverse", "linear"):
            inverse = contract_type.startswith("inverse")
        elif parsed is not None and (parsed.base, parsed.quote) == (base, quote):
            inverse = parsed.inverse
    settle = _currency(info.get("settlementCurrency"))
    if settle is None:
        settle = base if inverse else quote
    return _Resolved(base, quote, expiry_at, strike, option_type, inverse, settle, contract_type)


def key_from_tardis(
    exchange: str,
    symbol: str,
    info: Mapping[str, Any] | None = None,
    symbol_type: str | None = None,
) -> TardisInstrument | None:
    """Map a Tardis dataset symbol (plus its ``/v1/instruments`` object when known) to a key.

    Metadata wins over the symbol for the expiry instant (the key's YYMMDD is its UTC date), strike, option
    type, inverse and settlement. Base/quote come from the symbol where it spells them (Deribit, OKX); for
    concatenated symbols (Binance, Bybit) from metadata when its currencies spell the symbol, else from the
    symbol. Without metadata, futures and options expire 08:00 UTC on the symbol's date. Returns None for
    grouped ids, combos, Binance leveraged tokens and anything that cannot be mapped with certainty (Bybit
    month-code futures without metadata). An unsupported exchange is a UsageError.
    """
    venue = venue_for_exchange(exchange)
    sym = symbol.strip().upper()
    if info is not None:
        ids = {str(info[k]).upper() for k in ("datasetId", "id") if info.get(k)}
        if ids and sym not in ids:
            raise UsageError(f"metadata of {sorted(ids)[0]!r} given for symbol {symbol!r} on {exchange}")
    if sym in GROUPED_SYMBOLS or not sym:
        return None
    raw_type = (info.get("type") if info is not None else None) or symbol_type
    hint = TARDIS_TYPES.get(str(raw_type).strip().lower()) if raw_type else None
    if raw_type and hint is None:
        return None  # combo, prediction or another non-instrument type
    parsed = _PARSERS[venue](sym)
    if parsed is not None and hint is not None and parsed.type != hint:
        parsed = None  # the symbol's shape disagrees with the type Tardis gives: do not guess
    itype = hint or (parsed.type if parsed else None)
    if itype is None:
        return None

    if info is not None:
        resolved = _from_metadata(venue, sym, itype, parsed, info)
    else:
        resolved = _from_symbol(parsed) if parsed is not None else None
    if resolved is None:
        return None
    if venue == "BINANCE" and resolved.base in _LEVERAGED_BASES:
        return None
    expiry_at = resolved.expiry_at
    try:
        key = InstrumentKey(
            venue,
            itype,
            resolved.base,
            resolved.quote,
            expiry_at.date() if expiry_at else None,
            resolved.strike,
            resolved.option_type,
        )
    except KeyFormatError:
        return None  # currencies or strikes that the key grammar cannot spell
    return TardisInstrument(
        key=key,
        settle=resolved.settle,
        expiry_at=expiry_at,
        inverse=resolved.inverse,
        contract_type=resolved.contract_type or _contract_type(itype, resolved.inverse, key.option_type),
        tardis_exchange=VENUE_TO_EXCHANGE[venue],
        tardis_symbol=sym,
    )
