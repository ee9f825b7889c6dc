"""Fuzz: the Reddit dump reader (Pushshift-style zstd NDJSON of submissions and comments, indexed at plan time),
through the web-crawl builder that uses it, offline (replay-only cache of the sample's images).

A record is one line of a dump: a submission (its rows: the thread's) or a comment (its rows: its post's
thread's). Rows are keyed by the thread (``origin.image_id``, the post id): a comment's damage may change every
edit of its thread, and ``origin.record_id`` is the edit (``<post>/<comment>``), which a damaged post changes."""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import zstandard
from crawl_fuzz import changes, file_damage
from fuzz_harness import Workspace, apply, byte_damage, check_outcome, count, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import CrawlConfig, DumpSourceConfig, HttpConfig, TakedownConfig
from ieiw.crawlers.dumps import link_post_id
from ieiw.samples.crawl import BASE_TIME, small_threads
from ieiw.schemas.units import BuildContext

FAMILY = "reddit-dumps"
FILES = {"posts": "submissions.ndjson.zst", "comments": "comments.ndjson.zst"}
LEVEL = 10  # what write_ndjson_zst uses


def line_of(obj: Any) -> bytes:
    """A record as the dumps write it (and the sample generator): sorted keys, one line."""
    return json.dumps(obj, sort_keys=True).encode()


def write_dump(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(zstandard.ZstdCompressor(level=LEVEL).compress(b"".join(line + b"\n" for line in lines)))


@cache
def pristine() -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """The small sample's dumps and the replay cache of its images (written once per process), and its records."""
    b = small_threads(lambda host, name: f"https://{host}/{name}")
    folder = Path(tempfile.mkdtemp(prefix="ieiw-fuzz-dumps-"))
    (folder / "dumps").mkdir()
    write_dump(folder / "dumps" / FILES["posts"], [line_of(p) for p in b.posts])
    write_dump(folder / "dumps" / FILES["comments"], [line_of(c) for c in b.comments])
    images = ResponseCache(folder / "cache")
    for url, (body, ctype) in sorted(b.images.items()):
        images.put(url, 200, ctype, body, fetched_at=BASE_TIME)
    return folder, {"posts": b.posts, "comments": b.comments}


def setup(space: Workspace) -> None:
    shutil.copytree(pristine()[0] / "dumps", space.root, dirs_exist_ok=True)


def builder(space: Workspace) -> WebCrawlBuilder:
    config = CrawlConfig(
        dumps=(DumpSourceConfig(submissions=FILES["posts"], comments=FILES["comments"]),),
        # replay-only: the images come from the sample's cache (read-only, shared), never from the network
        http=HttpConfig(cache_dir=str(pristine()[0] / "cache")),
        takedown=TakedownConfig(),
        posts_per_unit=2,
    )
    return WebCrawlBuilder(config, BuildContext(root=space.root, out_dir=space.out, unit_size=2))


def thread_key(row: dict[str, Any]) -> str:
    return str(row["origin"]["image_id"])


def run_dump(space: Workspace):
    # A .zst that is cut short or is not zstd at all is refused whole, by file (TruncatedDump, an OSError)
    return run(lambda: builder(space), space, key=thread_key, file_errors=(ValueError, FileNotFoundError, OSError))


@cache
def baseline():
    with workspace() as space:
        setup(space)
        outcome = run_dump(space)
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, outcome.failures
    return outcome


def post_of(kind: str, record: dict[str, Any]) -> str:
    return str(record["id"] if kind == "posts" else link_post_id(record))


JUNK_LINES = st.one_of(
    st.sampled_from([b"", b" ", b"{", b"[]", b"null", b"NaN", b"\xff\xfe", b"\x00" * 4, b'{"subreddit": 1}',
                     b'{"subreddit": "PhotoshopRequest"', b'{"subreddit": "PhotoshopRequest", "id": [1]}',
                     b'{"kind": "t3", "data": {"subreddit": "PhotoshopRequest", "id": "\\ud800"}}',
                     b"[" * 100_000, b'{"subreddit": "PhotoshopRequest", "id": "deep", "x": ' + b"[" * 100_000]),
    st.binary(max_size=40),
)


@st.composite
def damaged_line(draw, kind: str, record: Any, names: list[str]) -> tuple[str, bytes]:
    """One line: the record with one change, written as JSON (escaped; wrapped as the API's ``{"kind": "t3",
    "data": ...}``, which dumps made from API answers hold; raw UTF-8 with any lone surrogate as its invalid
    bytes; or Latin-1: not UTF-8), or the whole line replaced by junk bytes."""
    form = draw(st.sampled_from(["json", "json", "wrapped", "raw", "latin-1", "junk"]))
    if form == "junk":
        junk = draw(JUNK_LINES)
        return f"line replaced by {junk!r:.80}", junk
    mutation = draw(changes(record, names))
    value = apply(record, mutation)
    if form == "json":
        return f"{mutation}", json.dumps(value, sort_keys=True).encode()
    if form == "wrapped":
        thing = {"kind": "t3" if kind == "posts" else "t1", "data": value}
        return f"{mutation} (wrapped)", json.dumps(thing, sort_keys=True).encode()
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if form == "raw":
        return f"{mutation} (raw UTF-8)", text.encode("utf-8", "surrogatepass")
    return f"{mutation} (Latin-1)", text.encode("latin-1", "replace")


@share(0.7)
@given(st.data())
def test_a_damaged_record_fails_alone(data):
    baseline_outcome = baseline()
    _, records = pristine()
    kind = data.draw(st.sampled_from(sorted(records)))
    index = data.draw(st.integers(0, len(records[kind]) - 1))
    with workspace() as space:
        setup(space)
        what, line = data.draw(damaged_line(kind, records[kind][index], space.names))
        lines = [line_of(r) for r in records[kind]]
        lines[index] = line
        write_dump(space.root / FILES[kind], lines)
        outcome = run_dump(space)
        count(FAMILY)
        check_outcome(outcome, baseline_outcome, space, {post_of(kind, records[kind][index])}, [FILES[kind]],
                      f"{FILES[kind]} line {index + 1}: {what}")


@share(0.15)
@given(st.data())
def test_a_damaged_file_is_named(data):
    """The .zst bytes damaged (a truncated download, junk in the frames): refused by file, or read as lines."""
    baseline_outcome = baseline()
    name = data.draw(st.sampled_from(sorted(FILES.values())))
    with workspace() as space:
        setup(space)
        what, damaged = data.draw(byte_damage((space.root / name).read_bytes()))
        (space.root / name).write_bytes(damaged)
        outcome = run_dump(space)
        count(FAMILY)
        check_outcome(outcome, baseline_outcome, space, None, [name], f"{name} {what}")


@share(0.15)
@given(st.data())
def test_damaged_content_in_a_whole_frame(data):
    """The NDJSON damaged before compression (a line cut short, bytes that are not UTF-8, NULs, deep nesting):
    the frame is whole, so the damage reaches the line reader."""
    baseline_outcome = baseline()
    name = data.draw(st.sampled_from(sorted(FILES.values())))
    with workspace() as space:
        setup(space)
        text = zstandard.ZstdDecompressor().decompress((space.root / name).read_bytes())
        what, damaged = data.draw(file_damage(text))
        (space.root / name).write_bytes(zstandard.ZstdCompressor(level=LEVEL).compress(damaged))
        outcome = run_dump(space)
        count(FAMILY)
        check_outcome(outcome, baseline_outcome, space, None, [name], f"{name} (decompressed) {what}")
