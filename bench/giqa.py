"""KNN-GIQA at reference-set scale: the approximate index against exact search, measured in one run.

Reference vectors come from a Gaussian mixture (real embeddings cluster; uniform noise would make any
approximate index look bad for the wrong reason). Queries are held out from the same mixture. The exact
baseline is FAISS ``IndexFlat(METRIC_L1)``, which computes the same numbers as the GIQA code's NumPy
brute force (tests/test_quality.py checks that) but faster, so the speed-up below is conservative.

Prints the Spearman rank correlation of the IVF scores with the exact ones (goal >= 0.98) and the query
speed-up (goal >= 10x), with every parameter.

    python bench/giqa.py [--reference 200000] [--queries 2000] [--dim 256] [--nprobe 16]
"""

from __future__ import annotations

import argparse
import os
import time

import faiss
import numpy as np
from scipy.stats import spearmanr

from ieiw.filters.giqa import EPSILON, build_index


def mixture(count: int, dim: int, clusters: int, spread: float, rng: np.random.Generator,
            centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(0, 1, (clusters, dim)).astype(np.float32) if centres is None else centres
    points = centres[rng.integers(0, clusters, count)] + rng.normal(0, spread, (count, dim)).astype(np.float32)
    return np.ascontiguousarray(points, dtype=np.float32), centres


def giqa(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    distances, _ = index.search(queries, k)
    elapsed = time.perf_counter() - start
    return (1.0 / np.maximum(distances, EPSILON)).sum(axis=1), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=256, help="e.g. Inception pool3 after PCA(0.95)")
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--spread", type=float, default=2.0, help="cluster spread; 2.0: clusters overlap")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--k", type=int, default=1)
    args = parser.parse_args()
    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    rng = np.random.default_rng(0)
    reference, centres = mixture(args.reference, args.dim, args.clusters, args.spread, rng)
    queries, _ = mixture(args.queries, args.dim, args.clusters, args.spread, rng, centres)
    print(f"reference {args.reference} x {args.dim} from a {args.clusters}-component Gaussian mixture"
          f" (unit-normal centres, spread {args.spread}); {args.queries} held-out queries; k={args.k};"
          f" {faiss.omp_get_max_threads()} threads")

    start = time.perf_counter()
    exact = build_index(reference, exact_below=args.reference + 1)
    exact_build = time.perf_counter() - start
    start = time.perf_counter()
    approx = build_index(reference, exact_below=1)
    approx_build = time.perf_counter() - start
    approx.nprobe = args.nprobe

    exact_scores, exact_s = giqa(exact, queries, args.k)
    approx_scores, approx_s = giqa(approx, queries, args.k)
    rho = spearmanr(exact_scores, approx_scores).statistic
    same_nn = float(np.mean(np.isclose(exact_scores, approx_scores, rtol=1e-5)))
    print(f"exact  IndexFlat(L1):              build {exact_build:6.2f} s, {args.queries / exact_s:8.0f} queries/s")
    print(f"approx IndexIVFFlat(L1) nlist={approx.nlist} nprobe={args.nprobe}: build {approx_build:6.2f} s,"
          f" {args.queries / approx_s:8.0f} queries/s")
    print(f"Spearman(approx, exact) = {rho:.4f} (goal >= 0.98); same score as exact for {same_nn:.1%} of queries")
    print(f"speed-up = {exact_s / approx_s:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
