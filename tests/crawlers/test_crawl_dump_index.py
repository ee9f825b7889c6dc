"""The dump index pass: flat memory across dump sizes, units that read every subreddit line exactly
once, a rerun after a kill giving the same Parquet, and the fingerprint skip/refresh."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.config import CrawlConfig, DumpSourceConfig, HttpConfig, TakedownConfig
from ieiw.crawlers.dump_index import index_dump, read_posts

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("dump_scan", REPO / "bench" / "dump_scan.py")
dump_scan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dump_scan)

CHILD = """
import json, resource, sys
from pathlib import Path
from ieiw.crawlers.dump_index import index_dump
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
r = index_dump(folder / "submissions.ndjson.zst", folder / "comments.ndjson.zst", "PhotoshopRequest", out, 64)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"counts": r.counts, "rss_kb": rss}))  # this process + its decompressor helper
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _child(folder: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(out)], check=True, capture_output=True, env=_env()
    )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """~20 MB and ~200 MB (uncompressed) submission dumps, 1% PhotoshopRequest lines, default window."""
    root = tmp_path_factory.mktemp("dumps")
    small = dump_scan.generate(root / "small", 20_000_000, 0.01, seed=3, comments_ratio=0.1, window_log=21)
    large = dump_scan.generate(root / "large", 200_000_000, 0.01, seed=4, comments_ratio=0.02, window_log=21)
    return root, small, large


def test_peak_rss_is_flat_from_20mb_to_200mb(dumps):
    root, small, large = dumps
    a = _child(root / "small", root / "idx-small")
    b = _child(root / "large", root / "idx-large")
    assert a["counts"]["post_rows"] == len(small["sub_lines"]) and b["counts"]["post_rows"] == len(large["sub_lines"])
    assert 0.008 < len(large["sub_lines"]) / large["lines"] < 0.012
    assert b["rss_kb"] <= 1.2 * a["rss_kb"], (a["rss_kb"], b["rss_kb"])


def test_units_read_each_subreddit_line_exactly_once(dumps):
    root, small, _ = dumps
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="small/submissions.ndjson.zst", comments="small/comments.ndjson.zst"),),
        http=HttpConfig(cache_dir=str(root / "cache"), replay_only=True),
        takedown=TakedownConfig(),
        posts_per_unit=50,
    )
    builder = WebCrawlBuilder(cfg, root)
    builder.prepare()
    units = builder.plan()
    index = builder._index(0)
    read = Counter()
    for unit in units:
        table = read_posts(index, unit.payload["start"], unit.payload["stop"])
        assert table.num_rows == unit.payload["stop"] - unit.payload["start"] <= 50
        read.update(table.column("line").to_pylist())
    assert set(read.values()) == {1}
    assert sorted(read) == small["sub_lines"]
    counts = index.counts
    assert counts["submission_lines"] == small["lines"]
    assert counts["post_rows"] + counts["other_subreddit"] == small["lines"]  # every line: kept or counted
    assert counts["comment_rows"] > 0
    # a unit's comments all belong to its posts, and every kept comment reaches one unit
    comments = pq.read_table(index.comments)
    assert comments.column("post_row").to_pylist() == sorted(comments.column("post_row").to_pylist())


def _tables(folder: Path):
    return pq.read_table(folder / "posts.parquet"), pq.read_table(folder / "comments.parquet")


def test_killed_pass_reruns_to_the_same_parquet(dumps, tmp_path):
    root, _, _ = dumps
    clean = tmp_path / "clean"
    _child(root / "small", clean)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root / "small"), str(killed)], stdout=subprocess.DEVNULL, env=_env()
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(killed.glob(".posts.parquet.*.tmp")):
        time.sleep(0.002)
    time.sleep(0.03)  # into the scan: some row groups written to the temporary file
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "index.json").exists()  # an interrupted pass leaves no finished index
    _child(root / "small", killed)
    for a, b in zip(_tables(clean), _tables(killed)):
        assert a.equals(b)
    assert (clean / "posts.parquet").read_bytes() == (killed / "posts.parquet").read_bytes()
    assert (clean / "comments.parquet").read_bytes() == (killed / "comments.parquet").read_bytes()
    assert not list(killed.glob(".*.tmp"))


def test_index_is_reused_and_refreshed_when_the_dump_changes(tmp_path):
    folder = tmp_path / "d"
    dump_scan.generate(folder, 300_000, 0.05, seed=5, window_log=21)
    subs, coms = folder / "submissions.ndjson.zst", folder / "comments.ndjson.zst"
    first = index_dump(subs, coms, "PhotoshopRequest", tmp_path / "idx", 16)
    assert not first.reused
    assert index_dump(subs, coms, "PhotoshopRequest", tmp_path / "idx", 16).reused
    dump_scan.generate(folder, 300_000, 0.05, seed=6, window_log=21)  # a changed dump
    again = index_dump(subs, coms, "PhotoshopRequest", tmp_path / "idx", 16)
    assert not again.reused and again.fingerprint != first.fingerprint


