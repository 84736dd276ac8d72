"""``Index.tune``: choose n_probe / n_rerank / probe_ratio for a target recall, measured.

Ground truth is exact search over the vectors the index holds.  Every candidate setting
is measured (recall and single-thread speed) on the tuning queries, and the fastest one
that meets the target wins.  Timing uses the calling thread's CPU time, which a busy
machine disturbs far less than wall time.

The settings are walked in three passes, each a ladder of n_probe values; at every
n_probe the smallest n_rerank that reaches the target is looked for (next paragraph):

1. fixed probing (``probe_ratio=None``) over n_probe = 1, 2, 4, ... until more probes
   only get slower;
2. fixed probing again over the finer ladder (steps of 2^(1/4), ~19%) between the last
   power of two that missed the target and the first that met it: a doubling ladder
   alone hides differences smaller than 2x;
3. adaptive probing for each ratio of ``RATIOS``, largest first, where n_probe is a cap
   a query may stop short of: the caps start at the fewest probes that met the target
   (fixed, then the previous ratio's), climb the fine ladder, and end when more only get
   slower or at ``MAX_CAP_FACTOR`` times the fixed winner's n_probe.

The n_rerank ladder runs from k to 128 k in the same fine steps (k = 10: 10, 12, 14, 17,
20, ..., 80, 95, 113, 135, 160, ...).  At each n_probe it climbs by doublings (every
``STEPS_PER_DOUBLING``-th step) to the first n_rerank that meets the target, then bisects
the fine steps between the last miss and that hit (two more trials): the smallest that
meets is the n_probe's setting, since recall and time both grow with n_rerank.  Doublings
alone overshoot by up to 2x: on dev-sift 80 missed and 160 met where the benchmark
suite's best was 120.  Recall also grows with n_probe, so more probes never need a larger
n_rerank: the next n_probe's climb starts one doubling below the last answer and never
goes below that (a hit there is taken without bisecting).  A climb stops when a doubling
adds less than 0.002 recall (only more probes help), or at a miss already slower than a
setting that meets (more n_rerank only costs more; at the climb's first step more probes
would too, so the walk ends).

Passes 2 and 3 use the same fine ladder, so adaptive probing is compared with fixed
probing at the same resolution and wins only when it is measured faster.  Settings that
miss the target are timed once.  At the end the ``CONFIRM_CANDIDATES`` fastest settings
that meet the target are timed again in ``CONFIRM_ROUNDS`` interleaved rounds and the best
median wins: single timings of settings a few percent apart let the machine's load pick
(the benchmark suite's confirm phase, in small).  On dev-sift (200k SIFT, 512 lists,
1,000 queries) tune takes 61-96 trials, 5-10 s of CPU time (doublings alone: 59-70
trials, 4-8 s).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from ._exact import exact_search

RATIOS = (1.6, 1.8, 2.0)
"""Adaptive-probing ratios tried (typical good values on SIFT and text embeddings)."""

MAX_CAP_FACTOR = 2.0
"""Largest n_probe cap tried with a ratio, relative to the fixed winner's n_probe (a
ratio that needs more buckets than this visits about as many as fixed probing)."""

STEPS_PER_DOUBLING = 4
"""Fine steps per doubling, for n_probe and n_rerank alike."""

FINE_STEP = 2 ** (1 / STEPS_PER_DOUBLING)
"""Ratio between neighbouring values of the fine ladders (~19%)."""

CONFIRM_CANDIDATES = 4
"""The fastest settings that meet the target re-timed at the end (see ``confirm``)."""

CONFIRM_ROUNDS = 5
"""Interleaved rounds of that re-timing; 0 keeps the walk's own timings."""

SLOWER = 0.85
"""A setting that misses the target and runs below this share of the fastest one that
meets it (timed once, so with some slack for noise) ends its n_rerank ladder."""


class TuneResult(NamedTuple):
    """What :meth:`binidx.Index.tune` chose and measured.

    Attributes
    ----------
    n_probe, n_rerank : int
        The chosen setting, now the index defaults.  With a ``probe_ratio``, ``n_probe``
        is the most buckets a query visits.
    recall : float
        Recall@k it reached on the tuning queries (exact ground truth, ties allowed).
    queries_per_second : float
        Single-thread throughput measured for it (CPU time of the calling thread; the
        median of the final re-timing rounds when there were several candidates).
    met_target : bool
        False when no setting reached the target; the most accurate one was chosen.
    trials : list of dict
        Every setting tried: n_probe, n_rerank, probe_ratio, recall, queries_per_second;
        the few fastest that met the target, re-timed at the end, also carry
        confirmed_queries_per_second.
    probe_ratio : float or None
        The chosen adaptive-probing ratio (None: every query visits n_probe buckets),
        now the index default :attr:`binidx.Index.probe_ratio`.
    """

    n_probe: int
    n_rerank: int
    recall: float
    queries_per_second: float
    met_target: bool
    trials: list
    probe_ratio: float | None = None


