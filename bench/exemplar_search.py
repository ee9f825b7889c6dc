"""The exemplar index at object-database scale: IVF-PQ (+ exact re-ranking) against the flat index, one run.

Database vectors come from a Gaussian mixture on the unit sphere, the shape of real image embeddings:
clustered, each cluster spread mostly along a few directions of its own (a low-rank covariance with a
decaying spectrum, plus a small isotropic floor), clusters of unequal sizes. Uniform noise, or isotropic
clusters in the full 768 dimensions, have no neighbour structure worth finding and make any approximate
index look bad for the wrong reason (docs/environment.md). Queries are held out: fresh draws from the same
mixture. Every parameter of the mixture is printed.

Each index is built and searched in its own subprocess (``ExemplarIndex.build`` with the config's
defaults, kind forced to flat / ivfpq), with FAISS on 2 threads, so the peak memory of each is measured
on its own: process RSS sampled every 10 ms, minus the RSS once the vectors are in memory. Printed side by
side: build (train + add) time, peak and held memory, query throughput and the speed-up, and recall@10
(share of the flat index's top-10 found in the IVF-PQ top-10), both for raw k-NN (``ExemplarIndex.search``)
and for ``ExemplarIndex.query`` with its exclusions (own image, similarity ceiling). Goal: recall@10 >= 0.9
at >= 20x the flat index's query speed.

    python bench/exemplar_search.py [--n 1000000] [--dim 768] [--queries 1000] [--components 2000]
                                    [--nprobe N] [--nlist N] [--m M] [--refine F] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ieiw.builders.exemplars import ExemplarIndex, ExemplarIndexConfig  # noqa: E402

OBJECTS_PER_IMAGE = 8
CHUNK = 65_536


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


def draw(args: argparse.Namespace, spec: dict, count: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` unit vectors from the mixture and their components; ``stream`` 0: database, 1: queries."""
    rng = np.random.default_rng([args.seed, 2, stream])
    labels = rng.choice(args.components, size=count, p=spec["weights"])
    out = np.empty((count, args.dim), np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(args.components + 1))
    scale = np.sqrt((1 - args.floor) * spec["spectrum"]).astype(np.float32)
    for component in range(args.components):
        rows = order[bounds[component]:bounds[component + 1]]
        if not len(rows):
            continue
        centre, basis = component_frame(args, component)
        spread = np.float32(spec["spreads"][component])
        local = np.random.default_rng([args.seed, 3, stream, component])
        noise = (local.standard_normal((len(rows), args.rank), dtype=np.float32) * scale) @ basis
        noise += local.standard_normal((len(rows), args.dim), dtype=np.float32) * np.float32(
            np.sqrt(args.floor / args.dim))
        out[rows] = centre + spread * noise
    for start in range(0, count, CHUNK):
        block = out[start:start + CHUNK]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out, labels


# -- one index in its own process ------------------------------------------------------------------------
def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Peak process RSS while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRss:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def config_for(args: argparse.Namespace, kind: str) -> ExemplarIndexConfig:
    fields = {"kind": kind, "threads": args.threads}
    if kind == "ivfpq":
        for name in ("nlist", "m", "nprobe", "train_size"):
            if getattr(args, name) is not None:
                fields[name] = getattr(args, name)
        if args.refine is not None:
            fields["refine"] = None if args.refine == 0 else args.refine
    return ExemplarIndexConfig(**fields)


