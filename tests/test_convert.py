"""The Tardis CSV.gz -> lake converter, on the real samples of reference/tardis and on hand-made malformed files.

Expected values come from Python's csv module reading the same text (an independent parser), not from the
converter's own output.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import CSV_COLUMNS, SCHEMAS
from mdth_engine.stages.convert import BadRowsError, ConvertResult, SourceError, convert_file
from mdth_engine.stages.convert_rows import analyse, layout_for
from mdth_engine.stages.convert_source import Chunk

SAMPLES = Path(__file__).parent / "data" / "tardis_samples"  # copies of ../shared/reference/tardis/samples
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TRADES_HEADER = ",".join(CSV_COLUMNS["trades"])

# (sample file, data type, exchange, dataset symbol)
CASES = [
    ("bitmex_trades_2020-03-01_XBTUSD.head.csv", "trades", "bitmex", "XBTUSD"),
    (
        "docs_preview/binance-futures_liquidations_2021-09-19_BTCUSDT.docs_preview.csv",
        "liquidations",
        "binance-futures",
        "BTCUSDT",
    ),
    (
        "binance-futures_book_snapshot_5_2020-09-01_BTCUSDT.head.csv",
        "book_snapshot_5",
        "binance-futures",
        "BTCUSDT",
    ),
    (
        "binance-futures_book_snapshot_25_2020-09-01_BTCUSDT.head.csv",
        "book_snapshot_25",
        "binance-futures",
        "BTCUSDT",
    ),
    (
        "docs_preview/deribit_book_snapshot_25_2020-09-12_BTC-PERPETUAL.docs_preview.csv",
        "book_snapshot_25",
        "deribit",
        "BTC-PERPETUAL",
    ),
    ("huobi-dm-swap_quotes_2020-05-01_BTC-USD.head.csv", "quotes", "huobi-dm-swap", "BTC-USD"),
    (
        "docs_preview/huobi-dm-swap_quotes_2020-04-01_BTC-USD.docs_preview.csv",
        "quotes",
        "huobi-dm-swap",
        "BTC-USD",
    ),
    (
        "huobi-dm-swap_quotes_2020-05-01_BTC-USD.head.csv",
        "book_ticker",
        "huobi-dm-swap",
        "BTC-USD",
    ),  # same header
    (
        "docs_preview/bitmex_derivative_ticker_2020-04-01_ETHUSD.docs_preview.csv",
        "derivative_ticker",
        "bitmex",
        "ETHUSD",
    ),
    ("synthetic_or_edited/nautilus_derivative_ticker_synthetic.csv", "derivative_ticker", "bitmex", "XBTUSD"),
    (
        "deribit_incremental_book_L2_2020-04-01_BTC-PERPETUAL.head.csv",
        "incremental_book_L2",
        "deribit",
        "BTC-PERPETUAL",
    ),
    (
        "docs_preview/deribit_incremental_book_L2_2020-04-01_BTC-PERPETUAL.docs_preview.csv",
        "incremental_book_L2",
        "deribit",
        "BTC-PERPETUAL",
    ),
    (
        "synthetic_or_edited/nautilus_incremental_book_L2_synthetic_resnapshot.csv",
        "incremental_book_L2",
        "binance-futures",
        "BTCUSDT",
    ),
    (
        "docs_preview/deribit_options_chain_2020-06-08_OPTIONS.docs_preview.csv",
        "options_chain",
        "deribit",
        "OPTIONS",
    ),
    (
        "issue_excerpts/deribit_options_chain_2024-01-01_OPTIONS.issue_excerpt.csv",
        "options_chain",
        "deribit",
        "OPTIONS",
    ),
    ("synthetic_or_edited/nautilus_options_chain_edited.csv", "options_chain", "deribit", "OPTIONS"),
]

# Canonical keys of the sample options, spelled out from DESIGN.md section 3 (not computed by the code under test).
OPTION_KEYS = {
    "BTC-9JUN20-9875-P": "DERIBIT:OPTION:BTC-USD-200609-9875-PUT",
    "BTC-9JUN20-9875-C": "DERIBIT:OPTION:BTC-USD-200609-9875-CALL",
    "BTC-9JUN20-9750-C": "DERIBIT:OPTION:BTC-USD-200609-9750-CALL",
    "BTC-9JUN20-9750-P": "DERIBIT:OPTION:BTC-USD-200609-9750-PUT",
    "BTC-9JUN20-9625-P": "DERIBIT:OPTION:BTC-USD-200609-9625-PUT",
    "BTC-9JUN20-9625-C": "DERIBIT:OPTION:BTC-USD-200609-9625-CALL",
    "BTC-9JUN20-10000-C": "DERIBIT:OPTION:BTC-USD-200609-10000-CALL",
    "BTC-9JUN20-9500-C": "DERIBIT:OPTION:BTC-USD-200609-9500-CALL",
    "BTC-9JUN20-9500-P": "DERIBIT:OPTION:BTC-USD-200609-9500-PUT",
    "BTC-10JUN20-10000-C": "DERIBIT:OPTION:BTC-USD-200610-10000-CALL",
    "BTC-27SEP24-160000-P": "DERIBIT:OPTION:BTC-USD-240927-160000-PUT",
    "BTC-27SEP24-140000-P": "DERIBIT:OPTION:BTC-USD-240927-140000-PUT",
    "BTC-27SEP24-95000-P": "DERIBIT:OPTION:BTC-USD-240927-95000-PUT",
    "ETH-9JUN20-250-P": "DERIBIT:OPTION:ETH-USD-200609-250-PUT",
    "ETH-9JUN20-300-C": "DERIBIT:OPTION:ETH-USD-200609-300-CALL",
}


# --- helpers -------------------------------------------------------------------------------------------------


def gz(tmp_path: Path, text: str | bytes, name: str = "src.csv.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text))
    return path


class Collect:
    """A sink that keeps every (group, batch) it is handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, pa.RecordBatch]] = []

    def __call__(self, group: str | None, batch: pa.RecordBatch) -> None:
        self.calls.append((group, batch))

    def rows(self, group: str | None = None, *, every: bool = False) -> list[dict]:
        out: list[dict] = []
        for g, batch in self.calls:
            if every or g == group:
                out.extend(batch.to_pylist())
        return out


