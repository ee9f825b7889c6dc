"""``ieiw audit report OUT``: what the labels say of the filters, per task and per rule.

An item's verdict is the majority of its labellers' labels (good / bad); a tie is ``disputed`` and left out
of every figure (counted). Every figure is a weighted share over labelled items, each weighted by its
stratum's ``N / n`` (:mod:`ieiw.audit.sample`), which undoes the denser sampling near thresholds:

- ``kept_precision``: of the kept pairs, the share that are good;
- ``rejected_bad_share``: of the rejected pairs, the share that are bad (the rejections' precision);
- ``recall``: of the bad pairs, the share the filters rejected;
- per rule, as if it alone decided: ``precision`` (of the pairs it would reject, the share that are bad) and
  ``recall`` (of the bad pairs, the share it would reject);
- per threshold rule, ``suggested``: the least strict threshold at which the pairs that rule alone keeps reach
  ``target_precision`` (their weighted good share), among the labelled values, with at least
  ``min_labels`` labels behind it; null when no threshold reaches it.

Each figure comes as ``{value, low, high, labels, n_eff}``: a 95 % Wilson score interval on the weighted
share, computed with Kish's effective sample size ``n_eff = (sum w)^2 / sum w^2`` in place of n (equal
weights give n_eff = labels, the textbook interval), and ``labels``, the number of labelled items behind it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ieiw.audit.sample import read_sample
from ieiw.audit.server import read_labels
from ieiw.audit.summary import AUDIT, REPORT
from ieiw.filters.selection import RULES
from ieiw.schemas import storage
from ieiw.schemas.rows import canonical_json

Z = 1.959963984540054  # two-sided 95 %


def wilson(p: float, n: float, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of a share ``p`` observed over ``n`` (may be fractional: an effective n)."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def weighted_share(pairs: Iterable[tuple[float, bool]]) -> dict[str, Any] | None:
    """(weight, outcome) -> {value, low, high, labels, n_eff}, or None without any."""
    pairs = list(pairs)
    if not pairs:
        return None
    total = sum(w for w, _ in pairs)
    value = sum(w for w, y in pairs if y) / total
    n_eff = total * total / sum(w * w for w, _ in pairs)
    low, high = wilson(value, n_eff)
    return {"value": value, "low": low, "high": high, "labels": len(pairs), "n_eff": n_eff}


def verdicts(labels: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[dict[str, bool], int]:
    """Item id -> good (True) / bad (False) by majority of labellers, and how many were disputed (ties)."""
    votes: dict[str, Counter] = {}
    for per_item in labels.values():
        for item, cell in per_item.items():
            votes.setdefault(item, Counter())[cell["label"]] += 1
    out, disputed = {}, 0
    for item, count in votes.items():
        if count["good"] == count["bad"]:
            disputed += 1
        else:
            out[item] = count["good"] > count["bad"]
    return out, disputed


def suggest(items: list[dict[str, Any]], rule: str, target: float, min_labels: int) -> dict[str, Any] | None:
    """The least strict threshold of ``rule`` whose kept side reaches ``target`` precision (module docstring)."""
    is_min = RULES[rule][1]
    valued = [(it["values"][rule], it["weight"], it["good"]) for it in items if it["values"].get(rule) is not None]
    candidates = sorted({v for v, _, _ in valued}, reverse=not is_min)  # least strict first
    for limit in candidates:
        kept = [(w, good) for v, w, good in valued if (v >= limit if is_min else v <= limit)]
        if len(kept) < min_labels:
            break
        figure = weighted_share(kept)
        if figure and figure["value"] >= target:
            return {"threshold": limit, **figure}
    return None


def compute(sample: Mapping[str, Any], labels: Mapping[str, Any], target: float = 0.9,
            min_labels: int = 5) -> dict[str, Any]:
    """The report (module docstring) from a sample and its labels."""
    verdict, disputed = verdicts(labels)
    labelled = [{**it, "good": verdict[it["id"]]} for it in sample["items"] if it["id"] in verdict]
    tasks: dict[str, Any] = {}
    for task in sorted({it["task"] for it in sample["items"]}):
        mine = [it for it in labelled if it["task"] == task]
        bad = [it for it in mine if not it["good"]]
        rules: dict[str, Any] = {}
        in_force = sorted({rule for it in sample["items"] if it["task"] == task for rule in it["fires"]})
        for rule in in_force:
            entry = {"precision": weighted_share((it["weight"], not it["good"]) for it in mine if it["fires"].get(rule)),
                     "recall": weighted_share((it["weight"], bool(it["fires"].get(rule))) for it in bad)}
            if rule in RULES:
                entry["threshold"] = (sample["thresholds"].get(task) or {}).get(rule)
                entry["suggested"] = suggest(mine, rule, target, min_labels)
            rules[rule] = entry
        tasks[task] = {
            "labels": len(mine),
            "kept_precision": weighted_share((it["weight"], it["good"]) for it in mine if it["kept"]),
            "rejected_bad_share": weighted_share((it["weight"], not it["good"]) for it in mine if not it["kept"]),
            "recall": weighted_share((it["weight"], not it["kept"]) for it in bad),
            "rules": rules,
        }
    return {"calibration": sample.get("calibration"), "labellers": sorted(labels), "labels": sum(len(v) for v in labels.values()), "items": len(sample["items"]),
            "labelled": len(labelled), "disputed": disputed, "target_precision": target, "min_labels": min_labels,
            "tasks": tasks}


def write_report(out: Path, target: float = 0.9, min_labels: int = 5) -> tuple[Path, dict[str, Any]]:
    out = storage.location(out)
    report = compute(read_sample(out), read_labels(out), target, min_labels)
    path = out / AUDIT / REPORT
    storage.write_bytes_atomic(path, (canonical_json(report) + "\n").encode())
    return path, report


def render_text(report: Mapping[str, Any]) -> str:
    def fig(f: Mapping[str, Any] | None) -> str:
        return "-" if not f else f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}] (n={f['labels']})"

    lines = [(f"audit: {report['labelled']} of {report['items']} sampled pairs labelled by "
              f"{', '.join(report['labellers']) or 'nobody'} ({report['disputed']} disputed); 95% Wilson intervals")]
    for task, t in report["tasks"].items():
        lines.append(f"{task}: kept precision {fig(t['kept_precision'])}; recall of bad pairs {fig(t['recall'])}; "
                     f"rejected that are bad {fig(t['rejected_bad_share'])}")
        for rule, r in t["rules"].items():
            extra = ""
            if "suggested" in r:
                s = r["suggested"]
                extra = (f"; threshold {r['threshold']:.4g} -> for precision {report['target_precision']}: "
                         + (f"{s['threshold']:.4g} ({fig(s)})" if s else "none reaches it"))
            lines.append(f"  {rule}: alone precision {fig(r['precision'])}, recall {fig(r['recall'])}{extra}")
    return "\n".join(lines)
