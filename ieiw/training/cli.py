"""Command-line entry points the ``ieiw`` command dispatches to (``ieiw train``, ``ieiw edit``)."""

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


if __name__ == "__main__":
    sys.exit(edit_main(sys.argv[1:]))
