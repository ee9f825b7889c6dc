"""`ieiw report`: one self-contained HTML page to judge a build by eye.

A build's numbers (``stats.json``) say how many pairs were kept; only pictures say whether they are any
good and where a threshold should sit. The page shows the stats, score histograms (kept and rejected,
with the resolved thresholds), the reasons as bars, a seeded random gallery of kept pairs per task, and
the rejected pairs nearest each threshold. Everything is inline (CSS, SVG, base64 JPEG thumbnails), so
the file opens from disk, offline, and can be attached to an issue.

Image columns are read only for the rows shown: light columns first, then the chosen rows' row groups.
"""

from __future__ import annotations

import base64
import html
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ieiw.filters.decontam import overlap_cells
from ieiw.filters.selection import BENCHMARK_OVERLAP, BY_SELECTION, RULES, measure
from ieiw.filters.vlm_judge import judge_numbers, judge_verdicts
from ieiw.imageio import ImageDecodeError, Orientation, decode, downscale, encode
from ieiw.schemas import storage
from ieiw.schemas.layout import CALIBRATION, CANDIDATES, PAIRS, REJECTED, REPORT, SCORES
from ieiw.schemas.manifest import load_manifest, manifest_path
from ieiw.schemas.shards import concat_compact
from ieiw.schemas.takedown import Takedown
from ieiw.stats import compute_stats, kind_table

log = logging.getLogger("ieiw")
THUMB_SIDE = 256  # px on the long side: enough to judge an edit, small enough for hundreds of images
THUMB_QUALITY = 85
NEAR_THRESHOLD = 3  # rejected pairs shown per task and rule
HIST_BINS = 20
LIGHT = ("id", "task", "instruction", "origin", "scores", "builder", "split", "reason", "rejected_by", "edit_kind")
IMAGES = ("source_image", "target_image", "mask")

# One histogram per series: (label, value of a scores dict, the rule whose threshold is drawn on it).
# Gap series appear only when their rule is on: they exist for the threshold, not on their own.
SERIES: tuple[tuple[str, Callable[[Mapping[str, Any]], Any], str | None], ...] = (
    ("source aesthetic", lambda s: s.get("source_aesthetic"), None),
    ("target aesthetic", lambda s: s.get("target_aesthetic"), "min_target_aesthetic"),
    ("aesthetic gap |a_s - a_t|", lambda s: measure("max_aesthetic_gap", s), "max_aesthetic_gap"),
    ("source GIQA", lambda s: s.get("source_giqa"), None),
    ("target GIQA", lambda s: s.get("target_giqa"), "min_target_giqa"),
    ("GIQA gap |ln g_s - ln g_t|", lambda s: measure("max_giqa_gap", s), "max_giqa_gap"),
    ("edit consistency", lambda s: s.get("edit_consistency"), None),
    # the VLM judge's scores (0-1) where a judge ran (ieiw.filters.vlm_judge): merged in from the scores stage
    ("judge: instruction followed", lambda s: s.get("judge_instruction"), "min_judge_instruction"),
    ("judge: rest preserved", lambda s: s.get("judge_preservation"), "min_judge_preservation"),
    ("judge: realism", lambda s: s.get("judge_realism"), "min_judge_realism"),
)
JUDGE_RULES = {"min_judge_instruction", "min_judge_preservation", "min_judge_realism"}
REASONING_CHARS = 400  # of the judge's answer shown beside a rejected pair
GAP_RULES = {"max_aesthetic_gap", "max_giqa_gap"}


@dataclass(frozen=True)
class Row:
    """A row's light columns and where its images are (shard path, row index in that shard)."""

    data: dict[str, Any]
    shard: Path
    index: int

    @property
    def scores(self) -> dict[str, Any]:
        return self.data.get("scores") or {}


