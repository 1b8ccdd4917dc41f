"""Content checks of one present tick file, from its footer and one streaming scan (``scan.py``).

Rules (each is one report row; ``error`` makes ``mdth validate`` exit 1):

- file: the footer's provenance agrees with the file (rows, first/last local_timestamp, instrument, data
  type) and the columns are the lake schema's; an older schema version is a warning.
- local_timestamp: never decreases, and lies inside the UTC day (files are split by arrival time).
- exchange_timestamp: inside [day start - 10 s, day end + 10 s) (``SKEW_US``: a day's first rows may carry
  the previous day's exchange time; exchange clocks run a little ahead); it need not be monotonic.
- values: prices and sizes positive (book levels: both or neither of price and amount; derivative and option
  fields non-negative or positive where given; no infinities).
- side: trades/liquidations ``buy|sell|unknown``, incremental book ``bid|ask``, options ``call|put``.
- duplicate_ids: no trade id twice in a file (64-bit hashes of the ids; Tardis de-duplicates CSV trades).
- book: crossed (bid > ask) or locked (bid == ask) tops, and snapshot levels out of order. Levels out of
  order, or more than ``CROSSED_ERROR_SHARE`` of rows crossed, is an error; fewer crossed or any locked: a
  warning.
- silence: a gap in local_timestamp longer than max(60 s, 8 x the file's 99th-percentile gap) within the
  part of the day the instrument existed, judged when the file has at least ``SILENCE_MIN_GAPS`` rows;
  a warning, annotated with the source's incident report when one covers it.
- row_history: rows outside [0.2x, 5x] the median of the previous 7 days' files (at least 3 of them),
  skipped for liquidations, listing/expiry days and files under 100 rows; a warning.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

import numpy as np

from mdth_engine.core.schemas import SCHEMA_VERSION, schema_for
from mdth_engine.core.timeframes import us_to_datetime
from mdth_engine.validation import report as rp
from mdth_engine.validation.expected import Holding, parse_iso_us
from mdth_engine.validation.incidents import SourceFacts
from mdth_engine.validation.scan import GAP_FLOOR_US, SKEW_US, ScanStats, bin_upper_us, gap_bins

CROSSED_ERROR_SHARE = 0.001
SILENCE_FACTOR = 8.0
SILENCE_QUANTILE = 0.99
SILENCE_MIN_GAPS = 500
HISTORY_DAYS = 7
HISTORY_MIN_DAYS = 3
HISTORY_LOW, HISTORY_HIGH = 0.2, 5.0
HISTORY_MIN_ROWS = 100


def fmt_time(us: int | None) -> str:
    return "?" if us is None else us_to_datetime(us).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_clock(us: int) -> str:
    return us_to_datetime(us).strftime("%H:%M:%S")


def fmt_duration(us: float) -> str:
    s = us / 1e6
    if s >= 3600:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    if s >= 60:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{s:.1f}s"


def _row(h: Holding, check: str, status: str, detail: str, **kw: Any) -> rp.Check:
    e = h.expected
    return rp.Check(e.instrument_key, e.data_type, check, status, h.cls, rows=h.rows, detail=detail, **kw)


def schema_problem(h: Holding) -> str:
    """Why the file's columns are not the lake schema of its data type ("" when they are)."""
    assert h.metadata is not None
    try:
        actual = h.metadata.schema.to_arrow_schema()
    except Exception as exc:  # a schema pyarrow cannot map is as bad as a wrong one
        return f"unreadable schema: {exc}"
    wanted = schema_for(h.expected.data_type)
    missing = [f.name for f in wanted if f.name not in actual.names]
    if missing:
        return f"columns missing: {', '.join(missing[:5])}"
    for field in wanted:
        got = actual.field(field.name).type
        if not got.equals(field.type):
            return f"column {field.name} is {got}, not {field.type}"
    return ""


def file_check(h: Holding, stats: ScanStats | None) -> rp.Check:
    """The footer's ledger entry against the file itself."""
    e, prov = h.expected, h.provenance
    problems: list[str] = []
    problem = schema_problem(h)
    if problem:
        problems.append(problem)
    recorded = prov.get("rows")
    if recorded not in (None, "") and str(h.rows) != recorded:
        problems.append(f"the footer says {int(recorded):,} rows, the file holds {h.rows:,}")
    for name, expect in (("instrument_key", e.instrument_key), ("data_type", e.data_type)):
        if prov.get(name) and prov[name] != expect:
            problems.append(f"the footer names {name} {prov[name]!r}, the path {expect!r}")
    if stats is not None and stats.rows:
        first, last = parse_iso_us(prov.get("first_timestamp")), parse_iso_us(prov.get("last_timestamp"))
        if first is not None and first != stats.min_local_us:
            problems.append(f"the footer's first local_timestamp {fmt_time(first)} is not the data's")
        if last is not None and last != stats.max_local_us:
            problems.append(f"the footer's last local_timestamp {fmt_time(last)} is not the data's")
    if problems:
        detail = (
            "; ".join(problems) + "; the file changed after it was written: re-download: mdth validate --fix"
        )
        return _row(h, "file", rp.ERROR, detail, issues=len(problems))
    version = prov.get("schema_version")
    if version and version != SCHEMA_VERSION:
        return _row(
            h,
            "file",
            rp.WARN,
            f"written with schema version {version} (now {SCHEMA_VERSION}); "
            "re-download with mdth download --force to upgrade",
        )
    source = prov.get("source_sha256", "")
    detail = f"source sha256 {source[:12]}" if source else "no source hash in the footer"
    return _row(h, "file", rp.OK, detail)


