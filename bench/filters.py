"""Ground-truth benchmark of the filters: plant known failures at known rates, run the real filter code, and
measure each rule's precision and recall against the truth.

The synthetic PhraseCut-layout sample keeps each scene's clean background, so a removal pair's truth is
known. Every referring record gives one pair: the source, the removal builder's own mask (its region policy,
a 15 px dilation), and a target made one of these ways, chosen at random (seeded) at the given rates:

- ``clean``: the embedded inpainter's fill (``OpenCVInpainter``, Telea, radius 5), as a build makes it;
- ``object_left``: the inpainting did nothing: the target is the source (re-encoded);
- ``artefacts``: the clean target saved as JPEG at quality 4 (blocks, banding, lost colour);
- ``changed_too_much``: the clean target blurred all over (Gaussian, sigma 3) and brightened by 40 levels:
  the rest of the picture changed too;
- ``duplicate``: an extra row repeating a clean pair (same source, same target bytes).

Targets are stored as JPEG q95, as the demo builds them, and every score below comes from the code the stages
run: the embedded verifier (``ieiw.backends.verify``, the builder's ``object_not_removed`` drop at
``min_score`` 0.5), the proxy aesthetic scorer (``ieiw.filters.quality``) under the demo's selection rules
(``min_target_aesthetic: 5.5``, ``max_aesthetic_gap: 1.5``, through ``rejection_reason``), and dedup
(``pair_hashes`` + ``find_duplicates`` with the default settings). Each rule is judged alone.

For a rule and a planted failure F: recall = share of the F pairs the rule rejects; precision = of the pairs
it rejects among the F pairs and the clean ones, the share that are F (so the precision of that rule in a
build whose only failure is F, at the planted rate). ``false rejections`` = share of clean pairs it rejects.

    python bench/filters.py [--images 120] [--size 320x240] [--rate 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from removal_quality import load_cases

from ieiw.backends.inpaint.opencv import OpenCVInpaintConfig, OpenCVInpainter
from ieiw.backends.verify import EmbeddedVerifyConfig
from ieiw.filters.dedup import Signature, find_duplicates, pair_hashes
from ieiw.filters.quality import ProxyQualityScorer
from ieiw.filters.selection import rejection_reason
from ieiw.imageio import decode_rgb
from ieiw.samples.phrasecut import make_phrasecut_sample

FAILURES = ("object_left", "artefacts", "changed_too_much", "duplicate")
RULES = ("verification (object_not_removed)", "min_target_aesthetic 5.5", "max_aesthetic_gap 1.5", "dedup (duplicate)")


def jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def plant(kind: str, source: np.ndarray, clean: np.ndarray) -> np.ndarray:
    if kind == "object_left":
        return source
    if kind == "artefacts":
        return decode_rgb(jpeg(clean, 4))
    if kind == "changed_too_much":
        blurred = cv2.GaussianBlur(clean, (0, 0), 3)
        return np.clip(blurred.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    return clean


def run(images: int, size: tuple[int, int], rate: float, seed: int) -> tuple[dict, Counter, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_phrasecut_sample(Path(tmp) / "VGPhraseCut_v0", images, seed, *size)
        sources, masks, _truths, _, _ = load_cases(root, 15)
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["clean", "object_left", "artefacts", "changed_too_much"], size=len(sources),
                       p=[1 - 3 * rate, rate, rate, rate]).tolist()
    inpainter = OpenCVInpainter(OpenCVInpaintConfig())
    filled = inpainter.inpaint(sources, masks)
    rows = []  # (kind, source pixels, target pixels as stored, verification input, mask)
    for kind, source, mask, clean in zip(kinds, sources, masks, filled, strict=True):
        target = plant(kind, source, clean)
        rows.append([kind, source, target, mask])
    clean_rows = [r for r in rows if r[0] == "clean"]
    for index in rng.choice(len(clean_rows), size=round(rate * len(rows)), replace=False):
        rows.append(["duplicate", *clean_rows[index][1:]])
    verifier = EmbeddedVerifyConfig().create()
    proxy = ProxyQualityScorer()
    verdicts: dict[str, list[bool]] = {rule: [] for rule in RULES}
    signatures = []
    for number, (kind, source, target, mask) in enumerate(rows):
        stored_source, stored_target = decode_rgb(jpeg(source, 95)), decode_rgb(jpeg(target, 95))
        score = verifier.score([source], [target], [mask], ["object"])[0]
        verdicts[RULES[0]].append(not verifier.gone(score))
        scores = {"source_aesthetic": proxy.score_pixels(stored_source), "target_aesthetic": proxy.score_pixels(stored_target)}
        verdicts[RULES[1]].append(rejection_reason(scores, {"min_target_aesthetic": 5.5}) is not None)
        verdicts[RULES[2]].append(rejection_reason(scores, {"max_aesthetic_gap": 1.5}) is not None)
        source_hash, edit_hash = pair_hashes(stored_source, stored_target)
        # the original row sorts before its copy (ids in row order), and ties on quality keep the smaller id
        signatures.append(Signature.from_hashes(f"{number:06d}", "remove", source_hash, edit_hash, 0.0))
    duplicates = find_duplicates(signatures)
    verdicts[RULES[3]] = [f"{n:06d}" in duplicates for n in range(len(rows))]
    elapsed = time.perf_counter() - began
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    truth = [r[0] for r in rows]
    for rule, rejected in verdicts.items():
        clean_hits = sum(1 for k, r in zip(truth, rejected, strict=True) if k == "clean" and r)
        table[rule] = {"false_rejections": (clean_hits / max(1, truth.count("clean")), 0.0, clean_hits)}
        for failure in FAILURES:
            hits = sum(1 for k, r in zip(truth, rejected, strict=True) if k == failure and r)
            precision = hits / (hits + clean_hits) if hits + clean_hits else float("nan")
            table[rule][failure] = (precision, hits / max(1, truth.count(failure)), hits)
    return table, Counter(truth), elapsed, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--rate", type=float, default=0.1, help="planted share of each failure kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    table, counts, elapsed, total = run(args.images, (width, height), args.rate, args.seed)
    print(f"{total} pairs from {args.images} scenes at {args.size}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; filters ran in {elapsed:.1f} s")
    print()
    print("| rule | " + " | ".join(f"{f}: precision / recall" for f in FAILURES) + " | clean pairs rejected |")
    print("|---|" + "---|" * (len(FAILURES) + 1))
    for rule, cells in table.items():
        parts = []
        for failure in FAILURES:
            precision, recall, hits = cells[failure]
            parts.append("-" if hits == 0 else f"{precision:.2f} / {recall:.2f}")
        share, _, hits = cells["false_rejections"]
        print(f"| {rule} | " + " | ".join(parts) + f" | {share:.2f} ({hits}) |")


if __name__ == "__main__":
    main()