def lake_name(csv_name: str) -> str:
    """``asks[0].price`` -> ``ask_price_1`` (written out here so the test does not reuse the code's mapping)."""
    if csv_name[:5] in ("asks[", "bids["):
        index = int(csv_name[5 : csv_name.index("]")])
        return f"{csv_name[:3]}_{csv_name.rsplit('.', 1)[1]}_{index + 1}"
    return csv_name


def expected_rows(text: str, data_type: str) -> list[dict]:
    """The lake rows a CSV text must become, read with the csv module."""
    schema = SCHEMAS[data_type]
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    rows = []
    for cells in reader:
        row: dict = {}
        for name, cell in zip(header, cells, strict=True):
            if name == "exchange" or (name == "symbol" and data_type != "options_chain"):
                continue
            name = lake_name(name)
            kind = schema.field(name).type
            if cell == "":
                row[name] = None
            elif pa.types.is_timestamp(kind):
                row[name] = EPOCH + dt.timedelta(microseconds=int(cell))
            elif pa.types.is_floating(kind):
                row[name] = float(cell)
            elif pa.types.is_boolean(kind):
                row[name] = {"true": True, "false": False}[cell]
            else:
                row[name] = cell
        if data_type == "options_chain":
            row["instrument_key"] = OPTION_KEYS[row["symbol"]]
        rows.append({field.name: row[field.name] for field in schema})
    return rows


def run(src: Path, data_type: str, exchange: str, symbol: str, **kwargs) -> tuple[ConvertResult, Collect]:
    sink = Collect()
    result = convert_file(src, data_type, exchange=exchange, symbol=symbol, sink=sink, **kwargs)
    return result, sink


def trades_lines(n: int, start_us: int = 1_600_000_000_000_000) -> list[str]:
    return [
        f"binance-futures,BTCUSDT,{start_us + i * 1000},{start_us + i * 1000 + 7},{900 + i},"
        f"{'buy' if i % 3 else 'sell'},{10000 + i / 100},{(i % 17) / 1000 + 0.001}"
        for i in range(n)
    ]


# --- every data type, from the real samples ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "data_type", "exchange", "symbol"), CASES, ids=[f"{c[1]}:{Path(c[0]).stem}" for c in CASES]
)
def test_samples_convert_to_the_lake_schema_with_the_csv_values(
    tmp_path, sample, data_type, exchange, symbol
):
    text = (SAMPLES / sample).read_text()
    src = gz(tmp_path, text)
    result, sink = run(src, data_type, exchange, symbol)

    assert sink.calls and all(batch.schema.equals(SCHEMAS[data_type]) for _, batch in sink.calls)
    want = expected_rows(text, data_type)
    if data_type == "options_chain":  # one group per underlying, source order within each
        chains = {
            f"DERIBIT:OPTION_CHAIN:{'-'.join(r['instrument_key'].split(':')[2].split('-')[:2])}" for r in want
        }
        for chain in chains:
            prefix = chain.replace("OPTION_CHAIN", "OPTION") + "-"
            assert sink.rows(chain) == [r for r in want if r["instrument_key"].startswith(prefix)]
        assert len(sink.rows(every=True)) == len(want)
    assert result.rows == len(want) and result.bad_rows == 0
    assert result.source_bytes == src.stat().st_size
    assert result.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    local = [int((r["local_timestamp"] - EPOCH) / dt.timedelta(microseconds=1)) for r in want]
    assert (result.first_timestamp_us, result.last_timestamp_us) == (min(local), max(local))
    if data_type != "options_chain":
        assert all(group is None for group, _ in sink.calls)
        assert sink.rows(None) == want  # per-instrument data keeps the source order exactly
        assert result.outputs == {symbol: len(want)}


