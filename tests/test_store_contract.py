"""The ObjectStore contract, run against LocalStore and GCSStore (real client, fake-gcs-server emulator)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mdth_engine.core.errors import NotFound, StoreError, UsageError
from mdth_engine.storage.gcs import GCSStore
from mdth_engine.storage.local import LocalStore
from mdth_engine.storage.store import ObjectInfo, ObjectStore, open_store

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def _payload(n: int, seed: int = 0) -> bytes:
    """Position-dependent bytes, so a read from the wrong offset cannot look right."""
    block = bytes((i * 31 + seed) % 251 for i in range(251 * 16))
    return (block * (n // len(block) + 1))[:n]


# --- put / get / replace / stat -----------------------------------------------------------------------------


def test_put_get_stat_roundtrip(store: ObjectStore) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    info = store.put_bytes("a/b/c.bin", b"hello world")
    assert isinstance(store, ObjectStore)
    assert info.path == "a/b/c.bin" and info.size == 11
    assert info.updated.tzinfo is not None and before <= info.updated <= dt.datetime.now(dt.UTC)
    assert store.get_bytes("a/b/c.bin") == b"hello world"
    stat = store.stat("a/b/c.bin")
    assert stat is not None and stat.size == 11 and stat.generation == info.generation
    assert store.exists("a/b/c.bin")
    assert store.stat("a/b/missing.bin") is None and not store.exists("a/b/missing.bin")
    assert store.stat("a/b") is None  # a "folder" is not an object


def test_replace_is_whole_and_changes_generation(store: ObjectStore) -> None:
    first = store.put_bytes("x/obj", b"1" * 1000)
    second = store.put_bytes("x/obj", b"22")
    assert store.get_bytes("x/obj") == b"22"
    assert second.size == 2 and second.generation != first.generation
    assert [i.path for i in store.list("x/")] == ["x/obj"]


def test_empty_object(store: ObjectStore) -> None:
    store.put_bytes("e/empty", b"")
    assert store.get_bytes("e/empty") == b""
    assert store.get_range("e/empty", 0, 10) == b""
    assert store.get_tail("e/empty", 10) == b""
    assert store.stat("e/empty").size == 0  # type: ignore[union-attr]


def test_missing_objects_raise_not_found(store: ObjectStore) -> None:
    for call in (
        lambda: store.get_bytes("no/such"),
        lambda: store.get_range("no/such", 0, 10),
        lambda: store.get_range("no/such", 0, 0),
        lambda: store.get_tail("no/such", 8),
        lambda: store.open_read("no/such"),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert isinstance(info.value, FileNotFoundError) and "no/such" in str(info.value)
    store.delete("no/such")  # missing is not an error


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("d/one", b"1")
    store.put_bytes("d/two", b"2")
    store.delete("d/one")
    assert not store.exists("d/one")
    assert [i.path for i in store.list("d/")] == ["d/two"]
    with pytest.raises(NotFound):
        store.get_bytes("d/one")


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", "a/", "a/.x.parquet.tmp-123"])
def test_bad_paths_are_usage_errors(store: ObjectStore, bad: str) -> None:
    with pytest.raises(UsageError):
        store.put_bytes(bad, b"x")


# --- put_if_absent ------------------------------------------------------------------------------------------


def test_put_if_absent_single_writer(store: ObjectStore) -> None:
    assert store.put_if_absent("lock/a", b"first") is True
    assert store.put_if_absent("lock/a", b"second") is False
    assert store.get_bytes("lock/a") == b"first"


def test_put_if_absent_racing_threads_one_winner(store: ObjectStore) -> None:
    for round_ in range(3):
        path = f"race/{round_}"
        barrier = threading.Barrier(8)

        def attempt(i: int, path: str = path, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            return store.put_if_absent(path, f"writer-{i}".encode())

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(attempt, range(8)))
        assert results.count(True) == 1, results
        assert store.get_bytes(path) == f"writer-{results.index(True)}".encode()


_RACER = textwrap.dedent(
    """
    import os, sys, time
    from mdth_engine.storage.local import LocalStore
    root, path, go, me = sys.argv[1:5]
    store = LocalStore(root)
    while not os.path.exists(go):
        time.sleep(0.001)
    print(store.put_if_absent(path, me.encode()))
    """
)


def test_put_if_absent_racing_processes_one_winner(local_store: LocalStore, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(local_store.root), "claims/unit-1", str(go), f"proc-{i}"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(8)
    ]
    time.sleep(0.5)  # let them all reach the start line
    go.touch()
    outputs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs.count("True") == 1 and outputs.count("False") == 7, outputs
    assert local_store.get_bytes("claims/unit-1") == f"proc-{outputs.index('True')}".encode()
    leftovers = [p.name for p in (local_store.root / "claims").iterdir()]
    assert leftovers == ["unit-1"]  # no temp files left by the losers


# --- ranged reads -------------------------------------------------------------------------------------------


def test_ranged_reads(store: ObjectStore) -> None:
    data = _payload(100_000)
    store.put_bytes("r/data", data)
    assert store.get_range("r/data", 0, 10) == data[:10]
    assert store.get_range("r/data", 12_345, 1000) == data[12_345:13_345]
    assert store.get_range("r/data", 99_990, 1000) == data[99_990:]  # clipped at the end
    assert store.get_range("r/data", 100_000, 10) == b""
    assert store.get_range("r/data", 200_000, 10) == b""
    assert store.get_range("r/data", 5, 0) == b""
    assert store.get_tail("r/data", 8) == data[-8:]
    assert store.get_tail("r/data", 1_000_000) == data
    with pytest.raises(ValueError):
        store.get_range("r/data", -1, 10)


def test_get_range_reads_only_the_range(store: ObjectStore) -> None:
    store.put_bytes("r/big", _payload(2 * MiB))
    before = store.bytes_read
    assert store.get_range("r/big", MiB, 100) == _payload(2 * MiB)[MiB : MiB + 100]
    assert store.bytes_read - before == 100


def test_open_read_seeks_and_reads_only_what_is_needed(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    size = 4 * MiB
    data = _payload(size, seed=7)
    store.put_bytes("r/seek.bin", data)
    emulator = request.getfixturevalue("gcs_emulator") if isinstance(store, GCSStore) else None
    served_before = emulator.bytes_served if emulator else 0
    before = store.bytes_read
    with store.open_read("r/seek.bin") as f:
        assert f.seekable()
        f.seek(2 * MiB + 3)
        assert f.read(1000) == data[2 * MiB + 3 : 2 * MiB + 1003]
        assert f.tell() == 2 * MiB + 1003
        f.seek(-10, os.SEEK_END)
        assert f.read() == data[-10:]
        assert f.read(5) == b""
        f.seek(100)
        assert f.read(50) == data[100:150]
    fetched = store.bytes_read - before
    assert 1050 <= fetched <= 3 * 256 * 1024, fetched  # at most one buffer per seek, never the whole object
    if emulator:
        served = emulator.bytes_served - served_before
        assert served < fetched + 64 * 1024, (served, fetched)  # the server agrees: little was sent


def test_open_read_is_usable_by_pyarrow(store: ObjectStore) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": list(range(10_000))})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put_bytes("p/t.parquet", sink.getvalue().to_pybytes())
    with store.open_read("p/t.parquet") as f:
        assert pq.read_table(f).equals(table)


# --- big files ----------------------------------------------------------------------------------------------


def test_put_file_larger_than_single_shot_upload(store: ObjectStore, tmp_path: Path) -> None:
    """~10 MiB is above the GCS client's 8 MiB single-shot limit: a resumable upload in 1 MiB chunks."""
    if isinstance(store, GCSStore):
        store = GCSStore(store.bucket_name, store.prefix, upload_chunk_size=MiB)
    data = os.urandom(10 * MiB + 12_345)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    info = store.put_file("big/file.bin", source)
    assert info.size == len(data) and info.path == "big/file.bin"
    assert store.stat("big/file.bin").size == len(data)  # type: ignore[union-attr]
    assert store.get_bytes("big/file.bin") == data
    assert source.read_bytes() == data  # the source is left alone
    info2 = store.put_bytes("big/bytes.bin", data[::-1])  # bytes above the limit go the same way
    assert info2.size == len(data) and store.get_tail("big/bytes.bin", 100) == data[::-1][-100:]


