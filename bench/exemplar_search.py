"""The exemplar index at SA-1B scale: streaming IVF-PQ (+ re-ranking from the float16 store) against exact search.

Database vectors come from a Gaussian mixture on the unit sphere, the shape of real image embeddings:
clustered, each cluster spread mostly along a few directions of its own (a low-rank covariance with a
decaying spectrum, plus a small isotropic floor), clusters of unequal sizes. Uniform noise, or isotropic
clusters in the full 768 dimensions, have no neighbour structure worth finding and make any approximate
index look bad for the wrong reason (docs/environment.md). Queries are held out: fresh draws from the same
mixture. Every parameter of the mixture is printed.

The database is generated in chunks (``--chunk`` vectors, never all in RAM) and streamed, chunk by chunk:

1. into the **exact baseline**: FAISS ``IndexFlatIP`` over the chunk, searched with every query, the top-10
   merged across chunks, float32 throughout (the exact neighbours; its search time, summed, is the exact
   queries/s: the same work as one flat index over the whole database, which would not fit in RAM at 10M);
2. into :class:`ieiw.builders.exemplars.IndexWriter` (the path a build takes): the float16 store, then
   training, shards, nprobe calibration, with the config's defaults unless flags say otherwise.

Then the index is searched (``ExemplarIndex.search``, k=10, the calibrated nprobe; ``ExemplarIndex.query``
with its exclusions) and an nprobe sweep is printed. Memory: the process's peak RSS from the kernel
(``ru_maxrss``, everything: generation, baseline, build, queries, mapped store pages), and RSS sampled per
phase. Per-vector costs (build seconds, disk and RAM bytes) are printed for extrapolation to 100M
(docs/PERFORMANCE.md). Goal: recall@10 >= 0.9 at >= 20x the exact queries/s, peak RSS < 8 GB at 10M.

    python bench/exemplar_search.py [--n 1000000] [--dim 768] [--queries 2000] [--components 2000]
                                    [--nprobe N] [--nlist N] [--m M] [--refine F] [--threads 2] [--chunk 262144]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ieiw.builders.exemplars import ExemplarIndexConfig, IndexWriter, faiss_threads

OBJECTS_PER_IMAGE = 8
K = 10


# -- the mixture ---------------------------------------------------------------------------------------
def mixture_spec(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    components = args.components
    weights = rng.dirichlet(np.full(components, args.concentration))
    spreads = rng.uniform(args.spread_min, args.spread_max, components)
    spectrum = np.arange(1, args.rank + 1, dtype=np.float64) ** -args.decay
    return {"weights": weights, "spreads": spreads, "spectrum": spectrum / spectrum.sum()}


def component_frame(args: argparse.Namespace, component: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre on the unit sphere, orthonormal basis rank x dim) of one component, from its own seed. The
    centres lean towards one shared direction by ``cone`` (real embeddings fill a narrow cone, not the
    sphere: two unrelated CLIP images still have a positive cosine)."""
    axis = np.random.default_rng([args.seed, 4]).standard_normal(args.dim)
    rng = np.random.default_rng([args.seed, 1, component])
    centre = rng.standard_normal(args.dim)
    centre = args.cone * axis / np.linalg.norm(axis) + np.sqrt(1 - args.cone**2) * centre / np.linalg.norm(centre)
    basis, _ = np.linalg.qr(rng.standard_normal((args.dim, args.rank)))
    return (centre / np.linalg.norm(centre)).astype(np.float32), basis.T.astype(np.float32)


