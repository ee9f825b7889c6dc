"""WebCrawlBuilder on offline dumps: the bundled sample (replay-only, zero network), bad lines,
plain NDJSON, takedown, and the sample files matching their generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from crawl_images import jpeg_bytes
from PIL import Image

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import CrawlConfig, DumpSourceConfig, HttpConfig, TakedownConfig
from ieiw.crawlers.dumps import write_ndjson_zst
from ieiw.imageio import decode, decode_rgb, orientation_of
from ieiw.samples.crawl import paint_patch, sample_threads, small_threads, synthetic_photo, write_sample
from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.units import WorkUnit

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ieiw" / "crawlers" / "sample"


def build_all(builder: WebCrawlBuilder):
    rows, failures, records = [], [], 0
    for unit in builder.plan():
        result = builder.build_unit(unit)
        rows += result.rows
        failures += result.failures
        records += result.records
    return rows, failures, records


@pytest.fixture(scope="module")
def sample_build():
    builder = WebCrawlBuilder(CrawlConfig(), REPO)
    return builder, *build_all(builder)


def test_bundled_sample_builds_web_rows_offline(sample_build, connects):
    builder, rows, failures, records = sample_build
    assert builder.config.http.replay_only is True
    accepted = [r for r in rows if not r.get("drop_reason")]
    dropped = [r for r in rows if r.get("drop_reason")]
    assert len(accepted) == 10 and records == 12
    assert builder.session.network_requests == 0
    table = rows_to_table(rows)
    assert table.column("task").to_pylist() == ["web"] * 13
    assert len(set(table.column("id").to_pylist())) == 13
    # edits that validation rejects are candidates too: rows with a drop_reason (rejected/ keeps them, scored)
    assert sorted(r["drop_reason"] for r in dropped) == ["changes_everything", "no_op", "non_derivative"]
    assert all(r["source_image"]["bytes"] and r["target_image"]["bytes"] for r in dropped)
    assert sorted(f.reason for f in failures) == sorted(["over_18", "video", "removed", "not_image", "takedown"])
    takedown = next(f for f in failures if f.reason == "takedown")
    assert takedown.record_id == "sp0010/c0010b"
    assert all(f.file and f.file.endswith("submissions.ndjson.zst") for f in failures)
    for row in accepted:
        assert row["origin"]["url"].startswith("https://www.reddit.com/r/PhotoshopRequest/comments/")
        assert row["origin"]["created_utc"] > 1.7e9 and row["origin"]["license"] == "unknown"
        assert row["builder"]["embedded"] is False and row["builder"]["name"] == "crawl"
        assert row["source_image"]["bytes"][:2] == b"\xff\xd8"
        params = json.loads(row["builder"]["params"])
        assert params["alignment"]["similarity"] == pytest.approx(row["scores"]["edit_consistency"], abs=1e-6)


def test_rebuild_is_deterministic_and_plan_stable(sample_build):
    builder, rows, _, _ = sample_build
    again = WebCrawlBuilder(CrawlConfig(), REPO)
    assert again.plan() == builder.plan()
    assert again.fingerprint() == builder.fingerprint()
    rows2, _, _ = build_all(again)
    assert [r["id"] for r in rows2] == [r["id"] for r in rows]


def test_takedown_by_post_id_and_url_is_honoured(sample_build):
    _, rows, _, _ = sample_build
    cfg = CrawlConfig(
        takedown=TakedownConfig(
            files=("ieiw/crawlers/sample/takedown.txt",),
            entries=("t3_sp0001", "https://i.redd.it/c0011b.jpg"),
        )
    )
    builder = WebCrawlBuilder(cfg, REPO)
    assert builder.fingerprint()["takedown"] != WebCrawlBuilder(CrawlConfig(), REPO).fingerprint()["takedown"]
    rows2, failures, _ = build_all(builder)
    kept = {r["origin"]["record_id"] for r in rows2}
    assert not any(k.startswith("sp0001/") for k in kept) and "sp0011/c0011b" not in kept
    assert len(rows2) == len(rows) - 3
    assert {f.record_id for f in failures if f.reason == "takedown"} == {"sp0001", "sp0011/c0011b", "sp0010/c0010b"}


def test_bad_lines_and_plain_ndjson(tmp_path, connects):
    b = sample_threads(lambda host, name: f"https://{host}/{name}")
    subs = tmp_path / "subs.ndjson"
    lines = [json.dumps(p) for p in b.posts[:4]]
    lines.insert(1, "{this is not json")
    lines.insert(3, "[1, 2]")
    lines.append(json.dumps({"title": "no id"}))
    subs.write_text("\n".join(lines) + "\n")
    write_ndjson_zst(tmp_path / "comments.ndjson.zst", b.comments)
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions=str(subs), comments="comments.ndjson.zst"),),
        http=HttpConfig(cache_dir=str(SAMPLE / "cache"), replay_only=True),
        takedown=TakedownConfig(),
        posts_per_unit=3,
    )
    builder = WebCrawlBuilder(cfg, tmp_path)
    units = builder.plan()
    assert [u.payload["start"] for u in units] == [0, 3, 6]
    rows, failures, records = build_all(builder)
    bad = sorted((f.reason, f.record_id) for f in failures if f.reason in ("bad_line", "bad_record"))
    assert bad == [("bad_line", "line 2"), ("bad_line", "line 4"), ("bad_record", "line 7")]
    assert all(str(subs) == f.file for f in failures if f.reason.startswith("bad_"))
    assert records == 7
    assert {r["origin"]["image_id"] for r in rows} == {"sp0001", "sp0002", "sp0003", "sp0004"}
    assert connects == []


def test_unknown_unit_is_a_failure_not_an_exception():
    result = WebCrawlBuilder(CrawlConfig(), REPO).build_unit(WorkUnit("x", {"source": "ftp"}))
    assert [f.reason for f in result.failures] == ["bad_unit"]


def test_cache_miss_in_replay_mode_is_named(tmp_path, connects):
    cfg = CrawlConfig(http=HttpConfig(cache_dir=str(tmp_path / "empty"), replay_only=True))
    rows, failures, _ = build_all(WebCrawlBuilder(cfg, REPO))
    assert rows == [] and connects == []
    assert "not_in_cache" in {f.reason for f in failures}
    assert not (tmp_path / "empty").exists()  # replay-only never writes


def test_committed_sample_matches_its_generator(tmp_path):
    """Content, not bytes: a Pillow/libjpeg or zstd upgrade may change encodings, not the sample."""
    import zstandard

    write_sample(tmp_path)
    for name in ("submissions.ndjson.zst", "comments.ndjson.zst"):
        fresh = zstandard.ZstdDecompressor().decompress((tmp_path / name).read_bytes())
        assert fresh == zstandard.ZstdDecompressor().decompress((SAMPLE / name).read_bytes()), name
    assert (tmp_path / "takedown.txt").read_text() == (SAMPLE / "takedown.txt").read_text()
    generated = sorted(p.name for p in (tmp_path / "cache" / "index").rglob("*.json"))
    committed = sorted(p.name for p in (SAMPLE / "cache" / "index").rglob("*.json"))
    assert generated == committed and len(committed) == 27
    fresh_cache, sample_cache = ResponseCache(tmp_path / "cache"), ResponseCache(SAMPLE / "cache", readonly=True)
    for url in sample_threads(lambda host, name: f"https://{host}/{name}").images:
        a, b = fresh_cache.get(url), sample_cache.get(url)
        assert a.content_type == b.content_type
        assert abs(decode_rgb(a.body).astype(int) - decode_rgb(b.body).astype(int)).mean() < 1.0, url
    sizes = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert sizes < 1_500_000


def build_one_edit(tmp_path: Path, edit_body: bytes) -> dict:
    """Build one post with one edit from a prepared replay cache; return the single row."""
    original_url, edit_url = "https://i.redd.it/orig.jpg", "https://i.imgur.com/edit.jpg"
    cache = ResponseCache(tmp_path / "cache")
    cache.put(original_url, 200, "image/jpeg", jpeg_bytes(synthetic_photo(41, 320, 240)))
    cache.put(edit_url, 200, "image/jpeg", edit_body)
    post = {
        "id": "w1",
        "subreddit": "PhotoshopRequest",
        "author": "op",
        "title": "Remove the ball",
        "selftext": "",
        "url": original_url,
        "permalink": "/r/PhotoshopRequest/comments/w1/x/",
        "created_utc": 1.7e9,
    }
    comment = {"id": "c1", "link_id": "t3_w1", "author": "ed", "score": 5, "body": f"done {edit_url}"}
    write_ndjson_zst(tmp_path / "s.ndjson.zst", [post])
    write_ndjson_zst(tmp_path / "c.ndjson.zst", [comment])
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="s.ndjson.zst", comments="c.ndjson.zst"),),
        http=HttpConfig(cache_dir=str(tmp_path / "cache"), replay_only=True),
        takedown=TakedownConfig(),
    )
    rows, failures, _ = build_all(WebCrawlBuilder(cfg, tmp_path))
    assert failures == [] and len(rows) == 1
    return rows[0]


def test_web_row_origin_names_poster_editor_and_edit(tmp_path):
    row = build_one_edit(tmp_path, jpeg_bytes(paint_patch(synthetic_photo(41, 320, 240), 2)))
    origin = row["origin"]
    assert origin["authors"] == ["op", "ed"]
    assert origin["edit_url"] == "https://i.imgur.com/edit.jpg"
    assert origin["record_id"] == "w1/c1" and origin["image_id"] == "w1"
    rows_to_table([row])  # the v2 row contract holds


def test_exif_rotated_edit_is_stored_reencoded_upright(tmp_path):
    """An edit stored sideways with an EXIF rotation is decoded upright, aligned, and stored as the
    upright pixels (no EXIF left for a later decoder to apply or ignore)."""
    import io

    upright = paint_patch(synthetic_photo(41, 320, 240), 2)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the pixels are stored rotated 90 CCW
    buf = io.BytesIO()
    Image.fromarray(np.rot90(upright).copy()).save(buf, format="JPEG", quality=95, exif=exif)
    rotated = buf.getvalue()

    row = build_one_edit(tmp_path, rotated)
    stored = row["target_image"]["bytes"]
    assert stored != rotated and row["target_image"]["path"].endswith("_target.jpg")
    assert orientation_of(stored) == 1
    as_stored = decode(stored, orientation="ignore").pixels
    assert as_stored.shape == upright.shape and (row["height"], row["width"]) == upright.shape[:2]
    seen = decode_rgb(rotated)  # what the crawler aligned: the EXIF rotation applied
    assert seen.shape == upright.shape
    assert np.abs(as_stored.astype(int) - seen.astype(int)).mean() < 2  # one q95 re-encode apart


def _dump_build(tmp_path: Path, posts: list[str], comments: list[str]):
    tmp_path.mkdir()
    (tmp_path / "s.ndjson").write_text("".join(line + "\n" for line in posts))
    (tmp_path / "c.ndjson").write_text("".join(line + "\n" for line in comments))
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="s.ndjson", comments="c.ndjson"),),
        http=HttpConfig(cache_dir=str(SAMPLE / "cache"), replay_only=True),
        takedown=TakedownConfig(),
    )
    builder = WebCrawlBuilder(cfg, tmp_path)
    units = builder.plan()
    assert len(units) == 1  # one unit of up to 64 posts: whatever a record holds, it must not sink the unit
    result = builder.build_unit(units[0])
    return result.rows, result.failures


def test_a_bad_field_fails_its_record_not_the_unit(tmp_path, connects):
    """A list title, an author that is not a string, a non-finite created_utc (NaN, Infinity, 1e999) in a post,
    and a score of 1e999 or a body that is a number in a comment: each is that record's bad_record, named with
    the file and the record id; the other rows of the unit are the rows without them."""
    b = sample_threads(lambda host, name: f"https://{host}/{name}")
    posts = [json.dumps(p) for p in b.posts]
    comments = [json.dumps(c) for c in b.comments]
    base_rows, base_failures = _dump_build(tmp_path / "base", posts, comments)

    template = b.posts[0]  # a post that builds rows: only the field at fault stops these
    bad_posts = {
        "bt1": (dict(template, id="bt1", name="t3_bt1", title=["Remove", "the bin"]), "title is list"),
        "bt2": (dict(template, id="bt2", name="t3_bt2", author=17), "author is int"),
        "bt3": (dict(template, id="bt3", name="t3_bt3", created_utc=float("nan")), "created_utc is float nan"),
        "bt4": (dict(template, id="bt4", name="t3_bt4", created_utc="__BIG__"), "not a finite number"),
    }
    lines = [json.dumps(p).replace('"__BIG__"', "1e999") for p, _ in bad_posts.values()]
    mixed_posts = posts[:3] + lines[:2] + posts[3:] + lines[2:]
    edit = next(c for c in b.comments if c["link_id"] == "t3_sp0001")
    bad_comments = {
        "sp0001/cb1": json.dumps(dict(edit, id="cb1", name="t1_cb1", score="__BIG__")).replace('"__BIG__"', "1e999"),
        "sp0001/cb2": json.dumps(dict(edit, id="cb2", name="t1_cb2", created_utc=float("inf"))),
        "sp0001/cb3": json.dumps(dict(edit, id="cb3", name="t1_cb3", body=123)),
        "sp0001/cb4": json.dumps(dict(edit, id="cb4", name="t1_cb4", body="![img](m1)", media_metadata=[1])),
    }
    mixed_comments = comments[:2] + list(bad_comments.values()) + comments[2:]
    rows, failures = _dump_build(tmp_path / "mixed", mixed_posts, mixed_comments)

    assert [r["id"] for r in rows] == [r["id"] for r in base_rows]
    assert [(r["instruction"], r["origin"]) for r in rows] == [(r["instruction"], r["origin"]) for r in base_rows]
    bad = [f for f in failures if f.reason == "bad_record"]
    assert sorted(f.record_id for f in bad) == sorted([*bad_posts, *bad_comments])
    for f in bad:
        if f.record_id in bad_posts:
            assert f.file == str(tmp_path / "mixed" / "s.ndjson") and bad_posts[f.record_id][1] in f.message, f
        else:
            assert f.file == str(tmp_path / "mixed" / "c.ndjson") and f.message.startswith("line "), f
    assert sorted((f.reason, f.record_id) for f in failures if f.reason != "bad_record") == sorted(
        (f.reason, f.record_id) for f in base_failures
    )


def test_lone_surrogates_in_dump_fields_reach_rows_as_replacement_characters(tmp_path, connects):
    """Valid JSON may escape a lone surrogate (``"\\ud800"``), which Arrow cannot write: a comment's author so
    escaped failed the whole index (plan() raised UnicodeEncodeError), a post's author the unit's rows, a post
    wrapped as ``{"kind": "t3", "data": ...}`` the index too. Each now reaches its row as U+FFFD (found by
    tests/fuzz/test_fuzz_reddit_dumps.py)."""
    b = small_threads(lambda host, name: f"https://{host}/{name}")
    cache = ResponseCache(tmp_path / "cache")
    for url, (body, ctype) in b.images.items():
        cache.put(url, 200, ctype, body)
    posts = [dict(p) for p in b.posts]
    posts[0]["author"] = "op\ud800"
    wrapped = {"kind": "t3", "data": dict(posts[2], title="\ud800Make the sky purple please")}
    comments = [dict(c, author="ed\udfff") if c["id"] == "d0004a" else c for c in b.comments]
    write_ndjson_zst(tmp_path / "s.ndjson.zst", [posts[0], posts[1], wrapped, posts[3]])
    write_ndjson_zst(tmp_path / "c.ndjson.zst", comments)
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="s.ndjson.zst", comments="c.ndjson.zst"),),
        http=HttpConfig(cache_dir=str(tmp_path / "cache"), replay_only=True),
        takedown=TakedownConfig(),
    )
    rows, failures, _ = build_all(WebCrawlBuilder(cfg, tmp_path))
    assert failures == [] and len(rows) == 5
    rows_to_table(rows)
    authors = {r["origin"]["record_id"]: r["origin"]["authors"] for r in rows}
    assert authors["sm0001/d0001a"] == ["op\ufffd", "editor_ann"]
    assert authors["sm0004/d0004a"] == ["requester_sm0004", "ed\ufffd"]
    params = {r["origin"]["record_id"]: json.loads(r["builder"]["params"]) for r in rows}
    assert params["sm0003/d0003a"]["post_title"] == "\ufffdMake the sky purple please"


def test_lines_nested_too_deeply_are_bad_lines(tmp_path, connects):
    """A dump line of ``[[[[...`` (or a post or comment with such a field) deeper than the JSON parser goes raised
    RecursionError out of the index (plan() failed); each is its line's bad_line now, and a kept comment nested
    deeper than the index keeps is a bad record. The other threads build as before."""
    b = small_threads(lambda host, name: f"https://{host}/{name}")
    cache = ResponseCache(tmp_path / "cache")
    for url, (body, ctype) in b.images.items():
        cache.put(url, 200, ctype, body)
    deep = "[" * 100_000
    posts = [json.dumps(p) for p in b.posts]
    posts.insert(1, deep)
    posts.insert(3, '{"subreddit": "PhotoshopRequest", "id": "dp1", "x": ' + deep)
    comments = [json.dumps(c) for c in b.comments]
    comments.insert(0, '{"subreddit": "PhotoshopRequest", "link_id": "t3_sm0001", "x": ' + deep)
    nested: object = "https://i.redd.it/d0001a.jpg"
    for _ in range(40):
        nested = [nested]
    edit = next(c for c in b.comments if c["id"] == "d0001a")
    comments.append(json.dumps(dict(edit, id="dd1", name="t1_dd1", media_metadata={"x": nested})))
    (tmp_path / "s.ndjson").write_text("".join(line + "\n" for line in posts))
    (tmp_path / "c.ndjson").write_text("".join(line + "\n" for line in comments))
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="s.ndjson", comments="c.ndjson"),),
        http=HttpConfig(cache_dir=str(tmp_path / "cache"), replay_only=True),
        takedown=TakedownConfig(),
    )
    rows, failures, _ = build_all(WebCrawlBuilder(cfg, tmp_path))
    assert sorted(r["origin"]["record_id"] for r in rows) == [
        "sm0001/d0001a", "sm0001/d0001b", "sm0002/d0002a", "sm0003/d0003a", "sm0004/d0004a"]
    assert sorted((f.reason, f.record_id, Path(f.file).name) for f in failures) == [
        ("bad_line", "line 1", "c.ndjson"), ("bad_line", "line 2", "s.ndjson"), ("bad_line", "line 4", "s.ndjson"),
        ("bad_record", "sm0001/dd1", "c.ndjson")]
    assert all("nest" in f.message for f in failures), [f.message for f in failures]
