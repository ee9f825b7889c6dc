"""`ieiw card`: a Hugging Face dataset card (``README.md``) for a build's out folder.

The YAML header points ``datasets`` at the corpus alone (``configs: [{config_name: default, data_files:
[{split: train, path: ieiw/*.parquet}]}]``), so ``load_dataset(OUT)`` reads the kept pairs with decoded
images and never the other stage folders (``candidates/``, ``features/``, ``scores/``, ``rejected/``,
whose schemas differ). The body counts the rows per task, source, split and (crawled rows) edit kind
(rows named by a takedown list left out, and said so), names the backends that made and scored them, notes
each source's licence, and, when any row comes from a CPU stand-in, says what the embedded mode does not
reproduce.

The card deliberately has no ``dataset_info`` block: ``datasets`` would check split sizes against it, and
the counts here leave withheld rows out while the shards still hold them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ieiw.audit.summary import summary as audit_summary
from ieiw.exports import Selection, iter_batches
from ieiw.filters.vlm_judge import judge_verdicts
from ieiw.schemas import storage
from ieiw.schemas.layout import CARD, PAIRS, REJECTED, SCORES, WORK_FOLDERS, pairs_folder
from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.takedown import Takedown

COLUMNS = ["id", "task", "origin", "exemplar", "scores", "builder", "split", "edit_kind"]
SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"),
]
SCORE_FAMILIES = ("aesthetic_backend", "giqa_backend", "consistency_backend", "verification_backend")
CITATION = """@article{geng2023instructdiffusion,
  title   = {InstructDiffusion: A Generalist Modeling Interface for Vision Tasks},
  author  = {Geng, Zigang and Yang, Binxin and Hang, Tiankai and Li, Chen and Gu, Shuyang and Zhang, Ting
             and Bao, Jianmin and Zhang, Zheng and Hu, Han and Chen, Dong and Guo, Baining},
  journal = {arXiv preprint arXiv:2309.03895},
  year    = {2023}
}"""
EMBEDDED_NOTE = ("**Embedded mode**: some or all rows were made or scored by CPU stand-ins, not the paper's models; "
                 "see [What the embedded mode does not reproduce](#what-the-embedded-mode-does-not-reproduce).")
SOURCE_NOTES = {
    "phrasecut": "Source images from Visual Genome (CC BY 4.0), regions from VGPhraseCut; the targets are "
                 "inpainted derivatives. Credit Visual Genome and PhraseCut when you use them.",
    "reddit": "Photos and edits posted by Reddit users to photoshop-request threads. Copyright stays with "
              "the poster and the editor (`origin.authors`, `origin.url`, `origin.edit_url`); no licence is "
              "granted here. Honour removal requests: `ieiw export --takedown FILE` leaves such rows out.",
}


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1T")


def _root_and_pairs(out_dir: Path) -> tuple[Path, Path]:
    pairs = pairs_folder(out_dir)
    return pairs.parent, pairs


def _data_files(pairs: Path, manifest: dict[str, Any]) -> list[str] | str:
    """The glob over the corpus, or the manifest's shards one by one when the folder holds Parquet files the
    manifest does not list (leftovers a glob would pick up)."""
    listed = sorted(entry["shard"] for entry in manifest["units"].values())
    on_disk = sorted(p.name for p in storage.glob(pairs, "*.parquet"))
    if set(on_disk) - set(listed):
        return [f"{pairs.name}/{name}" for name in listed]
    return f"{pairs.name}/*.parquet"


def collect(pairs: Path, takedown: set[str] | frozenset[str],
            verdicts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Counts over the corpus' light columns, rows on the takedown list left out; ``verdicts`` (row id -> VLM
    judge cell, :func:`ieiw.filters.vlm_judge.judge_verdicts`) counts the kept rows each judge scored."""
    verdicts = verdicts or {}
    judges: Counter = Counter()
    selection = Selection(Takedown.load([], takedown), None)
    by_task, by_source, by_split, by_kind, licenses = Counter(), Counter(), Counter(), Counter(), {}
    builders, families, score_backends = Counter(), {f: Counter() for f in SCORE_FAMILIES}, Counter()
    embedded_builder = embedded_scores = synthetic_phrasecut = 0
    label_sources: Counter = Counter()  # replace rows: where each side's label came from
    for rows, _ in iter_batches(pairs, selection, images=False, columns=COLUMNS):
        for row in rows:
            origin, builder, scores = row.get("origin") or {}, row.get("builder") or {}, row.get("scores") or {}
            dataset = origin.get("dataset") or "unknown"
            by_task[row["task"]] += 1
            by_source[dataset] += 1
            by_split[row.get("split") or "(none)"] += 1
            if row.get("edit_kind"):
                by_kind[row["edit_kind"]] += 1
            if (verdict := verdicts.get(row["id"])) is not None:
                judges[(verdict.get("backend"), verdict.get("rubric"))] += 1
            licenses.setdefault(dataset, Counter())[origin.get("license") or "(not recorded)"] += 1
            builders[(builder.get("name"), builder.get("backend"), bool(builder.get("embedded")))] += 1
            embedded_builder += bool(builder.get("embedded"))
            embedded_scores += bool(scores.get("embedded"))
            if scores:
                score_backends[(scores.get("backend"), bool(scores.get("embedded")))] += 1
                for family in SCORE_FAMILIES:
                    if scores.get(family):
                        families[family][scores[family]] += 1
            if exemplar := row.get("exemplar"):
                label_sources[("region (A)", exemplar.get("source_label_source") or "(not recorded)")] += 1
                label_sources[("exemplar (B)", exemplar.get("label_source") or "(not recorded)")] += 1
            host = urlsplit(origin.get("url") or "").hostname or ""
            synthetic_phrasecut += dataset == "phrasecut" and host.endswith("example.invalid")
    return {
        "rows": sum(by_task.values()), "withheld": selection.withheld,
        "by_task": by_task, "by_source": by_source, "by_split": by_split, "by_kind": by_kind, "licenses": licenses,
        "builders": builders, "families": families, "score_backends": score_backends,
        "embedded_builder": embedded_builder, "embedded_scores": embedded_scores,
        "synthetic_phrasecut": synthetic_phrasecut, "label_sources": label_sources, "judges": judges,
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _sorted(counts: Counter) -> list[tuple[Any, int]]:
    """Counter items in a stable order (keys are tuples that may hold None)."""
    return sorted(counts.items(), key=lambda kv: str(kv[0]))


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _counts(title: str, counts: Counter) -> list[str]:
    return _table((title, "rows"), sorted(counts.items())) + [""]


def _build_backends(manifest: dict[str, Any]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for build in (manifest.get("builds") or {}).values():
        for key, value in (build.get("backends") or {}).items():
            merged.setdefault(key, value)
    return merged


def _not_reproduced(info: dict[str, Any], build: dict[str, str]) -> list[str]:
    """One bullet per stand-in these rows actually went through."""
    items = []
    for (name, backend, embedded), count in _sorted(info["builders"]):
        if not embedded:
            continue
        if (backend or "").startswith("opencv"):
            items.append(f"**Inpainting** ({count} `{name}` rows): OpenCV `cv2.inpaint` (`{backend}`) instead of "
                         "LaMa. Good on smooth backgrounds, smears texture on real photos.")
        elif (backend or "").startswith("poisson"):
            items.append(f"**Repainting** ({count} `{name}` rows): the exemplar pasted with Poisson blending "
                         f"(`{backend}`) instead of Paint-by-Example; colours drift toward the surroundings.")
        else:
            items.append(f"**{name}** ({count} rows): `{backend}`, a CPU stand-in instead of the paper's model.")
    aesthetic = [b for b in info["families"]["aesthetic_backend"] if b.startswith("proxy")]
    if aesthetic:
        items.append(f"**Aesthetic scores** (`{', '.join(sorted(aesthetic))}`): a hand-made proxy (sharpness, "
                     "exposure, colourfulness, contrast on a 1-10 scale) instead of the LAION aesthetics "
                     "predictor; it knows nothing of content or composition, and its thresholds do not transfer "
                     "to LAION scores.")
    features = build.get("features", "")
    uses_embedded_features = "embedded" in features or any(
        "embedded-v1" in (backend or "") for backend, _ in info["score_backends"])
    if uses_embedded_features:
        items.append("**Image features**: the embedded 160-d colour / gradient / layout descriptor "
                     "(`embedded-v1`) instead of CLIP ViT-L/14; it tells near-duplicates apart from unrelated "
                     "images but knows nothing of objects, and has no text tower.")
        giqa = sorted(info["families"]["giqa_backend"])
        if giqa:
            items.append(f"**GIQA** (`{', '.join(giqa)}`): KNN-GIQA over those embedded features against the "
                         "build's reference set (in the demo, 200 synthetic scenes) instead of Inception or CLIP "
                         "features of a large set of real photos: it ranks how much an image looks like that "
                         "reference, not like real photos.")
    if info["synthetic_phrasecut"]:
        items.append(f"**Removal source** ({info['synthetic_phrasecut']} rows): the synthetic sample (coloured "
                     "shapes over smooth backgrounds, written by `ieiw samples` in the exact VGPhraseCut file "
                     "layout) instead of VGPhraseCut's Visual Genome photos. `origin.license` records what the "
                     "real source's licence would be.")
    if info["by_source"].get("reddit") and build.get("crawl.http") == "replay-only":
        items.append(f"**Web pairs** ({info['by_source']['reddit']} rows): replayed from a local cache with no "
                     "network (`crawl.http: replay-only`; the default is the bundled sample of 12 synthetic posts "
                     "in Reddit's dump shape) instead of the paper's ~23k crawled photoshop-request threads.")
    return items


NOT_ROW_FOLDERS = WORK_FOLDERS | {REJECTED, PAIRS}


def other_data(root: Path) -> dict[str, dict[str, int]]:
    """Folders of kept rows beside ``ieiw/`` (``segmentation/``, ``keypoints/``, ...): rows per task."""
    found: dict[str, dict[str, int]] = {}
    from ieiw.schemas.manifest import ManifestError

    for folder in (p.parent for p in storage.glob(root, "*/manifest.json")):
        if folder.name in NOT_ROW_FOLDERS:
            continue
        try:  # other manifests live here too (the exemplar index's): only stage folders of rows count
            manifest = load_manifest(folder)
        except ManifestError:
            continue
        if manifest.get("stage") != folder.name:
            continue
        tasks: Counter = Counter()
        for entry in manifest["units"].values():
            if entry.get("rows"):
                tasks.update(storage.read_table(folder / entry["shard"], columns=["task"])["task"].to_pylist())
        if tasks:
            found[folder.name] = dict(tasks)
    return found


def _figure(fig: dict[str, Any] | None) -> str:
    return "-" if not fig else f"{fig['value']:.2f} [{fig['low']:.2f}, {fig['high']:.2f}]"


def audit_lines(audit: dict[str, Any] | None) -> list[str]:
    """The card's "Audit" section: the filters' precision and recall as people labelled them (docs/audit.md),
    each figure with the number of labels behind it."""
    lines = ["## Audit", ""]
    if not audit:
        return lines + ["(none: no human audit of this build was reported; `ieiw audit`, docs/audit.md)", ""]
    lines += [f"{audit['labelled']} sampled pairs were labelled good or bad by {len(audit['labellers'])} labeller(s) "
              f"({audit['labels']} labels, {audit['disputed']} pairs disputed and left out); the sample is stratified "
              "by task, kept / rejection reason and nearness to each threshold, and the figures undo its weights. "
              "Intervals: 95 % Wilson, on the effective sample size." + (
                  " **Stale:** the selection changed after the sample was drawn." if audit.get("stale") else ""), ""]
    rows = [(task, _figure(t["kept_precision"]), (t["kept_precision"] or {}).get("labels", 0), _figure(t["recall"]),
             (t["recall"] or {}).get("labels", 0)) for task, t in audit["tasks"].items()]
    lines += _table(("task", "precision of kept", "labels", "recall of bad pairs", "labels"), rows)
    rules = [(task, f"`{rule}`", _figure(r["precision"]), (r["precision"] or {}).get("labels", 0),
              _figure(r["recall"]), (r["recall"] or {}).get("labels", 0))
             for task, t in audit["tasks"].items() for rule, r in t["rules"].items()]
    if rules:
        lines += ["", "Each rule as if alone (precision: of the pairs it rejects, the share that are bad; recall: of "
                  "the bad pairs, the share it rejects):", ""]
        lines += _table(("task", "rule", "precision", "labels", "recall", "labels"), rules)
    return lines + [""]


def render_card(root: Path, pairs: Path, takedown: set[str] | frozenset[str] = frozenset()) -> str:
    manifest = load_manifest(pairs)
    info = collect(pairs, takedown, judge_verdicts(root / SCORES))
    build = _build_backends(manifest)
    rows = info["rows"]
    header = {
        "pretty_name": "IEIW (Image Editing in the Wild), built with ieiw",
        "license": "other",
        "task_categories": ["image-to-image"],
        "size_categories": [size_category(rows)],
        "tags": ["image-editing", "instruction-based-image-editing", "instructdiffusion", "ieiw"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": _data_files(pairs, manifest)}]}],
    }
    embedded = info["embedded_builder"] or info["embedded_scores"]
    withheld = info["withheld"]
    stage_totals = Counter()
    for entry in manifest["units"].values():
        stage_totals.update((entry.get("stats") or {}).get("rejected") or {})
    body = [
        "# IEIW (Image Editing in the Wild), built with ieiw",
        "",
        "Instruction-based image editing pairs (source image, instruction, edited image) in the layout of "
        "**IEIW**, the editing corpus of *InstructDiffusion* (Geng et al., 2023, "
        "[arXiv:2309.03895](https://arxiv.org/abs/2309.03895)). The paper's IEIW was never released; this "
        "copy was built by the `ieiw` builder from the sources and backends listed below, and every "
        "row records where it came from (`origin`), what made it (`builder`) and what scored it (`scores`).",
        "",
        EMBEDDED_NOTE if embedded else "Every row was made and scored by the paper-fidelity backends listed below.",
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("{root.name}", split="train")  # the folder of this README (or its Hub id)',
        'ds[0]["source_image"], ds[0]["instruction"], ds[0]["target_image"]   # PIL, str, PIL',
        'held_out = ds.filter(lambda s: s == "val", input_columns="split")    # no image decoding',
        "```",
        "",
        f"The header's one config reads `{PAIRS}/*.parquet` only (the kept pairs); the build's other folders "
        "(`candidates/`, `features/`, `scores/`, `rejected/`) are not part of the dataset. There is one "
        "`train` split: the `split` column (`train` / `val`, assigned per source image so that every row of one "
        "image shares it) marks the held-out rows. `ieiw export` writes the same pairs for InstructDiffusion's "
        "loader, diffusers' `train_instruct_pix2pix.py` or WebDataset.",
        "",
        "## Contents",
        "",
        f"**{rows} pairs.**" + (
            f" {withheld} further row(s) named by the takedown list are withheld: they are left out of every "
            "count on this card. They are still stored in the shards of this folder (and `load_dataset` on it "
            "still returns them) until they are removed from the build; publish with "
            "`ieiw export --takedown FILE`, which leaves them out." if withheld else ""),
        "",
        *_counts("task", info["by_task"]),
        *_counts("source (`origin.dataset`)", info["by_source"]),
        *_counts("split", info["by_split"]),
    ]
    if info["by_kind"]:
        body += ["The crawled (`web`) pairs by `edit_kind` (what the edit is: `local`, `colour`, `geometric`, "
                 "`resolution`, `overlay`, `composite`; two kinds are joined by `+`). `crawl.validation.kinds` "
                 "decides which kinds are kept; filter on the column to train on some of them only:", ""]
        body += _counts("`edit_kind`", info["by_kind"])
    if stage_totals:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stage_totals.items()))
        body += [f"Selection and the builders rejected {sum(stage_totals.values())} candidate pairs ({reasons}); "
                 "they are in `rejected/`, not in the dataset.", ""]
    others = other_data(root)
    if others:
        body += ["Other data in this build, **not part of IEIW** and not in this dataset's config: the full "
                 "model's other tasks, each family in a folder of its own beside `ieiw/` (IEIW's quality and "
                 "dedup rules do not apply to them):", ""]
        body += _table(("folder", "task", "rows"), [(f"`{folder}/`", t, c) for folder, tasks in others.items()
                                                   for t, c in sorted(tasks.items())])
        body += [""]
    body += ["## How the rows were made", "", "Builders (`builder.name: builder.backend`):", ""]
    body += _table(("builder", "backend", "embedded", "rows"),
                   [(n, f"`{b}`", _yes(e), c) for (n, b, e), c in _sorted(info["builders"])])
    body += ["", "Scores (`scores.backend`, one backend per score family):", ""]
    score_rows = [(f"`{b}`", _yes(e), c) for (b, e), c in _sorted(info["score_backends"])]
    body += _table(("scores.backend", "embedded", "rows"), score_rows) if score_rows else ["(no scores)"]
    families = [(f, f"`{b}`", c) for f in SCORE_FAMILIES for b, c in sorted(info["families"][f].items())]
    if families:
        body += [""] + _table(("family", "backend", "rows"), families)
    body += ["", "Pair judge (a vision-language model scoring instruction following, preservation of the rest and "
             "realism, 0-1; kept beside the scores, not in the rows: docs/language-models.md):", ""]
    judges = [(f"`{b}`", f"`{r}`", c) for (b, r), c in _sorted(info["judges"])]
    body += _table(("judge", "rubric", "rows"), judges) if judges else ["(none: no judge scored these rows)"]
    if info["label_sources"]:
        body += ["", "Labels of `replace` rows (\"change the A to B\"), by where they came from: `open-images` = the "
                 "dataset's class, `clip-zero-shot` = CLIP against a vocabulary, `embedded-nearest` = the nearest "
                 "labelled exemplar in the embedded feature space (weak):", ""]
        body += _table(("label", "source", "rows"), [(w, f"`{s}`", c) for (w, s), c in _sorted(info["label_sources"])])
    if build:
        listed = ", ".join(f"{k}: `{v}`" for k, v in sorted(build.items()))
        body += ["", f"Build backends (from the manifest): {listed}."]
    body += [""]
    if embedded:
        items = _not_reproduced(info, build) or [
            "Rows marked `builder.embedded` or `scores.embedded` come from CPU stand-ins, not the paper's models."]
        body += [
            "## What the embedded mode does not reproduce",
            "",
            f"{info['embedded_builder']} row(s) were made and {info['embedded_scores']} scored by CPU stand-ins "
            "(`builder.embedded`, `scores.embedded`). They prove the pipeline, its data layout and its provenance, "
            "not the paper's image quality:",
            "",
            *[f"- {item}" for item in items],
            "",
            "Reproduced exactly: " + ("the PhraseCut reading and rasterisation rule, the remove/add flip, "
                                      if info["by_source"].get("phrasecut") else "")
            + "the selection rules, the data layout and the provenance columns. Filter on `builder.embedded` / "
            "`scores.embedded` to keep paper-fidelity rows only.",
            "",
        ]
    scoring = build.get("scoring") or ""
    if "benchmark-overlap" in scoring:  # decontamination (ieiw/filters/decontam.py, docs/decontamination.md)
        scorer = next(part.strip() for part in scoring.split(",") if "benchmark-overlap" in part)
        body += ["## Decontamination", "",
                 f"Every candidate's source and target were compared with edit benchmark images (`{scorer}`: pHash "
                 f"and embedding similarity); {stage_totals.get('benchmark_overlap', 0)} pairs were rejected as "
                 "`benchmark_overlap` (the scores shards' `benchmark_overlap` column names the benchmark and image).",
                 ""]
    body += audit_lines(audit_summary(root))
    body += ["## Licences", "",
             "The dataset as a whole has no single licence (`license: other`): each row keeps its source's terms, "
             "recorded in `origin.license`, with attribution in `origin.authors` and `origin.url`.", ""]
    lic_rows = []
    for dataset, values in sorted(info["licenses"].items()):
        recorded = "; ".join(f"{v} ({c})" for v, c in sorted(values.items()))
        lic_rows.append((dataset, info["by_source"][dataset], recorded,
                         SOURCE_NOTES.get(dataset, "See `origin.license` and the source's own terms.")))
    body += _table(("source", "rows", "`origin.license` (rows)", "note"), lic_rows) if lic_rows else ["(no rows)"]
    body += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)


def write_card(out_dir: Path, takedown: set[str] | frozenset[str] = frozenset()) -> Path:
    """Write ``<out_dir>/README.md`` (``out_dir``: a build's out folder, or its ``ieiw/``, whose parent gets it)."""
    root, pairs = _root_and_pairs(out_dir)
    path = root / CARD
    storage.write_bytes_atomic(path, render_card(root, pairs, takedown).encode())
    return path