def test_book_levels_are_one_based_best_first(tmp_path):
    text = (SAMPLES / "binance-futures_book_snapshot_5_2020-09-01_BTCUSDT.head.csv").read_text()
    _, sink = run(gz(tmp_path, text), "book_snapshot_5", "binance-futures", "BTCUSDT")
    first = sink.rows()[0]
    # line 2 of the file: asks[0].price=11657.08 ... bids[4].amount=0.111 (the last cell)
    assert first["ask_price_1"] == 11657.08 and first["ask_amount_1"] == 1.714
    assert first["bid_price_1"] == 11657.07 and first["bid_amount_1"] == 10.896
    assert first["ask_price_5"] == 11657.92 and first["bid_amount_5"] == 0.111
    assert "ask_price_0" not in first and "asks[0].price" not in first


def test_empty_cells_become_nulls(tmp_path):
    text = (SAMPLES / "issue_excerpts/deribit_options_chain_2024-01-01_OPTIONS.issue_excerpt.csv").read_text()
    _, sink = run(gz(tmp_path, text), "options_chain", "deribit", "OPTIONS")
    rows = sink.rows("DERIBIT:OPTION_CHAIN:BTC-USD")
    assert [r["bid_price"] for r in rows] == [None, 0.0001, 0.0002]
    assert all(r["ask_price"] is None and r["ask_iv"] is None and r["bid_iv"] is None for r in rows)
    assert rows[0]["gamma"] == 0.0  # a zero is a value, not a null
    text = (
        SAMPLES / "docs_preview/binance-futures_liquidations_2021-09-19_BTCUSDT.docs_preview.csv"
    ).read_text()
    _, sink = run(gz(tmp_path, text), "liquidations", "binance-futures", "BTCUSDT")
    assert [r["id"] for r in sink.rows()] == [None] * 9


def test_options_chain_is_split_per_underlying_with_instrument_keys(tmp_path):
    text = (SAMPLES / "synthetic_or_edited/nautilus_options_chain_edited.csv").read_text()
    result, sink = run(gz(tmp_path, text), "options_chain", "deribit", "OPTIONS")
    btc, eth = "DERIBIT:OPTION_CHAIN:BTC-USD", "DERIBIT:OPTION_CHAIN:ETH-USD"
    assert {group for group, _ in sink.calls} == {btc, eth}
    assert result.outputs == {btc: 5, eth: 2} and result.rows == 7
    for group, batch in sink.calls:
        assert batch.schema.field("instrument_key").type == pa.dictionary(pa.int32(), pa.string())
        assert all(
            key.startswith(group.replace("OPTION_CHAIN", "OPTION") + "-")
            for key in batch.column("instrument_key").to_pylist()
        )
    want = expected_rows(text, "options_chain")
    # source order within each group
    assert sink.rows(btc) == [r for r in want if r["symbol"].startswith("BTC-")]
    assert sink.rows(eth) == [r for r in want if r["symbol"].startswith("ETH-")]
    assert [r["instrument_key"] for r in sink.rows(eth)] == [
        "DERIBIT:OPTION:ETH-USD-200609-250-PUT",
        "DERIBIT:OPTION:ETH-USD-200609-300-CALL",
    ]


def test_options_chain_split_holds_across_many_chunks(tmp_path):
    """Small blocks: many chunks, each with its own dictionaries; rows still land in their underlying."""
    lines = [",".join(CSV_COLUMNS["options_chain"])]
    for i in range(3000):
        base = ("BTC", "ETH", "SOL_USDC")[i % 3]
        strike = 1000 + (i % 40) * 25
        lines.append(
            f"deribit,{base}-28JUN24-{strike}-{'C' if i % 2 else 'P'},{1_719_000_000_000_000 + i},{1_719_000_000_000_000 + i},"
            f"{'call' if i % 2 else 'put'},{strike},1719561600000000,1,,0.01,2,50,0.02,3,55,0.015,52,{base}-28JUN24,3000,0.5,0.001,1,-2,0.1"
        )
    result, sink = run(
        gz(tmp_path, "\n".join(lines) + "\n"), "options_chain", "deribit", "OPTIONS", block_size=4096
    )
    assert result.outputs == {
        "DERIBIT:OPTION_CHAIN:BTC-USD": 1000,
        "DERIBIT:OPTION_CHAIN:ETH-USD": 1000,
        "DERIBIT:OPTION_CHAIN:SOL-USDC": 1000,
    }
    for group, batch in sink.calls:
        prefix = {"BTC-USD": "BTC-", "ETH-USD": "ETH-", "SOL-USDC": "SOL_USDC-"}[group.rsplit(":", 1)[1]]
        assert all(s.startswith(prefix) for s in batch.column("symbol").to_pylist())
        stamps = batch.column("local_timestamp").to_pylist()
        assert stamps == sorted(stamps)