def write_report(out_dir: Path, path: Path | None = None, gallery_per_task: int = 12, seed: int = 0,
                 takedown: Iterable[str] = frozenset(), per_rule: int = NEAR_THRESHOLD,
                 stats: Mapping[str, Any] | None = None) -> Path:
    """Write ``<out_dir>/report.html`` (or ``path``) for the build in ``out_dir``; returns its path.

    ``takedown`` lists row ids, origin record ids or URLs never to show (their rows still count).
    ``stats``: the build's ``compute_stats`` result where the caller has it (the flow), else computed."""
    out_dir = storage.location(out_dir)  # a local folder or a bucket URL; the page is one write (one PUT)
    path = storage.location(path) if path else out_dir / REPORT
    stats = stats if stats is not None else compute_stats(out_dir / PAIRS)
    blocked = Takedown.load([], takedown)
    kept = LightRows.read(out_dir / PAIRS)  # columnar: a paper build keeps 159k rows
    rejected = _light_rows(out_dir / REJECTED) if storage.exists(manifest_path(out_dir / REJECTED)) else []
    thresholds = _thresholds(out_dir, stats)
    tasks = sorted(kept.tasks() | {r.data["task"] for r in rejected} | set(thresholds))
    verdicts = judge_verdicts(out_dir / SCORES)  # empty unless a VLM judge scored the pairs

    body = [f"<h1>IEIW build report</h1><p class='muted'>{_e(storage.key(out_dir))}</p>",
            _banner(kept), _stats_section(stats, thresholds), _judge_note(verdicts),
            _decontam_section(out_dir, rejected), _audit_section(stats.get("audit")), "<h2>Score histograms</h2>",
            "<p class='muted'>Per task: kept pairs (blue) with rejected ones stacked on top (red); the dashed"
            " line is the resolved selection threshold.</p>"]
    body += [_histograms(task, kept, rejected, thresholds.get(task, {}), verdicts) for task in tasks]
    body.append("<h2>Kept pairs (random sample)</h2>")
    from ieiw.progress import track

    body += [_kept_gallery(task, kept, gallery_per_task, seed, blocked) for task in track(tasks, len(tasks), "report")]
    body.append("<h2>Rejected pairs nearest each threshold</h2><p class='muted'>Per task and rule: pairs rejected"
                " by selection whose value is beyond the threshold, nearest first, with the reason that rejected"
                " them (the first rule they failed): what the threshold is cutting right now.</p>")
    candidates = _candidate_shards(out_dir)
    for task in tasks:
        for rule, limit in thresholds.get(task, {}).items():
            if limit is not None and rule in RULES:
                body.append(_near_gallery(task, rule, float(limit), rejected, candidates, per_rule, blocked,
                                          verdicts))
    page = _PAGE.format(css=_CSS, body="\n".join(body))
    storage.write_bytes_atomic(path, page.encode())
    return path


# ---------------------------------------------------------------------------------------------- reading


def _light_rows(folder: Path) -> list[Row]:
    """Every row of a stage folder without its image columns, in shard order, as ``Row`` objects (the
    rejected side, a small share of a build; the kept side stays columnar, :class:`LightRows`)."""
    light = LightRows.read(folder)
    return light.rows(light.table.to_pylist())


def _without_builder_params(table: pa.Table) -> pa.Table:
    """The ``builder`` struct less its ``params`` JSON, which the page never shows: a third of a row's
    light data."""
    if "builder" not in table.column_names or table.num_rows == 0:
        return table
    builder = table["builder"].combine_chunks()
    if not pa.types.is_struct(builder.type) or builder.type.get_field_index("params") < 0:
        return table
    fields = [field for field in builder.type if field.name != "params"]
    slim = pa.StructArray.from_arrays([builder.field(f.name) for f in fields], fields=fields, mask=builder.is_null())
    return table.set_column(table.column_names.index("builder"), "builder", slim)


