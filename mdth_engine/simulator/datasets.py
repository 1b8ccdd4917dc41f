"""Builds one Tardis dataset file (exchange, data type, day, symbol) as gzip CSV bytes, and caches it on disk.

Events are generated window by window in exchange time, merged by arrival (``local_timestamp``) with what
the previous window left over, and cut at the day boundary, so a file for day D holds exactly the rows whose
``local_timestamp`` falls in D (the first ones may carry an exchange time from D-1). Collector incidents
remove rows (a silence); after one, the L2 feed restarts with a snapshot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from mdth_engine.core.schemas import CSV_COLUMNS, DATA_TYPES
from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.simulator import csvout, market, options
from mdth_engine.simulator.config import MODEL_VERSION
from mdth_engine.simulator.market import Ctx, Grid
from mdth_engine.simulator.seeds import hash_combine, mix64, rng, seed64
from mdth_engine.simulator.universe import (
    Instrument,
    find_instrument,
    grouped_members,
    grouped_symbol,
    incident_windows_us,
)

Batch = dict[str, np.ndarray]
BOOK_DEPTH = {
    "book_snapshot_5": 5,
    "book_snapshot_25": 25,
    "incremental_book_L2": 25,
    "quotes": 1,
    "book_ticker": 1,
}
LINES_PER_WRITE = 400_000


class UnknownDataset(LookupError):
    """The symbol or data type does not exist on this exchange (the server answers 404 or 400)."""


# ---------------------------------------------------------------------------------------------------------
# Batches: dicts of equally long arrays (first axis = rows), always with "ts" and "local"


def _take(b: Batch, idx: np.ndarray | slice) -> Batch:
    return {k: v[idx] for k, v in b.items()}


def _concat(a: Batch, b: Batch) -> Batch:
    return {k: np.concatenate((a[k], b[k])) for k in b}


def _rows(b: Batch) -> int:
    return int(b["local"].size)


def _keep_changes(values: list[np.ndarray], group: np.ndarray | None = None) -> np.ndarray:
    """Rows that differ from the previous row (in exchange order) in any of ``values``; first row kept."""
    n = values[0].shape[0]
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    keep[0] = True
    for v in values:
        v2 = v.reshape(n, -1)
        keep[1:] |= (v2[1:] != v2[:-1]).any(axis=1)
    if group is not None:
        keep[1:] |= group[1:] != group[:-1]
    return keep


def _float_grid(units: np.ndarray, grid: Grid) -> np.ndarray:
    """Units on a decimal grid as exact floats; negative units (no level) become NaN."""
    out = grid.to_float(np.maximum(units, 0))
    return np.where(units < 0, np.nan, out)


def _book_batch(
    ts: np.ndarray, local: np.ndarray, depth: market.Depth, tick: Grid, step: Grid, extra: Batch | None = None
) -> Batch:
    empty = depth.ask_px < 0
    empty_b = depth.bid_px < 0
    b: Batch = {
        "ts": ts,
        "local": local,
        "ask_px": _float_grid(depth.ask_px, tick),
        "ask_amt": np.where(empty, np.nan, step.to_float(depth.ask_amt)),
        "bid_px": _float_grid(depth.bid_px, tick),
        "bid_amt": np.where(empty_b, np.nan, step.to_float(depth.bid_amt)),
    }
    if extra:
        b.update(extra)
    return b


# ---------------------------------------------------------------------------------------------------------
# Sources: one instrument, or an option chain (optionally narrowed to one option)


class InstrumentSource:
    """One non-option instrument; ``names`` is its one CSV symbol."""

    def __init__(self, inst: Instrument, scale: float, tag: str) -> None:
        self.inst = inst
        self.scale = scale
        self.tag = tag
        self.names = [inst.dataset_id]

    def ctx(self, day: dt.date) -> Ctx:
        return market.ctx_for(self.inst, day, self.scale, self.tag)

    def windows(self, day: dt.date) -> int:
        return self.ctx(day).n_win if self.inst.live_on(day) else 0

    def window_end(self, day: dt.date, w: int) -> int:
        return self.ctx(day).window_end(w)

    def batch(self, data_type: str, day: dt.date, w: int) -> Batch:
        ctx = self.ctx(day)
        if data_type == "trades":
            t = market.trades(ctx, w)
            sym = np.zeros(len(t), dtype=np.int32)
            return {
                "ts": t.ts,
                "local": t.local,
                "seq": t.seq,
                "buy": t.buy,
                "price": ctx.tick.to_float(t.price),
                "amount": ctx.step.to_float(t.amount),
                "sym": sym,
            }
        if data_type == "liquidations":
            liq = market.liquidations_day(ctx)
            t0, t1 = ctx.window(w)
            m = (liq.ts >= t0) & (liq.ts < t1)
            return {
                "ts": liq.ts[m],
                "local": liq.local[m],
                "seq": liq.seq[m],
                "buy": liq.buy[m],
                "price": ctx.tick.to_float(liq.price[m]),
                "amount": ctx.step.to_float(liq.amount[m]),
                "sym": np.zeros(int(m.sum()), dtype=np.int32),
            }
        if data_type == "derivative_ticker":
            tk = market.ticker(ctx, w)
            return {
                "ts": tk.ts,
                "local": tk.local,
                "funding_ts": tk.funding_ts,
                "funding_rate": tk.funding_rate,
                "predicted": tk.predicted,
                "oi": tk.open_interest,
                "last": _float_grid(tk.last, ctx.tick),
                "index": tk.index,
                "mark": tk.mark,
                "sym": np.zeros(len(tk), dtype=np.int32),
            }
        if data_type in BOOK_DEPTH:
            core = market.book_core(ctx, w)
            depth = market.book_depth(ctx, core, BOOK_DEPTH[data_type])
            ts, local = core.ts, core.local
            extra: Batch = {"sym": np.zeros(len(core), dtype=np.int32)}
            if data_type == "incremental_book_L2":
                extra["resnap"] = core.resnap
                return _book_batch(ts, local, depth, ctx.tick, ctx.step, extra)
            keep = _keep_changes([depth.ask_px, depth.ask_amt, depth.bid_px, depth.bid_amt])
            if data_type == "book_ticker":
                r = rng("book-ticker", *ctx.key, w)
                local = ts + market.latency(r, ts.size, self.inst.profile.latency_ms)
                if self.inst.exchange == "binance":
                    ts = local  # Binance spot bookTicker carries no exchange time: Tardis copies local time
            depth = market.Depth(
                depth.ask_px[keep], depth.ask_amt[keep], depth.bid_px[keep], depth.bid_amt[keep]
            )
            extra = {"sym": extra["sym"][keep]}
            return _book_batch(ts[keep], local[keep], depth, ctx.tick, ctx.step, extra)
        raise UnknownDataset(f"data type {data_type!r} is not available for {self.inst.dataset_id}")


class ChainSource:
    """Deribit options of one underlying; ``only`` narrows it to one option symbol."""

    def __init__(self, underlying: str, scale: float, tag: str, only: str | None = None) -> None:
        self.underlying = underlying
        self.scale = scale
        self.tag = tag
        self.only = only
        self.names: list[str] = []
        self._codes: dict[str, int] = {}
        self.und_names: list[str] = []
        self._und_codes_map: dict[str, int] = {}

    def cctx(self, day: dt.date) -> options.ChainCtx:
        return options.chain_ctx(self.underlying, day, self.scale, self.tag)

    def windows(self, day: dt.date) -> int:
        cctx = self.cctx(day)
        if not cctx.insts or (self.only and self._index(cctx) is None):
            return 0
        return cctx.n_win

    def window_end(self, day: dt.date, w: int) -> int:
        return self.cctx(day).window_end(w)

    def _index(self, cctx: options.ChainCtx) -> int | None:
        try:
            return cctx.index_of(self.only) if self.only else None
        except KeyError:
            return None

    def _codes_for(self, cctx: options.ChainCtx, opt: np.ndarray) -> np.ndarray:
        table = np.empty(len(cctx.insts), dtype=np.int32)
        for i, inst in enumerate(cctx.insts):
            code = self._codes.get(inst.dataset_id)
            if code is None:
                code = self._codes[inst.dataset_id] = len(self.names)
                self.names.append(inst.dataset_id)
            table[i] = code
        return table[opt] if opt.size else np.zeros(0, dtype=np.int32)

    def _mask(self, cctx: options.ChainCtx, opt: np.ndarray) -> np.ndarray | slice:
        return slice(None) if self.only is None else (opt == self._index(cctx))

    def batch(self, data_type: str, day: dt.date, w: int) -> Batch:
        cctx = self.cctx(day)
        if data_type == "trades":
            t = options.chain_trades(cctx, w)
            m = self._mask(cctx, t.opt)
            return {
                "ts": t.ts[m],
                "local": t.local[m],
                "seq": t.seq[m],
                "buy": t.buy[m],
                "price": cctx.tick.to_float(t.price[m]),
                "amount": cctx.step.to_float(t.amount[m]),
                "sym": self._codes_for(cctx, t.opt[m]),
            }
        if data_type == "liquidations":
            e = np.empty(0, dtype=np.int64)
            return {
                "ts": e,
                "local": e,
                "seq": e,
                "buy": np.empty(0, dtype=bool),
                "price": np.empty(0),
                "amount": np.empty(0),
                "sym": np.empty(0, dtype=np.int32),
            }
        if data_type == "options_chain":
            return self._chain_rows(cctx, w)
        if data_type in BOOK_DEPTH and data_type != "book_ticker":
            book = options.chain_book(cctx, w)
            m = self._mask(cctx, book.opt)
            book = options.ChainBook(
                book.opt[m], book.ts[m], book.local[m], book.bid[m], book.ask[m], book.resnap[m]
            )
            depth = options.chain_depth(cctx, book, BOOK_DEPTH[data_type])
            extra: Batch = {"sym": self._codes_for(cctx, book.opt)}
            if data_type == "incremental_book_L2":
                extra["resnap"] = book.resnap
                return _book_batch(book.ts, book.local, depth, cctx.tick, cctx.step, extra)
            keep = _keep_changes([depth.ask_px, depth.ask_amt, depth.bid_px, depth.bid_amt], book.opt)
            depth = market.Depth(
                depth.ask_px[keep], depth.ask_amt[keep], depth.bid_px[keep], depth.bid_amt[keep]
            )
            return _book_batch(
                book.ts[keep], book.local[keep], depth, cctx.tick, cctx.step, {"sym": extra["sym"][keep]}
            )
        raise UnknownDataset(f"data type {data_type!r} is not available for {self.only or 'OPTIONS'}")

    def _chain_rows(self, cctx: options.ChainCtx, w: int) -> Batch:
        t = options.chain_ticker(cctx, w)
        m = self._mask(cctx, t.opt)
        syn, fut = options.underlying_names(cctx)
        und = np.where(t.underlying_future, t.opt + len(syn), t.opt)
        opt = t.opt[m]
        return {
            "ts": t.ts[m],
            "local": t.local[m],
            "sym": self._codes_for(cctx, opt),
            "call": cctx.call[opt],
            "strike": cctx.strike[opt],
            "expiry": cctx.expiry[opt],
            "oi": t.open_interest[m],
            "last": _float_grid(t.last_price[m], cctx.tick),
            "bid": _float_grid(t.bid[m], cctx.tick),
            "bid_amt": np.where(t.bid[m] > 0, cctx.step.to_float(t.bid_amount[m]), np.nan),
            "bid_iv": t.bid_iv[m],
            "ask": _float_grid(t.ask[m], cctx.tick),
            "ask_amt": np.where(t.ask[m] > 0, cctx.step.to_float(t.ask_amount[m]), np.nan),
            "ask_iv": t.ask_iv[m],
            "mark": t.mark_price[m],
            "mark_iv": t.mark_iv[m],
            "und": self._und_codes(und[m], syn + fut),
            "und_price": t.underlying_price[m],
            "delta": t.delta[m],
            "gamma": t.gamma[m],
            "vega": t.vega[m],
            "theta": t.theta[m],
            "rho": t.rho[m],
        }

    def _und_codes(self, idx: np.ndarray, names: list[str]) -> np.ndarray:
        codes = np.empty(len(names), dtype=np.int32)
        for i, name in enumerate(names):
            code = self._und_codes_map.get(name)
            if code is None:
                code = self._und_codes_map[name] = len(self.und_names)
                self.und_names.append(name)
            codes[i] = code
        return codes[idx] if idx.size else np.zeros(0, dtype=np.int32)


# ---------------------------------------------------------------------------------------------------------
# Formatting batches into CSV lines


@dataclasses.dataclass
class L2State:
    """Book as last written (per symbol code), so each message is written as a diff against it."""

    ask_px: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    ask_amt: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    bid_px: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    bid_amt: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    last_local: dict[int, int] = dataclasses.field(default_factory=dict)


class Formatter:
    """Batch -> CSV lines for one source and data type (stateful for L2 diffs)."""

    def __init__(
        self,
        exchange: str,
        data_type: str,
        source: InstrumentSource | ChainSource,
        incidents: list[tuple[int, int]],
    ) -> None:
        self.exchange = exchange
        self.data_type = data_type
        self.source = source
        self.incidents = incidents
        self.l2 = L2State()
        inst = source.inst if isinstance(source, InstrumentSource) else None
        self.id_style = inst.profile.id_style if inst else "seq"
        self.seed = seed64("ids", exchange, source.names[0] if source.names else "chain")

    def symbol_column(self, sym: np.ndarray) -> csvout.Column:
        names = self.source.names
        if len(names) == 1:
            return names[0]
        return csvout.labels(sym, names)

    def __call__(self, b: Batch) -> pa.Array:
        dt_ = self.data_type
        head = [self.exchange, self.symbol_column(b["sym"]), csvout.ints(b["ts"]), csvout.ints(b["local"])]
        if dt_ in ("trades", "liquidations"):
            return csvout.lines(
                [
                    *head,
                    self._ids(b),
                    csvout.labels(np.where(b["buy"], 0, 1), ["buy", "sell"]),
                    csvout.floats(b["price"]),
                    csvout.floats(b["amount"]),
                ]
            )
        if dt_ == "derivative_ticker":
            return csvout.lines(
                [
                    *head,
                    csvout.ints(b["funding_ts"], b["funding_ts"] < 0),
                    csvout.floats(b["funding_rate"]),
                    csvout.floats(b["predicted"]),
                    csvout.floats(b["oi"]),
                    csvout.floats(b["last"]),
                    csvout.floats(b["index"]),
                    csvout.floats(b["mark"]),
                ]
            )
        if dt_ in ("quotes", "book_ticker"):
            return csvout.lines(
                [
                    *head,
                    csvout.floats(b["ask_amt"][:, 0]),
                    csvout.floats(b["ask_px"][:, 0]),
                    csvout.floats(b["bid_px"][:, 0]),
                    csvout.floats(b["bid_amt"][:, 0]),
                ]
            )
        if dt_ in ("book_snapshot_5", "book_snapshot_25"):
            cols = list(head)
            for k in range(BOOK_DEPTH[dt_]):
                cols += [
                    csvout.floats(b["ask_px"][:, k]),
                    csvout.floats(b["ask_amt"][:, k]),
                    csvout.floats(b["bid_px"][:, k]),
                    csvout.floats(b["bid_amt"][:, k]),
                ]
            return csvout.lines(cols)
        if dt_ == "options_chain":
            src = self.source
            assert isinstance(src, ChainSource)
            return csvout.lines(
                [
                    *head,
                    csvout.labels(np.where(b["call"], 0, 1), ["call", "put"]),
                    csvout.floats(b["strike"]),
                    csvout.ints(b["expiry"]),
                    csvout.floats(b["oi"]),
                    csvout.floats(b["last"]),
                    csvout.floats(b["bid"]),
                    csvout.floats(b["bid_amt"]),
                    csvout.floats(b["bid_iv"]),
                    csvout.floats(b["ask"]),
                    csvout.floats(b["ask_amt"]),
                    csvout.floats(b["ask_iv"]),
                    csvout.floats(b["mark"]),
                    csvout.floats(b["mark_iv"]),
                    csvout.labels(b["und"], src.und_names),
                    csvout.floats(b["und_price"]),
                    csvout.floats(b["delta"]),
                    csvout.floats(b["gamma"]),
                    csvout.floats(b["vega"]),
                    csvout.floats(b["theta"]),
                    csvout.floats(b["rho"]),
                ]
            )
        if dt_ == "incremental_book_L2":
            return self._l2(b)
        raise UnknownDataset(dt_)

    def _ids(self, b: Batch) -> pa.Array:
        seq = b["seq"]
        if self.data_type == "liquidations" and self.exchange != "deribit":
            return pa.nulls(seq.size, pa.string())  # Binance, Bybit, OKX send no liquidation id
        if self.id_style == "uuid":
            h1 = hash_combine(self.seed, seq)
            return csvout.uuids(h1, mix64(h1 ^ np.uint64(0x5DEECE66D)))
        return csvout.ints(seq)

    def _l2(self, b: Batch) -> pa.Array:
        out: list[tuple[np.ndarray, ...]] = []
        for code in np.unique(b["sym"]):
            self._l2_symbol(b, np.nonzero(b["sym"] == code)[0], int(code), out)
        if not out:
            return pa.array([], pa.string())
        event, side, px, amt, snap = (np.concatenate([o[i] for o in out]) for i in range(5))
        order = np.lexsort((np.where(side == 0, px, -px), side, event))
        event, side, px, amt, snap = event[order], side[order], px[order], amt[order], snap[order]
        return csvout.lines(
            [
                self.exchange,
                self.symbol_column(b["sym"][event]),
                csvout.ints(b["ts"][event]),
                csvout.ints(b["local"][event]),
                csvout.labels(np.where(snap, 0, 1), ["true", "false"]),
                csvout.labels(side, ["ask", "bid"]),
                csvout.floats(px),
                csvout.floats(amt),
            ]
        )

    def _l2_symbol(self, b: Batch, rows: np.ndarray, code: int, out: list) -> None:
        st = self.l2
        local = b["local"][rows]
        n = rows.size
        first = code not in st.ask_px
        prev_local = np.concatenate(([st.last_local.get(code, -1)], local[:-1]))
        snap = b["resnap"][rows].copy()
        if first:
            snap[0] = True
        for _start, end in self.incidents:
            snap |= (prev_local < end) & (local >= end) & (prev_local >= 0)
        for side_code, px_key, amt_key in ((0, "ask_px", "ask_amt"), (1, "bid_px", "bid_amt")):
            cur_px, cur_amt = b[px_key][rows], b[amt_key][rows]
            k = cur_px.shape[1]
            state_px = getattr(st, px_key).get(code, np.full(k, np.nan))
            state_amt = getattr(st, amt_key).get(code, np.full(k, np.nan))
            prev_px = np.concatenate((state_px[None, :], cur_px[:-1]))
            prev_amt = np.concatenate((state_amt[None, :], cur_amt[:-1]))
            same_px = cur_px[:, :, None] == prev_px[:, None, :]  # NaN never equal
            unchanged = (same_px & (cur_amt[:, :, None] == prev_amt[:, None, :])).any(axis=2)
            present = ~np.isnan(cur_px)
            write = present & (~unchanged | snap[:, None])
            ev, lv = np.nonzero(write)
            out.append((rows[ev], np.full(ev.size, side_code), cur_px[ev, lv], cur_amt[ev, lv], snap[ev]))
            gone = (
                ~np.isnan(prev_px) & ~(prev_px[:, :, None] == cur_px[:, None, :]).any(axis=2) & ~snap[:, None]
            )
            ev, lv = np.nonzero(gone)
            out.append(
                (
                    rows[ev],
                    np.full(ev.size, side_code),
                    prev_px[ev, lv],
                    np.zeros(ev.size),
                    np.zeros(ev.size, bool),
                )
            )
            getattr(st, px_key)[code] = cur_px[-1]
            getattr(st, amt_key)[code] = cur_amt[-1]
        st.last_local[code] = int(local[-1]) if n else st.last_local.get(code, -1)


# ---------------------------------------------------------------------------------------------------------
# Assembling a file


def _in_incident(local: np.ndarray, incidents: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(local.size, dtype=bool)
    for start, end in incidents:
        mask |= (local >= start) & (local < end)
    return mask


def source_chunks(
    source: InstrumentSource | ChainSource, exchange: str, data_type: str, day: dt.date
) -> Iterator[tuple[np.ndarray, pa.Array]]:
    """(local timestamps, CSV lines) of one source for the day, in arrival order."""
    d0 = day_start_us(day)
    d1 = d0 + US_PER_DAY
    incidents = [(a, b) for a, b in incident_windows_us(exchange) if a < d1 and b > d0 - US_PER_DAY]
    fmt = Formatter(exchange, data_type, source, incidents)
    prev = day - dt.timedelta(days=1)
    plan: list[tuple[dt.date, int]] = []
    n_prev = source.windows(prev)
    if n_prev:
        plan.append((prev, n_prev - 1))
    plan += [(day, w) for w in range(source.windows(day))]
    carry: Batch | None = None
    for d, w in plan:
        batch = source.batch(data_type, d, w)
        if carry is not None and _rows(carry):
            batch = _concat(carry, batch)
        order = np.argsort(batch["local"], kind="stable")
        batch = _take(batch, order)
        cut = int(np.searchsorted(batch["local"], source.window_end(d, w), side="left"))
        emit, carry = _take(batch, slice(0, cut)), _take(batch, slice(cut, None))
        local = emit["local"]
        keep = (local >= d0) & (local < d1) & ~_in_incident(local, incidents)
        if not keep.all():
            emit = _take(emit, keep)
        if _rows(emit):
            yield emit["local"], fmt(emit)


def sources_for(
    exchange: str, data_type: str, day: dt.date, symbol: str, scale: float, tag: str
) -> list[InstrumentSource | ChainSource]:
    """The sources whose rows make up a dataset file; ``UnknownDataset`` if the symbol or type is unknown."""
    if data_type not in DATA_TYPES:
        raise UnknownDataset(f"unknown data type {data_type!r}")
    group = grouped_symbol(exchange, symbol)
    if group is not None:
        if data_type not in group.data_types:
            raise UnknownDataset(f"data type {data_type!r} is not available for {group.id}")
        if group.type == "option":
            unds: list[str] = []
            for d in (day - dt.timedelta(days=1), day):
                for u in options.chain_underlyings(d):
                    if u not in unds:
                        unds.append(u)
            return [ChainSource(u, scale, tag) for u in unds]
        return [InstrumentSource(i, scale, tag) for i in grouped_members(exchange, group, day)]
    inst = find_instrument(exchange, symbol)
    if inst is None:
        raise UnknownDataset(f"unknown symbol {symbol!r} on {exchange}")
    if data_type not in inst.data_types:
        raise UnknownDataset(f"data type {data_type!r} is not available for {inst.dataset_id}")
    if not (inst.live_on(day) or inst.live_on(day - dt.timedelta(days=1))):
        return []
    if inst.type == "option":
        return [ChainSource(inst.underlying, scale, tag, only=inst.dataset_id)]
    return [InstrumentSource(inst, scale, tag)]


def write_dataset(
    out: BinaryIO, exchange: str, data_type: str, day: dt.date, symbol: str, scale: float, tag: str
) -> int:
    """Write the gzip CSV for one dataset file to ``out``; returns the number of rows."""
    sources = sources_for(exchange, data_type, day, symbol, scale, tag)
    writer = csvout.GzipCsvWriter(out, CSV_COLUMNS[data_type])
    if len(sources) == 1:
        for _, lines in source_chunks(sources[0], exchange, data_type, day):
            writer.write(lines)
    elif sources:
        locals_, chunks = [], []
        for src in sources:
            for local, lines in source_chunks(src, exchange, data_type, day):
                locals_.append(local)
                chunks.append(lines)
        if chunks:
            local = np.concatenate(locals_)
            all_lines = pa.chunked_array(chunks, pa.string())
            order = np.argsort(local, kind="stable")
            for i in range(0, order.size, LINES_PER_WRITE):
                writer.write(all_lines.take(pa.array(order[i : i + LINES_PER_WRITE])).combine_chunks())
    writer.close()
    return writer.rows


def dataset_bytes(
    exchange: str, data_type: str, day: dt.date, symbol: str, scale: float = 0.002, tag: str = "small"
) -> bytes:
    """The gzip bytes of one dataset file, generated in memory (no cache)."""
    import io

    buf = io.BytesIO()
    write_dataset(buf, exchange, data_type, day, symbol, scale, tag)
    return buf.getvalue()


class DatasetCache:
    """Generated files on disk: ``{root}/{MODEL_VERSION}/{scale}/{exchange}/{type}/{day}/{SYMBOL}.csv.gz``."""

    def __init__(self, root: Path, scale: float, tag: str) -> None:
        self.root = Path(root)
        self.scale = scale
        self.tag = tag
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()
        self.generated = 0

    def path_for(self, exchange: str, data_type: str, day: dt.date, symbol: str) -> Path:
        safe = symbol.upper().replace("/", "-")
        return (
            self.root / MODEL_VERSION / self.tag / exchange / data_type / day.isoformat() / f"{safe}.csv.gz"
        )

    def ensure(self, exchange: str, data_type: str, day: dt.date, symbol: str) -> Path:
        """The cached file, generating it first if needed (once, even with concurrent callers)."""
        path = self.path_for(exchange, data_type, day, symbol)
        if path.exists():
            return path
        key = (exchange, data_type, day, symbol.upper())
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if not path.exists():
                csvout.atomic_write(
                    path, lambda fh: write_dataset(fh, exchange, data_type, day, symbol, self.scale, self.tag)
                )
                self.generated += 1
        with self._guard:
            self._locks.pop(key, None)
        return path