# --- empty, header, unit --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", TRADES_HEADER.encode(), (TRADES_HEADER + "\n").encode()],
    ids=["no-header", "header-no-newline", "header"],
)
def test_an_empty_source_is_a_valid_empty_result(tmp_path, content):
    src = gz(tmp_path, content)
    result, sink = run(src, "trades", "binance-futures", "BTCUSDT")
    assert sink.calls == []
    assert result.rows == 0 and result.bad_rows == 0 and result.outputs == {}
    assert result.first_timestamp_us is None and result.last_timestamp_us is None
    assert result.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


def test_a_zero_byte_file_is_an_empty_result(tmp_path):
    src = tmp_path / "empty.csv.gz"
    src.write_bytes(b"")
    result, _ = run(src, "trades", "binance-futures", "BTCUSDT")
    assert result.rows == 0 and result.source_bytes == 0


def test_a_header_that_differs_fails_and_names_the_difference(tmp_path):
    text = TRADES_HEADER.replace("amount", "qty") + "\n" + trades_lines(1)[0] + "\n"
    with pytest.raises(SourceError) as info:
        run(gz(tmp_path, text), "trades", "binance-futures", "BTCUSDT")
    assert info.value.retryable is False
    assert "line 1" in str(info.value) and "'amount'" in str(info.value) and "'qty'" in str(info.value)
    swapped = TRADES_HEADER.replace("price,amount", "amount,price") + "\n"
    with pytest.raises(SourceError, match="column 7 is 'amount', expected 'price'"):
        run(gz(tmp_path, swapped), "trades", "binance-futures", "BTCUSDT")


def test_rows_of_another_symbol_or_exchange_are_bad_rows(tmp_path):
    lines = trades_lines(5)
    lines[2] = lines[2].replace("BTCUSDT", "ETHUSDT")
    src = gz(tmp_path, "\n".join([TRADES_HEADER, *lines]) + "\n")
    with pytest.raises(BadRowsError) as info:
        run(src, "trades", "binance-futures", "BTCUSDT")
    assert str(info.value) == f"{src}: line 4: symbol 'ETHUSDT' is not 'BTCUSDT'"
    lines = trades_lines(5)
    src = gz(tmp_path, "\n".join([TRADES_HEADER, *lines]) + "\n")
    with pytest.raises(BadRowsError, match="line 2: exchange 'binance-futures' is not 'binance'") as info:
        run(src, "trades", "binance", "BTCUSDT")
    assert info.value.count == 5


def test_the_file_may_spell_the_symbol_as_the_exchange_does(tmp_path):
    """Dataset ids replace '/' and ':' with '-'; rows keep the exchange's spelling (FORMATS.md section 3)."""
    lines = [line.replace("BTCUSDT", "XBT/USD") for line in trades_lines(4)]
    result, _ = run(
        gz(tmp_path, "\n".join([TRADES_HEADER, *lines]) + "\n"), "trades", "binance-futures", "XBT-USD"
    )
    assert result.rows == 4 and result.bad_rows == 0


# --- broken sources --------------------------------------------------------------------------------------------