@dataclass(frozen=True)
class LightRows:
    """A stage folder's light columns as one Arrow table, with each row's shard and index in it.

    The kept side of a paper-size build is 100k+ rows: as Python dicts (``Row``) they were the report's
    peak memory, about 3 KB a row (docs/PERFORMANCE.md, "Memory flatness"). Here they stay columnar;
    rows become dicts a batch at a time while a pass reads them, and for good only when shown.
    """

    table: pa.Table  # LIGHT columns present (builder without params), then _shard (int32) and _index (int32)
    shards: tuple[Path, ...]

    BATCH = 4096

    @classmethod
    def read(cls, folder: Path) -> LightRows:
        entries = sorted(load_manifest(folder)["units"].values(), key=lambda e: e["shard"])
        shards = tuple(folder / entry["shard"] for entry in entries)

        def parts() -> Iterator[pa.Table]:
            for number, shard in enumerate(shards):
                handle = storage.parquet_file(shard)
                names = set(handle.schema_arrow.names)
                part = _without_builder_params(storage.read_columns(handle, [c for c in LIGHT if c in names], shard))
                yield (part.append_column("_shard", pa.array([number] * part.num_rows, pa.int32()))
                       .append_column("_index", pa.array(range(part.num_rows), pa.int32())))

        table = concat_compact(parts())  # a chunk per 64 shards, not per shard (ieiw/schemas/shards.py)
        if table is None:
            table = pa.table({"id": pa.array([], pa.string()), "task": pa.array([], pa.string()),
                              "_shard": pa.array([], pa.int32()), "_index": pa.array([], pa.int32())})
        return cls(table, shards)

    def __len__(self) -> int:
        return self.table.num_rows

    def tasks(self) -> set[str]:
        return {t for t in self.table["task"].unique().to_pylist() if t is not None}

    def of_task(self, task: str | None) -> pa.Table:
        return self.table if task is None else self.table.filter(pc.equal(self.table["task"], task))

    def dicts(self, task: str | None = None, columns: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Rows (of ``task``) as dicts, built one batch at a time: nothing outlives the pass."""
        table = self.of_task(task)
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        for batch in table.to_batches(max_chunksize=self.BATCH):
            yield from batch.to_pylist()

    def rows(self, records: Iterable[Mapping[str, Any]]) -> list[Row]:
        """``Row`` objects (shard path, index) for dicts this object yielded with ``_shard`` and ``_index``."""
        out = []
        for record in records:
            data = dict(record)
            shard, index = data.pop("_shard"), data.pop("_index")
            out.append(Row(data, self.shards[shard], index))
        return out


def _thresholds(out_dir: Path, stats: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Resolved thresholds per task: the kept folder's stats, completed from calibration.json."""
    resolved = {task: dict(rules) for task, rules in (stats.get("selection_thresholds") or {}).items()}
    calibration = out_dir / CALIBRATION
    if storage.exists(calibration):
        for task, rules in storage.read_json(calibration).get("thresholds", {}).items():
            resolved.setdefault(task, dict(rules))
    return dict(sorted(resolved.items()))


def _candidate_shards(out_dir: Path) -> dict[str, tuple[Path, int]]:
    """Row id -> (candidate shard, row index) holding its images: rejected rows keep none of their own."""
    folder = out_dir / CANDIDATES
    if not storage.exists(manifest_path(folder)):
        return {}
    where: dict[str, tuple[Path, int]] = {}
    for entry in load_manifest(folder)["units"].values():
        shard = folder / entry["shard"]
        for index, row_id in enumerate(storage.read_table(shard, columns=["id"])["id"].to_pylist()):
            where[row_id] = (shard, index)
    return where


def _read_images(shard: Path, indices: list[int]) -> dict[int, dict[str, Any]]:
    """The image columns of the rows at ``indices`` of one shard, reading only their row groups."""
    handle = storage.parquet_file(shard)
    columns = [c for c in IMAGES if c in handle.schema_arrow.names]
    starts, offset = [], 0
    for g in range(handle.metadata.num_row_groups):
        starts.append(offset)
        offset += handle.metadata.row_group(g).num_rows
    wanted: dict[int, list[int]] = {}
    for index in indices:
        group = max(g for g, start in enumerate(starts) if start <= index)
        wanted.setdefault(group, []).append(index)
    found: dict[int, dict[str, Any]] = {}
    for group, members in wanted.items():
        table = handle.read_row_group(group, columns=columns).take([i - starts[group] for i in members])
        found.update(zip(members, table.to_pylist(), strict=True))
    return found


def _images_for(rows: list[Row]) -> list[dict[str, Any]]:
    """Image cells of ``rows`` (in order), one read per shard."""
    by_shard: dict[Path, list[int]] = {}
    for row in rows:
        by_shard.setdefault(row.shard, []).append(row.index)
    cells = {shard: _read_images(shard, indices) for shard, indices in by_shard.items()}
    return [cells[row.shard][row.index] for row in rows]


# --------------------------------------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    return "off" if value is None else f"{value:.4g}"


def _thumbnail(cell: Mapping[str, Any] | None) -> str | None:
    """A ``data:`` URI of the image as JPEG, at most THUMB_SIDE px on the long side."""
    if not cell or not cell.get("bytes"):
        return None
    try:
        pixels = decode(cell["bytes"], Orientation.IGNORE).pixels
    except ImageDecodeError as exc:  # a bad cell costs its thumbnail, not the report
        log.warning("report: %s does not decode: %s", cell.get("path"), exc)
        return None
    thumb = encode(downscale(pixels, THUMB_SIDE), "jpeg", THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(thumb).decode()


def _banner(kept: LightRows) -> str:
    """The warning that stand-ins, not the paper's models, made or scored these rows."""
    names: Counter = Counter()
    rows = 0
    for data in kept.dicts(columns=("builder", "scores")):
        builder, scores = data.get("builder") or {}, data.get("scores") or {}
        rows += bool(builder.get("embedded") or scores.get("embedded"))
        if builder.get("embedded"):
            names[f"{builder.get('name')}: {builder.get('backend')}"] += 1
        if scores.get("embedded"):
            names[f"scores: {scores.get('backend')}"] += 1
    if not rows:
        return ""
    items = "".join(f"<li><code>{_e(name)}</code> ({count} rows)</li>" for name, count in sorted(names.items()))
    return (f"<div class='banner' id='embedded-warning' role='alert'><strong>Embedded stand-ins:</strong> {rows}"
            f" of {len(kept)} kept pairs were made or scored by embedded CPU backends, not the paper's models."
            f" Fine for a demo or a test; do not train on them for results.<ul>{items}</ul></div>")


def _count_table(title: str, counts: Mapping[str, int], bars: bool = False) -> str:
    """A name/count table; with ``bars``, a horizontal bar per row scaled to the largest count."""
    if not counts:
        return f"<div class='card'><h3>{_e(title)}</h3><p class='muted'>none</p></div>"
    top = max(counts.values()) or 1
    lines = []
    for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        bar = (f"<td class='barcell'><span class='bar' style='width:{100 * count / top:.1f}%'></span></td>"
               if bars else "")
        lines.append(f"<tr><td>{_e(name)}</td><td class='n'>{count}</td>{bar}</tr>")
    return f"<div class='card'><h3>{_e(title)}</h3><table>{''.join(lines)}</table></div>"


def _kind_card(stats: Mapping[str, Any]) -> str:
    """Crawled (web) rows per edit kind, kept and rejected: how many pairs are colour grades, how many object
    edits (``crawl.validation.kinds`` decides which kinds are kept)."""
    rows = kind_table(dict(stats))
    if not rows:
        return ""
    body = "".join(f"<tr><td>{_e(kind)}</td><td class='n'>{kept}</td><td class='n'>{rejected}</td></tr>"
                   for kind, kept, rejected in rows)
    return (f"<div class='card' id='edit-kinds'><h3>web rows per edit kind</h3><table><tr><th>edit kind</th>"
            f"<th>kept</th><th>rejected</th></tr>{body}</table></div>")


def _stats_section(stats: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, float | None]]) -> str:
    headline = "".join(
        f"<div class='kpi'><span>{stats[key]}</span>{label}</div>"
        for key, label in (("kept", "kept pairs"), ("records", "source records"), ("candidates", "candidates"),
                           ("rejected_total", "rejected"), ("failures_total", "failed records")))
    rules = sorted({rule for rules in thresholds.values() for rule in rules})
    head = "".join(f"<th>{_e(rule)}</th>" for rule in rules)
    body = "".join(f"<tr><td>{_e(task)}</td>" + "".join(f"<td class='n'>{_num(t.get(rule))}</td>" for rule in rules)
                   + "</tr>" for task, t in thresholds.items())
    limits = (f"<div class='card wide'><h3>Selection thresholds (resolved per task; off = rule not applied)</h3>"
              f"<table><tr><th>task</th>{head}</tr>{body}</table></div>") if thresholds else ""
    examples = "".join(f"<li><code>{_e(x)}</code></li>" for x in stats.get("failure_examples", [])[:8])
    details = f"<details><summary>failure examples</summary><ul>{examples}</ul></details>" if examples else ""
    return (
        f"<h2>Stats</h2><div class='kpis'>{headline}</div><div class='cards'>"
        + _count_table("kept per task", stats["by_task"]) + _count_table("kept per source", stats["by_source"])
        + _count_table("kept per split", stats.get("by_split") or {})
        + _kind_card(stats)
        + _count_table("rejected per reason", stats["rejected"], bars=True)
        + _count_table("skipped by policy per reason", stats.get("skipped") or {}, bars=True)
        + _count_table("failed records per reason", stats["failures"], bars=True)
        + _count_table("backends (kept rows)", stats.get("backends") or {})
        + _count_table("replace labels by where they came from", stats.get("label_sources") or {})
        + limits + f"</div>{details}"
    )