def test_put_file_missing_source(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.put_file("x", tmp_path / "nope")
    assert not store.exists("x")


# --- listing ------------------------------------------------------------------------------------------------


def _paths(infos) -> list[str]:  # type: ignore[no-untyped-def]
    return [i.path for i in infos]


def test_list_prefixes_sorted(store: ObjectStore) -> None:
    names = ["a/b/2", "a/b/1", "a/bc", "a/b1/x", "a/c/d/e", "b/z", "top"]
    for name in names:
        store.put_bytes(name, name.encode())
    assert _paths(store.list()) == sorted(names)
    assert _paths(store.list("a/")) == ["a/b/1", "a/b/2", "a/b1/x", "a/bc", "a/c/d/e"]
    assert _paths(store.list("a/b")) == ["a/b/1", "a/b/2", "a/b1/x", "a/bc"]  # a string prefix, as on GCS
    assert _paths(store.list("a/b/")) == ["a/b/1", "a/b/2"]
    assert _paths(store.list("a/", recursive=False)) == ["a/bc"]
    assert _paths(store.list("", recursive=False)) == ["top"]
    assert _paths(store.list("nothing/")) == []
    infos = list(store.list("a/b/"))
    assert all(isinstance(i, ObjectInfo) and i.size == len(i.path) for i in infos)


def test_list_many_objects_pages(store: ObjectStore) -> None:
    """More than one GCS page (1000); created concurrently to stay fast."""
    names = [f"many/day-{i % 7}/obj-{i:05d}" for i in range(1234)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: store.put_bytes(name, b"x"), names))
    store.put_bytes("many_other/x", b"y")
    listed = _paths(store.list("many/"))
    assert listed == sorted(names)
    assert len(listed) == 1234


