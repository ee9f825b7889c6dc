"""Human alignment picks (``ieiw align-pick``): candidates per benchmark prompt, a local picking page, shards.

The benchmark is a JSONL file, one JSON object a line (blank lines are skipped)::

    {"image": "images/cat.jpg", "instruction": "make the cat wear a red hat"}
    {"image": "/data/bench/street.png", "instruction": "remove the bicycle", "id": "street-1"}

``image`` is a path, relative paths resolving against the JSONL file's folder; ``instruction`` is a
non-empty string; ``id`` (optional) is the record id the rows carry (default ``<jsonl stem>:<line>``).
Other keys are ignored.

Everything lives in one work folder::

    prompts.json          the prompts, their candidates and the settings that made them
    prompts/p0000/source.<ext>   the benchmark image (upright: EXIF orientation applied)
    prompts/p0000/c0.png ...     candidate k (one per guidance variant, or copied from --candidates-from)
    picks.json            {"p0000": [0, 2], ...}: written atomically on every pick
    shards/               the kept pairs as an ``align`` stage folder (manifest.json + Parquet)

Candidates come from an exported pipeline (``--pipeline``), one edit per (text guidance, image guidance)
pair of ``--text-guidance 3,5,7.5,10 --image-guidance 1.25`` with one seed, through the same code as
``ieiw edit`` (:mod:`ieiw.training.edit`), or from ready images (``--candidates-from DIR``: ``DIR/<line>/``
holds line ``<line>``'s candidates (0-based, leading zeros allowed), taken in file-name order).

The page (stdlib ``ThreadingHTTPServer``, bound to 127.0.0.1 by default) shows one prompt at a time: the
source, the instruction and the N candidates. Keys 1..N (or a click) toggle a candidate, n/p or the arrow
keys move; at most 2 are kept per prompt (a third is refused with 409). Every toggle is a POST that the
server writes to ``picks.json`` before answering, and the page loads the picks from the server, so a
reload loses nothing. Shards are written by ``--write-shards`` (no server), by the page's "Write shards"
button, and when the server stops: rows of task ``edit``, source = the benchmark image, target = the kept
candidate, ``origin.dataset = "align-picks"``, builder ``align-pick`` with the guidance in ``params``.

Files are served from the work folder only: a request whose path has a ``..`` segment, is absolute, or
resolves (symlinks followed) outside the work folder is refused with 403, a missing file is 404; only
``/api/pick`` and ``/api/write-shards`` accept POST (JSON bodies only), other POSTs are 404.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ieiw.localserver import BadBody, LocalHandler, make_local_server, serve_until_stopped
from ieiw.schemas.manifest import Manifest, forget, load_manifest, manifest_path
from ieiw.schemas.rows import builder_cell, canonical_json, image_cell, image_key, origin_cell, row_id, rows_to_table
from ieiw.schemas.shards import write_shard
from ieiw.schemas.storage import atomic_write_bytes

FORMAT = "ieiw-align-work/1"
DATASET = "align-picks"
BUILDER = "align-pick"
MAX_PICKS = 2
ROWS_PER_SHARD = 256
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".bmp": "image/bmp", ".json": "application/json"}


class AlignError(ValueError):
    """A bad benchmark, work folder or request, with a one-line reason."""


# -- the benchmark ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchLine:
    line: int  # 1-based line number in the JSONL file
    image: Path  # resolved path
    instruction: str
    record_id: str


def read_benchmark(path: str | Path) -> list[BenchLine]:
    """The benchmark's lines; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AlignError(f"{path}: no such benchmark file")
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AlignError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise AlignError(f"{where}: expected an object with image and instruction")
        image, instruction = obj.get("image"), obj.get("instruction")
        if not isinstance(image, str) or not image:
            raise AlignError(f"{where}: 'image' must be a path string")
        if not isinstance(instruction, str) or not instruction.strip():
            raise AlignError(f"{where}: 'instruction' must be a non-empty string")
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if not image_path.is_file():
            raise AlignError(f"{where}: image {image_path} not found")
        record = obj.get("id")
        lines.append(BenchLine(number, image_path.resolve(), instruction.strip(),
                               str(record) if record is not None else f"{path.stem}:{number}"))
    if not lines:
        raise AlignError(f"{path}: no prompts")
    return lines