def content_checks(h: Holding, s: ScanStats, facts: SourceFacts | None) -> list[rp.Check]:
    """Timestamps, values, domains, ids and book rows of one scanned file."""
    out = []
    # local_timestamp
    if s.local_decreases or s.local_outside or s.null_times:
        parts = []
        if s.local_decreases:
            parts.append(
                f"goes back in time {s.local_decreases:,} times (first at {fmt_time(s.first_decrease_us)})"
            )
        if s.local_outside:
            parts.append(
                f"{s.local_outside:,} rows outside the day (first {fmt_time(s.first_local_outside_us)})"
            )
        if s.null_times:
            parts.append(f"{s.null_times:,} null timestamps")
        detail = "local_timestamp " + "; ".join(parts) + ": rows reordered or mixed in; re-download"
        out.append(
            _row(
                h,
                "local_timestamp",
                rp.ERROR,
                detail,
                issues=s.local_decreases + s.local_outside + s.null_times,
            )
        )
    else:
        out.append(_row(h, "local_timestamp", rp.OK, "non-decreasing and inside the day"))
    # exchange timestamp
    outside = s.ts_early + s.ts_late
    if outside:
        detail = (
            f"{outside:,} exchange timestamps beyond the day's {SKEW_US // 1_000_000} s skew allowance "
            f"({s.ts_early:,} early, {s.ts_late:,} late; first {fmt_time(s.first_ts_outside_us)})"
        )
        out.append(_row(h, "exchange_timestamp", rp.ERROR, detail, issues=outside))
    else:
        out.append(_row(h, "exchange_timestamp", rp.OK, f"inside the day +- {SKEW_US // 1_000_000} s"))
    # values
    if s.bad_value_rows:
        worst = ", ".join(f"{c} {n:,}" for c, n in s.value_issues.most_common(3))
        detail = f"{s.bad_value_rows:,} rows with a non-positive, missing or infinite value ({worst})"
        out.append(_row(h, "values", rp.ERROR, detail, issues=s.bad_value_rows))
    else:
        out.append(_row(h, "values", rp.OK, "prices and sizes in range"))
    if s.domain_column:
        if s.domain_bad:
            examples = ", ".join(sorted(s.domain_examples))
            detail = f"{s.domain_bad:,} rows with {s.domain_column} outside its domain ({examples})"
            out.append(_row(h, "side", rp.ERROR, detail, issues=s.domain_bad))
        else:
            out.append(_row(h, "side", rp.OK, f"{s.domain_column} in its domain"))
    if h.expected.data_type in ("trades", "liquidations"):
        if s.duplicate_ids:
            detail = (
                f"{s.duplicate_ids:,} rows repeat an earlier trade id (of {s.ids_seen:,} ids); re-download"
            )
            out.append(_row(h, "duplicate_ids", rp.ERROR, detail, issues=s.duplicate_ids))
        elif s.ids_seen:
            out.append(_row(h, "duplicate_ids", rp.OK, f"{s.ids_seen:,} distinct ids"))
        else:
            out.append(_row(h, "duplicate_ids", rp.SKIP, "the source gives no ids"))
    out += _book_check(h, s)
    out.append(silence_check(h, s, facts))
    return out


def _book_check(h: Holding, s: ScanStats) -> list[rp.Check]:
    if (
        not s.book_rows
        and not s.disordered
        and h.expected.data_type
        not in (
            "book_snapshot_5",
            "book_snapshot_25",
            "quotes",
            "book_ticker",
            "options_chain",
        )
    ):
        return []
    share = s.crossed / s.book_rows if s.book_rows else 0.0
    issues = s.crossed + s.locked + s.disordered
    parts = []
    if s.crossed:
        parts.append(f"{s.crossed:,} crossed (bid > ask, {share:.4%} of two-sided rows)")
    if s.locked:
        parts.append(f"{s.locked:,} locked (bid == ask)")
    if s.disordered:
        parts.append(f"{s.disordered:,} snapshots with levels out of order")
    if not parts:
        return [_row(h, "book", rp.OK, f"{s.book_rows:,} two-sided rows, none crossed or locked")]
    status = rp.ERROR if s.disordered or share > CROSSED_ERROR_SHARE else rp.WARN
    return [_row(h, "book", status, "; ".join(parts), issues=issues, value=share, limit=CROSSED_ERROR_SHARE)]


