"""`ieiw stats`: what is in a stage folder, from its manifest and the shards' light columns.

Counts of kept, rejected and failed records come from the manifest entries (each unit's stats);
distributions come from the shards, reading every column but the images.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.shards import atomic_write_bytes

LIGHT_COLUMNS = ["task", "instruction", "width", "height", "origin", "scores", "builder", "split"]
SCORE_FIELDS = ("source_aesthetic", "target_aesthetic", "source_giqa", "target_giqa", "edit_consistency")
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _quantiles(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    qs = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
    out = {f"q{int(q * 100):02d}": round(float(v), 4) for q, v in zip(QUANTILES, qs, strict=True)}
    out["mean"] = round(float(np.mean(values)), 4)
    out["count"] = len(values)
    return out


def compute_stats(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    manifest = load_manifest(folder)
    failures: Counter = Counter()
    rejected: Counter = Counter()
    records = candidates = 0
    examples: list[str] = []
    thresholds: dict[str, dict] = {}
    for entry in manifest["units"].values():
        stats = entry.get("stats", {})
        for task, rules in (stats.get("thresholds") or {}).items():
            thresholds.setdefault(task, rules)
        records += stats.get("records", 0)
        candidates += stats.get("candidates", 0)
        failures.update(stats.get("failures", {}))
        rejected.update(stats.get("rejected", {}))
        examples.extend(stats.get("failure_messages", [])[: max(0, 20 - len(examples))])

    by_task: Counter = Counter()
    by_source: Counter = Counter()
    by_split: Counter = Counter()
    backends: Counter = Counter()
    scores: dict[str, list] = {name: [] for name in SCORE_FIELDS}
    widths, heights, chars, words = [], [], [], []
    embedded = 0
    for entry in sorted(manifest["units"].values(), key=lambda e: e["shard"]):
        path = folder / entry["shard"]
        present = set(pq.read_schema(path).names)  # rejected/ and scores/ shards have fewer columns
        table = pq.read_table(path, columns=[c for c in LIGHT_COLUMNS if c in present])
        for row in table.to_pylist():
            by_task[row.get("task")] += 1
            by_source[(row.get("origin") or {}).get("dataset")] += 1
            if row.get("split"):  # schema v2; v1 folders have no split column
                by_split[row["split"]] += 1
            builder = row.get("builder") or {}
            if builder:
                backends[f"{builder['name']}: {builder['backend']}"] += 1
            embedded += bool(builder.get("embedded") or (row.get("scores") or {}).get("embedded"))
            if row.get("scores"):
                backends[f"scores: {row['scores']['backend']}"] += 1
                for name in SCORE_FIELDS:
                    scores[name].append(row["scores"][name])
            if "width" in row:
                widths.append(row["width"])
                heights.append(row["height"])
            if "instruction" in row:
                chars.append(len(row["instruction"]))
                words.append(len(row["instruction"].split()))
    rows = sum(by_task.values())
    return {
        "path": str(folder),
        "stage": manifest["stage"],
        "schema_version": manifest["schema_version"],
        "shards": len(manifest["units"]),
        "rows": rows,
        "by_task": dict(sorted(by_task.items())),
        "by_source": dict(sorted(by_source.items())),
        "by_split": dict(sorted(by_split.items())),
        "records": records,
        "candidates": candidates,
        "kept": rows,
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": sum(rejected.values()),
        "selection_thresholds": dict(sorted(thresholds.items())),
        "failures": dict(sorted(failures.items())),
        "failures_total": sum(failures.values()),
        "failure_examples": examples,
        "scores": {name: _quantiles(values) for name, values in scores.items()},
        "image_width": _quantiles(widths),
        "image_height": _quantiles(heights),
        "instruction_chars": _quantiles(chars),
        "instruction_words": _quantiles(words),
        "backends": dict(sorted(backends.items())),
        "embedded_rows": embedded,
        "build_backends": {h: b.get("backends") for h, b in manifest.get("builds", {}).items()},
    }


def write_stats(stats: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(Path(path), (json.dumps(stats, indent=1) + "\n").encode())


def _counts(title: str, counts: dict[str, int]) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    width = max(28, *(len(str(k)) for k in counts))
    return [f"{title}:"] + [f"  {str(k):<{width}} {v:>8}" for k, v in counts.items()]


def render_text(stats: dict[str, Any]) -> str:
    lines = [
        f"{stats['path']}  (stage {stats['stage']}, schema v{stats['schema_version']}, {stats['shards']} shards)",
        f"{'kept ' if stats['stage'] == 'ieiw' else ''}rows {stats['rows']}  |  source records {stats['records']}"
        f"  |  candidates {stats['candidates']}"
        f"  |  rejected {stats['rejected_total']}  |  failed records {stats['failures_total']}",
    ]
    lines += _counts("by task", stats["by_task"])
    lines += _counts("by source", stats["by_source"])
    if stats.get("by_split"):
        lines += _counts("by split", stats["by_split"])
    lines += _counts("rejected (reason)", stats["rejected"])
    if stats.get("selection_thresholds"):
        lines.append("selection thresholds (resolved per task; - = rule off):")
        for task, rules in stats["selection_thresholds"].items():
            shown = "  ".join(f"{k}={'-' if v is None else f'{v:.4g}'}" for k, v in rules.items())
            lines.append(f"  {task:<10} {shown}")
    lines += _counts("failed records (reason)", stats["failures"])
    for example in stats["failure_examples"][:5]:
        lines.append(f"    e.g. {example}")
    lines.append("scores (quantiles q00 q05 q25 q50 q75 q95 q100):")
    for name, q in stats["scores"].items():
        if q:
            values = " ".join(f"{q[k]:.2f}" for k in q if k.startswith("q"))
            lines.append(f"  {name:<18} {values}  (n={q['count']})")
    for key in ("image_width", "image_height", "instruction_chars", "instruction_words"):
        q = stats[key]
        if q:
            lines.append(f"{key:<20} min {q['q00']:.0f}  median {q['q50']:.0f}  max {q['q100']:.0f}")
    lines += _counts("backends (rows)", stats["backends"])
    lines.append(f"rows made or scored by an embedded CPU stand-in: {stats['embedded_rows']} of {stats['rows']}")
    return "\n".join(lines)


def render_markdown(stats: dict[str, Any]) -> str:
    """The Prefect artifact: the same numbers as ``ieiw stats``, in a code block."""
    return f"# IEIW build: {stats['rows']} pairs kept\n\n```\n{render_text(stats)}\n```\n"