def _upright_source(data: bytes) -> tuple[bytes, str]:
    """The image as the trainer must see it: the original bytes, or a PNG when EXIF turns it."""
    from PIL import Image

    from ieiw.imageio import decode_rgb, extension, orientation_of

    if orientation_of(data) in (0, 1):
        return data, extension(data)
    buffer = io.BytesIO()
    Image.fromarray(decode_rgb(data)).save(buffer, format="PNG")
    return buffer.getvalue(), "png"


# -- preparing the work folder ------------------------------------------------------------------------
def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers separated by commas") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def prepare(
    benchmark: str | Path,
    work: str | Path,
    pipeline: str | Path | None = None,
    candidates_from: str | Path | None = None,
    text_guidance: list[float] = (3.0, 5.0, 7.5, 10.0),
    image_guidance: list[float] = (1.25,),
    steps: int = 100,
    seed: int = 0,
    resolution: int = 512,
    sampler: str = "official",
    device: str | None = None,
    log=print,
) -> dict[str, Any]:
    """Copy the sources into ``work``, make (or copy) the candidates, write ``prompts.json``; resumable.

    A work folder made for another benchmark or other settings is refused rather than mixed.
    """
    if (pipeline is None) == (candidates_from is None):
        raise AlignError("give one of --pipeline MODEL or --candidates-from DIR")
    work = Path(work)
    lines = read_benchmark(benchmark)
    if pipeline is not None:
        generator = {"kind": "pipeline", "model": str(Path(pipeline).resolve()), "text_guidance": list(map(float, text_guidance)),
                     "image_guidance": list(map(float, image_guidance)), "steps": steps, "seed": seed,
                     "resolution": resolution, "sampler": sampler}
    else:
        generator = {"kind": "candidates-from", "folder": str(Path(candidates_from).resolve())}
    bench_sha = hashlib.sha256(Path(benchmark).read_bytes()).hexdigest()
    existing = work / "prompts.json"
    if existing.exists():
        old = _read_json(existing)
        if old.get("benchmark_sha256") != bench_sha or old.get("generator") != generator:
            raise AlignError(f"{work} was prepared for another benchmark or other settings "
                             f"({old.get('benchmark')}, {old.get('generator')}): use a new work folder")
    prompts = []
    for index, line in enumerate(lines):
        key = f"p{index:04d}"
        folder = work / "prompts" / key
        data, ext = _upright_source(line.image.read_bytes())
        source = folder / f"source.{ext}"
        if not source.exists() or source.read_bytes() != data:
            atomic_write_bytes(source, data)
        prompts.append({"key": key, "line": line.line, "record_id": line.record_id, "image": str(line.image),
                        "instruction": line.instruction, "source": source.relative_to(work).as_posix(),
                        "candidates": []})
    if pipeline is not None:
        _generate(work, prompts, generator, device, log)
    else:
        _copy_candidates(work, prompts, Path(candidates_from))
    state = {"format": FORMAT, "benchmark": str(Path(benchmark).resolve()), "benchmark_sha256": bench_sha,
             "generator": generator, "prompts": prompts}
    _write_json(existing, state)
    if not (work / "picks.json").exists():
        _write_json(work / "picks.json", {})
    return state


