"""Do two builds hold the same corpus? Row ids, counts by task and reason, and every image's bytes.

    python scripts/compare_builds.py OUT_A OUT_B

Compares every folder of kept rows (``ieiw/`` and the other families' folders) and ``rejected/``: the sorted
row ids, the rows per task, the rejected rows per reason, and a digest of each row's source, target and mask
bytes (and instruction). Exits 0 when the builds agree, 1 with the differences listed otherwise. Used to show
that a refactoring changed no output (the house issue's acceptance: ``make build`` before and after).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

KEPT_COLUMNS = ("id", "task", "instruction", "source_image", "target_image", "mask")


def _digest(cell: dict | None) -> str | None:
    if cell is None or cell.get("bytes") is None:
        return None
    return hashlib.sha256(cell["bytes"]).hexdigest()[:16]


def folder_rows(folder: Path) -> dict[str, dict]:
    """id -> what must match (task, instruction, image digests, reason) over every shard of ``folder``."""
    rows: dict[str, dict] = {}
    for shard in sorted(folder.glob("*.parquet")):
        table = pq.ParquetFile(shard).read()
        names = [c for c in (*KEPT_COLUMNS, "reason") if c in table.column_names]
        for row in table.select(names).to_pylist():
            rows[row["id"]] = {key: (_digest(value) if isinstance(value, dict) or key in KEPT_COLUMNS[3:] else value)
                               for key, value in row.items() if key != "id"}
    return rows


def holds_rows(folder: Path) -> bool:
    """A folder of pair rows (``id`` and ``task`` columns), not an index or a cache."""
    shard = next(iter(sorted(folder.glob("*.parquet"))), None)
    return shard is not None and {"id", "task"} <= set(pq.read_schema(shard).names)


def row_folders(out: Path) -> list[str]:
    """The folders of a build that hold rows: ``ieiw/``, ``rejected/`` and each other family's folder."""
    intermediate = {"candidates", "features", "scores", "exemplars"}
    return sorted(p.name for p in out.iterdir() if p.is_dir() and (p / "manifest.json").exists()
                  and p.name not in intermediate and holds_rows(p))


def compare(a: Path, b: Path) -> list[str]:
    problems = []
    folders_a, folders_b = row_folders(a), row_folders(b)
    if folders_a != folders_b:
        problems.append(f"row folders differ: {folders_a} vs {folders_b}")
    for folder in sorted(set(folders_a) & set(folders_b)):
        rows_a, rows_b = folder_rows(a / folder), folder_rows(b / folder)
        only_a, only_b = sorted(rows_a.keys() - rows_b.keys()), sorted(rows_b.keys() - rows_a.keys())
        if only_a or only_b:
            problems.append(f"{folder}/: {len(only_a)} ids only in A (e.g. {only_a[:3]}), "
                            f"{len(only_b)} only in B (e.g. {only_b[:3]})")
        for key in ("task", "reason"):
            count_a = Counter(r.get(key) for r in rows_a.values())
            count_b = Counter(r.get(key) for r in rows_b.values())
            if count_a != count_b:
                problems.append(f"{folder}/: rows by {key} differ: {dict(count_a)} vs {dict(count_b)}")
        changed = [rid for rid in sorted(rows_a.keys() & rows_b.keys()) if rows_a[rid] != rows_b[rid]]
        if changed:
            fields = sorted({k for rid in changed for k in rows_a[rid] if rows_a[rid][k] != rows_b[rid].get(k)})
            problems.append(f"{folder}/: {len(changed)} rows differ in {fields} (e.g. {changed[:3]})")
        print(f"{folder}/: {len(rows_a)} rows in A, {len(rows_b)} in B", file=sys.stderr)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    problems = compare(args.a, args.b)
    for line in problems:
        print(line)
    print("same corpus: ids, counts by task and reason, instructions and image bytes" if not problems
          else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
