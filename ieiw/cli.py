"""The `ieiw` command: build, select, giqa-index, benchmark-index, audit, samples, stats, report, verify, export, card (train, edit,
align-pick and eval come from ieiw.training). docs/commands.md lists every option (scripts/gen_reference.py).

Heavy imports (Prefect, torch) happen inside the subcommand that needs them, so `ieiw stats` and
`ieiw verify` answer in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def cmd_build(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ieiw")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral API's first start in a new PREFECT_HOME migrates its database; Prefect's 20 s
    # default was seen to run out on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from ieiw.schemas.config import (
        ConfigError,
        is_local_only,
        load_config,
        local_overrides,
        missing_models,
        parse_overrides,
    )

    try:  # validate before Prefect starts, so a typo or a missing checkpoint costs no server start-up
        overrides = parse_overrides(args.set)
        config = load_config(args.config, {**overrides, **({"out_dir": args.out} if args.out else {})})
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    missing = missing_models(config)
    if missing:
        print(f"{args.config}: cannot build:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    from ieiw.flows.build import build_ieiw
    from ieiw.runner import keep_parent_threads, make_task_runner

    try:
        task_runner = make_task_runner(config)  # runner: in the config (docs/scale.md)
    except RuntimeError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    local = {key: value for key, value in overrides.items() if is_local_only(key)}  # never a run parameter
    with keep_parent_threads(), local_overrides(local):
        state = build_ieiw.with_options(task_runner=task_runner)(
            config_path=str(args.config), out_dir=args.out, overrides={k: v for k, v in overrides.items() if k not in local},
            return_state=True)
    if state.is_failed():
        print(f"build failed: {state.message}", file=sys.stderr)
        return 1
    stats = state.result()
    print(
        f"kept {stats['rows']} pairs {stats['by_task']} in {stats['path']}; rejected {stats['rejected_total']},"
        f" failed records {stats['failures_total']}; details: ieiw stats {stats['path']}"
    )
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    """Selection alone, in this process (no Prefect): re-reads candidates + scores, rewrites the kept and
    rejected folders, then the build's stats, card and report (:func:`ieiw.stages.finish`, as a build does)."""
    from ieiw import stages
    from ieiw.schemas.config import ConfigError, load_config, parse_overrides
    from ieiw.schemas.layout import PAIRS, REJECTED

    try:
        overrides = parse_overrides(args.set)
        config = load_config(args.config, {**overrides, **({"out_dir": args.out} if args.out else {})})
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    build = stages.build_for(config)
    units = stages.finished_units(build)
    if not units:
        print(f"{build.out}: no unit has finished candidates and scores; run `ieiw build` first", file=sys.stderr)
        return 2
    for stage in (PAIRS, REJECTED):
        build.manifest(stage).prepare(build.config_hash, build.backends())
    calibration = stages.calibrate_build(build, units)
    outcomes = [stages.select_unit(build, unit) for unit in units]
    stats, report = stages.finish(build)
    redone = sum(not o.skipped for o in outcomes)
    print(f"selected {len(units)} units ({redone} rewritten, {len(units) - redone} unchanged;"
          f" {calibration.get('duplicates', 0)} duplicates): kept {stats['rows']} pairs {stats['by_task']},"
          f" rejected {stats['rejected_total']} {stats['rejected']}; report {report}")
    return 0


def features_option(text: str) -> object | None:
    """A ``--features '{backend: ...}'`` option as its validated section (``.features.create()``); None, with
    the problem printed, when it is not one."""
    from pydantic import BaseModel

    from ieiw.schemas.config import ConfigError, backend_field, validate_model

    class Features(BaseModel):
        features: backend_field("features")  # type: ignore[valid-type]

    try:
        return validate_model(Features, {"features": parse_mapping(text)}, "--features")
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_giqa_index(args: argparse.Namespace) -> int:
    """Build a KNN-GIQA reference folder from an image folder or from Parquet image shards."""

    from ieiw.filters.giqa import build_reference_from_images
    from ieiw.filters.reference_images import iter_folder_images, iter_shard_images

    spec = features_option(args.features)
    if spec is None:
        return 2
    source = Path(args.source)
    if not source.exists():
        print(f"{source}: not found (give an image folder or a folder of Parquet shards)", file=sys.stderr)
        return 2
    images = iter_shard_images(source, args.column) if any(source.glob("*.parquet")) else iter_folder_images(source)
    meta = build_reference_from_images(Path(args.out), images, spec.features.create(), args.chunk, args.pca)
    print(f"{args.out}: GIQA reference of {meta.count} images ({meta.extractor}, {meta.kind}, dim {meta.dim})")
    return 0


