"""Throughput of the dump index pass against raw ``zstd -dc`` on the same file, in the same run.

Generates a zstd NDJSON submissions dump (level 3, long window) of at least ``--gb`` GB uncompressed in
which ``--share`` of the lines belong to the configured subreddit (1%, as in a real monthly file), plus
a comments dump, then times:

- ``zstd -dc --long=31 FILE > /dev/null`` (the physical limit: decompression alone), and
- ``index_dump`` (decompress, prefilter, parse the candidates, write Parquet) in a child process,

and prints MB/s of compressed input for both, their ratio (goal >= 0.5), the subreddit share and the
peak RSS of the pass, next to the peak RSS of the pass on a 200 MB dump.

    .venv/bin/python bench/dump_scan.py [--gb 1.0] [--share 0.01] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

WORDS = (
    "the a photo please remove background person sky make brighter fix edit my dog cat wedding old scan "
    "restore colour car tree people beach light dark shadow face smile hair glasses hat sign text blur "
    "sharpen crop add remove put swap replace tip paypal thanks help family grandma kid picture"
).split()
SUB = "PhotoshopRequest"
OTHERS = ("pics", "AskReddit", "funny", "aww", "gaming", "worldnews", "photoshopbattles", "Photoshop")


def _post(rng: random.Random, pid: str, sub: str, n_words: int) -> dict:
    title = " ".join(rng.choices(WORDS, k=12))
    return {
        "id": pid,
        "name": f"t3_{pid}",
        "subreddit": sub,
        "subreddit_id": f"t5_{abs(hash(sub)) % 10**6:x}",
        "author": f"user{rng.randrange(10**7)}",
        "title": title,
        "selftext": " ".join(rng.choices(WORDS, k=n_words)),
        "url": f"https://i.redd.it/{pid}{rng.randrange(10**9):x}.jpg",
        "permalink": f"/r/{sub}/comments/{pid}/{title[:30].replace(' ', '_')}/",
        "created_utc": 1_700_000_000 + rng.randrange(2_600_000),
        "score": rng.randrange(5000),
        "num_comments": rng.randrange(300),
        "over_18": rng.random() < 0.02,
        "is_video": False,
        "post_hint": "image",
        "domain": "i.redd.it",
        "thumbnail": f"https://b.thumbs.redditmedia.com/{rng.getrandbits(128):032x}.jpg",
    }


def _comment(rng: random.Random, cid: str, pid: str, sub: str) -> dict:
    body = " ".join(rng.choices(WORDS, k=rng.randrange(5, 60)))
    if sub == SUB and rng.random() < 0.5:
        body += f" https://i.imgur.com/{rng.getrandbits(40):x}.jpg"
    return {
        "id": cid,
        "link_id": f"t3_{pid}",
        "parent_id": f"t3_{pid}",
        "subreddit": sub,
        "author": f"user{rng.randrange(10**7)}",
        "score": rng.randrange(-5, 500),
        "body": body,
        "created_utc": 1_700_000_000 + rng.randrange(2_600_000),
        "permalink": f"/r/{sub}/comments/{pid}/x/{cid}/",
    }


def generate(
    folder: Path,
    target_bytes: int,
    share: float = 0.01,
    seed: int = 0,
    comments_ratio: float = 0.25,
    window_log: int = 27,
) -> dict:
    """Write ``submissions.ndjson.zst`` (>= ``target_bytes`` uncompressed) and ``comments.ndjson.zst``.

    ``window_log`` 27 is a 128 MiB window (``--long=27``); the decoder touches min(window, output) of it,
    so peak RSS comparisons need the same window on both sides. Returns the subreddit line numbers
    (1-based) of the submissions and the counts."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log, enable_ldm=True, threads=-1)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    sub_lines: list[int] = []
    sub_posts: list[str] = []
    written = lines = 0
    step = max(1, round(1 / share)) if share > 0 else 0
    with open(folder / "submissions.ndjson.zst", "wb") as raw, cctx.stream_writer(raw) as out:
        while written < target_bytes:
            batch = []
            for _ in range(1000):
                lines += 1
                pid = f"p{lines:x}"
                if step and rng.randrange(step) == 0:
                    sub = SUB if rng.random() < 0.95 else SUB.lower()
                    sub_lines.append(lines)
                    sub_posts.append(pid)
                else:
                    sub = rng.choice(OTHERS)
                batch.append(json.dumps(_post(rng, pid, sub, rng.randrange(20, 160)), separators=(",", ":")))
            data = ("\n".join(batch) + "\n").encode()
            out.write(data)
            written += len(data)
    c_written = c_lines = 0
    with open(folder / "comments.ndjson.zst", "wb") as raw, cctx.stream_writer(raw) as out:
        while c_written < target_bytes * comments_ratio:
            batch = []
            for _ in range(1000):
                c_lines += 1
                if sub_posts and step and rng.randrange(step) == 0:
                    pid, sub = rng.choice(sub_posts), SUB
                else:
                    pid, sub = f"q{rng.randrange(10**8):x}", rng.choice(OTHERS)
                batch.append(json.dumps(_comment(rng, f"c{c_lines:x}", pid, sub), separators=(",", ":")))
            data = ("\n".join(batch) + "\n").encode()
            out.write(data)
            c_written += len(data)
    return {
        "sub_lines": sub_lines,
        "lines": lines,
        "bytes": written,
        "comment_lines": c_lines,
        "comment_bytes": c_written,
    }