def _copy_candidates(work: Path, prompts: list[dict[str, Any]], folder: Path) -> None:
    if not folder.is_dir():
        raise AlignError(f"--candidates-from {folder}: not a folder")
    by_line: dict[int, Path] = {}
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name.isdigit():
            by_line[int(sub.name)] = sub
    from PIL import Image

    for index, prompt in enumerate(prompts):
        sub = by_line.get(index)
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if sub else []
        if not files:
            raise AlignError(f"--candidates-from {folder}: no images in {folder}/{index}/ for prompt {index} "
                             f"(line {prompt['line']})")
        for k, file in enumerate(files):
            out = work / "prompts" / prompt["key"] / f"c{k}.png"
            if not out.exists():
                with Image.open(file) as image:
                    buffer = io.BytesIO()
                    image.convert("RGB").save(buffer, format="PNG")
                atomic_write_bytes(out, buffer.getvalue())
            prompt["candidates"].append({"file": out.relative_to(work).as_posix(), "from": file.name})


def _generate(work: Path, prompts: list[dict[str, Any]], gen: dict[str, Any], device: str | None, log) -> None:
    """N edits per prompt with the exported pipeline, as ``ieiw edit`` makes them (loaded once)."""
    variants = [(t, i) for i in gen["image_guidance"] for t in gen["text_guidance"]]
    todo = [(p, k) for p in prompts for k in range(len(variants)) if not (work / "prompts" / p["key"] / f"c{k}.png").exists()]
    pipe = None
    if todo:
        import torch
        from PIL import Image

        from ieiw.imageio import decode_rgb
        from ieiw.training.edit import edit_official, fit_official, load_pipeline

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            pipe = load_pipeline(gen["model"], device, dtype)
        except FileNotFoundError as exc:
            raise AlignError(str(exc)) from exc
        log(f"align-pick: {len(todo)} edits to make with {gen['model']} on {device}")
    started = time.monotonic()
    for prompt in prompts:
        image = None
        for k, (text_g, image_g) in enumerate(variants):
            out = work / "prompts" / prompt["key"] / f"c{k}.png"
            if not out.exists():
                if image is None:
                    image = Image.fromarray(decode_rgb((work / prompt["source"]).read_bytes()))
                    image = fit_official(image, gen["resolution"])
                if gen["sampler"] == "official":
                    result = edit_official(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config,
                                           image, prompt["instruction"], gen["steps"], text_g, image_g, gen["seed"])
                else:
                    generator = torch.Generator(device="cpu").manual_seed(gen["seed"])
                    result = pipe(prompt["instruction"], image=image, num_inference_steps=gen["steps"], guidance_scale=text_g,
                                  image_guidance_scale=image_g, generator=generator).images[0]
                buffer = io.BytesIO()
                result.save(buffer, format="PNG")
                atomic_write_bytes(out, buffer.getvalue())
            prompt["candidates"].append({"file": out.relative_to(work).as_posix(), "text_guidance": text_g,
                                         "image_guidance": image_g, "seed": gen["seed"], "steps": gen["steps"],
                                         "sampler": gen["sampler"]})
    if todo:
        log(f"align-pick: made {len(todo)} edits in {time.monotonic() - started:.1f}s")