def cmd_benchmark_index(args: argparse.Namespace) -> int:
    """Index an edit benchmark's images (pHash + embeddings) for the benchmark-overlap scorer; a rerun over
    unchanged inputs does nothing (docs/decontamination.md)."""

    from ieiw.filters.decontam import BenchmarkIndexError, build_benchmark_index

    spec = features_option(args.features)
    if spec is None:
        return 2
    source = Path(args.source)
    if not source.exists():
        print(f"{source}: not found (give an image folder, Parquet shards or a Hugging Face dataset folder)",
              file=sys.stderr)
        return 2
    try:
        meta, built = build_benchmark_index(Path(args.out), args.name or source.name, source, spec.features,
                                            tuple(args.column), args.chunk)
    except BenchmarkIndexError as exc:
        print(exc, file=sys.stderr)
        return 2
    state = "indexed" if built else "unchanged, kept"
    print(f"{args.out}: benchmark {meta.name}: {meta.count} images {state} ({meta.extractor}, fingerprint {meta.fingerprint})")
    return 0


def parse_mapping(text: str) -> dict:
    import yaml

    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise ValueError(f"--features {text!r}: give a mapping such as '{{backend: embedded}}'")
    return value


def cmd_samples(args: argparse.Namespace) -> int:
    from ieiw.samples.phrasecut import make_phrasecut_sample

    root = make_phrasecut_sample(Path(args.dir), args.images, args.seed, args.width, args.height)
    print(f"wrote {args.images} synthetic scenes in VGPhraseCut layout to {root}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ieiw.schemas.manifest import ManifestError
    from ieiw.schemas.storage import StorageError
    from ieiw.stats import compute_stats, render_text

    try:
        stats = compute_stats(args.path)  # a folder or a URL (s3://bucket/out/ieiw)
    except (ManifestError, StorageError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1) if args.json else render_text(stats))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The build's self-contained HTML report (stats, histograms, galleries) from its out folder."""
    from ieiw.schemas import storage
    from ieiw.schemas.layout import NotABuildError, build_root

    try:  # a folder or a URL, the out folder or its ieiw/: the report needs ieiw/'s siblings
        out = build_root(args.path)
    except NotABuildError as exc:
        print(exc, file=sys.stderr)
        return 2
    from ieiw.report import write_report

    path = write_report(out, args.out or None, gallery_per_task=args.per_task)
    print(f"wrote {path} ({storage.size(path) / 1024:.0f} KB)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ieiw.schemas import storage
    from ieiw.schemas.manifest import ManifestError, manifest_path, verify_folder

    try:
        problems = verify_folder(args.path)  # a folder or a URL (s3://bucket/out/ieiw)
    except (ManifestError, storage.StorageError) as exc:
        print(exc, file=sys.stderr)
        return 2
    errors = [p for p in problems if not p.startswith("UNLISTED")]
    for problem in problems:
        print(problem, file=sys.stderr)
    if errors:
        print(f"{len(errors)} shard(s) failed verification in {args.path}", file=sys.stderr)
        return 1
    print(f"ok: every shard listed in {manifest_path(args.path)} matches its sha256")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The kept pairs in another trainer's layout, rows on the takedown lists left out."""
    from ieiw.exports import ExportError, export, read_takedown_files
    from ieiw.schemas.layout import NotABuildError
    from ieiw.schemas.manifest import ManifestError

    try:
        takedown = read_takedown_files(args.takedown)
        result = export(args.path, Path(args.out), args.format, takedown, args.split)  # from a folder or a URL
    except (ExportError, NotABuildError, ManifestError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    """Write the Hugging Face dataset card (README.md) next to the build's ieiw/ folder."""
    from ieiw.card import write_card
    from ieiw.exports import ExportError, read_takedown_files
    from ieiw.schemas.layout import NotABuildError
    from ieiw.schemas.manifest import ManifestError

    try:
        path = write_card(args.path, read_takedown_files(args.takedown))
    except (ExportError, NotABuildError, ManifestError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``ieiw audit sample|serve|report``: label a stratified sample of a build, then measure the filters
    (docs/audit.md)."""
    from ieiw.audit.sample import AuditError, Settings, write_sample
    from ieiw.schemas.layout import NotABuildError, build_root
    from ieiw.schemas.manifest import ManifestError

    try:
        out = build_root(args.path)
        if args.action == "sample":
            settings = Settings(args.per_stratum, args.near_per_stratum, args.near_share, args.seed)
            path, sample = write_sample(out, settings, args.force)
            strata = sum(len(s) for s in sample["strata"].values())
            print(f"wrote {path}: {len(sample['items'])} pairs from {strata} strata; label them with "
                  f"`ieiw audit serve {args.path} --labeller NAME`")
            return 0
        if args.action == "report":
            from ieiw.audit.metrics import render_text, write_report
            from ieiw.card import write_card
            from ieiw.report import write_report as write_html
            from ieiw.schemas.layout import PAIRS, STATS
            from ieiw.stats import compute_stats, write_stats

            path, report = write_report(out, args.target_precision, args.min_labels)
            stats = compute_stats(out / PAIRS)  # the build's stats.json, card and HTML report show the audit
            write_stats(stats, out / STATS)
            write_card(out)
            page = write_html(out, stats=stats)
            print(json.dumps(report, indent=1) if args.json else
                  render_text(report) + f"\nwrote {path}; updated {out / STATS}, the card and {page}")
            return 0
        from ieiw.audit.server import LABELLER, make_server

        if not args.labeller or not LABELLER.match(args.labeller):
            print("--labeller NAME is needed to serve (1-64 letters, digits or _.@-)", file=sys.stderr)
            return 2
        server = make_server(out, args.host, args.port)
    except (AuditError, NotABuildError, ManifestError, OSError) as exc:
        print(f"ieiw audit: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    from urllib.parse import quote

    print(f"audit: open http://{host}:{port}/?token={server.token}&labeller={quote(args.labeller)}  (Ctrl-C to stop; "
          "every mark is saved at once)", file=sys.stderr, flush=True)
    from ieiw.localserver import serve_until_stopped

    serve_until_stopped(server)
    return 0


def cmd_instructions(args: argparse.Namespace) -> int:
    """``ieiw instructions expand``: paraphrase seed templates with a chat model (docs/language-models.md)."""
    from pydantic import ValidationError

    from ieiw.backends.lm.base import LanguageModelSettings
    from ieiw.backends.lm.connect import connect
    from ieiw.backends.lm.http import EndpointError
    from ieiw.builders.expand import ExpandSettings, expand, load_seeds

    try:
        seeds, rules, source = load_seeds(args.family, args.seeds)
        settings = ExpandSettings(n=args.n, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                                  max_new_tokens=args.max_new_tokens, min_words=args.min_words,
                                  max_words=args.max_words, language=args.language, self_check=not args.no_self_check,
                                  kinds=tuple(args.kinds) if args.kinds else None)
        model_settings = LanguageModelSettings(model=args.model, revision=args.revision, endpoint=args.endpoint,
                                               api_key_env=args.api_key_env, device=args.device, dtype=args.dtype)
    except (ValueError, ValidationError) as exc:
        print(exc, file=sys.stderr)
        return 2
    problems = model_settings.problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    model = connect(model_settings)

    def progress(result) -> None:
        print(f"{result.kind}[{result.index}]: {len(result.accepted)} accepted, {len(result.rejected)} rejected",
              flush=True)

    try:
        outcome = expand(model, seeds, rules, args.out, settings, source, restart=args.restart, progress=progress)
    except (ValueError, EndpointError) as exc:
        print(exc, file=sys.stderr)
        return 2
    accepted = sum(c["accepted"] for c in outcome.counts.values())
    print(f"wrote {outcome.path}: {accepted} paraphrases accepted ({outcome.resumed} seeds resumed from the journal, "
          f"{outcome.expanded} expanded now)")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ieiw", description="Build IEIW instruction-editing pairs and train on them.")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="run the build-ieiw flow locally (no Prefect server needed)")
    p.add_argument("config", type=Path, help="build config YAML, e.g. configs/demo.yaml")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set selection.min_target_aesthetic=5")
    p.set_defaults(run=cmd_build)

    p = sub.add_parser("select", help="re-run selection alone (thresholds, dedup) on a finished build")
    p.add_argument("--config", required=True, type=Path, help="the build config (e.g. configs/demo.yaml)")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set selection.min_target_aesthetic=6")
    p.set_defaults(run=cmd_select)

    p = sub.add_parser("giqa-index", help="build a KNN-GIQA reference index (resumable) from images or shards")
    p.add_argument("source", help="an image folder (searched recursively) or a folder of Parquet shards")
    p.add_argument("--out", required=True, help="the reference folder to write (resumes if it exists)")
    p.add_argument("--features", default="{backend: embedded}",
                   help="the feature extractor, as in scoring.features, e.g. '{backend: clip, model: DIR}'")
    p.add_argument("--column", default="target_image", help="image column of Parquet shards")
    p.add_argument("--chunk", type=int, default=512, help="images per saved chunk")
    p.add_argument("--pca", type=float, default=None, help="keep this share of variance with PCA (GIQA: 0.95)")
    p.set_defaults(run=cmd_giqa_index)

    p = sub.add_parser("benchmark-index",
                       help="index an edit benchmark's images for decontamination (the benchmark-overlap scorer)")
    p.add_argument("source", help="an image folder, a folder of Parquet shards, or a Hugging Face dataset folder on disk")
    p.add_argument("--out", required=True, help="the index folder to write (left as is when its inputs are unchanged)")
    p.add_argument("--name", help="the benchmark's name in rejections (default: the source folder's name)")
    p.add_argument("--features", default="{backend: embedded}",
                   help="the build's feature extractor, as in scoring.features, e.g. '{backend: clip, model: DIR}'")
    p.add_argument("--column", action="append", default=[],
                   help="image column of the shards (repeatable; default: every image column)")
    p.add_argument("--chunk", type=int, default=256, help="images embedded per batch")
    p.set_defaults(run=cmd_benchmark_index)

    p = sub.add_parser("samples", help="write the synthetic VGPhraseCut-layout sample")
    p.add_argument("dir", type=Path,
                   help="the folder to write, in VGPhraseCut_v0 layout (images/, refer_*.json, backgrounds/)")
    p.add_argument("--images", type=int, default=120, help="scenes to draw")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    p.add_argument("--width", type=int, default=320, help="scene width in px")
    p.add_argument("--height", type=int, default=240, help="scene height in px")
    p.set_defaults(run=cmd_samples)

    p = sub.add_parser("stats", help="rows, reasons, quantiles and backends of a stage folder (e.g. out/ieiw)")
    p.add_argument("path", help="a stage folder with manifest.json (e.g. out/ieiw), or its URL (s3://...)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser("report", help="write a self-contained HTML report of a build (stats, histograms, galleries)")
    p.add_argument("path", help="the build's out folder (e.g. out; out/ieiw is accepted too)")
    p.add_argument("--out", help="the HTML file to write (default: PATH/report.html)")
    p.add_argument("--per-task", type=int, default=12, metavar="N", help="kept pairs shown per task")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("verify", help="re-hash every shard against the manifest; non-zero exit on any mismatch")
    p.add_argument("path", help="a stage folder with manifest.json (e.g. out/ieiw), or its URL (s3://...)")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("export", help="write the kept pairs for InstructDiffusion, diffusers or WebDataset")
    p.add_argument("path", help="the build's out folder (or its ieiw/ folder)")
    p.add_argument("--format", required=True, choices=["instructdiffusion", "hf-instructpix2pix", "webdataset"],
                   help="the layout to write (docs/commands.md, 'Exports')")
    p.add_argument("--out", required=True, help="the export folder (new, empty, or an earlier export: replaced whole)")
    p.add_argument("--takedown", action="append", default=[], metavar="FILE",
                   help="leave out rows whose id, record id, URL or edit URL is in FILE (one a line, # comments)")
    p.add_argument("--split", choices=["train", "val", "all"],
                   help="export one split only, or all (default: train for instructdiffusion, all for the others)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("card", help="write the Hugging Face dataset card (README.md) of a build")
    p.add_argument("path", help="the build's out folder (or its ieiw/ folder)")
    p.add_argument("--takedown", action="append", default=[], metavar="FILE",
                   help="leave rows named in FILE out of the card's counts (one id or URL a line, # comments)")
    p.set_defaults(run=cmd_card)

    p = sub.add_parser("audit", help="label a stratified sample of a build; measure each rule's precision and recall")
    p.add_argument("action", choices=["sample", "serve", "report"],
                   help="sample: draw OUT/audit/sample.json; serve: the labelling page; report: the figures (docs/audit.md)")
    p.add_argument("path", help="the build's out folder (or its ieiw/ folder)")
    p.add_argument("--per-stratum", type=int, default=20, help="sample: pairs drawn per stratum (task x kept/reason)")
    p.add_argument("--near-per-stratum", type=int, default=40, help="sample: pairs drawn per near-threshold stratum")
    p.add_argument("--near-share", type=float, default=0.05,
                   help="sample: 'near a threshold' = within this share of the task's values of it, by rank")
    p.add_argument("--seed", type=int, default=0, help="sample: the same seed draws the same sample")
    p.add_argument("--force", action="store_true", help="sample: replace an existing sample (labels are kept by pair id)")
    p.add_argument("--labeller", help="serve: your name; labels are kept per labeller")
    p.add_argument("--host", default="127.0.0.1", help="serve: address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8766, help="serve: 0 picks a free port")
    p.add_argument("--target-precision", type=float, default=0.9,
                   help="report: suggest per rule the threshold whose kept pairs reach this precision")
    p.add_argument("--min-labels", type=int, default=5, help="report: labels a suggested threshold needs behind it")
    p.add_argument("--json", action="store_true", help="report: machine-readable output")
    p.set_defaults(run=cmd_audit)

    p = sub.add_parser("instructions", help="expand seed instruction templates with a chat model (docs/language-models.md)")
    p.add_argument("action", choices=["expand"], help="expand: write N validated paraphrases per seed template")
    p.add_argument("--out", required=True, type=Path, help="the paraphrase file to write (resumes from OUT.journal.jsonl)")
    p.add_argument("--family", default="instructions",
                   help="which template file: instructions (remove/add/replace), segmentation, keypoints, deblur, "
                        "denoise, dewatermark")
    p.add_argument("--seeds", type=Path, help="your own seed file of that family (default: the shipped one)")
    p.add_argument("--kinds", nargs="+", help="expand only these kinds (e.g. remove add); the others are copied")
    p.add_argument("--model", required=True,
                   help="a local chat model folder or cached hub id; with --endpoint, the served model's name")
    p.add_argument("--revision", help="hub revision of a cached hub id")
    p.add_argument("--endpoint", help="an OpenAI-compatible server's base URL (vLLM, TGI, llama.cpp), e.g. http://host:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's key")
    p.add_argument("--device", default="auto", help="local model: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="local model: auto (bfloat16 on CUDA), float16, float32")
    p.add_argument("--n", type=int, default=8, help="paraphrases asked for per seed")
    p.add_argument("--seed", type=int, default=0, help="the same seed, model and settings write the same file")
    p.add_argument("--temperature", type=float, default=0.9, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling share")
    p.add_argument("--max-new-tokens", type=int, default=64, help="length cap of one paraphrase, in tokens")
    p.add_argument("--min-words", type=int, default=2, help="shorter paraphrases are rejected (too_short)")
    p.add_argument("--max-words", type=int, default=40, help="longer paraphrases are rejected (too_long)")
    p.add_argument("--language", default="en", help="en (a script heuristic) or any")
    p.add_argument("--no-self-check", action="store_true", help="skip the model's yes/no same-edit check")
    p.add_argument("--restart", action="store_true", help="discard the journal of an earlier run")
    p.set_defaults(run=cmd_instructions)

    # Listed for --help only: main() hands these to ieiw.training.cli before parsing.
    sub.add_parser("train", help="train InstructDiffusion on the shards (docs/training.md)")
    sub.add_parser("edit", help="edit an image with a trained pipeline (docs/training.md)")
    sub.add_parser("align-pick", help="pick 0-2 of N edits per benchmark prompt on a local page -> align shards (docs/training.md)")
    sub.add_parser("eval", help="edit the held-out split with a pipeline, score with CLIP, write a grid (docs/training.md)")
    return top


DELEGATED = {"train": "train_main", "edit": "edit_main", "align-pick": "align_pick_main", "eval": "eval_main"}  # own argparse in ieiw.training.cli
# Where each delegated command builds its own parser (for command_parsers: docs/commands.md is made from them).
DELEGATED_PARSERS = {"train": "ieiw.training.train:build_parser", "edit": "ieiw.training.cli:build_edit_parser",
                     "align-pick": "ieiw.training.align_pick:build_parser", "eval": "ieiw.training.cli:build_eval_parser"}


def command_parsers() -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """Every subcommand in `ieiw --help` order: name -> (its one-line help, its own parser). A delegated
    command's real parser is imported (torch, for train). scripts/gen_reference.py documents these."""
    import importlib

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {action.dest: action.help or "" for action in sub._choices_actions}
    out = {}
    for name, own in sub.choices.items():
        if name in DELEGATED_PARSERS:
            module, _, function = DELEGATED_PARSERS[name].partition(":")
            own = getattr(importlib.import_module(module), function)()
        out[name] = (helps.get(name, ""), own)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:  # pass everything on, --help included
        import importlib

        return importlib.import_module("ieiw.training.cli").__dict__[DELEGATED[argv[0]]](argv[1:])
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `ieiw stats out/ieiw | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
