"""`ieiw stats`: what is in a stage folder, from its manifest and the shards' light columns.

Counts of kept, rejected and failed records come from the manifest entries (each unit's stats);
distributions come from the shards, reading only the small columns (nested fields by path, so not even
the struct a field sits in is read whole) and computing with pyarrow: image bytes are never read and
no row becomes a Python object, so 100k rows cost seconds and little memory (bench/stats_scale.py).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ieiw.audit.summary import summary as audit_summary
from ieiw.schemas import storage
from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.shards import COMPACT_EVERY, concat_compact

SCORE_FIELDS = ("source_aesthetic", "target_aesthetic", "source_giqa", "target_giqa", "edit_consistency", "verification")
# (output name, column path in the shard): nested fields are read alone, so image bytes are never read.
LIGHT_FIELDS = (
    ("task", "task"), ("split", "split"), ("width", "width"), ("height", "height"), ("instruction", "instruction"),
    ("edit_kind", "edit_kind"),
    ("dataset", "origin.dataset"), ("builder_name", "builder.name"), ("builder_backend", "builder.backend"),
    ("builder_embedded", "builder.embedded"), ("scores_backend", "scores.backend"),
    ("scores_embedded", "scores.embedded"), *((name, f"scores.{name}") for name in SCORE_FIELDS),
    ("exemplar_similarity", "exemplar.similarity"), ("label_source", "exemplar.source_label_source"),
    ("exemplar_label_source", "exemplar.label_source"),
)


def _shard_light(path: Path) -> pa.Table:
    """The light columns of one shard, read by column path (pyarrow reads only those column chunks;
    the footer is parsed once)."""
    handle = storage.parquet_file(path)  # a local file or an object (ranged reads of these columns only)
    schema = handle.schema_arrow
    present = [(name, column) for name, column in LIGHT_FIELDS if storage.has_column(schema, column)]
    # ParquetFile.read keeps the nesting: "origin.dataset" comes back as a struct "origin" of one field.
    table = handle.read(columns=[column for _, column in present]) if present else pa.table({})
    arrays = {}
    for name, column in present:
        top, _, child = column.partition(".")
        arrays[name] = pc.struct_field(table[top], child) if child else table[top]
    rows = handle.metadata.num_rows
    return pa.table({name: arrays.get(name, pa.nulls(rows)) for name, _ in LIGHT_FIELDS})


def _light_table(folder: Path, manifest: dict[str, Any]) -> pa.Table:
    paths = [folder / e["shard"] for e in sorted(manifest["units"].values(), key=lambda e: e["shard"])]
    # Shards decode in parallel (pyarrow releases the GIL), as DuckDB's scan does; order is kept.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:

        def parts() -> Iterator[pa.Table]:  # a batch in flight at a time: reads never run ahead of compaction
            for start in range(0, len(paths), COMPACT_EVERY):
                yield from (p for p in pool.map(_shard_light, paths[start:start + COMPACT_EVERY]) if p.num_rows)

        # compacted as they arrive: one chunk per shard would hold ~40 KB each (ieiw/schemas/shards.py)
        table = concat_compact(parts())
    if table is None:
        return pa.table({name: pa.array([], pa.null()) for name, _ in LIGHT_FIELDS} | {
            "builder_key": pa.array([], pa.string()), "embedded": pa.array([], pa.bool_()),
            "chars": pa.array([], pa.int64()), "words": pa.array([], pa.int64())})
    instruction = table["instruction"]
    if pa.types.is_null(instruction.type):
        chars = words = pa.nulls(table.num_rows, pa.int64())
    else:
        chars = pc.utf8_length(instruction)
        words = pc.list_value_length(pc.utf8_split_whitespace(instruction))
    key = pc.binary_join_element_wise(table["builder_name"].cast(pa.string()),
                                      table["builder_backend"].cast(pa.string()), ": ")
    embedded = pc.or_(pc.fill_null(table["builder_embedded"].cast(pa.bool_()), False),
                      pc.fill_null(table["scores_embedded"].cast(pa.bool_()), False))
    return table.append_column("builder_key", key).append_column("embedded", embedded) \
        .append_column("chars", chars).append_column("words", words)


def _value_counts(table: pa.Table, column: str) -> dict[str, int]:
    if column not in table.column_names or not table.num_rows:
        return {}
    out = {}
    for item in pc.value_counts(table[column]).to_pylist():
        if item["values"] is not None:
            out[item["values"]] = item["counts"]
    return out


def _column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names or not table.num_rows or pa.types.is_null(table[name].type):
        return np.zeros(0)
    values = pc.drop_null(table[name]).to_numpy(zero_copy_only=False)
    return values.astype(np.float64)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    qs = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
    out = {f"q{int(q * 100):02d}": round(float(v), 4) for q, v in zip(QUANTILES, qs, strict=True)}
    out["mean"] = round(float(np.mean(values)), 4)
    out["count"] = len(values)
    return out


def compute_stats(folder: Path) -> dict[str, Any]:
    """Stats of a stage folder: a local path or an object-storage URL (``s3://bucket/out/ieiw``)."""
    folder = storage.location(folder)
    manifest = load_manifest(folder)
    failures: Counter = Counter()
    rejected: Counter = Counter()
    rejected_kinds: Counter = Counter()
    skipped: Counter = Counter()
    records = candidates = 0
    examples: list[str] = []
    thresholds: dict[str, dict] = {}
    quota_limits: dict[str, int] = {}
    quota_kept: Counter = Counter()
    quota_passed: Counter = Counter()
    for entry in manifest["units"].values():
        stats = entry.get("stats", {})
        if quota := stats.get("quota"):  # selection.quotas (ieiw/filters/selection.py)
            quota_limits.update(quota.get("limits", {}))
            quota_kept[quota.get("builder")] += quota.get("kept", 0)
            quota_passed[quota.get("builder")] += quota.get("passed", 0)
        for task, rules in (stats.get("thresholds") or {}).items():
            thresholds.setdefault(task, rules)
        records += stats.get("records", 0)
        candidates += stats.get("candidates", 0)
        failures.update(stats.get("failures", {}))
        rejected.update(stats.get("rejected", {}))
        rejected_kinds.update(stats.get("rejected_kinds", {}))
        skipped.update(stats.get("skipped", {}))
        examples.extend(stats.get("failure_messages", [])[: max(0, 20 - len(examples))])

    light = _light_table(folder, manifest)
    by_task = _value_counts(light, "task")
    by_source = _value_counts(light, "dataset")
    by_split = _value_counts(light, "split")
    by_kind = _value_counts(light, "edit_kind")
    backends = Counter(_value_counts(light, "builder_key"))
    backends.update({f"scores: {k}": v for k, v in _value_counts(light, "scores_backend").items()})
    scores = {name: _column(light, name) for name in SCORE_FIELDS}
    widths, heights = _column(light, "width"), _column(light, "height")
    chars, words = _column(light, "chars"), _column(light, "words")
    label_sources = Counter({f"region: {k}": v for k, v in _value_counts(light, "label_source").items()})
    label_sources.update({f"exemplar: {k}": v for k, v in _value_counts(light, "exemplar_label_source").items()})
    embedded = int(pc.sum(light["embedded"]).as_py() or 0) if light.num_rows else 0
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
        "by_edit_kind": dict(sorted(by_kind.items())),  # kept rows that carry a kind (crawled edits)
        "rejected_by_edit_kind": dict(sorted(rejected_kinds.items())),
        "records": records,
        "candidates": candidates,
        "kept": rows,
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": sum(rejected.values()),
        "selection_thresholds": dict(sorted(thresholds.items())),
        "quotas": quota_report(quota_limits, quota_kept, quota_passed),
        "failures": dict(sorted(failures.items())),
        "failures_total": sum(failures.values()),
        "skipped": dict(sorted(skipped.items())),
        "skipped_total": sum(skipped.values()),
        "failure_examples": examples,
        "scores": {name: _quantiles(values) for name, values in scores.items()},
        "image_width": _quantiles(widths),
        "image_height": _quantiles(heights),
        "exemplar_similarity": _quantiles(_column(light, "exemplar_similarity")),
        "label_sources": dict(sorted(label_sources.items())),
        "instruction_chars": _quantiles(chars),
        "instruction_words": _quantiles(words),
        "backends": dict(sorted(backends.items())),
        "embedded_rows": embedded,
        "build_backends": {h: b.get("backends") for h, b in manifest.get("builds", {}).items()},
        # the human audit (`ieiw audit report`, docs/audit.md) of the build this folder belongs to, where one ran
        **({"audit": audit} if (audit := audit_summary(folder.parent)) else {}),
    }