def test_a_truncated_gzip_is_a_retryable_source_error(tmp_path):
    body = "\n".join([TRADES_HEADER, *trades_lines(20000)]) + "\n"
    whole = gzip.compress(body.encode())
    for cut in (len(whole) // 2, len(whole) - 3):
        src = tmp_path / f"cut{cut}.csv.gz"
        src.write_bytes(whole[:cut])
        with pytest.raises(SourceError, match="truncated gzip") as info:
            run(src, "trades", "binance-futures", "BTCUSDT", block_size=64 << 10)
        assert info.value.retryable is True


def test_corrupt_or_non_gzip_bytes_are_a_retryable_source_error(tmp_path):
    whole = bytearray(gzip.compress(("\n".join([TRADES_HEADER, *trades_lines(2000)]) + "\n").encode()))
    whole[len(whole) // 2 : len(whole) // 2 + 64] = bytes(64)
    src = tmp_path / "corrupt.csv.gz"
    src.write_bytes(bytes(whole))
    with pytest.raises(SourceError) as info:
        run(src, "trades", "binance-futures", "BTCUSDT")
    assert info.value.retryable is True
    html = tmp_path / "error.csv.gz"
    html.write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(SourceError) as info:
        run(html, "trades", "binance-futures", "BTCUSDT")
    assert info.value.retryable is True


# --- bad rows ----------------------------------------------------------------------------------------------------


def broken_trades() -> tuple[list[str], dict[int, str]]:
    """A trades file body with bad rows; returns (lines incl. header, {file line: reason})."""
    lines = [TRADES_HEADER, *trades_lines(4000)]
    bad = {
        40: (
            "binance-futures,BTCUSDT,1600000000039000,1600000000039007,939,buy,10000.39",
            "expected 8 columns, found 7",
        ),
        777: (
            "binance-futures,BTCUSDT,1600000000775000,1600000000775007,1675,sell,10007.75,0.1,extra",
            "expected 8 columns, found 9",
        ),
        1500: (
            "binance-futures,BTCUSDT,1600000001498000,1600000001498007,2398,buy,1O000.5,0.2",
            "price '1O000.5' is not a number",
        ),
        2222: (
            "binance-futures,BTCUSDT,1600000002220000,1600000002220007,3120,hold,10022.2,0.3",
            "side 'hold' is not one of buy, sell, unknown",
        ),
        3000: ("binance-futures,BTCUSDT,,1600000002998007,3898,buy,10029.98,0.4", "timestamp is empty"),
        3500: (
            "binance-futures,BTCUSDT,16000000034980x0,1600000003498007,4398,buy,10034.98,0.4",
            "timestamp '16000000034980x0' is not an integer",
        ),
        3900: (
            "binance-futures,BTCUSDT,1600000003898000,1600000003898007,4798,,10038.98,0.4",
            "side is empty",
        ),
    }
    for line, (text, _) in bad.items():
        lines[line - 1] = text
    return lines, {line: reason for line, (_, reason) in bad.items()}


@pytest.mark.parametrize("block_size", [8 << 20, 8 << 10], ids=["one-chunk", "many-chunks"])
def test_bad_rows_fail_the_file_with_line_and_reason(tmp_path, block_size):
    lines, bad = broken_trades()
    src = gz(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(BadRowsError) as info:
        run(src, "trades", "binance-futures", "BTCUSDT", block_size=block_size)
    first = min(bad)
    assert str(info.value).startswith(f"{src}: line {first}: {bad[first]} (")
    assert (info.value.line, info.value.reason, info.value.count) == (first, bad[first], len(bad))
    assert not list(tmp_path.glob("*.bad.csv"))


@pytest.mark.parametrize("line", [40, 777, 1500, 2222, 3000, 3500, 3900])
def test_each_kind_of_bad_row_is_reported_with_its_reason(tmp_path, line):
    lines, bad = broken_trades()
    clean = [TRADES_HEADER, *trades_lines(4000)]
    clean[line - 1] = lines[line - 1]
    src = gz(tmp_path, "\n".join(clean) + "\n")
    with pytest.raises(BadRowsError) as info:
        run(src, "trades", "binance-futures", "BTCUSDT", block_size=16 << 10)
    assert str(info.value) == f"{src}: line {line}: {bad[line]}"


def test_quarantine_keeps_good_rows_and_the_exact_bad_lines(tmp_path):
    lines, bad = broken_trades()
    text = "\n".join(lines) + "\n"
    src = gz(tmp_path, text)
    quarantine = tmp_path / "spool" / "quarantine" / "src.bad.csv"
    result, sink = run(
        src,
        "trades",
        "binance-futures",
        "BTCUSDT",
        on_bad_rows="quarantine",
        quarantine_path=quarantine,
        block_size=16 << 10,
    )
    assert result.bad_rows == len(bad) and result.quarantine_path == quarantine
    assert quarantine.read_text() == "".join(lines[n - 1] + "\n" for n in sorted(bad))
    good_text = "\n".join(line for n, line in enumerate(lines, start=1) if n not in bad) + "\n"
    want = expected_rows(good_text, "trades")
    assert sink.rows() == want and result.rows == len(want) == 4000 - len(bad)
    assert result.outputs == {"BTCUSDT": len(want)}
    assert not [p for p in quarantine.parent.iterdir() if p.name.endswith(".tmp")]


def test_quarantine_default_path_is_next_to_the_spool_file(tmp_path):
    lines, bad = broken_trades()
    src = gz(tmp_path, "\n".join(lines) + "\n", name="binance-futures_trades_2020-09-13_BTCUSDT.csv.gz")
    result, _ = run(src, "trades", "binance-futures", "BTCUSDT", on_bad_rows="quarantine")
    assert result.quarantine_path == src.with_name(src.name + ".bad.csv")
    assert len(result.quarantine_path.read_text().splitlines()) == len(bad)


def test_no_quarantine_file_without_bad_rows(tmp_path):
    src = gz(tmp_path, "\n".join([TRADES_HEADER, *trades_lines(10)]) + "\n")
    result, _ = run(src, "trades", "binance-futures", "BTCUSDT", on_bad_rows="quarantine")
    assert result.bad_rows == 0 and result.quarantine_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.csv.gz"]
    stale = tmp_path / "src.csv.gz.bad.csv"  # from an earlier, broken download of the same source
    stale.write_text("old bad line\n")
    run(src, "trades", "binance-futures", "BTCUSDT", on_bad_rows="quarantine")
    assert not stale.exists()


def test_unknown_option_symbols_and_types_are_bad_rows(tmp_path):
    text = (
        (SAMPLES / "docs_preview/deribit_options_chain_2020-06-08_OPTIONS.docs_preview.csv")
        .read_text()
        .splitlines()
    )
    text[3] = text[3].replace("BTC-9JUN20-9875-C", "BTC-PERPETUAL")
    text[5] = text[5].replace(",put,", ",straddle,")
    src = gz(tmp_path, "\n".join(text) + "\n")
    with pytest.raises(BadRowsError) as info:
        run(src, "options_chain", "deribit", "OPTIONS")
    assert str(info.value).startswith(
        f"{src}: line 4: symbol 'BTC-PERPETUAL' is not an option symbol of deribit"
    )
    assert info.value.count == 2
    result, _ = run(src, "options_chain", "deribit", "OPTIONS", on_bad_rows="quarantine")
    assert result.rows == 7 and result.bad_rows == 2


def test_invalid_utf8_is_a_bad_row(tmp_path):
    lines = [TRADES_HEADER.encode(), *(line.encode() for line in trades_lines(5))]
    lines[3] = lines[3].replace(b",902,", b",9\xff2,")
    assert b"\xff" in lines[3]
    src = gz(tmp_path, b"\n".join(lines) + b"\n")
    with pytest.raises(BadRowsError, match="line 4: not valid UTF-8 text"):
        run(src, "trades", "binance-futures", "BTCUSDT")
    quarantine = tmp_path / "q.csv"
    result, _ = run(
        src, "trades", "binance-futures", "BTCUSDT", on_bad_rows="quarantine", quarantine_path=quarantine
    )
    assert quarantine.read_bytes() == lines[3] + b"\n" and result.rows == 4


def test_blank_lines_are_skipped_and_line_numbers_stay_exact(tmp_path):
    lines = [TRADES_HEADER, *trades_lines(6)]
    lines.insert(3, "")
    lines[6] = lines[6].replace(",buy,", ",bye,").replace(",sell,", ",bye,")
    with pytest.raises(BadRowsError, match=r"line 7: side 'bye'"):
        run(gz(tmp_path, "\n".join(lines) + "\n"), "trades", "binance-futures", "BTCUSDT")


# --- both paths agree --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "data_type", "exchange", "symbol"), [CASES[0], CASES[3], CASES[8], CASES[10], CASES[15]]
)
def test_the_line_by_line_path_equals_the_fast_path(tmp_path, sample, data_type, exchange, symbol):
    """The slow path (used for chunks with bad rows) types clean rows exactly like the pyarrow fast path."""
    text = (SAMPLES / sample).read_text()
    _, sink = run(gz(tmp_path, text), data_type, exchange, symbol)
    body = text.split("\n", 1)[1].encode()
    body = body if body.endswith(b"\n") else body + b"\n"
    from mdth_engine.stages.convert import _Plan

    plan = _Plan(tmp_path / "x", layout_for(data_type), exchange, symbol, 1 << 20)
    found = analyse(Chunk(b"", body, len(body)), 2, layout_for(data_type), plan.rules)
    assert found.bad_lines.size == 0
    fast = pa.Table.from_batches([b for _, b in sink.calls]).drop_columns(
        ["instrument_key"] if data_type == "options_chain" else []
    )
    slow = found.table.select(fast.column_names)
    if data_type == "options_chain":  # the fast path splits by underlying; compare as sets of rows
        assert sorted(map(repr, slow.to_pylist())) == sorted(map(repr, fast.to_pylist()))
    else:
        assert slow.to_pylist() == fast.to_pylist()


def test_numbers_read_the_same_on_both_paths(tmp_path):
    """Spellings pyarrow accepts (exponents, '+', padding, nan) stay accepted when a chunk goes line by line."""
    odd = ["1e3", "+2.5", " 7", "8\t", ".5", "5.", "nan", "-inf", "0012.50"]
    lines = [TRADES_HEADER, *trades_lines(len(odd))]
    lines[1:] = [line.rsplit(",", 2)[0] + f",{value},1" for line, value in zip(lines[1:], odd, strict=True)]
    _, fast = run(gz(tmp_path, "\n".join(lines) + "\n"), "trades", "binance-futures", "BTCUSDT")
    broken = [*lines, "binance-futures,BTCUSDT,1,2,3,buy,abc,1"]
    result, slow = run(
        gz(tmp_path, "\n".join(broken) + "\n", "b.csv.gz"),
        "trades",
        "binance-futures",
        "BTCUSDT",
        on_bad_rows="quarantine",
    )
    assert result.bad_rows == 1
    assert repr([r["price"] for r in fast.rows()]) == repr([r["price"] for r in slow.rows()])
    assert repr([r["price"] for r in fast.rows()]) == repr(
        [1000.0, 2.5, 7.0, 8.0, 0.5, 5.0, float("nan"), float("-inf"), 12.5]
    )


def test_crlf_line_endings_convert_like_lf(tmp_path):
    text = (SAMPLES / "bitmex_trades_2020-03-01_XBTUSD.head.csv").read_text()
    _, lf = run(gz(tmp_path, text), "trades", "bitmex", "XBTUSD")
    _, crlf = run(gz(tmp_path, text.replace("\n", "\r\n"), "crlf.csv.gz"), "trades", "bitmex", "XBTUSD")
    assert crlf.rows() == lf.rows()


# --- pipeline behaviour ------------------------------------------------------------------------------------------


def test_many_chunks_keep_source_order_and_count_every_row(tmp_path):
    lines = [TRADES_HEADER, *trades_lines(50_000)]
    result, sink = run(
        gz(tmp_path, "\n".join(lines) + "\n"), "trades", "binance-futures", "BTCUSDT", block_size=64 << 10
    )
    table = pa.Table.from_batches([b for _, b in sink.calls])
    assert result.rows == table.num_rows == 50_000 and len(sink.calls) > 10
    assert table.column("id").to_pylist() == [str(900 + i) for i in range(50_000)]


def test_a_failing_sink_stops_the_pipeline_threads(tmp_path):
    src = gz(tmp_path, "\n".join([TRADES_HEADER, *trades_lines(50_000)]) + "\n")
    before = threading.active_count()

    def sink(group, batch):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        convert_file(
            src, "trades", exchange="binance-futures", symbol="BTCUSDT", sink=sink, block_size=16 << 10
        )
    assert threading.active_count() == before


def test_usage_errors(tmp_path):
    src = gz(tmp_path, TRADES_HEADER + "\n")
    with pytest.raises(UsageError, match="unknown data type"):
        run(src, "tradez", "binance-futures", "BTCUSDT")
    with pytest.raises(UsageError, match="--on-bad-rows"):
        run(src, "trades", "binance-futures", "BTCUSDT", on_bad_rows="ignore")
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "missing.csv.gz", "trades", "binance-futures", "BTCUSDT")


def test_clean_chunks_take_the_fast_path(tmp_path, monkeypatch):
    """A clean file never needs the line-by-line path, whatever the chunk boundaries (which split lines)."""
    import mdth_engine.stages.convert as convert_module

    def refuse(*args, **kwargs):
        raise AssertionError("a clean chunk went line by line")

    monkeypatch.setattr(convert_module, "analyse", refuse)
    lines = [TRADES_HEADER, *trades_lines(20_000)]
    for block_size in (1500, 4096, 64 << 10):
        result, _ = run(
            gz(tmp_path, "\n".join(lines) + "\n"),
            "trades",
            "binance-futures",
            "BTCUSDT",
            block_size=block_size,
        )
        assert result.rows == 20_000


def test_a_chunk_whose_first_line_is_split_is_still_checked(tmp_path):
    """The first line of a chunk starts in the previous block; its symbol is still compared."""
    lines = [TRADES_HEADER, *trades_lines(400)]
    for n in range(2, len(lines), 37):
        lines[n] = lines[n].replace("BTCUSDT", "ETHUSDT")
    bad = [n + 1 for n in range(2, len(lines), 37)]
    for block_size in (1024, 1500, 2048, 3000):
        with pytest.raises(BadRowsError) as info:
            run(
                gz(tmp_path, "\n".join(lines) + "\n"),
                "trades",
                "binance-futures",
                "BTCUSDT",
                block_size=block_size,
            )
        assert (info.value.line, info.value.count) == (bad[0], len(bad))


def test_chunk_prefix_count_spans_head_and_body():
    prefix = b"binance-futures,BTCUSDT,"
    line = prefix + b"1,2,3,buy,4,5\n"
    other = b"binance-futures,ETHUSDT,1,2,3,buy,4,5\n"
    body = line[10:] + line + other + line
    chunk = Chunk(line[:10], body, len(body))
    assert chunk.data == line + line + other + line
    assert chunk.lines_starting_with(prefix) == 3
    assert Chunk(b"", other + line, len(other + line)).lines_starting_with(prefix) == 1
    assert Chunk(other[:5], other[5:] + line, len(other) - 5 + len(line)).lines_starting_with(prefix) == 1
    assert bytes(chunk.arrow()) == chunk.data


MEMORY_PROBE = r"""
import sys, json
from pathlib import Path
from isal import igzip
from mdth_engine.core.schemas import CSV_COLUMNS
from mdth_engine.stages.convert import convert_file

src = Path(sys.argv[1])
block = "".join(
    f"binance-futures,BTCUSDT,{1600000000000000 + i},{1600000000000100 + i},{i},buy,10000.5,0.25\n" for i in range(12000)
).encode()
with igzip.open(src, "wb", compresslevel=0) as f:
    f.write((",".join(CSV_COLUMNS["trades"]) + "\n").encode())
    for _ in range(400):
        f.write(block)

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

base = rss()
result = convert_file(src, "trades", exchange="binance-futures", symbol="BTCUSDT", sink=lambda g, b: None)
print(json.dumps({"rows": result.rows, "text_mb": len(block) * 400 // 2**20, "base": base, "peak": hwm()}))
from mdth_engine.core.shutdown import leave
leave(0)  # as mdth's processes end: no native teardown (see core.shutdown)
"""


def test_a_large_file_streams_in_bounded_memory(tmp_path):
    """~370 MiB of CSV text converts with well under that much extra memory (never materialised whole)."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "big.csv.gz")],
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["rows"] == 4_800_000 and probe["text_mb"] > 350
    assert probe["peak"] - probe["base"] < 200, probe


def test_side_columns_share_one_fixed_dictionary(tmp_path):
    """Every batch carries the same sorted domain as dictionary (the writer keeps one dictionary per file)."""
    lines = [TRADES_HEADER, *trades_lines(3000)]
    lines[5] = lines[5].replace(",buy,", ",unknown,").replace(",sell,", ",unknown,")
    _, sink = run(
        gz(tmp_path, "\n".join(lines) + "\n"), "trades", "binance-futures", "BTCUSDT", block_size=8 << 10
    )
    assert {tuple(b.column("side").dictionary.to_pylist()) for _, b in sink.calls} == {
        ("buy", "sell", "unknown")
    }
    assert [r["side"] for r in sink.rows()] == [line.split(",")[5] for line in lines[1:]]


def test_line_numbers_stay_exact_across_chunks_with_blank_lines(tmp_path):
    lines = [TRADES_HEADER, *trades_lines(3000)]
    for n in (50, 51, 1200):  # blank lines (they are skipped, not bad, but they are lines)
        lines[n - 1] = ""
    lines[2899] = lines[2899].replace(",buy,", ",bid,").replace(",sell,", ",bid,")
    with pytest.raises(BadRowsError) as info:
        run(gz(tmp_path, "\n".join(lines) + "\n"), "trades", "binance-futures", "BTCUSDT", block_size=4096)
    assert (info.value.line, info.value.count) == (2900, 1)


def test_a_lone_carriage_return_is_a_bad_line_not_two_rows(tmp_path):
    lines = [TRADES_HEADER, *trades_lines(3000)]
    lines[99] = lines[99] + "\r" + lines[100]  # two records on one line, split by a bare CR
    del lines[100]
    lines[1999] = lines[1999].replace(",buy,", ",bid,").replace(",sell,", ",bid,")
    src = gz(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(BadRowsError) as info:
        run(src, "trades", "binance-futures", "BTCUSDT", block_size=4096)
    assert (info.value.line, info.value.reason, info.value.count) == (100, "expected 8 columns, found 15", 2)
    quarantine = tmp_path / "q.csv"
    result, _ = run(
        src,
        "trades",
        "binance-futures",
        "BTCUSDT",
        block_size=4096,
        on_bad_rows="quarantine",
        quarantine_path=quarantine,
    )
    assert quarantine.read_bytes() == (lines[99] + "\n" + lines[1999] + "\n").encode()
    assert result.rows == 2999 - 2


NO_PANDAS_PROBE = r"""
import gzip, sys
from pathlib import Path
from mdth_engine.stages.convert import convert_file
for name, data_type, exchange, symbol in [
    ("bitmex_trades_2020-03-01_XBTUSD.head.csv", "trades", "bitmex", "XBTUSD"),
    ("synthetic_or_edited/nautilus_options_chain_edited.csv", "options_chain", "deribit", "OPTIONS"),
]:
    src = Path(sys.argv[1]) / (data_type + ".csv.gz")
    src.write_bytes(gzip.compress((Path(sys.argv[2]) / name).read_bytes()))
    convert_file(src, data_type, exchange=exchange, symbol=symbol, sink=lambda g, b: None)
print("pandas" in sys.modules)
from mdth_engine.core.shutdown import leave
leave(0)  # as mdth's processes end: no native teardown (see core.shutdown)
"""


def test_clean_files_do_not_import_pandas(tmp_path):
    """pa.array/pa.scalar import pandas on first use (~0.2 s); the fast path avoids them."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", NO_PANDAS_PROBE, str(tmp_path), str(SAMPLES)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
