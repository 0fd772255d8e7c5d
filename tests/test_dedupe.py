"""Dedupe: exact search, transitive groups, re-posts of the demo shop grouped with their originals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.layout import Layout
from core.manifest import open_manifest, utc_now
from core.settings import DedupeConfig
from curation.dedupe.grouping import dedupe, group_pairs
from curation.dedupe.hashing import hamming_matrix
from curation.dedupe.neardup import MultiIndex, near_pairs, pairs_brute, pairs_indexed
from demo.shop.generate import load_truth
from tests.db import count, run
from tests.procs import alive, descendants

# The manifest's queries, the same on both engines: each test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_engines


def test_near_pairs_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=700, dtype=np.uint64)
    hashes[100:110] = hashes[0] ^ np.uint64(0b1011)  # planted: 3 bits from hashes[0]
    got = set(near_pairs(hashes, None, 10, 0))
    expected = {
        (i, j) for i in range(700) for j in range(i + 1, 700) if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 10
    }
    assert got == expected and {(0, 100), (100, 101)} <= got


@pytest.mark.parametrize("max_distance", [0, 3, 8, 10, 13])
def test_the_index_gives_exactly_the_brute_force_answer(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    hashes = rng.integers(0, 2**64 - 1, size=3000, dtype=np.uint64, endpoint=True)
    for k in range(300):  # planted neighbours at every distance up to max_distance + 2
        bits = rng.choice(64, size=k % (max_distance + 3), replace=False)
        hashes[3 * k + 1] = hashes[3 * k] ^ np.uint64(sum(1 << int(b) for b in bits))
    queries = hashes[::7]
    assert pairs_indexed(queries, hashes, max_distance) == pairs_brute(queries, hashes, max_distance)
    # The self-join reuses the database's tables for the queries.
    assert pairs_indexed(hashes, hashes, max_distance) == pairs_brute(hashes, hashes, max_distance)


@pytest.mark.parametrize("tables", [3, 5, 7])
def test_any_number_of_tables_gives_the_brute_force_answer(tables: int) -> None:
    rng = np.random.default_rng(tables)
    hashes = rng.integers(0, 2**64 - 1, size=2000, dtype=np.uint64, endpoint=True)
    hashes[1::2] = hashes[::2] ^ np.uint64(0b1011_0000_0001 << tables)  # 4 bits away, across substrings
    hashes[-50:] = hashes[0]  # a crowded bucket
    for max_distance in (0, 4, 9):
        got = MultiIndex(hashes, tables).query(hashes[:300], max_distance)
        assert got == pairs_brute(hashes[:300], hashes, max_distance)


def test_a_crowded_index_grows_its_answer_room() -> None:
    hashes = np.zeros(3000, dtype=np.uint64)  # every pair is a pair: far more than the first room
    rows, ids = MultiIndex(hashes).search(hashes, 0)
    assert len(rows) == 3000 * 3000 and len(set(zip(rows[:5000].tolist(), ids[:5000].tolist(), strict=True))) == 5000


def test_hamming_matrix_counts_bits() -> None:
    a = np.array([0, 0b111], dtype=np.uint64)
    assert hamming_matrix(a, np.array([2**64 - 1], dtype=np.uint64)).tolist() == [[64], [61]]


def test_threshold_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.64"):
        near_pairs(np.zeros(2, dtype=np.uint64), None, 65, 0)


def test_groups_are_transitive() -> None:
    assert group_pairs(5, [(0, 1), (1, 2), (3, 4)]) == [0, 0, 0, 3, 3]


def test_reposts_join_their_original_and_a_corrupt_photo_is_recorded(shop_dir: Path, crawled: Layout) -> None:
    layout = crawled
    # A photo that went bad in the store after the crawl, and one whose manifest path leaves the
    # store: both recorded invalid, the batch goes on.
    bad, crafted = "ab" * 32, "cd" * 32
    with open_manifest(layout) as m:
        (layout.store_dir / "ab").mkdir(exist_ok=True)
        (layout.store_dir / "ab" / f"{bad}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
        run(m, "INSERT INTO photos VALUES (?, ?, 'JPEG', 10, 10, 11, ?)", (bad, f"ab/{bad}.jpg", utc_now()))
        run(m, "INSERT INTO photos VALUES (?, '../../../etc/hostname', 'JPEG', 10, 10, 11, ?)", (crafted, utc_now()))
    summary = dedupe(DedupeConfig(), layout)
    truth = load_truth(shop_dir)
    assert summary.invalid == 2 and summary.photos == len(truth)
    with open_manifest(layout) as m:
        row = run(m, "SELECT status, reason FROM curation WHERE sha256 = ?", (bad,)).fetchone()
        assert row["status"] == "invalid" and "undecodable" in row["reason"]
        row = run(m, "SELECT status, reason FROM curation WHERE sha256 = ?", (crafted,)).fetchone()
        assert row["status"] == "invalid" and "is not the store's own" in row["reason"]
        group = {
            r["photo_url"].rsplit("/", 1)[1].removesuffix(".jpg"): r["group_id"]
            for r in run(m, "SELECT s.photo_url, c.group_id FROM sources s JOIN curation c USING (sha256)")
        }
        kept = count(m, "curation", "is_kept = 1")
    reposts = [t for t in truth.values() if t.duplicate_of]
    joined = sum(group[t.photo_id] == group[t.duplicate_of] for t in reposts)
    assert joined == len(reposts), f"{joined} of {len(reposts)} re-posts grouped with their original"
    # Distinct photos merged into one group: the price of a threshold loose enough for re-posts.
    originals = {(t.duplicate_of or t.photo_id) for t in truth.values()}
    assert kept == len(set(group.values()))
    assert len(originals) - kept <= 0.03 * len(originals), f"{len(originals) - kept} distinct photos merged"
    # Regrouping from the cached hashes gives the same answer and hashes nothing again.
    again = dedupe(DedupeConfig(), layout)
    assert again.checked == 0 and again.groups == summary.groups


def test_a_killed_dedupe_leaves_no_worker_behind(crawled: Layout) -> None:
    layout = crawled
    # A photo whose read never ends (a named pipe nobody writes): dedupe's workers are mid-work.
    sha = "ff" * 32
    (layout.store_dir / "ff").mkdir(exist_ok=True)
    os.mkfifo(layout.store_dir / "ff" / f"{sha}.jpg")
    with open_manifest(layout) as m:
        run(m, "INSERT INTO photos VALUES (?, ?, 'JPEG', 100, 100, 1, ?)", (sha, f"ff/{sha}.jpg", utc_now()))
    proc = subprocess.Popen([sys.executable, "-m", "reviewlens.cli", "dedupe", "--data-dir", str(layout.data_dir)])
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = set(descendants(proc.pid))
            time.sleep(0.2)
        assert len(workers) >= 2, "dedupe started no workers"
        time.sleep(2)  # they have taken their photos, one is stuck on the pipe
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [w for w in workers if alive(w)] == []
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)


def test_two_dedupes_at_once_end_as_one_does(crawled: Layout) -> None:
    layout = crawled
    args = [sys.executable, "-m", "reviewlens.cli", "dedupe", "--data-dir", str(layout.data_dir)]
    runs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for each in runs:
        _, err = each.communicate(timeout=300)
        assert each.returncode == 0, err[-2000:]
    with open_manifest(layout) as m:
        assert count(m, "curation") == count(m, "photos")
        groups = run(m, "SELECT sha256, group_id, is_kept FROM curation ORDER BY sha256").fetchall()
    again = dedupe(DedupeConfig(), layout)
    assert again.checked == 0
    with open_manifest(layout) as m:
        assert run(m, "SELECT sha256, group_id, is_kept FROM curation ORDER BY sha256").fetchall() == groups