def histogram_svg(title: str, kept: list[float], rejected: list[float], threshold: float | None = None,
                  bins: int = HIST_BINS) -> str:
    """A stacked histogram (kept below, rejected on top) with min/max labels on both axes."""
    width, height, left, right, top, bottom = 262, 176, 34, 10, 38, 20
    values = np.asarray(kept + rejected, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    n_kept = np.histogram(np.asarray(kept, dtype=np.float64), edges)[0]
    n_rej = np.histogram(np.asarray(rejected, dtype=np.float64), edges)[0]
    peak = int((n_kept + n_rej).max()) or 1
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / bins
    parts = [f"<svg class='hist' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'"
             f" viewBox='0 0 {width} {height}' role='img' aria-label='{_e(title)}'><title>{_e(title)}</title>",
             f"<text x='{left}' y='14' class='t'>{_e(title)}</text>"]
    for i in range(bins):
        x = left + i * step
        h_kept = plot_h * n_kept[i] / peak
        h_rej = plot_h * n_rej[i] / peak
        base = top + plot_h
        tip = f"{edges[i]:.4g} to {edges[i + 1]:.4g}: {n_kept[i]} kept, {n_rej[i]} rejected"
        if n_kept[i]:
            parts.append(f"<rect x='{x + 0.5:.1f}' y='{base - h_kept:.1f}' width='{step - 1:.1f}' height='{h_kept:.1f}'"
                         f" class='k'><title>{tip}</title></rect>")
        if n_rej[i]:
            parts.append(f"<rect x='{x + 0.5:.1f}' y='{base - h_kept - h_rej:.1f}' width='{step - 1:.1f}'"
                         f" height='{h_rej:.1f}' class='r'><title>{tip}</title></rect>")
    axis_y = top + plot_h
    parts += [f"<line x1='{left}' y1='{axis_y}' x2='{width - right}' y2='{axis_y}' class='ax'/>",
              f"<line x1='{left}' y1='{top}' x2='{left}' y2='{axis_y}' class='ax'/>",
              f"<text x='{left - 4}' y='{top + 8}' class='l' text-anchor='end'>{peak}</text>",
              f"<text x='{left - 4}' y='{axis_y}' class='l' text-anchor='end'>0</text>",
              f"<text x='{left}' y='{axis_y + 14}' class='l'>{lo:.4g}</text>",
              f"<text x='{width - right}' y='{axis_y + 14}' class='l' text-anchor='end'>{hi:.4g}</text>",
              f"<text x='{left + plot_w / 2:.1f}' y='{axis_y + 14}' class='l t2' text-anchor='middle'>n={len(kept)}"
              f"{f' + {len(rejected)} rej.' if rejected else ''}</text>"]
    if threshold is not None:  # labelled above the plot, so it never hides the axis labels
        x = left + plot_w * (threshold - lo) / (hi - lo)
        anchor = "start" if x < left + plot_w / 4 else "end" if x > left + 3 * plot_w / 4 else "middle"
        parts += [f"<line x1='{x:.1f}' y1='{top - 4}' x2='{x:.1f}' y2='{axis_y}' class='th'/>",
                  f"<text x='{x:.1f}' y='{top - 9}' class='l th2' text-anchor='{anchor}'>threshold"
                  f" {threshold:.4g}</text>"]
    return "".join(parts) + "</svg>"


def _with_verdict(row_id: str, scores: Mapping[str, Any] | None, verdicts: Mapping[str, Any]) -> dict[str, Any]:
    """A row's scores with its judge's numbers merged in as selection names them (``judge_instruction``)."""
    merged = dict(scores or {})
    if verdicts:
        merged.update(judge_numbers(verdicts.get(row_id)))
    return merged


def _decontam_section(out_dir: Path, rejected: list[Row], limit: int = 100) -> str:
    """The pairs rejected as ``benchmark_overlap``, each with the benchmark image it is near (docs/decontamination.md);
    nothing when no benchmark-overlap scorer ran."""
    cells = overlap_cells(out_dir / SCORES)
    if not cells:
        return ""
    flagged = [r for r in rejected if r.data.get("reason") == BENCHMARK_OVERLAP]
    per_benchmark = Counter()
    rows = []
    for row in flagged:
        cell = cells.get(row.data["id"]) or {}
        per_benchmark[cell.get("similarity_benchmark")] += 1
        if len(rows) < limit:
            rows.append(f"<tr><td><code>{_e(row.data['id'][:12])}</code></td><td>{_e(row.data['task'])}</td>"
                        f"<td>{_e(cell.get('phash_benchmark'))}: {_e(cell.get('phash_image'))} "
                        f"({_e(cell.get('phash_side'))}, {_num(cell.get('phash_distance'))} bits)</td>"
                        f"<td>{_e(cell.get('similarity_benchmark'))}: "
                        f"{_e(cell.get('similarity_image'))} ({_e(cell.get('similarity_side'))}, "
                        f"cosine {_num(cell.get('similarity'))})</td></tr>")
    counts = ", ".join(f"{_e(name)}: {count}" for name, count in sorted(per_benchmark.items(), key=str))
    table = ("<table><tr><th>pair</th><th>task</th><th>nearest by pHash</th><th>nearest by embedding</th></tr>"
             + "".join(rows) + "</table>") if rows else ""
    return (f"<h2 id='decontamination'>Decontamination</h2><p>{len(cells)} pairs compared with the benchmark indexes; "
            f"{len(flagged)} rejected as <code>{BENCHMARK_OVERLAP}</code>" + (f" ({counts})" if counts else "")
            + ".</p>" + table)


def _audit_figure(fig: Mapping[str, Any] | None) -> str:
    if not fig:
        return "<td>-</td><td>0</td>"
    return f"<td>{fig['value']:.3f} [{fig['low']:.3f}, {fig['high']:.3f}]</td><td>{fig['labels']}</td>"


def _audit_section(audit: Mapping[str, Any] | None) -> str:
    """The "Audit" section: what people's labels say of the filters (docs/audit.md), label counts beside each."""
    if not audit:
        return ("<h2 id='audit'>Audit</h2><p class='muted'>No human audit of this build was reported "
                "(<code>ieiw audit sample | serve | report</code>, docs/audit.md).</p>")
    stale = " <strong>Stale: the selection changed after the sample was drawn.</strong>" if audit.get("stale") else ""
    out = [f"<h2 id='audit'>Audit</h2><p>{audit['labelled']} sampled pairs labelled by {len(audit['labellers'])} "
           f"labeller(s) ({audit['labels']} labels, {audit['disputed']} disputed); weighted by stratum, 95% Wilson "
           f"intervals.{stale}</p>",
           "<table><tr><th>task</th><th>precision of kept</th><th>labels</th><th>recall of bad pairs</th>"
           "<th>labels</th><th>rejected that are bad</th><th>labels</th></tr>"]
    for task, t in audit["tasks"].items():
        out.append(f"<tr><td>{_e(task)}</td>{_audit_figure(t['kept_precision'])}{_audit_figure(t['recall'])}"
                   f"{_audit_figure(t['rejected_bad_share'])}</tr>")
    out.append("</table><table><tr><th>task</th><th>rule</th><th>threshold</th><th>precision alone</th><th>labels</th>"
               f"<th>recall alone</th><th>labels</th><th>threshold for precision {audit['target_precision']}</th></tr>")
    for task, t in audit["tasks"].items():
        for rule, r in t["rules"].items():
            limit = r.get("threshold")
            suggested = r.get("suggested")
            hint = (f"{suggested['threshold']:.4g} ({suggested['value']:.3f}, {suggested['labels']} labels)"
                    if suggested else ("none reaches it" if "suggested" in r else ""))
            out.append(f"<tr><td>{_e(task)}</td><td>{_e(rule)}</td><td>{'' if limit is None else f'{limit:.4g}'}</td>"
                       f"{_audit_figure(r['precision'])}{_audit_figure(r['recall'])}<td>{_e(hint)}</td></tr>")
    return "".join(out) + "</table>"


def _judge_note(verdicts: Mapping[str, Any]) -> str:
    """Which VLM judge scored the pairs (or that none did)."""
    if not verdicts:
        return ("<p class='muted' id='judge'>No vision-language judge scored these pairs "
                "(docs/language-models.md).</p>")
    names = Counter(f"{cell.get('backend')} (rubric {cell.get('rubric')})" for cell in verdicts.values())
    listed = ", ".join(f"<code>{_e(name)}</code>: {count} pairs" for name, count in sorted(names.items()))
    return (f"<p id='judge'><strong>VLM judge:</strong> {listed}. Its scores (0-1: instruction followed, rest "
            "preserved, realism) are in the histograms; its reasoning is shown beside the pairs its rules rejected."
            "</p>")


def _histograms(task: str, kept: LightRows, rejected: list[Row], thresholds: Mapping[str, float | None],
                verdicts: Mapping[str, Any] | None = None) -> str:
    verdicts = verdicts or {}
    series = [(label, value, rule, thresholds.get(rule) if rule else None) for label, value, rule in SERIES]
    series = [item for item in series if not (item[2] in GAP_RULES and item[3] is None)]
    mine: list[list[float]] = [[] for _ in series]  # floats only: the kept rows' score dicts stream past
    for data in kept.dicts(task, columns=("id", "scores")):
        scores = _with_verdict(data.get("id"), data.get("scores"), verdicts)
        for values, (_, value, _, _) in zip(mine, series, strict=True):
            v = value(scores)
            if v is not None:
                values.append(float(v))
    theirs = [_with_verdict(r.data["id"], r.scores, verdicts) for r in rejected if r.data["task"] == task]
    charts = []
    for a, (label, value, _, limit) in zip(mine, series, strict=True):
        b = [float(v) for v in map(value, theirs) if v is not None]
        if a or b:
            charts.append(histogram_svg(label, a, b, limit))
    inner = "".join(charts) or "<p class='muted'>no scores</p>"
    return f"<h3>{_e(task)}</h3><div class='hists'>{inner}</div>"


def _figure(label: str, uri: str | None, alt: str) -> str:
    if uri is None:
        return f"<figure class='thumb none'><div>no {_e(label)}</div><figcaption>{_e(label)}</figcaption></figure>"
    return f"<figure class='thumb'><img src='{uri}' alt='{_e(alt)}'><figcaption>{_e(label)}</figcaption></figure>"


def _scores_text(scores: Mapping[str, Any]) -> str:
    parts = []
    for label, a, b in (("aesthetic", "source_aesthetic", "target_aesthetic"), ("GIQA", "source_giqa", "target_giqa")):
        if scores.get(a) is not None or scores.get(b) is not None:
            parts.append(f"<span class='nw'>{label} {_num(scores.get(a))} &rarr; {_num(scores.get(b))}</span>")
    for name in ("edit_consistency", "verification"):
        if scores.get(name) is not None:
            parts.append(f"<span class='nw'>{name.replace('_', ' ')} {_num(scores[name])}</span>")
    return " &middot; ".join(parts) or "unscored"


def _pair(row: Row, cells: Mapping[str, Any], note: str = "") -> str:
    """One pair: source | target | mask, the instruction, scores, backends (and a note)."""
    data, scores = row.data, row.scores
    instruction = data.get("instruction") or ""
    builder = data.get("builder") or {}
    made = f"{builder.get('name')}: {builder.get('backend')}{' (embedded)' if builder.get('embedded') else ''}"
    scored = f"{scores.get('backend')}{' (embedded)' if scores.get('embedded') else ''}" if scores else "unscored"
    images = "".join(_figure(label, _thumbnail(cells.get(column)), f"{label} of: {instruction}"[:200])
                     for label, column in (("source", "source_image"), ("target", "target_image"),
                                           ("mask", "mask")))
    return (f"<div class='pair' data-id='{_e(data['id'])}'><div class='imgs'>{images}</div>"
            f"<div class='text'><p class='instr'>&ldquo;{_e(instruction)}&rdquo;</p>"
            f"{f'<p class=note>{note}</p>' if note else ''}<p>{_scores_text(scores)}</p>"
            f"<p class='muted'>made by {_e(made)}<br>scored by {_e(scored)}<br>"
            f"{_e((data.get('origin') or {}).get('dataset'))} &middot; split {_e(data.get('split'))} &middot;"
            f"{f' edit kind {_e(kind)} &middot;' if (kind := data.get('edit_kind')) else ''}"
            f" <code>{_e(data['id'][:12])}</code></p></div></div>")


def _gallery(kind: str, task: str, heading: str, rows: list[Row], total: str, notes: list[str] | None = None,
             rule: str = "") -> str:
    """A gallery container; ``data-count`` and the visible count are what the browser test checks."""
    cells = _images_for(rows)
    notes = notes or [""] * len(rows)
    pairs = "".join(_pair(r, c, n) for r, c, n in zip(rows, cells, notes, strict=True))
    plural = "" if len(rows) == 1 else "s"
    return (f"<section class='gallery' data-kind='{kind}' data-task='{_e(task)}' data-rule='{_e(rule)}'"
            f" data-count='{len(rows)}'><h3>{heading}</h3><p class='count'>{len(rows)} pair{plural}"
            f" shown (of {total})</p><div class='pairs'>{pairs}</div></section>")


def _kept_gallery(task: str, kept: LightRows, count: int, seed: int, blocked: Takedown) -> str:
    """A seeded random sample of the task's kept pairs: the same build and seed show the same pairs."""
    table = kept.of_task(task)
    pool: list[tuple[str, int]] = []  # (id, position in table) of the rows the takedown list allows
    position = 0
    for batch in table.select(["id", *(["origin"] if blocked.entries else [])]).to_batches(kept.BATCH):
        if blocked.entries:
            pool += [(d["id"], position + i) for i, d in enumerate(batch.to_pylist()) if not blocked.blocks_row(d)]
        else:
            pool += zip(batch.column(0).to_pylist(), range(position, position + batch.num_rows), strict=True)
        position += batch.num_rows
    pool.sort()
    chosen = random.Random(f"{seed}/{task}").sample(pool, min(count, len(pool)))
    picked = pa.array([where for _, where in chosen], pa.int64())
    rows = kept.rows(table.take(picked).to_pylist())  # only the shown rows become dicts
    return _gallery("kept", task, _e(task), rows, f"{table.num_rows} kept")


def _near_gallery(task: str, rule: str, limit: float, rejected: list[Row], candidates: Mapping[str, tuple[Path, int]],
                  count: int, blocked: Takedown, verdicts: Mapping[str, Any] | None = None) -> str:
    """The rejected pairs of ``task`` just beyond ``rule``'s threshold, images from the candidate shards; for a
    judge rule, with the judge's reasoning."""
    verdicts = verdicts or {}
    is_min = RULES[rule][1]
    beyond = []
    for row in rejected:
        if row.data["task"] != task or row.data.get("rejected_by") != BY_SELECTION or blocked.blocks_row(row.data):
            continue
        value = measure(rule, _with_verdict(row.data["id"], row.scores, verdicts))
        if value is not None and ((value < limit) if is_min else (value > limit)) and row.data["id"] in candidates:
            beyond.append((abs(value - limit), row.data["id"], value, row))
    beyond.sort(key=lambda item: item[:2])
    shown = [(Row(row.data, *candidates[row_id]), value) for _, row_id, value, row in beyond[:count]]
    notes = [f"<strong>{_e(r.data.get('reason'))}</strong>: {_e(rule)} value {value:.4g}"
             f" {'&lt;' if is_min else '&gt;'} {limit:.4g}" + _reasoning(rule, verdicts.get(r.data["id"]))
             for r, value in shown]
    heading = f"{_e(task)} &middot; {_e(rule)}: kept when {'&ge;' if is_min else '&le;'} {limit:.4g}"
    return _gallery("near-threshold", task, heading, [r for r, _ in shown], f"{len(beyond)} rejected beyond it",
                    notes, rule)


def _reasoning(rule: str, cell: Mapping[str, Any] | None) -> str:
    """The judge's own answer (scores and reason), for a pair a judge rule rejected."""
    if rule not in JUDGE_RULES or not cell or not cell.get("answer"):
        return ""
    answer = " ".join(str(cell["answer"]).split())
    cut = answer if len(answer) <= REASONING_CHARS else answer[:REASONING_CHARS] + "..."
    return f"<br><span class='reasoning'>judge: {_e(cut)}</span>"


_CSS = """
:root{--fg:#1d232b;--muted:#5b6672;--line:#d8dee5;--bg:#f6f8fa;--kept:#4c78a8;--rej:#e45756}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
 background:#fff;margin:0 auto;padding:16px 24px 48px;max-width:1400px}
h1{margin:4px 0}h2{margin:28px 0 8px;border-bottom:2px solid var(--line);padding-bottom:4px}h3{margin:14px 0 6px}
.muted{color:var(--muted)}code{font-size:12px}
.banner{background:#fff4d6;border:2px solid #e0a400;border-left-width:8px;padding:10px 14px;margin:12px 0;
 border-radius:4px}.banner ul{margin:6px 0 0 18px;padding:0}
.kpis{display:flex;gap:12px;flex-wrap:wrap}.kpi{background:var(--bg);border:1px solid var(--line);
 border-radius:6px;padding:8px 14px;color:var(--muted)}
.kpi span{display:block;font-size:22px;font-weight:600;color:var(--fg)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:12px;align-items:flex-start}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 12px 10px;min-width:220px}.card.wide{flex-basis:100%}
.card h3{font-size:13px;margin:4px 0 6px;color:var(--muted);font-weight:600}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:middle}
th{font-weight:600;font-size:12px;color:var(--muted)}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.barcell{width:180px}.bar{display:block;height:12px;background:var(--rej);border-radius:2px;min-width:2px}
.hists{display:flex;flex-wrap:wrap;gap:10px}
svg.hist{background:var(--bg);border:1px solid var(--line);border-radius:4px}
svg .k{fill:var(--kept)}svg .r{fill:var(--rej)}svg .ax{stroke:#7a8591;stroke-width:1}
svg .th{stroke:#111;stroke-width:1.5;stroke-dasharray:4 3}svg text{font:11px system-ui,sans-serif;fill:var(--fg)}
svg .t{font-weight:600;font-size:12px}svg .t2{fill:var(--muted)}svg .th2{font-weight:600}
.gallery{margin-bottom:18px}.count{color:var(--muted);margin:0 0 6px}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:10px}
.pair{border:1px solid var(--line);border-radius:6px;padding:8px;font-size:13px}
.imgs{display:grid;grid-template-columns:repeat(3,1fr);gap:6px;align-items:start}
.thumb{margin:0;text-align:center;font-size:12px;color:var(--muted)}
.thumb img{display:block;width:100%;height:auto;border-radius:3px;background:#eee}
.thumb.none div{aspect-ratio:4/3;display:flex;align-items:center;justify-content:center;
 background:var(--bg);border:1px dashed var(--line);border-radius:3px}
.text{margin-top:6px}.text p{margin:2px 0}.instr{font-size:14px;font-weight:600}
.nw{white-space:nowrap}.note{background:#fdecea;border-radius:3px;padding:2px 6px;display:inline-block}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>IEIW build report</title><style>{css}</style></head>
<body>
{body}
</body></html>
"""
