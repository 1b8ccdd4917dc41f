"""Tardis.dev through the official tardis-dev client: exchange details, instrument metadata, one dataset file.

Endpoints and the key come from settings, so the built-in simulator stands in for Tardis by URL alone. HTTP
outcomes become typed errors the stages turn into unit outcomes; the key never appears in a message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import urllib.error
from pathlib import Path
from typing import Any

from mdth_engine.core.errors import MdthError
from mdth_engine.core.settings import Settings


class SourceUnavailable(MdthError):
    """The source answered, and the answer means this file cannot be had now (an outcome, not a crash)."""

    outcome = "failed"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(SourceUnavailable):
    outcome = "unauthorized"


class NotExported(SourceUnavailable):
    outcome = "not_exported"


class SourceNotFound(SourceUnavailable):
    outcome = "not_found"


def dataset_url(settings: Settings, exchange: str, data_type: str, day: dt.date, symbol: str) -> str:
    """The URL the client fetches for one file (kept in provenance; it holds no secret)."""
    from urllib.parse import quote

    normalized = symbol.replace(":", "-").replace("/", "-").upper()
    return (
        f"{settings.tardis_datasets_url.rstrip('/')}/{exchange}/{data_type}/{day:%Y/%m/%d}/"
        f"{quote(normalized, safe='')}.csv.gz"
    )


def classify_http_error(exc: urllib.error.HTTPError, what: str) -> SourceUnavailable:
    """Tardis' status codes as outcomes: 401/403 unauthorized, 400 code 140 not exported yet, 404 not found."""
    body = _error_body(exc)
    text = str(body.get("message") or (exc.msg or "").strip().split("\n", 1)[0])[:200]
    if exc.code in (401, 403):
        detail = f": {text}" if text else ""
        hint = "set MDTH_TARDIS_API_KEY to a key whose plan covers it (without a key: the 1st day of a month only)"
        return Unauthorized(f"{what}: HTTP {exc.code} unauthorized{detail}; {hint}", exc.code)
    if exc.code == 400 and body.get("code") == 140:
        return NotExported(
            f"{what}: not exported yet ({text}); Tardis exports day D on D+1 around 06:00 UTC", exc.code
        )
    if exc.code == 404:
        return SourceNotFound(f"{what}: HTTP 404 not found", exc.code)
    return SourceUnavailable(f"{what}: HTTP {exc.code}: {text}", exc.code)


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.msg or "")
        return body if isinstance(body, dict) else {}
    except (TypeError, ValueError):
        return {}


async def exchange_details(settings: Settings, exchange: str) -> dict[str, Any]:
    """`GET /v1/exchanges/{exchange}`: public, no key needed."""
    from tardis_dev import get_exchange_details_async

    try:
        return await get_exchange_details_async(exchange, endpoint=settings.tardis_api_url.rstrip("/"))
    except urllib.error.HTTPError as exc:
        raise classify_http_error(exc, f"exchange details of {exchange}") from None


async def instrument_info(settings: Settings, exchange: str) -> list[dict[str, Any]]:
    """`GET /v1/instruments/{exchange}`: every instrument's metadata (with ``changes``)."""
    from tardis_dev import get_instrument_info_async

    try:
        result = await get_instrument_info_async(
            exchange, api_key=settings.api_key() or "", endpoint=settings.tardis_api_url.rstrip("/")
        )
    except urllib.error.HTTPError as exc:
        raise classify_http_error(exc, f"instrument metadata of {exchange}") from None
    return list(result) if isinstance(result, list) else [result]


async def download_file(
    settings: Settings,
    exchange: str,
    data_type: str,
    day: dt.date,
    symbol: str,
    spool_dir: Path,
    *,
    timeout_s: float | None = None,
) -> Path:
    """Fetch one day's CSV.gz into the spool with the official client (its retries and backoff), return its path."""
    from tardis_dev import download_datasets_async

    spool_dir.mkdir(parents=True, exist_ok=True)
    name = (
        f"{exchange}_{data_type}_{day.isoformat()}_{symbol.replace('/', '-')}.{secrets.token_hex(4)}.csv.gz"
    )

    def file_name(*_: Any) -> str:
        return name

    what = f"{exchange} {data_type} {symbol} {day}"
    coro = download_datasets_async(
        exchange=exchange,
        data_types=[data_type],
        symbols=[symbol],
        from_date=day.isoformat(),
        to_date=(day + dt.timedelta(days=1)).isoformat(),
        api_key=settings.api_key() or "",
        download_dir=str(spool_dir),
        endpoint=settings.tardis_datasets_url.rstrip("/"),
        concurrency=1,
        get_filename=file_name,
        skip_if_exists=False,
    )
    try:
        if timeout_s:
            await asyncio.wait_for(coro, timeout_s)
        else:
            await coro
    except urllib.error.HTTPError as exc:
        raise classify_http_error(exc, what) from None
    except TimeoutError:
        raise SourceUnavailable(f"{what}: gave up after {timeout_s:.0f} s of retries") from None
    return spool_dir / name