CHILD = """
import json, resource, sys, time
from pathlib import Path
from ieiw.crawlers.dump_index import index_dump
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter()
r = index_dump(folder / "submissions.ndjson.zst", folder / "comments.ndjson.zst", "PhotoshopRequest", out, 64)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": dt, "counts": r.counts, "rss_kb": rss}))  # this process + its decompressor helper
"""


def run_pass(folder: Path, out: Path) -> dict:
    """The index pass in a fresh process: its wall time, counts and peak RSS (KiB)."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", CHILD, str(folder), str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, env=env)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def zstd_seconds(path: Path) -> float:
    t = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["zstd", "-dc", "--long=31", str(path)], stdout=null, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="uncompressed size of the submissions dump")
    ap.add_argument("--share", type=float, default=0.01)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this folder")
    ap.add_argument("--repeat", type=int, default=3, help="timings taken; the best of each is reported")
    args = ap.parse_args()
    if shutil.which("zstd") is None:
        sys.exit("zstd CLI missing: apt-get install -y zstd")
    tmp = Path(tempfile.mkdtemp(prefix="dump-scan-"))
    try:
        big = args.keep or tmp / "big"
        t = time.perf_counter()
        info = generate(big, int(args.gb * 1e9), args.share)
        gen_s = time.perf_counter() - t
        small = generate(tmp / "small", 200_000_000, args.share, seed=1)
        subs = big / "submissions.ndjson.zst"
        comp_mb = subs.stat().st_size / 1e6
        share = len(info["sub_lines"]) / info["lines"]
        print(f"generated {info['bytes'] / 1e9:.2f} GB uncompressed ({info['lines']} lines) -> {comp_mb:.1f} MB "
              f"compressed in {gen_s:.0f} s; subreddit share {share:.2%} ({len(info['sub_lines'])} lines)")
        # same file, same run: only the submissions file is timed through both (the comments pass is extra)
        raw = min(zstd_seconds(subs) for _ in range(args.repeat))
        passes = []
        for k in range(args.repeat):
            out = tmp / f"idx{k}"
            sub_only = tmp / f"subonly{k}"
            sub_only.mkdir()
            os.link(subs, sub_only / "submissions.ndjson.zst")
            (sub_only / "comments.ndjson.zst").write_bytes(b"")  # empty: time the submissions alone
            passes.append(run_pass(sub_only, out))
        best = min(passes, key=lambda p: p["seconds"])
        full = run_pass(big, tmp / "full")
        small_pass = run_pass(tmp / "small", tmp / "small-idx")
        print(f"zstd -dc --long=31 > /dev/null: {comp_mb / raw:8.1f} MB/s compressed ({raw:.2f} s)")
        print(f"index pass (submissions):       {comp_mb / best['seconds']:8.1f} MB/s compressed "
              f"({best['seconds']:.2f} s); ratio to zstd -dc {raw / best['seconds']:.2f} (goal >= 0.5)")
        print(f"index pass with comments ({info['comment_bytes'] / 1e9:.2f} GB more): {full['seconds']:.2f} s; "
              f"posts {full['counts']['post_rows']}, comments {full['counts']['comment_rows']}")
        print(f"peak RSS: 200 MB dump {small_pass['rss_kb'] / 1024:.0f} MiB, {info['bytes'] / 1e9:.1f} GB dump "
              f"{full['rss_kb'] / 1024:.0f} MiB (ratio {full['rss_kb'] / small_pass['rss_kb']:.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