class Mixture:
    """The mixture's components, their frames cached (2000 x 33 x 768 float32: ~200 MB at the defaults)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.spec = mixture_spec(args)
        frames = [component_frame(args, c) for c in range(args.components)]
        self.centres = np.stack([f[0] for f in frames])
        self.bases = np.stack([f[1] for f in frames])
        self.scale = np.sqrt((1 - args.floor) * self.spec["spectrum"]).astype(np.float32)

    def draw(self, count: int, stream: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` unit vectors and their components; ``stream`` 0: database, 1: queries; ``chunk``:
        which chunk of the stream (each has its own seeds)."""
        args = self.args
        rng = np.random.default_rng([args.seed, 2, stream, chunk])
        labels = rng.choice(args.components, size=count, p=self.spec["weights"])
        out = np.empty((count, args.dim), np.float32)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(args.components + 1))
        for component in range(args.components):
            rows = order[bounds[component]:bounds[component + 1]]
            if not len(rows):
                continue
            spread = np.float32(self.spec["spreads"][component])
            local = np.random.default_rng([args.seed, 3, stream, chunk, component])
            noise = (local.standard_normal((len(rows), args.rank), dtype=np.float32) * self.scale) @ self.bases[component]
            noise += local.standard_normal((len(rows), args.dim), dtype=np.float32) * np.float32(
                np.sqrt(args.floor / args.dim))
            out[rows] = self.centres[component] + spread * noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out, labels


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRss:
    """Peak process RSS while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> Self:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


class ExactTopK:
    """The exact baseline: FAISS IndexFlatIP per chunk, top-k merged across chunks (float32)."""

    def __init__(self, queries: np.ndarray, threads: int):
        self.queries, self.threads = queries, threads
        self.sims = np.full((len(queries), K), -np.inf, np.float32)
        self.rows = np.full((len(queries), K), -1, np.int64)
        self.seconds = 0.0

    def add(self, chunk: np.ndarray, first: int) -> None:
        import faiss

        start = time.perf_counter()
        with faiss_threads(self.threads):
            flat = faiss.IndexFlatIP(chunk.shape[1])
            flat.add(chunk)
            sims, rows = flat.search(self.queries, K)
        sims = np.concatenate([self.sims, sims], axis=1)
        rows = np.concatenate([self.rows, np.where(rows < 0, -1, rows + first)], axis=1)
        order = np.lexsort((rows, -sims), axis=1)[:, :K]
        self.sims, self.rows = np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)
        self.seconds += time.perf_counter() - start


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(f[f >= 0].tolist()) & set(e[e >= 0].tolist())) / max(1, int((e >= 0).sum()))
            for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def gb(value: float) -> str:
    return f"{value / 2**30:.2f} GB"


def config_for(args: argparse.Namespace) -> ExemplarIndexConfig:
    fields = {"kind": "ivfpq", "threads": args.threads}
    for name in ("nlist", "m", "nprobe", "train_memory_mb"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.refine is not None:
        fields["refine"] = None if args.refine == 0 else args.refine
    return ExemplarIndexConfig(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    parser.add_argument("--dim", type=int, default=768, help="e.g. CLIP ViT-L/14 image embeddings")
    parser.add_argument("--queries", type=int, default=2000, help="held-out queries")
    parser.add_argument("--components", type=int, default=2000, help="mixture components")
    parser.add_argument("--cone", type=float, default=0.7, help="centres' component along a shared axis")
    parser.add_argument("--concentration", type=float, default=2.0, help="Dirichlet weights of the components")
    parser.add_argument("--spread-min", type=float, default=0.5, help="per-component spread: noise norm / centre")
    parser.add_argument("--spread-max", type=float, default=1.0)
    parser.add_argument("--rank", type=int, default=32, help="principal directions per component")
    parser.add_argument("--decay", type=float, default=1.0, help="variance of direction i ~ i^-decay")
    parser.add_argument("--floor", type=float, default=0.1, help="share of the variance that is isotropic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=262_144, help="vectors generated (and streamed) at a time")
    parser.add_argument("--repeat", type=int, default=3, help="searches timed (median)")
    parser.add_argument("--nlist", type=int)
    parser.add_argument("--m", type=int)
    parser.add_argument("--nprobe", type=int, help="override the calibrated nprobe")
    parser.add_argument("--refine", type=float, help="re-rank factor; 0: none")
    parser.add_argument("--train-memory-mb", type=int)
    parser.add_argument("--work", type=Path, help="folder for the index (default: a temp folder, removed)")
    args = parser.parse_args()

    started = time.perf_counter()
    mixture = Mixture(args)
    sizes = mixture.spec["weights"] * args.n
    print(f"database {args.n:,} x {args.dim} (float32 {args.n * args.dim * 4 / 2**30:.1f} GB, never all in RAM:"
          f" generated and streamed in chunks of {args.chunk:,}), {args.queries:,} held-out queries from the same"
          f" mixture, k={K}, {args.threads} FAISS threads")
    print(f"mixture: {args.components} components; centres = normalise({args.cone} * axis +"
          f" {np.sqrt(1 - args.cone**2):.2f} * uniform direction) (a cone around one shared axis); weights"
          f" Dirichlet({args.concentration}) (expected component sizes {sizes.min():.0f} .. {np.median(sizes):.0f}"
          f" (median) .. {sizes.max():.0f}); x = normalise(centre + s * noise), s ~ U[{args.spread_min},"
          f" {args.spread_max}] per component; noise: {1 - args.floor:.0%} of its variance along {args.rank} random"
          f" orthonormal directions of the component with variance ~ i^-{args.decay}, {args.floor:.0%} isotropic;"
          f" seed {args.seed}")
    queries, _ = mixture.draw(args.queries, 1, 0)
    exact = ExactTopK(queries, args.threads)
    config = config_for(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="ieiw-exemplar-bench-"))
    folder = work / "index"
    generate_s = append_s = 0.0
    try:
        with PeakRss() as building:
            writer = IndexWriter(folder, args.n, args.dim, config)
            for number, first in enumerate(range(0, args.n, args.chunk)):
                t = time.perf_counter()
                chunk, _ = mixture.draw(min(args.chunk, args.n - first), 0, number)
                generate_s += time.perf_counter() - t
                exact.add(chunk, first)
                t = time.perf_counter()
                writer.append(chunk)
                append_s += time.perf_counter() - t
                del chunk
                if number % 8 == 7:
                    print(f"  streamed {first + args.chunk:,} vectors ({time.perf_counter() - started:.0f} s)", flush=True)
            image_ids = pc.cast(pa.array(np.arange(args.n, dtype=np.int64) // OBJECTS_PER_IMAGE), pa.string())
            meta = {"image_id": image_ids, "record_id": pc.cast(pa.array(np.arange(args.n, dtype=np.int64)), pa.string())}
            t = time.perf_counter()
            index = writer.finish(meta)
            finish_s = time.perf_counter() - t
            del image_ids, meta
        manifest = index.manifest()
        seconds = manifest["seconds"]
        disk = sum(p.stat().st_size for p in folder.iterdir())
        store_bytes = (folder / "vectors.npy").stat().st_size
        shard_bytes = sum((folder / name).stat().st_size for name in manifest["shards"])
        index.search(queries[:16], K)  # warm-up
        times = []
        with PeakRss() as searching:
            for _ in range(args.repeat):
                t = time.perf_counter()
                _, rows = index.search(queries, K)
                times.append(time.perf_counter() - t)
            query_images = [str((row * 7919) % args.n // OBJECTS_PER_IMAGE) for row in range(args.queries)]
            t = time.perf_counter()
            matches = index.query(queries, query_images, k=K)
            query_s = time.perf_counter() - t
        held = rss()
        search_s = float(np.median(times))
        exact_qps = args.queries / exact.seconds
        recall = recall_at_10(rows, exact.rows)
        # query() excludes the query's own image and near-duplicates: compare with the exact top-10 under the
        # same exclusions, taken from an exact top-(10 + 8) (at most 8 objects of one image)
        sweep = {}
        for nprobe in sorted({max(1, index.nprobe // 4), max(1, index.nprobe // 2), index.nprobe, 2 * index.nprobe,
                              4 * index.nprobe}):
            if nprobe > index.nlist:
                continue
            t = time.perf_counter()
            _, found = index.search(queries, K, nprobe=nprobe)
            sweep[nprobe] = (recall_at_10(found, exact.rows), time.perf_counter() - t)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    total_s = time.perf_counter() - started
    calibration = manifest["calibration"]
    name = (f"IVF{index.nlist},PQ{index.m}x{config.nbits}{'fs' if config.nbits == 4 else ''}"
            + (f" + re-rank x{index.refine:g} from the float16 store" if index.refine else ""))
    print(f"index: {name}; {len(manifest['shards'])} shard(s); trained on {manifest['train_rows']:,} vectors"
          f" ({manifest['train_rows'] / index.nlist:.0f} a centroid)")
    print(f"calibrated: nprobe {calibration['nprobe']}, refine {calibration['refine']} (recall@{calibration['k']}"
          f" {calibration['recall']:.3f} on {calibration['queries']} held-out store vectors, target"
          f" {calibration['target']}, {'reached' if calibration['reached'] else 'NOT reached'}); sweep (nprobe,"
          f" refine: recall): " + ", ".join(f"{s['nprobe']},{s['refine']:g}: {s['recall']:.3f}" if s["refine"]
                                            else f"{s['nprobe']}: {s['recall']:.3f}" for s in calibration["sweep"]))
    rows_out = [
        ("generate vectors (not the index's cost)", f"{generate_s:.0f} s"),
        ("exact baseline (IndexFlatIP per chunk, all queries)", f"{exact.seconds:.0f} s"),
        ("store: normalise + float16 + write", f"{append_s:.0f} s"),
        ("train (k-means + PQ)", f"{seconds['train']:.0f} s"),
        ("add (assign + encode), all shards", f"{seconds['add']:.0f} s"),
        ("calibrate nprobe (one exact pass over the store)", f"{seconds['calibrate']:.0f} s"),
        ("index build total (store + finish)", f"{append_s + finish_s:.0f} s"),
        ("disk: store / shards / all", f"{gb(store_bytes)} / {gb(shard_bytes)} / {gb(disk)}"),
        ("peak RSS, whole run (ru_maxrss)", gb(peak_rss())),
        ("peak RSS sampled: streaming + build / queries", f"{gb(building.peak)} / {gb(searching.peak)}"),
        ("RSS held after the queries", gb(held)),
        ("exact queries/s", f"{exact_qps:,.1f}"),
        (f"search k=10 queries/s (nprobe {index.nprobe})", f"{args.queries / search_s:,.0f}"),
        ("query() k=10 with exclusions, queries/s", f"{args.queries / query_s:,.0f}"),
        ("recall@10 vs exact (search)", f"{recall:.3f}"),
        ("speed-up over exact (search)", f"{exact_qps and (args.queries / search_s) / exact_qps:.1f}x"),
    ]
    width = max(len(r[0]) for r in rows_out)
    for label, value in rows_out:
        print(f"  {label:<{width}}  {value}")
    print("nprobe sweep (search k=10): recall@10 / speed-up over exact")
    for nprobe, (value, secs) in sweep.items():
        print(f"  nprobe {nprobe:<5} {value:.3f} / {(args.queries / secs) / exact_qps:6.1f}x")
    found_query = np.array([[m.row for m in ms] + [-1] * (K - len(ms)) for ms in matches])
    print(f"  query() results: {int((found_query >= 0).sum())} of {K * args.queries} slots filled")
    print(f"per vector: build {1e6 * (append_s + finish_s) / args.n:.1f} us (add {1e6 * seconds['add'] / args.n:.1f}"
          f" us at nlist {index.nlist}), disk {disk / args.n:.0f} B, shards in RAM {shard_bytes / args.n:.0f} B")
    met = recall >= 0.9 and (args.queries / search_s) >= 20 * exact_qps and peak_rss() < 8 * 2**30
    print(f"goal (recall@10 >= 0.9 at >= 20x exact, peak RSS < 8 GB): {'met' if met else 'NOT met'};"
          f" whole bench {total_s:.0f} s")


if __name__ == "__main__":
    main()