def test_temp_files_are_never_listed(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    store.put_bytes("t/real.parquet", b"real")
    if isinstance(store, LocalStore):
        (store.root / "t" / ".half.parquet.tmp-abc123").write_bytes(b"half")
    else:
        from google.cloud import storage  # a stray temp-named object written by someone else

        client = storage.Client(project="p")
        client.bucket(store.bucket_name).blob(
            f"{store.prefix}/t/.half.parquet.tmp-abc123"
        ).upload_from_string(b"h")
    staged = store.stage("t/inflight.parquet")  # a write in progress
    staged.local_path.write_bytes(b"in flight")
    assert _paths(store.list()) == ["t/real.parquet"]
    assert _paths(store.list("t/", recursive=False)) == ["t/real.parquet"]
    staged.commit()
    assert _paths(store.list("t/")) == ["t/inflight.parquet", "t/real.parquet"]
    assert store.get_bytes("t/inflight.parquet") == b"in flight"
    assert not staged.local_path.exists()


def test_staged_abort_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.stage("s/file.bin") as staged:
        staged.local_path.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert not staged.local_path.exists()
    assert not store.exists("s/file.bin") and _paths(store.list()) == []


# --- naming -------------------------------------------------------------------------------------------------


def test_join_and_local_path(store: ObjectStore) -> None:
    if isinstance(store, LocalStore):
        assert store.join("a/b.parquet") == str(store.root / "a" / "b.parquet")
        assert store.local_path("a/b.parquet") == store.root / "a" / "b.parquet"
    else:
        assert store.url == f"gs://{store.bucket_name}/lake"
        assert store.join("a/b.parquet") == f"gs://{store.bucket_name}/lake/a/b.parquet"
        assert store.local_path("a/b.parquet") is None


# --- open_store ---------------------------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path) -> None:
    local = open_store(str(tmp_path / "lake"))
    assert isinstance(local, LocalStore) and local.url == str(tmp_path / "lake")
    assert not (tmp_path / "lake").exists()  # cheap: nothing created until a write
    via_file = open_store(f"file://{tmp_path}/lake2")
    assert isinstance(via_file, LocalStore) and via_file.root == tmp_path / "lake2"
    gcs = open_store("gs://my-bucket/some/prefix/")
    assert isinstance(gcs, GCSStore) and gcs.url == "gs://my-bucket/some/prefix"
    assert gcs.join("x/y") == "gs://my-bucket/some/prefix/x/y"
    assert open_store("gs://my-bucket").url == "gs://my-bucket"
    (tmp_path / "afile").write_text("x")
    for bad in ["s3://bucket/x", "http://host/x", "gs://", "gs://B_/x", "gs://ab/x", "", "file://host/x"]:
        with pytest.raises(UsageError) as info:
            open_store(bad)
        assert "\n" not in str(info.value)
        if bad:
            assert bad in str(info.value)
    with pytest.raises(UsageError, match="is a file"):
        open_store(str(tmp_path / "afile"))


def test_open_store_is_lazy_and_imports_no_google() -> None:
    probe = (
        "import sys;"
        "from mdth_engine.storage.store import open_store;"
        "s = open_store('gs://some-bucket/lake'); s.url; s.join('a');"
        "print(int('google.cloud.storage' in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "0", "open_store must not import (or build) the Google client"


def test_gcs_missing_bucket_is_a_store_error(gcs_emulator) -> None:  # type: ignore[no-untyped-def]
    store = open_store("gs://no-such-bucket-here/lake")
    with pytest.raises(StoreError, match="bucket gs://no-such-bucket-here not found"):
        store.put_bytes("x", b"1")
    with pytest.raises(NotFound):
        store.get_bytes("x")


# --- local-only: sweeping, disk full ------------------------------------------------------------------------


def test_sweep_temp_removes_only_stale_temp_files(local_store: LocalStore) -> None:
    local_store.put_bytes("d/real.parquet", b"real")
    folder = local_store.root / "d"
    stale = folder / ".real.parquet.tmp-aaaa"
    fresh = folder / ".other.parquet.tmp-bbbb"
    dotfile = folder / ".keep"
    for p in (stale, fresh, dotfile):
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(dotfile, (old, old))
    assert local_store.sweep_temp(older_than_s=3600) == ["d/.real.parquet.tmp-aaaa"]
    assert not stale.exists() and fresh.exists() and dotfile.exists()
    assert local_store.get_bytes("d/real.parquet") == b"real"
    assert local_store.sweep_temp(older_than_s=0) == ["d/.other.parquet.tmp-bbbb"]
    assert sorted(p.name for p in folder.iterdir()) == [".keep", "real.parquet"]


_HALF_WRITE = textwrap.dedent(
    """
    import os, sys
    from mdth_engine.storage.local import LocalStore
    staged = LocalStore(sys.argv[1]).stage("d/half.parquet")
    with open(staged.local_path, "wb") as f:
        f.write(b"half")
    print(staged.local_path.name, flush=True)
    os._exit(9)  # killed mid-write: no commit, no abort
    """
)


def test_sweep_temp_removes_temps_of_dead_writers_here_at_once(local_store: LocalStore) -> None:
    """Temp names carry the writer's host and pid: a dead writer's temp goes at once, a live writer's stays,
    another host's (whose pids mean nothing here) goes only by age."""
    from mdth_engine.storage.local import host_tag, temp_writer

    killed = subprocess.run(
        [sys.executable, "-c", _HALF_WRITE, str(local_store.root)], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == 9, killed.stderr
    dead_name = killed.stdout.strip()
    assert temp_writer(dead_name) is not None and temp_writer(dead_name)[0] == host_tag()
    live = local_store.stage("d/live.parquet")  # this process is writing it right now
    assert temp_writer(live.local_path.name) == (host_tag(), os.getpid())
    folder = local_store.root / "d"
    elsewhere = folder / f".x.parquet.tmp-other-host-1-{'ab' * 6}"
    elsewhere.write_bytes(b"x")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [dead_name, live.local_path.name, elsewhere.name]
    )

    assert local_store.sweep_temp(older_than_s=86400) == [f"d/{dead_name}"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([live.local_path.name, elsewhere.name])
    with live:
        live.local_path.write_bytes(b"live")
    assert local_store.get_bytes("d/live.parquet") == b"live"  # the sweep did not break a live write
    old = time.time() - 2 * 86400
    os.utime(elsewhere, (old, old))
    assert local_store.sweep_temp(older_than_s=86400) == [f"d/{elsewhere.name}"]
    assert sorted(p.name for p in folder.iterdir()) == ["live.parquet"]


_DISK_FULL = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import pyarrow as pa
    from mdth_engine.core.errors import StoreError
    from mdth_engine.storage.local import LocalStore
    from mdth_engine.storage.parquet import write_table
    root = sys.argv[1]
    store = LocalStore(root)
    store.put_bytes("keep.bin", b"k" * 1000)
    results = {}
    for name, call in {
        "put_bytes": lambda: store.put_bytes("big.bin", os.urandom(3 * 1024 * 1024)),
        "replace": lambda: store.put_bytes("keep.bin", os.urandom(3 * 1024 * 1024)),
        "put_if_absent": lambda: store.put_if_absent("claim.bin", os.urandom(3 * 1024 * 1024)),
        "parquet": lambda: write_table(
            store, "t.parquet", pa.table({"x": np.random.default_rng(1).random(400_000)}), {}
        ),
    }.items():
        try:
            call()
            results[name] = "no error"
        except StoreError as exc:
            results[name] = str(exc)
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    print(json.dumps({"results": results, "files": files, "keep": store.get_bytes("keep.bin") == b"k" * 1000}))
    from mdth_engine.core.shutdown import leave
    leave(0)
    """
)


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """A real full filesystem: a 2 MiB tmpfs in a private mount namespace (skipped where that is not allowed)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1)")
    mount = tmp_path / "small"
    mount.mkdir()
    script = f'mount -t tmpfs -o size=2m tmpfs "{mount}" && exec "{sys.executable}" -c "$0" "{mount}/lake"'
    probe = subprocess.run([unshare, "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [unshare, "-m", "sh", "-c", script, _DISK_FULL], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["results"] == {
        "put_bytes": "no space left writing big.bin",
        "replace": "no space left writing keep.bin",
        "put_if_absent": "no space left writing claim.bin",
        "parquet": "no space left writing t.parquet",
    }
    assert report["files"] == ["keep.bin"]  # no partial object, no temp file
    assert report["keep"] is True  # a failed replace keeps the old object