def worker(args: argparse.Namespace) -> None:
    folder = Path(args.result).parent
    vectors = np.load(folder / "database.npy")
    queries = np.load(folder / "queries.npy")
    meta = {"image_id": [str(row // OBJECTS_PER_IMAGE) for row in range(args.n)],
            "record_id": [str(row) for row in range(args.n)]}
    query_images = [str((row * 7919) % args.n // OBJECTS_PER_IMAGE) for row in range(args.queries)]
    config = config_for(args, args.worker)
    base = rss()
    start = time.perf_counter()
    with PeakRss() as building:
        index = ExemplarIndex.build(vectors, meta, config)
    build_s = time.perf_counter() - start
    held = rss() - base
    index.search(queries[:16], 10)  # warm-up
    times = []
    with PeakRss() as searching:
        for _ in range(args.repeat):
            start = time.perf_counter()
            sims, rows = index.search(queries, 10)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        matches = index.query(queries, query_images, k=10)
        query_s = time.perf_counter() - start
    sweep = {}
    if index.kind == "ivfpq" and config.refine is not None:
        for nprobe in (8, 16, 32, 64):
            for factor in (2, 4, 8, 16):
                if nprobe > index.nlist:
                    continue
                sweep_config = config.model_copy(update={"refine": float(factor), "nprobe": nprobe})
                probe = copy.copy(index)  # the same FAISS index, other query-time settings
                probe.config = sweep_config
                start = time.perf_counter()
                _, found = probe.search(queries, 10)
                sweep[f"{nprobe},{factor}"] = (time.perf_counter() - start, found)
    out = Path(args.result)
    np.savez(out, rows=rows, sims=sims, matches=np.array([[m.row for m in ms] + [-1] * (10 - len(ms))
                                                          for ms in matches]),
             **{f"sweep:{key}": found for key, (_, found) in sweep.items()})
    out.with_suffix(".json").write_text(json.dumps({
        "build_s": build_s, "search_s": float(np.median(times)), "query_s": query_s,
        "build_peak": building.peak - base, "held": held, "search_peak": searching.peak - base,
        "nlist": index.nlist if index.kind == "ivfpq" else None, "m": index.m, "nbits": config.nbits,
        "nprobe": config.nprobe, "refine": config.refine, "train_size": config.train_size,
        "kind": index.kind, "sweep": {key: seconds for key, (seconds, _) in sweep.items()}}))


def run_worker(args: argparse.Namespace, kind: str, folder: Path) -> tuple[dict, dict]:
    result = folder / f"{kind}.npz"
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", kind, "--result", str(result)]
    subprocess.run(command, check=True)
    with np.load(result) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, json.loads(result.with_suffix(".json").read_text())


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(f[f >= 0].tolist()) & set(e[e >= 0].tolist())) / max(1, int((e >= 0).sum()))
            for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def gb(value: float) -> str:
    return f"{value / 2**30:6.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    parser.add_argument("--dim", type=int, default=768, help="e.g. CLIP ViT-L/14 image embeddings")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries")
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
    parser.add_argument("--repeat", type=int, default=3, help="searches timed per index (median)")
    parser.add_argument("--nlist", type=int)
    parser.add_argument("--m", type=int)
    parser.add_argument("--nprobe", type=int)
    parser.add_argument("--refine", type=float, help="IndexRefineFlat k_factor; 0: none")
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--worker", choices=["flat", "ivfpq"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    spec = mixture_spec(args)
    sizes = spec["weights"] * args.n  # expected component sizes
    print(f"database {args.n:,} x {args.dim} float32 (unit norm, {args.n * args.dim * 4 / 2**30:.2f} GB),"
          f" {args.queries:,} held-out queries from the same mixture, k=10, {args.threads} FAISS threads")
    print(f"mixture: {args.components} components; centres = normalise({args.cone} * axis +"
          f" {np.sqrt(1 - args.cone**2):.2f} * uniform direction) (a cone around one shared axis); weights"
          f" Dirichlet({args.concentration}) (expected component sizes {sizes.min():.0f} .. {np.median(sizes):.0f}"
          f" (median) .. {sizes.max():.0f}); x = normalise(centre + s * noise), s ~ U[{args.spread_min},"
          f" {args.spread_max}] per component; noise: {1 - args.floor:.0%} of its variance along {args.rank} random"
          f" orthonormal directions of the component with variance ~ i^-{args.decay}, {args.floor:.0%} isotropic;"
          f" seed {args.seed}")
    with tempfile.TemporaryDirectory(prefix="ieiw-exemplar-bench-") as tmp:
        start = time.perf_counter()
        vectors, members = draw(args, spec, args.n, 0)
        queries, _ = draw(args, spec, args.queries, 1)
        generate_s = time.perf_counter() - start
        centres = np.stack([component_frame(args, c)[0] for c in members[:2000]])
        pairs = min(1000, args.n // 2)
        print(f"  cosine to own centre: mean {np.mean(np.sum(vectors[:2000] * centres, axis=1)):.3f}; between"
              f" random pairs: mean {np.mean(np.sum(vectors[:pairs] * vectors[pairs:2 * pairs], axis=1)):.3f};"
              f" generated in {generate_s:.0f} s")
        np.save(Path(tmp) / "database.npy", vectors)
        np.save(Path(tmp) / "queries.npy", queries)
        del vectors, members, queries
        flat, flat_info = run_worker(args, "flat", Path(tmp))
        ivf, ivf_info = run_worker(args, "ivfpq", Path(tmp))
    exact, approx = flat["rows"], ivf["rows"]
    print(f"  exact neighbours: top-1 cosine mean {np.mean(flat['sims'][:, 0]):.3f}, 10th mean"
          f" {np.mean(flat['sims'][:, 9]):.3f}")
    recall = recall_at_10(approx, exact)
    recall_query = recall_at_10(ivf["matches"], flat["matches"])
    speedup = flat_info["search_s"] / ivf_info["search_s"]
    refine = ivf_info["refine"]
    name = (f"IVF{ivf_info['nlist']},PQ{ivf_info['m']}x{ivf_info['nbits']}{'fs' if ivf_info['nbits'] == 4 else ''}"
            + (f" + RefineFlat({refine:g})" if refine else ""))
    print(f"IVF-PQ (ExemplarIndexConfig defaults unless flags): nlist={ivf_info['nlist']} nprobe={ivf_info['nprobe']}"
          f" m={ivf_info['m']} nbits={ivf_info['nbits']} refine k_factor={refine}"
          f" train sample={min(args.n, ivf_info['train_size']):,}")
    rows = [
        ("", "flat (IndexFlatIP)", name),
        ("build (train + add)", f"{flat_info['build_s']:.1f} s", f"{ivf_info['build_s']:.1f} s"),
        ("peak RSS during build, over inputs", gb(flat_info["build_peak"]), gb(ivf_info["build_peak"])),
        ("RSS held by the index", gb(flat_info["held"]), gb(ivf_info["held"])),
        ("peak RSS during queries, over inputs", gb(flat_info["search_peak"]), gb(ivf_info["search_peak"])),
        ("search k=10, queries/s", f"{args.queries / flat_info['search_s']:,.1f}",
         f"{args.queries / ivf_info['search_s']:,.0f}"),
        ("query() k=10 with exclusions, q/s", f"{args.queries / flat_info['query_s']:,.1f}",
         f"{args.queries / ivf_info['query_s']:,.0f}"),
        ("recall@10 vs flat (search)", "1.000", f"{recall:.3f}"),
        ("recall@10 vs flat (query())", "1.000", f"{recall_query:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, left, right in rows:
        print(f"  {label:<{width}}  {left:>20}  {right:>36}")
    if ivf_info["sweep"]:
        print("IVF-PQ query-time settings on the same index (search k=10): recall@10 / speed-up over flat")
        factors = sorted({int(key.split(",")[1]) for key in ivf_info["sweep"]})
        print("  " + "nprobe \\ k_factor".ljust(20) + "".join(f"{f:>18}" for f in factors))
        for nprobe in sorted({int(key.split(",")[0]) for key in ivf_info["sweep"]}):
            cells = []
            for factor in factors:
                key = f"{nprobe},{factor}"
                ratio = flat_info["search_s"] / ivf_info["sweep"][key]
                cells.append(f"{recall_at_10(ivf['sweep:' + key], exact):.3f} / {ratio:5.0f}x")
            print("  " + str(nprobe).ljust(20) + "".join(f"{c:>18}" for c in cells))
    print(f"(RSS: the worker process's, over its RSS with the {args.n * args.dim * 4 / 2**30:.2f} GB of input vectors"
          " and the metadata loaded; query() searches k' >= 42 candidates to allow for its exclusions, so it"
          " re-ranks more of them than search(k=10))")
    print(f"speed-up (search) = {speedup:.1f}x, recall@10 = {recall:.3f}"
          f" (goal: recall >= 0.9 at >= 20x: {'met' if recall >= 0.9 and speedup >= 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
