"""The HTTP/WebSocket server: Tardis's metadata and datasets APIs, Binance klines and live streams, on one port.

``AsyncSimulator`` runs inside an existing event loop; ``SimulatorServer`` runs it in a background thread with
its own loop (what tests and ``make demo`` use). Both bind 127.0.0.1 on a free port unless told otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import DATA_TYPES
from mdth_engine.core.timeframes import datetime_to_us, day_start_us
from mdth_engine.simulator import csvout, klines, metadata
from mdth_engine.simulator.config import SimConfig
from mdth_engine.simulator.datasets import DatasetCache, UnknownDataset, sources_for
from mdth_engine.simulator.faults import STATUS_KINDS, FaultRule, Faults
from mdth_engine.simulator.live import OPEN_SOCKETS, LiveFeed, close_sockets, default_clock, serve_ws
from mdth_engine.simulator.universe import EXCHANGES, find_instrument, grouped_symbol

CHUNK = 256 * 1024
BODY_FAULT = web.RequestKey("mdth_sim_body_fault", object)
SLOW_FAULT = web.RequestKey("mdth_sim_slow_fault", object)
GZIP_JSON_MIN = 2048


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the server saw (never the key itself, only whether one was sent)."""

    method: str
    path: str
    query: str
    status: int
    fault: str
    with_key: bool
    at: float


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    return web.Response(
        status=status,
        body=data,
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def _gzip_bytes(data: bytes) -> bytes:
    z = csvout._zlib.compressobj(csvout.GZIP_LEVEL, csvout._zlib.DEFLATED, csvout.GZIP_WBITS)
    return z.compress(data) + z.flush()


class SimulatorApp:
    """Request handling; one per server. Thread-safe knobs: ``faults`` (replace it) and ``requests``."""

    def __init__(self, config: SimConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.cache = DatasetCache(config.cache_path, config.scale_factor, config.scale_tag)
        # Generation is CPU-bound and gets its own threads; file reads, metadata and live events never wait on it.
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, config.workers), thread_name_prefix="mdth-sim-gen"
        )
        self.io_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mdth-sim-io")
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=100_000)
        self._meta: dict[tuple, bytes] = {}
        self._gzipped: dict[int, bytes] = {}
        self._meta_lock = threading.Lock()
        self.clock = default_clock(
            config.live_start if isinstance(config.live_start, dt.datetime) else None, config.live_speed
        )
        self.feeds = {
            "futures": LiveFeed("binance-futures", config.live_scale_factor, config.live_scale_tag),
            "spot": LiveFeed("binance", config.live_scale_factor, config.live_scale_tag),
        }

    # -- app ------------------------------------------------------------------------------------------------

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app[OPEN_SOCKETS] = set()
        app.on_shutdown.append(close_sockets)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/v1/exchanges", self.exchanges)
        r.add_get("/v1/exchanges/{exchange}", self.exchange_details)
        r.add_get("/v1/instruments/{exchange}", self.instruments)
        r.add_get("/v1/instruments/{exchange}/{symbol}", self.instrument)
        r.add_get("/datasets/v1/{exchange}/{data_type}/{year}/{month}/{day}/{file}", self.dataset)
        r.add_get("/api/v3/klines", self.klines_spot)
        r.add_get("/fapi/v1/klines", self.klines_futures)
        for prefix, kind in (("", "futures"), ("/spot", "spot")):
            handler = self._ws_handler(kind)
            r.add_get(f"{prefix}/ws", handler)
            r.add_get(f"{prefix}/ws/{{streams:.*}}", handler)
            r.add_get(f"{prefix}/stream", handler)
        r.add_get("/_sim/requests", self.sim_requests)
        r.add_delete("/_sim/requests", self.sim_clear)
        r.add_put("/_sim/faults", self.sim_faults)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        control = request.path.startswith("/_sim/")  # faults never lock out the endpoints that clear them
        fired = self.faults.pick(request.path) if self.faults and not control else []
        status_fault = next((f for f in fired if f.kind in STATUS_KINDS), None)
        slow = next((f for f in fired if f.kind == "slow"), None)
        body_fault = next((f for f in fired if f.kind in ("cut", "truncate")), None)
        request[BODY_FAULT] = body_fault
        request[SLOW_FAULT] = slow
        label = ",".join(f.kind for f in fired)
        status = 500
        try:
            if slow is not None:
                await asyncio.sleep(slow.delay / 2)
            if status_fault is not None:
                response = self._fault_response(status_fault)
            else:
                response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.requests.append(
                RequestRecord(
                    request.method,
                    request.path,
                    request.query_string,
                    status,
                    label,
                    bool(request.headers.get("Authorization")),
                    time.time(),
                )
            )

    def _fault_response(self, rule: FaultRule) -> web.Response:
        code = STATUS_KINDS[rule.kind]
        if rule.kind == "429":
            return _json(
                429,
                {"code": 429, "message": "Too many requests, slow down."},
                headers={"Retry-After": str(rule.retry_after)},
            )
        if rule.kind == "400iso":
            return _json(
                400, {"code": 100, "message": "Invalid 'from' param, provide date in ISO 8601 format."}
            )
        if rule.kind == "401":
            return _json(401, {"code": 10, "message": "Unauthorized (injected fault)."})
        return _json(code, {"code": code, "message": f"Injected fault: HTTP {code}."})

    # -- helpers --------------------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self.config.current_now()

    def _exported_until(self) -> dt.datetime:
        return self.config.current_exported_until()

    async def _meta_body(self, key: tuple, build) -> bytes:
        with self._meta_lock:
            cached = self._meta.get(key)
        if cached is not None:
            return cached
        data = await asyncio.get_running_loop().run_in_executor(
            self.io_executor, lambda: json.dumps(build(), separators=(",", ":")).encode()
        )
        gz = await asyncio.get_running_loop().run_in_executor(self.io_executor, _gzip_bytes, data)
        with self._meta_lock:
            if len(self._meta) > 64:
                self._meta.clear()
                self._gzipped.clear()
            self._meta[key] = data
            self._gzipped[id(data)] = gz
        return data

    def _meta_response(self, request: web.Request, data: bytes) -> web.Response:
        """JSON, gzip-encoded (with ``Content-Encoding``) when the client accepts it and it is large."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if len(data) >= GZIP_JSON_MIN and "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            with self._meta_lock:
                cached = self._gzipped.get(id(data))
            data = cached if cached is not None else _gzip_bytes(data)
        return web.Response(body=data, headers=headers)

    # -- metadata -------------------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return _json(
            200,
            {"ok": True, "scale": self.config.scale_tag, "exportedUntil": self._exported_until().isoformat()},
        )

    async def exchanges(self, request: web.Request) -> web.Response:
        return self._meta_response(
            request, json.dumps(metadata.exchanges_list(), separators=(",", ":")).encode()
        )

    async def exchange_details(self, request: web.Request) -> web.Response:
        exchange = request.match_info["exchange"]
        if exchange not in EXCHANGES:
            return _json(
                404, {"code": 100, "message": f"Invalid 'exchange' param: {exchange!r} is not supported."}
            )
        now, until = self._now(), self._exported_until()
        data = await self._meta_body(
            ("details", exchange, now.date(), until), lambda: metadata.exchange_details(exchange, now, until)
        )
        return self._meta_response(request, data)

    async def instruments(self, request: web.Request) -> web.Response:
        exchange = request.match_info["exchange"]
        if exchange not in EXCHANGES:
            return _json(
                404, {"code": 100, "message": f"Invalid 'exchange' param: {exchange!r} is not supported."}
            )
        try:
            flt = metadata.parse_filter(request.query.get("filter"))
        except metadata.BadFilter as exc:
            return _json(400, {"code": 100, "message": str(exc)})
        now, until = self._now(), self._exported_until()
        key = ("instruments", exchange, now.date(), until, json.dumps(flt, sort_keys=True))
        try:
            data = await self._meta_body(key, lambda: metadata.instruments(exchange, now, until, flt))
        except metadata.BadFilter as exc:
            return _json(400, {"code": 100, "message": str(exc)})
        return self._meta_response(request, data)

    async def instrument(self, request: web.Request) -> web.Response:
        exchange, symbol = request.match_info["exchange"], request.match_info["symbol"]
        if exchange not in EXCHANGES:
            return _json(
                404, {"code": 100, "message": f"Invalid 'exchange' param: {exchange!r} is not supported."}
            )
        item = metadata.instrument(exchange, symbol, self._now(), self._exported_until())
        if item is None:
            return _json(404, {"code": 100, "message": f"Unknown instrument {symbol!r} on {exchange}."})
        return self._meta_response(request, json.dumps(item, separators=(",", ":")).encode())

    # -- datasets -------------------------------------------------------------------------------------------

    def _dataset_info(self, exchange: str, symbol: str) -> dict[str, Any]:
        group = grouped_symbol(exchange, symbol)
        if group is not None:
            return {
                "id": group.id,
                "type": group.type,
                "dataTypes": list(group.data_types),
                "availableSince": f"{EXCHANGES[exchange].since.isoformat()}T00:00:00.000Z",
            }
        inst = find_instrument(exchange, symbol)
        if inst is None:
            return {}
        info = {
            "id": inst.dataset_id,
            "type": inst.type,
            "dataTypes": list(inst.data_types),
            "availableSince": f"{inst.since.isoformat()}T00:00:00.000Z",
        }
        if inst.until:
            info["availableTo"] = f"{inst.until.isoformat()}T00:00:00.000Z"
        return info

    async def dataset(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        exchange, data_type, file = m["exchange"], m["data_type"], m["file"]
        if exchange not in EXCHANGES:
            return _json(
                404, {"code": 100, "message": f"Invalid 'exchange' param: {exchange!r} is not supported."}
            )
        if data_type not in DATA_TYPES:
            return _json(400, {"code": 100, "message": f"Invalid 'dataType' param: {data_type!r}."})
        if not file.endswith(".csv.gz"):
            return _json(404, {"code": 100, "message": "Only the csv format is available (*.csv.gz)."})
        symbol = urllib.parse.unquote(file[: -len(".csv.gz")])
        try:
            day = dt.date(int(m["year"]), int(m["month"]), int(m["day"]))
        except ValueError:
            return _json(400, {"code": 100, "message": "Invalid date in the dataset path (YYYY/MM/DD)."})
        params = {
            "exchange": exchange,
            "dataType": data_type,
            "year": m["year"],
            "month": m["month"],
            "day": m["day"],
            "symbol": symbol,
        }
        if symbol != symbol.upper():
            return _json(
                404,
                {
                    "code": 100,
                    "message": f"Unknown symbol {symbol!r}: dataset symbols are upper case.",
                    "providedParams": params,
                },
            )
        try:
            sources_for(exchange, data_type, day, symbol, self.config.scale_factor, self.config.scale_tag)
        except UnknownDataset as exc:
            status = 404 if "symbol" in str(exc) else 400
            return _json(status, {"code": 100, "message": _sentence(str(exc)), "providedParams": params})
        except ValueError as exc:
            return _json(400, {"code": 100, "message": str(exc), "providedParams": params})
        info = self._dataset_info(exchange, symbol)
        since = EXCHANGES[exchange].since
        if day < since:
            return _json(
                400,
                {
                    "code": 100,
                    "message": f"Requested date {day} is before {exchange} data is available ({since}).",
                    "providedParams": params,
                    "datasetInfo": info,
                },
            )
        if self.config.require_api_key and day.day != 1:
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth.startswith("Bearer ") else ""
            if not self.config.key_is_valid(key):
                message = (
                    (
                        "Unauthorized. Provide a valid API key in the 'Authorization: Bearer YOUR_API_KEY' header; "
                        "without one only historical CSV market datasets for the first day of each month are "
                        "available for download."
                    )
                    if not key
                    else "The provided API key does not allow access to requested CSV dataset."
                )
                return _json(
                    401,
                    {
                        "code": 10 if not key else 11,
                        "message": message,
                        "providedParams": params,
                        "datasetInfo": info,
                    },
                )
        until = self._exported_until()
        if day_start_us(day) + 86_400_000_000 > datetime_to_us(until):
            return _json(
                400,
                {
                    "code": 140,
                    "message": f"Requested dataset is not available yet for '{day.isoformat()}'. Use "
                    f"https://api.tardis.dev/v1/exchanges/{exchange} API endpoint and "
                    "'datasets.exportedUntil' field to check latest date for which datasets are available.",
                    "serverTimestamp": dt.datetime.now(dt.UTC)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                    "providedParams": params,
                    "datasetInfo": info,
                },
            )
        path = self.cache.path_for(exchange, data_type, day, symbol)
        if not path.exists():  # only generation waits for the generator threads
            path = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.cache.ensure, exchange, data_type, day, symbol
            )
        return await self._send_file(request, path)

    async def _send_file(self, request: web.Request, path: Path) -> web.StreamResponse:
        """Stream the cached file; a body fault truncates it (complete response) or cuts the connection."""
        loop = asyncio.get_running_loop()
        size = path.stat().st_size
        body_fault: FaultRule | None = request.get(BODY_FAULT)  # type: ignore[assignment]
        slow: FaultRule | None = request.get(SLOW_FAULT)  # type: ignore[assignment]
        truncate = body_fault is not None and body_fault.kind == "truncate"
        cut = body_fault is not None and body_fault.kind == "cut"
        length = max(size // 2, min(size, 10)) if truncate else size
        limit = size // 2 if cut else length
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/gzip"})
        response.content_length = length
        await response.prepare(request)
        pieces = max(1, -(-limit // CHUNK))
        with open(path, "rb") as fh:
            sent = 0
            while sent < limit:
                chunk = await loop.run_in_executor(self.io_executor, fh.read, min(CHUNK, limit - sent))
                if not chunk:
                    break
                if slow is not None:  # trickle: the body takes the other half of the delay
                    await asyncio.sleep(slow.delay / 2 / pieces)
                await response.write(chunk)
                sent += len(chunk)
        if cut:
            if request.transport is not None:
                request.transport.close()  # the connection drops mid-body
            return response
        await response.write_eof()
        return response

    # -- klines ---------------------------------------------------------------------------------------------

    async def klines_spot(self, request: web.Request) -> web.Response:
        return await self._klines(request, "binance")

    async def klines_futures(self, request: web.Request) -> web.Response:
        return await self._klines(request, "binance-futures")

    async def _klines(self, request: web.Request, exchange: str) -> web.Response:
        q = request.query
        try:
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
            limit = int(q["limit"]) if "limit" in q else None
        except ValueError:
            return _json(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        if "symbol" not in q or "interval" not in q:
            return _json(
                400, {"code": -1102, "msg": "Mandatory parameter 'symbol' or 'interval' was not sent."}
            )
        now_us = datetime_to_us(self._now())
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                self.executor,
                klines.klines,
                exchange,
                q["symbol"].upper(),
                q["interval"],
                start,
                end,
                limit,
                now_us,
                self.config.scale_factor,
                self.config.scale_tag,
            )
        except klines.KlineError as exc:
            return _json(400, {"code": exc.code, "msg": exc.msg})
        return _json(200, rows)

    # -- live -----------------------------------------------------------------------------------------------

    def _ws_handler(self, kind: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            return await serve_ws(request, self.feeds[kind], self.clock, self.io_executor)

        return handler

    # -- control --------------------------------------------------------------------------------------------

    async def sim_requests(self, request: web.Request) -> web.Response:
        return _json(200, [dataclasses.asdict(r) for r in list(self.requests)])

    async def sim_clear(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return _json(200, {"ok": True})

    async def sim_faults(self, request: web.Request) -> web.Response:
        text = (await request.text()).strip()
        try:
            self.faults = Faults.parse(text)
        except UsageError as exc:
            return _json(400, {"code": 100, "message": str(exc)})
        return _json(200, {"ok": True, "rules": len(self.faults.rules)})


class AsyncSimulator:
    """The simulator inside the running event loop: ``async with AsyncSimulator(...) as sim: sim.api_url``."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        faults: Faults | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **config_fields: Any,
    ) -> None:
        self.config = config or SimConfig(**config_fields)
        self.app = SimulatorApp(self.config, Faults.parse(faults) if isinstance(faults, str) else faults)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> AsyncSimulator:
        self._runner = web.AppRunner(self.app.build(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.app.executor.shutdown(wait=False, cancel_futures=True)
        self.app.io_executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> AsyncSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses ------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Pass as ``endpoint=`` to get_exchange_details / get_instrument_info (= MDTH_TARDIS_API_URL)."""
        return f"{self.base_url}/v1"

    @property
    def datasets_url(self) -> str:
        """Pass as ``endpoint=`` to download_datasets (= MDTH_TARDIS_DATASETS_URL)."""
        return f"{self.base_url}/datasets/v1"

    @property
    def ws_url(self) -> str:
        """Binance futures-style WebSocket base: ``{ws_url}/ws/btcusdt@trade``, ``{ws_url}/stream?streams=...``."""
        return f"ws://{self.host}:{self.port}"

    @property
    def ws_spot_url(self) -> str:
        return f"ws://{self.host}:{self.port}/spot"

    @property
    def faults(self) -> Faults:
        return self.app.faults

    @faults.setter
    def faults(self, value: Faults | str | None) -> None:
        self.app.faults = Faults.parse(value) if isinstance(value, str) or value is None else value

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self.app.requests)

    def clear_requests(self) -> None:
        self.app.requests.clear()

    def env(self) -> dict[str, str]:
        """The environment that points mdth at this simulator."""
        return {"MDTH_TARDIS_API_URL": self.api_url, "MDTH_TARDIS_DATASETS_URL": self.datasets_url}


class SimulatorServer(AsyncSimulator):
    """The simulator in a background thread with its own event loop: ``with SimulatorServer() as sim: ...``."""

    def __init__(self, config: SimConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatorServer:  # type: ignore[override]
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(AsyncSimulator.start(self))
            except BaseException as exc:  # surfaced to the caller of start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(AsyncSimulator.stop(self))
                loop.close()

        self._thread = threading.Thread(target=run, name="mdth-simulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:  # type: ignore[override]
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._thread = None
        self._loop = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sentence(text: str) -> str:
    """First letter up and a final period, the rest as written (a symbol keeps its case)."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
