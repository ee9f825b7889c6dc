"""Time to clean a long crafted request (``instruction_from_post`` / ``instruction_from_comment``) against
plain text of the same length, in the same run.

Every shape is text a regex with nested or adjacent quantifiers would backtrack over for each start
position (quadratic or worse): the closing-politeness trailer ("a a a ... a": 18.5 s at 4 KB before it
was rewritten), long digit runs (amounts), long runs of unusual whitespace, runs of tags, unclosed
markdown links, a trailer that really is 40,000 characters of "please", thousands of distinct requests.
Each is cleaned as a title and as a body (comment shapes through ``instruction_from_comment``), and
the best of ``--repeat`` runs is printed next to the plain-text baseline. Goal: every shape under 50 ms
at 40,000 characters. ``SHAPES`` is imported by ``tests/crawlers/test_crawl_titles.py``, which only
guards against a blow-up (a generous bound), in a child process with a timeout.

    .venv/bin/python bench/title_cleaning.py [--chars 40000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ieiw.crawlers.titles import instruction_from_comment, instruction_from_post  # noqa: E402


def _fill(unit: str, n: int, head: str = "", tail: str = "") -> str:
    """``head`` + ``unit`` repeated + ``tail``, ``n`` characters in all."""
    body = unit * ((n - len(head) - len(tail)) // len(unit) + 1)
    return head + body[: max(0, n - len(head) - len(tail))] + tail


PLAIN = (
    "We went to the lake last summer with my grandparents and the dog, and this is one of the few "
    "photos where everyone is looking at the camera at the same time. "
)

# name -> (kind, text of n characters); kind: "post" (cleaned as title and as body) or "comment"
SHAPES: dict[str, tuple[str, Callable[[int], str]]] = {
    "plain text (baseline)": ("post", lambda n: _fill(PLAIN, n)),
    "trailer: 'a a a ... a'": ("post", lambda n: _fill("a ", n, "Removed ", "a")),
    "trailer: 'for a for a ...' then a word": ("post", lambda n: _fill("for a ", n, "Remove the bin ", "x")),
    "trailer: 40k of real trailer": ("post", lambda n: _fill("please ", n, "Remove the bin ", "thanks")),
    "trailer: 'thank you so ...'": ("post", lambda n: _fill("thank you so ", n, "Remove the bin ", "x")),
    "digits: '1111...'": ("post", lambda n: _fill("1", n, "Remove the bin for ")),
    "digits: '1.1.1.1...'": ("post", lambda n: _fill("1.", n, "Remove the bin for ")),
    "whitespace: em spaces": ("post", lambda n: _fill("\u2003", n, "Remove the tip", "@")),
    "whitespace: carriage returns": ("post", lambda n: _fill("\r", n, "Remove the bin", "@")),
    "whitespace: '$5' then spaces": ("post", lambda n: _fill("\u3000", n, "$5", "@")),
    "tags: PAID then '[free]...'": ("post", lambda n: _fill("[free]", n, "PAID", "@")),
    "amounts: ' $5 $5 $5 ...'": ("post", lambda n: _fill(" $5", n, "will ", " x")),
    "emoticons: ' :) :) ...'": ("post", lambda n: _fill(" :)", n, "Remove the bin")),
    "quotes: \"'ab'c\" runs": ("post", lambda n: _fill("'ab'c", n, "Remove the ")),
    "laughs: 'hahaha...x'": ("post", lambda n: _fill("ha", n, "Remove the bin ", "x")),
    "requests: thousands of distinct ones": (
        "post",
        lambda n: "".join(f"Remove the thing number {i}. " for i in range(n // 25))[:n],
    ),
    "comment: '[[[[...'": ("comment", lambda n: _fill("[", n, "removed the bin ")),
    "comment: '[a](' runs": ("comment", lambda n: _fill("[a](", n, "removed the bin ")),
    "comment: 'removed a a a ...'": ("comment", lambda n: _fill("a ", n, "removed ", "a")),
}


def clean(kind: str, text: str) -> list[float]:
    """Seconds to clean ``text`` as a title and as a body (a post), or as a comment."""
    times = []
    calls = [lambda: instruction_from_comment(text)] if kind == "comment" else [
        lambda: instruction_from_post(text, ""),
        lambda: instruction_from_post("Remove the bin", text),
    ]
    for call in calls:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chars", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"{'shape':<42} {'as title':>10} {'as body':>10}   ({args.chars} characters, best of {args.repeat})")
    worst = 0.0
    for name, (kind, make) in SHAPES.items():
        text = make(args.chars)
        best = [min(ts) for ts in zip(*(clean(kind, text) for _ in range(args.repeat)))]
        worst = max(worst, *best) if not name.endswith("(baseline)") else worst
        cells = [f"{t * 1000:8.1f}ms" for t in best] + ([""] if len(best) == 1 else [])
        label = f"{name} [comment]" if kind == "comment" else name
        print(f"{label:<42} {cells[0]:>10} {cells[1]:>10}")
    print(f"worst crafted shape: {worst * 1000:.1f} ms (goal < 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