# -- picks and shards ---------------------------------------------------------------------------------
class PickStore:
    """The prompts and the picks of one work folder; every change is written before it is acknowledged."""

    def __init__(self, work: str | Path):
        self.work = Path(work).resolve()
        path = self.work / "prompts.json"
        if not path.is_file():
            raise AlignError(f"{work}: no prompts.json; prepare it first (ieiw align-pick BENCH.jsonl --work {work} ...)")
        self.state = _read_json(path)
        if self.state.get("format") != FORMAT:
            raise AlignError(f"{path}: format {self.state.get('format')!r}, expected {FORMAT!r}")
        self.prompts = {p["key"]: p for p in self.state["prompts"]}
        picks_path = self.work / "picks.json"
        raw = _read_json(picks_path) if picks_path.exists() else {}
        self.picks: dict[str, list[int]] = {k: sorted(set(v)) for k, v in raw.items() if k in self.prompts and v}
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.changed = False

    def toggle(self, key: str, candidate: int, keep: bool) -> list[int]:
        """Keep or drop one candidate; a third kept candidate raises ``PermissionError``."""
        prompt = self.prompts.get(key)
        if prompt is None:
            raise KeyError(f"no prompt {key!r}")
        if not isinstance(candidate, int) or isinstance(candidate, bool) or not 0 <= candidate < len(prompt["candidates"]):
            raise KeyError(f"prompt {key} has no candidate {candidate!r}")
        with self.lock:
            kept = set(self.picks.get(key, []))
            if keep and candidate not in kept and len(kept) >= MAX_PICKS:
                raise PermissionError(f"at most {MAX_PICKS} picks per prompt: drop one first")
            (kept.add if keep else kept.discard)(candidate)
            new = dict(self.picks)
            if kept:
                new[key] = sorted(kept)
            else:
                new.pop(key, None)
            _write_json(self.work / "picks.json", new)
            self.picks = new
            self.changed = True
            return sorted(kept)

    def rows(self, picks: dict[str, list[int]] | None = None) -> list[dict[str, Any]]:
        """One ``edit`` row per kept candidate, in prompt order."""
        from ieiw.imageio import decode_image

        gen = self.state["generator"]
        picks = self.picks if picks is None else picks
        rows = []
        for prompt in self.state["prompts"]:
            kept = picks.get(prompt["key"], [])
            if not kept:
                continue
            source = (self.work / prompt["source"]).read_bytes()
            width, height = decode_image(source).size
            for k in kept:
                cand = prompt["candidates"][k]
                params = {key: value for key, value in cand.items() if key != "file"}
                params["candidate"] = k
                target = (self.work / cand["file"]).read_bytes()
                rows.append({
                    "id": row_id(DATASET, prompt["record_id"], BUILDER, params, "edit"),
                    "task": "edit",
                    "instruction": prompt["instruction"],
                    "source_image": image_cell(source, Path(prompt["source"]).name),
                    "target_image": image_cell(target, Path(cand["file"]).name),
                    "mask": None,
                    "width": width,
                    "height": height,
                    "origin": origin_cell(dataset=DATASET, split="train", record_id=prompt["record_id"],
                                          image_id=image_key(source)),
                    "exemplar": None,
                    "scores": None,
                    "builder": builder_cell(
                        name=BUILDER,
                        backend=f"ieiw-edit-{cand['sampler']}" if gen["kind"] == "pipeline" else "candidates-from",
                        embedded=False, model=gen.get("model"), seed=cand.get("seed"), params=params),
                    "split": "train",
                    "drop_reason": None,
                    "duplicate_of": None,
                })
        return rows

    def write_shards(self) -> dict[str, Any]:
        """Rewrite ``shards/`` from the current picks: shards of up to 256 rows in a real manifest; units of an
        earlier, larger write are dropped from the manifest, then deleted."""
        with self.write_lock:  # one write at a time; picks go on meanwhile
            return self._write_shards()

    def _write_shards(self) -> dict[str, Any]:
        with self.lock:
            picks = dict(self.picks)
            self.changed = False
        folder = self.work / "shards"
        rows = self.rows(picks)
        manifest = Manifest(folder, "align", {"unit_rows": ROWS_PER_SHARD, "dataset": DATASET})
        manifest.prepare(hashlib.sha256(canonical_json(picks).encode()).hexdigest()[:16], {"candidates": self.state["generator"]["kind"]})
        units = []
        for start in range(0, len(rows), ROWS_PER_SHARD):
            chunk = rows[start:start + ROWS_PER_SHARD]
            unit = f"{DATASET}-{start // ROWS_PER_SHARD:05d}"
            shard = write_shard(rows_to_table(chunk), folder / f"{unit}.parquet")
            manifest.record(unit, shard, fingerprint=hashlib.sha256("".join(r["id"] for r in chunk).encode()).hexdigest(),
                            stats={"rows": len(chunk), "prompts": len({r["origin"]["record_id"] for r in chunk})})
            units.append(unit)
        stale = [u for u in load_manifest(folder)["units"] if u not in units]  # what this write did not make
        files = [entry["shard"] for entry in forget(folder, stale)]
        for name in files:
            (folder / name).unlink(missing_ok=True)
        return {"rows": len(rows), "shards": len(units), "folder": str(folder),
                "prompts": sum(1 for v in picks.values() if v)}


