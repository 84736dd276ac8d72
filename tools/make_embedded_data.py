"""Make the small real datasets shipped inside the binidx package (``binidx/data/``).

Two deterministic subsets of the development sets in ``../shared/data``:

* ``sift-20k``: the first 20,000 base and the first 200 query SIFT descriptors of
  ``dev-sift`` (uint8, 128-d, stored as ``.bvecs``; metric l2).
* ``text-5k``: the first 5,000 base and the first 100 query sentence embeddings of
  ``dev-text`` (384-d, metric cosine).  They are stored as **float16** ``.npy`` to keep the
  package small (3.8 MB instead of 7.7 MB); the loaders widen them to float32 and the
  ground truth below is computed on exactly those widened values, so it is exact for the
  data as shipped.

Both source files list their vectors in random draw order (see their READMEs), so a
prefix is a uniform random sample; taking prefixes keeps the subsets trivially
reproducible.  The exact top-100 ground truth of each subset is recomputed here by
float64 brute force (not with binidx, which these files are used to test), ties broken
by the smaller id, and stored with the distances of the neighbours (squared L2 for l2,
cosine similarity for cosine).  ``manifest.json`` records shapes, metric, source and the
sha256 of every file.

Usage::

    python tools/make_embedded_data.py [--shared ../shared/data] [--out binidx/data]

Running it twice gives byte-identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from binidx.vecio import read_vectors, write_vectors

GT_K = 100

# name -> (source folder, base file, query file, n_base, n_query, metric, storage)
SUBSETS = {
    "sift-20k": ("dev-sift", "base.bvecs", "query.bvecs", 20_000, 200, "l2", "bvecs"),
    "text-5k": ("dev-text", "base.fvecs", "query.fvecs", 5_000, 100, "cosine", "float16"),
}


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k in float64: ids (nq, k) int32 and distances (nq, k) float64.

    l2 uses explicit differences (no ||x||^2 - 2xy + ||y||^2 cancellation); cosine
    normalises both sides in float64.  Ties are broken by the smaller id.
    """
    x = base.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = np.empty((len(q), k), np.int32)
    dist = np.empty((len(q), k), np.float64)
    all_ids = np.arange(len(x))
    for row, v in enumerate(q):
        if metric == "l2":
            diff = x - v
            key = np.einsum("ij,ij->i", diff, diff)
        else:
            key = -(x @ v)
        order = np.lexsort((all_ids, key))[:k]   # primary: key, then id
        ids[row] = order
        dist[row] = key[order] if metric == "l2" else -key[order]
    return ids, dist


def make_subset(name: str, shared: Path, out: Path) -> dict:
    folder, base_file, query_file, n_base, n_query, metric, storage = SUBSETS[name]
    base = np.array(read_vectors(shared / folder / base_file, max_rows=n_base))
    queries = np.array(read_vectors(shared / folder / query_file, max_rows=n_query))
    if base.shape[0] != n_base or queries.shape[0] != n_query:
        raise SystemExit(f"{shared / folder} holds fewer vectors than {name} needs")
    files = {}
    if storage == "bvecs":
        files["base"], files["query"] = f"{name}.base.bvecs", f"{name}.query.bvecs"
        write_vectors(out / files["base"], base)
        write_vectors(out / files["query"], queries)
        # What the loader will see: the uint8 values widened to float32 (exact).
        base_f, queries_f = base.astype(np.float32), queries.astype(np.float32)
    else:
        base_h, queries_h = base.astype(np.float16), queries.astype(np.float16)
        files["base"], files["query"] = f"{name}.base.npy", f"{name}.query.npy"
        write_vectors(out / files["base"], base_h)
        write_vectors(out / files["query"], queries_h)
        base_f, queries_f = base_h.astype(np.float32), queries_h.astype(np.float32)
    gt_ids, gt_dist = brute_force(base_f, queries_f, GT_K, metric)
    files["groundtruth"] = f"{name}.groundtruth.ivecs"
    files["groundtruth_distances"] = f"{name}.groundtruth_distances.fvecs"
    write_vectors(out / files["groundtruth"], gt_ids)
    write_vectors(out / files["groundtruth_distances"], gt_dist.astype(np.float32))
    return {
        "metric": metric,
        "dim": int(base.shape[1]),
        "n_base": n_base,
        "n_queries": n_query,
        "k": GT_K,
        "source": f"../shared/data/{folder}: first {n_base} of {base_file}, "
                  f"first {n_query} of {query_file}",
        "stored_as": "uint8 .bvecs" if storage == "bvecs" else
                     "float16 .npy (rounded from float32; ground truth on the rounded values)",
        "distances": "squared L2" if metric == "l2" else "cosine similarity",
        "files": files,
        "sha256": {key: hashlib.sha256((out / f).read_bytes()).hexdigest()
                   for key, f in files.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding dev-sift/ and dev-text/")
    parser.add_argument("--out", type=Path, default=REPO / "binidx" / "data")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {name: make_subset(name, args.shared, args.out) for name in SUBSETS}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    (args.out / "manifest.json").write_text(text)
    total = sum(os.path.getsize(args.out / f) for m in manifest.values() for f in m["files"].values())
    print(f"wrote {len(manifest)} datasets ({total / 1e6:.1f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
