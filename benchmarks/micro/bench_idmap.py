"""Throughput and memory of the compiled id map (``IdMap``) against the Python dict path.

Run: ``python benchmarks/micro/bench_idmap.py [--n 1000000] [--repeats 5]``.  A plain
script (not collected by pytest): it prints one table.

The dict path is what ``binidx._storage.VectorStore`` did before ``IdMap``:

* build / insert: ``dict(zip(ids.tolist(), slots.tolist()))``;
* lookup: ``np.fromiter((get(i, -1) for i in ids.tolist()), ...)``;
* remove: ``for i in ids.tolist(): del d[i]``.

Ids are ``n`` distinct random values below 2**40 (and, in a second block, ``0..n-1``);
lookups and removals visit them in a random order.  Every timing is the median of
``--repeats`` runs on fresh copies, in one process, so the ratios compare like with
like; the machine may be shared, so the load average is printed with the table.
Memory: ``IdMap.nbytes`` (its whole allocation) against what tracemalloc sees the dict
keep (the dict plus its int objects, once the temporary lists are gone).
"""
from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from statistics import median

import numpy as np
from binidx._kernels._idmap import IdMap


def timed(setup, run, repeats: int) -> float:
    """Median seconds of ``run(setup())`` (``setup`` is not timed)."""
    times = []
    for _ in range(repeats):
        state = setup()
        t0 = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - t0)
        del state
    return median(times)


def dict_build(ids: np.ndarray, slots: np.ndarray) -> dict[int, int]:
    return dict(zip(ids.tolist(), slots.tolist()))


def dict_lookup(d: dict[int, int], ids: np.ndarray) -> np.ndarray:
    get = d.get
    return np.fromiter((get(i, -1) for i in ids.tolist()), dtype=np.int64, count=ids.shape[0])


def dict_remove(d: dict[int, int], ids: np.ndarray) -> None:
    for i in ids.tolist():
        del d[i]


def idmap_insert_batches(ids: np.ndarray, slots: np.ndarray, batch: int) -> IdMap:
    m = IdMap()
    for start in range(0, ids.shape[0], batch):
        m.insert(ids[start:start + batch], slots[start:start + batch])
    return m


def idmap_remove_batches(m: IdMap, ids: np.ndarray, batch: int) -> None:
    for start in range(0, ids.shape[0], batch):
        m.remove(ids[start:start + batch])


def dict_bytes(ids: np.ndarray, slots: np.ndarray) -> int:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    d = dict_build(ids, slots)
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del d
    return kept


def bench(ids: np.ndarray, repeats: int, batch: int) -> list[tuple[str, float, float]]:
    """Rows (operation, dict seconds or nan, IdMap seconds) for one id set."""
    rng = np.random.default_rng(1)
    n = ids.shape[0]
    slots = rng.permutation(n).astype(np.int64)
    order = rng.permutation(ids)  # lookups / removals in random order
    rows = []
    t_dict = timed(lambda: None, lambda _: dict_build(ids, slots), repeats)
    rows.append(("build (from_arrays)", t_dict,
                 timed(lambda: None, lambda _: IdMap.from_arrays(ids, slots), repeats)))
    rows.append((f"insert, batches of {batch:,}", t_dict,
                 timed(lambda: None, lambda _: idmap_insert_batches(ids, slots, batch), repeats)))
    built = (dict_build(ids, slots), IdMap.from_arrays(ids, slots))
    rows.append(("lookup", timed(lambda: built[0], lambda s: dict_lookup(s, order), repeats),
                 timed(lambda: built[1], lambda s: s.lookup(order), repeats)))
    built = None
    t_dict = timed(lambda: dict_build(ids, slots), lambda s: dict_remove(s, order), repeats)
    rows.append(("remove all, one call", t_dict,
                 timed(lambda: IdMap.from_arrays(ids, slots), lambda s: s.remove(order),
                       repeats)))
    rows.append((f"remove all, batches of {batch:,}", t_dict,
                 timed(lambda: IdMap.from_arrays(ids, slots),
                       lambda s: idmap_remove_batches(s, order, batch), repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="ids in the map")
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing (median)")
    parser.add_argument("--batch", type=int, default=1000, help="ids per call, batched rows")
    args = parser.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    sets = {
        "random ids < 2**40": np.sort(rng.choice(2**40, n, replace=False)).astype(np.int64),
        "sequential ids": np.arange(n, dtype=np.int64),
    }
    print(f"n = {n:,} ids, median of {args.repeats}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, 1 thread")
    print(f"{'':<34}{'dict ids/s':>14}{'IdMap ids/s':>14}{'ratio':>8}")
    for name, ids in sets.items():
        print(name)
        for op, t_dict, t_map in bench(ids, args.repeats, args.batch):
            print(f"  {op:<32}{n / t_dict:>14,.0f}{n / t_map:>14,.0f}{t_dict / t_map:>7.1f}x")
    ids = sets["random ids < 2**40"]
    slots = np.arange(n, dtype=np.int64)
    m = IdMap.from_arrays(ids, slots)
    kept = dict_bytes(ids, slots)
    print(f"memory for {n:,} ids: dict {kept / 2**20:,.1f} MiB ({kept / n:.0f} B/id), "
          f"IdMap {m.nbytes / 2**20:,.1f} MiB ({m.nbytes / n:.0f} B/id), "
          f"capacity {m.capacity:,} cells at {len(m) / m.capacity:.0%} load")
    m.remove(ids[: n - n // 100])
    print(f"after removing 99%: IdMap {m.nbytes / 2**20:,.2f} MiB, "
          f"capacity {m.capacity:,} cells at {len(m) / m.capacity:.0%} load")


if __name__ == "__main__":
    main()