def tie_aware_recall(found_ids: np.ndarray, found_d: np.ndarray, true_d: np.ndarray,
                     k: int, larger_is_better: bool) -> float:
    """Share of the k returned neighbours at least as close as the true k-th neighbour.

    ``found_d`` are exact distances (binidx reranks exactly), so comparing them with the
    true k-th distance counts a tied neighbour as correct.
    """
    kth = true_d[:, k - 1:k]
    eps = 1e-5 * np.maximum(1.0, np.abs(kth))
    ok = (found_d[:, :k] >= kth - eps) if larger_is_better else (found_d[:, :k] <= kth + eps)
    ok &= found_ids[:, :k] >= 0
    return float(ok.mean())


def fine_ladder(lo: int, hi: int) -> list[int]:
    """n_probe values in [lo, hi], about ``FINE_STEP`` apart, both ends included.

    Examples
    --------
    >>> fine_ladder(32, 64)
    [32, 38, 45, 54, 64]
    """
    values = {lo, hi}
    value = float(lo)
    while value < hi:
        values.add(min(hi, round(value)))
        value *= FINE_STEP
    return sorted(v for v in values if lo <= v <= hi)


def tune(index, queries: np.ndarray, target_recall: float, k: int, max_queries: int = 1000,
         seed: int = 0) -> TuneResult:
    rng = np.random.default_rng(seed)
    if queries.shape[0] > max_queries:
        queries = queries[np.sort(rng.choice(queries.shape[0], max_queries, replace=False))]
    live = np.sort(index.ids())
    vectors = index.get(live)
    metric = "ip" if index.metric == "cosine" else index.metric  # both sides already unit length
    truth = exact_search(vectors, queries, k, metric=metric)
    larger = index.metric != "l2"
    n_lists = index.n_lists
    # n_rerank ladder: k to 128 k in fine steps; a doubling is STEPS_PER_DOUBLING positions.
    reranks = [round(k * FINE_STEP ** j) for j in range(7 * STEPS_PER_DOUBLING + 1)]

    def timed_search(n_probe: int, n_rerank: int, ratio: float | None):
        """(result, thread CPU seconds) of one single-thread search of the queries."""
        t0 = time.thread_time()
        # (inf: fixed probing, whatever the index default)
        res = index.search(queries, k, n_probe=n_probe, n_rerank=n_rerank, n_threads=1,
                           probe_ratio=math.inf if ratio is None else ratio)
        return res, time.thread_time() - t0

    def measure(n_probe: int, n_rerank: int, ratio: float | None) -> dict:
        # Timed twice (the faster run counts) only when it meets the target: only those
        # settings compete on speed.
        best = np.inf
        for _ in range(2):
            res, seconds = timed_search(n_probe, n_rerank, ratio)
            best = min(best, seconds)
            recall = tie_aware_recall(res.ids, res.distances, truth.distances, k, larger)
            if recall < target_recall:
                break
        return {"n_probe": n_probe, "n_rerank": n_rerank, "probe_ratio": ratio,
                "recall": recall, "queries_per_second": queries.shape[0] / max(best, 1e-9)}

    trials: list[dict] = []
    meeting: list[dict] = []

    def confirm(candidates: list[dict]) -> dict:
        """The fastest of the ``CONFIRM_CANDIDATES`` fastest meeting settings, re-timed.

        During the walk each setting is timed once or twice, at different moments, and
        the good ones lie within a few percent of each other: on dev-sift the pick
        changed from run to run with the machine's load.  Here the few fastest are timed
        again in ``CONFIRM_ROUNDS`` rounds, in a rotating order, and the best median
        wins.  Each gets ``confirmed_queries_per_second``; the winner's is reported."""
        ranked = sorted(candidates, key=lambda t: -t["queries_per_second"])[:CONFIRM_CANDIDATES]
        if len(ranked) < 2 or CONFIRM_ROUNDS < 1:
            return ranked[0]
        times: list[list[float]] = [[] for _ in ranked]
        for r in range(CONFIRM_ROUNDS):
            for j in range(len(ranked)):
                i = (j + r) % len(ranked)
                t = ranked[i]
                times[i].append(timed_search(t["n_probe"], t["n_rerank"], t["probe_ratio"])[1])
        for t, ts in zip(ranked, times):
            t["confirmed_queries_per_second"] = queries.shape[0] / max(float(np.median(ts)), 1e-9)
        return max(ranked, key=lambda t: t["confirmed_queries_per_second"])

    def fastest(*more: dict) -> float:
        return max((t["queries_per_second"] for t in meeting + list(more)), default=0.0)

    def smallest_rerank(n_probe: int, ratio: float | None, start: int,
                        met: list[dict]) -> tuple[dict | None, int, bool]:
        """The trial of the smallest n_rerank from position ``start`` of ``reranks`` on that
        meets the target at ``n_probe`` (None: none does), its position, and whether more
        probes are hopeless."""
        tried: dict[int, dict] = {}  # by n_rerank: for a small k positions repeat values

        def at(position: int) -> dict:
            n_rerank = reranks[position]
            if n_rerank not in tried:
                tried[n_rerank] = measure(n_probe, n_rerank, ratio)
                trials.append(tried[n_rerank])
            return tried[n_rerank]

        # Climb by doublings to the first n_rerank that meets the target.
        position, last_miss, previous = start, None, -1.0
        while True:
            trial = at(position)
            if trial["recall"] >= target_recall:
                break
            # A miss already slower than a setting that meets: more n_rerank or more
            # probes only cost more.  At this probe count's first n_rerank, stop the walk.
            if trial["queries_per_second"] < SLOWER * fastest(*met):
                return None, position, position == start
            # Stop when doubling n_rerank no longer adds recall (the true neighbours are
            # not in the probed buckets: only more probes help).  Not when one more
            # doubling "could not" reach the target by repeating the last gain: recall
            # climbs by shrinking steps over several doublings, and on sift-1m (1,024
            # lists) that rule stopped every ladder at n_rerank 20: tune returned recall
            # 0.72 for a target of 0.95.
            if trial["recall"] - previous < 0.002 or position == len(reranks) - 1:
                return None, position, False
            previous, last_miss = trial["recall"], position
            position = min(len(reranks) - 1, position + STEPS_PER_DOUBLING)
        # The doubling that crossed the target hides up to a factor 2 of n_rerank (on
        # dev-sift 80 missed, 160 met, 120 was the best): bisect the fine steps between the
        # last miss and the hit.  Recall and time both grow with n_rerank, so the smallest
        # that meets is this probe count's fastest.  (A hit at ``start`` is not bisected:
        # the ladder never goes below ``start``.)
        hit, low = position, last_miss
        while low is not None and hit - low > 1:
            middle = (low + hit) // 2
            trial = at(middle)
            if trial["recall"] >= target_recall:
                hit = middle
            elif trial["queries_per_second"] < SLOWER * fastest(*met, at(hit)):
                break  # the steps above this miss are slower still, the hit included
            else:
                low = middle
        return at(hit), hit, False

    def walk(ratio: float | None, probes: list[int], first_rerank: int = 0) -> list[dict]:
        """Walk ``probes`` upwards; at each, the smallest n_rerank (at or above position
        ``first_rerank`` of ``reranks``) that meets the target.  Returns this walk's
        meeting trials, one per n_probe."""
        met: list[dict] = []
        start = first_rerank
        for n_probe in probes:
            trial, position, hopeless = smallest_rerank(n_probe, ratio, start, met)
            if hopeless:
                break
            if trial is None:
                continue
            met.append(trial)
            # More probes never need a larger n_rerank; one doubling less may now do.
            start = max(0, position - STEPS_PER_DOUBLING)
            # More probes only get slower once the target is met with fewer.
            if len(met) >= 2 and met[-1]["queries_per_second"] < max(
                    t["queries_per_second"] for t in met[:-1]):
                break
        meeting.extend(met)
        return met

    # Pass 1: fixed probing, doubling n_probe.
    doubling = sorted({min(n_lists, 2 ** i) for i in range(20) if 2 ** i <= 2 * n_lists})
    coarse = walk(None, doubling)
    if coarse:
        # Pass 2: the fine ladder between the last miss and the first hit.
        hit = coarse[0]["n_probe"]
        below = [p for p in doubling if p < hit]
        if below:
            # Fewer probes than the first hit need at least its n_rerank.
            walk(None, fine_ladder(below[-1], hit)[1:-1], reranks.index(coarse[0]["n_rerank"]))
        # Pass 3: adaptive probing; caps from the fewest fixed probes that met.
        fixed_best = max(meeting, key=lambda t: t["queries_per_second"])
        lowest = min(t["n_probe"] for t in meeting)
        top = min(n_lists, max(lowest + 1,
                               round(MAX_CAP_FACTOR * fixed_best["n_probe"])))
        first = max(0, reranks.index(fixed_best["n_rerank"]) - STEPS_PER_DOUBLING)
        # Largest ratio first: a smaller one visits fewer buckets at the same cap, so
        # its caps start where the larger one first met the target.
        for ratio in sorted(RATIOS, reverse=True):
            met = walk(ratio, fine_ladder(lowest, top), first) if top > lowest else []
            if met:
                lowest = met[0]["n_probe"]
    if meeting:
        best = confirm(meeting)
    else:
        best = max(trials, key=lambda t: (t["recall"], t["queries_per_second"]))
    index.n_probe, index.n_rerank = best["n_probe"], best["n_rerank"]
    index.probe_ratio = best["probe_ratio"]
    return TuneResult(best["n_probe"], best["n_rerank"], best["recall"],
                      best.get("confirmed_queries_per_second", best["queries_per_second"]),
                      bool(meeting), trials, best["probe_ratio"])