def gap_quantile_us(histogram: np.ndarray, q: float) -> float | None:
    total = int(histogram.sum())
    if not total:
        return None
    index = int(np.searchsorted(np.cumsum(histogram), q * total))
    return bin_upper_us(min(index, len(histogram) - 1))


def silence_check(h: Holding, s: ScanStats, facts: SourceFacts | None) -> rp.Check:
    """Gaps far longer than this file's own 99th-percentile gap, inside the instrument's part of the day."""
    e = h.expected
    if s.first_local_us is None or s.last_local_us is None:
        return _row(h, "silence", rp.SKIP, "no rows")
    hist = s.gap_histogram.copy()
    gaps = list(s.long_gaps)
    for start, end in ((e.live_start_us, s.first_local_us), (s.last_local_us, e.live_end_us)):
        if end - start > 0:
            hist[gap_bins(np.array([end - start]))[0]] += 1
            if end - start > GAP_FLOOR_US:
                gaps.append((start, end))
    n_gaps = int(hist.sum())
    if n_gaps < SILENCE_MIN_GAPS:
        return _row(h, "silence", rp.SKIP, f"too few rows ({s.rows:,}) to tell a silence from a quiet spell")
    q = gap_quantile_us(hist, SILENCE_QUANTILE) or 0.0
    limit = max(float(GAP_FLOOR_US), SILENCE_FACTOR * q)
    silences = sorted((g for g in gaps if g[1] - g[0] > limit), key=lambda g: g[0] - g[1])
    if not silences:
        return _row(h, "silence", rp.OK, f"no gap longer than {fmt_duration(limit)}", limit=limit / 1e6)
    start, end = silences[0]
    total = sum(b - a for a, b in silences)
    detail = (
        f"{len(silences)} silence(s) longer than {fmt_duration(limit)} (8x the 99th-percentile gap), "
        f"{fmt_duration(total)} in all; longest {fmt_duration(end - start)} "
        f"{fmt_clock(start)}-{fmt_clock(end)} UTC"
    )
    known = facts.during(start, end) if facts else []
    if known:
        detail += f"; {known[0].describe()}"
    else:
        detail += "; not in the source's incident reports"
    return _row(
        h,
        "silence",
        rp.WARN,
        detail,
        issues=len(silences),
        value=(end - start) / 1e6,
        limit=limit / 1e6,
    )


def history_check(h: Holding, earlier: list[int]) -> rp.Check:
    """Rows against the median of the previous days' files of the same instrument and data type."""
    e = h.expected
    rows = h.rows or 0
    if e.data_type == "liquidations":
        return _row(h, "row_history", rp.SKIP, "liquidations are too sparse to compare days")
    if e.partial_day:
        return _row(h, "row_history", rp.SKIP, "the instrument listed or expired this day")
    if len(earlier) < HISTORY_MIN_DAYS:
        return _row(
            h, "row_history", rp.SKIP, f"{len(earlier)} earlier day(s) in the lake; {HISTORY_MIN_DAYS} needed"
        )
    median = statistics.median(earlier)
    if rows < HISTORY_MIN_ROWS and median < HISTORY_MIN_ROWS:
        return _row(h, "row_history", rp.SKIP, "too few rows to compare")
    ratio = rows / median if median else float("inf")
    detail = (
        f"{rows:,} rows vs a median of {median:,.0f} over the {len(earlier)} previous days ({ratio:.2f}x)"
    )
    status = rp.OK if HISTORY_LOW <= ratio <= HISTORY_HIGH else rp.WARN
    if status == rp.WARN:
        detail += f"; outside [{HISTORY_LOW}x, {HISTORY_HIGH}x]"
    return _row(
        h, "row_history", status, detail, value=ratio, limit=HISTORY_HIGH if ratio > 1 else HISTORY_LOW
    )


def earlier_rows(
    store: Any, day: dt.date, data_type: str, key: str, listing: Any, footer_rows: Any
) -> list[int]:
    """Rows of the same file on each of the previous ``HISTORY_DAYS`` days that have one (rows > 0)."""
    from mdth_engine.storage import layout

    out = []
    for back in range(1, HISTORY_DAYS + 1):
        earlier = day - dt.timedelta(days=back)
        size = listing(earlier, data_type).get(key)
        if size is None:
            continue
        rows = footer_rows(layout.raw_path(earlier, data_type, key), size)
        if rows:
            out.append(rows)
    return out