def test_prefilter_is_case_insensitive_and_keeps_keyless_lines(tmp_path):
    lines = [
        {"id": "a1", "subreddit": "photoshoprequest", "title": "t"},
        {"id": "a2", "subreddit": "pics", "title": "PhotoshopRequest in the title"},
        {"id": "a3", "title": "no subreddit key"},
        {"id": "a4", "subreddit": "PHOTOSHOPREQUEST", "title": "t"},
    ]
    subs = tmp_path / "s.ndjson"
    subs.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n{broken\n")
    (tmp_path / "c.ndjson").write_text("")
    r = index_dump(subs, tmp_path / "c.ndjson", "PhotoshopRequest", tmp_path / "idx", 2)
    posts = pq.read_table(r.posts).to_pylist()
    assert [(p["line"], p["kind"], p["post_id"]) for p in posts] == [
        (1, "post", "a1"),
        (3, "post", "a3"),
        (4, "post", "a4"),
        (6, "bad_line", None),
    ]
    assert r.counts["other_subreddit"] == 1 and r.counts["submission_lines"] == 6
    assert pq.ParquetFile(r.posts).metadata.num_row_groups == 2


def test_a_comment_with_a_field_of_the_wrong_type_is_a_counted_bad_record(tmp_path):
    """``"body": 123`` or ``"media_metadata": [1]`` on one comment line: that line is a bad record, the dump
    still indexes and plans (it used to fail ``plan()``, so no unit ran)."""
    post = {"id": "a1", "subreddit": "PhotoshopRequest", "title": "Remove the bin", "author": "op",
            "url": "https://i.redd.it/a1.jpg", "permalink": "/r/PhotoshopRequest/comments/a1/x/"}
    good = {"id": "c9", "link_id": "t3_a1", "author": "ed", "score": 3, "body": "https://i.imgur.com/e.jpg"}
    comments = [
        dict(good, id="c1", body=123),
        dict(good, id="c2", body="![img](m1)", media_metadata=[1]),
        dict(good, id="c3", body="![img](m1)", media_metadata={"m1": {"status": "valid", "s": {"u": 5}}}),
        good,
    ]
    (tmp_path / "s.ndjson").write_text(json.dumps(post) + "\n")
    (tmp_path / "c.ndjson").write_text("".join(json.dumps(c) + "\n" for c in comments))
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="s.ndjson", comments="c.ndjson"),),
        http=HttpConfig(cache_dir=str(tmp_path / "cache"), replay_only=True),
        takedown=TakedownConfig(),
    )
    builder = WebCrawlBuilder(cfg, tmp_path)
    units = builder.plan()
    index = builder._index(0)
    assert len(units) == 1 and index.counts["comment_bad_records"] == 3 and index.counts["comment_rows"] == 1
    assert pq.read_table(index.comments).column("line").to_pylist() == [4]
    result = builder.build_unit(units[0])
    bad = sorted((f.record_id, f.file, f.message) for f in result.failures if f.reason == "bad_record")
    assert [(r, f) for r, f, _ in bad] == [(f"a1/c{i}", str(tmp_path / "c.ndjson")) for i in (1, 2, 3)]
    assert "body is int 123" in bad[0][2] and "media_metadata is list" in bad[1][2] and "u is int 5" in bad[2][2]
    assert bad[0][2].startswith("line 1:")


def test_a_truncated_zst_dump_fails_loudly_and_is_not_indexed(tmp_path):
    """Half a .zst file used to index as a complete, shorter dump. Its frames are checked first."""
    import zstandard

    from ieiw.crawlers.dump_index import TruncatedDump, zst_problem

    posts = [{"id": f"p{i}", "subreddit": "PhotoshopRequest", "title": f"post {i} {'x' * (i % 97)}"}
             for i in range(20_000)]
    data = "".join(json.dumps(p) + "\n" for p in posts).encode()
    full = tmp_path / "full.ndjson.zst"
    full.write_bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
    (tmp_path / "c.ndjson").write_text("")
    assert zst_problem(full) is None
    whole = full.read_bytes()
    # several frames, a skippable frame between them, frames with and without checksum or content size
    other = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(b'{"id": "z"}\n')
    frames = tmp_path / "frames.ndjson.zst"
    frames.write_bytes(whole + (0x184D2A5A).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc" + other)
    assert zst_problem(frames) is None

    cuts = [len(whole) // 2, 3, 5, len(whole) - 1, len(whole) - 4, len(whole) - 5, *range(100, len(whole), 997)]
    for cut in cuts:
        part = tmp_path / "part.ndjson.zst"
        part.write_bytes(whole[:cut])
        assert zst_problem(part) is not None, cut

    half = tmp_path / "half.ndjson.zst"
    half.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TruncatedDump, match="half.ndjson.zst is truncated"):
        index_dump(half, tmp_path / "c.ndjson", "PhotoshopRequest", tmp_path / "idx", 64)
    assert not (tmp_path / "idx" / "index.json").exists()
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="half.ndjson.zst", comments="c.ndjson"),),
        http=HttpConfig(cache_dir=str(tmp_path / "cache"), replay_only=True),
        takedown=TakedownConfig(),
    )
    with pytest.raises(TruncatedDump, match="download it again"):
        WebCrawlBuilder(cfg, tmp_path).plan()
    complete = index_dump(full, tmp_path / "c.ndjson", "PhotoshopRequest", tmp_path / "idx-full", 64)
    assert complete.counts["post_rows"] == 20_000
