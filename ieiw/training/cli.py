"""Command-line entry points the ``ieiw`` command dispatches to (``ieiw train``, ``ieiw edit``, ``ieiw eval``)."""

from __future__ import annotations

import argparse
import sys


def train_main(argv: list[str]) -> int:
    """``ieiw train --config configs/train.tiny.yaml [--resume latest] [--set key=value ...]``."""
    from ieiw.training.train import main

    return main(argv)


def build_edit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ieiw edit", description="Edit an image with an exported InstructDiffusion pipeline.")
    parser.add_argument("model", help="exported pipeline folder (e.g. out/train/sd15/pipeline)")
    parser.add_argument("--image", required=True, help="input image file")
    parser.add_argument("--instruction", required=True, help='e.g. "remove the red car"')
    parser.add_argument("--out", required=True, help="output image file")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (official: 100 Euler ancestral)")
    parser.add_argument("--text-guidance", type=float, default=5.0, help="text guidance scale (official default 5.0)")
    parser.add_argument("--image-guidance", type=float, default=1.25, help="image guidance scale (official default 1.25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=512, help="longer side before rounding to multiples of 64")
    parser.add_argument("--sampler", choices=["official", "diffusers"], default="official",
                        help="official three-pass formula, or diffusers' InstructPix2Pix pipeline (its formula)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    return parser


def edit_main(argv: list[str]) -> int:
    """``ieiw edit MODEL --image in.jpg --instruction "..." --out out.png``."""
    args = build_edit_parser().parse_args(argv)
    from ieiw.training.edit import edit_file

    try:
        out = edit_file(
            args.model, args.image, args.instruction, args.out, args.steps, args.text_guidance, args.image_guidance,
            args.seed, args.resolution, args.sampler, args.device,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"ieiw edit: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def build_eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ieiw eval",
        description="Edit the held-out split (rows whose split is val) with an exported pipeline and score the edits"
                    " with CLIP: image similarity, directional similarity, CLIP-I, CLIP-T (docs/training.md, Evaluation).",
    )
    parser.add_argument("model", help="exported pipeline folder (e.g. out/train/sd15/pipeline)")
    parser.add_argument("--data", required=True, help="stage folder with manifest.json, or several comma-separated")
    parser.add_argument("--clip", default="openai/clip-vit-large-patch14",
                        help="CLIP model: a local folder or a hub id already in the local cache (never downloaded)")
    parser.add_argument("--out", default=None, help="results folder (default: MODEL/../eval)")
    parser.add_argument("--split", default="val", help="the split column's value to evaluate (default val)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many rows (in manifest order)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (official: 100 Euler ancestral)")
    parser.add_argument("--text-guidance", type=float, default=5.0)
    parser.add_argument("--image-guidance", type=float, default=1.25)
    parser.add_argument("--seed", type=int, default=0, help="row i is edited with seed + i")
    parser.add_argument("--resolution", type=int, default=512, help="longer side before rounding to multiples of 64")
    parser.add_argument("--sampler", choices=["official", "diffusers"], default="official")
    parser.add_argument("--cell", type=int, default=256, help="grid cell size in pixels")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    return parser


def eval_main(argv: list[str]) -> int:
    """``ieiw eval MODEL --data DIR [--clip CLIP] [--out OUT]``: results.json, rows.csv, grid.png."""
    from pathlib import Path

    args = build_eval_parser().parse_args(argv)
    from ieiw.backends.models import ModelNotFoundError
    from ieiw.training.evaluate import evaluate

    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "eval"
    folders = [f for f in args.data.split(",") if f]
    try:
        result = evaluate(
            args.model, folders, args.clip, out, split=args.split, limit=args.limit, steps=args.steps,
            text_guidance=args.text_guidance, image_guidance=args.image_guidance, seed=args.seed,
            resolution=args.resolution, sampler=args.sampler, device=args.device, cell=args.cell,
        )
    except (FileNotFoundError, ModelNotFoundError, ValueError) as exc:
        print(f"ieiw eval: {exc}", file=sys.stderr)
        return 2
    means = ", ".join(f"{k} {v:.4f}" for k, v in result.means.items())
    print(f"ieiw eval: {result.n} {args.split} rows: {means}; {out}/results.json, rows.csv, grid.png")
    return 0


def align_pick_main(argv: list[str]) -> int:
    """``ieiw align-pick BENCH.jsonl --work DIR (--pipeline MODEL | --candidates-from DIR) [--write-shards]``."""
    from ieiw.training.align_pick import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(edit_main(sys.argv[1:]))