# -- the server ---------------------------------------------------------------------------------------
class Handler(LocalHandler):
    """Host check, JSON-only POSTs and the answers' headers come from :mod:`ieiw.localserver`."""

    server_version = "ieiw-align-pick"
    store: PickStore  # set on the subclass made by make_server

    def _file(self, rel: str) -> None:
        """A file under the work folder, or 403/404."""
        rel = unquote(rel)
        parts = rel.split("/")
        if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel or any(p in ("..", ".") for p in parts) \
                or (len(rel) > 1 and rel[1] == ":"):
            return self._error(HTTPStatus.FORBIDDEN, "outside the work folder")
        root = self.store.work
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            return self._error(HTTPStatus.FORBIDDEN, "outside the work folder")
        if not path.is_file():
            return self._error(HTTPStatus.NOT_FOUND, "no such file")
        self._send(HTTPStatus.OK, path.read_bytes(), CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    def do_GET(self) -> None:
        if not self._host_allowed():
            return None
        route = urlsplit(self.path).path
        if route in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        if route == "/api/state":
            store = self.store
            with store.lock:
                picks = dict(store.picks)
            prompts = [{"key": p["key"], "instruction": p["instruction"], "source": p["source"], "line": p["line"],
                        "candidates": [{k: v for k, v in c.items()} for c in p["candidates"]]}
                       for p in store.state["prompts"]]
            return self._json(HTTPStatus.OK, {"prompts": prompts, "picks": picks, "max_picks": MAX_PICKS})
        if route.startswith("/files/"):
            return self._file(route[len("/files/"):])
        self._error(HTTPStatus.NOT_FOUND, "no such page")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._host_allowed():
            return None
        route = urlsplit(self.path).path
        if route not in ("/api/pick", "/api/write-shards"):
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
        try:
            body = self.json_body()
        except BadBody as exc:
            return self._error(exc.status, str(exc))
        if route == "/api/write-shards":
            return self._json(HTTPStatus.OK, self.store.write_shards())
        if not (isinstance(body, dict) and isinstance(body.get("prompt"), str) and isinstance(body.get("keep"), bool)
                and isinstance(body.get("candidate"), int) and not isinstance(body.get("candidate"), bool)):
            return self._error(HTTPStatus.BAD_REQUEST, "expected {prompt: string, candidate: integer, keep: true|false}")
        try:
            kept = self.store.toggle(body["prompt"], body["candidate"], body["keep"])
        except KeyError as exc:
            return self._error(HTTPStatus.NOT_FOUND, str(exc.args[0]))
        except PermissionError as exc:
            with self.store.lock:
                kept = self.store.picks.get(body.get("prompt"), [])
            return self._json(HTTPStatus.CONFLICT, {"error": str(exc), "prompt": body.get("prompt"), "picks": kept})
        self._json(HTTPStatus.OK, {"prompt": body.get("prompt"), "picks": kept})


def make_server(work: str | Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The picking server over ``work`` (port 0: a free one; see ``server.server_address``)."""
    store = PickStore(work)
    server = make_local_server(Handler, host, port, store=store)
    server.store = store  # type: ignore[attr-defined]
    return server


# -- the command --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ieiw align-pick",
        description="Make N edits per benchmark prompt, pick 0-2 per prompt on a local page, write them as "
                    "--stage align shards (docs/training.md, 'Alignment picks').",
    )
    p.add_argument("benchmark", nargs="?", help='JSONL, one {"image": path, "instruction": text} a line '
                   "(relative paths from the file's folder); leave out to reopen a prepared work folder")
    p.add_argument("--work", required=True, help="work folder: sources, candidates, picks.json, shards/")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pipeline", help="exported pipeline folder that makes the candidates (as ieiw edit)")
    src.add_argument("--candidates-from", help="ready candidates: DIR/<line>/*.png, line 0-based")
    p.add_argument("--text-guidance", type=_floats, default=[3.0, 5.0, 7.5, 10.0], help="comma list (default 3,5,7.5,10)")
    p.add_argument("--image-guidance", type=_floats, default=[1.25], help="comma list (default 1.25); N = both lists' product")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="one seed for all N, so they differ by guidance only")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--sampler", choices=["official", "diffusers"], default="official")
    p.add_argument("--device", default=None)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare-only", action="store_true", help="make the candidates, do not serve")
    mode.add_argument("--write-shards", action="store_true", help="write <work>/shards from picks.json and exit")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.benchmark:
            prepare(args.benchmark, args.work, args.pipeline, args.candidates_from, args.text_guidance, args.image_guidance,
                    args.steps, args.seed, args.resolution, args.sampler, args.device,
                    log=lambda m: print(m, file=sys.stderr))
        elif args.pipeline or args.candidates_from:
            raise AlignError("--pipeline/--candidates-from need the benchmark JSONL")
        if args.prepare_only:
            print(Path(args.work) / "prompts.json")
            return 0
        if args.write_shards:
            result = PickStore(args.work).write_shards()
            print(f"wrote {result['rows']} rows ({result['prompts']} prompts) to {result['folder']}")
            return 0
        server = make_server(args.work, args.host, args.port)
    except (AlignError, OSError) as exc:
        print(f"ieiw align-pick: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"align-pick: open http://{host}:{port}/  (Ctrl-C or kill to stop; shards are written on stop)", file=sys.stderr, flush=True)
    serve_until_stopped(server)  # `kill` stops it like Ctrl-C: the shards are written below
    store = server.store
    if store.changed or not manifest_path(store.work / "shards").exists():  # picks since the last write
        result = store.write_shards()
        print(f"wrote {result['rows']} rows ({result['prompts']} prompts) to {result['folder']}")
    return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ieiw align-pick</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1rem 2rem;background:#fafafa;color:#222}
header{display:flex;gap:1rem;align-items:baseline;flex-wrap:wrap}
h1{font-size:1.1rem;margin:0}
#instruction{font-size:1.4rem;margin:.6rem 0 1rem;font-weight:600}
#row{display:flex;gap:1rem;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;padding:6px;border:4px solid transparent;border-radius:8px;background:#fff;box-shadow:0 1px 3px #0003}
figure img{display:block;max-width:300px;max-height:300px;image-rendering:auto}
figcaption{font-size:.85rem;margin-top:4px;color:#555}
.cand{cursor:pointer}
.cand.picked{border-color:#1a8f3a;background:#e9f8ed}
.cand.picked figcaption::after{content:" ✓ kept";color:#1a8f3a;font-weight:700}
#source{border-color:#bbb}
#message{min-height:1.3rem;color:#b00020;margin:.5rem 0}
#dots span{display:inline-block;width:10px;height:10px;border-radius:50%;background:#ccc;margin:0 2px;cursor:pointer}
#dots span.has{background:#1a8f3a}#dots span.here{outline:2px solid #222}
kbd{border:1px solid #999;border-radius:3px;padding:0 3px;font-size:.8rem}
button{font-size:.9rem}
</style></head>
<body>
<header><h1>align-pick</h1><span id="position"></span><span id="count"></span>
<button id="prev" type="button">◀ prev</button><button id="next" type="button">next ▶</button>
<button id="write" type="button">Write shards</button><span id="written"></span></header>
<div id="dots" aria-label="prompts"></div>
<p id="instruction"></p>
<div id="message" role="status"></div>
<div id="row"><figure id="source"><img id="source-img" alt="source image"><figcaption>source</figcaption></figure>
<div id="cands" style="display:flex;gap:1rem;flex-wrap:wrap"></div></div>
<p><kbd>1</kbd>..<kbd>N</kbd> or click: keep / drop (at most <span id="max"></span> a prompt) ·
<kbd>n</kbd>/<kbd>→</kbd> next · <kbd>p</kbd>/<kbd>←</kbd> previous · every choice is saved at once.</p>
<script>
"use strict";
let state = null, at = 0;
const $ = id => document.getElementById(id);
const fileUrl = rel => "/files/" + rel.split("/").map(encodeURIComponent).join("/");
function label(c, k) {
  if (c.text_guidance !== undefined) return `${k + 1} · text ${c.text_guidance} · image ${c.image_guidance}`;
  return `${k + 1} · ${c.from || ""}`;
}
function render() {
  const p = state.prompts[at], kept = state.picks[p.key] || [];
  $("position").textContent = `prompt ${at + 1} / ${state.prompts.length}`;
  $("count").textContent = `${kept.length} kept here, ${Object.values(state.picks).reduce((a, v) => a + v.length, 0)} in all`;
  $("instruction").textContent = p.instruction;
  $("source-img").src = fileUrl(p.source);
  const box = $("cands"); box.replaceChildren();
  p.candidates.forEach((c, k) => {
    const f = document.createElement("figure");
    f.className = "cand" + (kept.includes(k) ? " picked" : "");
    f.dataset.index = k; f.setAttribute("role", "button"); f.setAttribute("aria-pressed", kept.includes(k));
    const img = document.createElement("img"); img.src = fileUrl(c.file); img.alt = `candidate ${k + 1}`;
    const cap = document.createElement("figcaption"); cap.textContent = label(c, k);
    f.append(img, cap); f.addEventListener("click", () => toggle(k)); box.append(f);
  });
  const dots = $("dots"); dots.replaceChildren();
  state.prompts.forEach((q, i) => {
    const d = document.createElement("span");
    d.className = ((state.picks[q.key] || []).length ? "has" : "") + (i === at ? " here" : "");
    d.title = q.instruction; d.addEventListener("click", () => go(i)); dots.append(d);
  });
  document.body.dataset.prompt = p.key;
}
function go(i) {
  at = Math.max(0, Math.min(state.prompts.length - 1, i));
  history.replaceState(null, "", "#" + (at + 1)); $("message").textContent = ""; render();
}
let queue = Promise.resolve();
function toggle(k) {  // one request at a time: a late answer never overwrites a newer one
  const p = state.prompts[at];
  queue = queue.then(() => send(p, k));
}
async function send(p, k) {
  const keep = !(state.picks[p.key] || []).includes(k);
  try {
    const r = await fetch("/api/pick", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: p.key, candidate: k, keep})});
    const body = await r.json();
    if (body.picks) { if (body.picks.length) state.picks[p.key] = body.picks; else delete state.picks[p.key]; }
    $("message").textContent = r.ok ? "" : body.error;
  } catch (e) { $("message").textContent = "not saved: " + e; }
  render();
}
document.addEventListener("keydown", e => {
  if (!state || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "n" || e.key === "ArrowRight") go(at + 1);
  else if (e.key === "p" || e.key === "ArrowLeft") go(at - 1);
  else if (/^[1-9]$/.test(e.key) && Number(e.key) <= state.prompts[at].candidates.length) toggle(Number(e.key) - 1);
  else return;
  e.preventDefault();
});
$("prev").addEventListener("click", () => go(at - 1));
$("next").addEventListener("click", () => go(at + 1));
$("write").addEventListener("click", async () => {
  const r = await fetch("/api/write-shards", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
  const b = await r.json(); $("written").textContent = r.ok ? `wrote ${b.rows} rows` : b.error;
});
(async () => {
  state = await (await fetch("/api/state", {cache: "no-store"})).json();
  $("max").textContent = state.max_picks;
  at = Math.max(0, Math.min(state.prompts.length - 1, (parseInt(location.hash.slice(1)) || 1) - 1));
  render(); document.body.dataset.ready = "1";
})();
</script></body></html>
"""
