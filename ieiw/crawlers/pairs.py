"""One request thread -> validated ``web`` pair rows (or named failures).

This is the per-record step of the crawl builder: skip rules, instruction cleaning, fetching the
original and the ranked edits through the polite session, validation/alignment, and the row with
its provenance. It never raises for a bad record; every outcome is a row or a :class:`Failure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2

from ieiw.crawlers.align import validate_edit
from ieiw.crawlers.config import CrawlConfig
from ieiw.crawlers.http import FetchError, PoliteSession
from ieiw.crawlers.images import fetch_image
from ieiw.crawlers.posts import Thread, rank_edits, skip_reason
from ieiw.crawlers.titles import instruction_from_comment, instruction_from_post
from ieiw.imageio import decode_rgb, encode, extension_for_format, orientation_of
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id
from ieiw.schemas.takedown import Takedown
from ieiw.schemas.units import Failure, UnitResult

ALIGN_BACKEND = "opencv-orb-ransac"


@dataclass
class PairMaker:
    config: CrawlConfig
    session: PoliteSession
    takedown: Takedown
    source_backend: str  # "reddit-dump", "reddit-api", "html:<site>"

    def row_params(self) -> dict[str, Any]:
        """The parameters that shape every row; part of the row id."""
        return {
            "pairs": self.config.pairs.model_dump(mode="json"),
            "validation": self.config.validation.row_params(),
            "image_format": self.config.image_format,
        }

    def process(self, thread: Thread, result: UnitResult) -> None:
        """Add the rows and failures of one thread to ``result``."""
        result.records += 1
        result.counters["posts"] += 1
        file = thread.source_file
        rid = thread.id

        def fail(reason: str, message: str, record_id: str = rid) -> None:
            result.failures.append(Failure(reason=reason, record_id=record_id, file=file, message=message))

        blocked = self.takedown.blocks(thread.id, thread.permalink, *thread.image_urls)
        if blocked:
            fail("takedown", f"{blocked} is on the takedown list")
            return
        skip = skip_reason(thread)
        if skip:
            fail(*skip)
            return
        instruction = instruction_from_post(thread.title, thread.body, self.config.pairs.max_instruction_chars)
        if not instruction:
            fail("no_instruction", f"nothing left of the request after cleaning: {thread.title!r}")
            return
        candidates = rank_edits(thread, self.config.pairs.min_edit_score)
        if not candidates:
            fail("no_edits", f"no image comments by users other than the poster ({len(thread.comments)} comments)")
            return
        original_url = thread.image_urls[0]
        max_pixels = self.config.http.max_image_pixels
        out_fmt = self.config.image_format
        out_ext = extension_for_format(out_fmt)
        try:
            original_bytes, original_fmt = fetch_image(self.session, original_url, max_pixels)
            original = decode_rgb(original_bytes)
        except FetchError as exc:
            fail(exc.reason, f"original image {exc.url}: {exc.message}")
            return
        original_rotated = orientation_of(original_bytes) != 1
        accepted = 0
        for cand in candidates[: self.config.pairs.max_candidates_per_post]:
            if accepted >= self.config.pairs.max_edits_per_post:
                break
            c = cand.comment
            erid = f"{thread.id}/{c.id}"
            result.counters["edits_tried"] += 1
            params = self.row_params()
            pair_id = row_id(thread.dataset, erid, "crawl", params, "web")
            blocked = self.takedown.blocks(c.id, c.permalink, cand.url, pair_id)
            if blocked:
                fail("takedown", f"{blocked} is on the takedown list", erid)
                continue
            try:
                edit_bytes, edit_fmt = fetch_image(self.session, cand.url, max_pixels)
                edit = decode_rgb(edit_bytes)
            except FetchError as exc:
                fail(exc.reason, f"edit image {exc.url} (comment {c.id}): {exc.message}", erid)
                continue
            try:
                verdict = validate_edit(original, edit, self.config.validation)
            except cv2.error as exc:  # a degenerate image OpenCV cannot handle: this edit only
                fail("align_error", f"edit {cand.url}: OpenCV failed: {exc}", erid)
                continue
            edit_rotated = orientation_of(edit_bytes) != 1
            if not verdict.ok:
                # Not a pair for the corpus, but a candidate all the same: it reaches rejected/ with its
                # reason and its scores, so the validation thresholds can be tuned on what they reject.
                result.counters[f"rejected_{verdict.reason}"] += 1
                source = encode(original, out_fmt) if original_rotated else original_bytes
                target = encode(edit, out_fmt) if edit_rotated else edit_bytes
                result.rows.append(self._row(
                    thread, cand, instruction, pair_id, erid, params, verdict,
                    (source, out_ext if original_rotated else extension_for_format(original_fmt)),
                    (target, out_ext if edit_rotated else extension_for_format(edit_fmt)),
                    edit.shape[:2], drop_reason=verdict.reason or "rejected",
                ))
                continue
            assert verdict.source is not None and verdict.target is not None
            # Fetched bytes are stored as fetched unless they carry an EXIF rotation: decoders disagree on
            # applying it, so such an image is stored re-encoded upright (as decode_rgb showed it). The source
            # is the original itself when the pair needed no alignment, and when the edit is a frame change
            # alone (geometric: aligning would undo it).
            if verdict.source is original and not original_rotated:
                src_bytes, src_ext = original_bytes, extension_for_format(original_fmt)
            else:
                src_bytes, src_ext = encode(verdict.source, out_fmt), out_ext
            if verdict.target_rendered or edit_rotated:
                tgt_bytes, tgt_ext = encode(verdict.target, out_fmt), out_ext
            else:
                tgt_bytes, tgt_ext = edit_bytes, extension_for_format(edit_fmt)
            result.rows.append(self._row(thread, cand, instruction, pair_id, erid, params, verdict,
                                         (src_bytes, src_ext), (tgt_bytes, tgt_ext), verdict.target.shape[:2]))
            accepted += 1
            result.counters["pairs"] += 1

    def _row(self, thread: Thread, cand: Any, instruction: str, pair_id: str, erid: str, params: dict[str, Any],
             verdict: Any, source: tuple[bytes, str], target: tuple[bytes, str], shape: tuple[int, ...],
             drop_reason: str | None = None) -> dict[str, Any]:
        """One ``web`` candidate row: an accepted pair, or (with ``drop_reason``) an edit validation rejected.

        The instruction is the editor's own account of the edit when the comment gives one ("removed the guy
        on the left" -> "Remove the guy on the left."): it says what this target shows, which the request
        may say only in part; otherwise the cleaned request."""
        c = cand.comment
        narrowed = instruction_from_comment(c.body or "")
        if narrowed and len(narrowed) <= self.config.pairs.max_instruction_chars:
            instruction = narrowed
        height, width = shape[:2]
        details = {
            **params,
            "alignment": verdict.scores,
            "original_url": thread.image_urls[0],
            "edit_url": cand.url,
            "edit_rank": cand.rank,
            "edit_score": c.score,
            "edit_permalink": c.permalink,
            "edit_created_utc": c.created_utc,
            "post_author": thread.author,
            "edit_author": c.author,
            "post_title": thread.title,
            "instruction_from": "editor_comment" if narrowed and instruction == narrowed else "request",
        }
        similarity = verdict.scores.get("similarity")
        return {
            "id": pair_id,
            "task": "web",
            "instruction": instruction,
            "source_image": image_cell(source[0], f"{pair_id}_source.{source[1]}"),
            "target_image": image_cell(target[0], f"{pair_id}_target.{target[1]}"),
            "mask": None,
            "width": int(width),
            "height": int(height),
            # record_id: the edit's record (what its row id hashes); image_id: the original's (the split is
            # drawn from it, all edits share it); authors: poster, then editor
            "origin": origin_cell(dataset=thread.dataset, record_id=erid, image_id=thread.id, url=thread.permalink,
                                  license=thread.license, authors=[a for a in (thread.author, c.author) if a] or None,
                                  edit_url=cand.url, created_utc=thread.created_utc),
            "exemplar": None,
            "scores": {
                "backend": ALIGN_BACKEND,
                "embedded": False,
                "source_aesthetic": None,
                "target_aesthetic": None,
                "source_giqa": None,
                "target_giqa": None,
                "edit_consistency": float(similarity) if similarity is not None else None,
            },
            "builder": builder_cell(name="crawl", backend=f"{self.source_backend}+{ALIGN_BACKEND}", embedded=False,
                                    params=details),
            "drop_reason": drop_reason,
            "duplicate_of": None,
            "edit_kind": verdict.edit_kind,
        }