def quota_report(limits: dict[str, int], kept: dict[str, int], passed: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per builder with a quota: the quota, rows kept, rows that passed every other rule, the shortfall."""
    out = {}
    for name, limit in sorted(limits.items()):
        got = int(kept.get(name, 0))
        out[name] = {"quota": int(limit), "kept": got, "passed": int(passed.get(name, 0)),
                     "met": got >= limit, "short_by": max(0, int(limit) - got)}
    return out


def quota_lines(stats: dict[str, Any]) -> list[str]:
    """``quota removal: 12,345 of 85,000 (short by 72,655)`` or ``... (met; 97,000 passed the other rules)``."""
    lines = []
    for name, q in (stats.get("quotas") or {}).items():
        state = (f"met; {q['passed']:,} passed the other rules" if q["met"] else f"short by {q['short_by']:,}")
        lines.append(f"quota {name}: {q['kept']:,} of {q['quota']:,} ({state})")
    return lines


def kind_table(stats: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(edit kind, kept, rejected) of the crawled rows, by the ``edit_kind`` value (``geometric+local`` is a
    row of its own), kept rows first."""
    kept, rejected = stats.get("by_edit_kind") or {}, stats.get("rejected_by_edit_kind") or {}
    return sorted(((k, int(kept.get(k, 0)), int(rejected.get(k, 0))) for k in set(kept) | set(rejected)),
                  key=lambda row: (-row[1], -row[2], row[0]))


def kind_lines(stats: dict[str, Any]) -> list[str]:
    """``ieiw stats``' table of crawled rows per edit kind, kept and rejected."""
    rows = kind_table(stats)
    width = max([28, *(len(k) for k, _, _ in rows)])
    return ([f"web rows by edit kind:{'':<{width - 19}}{'kept':>8} {'rejected':>8}"]
            + [f"  {k:<{width}} {a:>8} {r:>8}" for k, a, r in rows])


def write_stats(stats: dict[str, Any], path: Path) -> None:
    storage.write_bytes_atomic(path, (json.dumps(stats, indent=1) + "\n").encode())


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
    if stats.get("by_edit_kind") or stats.get("rejected_by_edit_kind"):
        lines += kind_lines(stats)
    lines += quota_lines(stats)
    if stats.get("selection_thresholds"):
        lines.append("selection thresholds (resolved per task; - = rule off):")
        for task, rules in stats["selection_thresholds"].items():
            shown = "  ".join(f"{k}={'-' if v is None else f'{v:.4g}'}" for k, v in rules.items())
            lines.append(f"  {task:<10} {shown}")
    lines += _counts("skipped by policy (reason)", stats.get("skipped", {}))
    lines += _counts("failed records (reason)", stats["failures"])
    for example in stats["failure_examples"][:5]:
        lines.append(f"    e.g. {example}")
    if audit := stats.get("audit"):
        from ieiw.audit.metrics import render_text as audit_text

        lines += audit_text(audit).splitlines() + (["  (stale: selection changed since the sample)"] if audit["stale"] else [])
    lines.append("scores (quantiles q00 q05 q25 q50 q75 q95 q100):")
    for name, q in stats["scores"].items():
        if q:
            values = " ".join(f"{q[k]:.2f}" for k in q if k.startswith("q"))
            lines.append(f"  {name:<18} {values}  (n={q['count']})")
    if q := stats.get("exemplar_similarity"):
        values = " ".join(f"{q[k]:.2f}" for k in q if k.startswith("q"))
        lines.append(f"  {'exemplar_similarity':<18} {values}  (n={q['count']}; replace rows: exemplar vs region)")
    if stats.get("label_sources"):
        lines += _counts("replace labels (where they came from)", stats["label_sources"])
    for key in ("image_width", "image_height", "instruction_chars", "instruction_words"):
        q = stats[key]
        if q:
            lines.append(f"{key:<20} min {q['q00']:.0f}  median {q['q50']:.0f}  max {q['q100']:.0f}")
    lines += _counts("backends (rows)", stats["backends"])
    lines.append(f"rows made or scored by an embedded CPU stand-in: {stats['embedded_rows']} of {stats['rows']}")
    return "\n".join(lines)


def render_markdown(stats: dict[str, Any], report: Path | None = None, failed_units: list[str] | None = None) -> str:
    """The Prefect markdown artifact: the same numbers as ``ieiw stats``, where the HTML report (pictures
    the numbers cannot show) was written, and the units that failed after their retries, if any."""
    text = f"# IEIW build: {stats['rows']} pairs kept\n\n"
    if report:
        text += f"HTML report (galleries, histograms): `{report}`\n\n"
    if failed_units:
        text += f"**{len(failed_units)} unit(s) failed after retries** (rerun the build to resume them):\n\n"
        text += "".join(f"- `{line}`\n" for line in failed_units) + "\n"
    short = [line for line in quota_lines(stats) if "short by" in line]
    if short:
        text += "**Quotas not met** (`selection.quotas`):\n\n" + "".join(f"- {line}\n" for line in short) + "\n"
    return text + f"```\n{render_text(stats)}\n```\n"


def count_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The Prefect table artifact: one row per (what, name) count, e.g. ("task", "remove", 259)."""
    rows = []
    for what, key in (("task", "by_task"), ("source", "by_source"), ("split", "by_split"),
                      ("edit kind", "by_edit_kind"), ("rejected edit kind", "rejected_by_edit_kind"),
                      ("rejected", "rejected"), ("skipped", "skipped"), ("failed", "failures")):
        rows += [{"what": what, "name": str(name), "count": int(count)} for name, count in stats.get(key, {}).items()]
    for name, q in (stats.get("quotas") or {}).items():
        rows += [{"what": "quota", "name": name, "count": q["quota"]},
                 {"what": "quota kept", "name": name, "count": q["kept"]}]
    return rows


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    import re

    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "build"
