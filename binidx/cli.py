"""The ``binidx`` command line: build, query, add, remove, info and eval on vector files.

A thin argparse layer over the public API (:class:`binidx.Index`, ``binidx.load``,
``Index.save``, ``binidx.read_metadata``, :mod:`binidx.vecio`).  Its own jobs are the
ones a library call cannot do for the user:

* streaming: vectors are read in blocks (:func:`binidx.vecio.iter_vector_chunks`) and the
  k-means sample is picked while streaming, so building from a file never holds a second
  full copy of the data next to the index;
* naming the culprit: every problem with an input becomes one line that names the file,
  the record and what is wrong (the library only knows row numbers inside one block);
* exit codes: 0 success, 1 a problem with an input file or the index, 2 a usage error
  (an option value that is wrong whatever the files hold), 130 interrupted.  No traceback
  is printed unless ``--debug`` is given.

``docs/cli.md`` documents every command; ``python -m binidx`` runs the same :func:`main`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from . import vecio
from ._version import __version__
from .errors import BinidxError, InvalidInputError, VectorFileError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Rows read from a vector file per step: 64K x 128 float32 is 32 MB, small next to any
# index worth streaming, large enough that per-block overhead is invisible.
CHUNK_ROWS = 65536
# Queries searched per call: keeps progress bars moving; results do not depend on it.
QUERY_BATCH = 4096
# Result files by extension: ids only (.ivecs, .npy) or ids and distances (.csv, .jsonl).
RESULT_EXTS = (".ivecs", ".npy", ".csv", ".jsonl", ".ndjson")
DISTANCE_EXTS = (".fvecs", ".npy", ".csv", ".tsv", ".txt")
ID_EXTS = (".ivecs", ".npy", ".txt", ".csv", ".tsv", ".hdf5", ".h5")
# Relative slack with which a returned neighbour at the k-th true distance counts as
# correct (tie-aware recall), as in benchmarks/metrics.py.
TIE_RTOL = 1e-6
HIST_BINS = 10
HIST_WIDTH = 40


class UsageError(Exception):
    """A command-line value that is wrong whatever the input files hold (exit code 2)."""


# ---------------------------------------------------------------------------------------
# Small helpers: argument types, output, progress


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _n_bits(text: str) -> int:
    value = _positive_int(text)
    if value % 64 or not 64 <= value <= 1024:
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 64 between 64 and 1024, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


# --probe-ratio value that turns adaptive probing off whatever the index default is.
PROBE_RATIO_OFF = "none"


def _probe_ratio(text: str) -> float | str:
    """A ratio (range checked by the command, with the library's message) or ``none``."""
    if text.strip().lower() in (PROBE_RATIO_OFF, "off"):
        return PROBE_RATIO_OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number >= 1 or 'none', got {text!r}") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Output:
    """Where a command's messages go: a report on stdout, notes and bars on stderr."""

    def __init__(self, args: argparse.Namespace):
        self.quiet = bool(getattr(args, "quiet", False))
        self.json = bool(getattr(args, "json", False))
        self.bars = not self.quiet and _isatty(sys.stderr)

    def note(self, text: str) -> None:
        """A status line for a person watching (stderr, only on a terminal)."""
        if self.bars:
            print(text, file=sys.stderr, flush=True)

    def report(self, text: str, summary: dict, stream: Any = None) -> None:
        """The command's summary: JSON with --json, else ``text`` unless --quiet."""
        stream = stream or sys.stdout
        if self.json:
            print(json.dumps(summary, default=_json_default), file=stream, flush=True)
        elif not self.quiet:
            print(text, file=stream, flush=True)

    @contextlib.contextmanager
    def progress(self, total: int, desc: str, unit: str) -> Iterator[Any]:
        """A tqdm bar on stderr when it is a terminal and --quiet is off; else a no-op."""
        bar = None
        if self.bars:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional: no bar then
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                           leave=False, dynamic_ncols=True)
        try:
            yield bar if bar is not None else _NoBar()
        finally:
            if bar is not None:
                bar.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


@contextlib.contextmanager
def _thread_limit(n: int | None) -> Iterator[None]:
    """Cap BLAS threads (used by k-means and encoding) when threadpoolctl is installed.

    The search kernels take their thread count as an argument; BLAS reads its own, which
    only threadpoolctl can change once NumPy is loaded.  Without it, OMP_NUM_THREADS /
    OPENBLAS_NUM_THREADS in the environment still apply.
    """
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n):
        yield


def _check_output_path(path: str, what: str) -> None:
    """Fail before any long work when ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VectorFileError(f"{path}: cannot write {what}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise VectorFileError(f"{path}: cannot write {what}: it is a directory")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - loop always returns


# ---------------------------------------------------------------------------------------
# Reading inputs with errors that name the file and the record


def _file_info(spec: str) -> vecio.VectorFileInfo:
    info = vecio.vector_file_info(spec)
    if info.n == 0:
        raise VectorFileError(f"{spec}: holds no vectors (shape (0, {info.dim}))")
    return info


def _check_dim(spec: str, info: vecio.VectorFileInfo, index_path: str, dim: int) -> None:
    if info.dim != dim:
        raise VectorFileError(
            f"{spec}: record 0 has dimension {info.dim}, but the index {index_path} holds "
            f"vectors of dimension {dim}; use vectors of the same kind as the index")


def _bad_record(block: np.ndarray, metric: str) -> tuple[int, str] | None:
    """The first row of ``block`` the index refuses, and why; None if none is found.

    Mirrors the index's own checks (finite after conversion to float32; non-zero for
    cosine), so the CLI can name the record the library only knows by block row.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(block, dtype=np.float32)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = (int(v) for v in np.unravel_index(int(np.argmax(bad)), bad.shape))
            value = np.asarray(block)[row, col]
            if np.isnan(value):
                what = "NaN"
            elif np.isinf(value):
                what = "an infinite value"
            else:
                what = f"{value!r}, beyond float32's range,"
            return row, f"contains {what} in column {col}; remove or fix that vector"
    if metric == "cosine":
        zero = np.flatnonzero(~x.any(axis=1))
        if zero.size:
            return int(zero[0]), ("is a zero vector, which has no cosine direction; remove it "
                                  "or use --metric l2 / ip")
    return None


def _input_error(spec: str, block: np.ndarray, first_record: int, rows: np.ndarray | None,
                 metric: str, exc: InvalidInputError) -> VectorFileError:
    """Turn the index's complaint about ``block`` into one naming ``spec`` and the record.

    ``rows`` maps block rows to file records when the block is a sample; otherwise block
    row i is record ``first_record + i``.
    """
    found = _bad_record(block, metric)
    if found is None:
        return VectorFileError(f"{spec}: {_one_line(exc)}")
    row, problem = found
    record = int(rows[row]) if rows is not None else first_record + row
    return VectorFileError(f"{spec}: record {record} {problem}")


def _read_ids(spec: str) -> np.ndarray:
    """Read a file of integer ids (.ivecs, .npy, .txt/.csv/.tsv, HDF5) as 1-D int64."""
    path, _ = vecio.parse_source(spec)
    ext = os.path.splitext(path)[1].lower()
    if ext not in ID_EXTS:
        shown = repr(ext) if ext else "no extension"
        raise VectorFileError(f"{spec}: unknown id file type ({shown}); ids are read from "
                              f"{', '.join(ID_EXTS)}")
    if ext == ".npy":
        arr = _read_npy_ids(path)
    elif ext in (".txt", ".csv", ".tsv"):
        arr = _read_text_ids(path, ext)
    else:
        arr = vecio.read_vectors(spec, mmap=False)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise VectorFileError(f"{spec}: holds an array of shape {arr.shape}; ids must be one "
                              "per record (shape (n, 1)), one record of n, or a 1-D array")
    if arr.size == 0:
        raise VectorFileError(f"{spec}: holds no ids")
    if arr.dtype.kind not in "iu":
        raise VectorFileError(f"{spec}: holds {arr.dtype} values; ids must be integers")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        record = int(np.argmax(arr > np.iinfo(np.int64).max))
        raise VectorFileError(f"{spec}: record {record} holds {int(arr[record])}, beyond the "
                              "int64 range of ids")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _read_npy_ids(path: str) -> np.ndarray:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise VectorFileError(f"{path}: {(exc.strerror or str(exc)).lower()}") from None
    if size == 0:
        raise VectorFileError(f"{path}: the file is empty; not a valid .npy file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise VectorFileError(f"{path}: not a valid .npy file ({_one_line(exc)})") from None


def _read_text_ids(path: str, ext: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise VectorFileError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported by caller
            return np.loadtxt(path, dtype=np.int64, ndmin=1, comments="#",
                              delimiter="," if ext == ".csv" else None)
    except (ValueError, UnicodeDecodeError) as exc:
        detail = _one_line(str(exc).split(";")[0]).rstrip(".")
        raise VectorFileError(f"{path}: not a valid {ext} file of integer ids ({detail})"
                              ) from None


def _check_ids(spec: str, ids: np.ndarray, n: int, vectors: str) -> None:
    if ids.shape[0] != n:
        raise VectorFileError(f"{spec}: holds {ids.shape[0]} ids, but {vectors} holds {n} "
                              "vectors; give exactly one id per vector")
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if same.size:
        first, second = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise VectorFileError(f"{spec}: id {int(ids[first])} appears at records {first} and "
                              f"{second}; ids must be distinct")


def _parse_id_list(text: str) -> np.ndarray | None:
    """``"3,17,42"`` as ids (for ``binidx remove``), or None if ``text`` is not such a list."""
    parts = text.split(",")
    if not all(p.strip().lstrip("-").isdigit() for p in parts):
        return None
    return np.array([int(p) for p in parts], dtype=np.int64)


# ---------------------------------------------------------------------------------------
# The index file


def _load(path: str, *, mmap: bool) -> Any:
    if not os.path.exists(path):
        raise VectorFileError(f"{path}: no such index file")
    from ._persist import load

    return load(path, mmap=mmap)


def _save(index: Any, path: str) -> int:
    index.save(path)
    return os.path.getsize(path)


def _add_streaming(index: Any, spec: str, ids: np.ndarray | None, out: _Output,
                   n: int, ids_spec: str | None) -> None:
    """Add every vector of ``spec`` block by block; errors name the record."""
    done = 0
    index.reserve(n)  # one allocation of the final size: no old + grown copy at once
    with out.progress(n, "adding", "vec") as bar:
        for block in vecio.iter_vector_chunks(spec, CHUNK_ROWS):
            block_ids = None if ids is None else ids[done:done + block.shape[0]]
            try:
                index.add(block, block_ids)
            except InvalidInputError as exc:
                raise _input_error(spec, block, done, None, index.metric, exc) from None
            except KeyError as exc:
                raise _duplicate_id_error(exc, ids, ids_spec) from None
            done += block.shape[0]
            bar.update(block.shape[0])


def _key_error_id(exc: KeyError) -> int | None:
    """The id a ``KeyError("id 5 is ...")`` from the index names, or None."""
    words = _one_line(exc.args[0] if exc.args else exc).split()
    if len(words) > 1 and words[0] == "id" and words[1].lstrip("-").isdigit():
        return int(words[1])
    return None


def _duplicate_id_error(exc: KeyError, ids: np.ndarray | None, ids_spec: str | None
                        ) -> BinidxError:
    bad = _key_error_id(exc)
    if ids is not None and bad is not None:
        record = int(np.argmax(ids == bad))
        return VectorFileError(f"{ids_spec}: record {record} holds id {bad}, which is already "
                               "in the index; remove it first or use ids not in the index")
    return InvalidInputError(_one_line(exc.args[0] if exc.args else exc))


# ---------------------------------------------------------------------------------------
# build


def _training_sample(spec: str, n: int, n_train: int, seed: int, out: _Output
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``n_train`` rows of ``spec`` chosen at random, read in one streaming pass.

    Returns ``(sample, rows)`` where ``rows`` are the file records of the sample rows
    (None when the sample is the whole file).  Only the chosen rows are kept, so memory
    is the sample plus one block, whatever the file size.
    """
    if n_train >= n:
        rows = None
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=n_train, replace=False))
    parts, done = [], 0
    with out.progress(n, "sampling", "vec") as bar:
        for block in vecio.iter_vector_chunks(spec, CHUNK_ROWS):
            if rows is None:
                parts.append(block)
            else:
                lo, hi = np.searchsorted(rows, [done, done + block.shape[0]])
                parts.append(block[rows[lo:hi] - done])
            done += block.shape[0]
            bar.update(block.shape[0])
    sample = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return sample, rows


def _cmd_build(args: argparse.Namespace, out: _Output) -> int:
    from . import _kmeans
    from .index import Index

    t0 = time.perf_counter()
    _check_output_path(args.output, "the index")
    info = _file_info(args.vectors)
    ids = None
    if args.ids is not None:
        ids = _read_ids(args.ids)
        _check_ids(args.ids, ids, info.n, args.vectors)
    n_lists = args.n_lists or _kmeans.default_n_lists(info.n)
    if n_lists > info.n:
        raise VectorFileError(f"{args.vectors}: holds {info.n} vectors, fewer than --n-lists "
                              f"{n_lists}; pass a smaller --n-lists")
    try:
        index = Index(info.dim, metric=args.metric, n_lists=n_lists, n_bits=args.n_bits,
                      seed=args.seed)
    except InvalidInputError as exc:
        raise UsageError(_one_line(exc)) from None
    # k-means only looks at this many points; picking them here means only they are read
    # into memory for training (Index.train would otherwise convert the whole input).
    n_train = _kmeans.training_sample_size(info.n, n_lists)
    with _thread_limit(args.threads):
        sample, rows = _training_sample(args.vectors, info.n, n_train, args.seed, out)
        out.note(f"training {n_lists} lists on {sample.shape[0]:,} vectors ...")
        try:
            index.train(sample)
        except InvalidInputError as exc:
            raise _input_error(args.vectors, sample, 0, rows, args.metric, exc) from None
        del sample
        t_train = time.perf_counter() - t0
        _add_streaming(index, args.vectors, ids, out, info.n, args.ids)
        t_add = time.perf_counter() - t0 - t_train
        out.note(f"writing {args.output} ...")
        size = _save(index, args.output)
    total = time.perf_counter() - t0
    summary = {"command": "build", "index": args.output, "vectors": len(index), "dim": index.dim,
               "metric": index.metric, "n_lists": index.n_lists, "n_bits": index.n_bits,
               "seed": index.seed, "train_vectors": n_train, "train_s": round(t_train, 3),
               "add_s": round(t_add, 3), "total_s": round(total, 3), "file_bytes": size}
    out.report(f"built {args.output}: {len(index):,} vectors of dim {index.dim}, metric "
               f"{index.metric}, {index.n_lists} lists, {index.n_bits}-bit codes, "
               f"{_human_bytes(size)}, in {total:.1f} s", summary)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# add / remove


def _cmd_add(args: argparse.Namespace, out: _Output) -> int:
    t0 = time.perf_counter()
    info = _file_info(args.vectors)
    ids = None
    if args.ids is not None:
        ids = _read_ids(args.ids)
        _check_ids(args.ids, ids, info.n, args.vectors)
    index = _load(args.index, mmap=False)
    _check_dim(args.vectors, info, args.index, index.dim)
    before = len(index)
    with _thread_limit(args.threads):
        _add_streaming(index, args.vectors, ids, out, info.n, args.ids)
    out.note(f"writing {args.index} ...")
    size = _save(index, args.index)
    seconds = time.perf_counter() - t0
    summary = {"command": "add", "index": args.index, "added": len(index) - before,
               "vectors": len(index), "file_bytes": size, "seconds": round(seconds, 3)}
    out.report(f"added {len(index) - before:,} vectors to {args.index}: it now holds "
               f"{len(index):,} ({_human_bytes(size)}), in {seconds:.1f} s", summary)
    return EXIT_OK


def _cmd_remove(args: argparse.Namespace, out: _Output) -> int:
    t0 = time.perf_counter()
    ids = None if os.path.exists(args.ids) else _parse_id_list(args.ids)
    if ids is None:
        ids = _read_ids(args.ids)
    index = _load(args.index, mmap=False)
    unique = np.unique(ids)  # naming an id twice is harmless here
    try:
        removed = index.remove(unique, missing="ignore" if args.ignore_missing else "raise")
    except KeyError as exc:
        bad = _key_error_id(exc)
        if bad is None:
            raise
        n_missing = int(np.count_nonzero([i not in index for i in unique.tolist()]))
        record = int(np.argmax(ids == bad))
        raise VectorFileError(
            f"{args.ids}: record {record} holds id {bad}, which is not in {args.index} "
            f"({n_missing} of the {unique.size} ids are not); nothing was removed. Check "
            "the ids, or pass --ignore-missing to remove the others") from None
    if removed:  # nothing changed: leave the file alone
        out.note(f"writing {args.index} ...")
        _save(index, args.index)
    seconds = time.perf_counter() - t0
    requested = int(unique.size)
    summary = {"command": "remove", "index": args.index, "requested": requested,
               "removed": removed, "not_found": requested - removed, "vectors": len(index),
               "seconds": round(seconds, 3)}
    missing = f" ({requested - removed:,} ids were not in it)" if requested > removed else ""
    out.report(f"removed {removed:,} vectors from {args.index}{missing}: it now holds "
               f"{len(index):,}", summary)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# query


def _check_result_path(path: str, flag: str, exts: Sequence[str], allow_stdout: bool) -> str:
    if allow_stdout and path == "-":
        return "-"
    ext = os.path.splitext(path)[1].lower()
    if ext not in exts:
        shown = repr(ext) if ext else "no extension"
        stdout = " or - for JSON lines on stdout" if allow_stdout else ""
        raise UsageError(f"{flag} {path}: unknown result file type ({shown}); use "
                         f"{', '.join(exts)}{stdout}")
    return ext


def _check_probe_ratio(args: argparse.Namespace) -> None:
    """Refuse a --probe-ratio below 1 (or NaN) before any work, with the library's
    message."""
    from ._validation import check_probe_ratio

    if args.probe_ratio not in (None, PROBE_RATIO_OFF):
        try:
            check_probe_ratio(args.probe_ratio, "--probe-ratio")
        except InvalidInputError as exc:
            raise UsageError(_one_line(exc)) from None


def _apply_probe_ratio(index: Any, args: argparse.Namespace) -> float | None:
    """Make --probe-ratio the loaded index's default (the file is not changed); returns
    the ratio the search uses."""
    if args.probe_ratio == PROBE_RATIO_OFF:
        index.probe_ratio = None
    elif args.probe_ratio is not None:
        index.probe_ratio = args.probe_ratio
    return index.probe_ratio


def _search_settings(n_probe: int, n_rerank: int, probe_ratio: float | None) -> str:
    ratio = "" if probe_ratio is None else f", probe_ratio={probe_ratio:g}"
    return f"n_probe={n_probe}{ratio}, n_rerank={n_rerank}"


def _search_file(index: Any, spec: str, k: int, n_probe: int | None, n_rerank: int | None,
                 threads: int | None, out: _Output, n: int
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Search every query of ``spec``; returns distances, ids and the seconds searching."""
    distances = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    done, seconds = 0, 0.0
    with out.progress(n, "querying", "q") as bar:
        for block in vecio.iter_vector_chunks(spec, QUERY_BATCH):
            t = time.perf_counter()
            try:
                d, i = index.search(block, k, n_probe=n_probe, n_rerank=n_rerank,
                                    n_threads=threads)
            except InvalidInputError as exc:
                raise _input_error(spec, block, done, None, index.metric, exc) from None
            seconds += time.perf_counter() - t
            distances[done:done + block.shape[0]] = d
            ids[done:done + block.shape[0]] = i
            done += block.shape[0]
            bar.update(block.shape[0])
    return distances, ids, seconds


def _format_distance(value: float) -> str:
    # float32's shortest round-trip text: '0.1', not 0.10000000149011612.
    return str(np.float32(value))


def _json_lines(distances: np.ndarray, ids: np.ndarray) -> Iterator[str]:
    """One JSON object per query; padding (id -1) is left out, so lists may be short."""
    for q in range(ids.shape[0]):
        found = ids[q] >= 0
        id_text = ", ".join(str(i) for i in ids[q][found].tolist())
        dist_text = ", ".join(_format_distance(d) for d in distances[q][found])
        yield f'{{"query": {q}, "ids": [{id_text}], "distances": [{dist_text}]}}\n'


def _csv_lines(distances: np.ndarray, ids: np.ndarray) -> Iterator[str]:
    yield "query,rank,id,distance\n"
    for q in range(ids.shape[0]):
        for r in np.flatnonzero(ids[q] >= 0).tolist():
            yield f"{q},{r},{ids[q, r]},{_format_distance(distances[q, r])}\n"


def _write_text_atomic(path: str, lines: Iterator[str]) -> None:
    from ._format import atomic_write

    def emit(f: BinaryIO) -> None:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 4096:
                f.write("".join(batch).encode())
                batch.clear()
        f.write("".join(batch).encode())

    atomic_write(path, emit)


def _write_results(path: str, ext: str, distances: np.ndarray, ids: np.ndarray) -> None:
    if path == "-":
        for line in _json_lines(distances, ids):
            sys.stdout.write(line)
        sys.stdout.flush()
    elif ext == ".ivecs":
        big = np.abs(ids) > np.iinfo(np.int32).max
        if big.any():
            row = int(np.argmax(big.any(axis=1)))
            raise VectorFileError(f"{path}: cannot write: query {row} found id "
                                  f"{int(ids[big][0])}, beyond .ivecs' int32 range; write "
                                  ".npy instead")
        vecio.write_vectors(path, ids.astype(np.int32))
    elif ext == ".npy":
        vecio.write_vectors(path, ids)
    elif ext == ".csv":
        _write_text_atomic(path, _csv_lines(distances, ids))
    else:
        _write_text_atomic(path, _json_lines(distances, ids))


def _cmd_query(args: argparse.Namespace, out: _Output) -> int:
    ext = _check_result_path(args.output, "-o", RESULT_EXTS, allow_stdout=True)
    if args.distances is not None:
        _check_result_path(args.distances, "--distances", DISTANCE_EXTS, allow_stdout=False)
        _check_output_path(args.distances, "distances")
    if args.output != "-":
        _check_output_path(args.output, "results")
    _check_probe_ratio(args)
    t0 = time.perf_counter()
    info = _file_info(args.queries)
    index = _load(args.index, mmap=True)
    _check_dim(args.queries, info, args.index, index.dim)
    n_probe = min(args.n_probe or index.n_probe, index.n_lists)
    n_rerank = max(args.n_rerank or index.n_rerank, args.k)
    probe_ratio = _apply_probe_ratio(index, args)
    distances, ids, seconds = _search_file(index, args.queries, args.k, n_probe, n_rerank,
                                           args.threads, out, info.n)
    _write_results(args.output, ext, distances, ids)
    if args.distances is not None:
        vecio.write_vectors(args.distances, distances)
    qps = info.n / seconds if seconds > 0 else math.inf
    summary = {"command": "query", "index": args.index, "queries": info.n, "k": args.k,
               "n_probe": n_probe, "probe_ratio": probe_ratio, "n_rerank": n_rerank,
               "threads": args.threads, "output": args.output, "distances": args.distances,
               "search_s": round(seconds, 4), "qps": round(qps, 1),
               "total_s": round(time.perf_counter() - t0, 3)}
    where = "stdout" if args.output == "-" else args.output
    # With -o - stdout carries the results, so the summary goes to stderr.
    out.report(f"searched {info.n:,} queries (k={args.k}, "
               f"{_search_settings(n_probe, n_rerank, probe_ratio)}) in {seconds:.2f} s "
               f"({qps:,.0f} QPS); results in {where}", summary,
               sys.stderr if args.output == "-" else None)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# info


def _histogram_bins(sizes: np.ndarray) -> list[tuple[int, int, int]]:
    """``(smallest, largest, buckets)`` for up to HIST_BINS equal ranges of bucket sizes."""
    if sizes.size == 0:
        return []
    top = int(sizes.max())
    width = max(1, -(-(top + 1) // HIST_BINS))
    counts = np.bincount(sizes // width, minlength=HIST_BINS)
    return [(b * width, min(b * width + width - 1, top), int(c))
            for b, c in enumerate(counts.tolist()) if b * width <= top]


def _histogram(sizes: np.ndarray) -> list[str]:
    """Text histogram of bucket sizes: how many buckets fall in each size range."""
    bins = _histogram_bins(sizes)
    if not bins:
        return []
    scale = HIST_WIDTH / max(1, max(count for _, _, count in bins))
    digits = len(str(bins[-1][1]))
    return [f"  {lo:>{digits}} - {hi:>{digits}}  "
            f"{'#' * max(1 if count else 0, round(count * scale)):<{HIST_WIDTH}} {count}"
            for lo, hi, count in bins]


def _list_sizes(index: Any) -> np.ndarray:
    return index.list_sizes()


def _cmd_info(args: argparse.Namespace, out: _Output) -> int:
    if not os.path.exists(args.index):
        raise VectorFileError(f"{args.index}: no such index file")
    from ._persist import read_metadata

    header = read_metadata(args.index)
    index = _load(args.index, mmap=True)
    file_bytes = os.path.getsize(args.index)
    memory = index.memory_usage()
    summary: dict[str, Any] = {
        "index": args.index, "file_bytes": file_bytes, "header": header,
        "vectors": len(index), "dim": index.dim, "metric": index.metric,
        "n_bits": index.n_bits, "seed": index.seed, "is_trained": index.is_trained,
        "memory": memory,
    }
    lines = [f"index       {args.index} ({_human_bytes(file_bytes)})",
             f"format      {_format_line(header)}",
             f"vectors     {len(index):,} of dim {index.dim}, metric {index.metric}",
             f"codes       {index.n_bits} bits per vector (seed {index.seed})"]
    if index.is_trained:
        sizes = _list_sizes(index)
        summary.update(n_lists=index.n_lists, n_probe=index.n_probe, n_rerank=index.n_rerank,
                       probe_ratio=index.probe_ratio,
                       list_sizes={"min": int(sizes.min()), "median": float(np.median(sizes)),
                                   "max": int(sizes.max()),
                                   "empty": int(np.count_nonzero(sizes == 0))},
                       histogram=[{"min": lo, "max": hi, "buckets": c}
                                  for lo, hi, c in _histogram_bins(sizes)])
        lines.append(f"lists       {index.n_lists:,} buckets; sizes min {int(sizes.min()):,}, "
                     f"median {float(np.median(sizes)):,.0f}, max {int(sizes.max()):,}; "
                     f"{int(np.count_nonzero(sizes == 0)):,} empty")
        ratio = ("none (fixed n_probe)" if index.probe_ratio is None
                 else f"{index.probe_ratio:g} (n_probe is a cap)")
        lines.append(f"search      n_probe {index.n_probe}, n_rerank {index.n_rerank}, "
                     f"probe_ratio {ratio} (defaults of query and eval)")
    else:
        lines.append("lists       not trained")
    lines.append("memory      " + ", ".join(f"{part} {_human_bytes(memory[part])}"
                                            for part in ("resident", "vectors", "writer",
                                                         "total")
                                            if part in memory))
    lines.append("resident    " + ", ".join(f"{part} {_human_bytes(memory[part])}"
                                            for part in index.RESIDENT_PARTS))
    if index.is_trained and sizes.size:
        lines += ["", "bucket sizes (vectors per bucket: number of buckets)"]
        lines += _histogram(sizes)
    out.report("\n".join(lines), summary)
    return EXIT_OK


def _format_line(header: Any) -> str:
    if not isinstance(header, dict):
        return str(header)
    get = header.get
    parts = [f"{get('format', 'binidx')} v{get('format_version', '?')}"]
    if get("binidx_version"):
        parts.append(f"written by binidx {get('binidx_version')}")
    if get("kind"):
        parts.append(f"kind {get('kind')}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# eval


def _stored_vectors(index: Any, ids: np.ndarray, spec: str | None) -> np.ndarray:
    """The index's vectors of ``ids`` as float64, shape ids.shape + (dim,); NaN for id -1."""
    flat = ids.reshape(-1)
    ok = flat >= 0
    out = np.full((flat.shape[0], index.dim), np.nan, dtype=np.float64)
    try:
        out[ok] = index.get(flat[ok])
    except KeyError as exc:
        bad = _key_error_id(exc)
        if spec is None or bad is None:
            raise
        row = int(np.argmax((ids == bad).any(axis=1)))
        raise VectorFileError(f"{spec}: record {row} lists id {bad}, which is not in the "
                              "index; the ground truth must use the index's ids") from None
    return out.reshape(ids.shape + (index.dim,))


def _keys(index: Any, queries: np.ndarray, ids: np.ndarray, spec: str | None) -> np.ndarray:
    """Exact float64 "smaller is closer" keys between each query and the listed ids."""
    keys = np.empty(ids.shape, dtype=np.float64)
    step = max(1, 1_000_000 // max(1, ids.shape[1] * index.dim))
    for s in range(0, ids.shape[0], step):
        v = _stored_vectors(index, ids[s:s + step], spec)
        q = queries[s:s + step, None, :]
        if index.metric == "l2":
            key = np.sum((v - q) ** 2, axis=2)
        else:
            key = -np.sum(v * q, axis=2)
        keys[s:s + step] = np.where(np.isnan(key), np.inf, key)
    return keys


def _exact_ground_truth(index: Any, queries: np.ndarray, k: int, out: _Output) -> np.ndarray:
    """Exact top-k ids by brute force over the index's stored vectors, block by block.

    Ties are broken by the smaller id, as :func:`binidx.exact_search` does.
    """
    from ._exact import exact_search

    all_ids = index.ids()
    metric = "l2" if index.metric == "l2" else "ip"  # stored vectors are already normalised
    best_keys = np.full((queries.shape[0], k), np.inf)
    best_ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
    with out.progress(all_ids.shape[0], "exact ground truth", "vec") as bar:
        for start in range(0, all_ids.shape[0], CHUNK_ROWS):
            block_ids = all_ids[start:start + CHUNK_ROWS]
            d, i = exact_search(index.get(block_ids), queries, k, metric=metric)
            keys = d.astype(np.float64) if metric == "l2" else -d.astype(np.float64)
            cand_ids = np.where(i >= 0, block_ids[np.maximum(i, 0)], -1)
            keys = np.where(i >= 0, keys, np.inf)
            merged_keys = np.concatenate([best_keys, keys], axis=1)
            merged_ids = np.concatenate([best_ids, cand_ids], axis=1)
            # Closest first, ties by the smaller id; no result (-1, +inf) sorts last.
            tie = np.where(merged_ids < 0, np.iinfo(np.int64).max, merged_ids)
            order = np.lexsort((tie, merged_keys), axis=1)[:, :k]
            best_keys = np.take_along_axis(merged_keys, order, axis=1)
            best_ids = np.take_along_axis(merged_ids, order, axis=1)
            bar.update(block_ids.shape[0])
    return best_ids


def _read_ground_truth(spec: str, n_queries: int, k: int, queries_spec: str) -> np.ndarray:
    gt = vecio.read_vectors(spec, mmap=False)
    if gt.dtype.kind not in "iu":
        raise VectorFileError(f"{spec}: holds {gt.dtype} values; ground truth must be integer "
                              "ids (e.g. .ivecs)")
    if gt.shape[0] != n_queries:
        raise VectorFileError(f"{spec}: holds {gt.shape[0]} rows, but {queries_spec} holds "
                              f"{n_queries} queries; give one row of neighbour ids per query")
    if gt.shape[1] < k:
        raise VectorFileError(f"{spec}: lists {gt.shape[1]} neighbours per query, fewer than "
                              f"-k {k}; use a smaller -k or a deeper ground truth")
    return np.ascontiguousarray(gt[:, :k], dtype=np.int64)


def tie_aware_recall(found_keys: np.ndarray, found_ids: np.ndarray, true_keys: np.ndarray,
                     true_ids: np.ndarray) -> np.ndarray:
    """Per-query recall@k where a neighbour tied with the k-th true one counts as correct.

    Parameters
    ----------
    found_keys, found_ids : ndarray of shape (n_queries, k)
        Exact "smaller is closer" keys of the returned ids (+inf where id is -1).
    true_keys, true_ids : ndarray of shape (n_queries, k)
        The same for the ground truth, nearest first; id -1 means fewer than k exist.

    Returns
    -------
    ndarray of shape (n_queries,)
        Correct results over the number of true neighbours (at most k), per query.

    Examples
    --------
    >>> import numpy as np
    >>> tie_aware_recall(np.array([[0., 1.]]), np.array([[5, 7]]),
    ...                  np.array([[0., 1.]]), np.array([[5, 6]])).tolist()
    [1.0]
    """
    n_true = np.count_nonzero(true_ids >= 0, axis=1)
    last = np.maximum(n_true - 1, 0)
    threshold = np.take_along_axis(true_keys, last[:, None], axis=1)
    threshold = threshold + TIE_RTOL * np.abs(threshold) + 1e-12
    # A repeated id counts once.
    order = np.argsort(found_ids, axis=1, kind="stable")
    srt = np.take_along_axis(found_ids, order, axis=1)
    repeat = np.zeros(found_ids.shape, dtype=bool)
    repeat[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = np.zeros(found_ids.shape, dtype=bool)
    np.put_along_axis(dup, order, repeat, axis=1)
    hits = np.count_nonzero((found_keys <= threshold) & (found_ids >= 0) & ~dup, axis=1)
    return np.where(n_true > 0, np.minimum(hits, n_true) / np.maximum(n_true, 1), 1.0)


def _cmd_eval(args: argparse.Namespace, out: _Output) -> int:
    from ._exact import normalize_rows
    from ._validation import as_float32_matrix

    _check_probe_ratio(args)
    info = _file_info(args.queries)
    index = _load(args.index, mmap=True)
    _check_dim(args.queries, info, args.index, index.dim)
    gt = None
    if args.groundtruth is not None:
        gt = _read_ground_truth(args.groundtruth, info.n, args.k, args.queries)
    n_probe = min(args.n_probe or index.n_probe, index.n_lists)
    n_rerank = max(args.n_rerank or index.n_rerank, args.k)
    probe_ratio = _apply_probe_ratio(index, args)
    runs = []
    for _ in range(args.repeat):
        _, ids, seconds = _search_file(index, args.queries, args.k, n_probe, n_rerank,
                                       args.threads, out, info.n)
        runs.append(seconds)
    seconds = float(np.median(runs))
    queries = vecio.read_vectors(args.queries, mmap=False)
    queries = as_float32_matrix(queries, index.dim, "queries")  # checked by the search
    if index.metric == "cosine":
        queries = normalize_rows(queries, "queries")
    queries = queries.astype(np.float64)
    if gt is None:
        out.note(f"computing exact ground truth over {len(index):,} vectors ...")
        gt = _exact_ground_truth(index, queries, args.k, out)
    true_keys = _keys(index, queries, gt, args.groundtruth)
    found_keys = _keys(index, queries, ids, None)
    recall = tie_aware_recall(found_keys, ids, true_keys, gt)
    qps = info.n / seconds if seconds > 0 else math.inf
    summary = {"command": "eval", "index": args.index, "queries": info.n, "k": args.k,
               f"recall@{args.k}": float(recall.mean()), "recall": float(recall.mean()),
               "qps": round(qps, 1), "search_s": round(seconds, 4), "repeat": args.repeat,
               "n_probe": n_probe, "probe_ratio": probe_ratio, "n_rerank": n_rerank,
               "threads": args.threads, "ground_truth": args.groundtruth or "exact"}
    source = args.groundtruth or "computed exactly"
    threads = args.threads or "all"
    out.report(f"recall@{args.k}  {recall.mean():.4f}  ({info.n:,} queries, tie-aware, ground "
               f"truth {source})\n"
               f"QPS        {qps:,.0f}  (median of {args.repeat}; "
               f"{_search_settings(n_probe, n_rerank, probe_ratio)}, threads={threads})",
               summary)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# The parser


_DESCRIPTION = """\
Approximate nearest-neighbour search on vector files: IVF buckets of binary codes with
exact rerank. Vector files: .fvecs .bvecs .ivecs .npy, file.hdf5:dataset, .csv .tsv .txt.
"""

_EXAMPLES = {
    "build": """\
example:
  binidx build sift_base.fvecs -o sift.binidx
  binidx build emb.npy -o emb.binidx --metric cosine --n-lists 1024 --ids emb_ids.npy
  binidx build glove-100-angular.hdf5:train -o glove.binidx --metric cosine
""",
    "query": """\
example:
  binidx query sift.binidx sift_query.fvecs -k 10 -o results.ivecs
  binidx query sift.binidx sift_query.fvecs -k 100 -o results.npy --distances dist.npy
  binidx query emb.binidx questions.npy -k 5 -o - | head -n 3
""",
    "add": """\
example:
  binidx add sift.binidx more.fvecs
  binidx add emb.binidx new.npy --ids new_ids.npy
""",
    "remove": """\
example:
  binidx remove emb.binidx stale_ids.txt
  binidx remove emb.binidx 17,42,1001
""",
    "info": """\
example:
  binidx info sift.binidx
  binidx info sift.binidx --json
""",
    "eval": """\
example:
  binidx eval sift.binidx sift_query.fvecs sift_groundtruth.ivecs -k 10
  binidx eval sift.binidx sift_query.fvecs -k 10 --n-probe 32   # exact ground truth
  binidx eval sift.binidx sift_query.fvecs sift_groundtruth.ivecs --n-probe 96 --probe-ratio 1.8
  binidx eval glove.binidx glove.hdf5:test glove.hdf5:neighbors -k 10 --json
""",
}

_HELP = {
    "build": "train an index on a vector file and add all of it",
    "query": "search an index with a file of queries, write the results",
    "add": "add the vectors of a file to an index (the file is rewritten atomically)",
    "remove": "remove vectors by id from an index (the file is rewritten atomically)",
    "info": "describe an index file: header, counts, bucket sizes, memory",
    "eval": "measure recall@k and QPS of an index on queries",
}

COMMANDS = tuple(_HELP)


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are SUPPRESS so `binidx --quiet build ...` is not reset
    # to False by the subparser.
    default = False if top else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bars or messages (errors are still printed)")
    parser.add_argument("--json", action="store_true", default=default,
                        help="print a machine-readable JSON summary instead of text")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of errors")


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=_positive_int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--n-probe", type=_positive_int, default=None,
                   help="buckets visited per query (default: the index's, see binidx info)")
    p.add_argument("--probe-ratio", type=_probe_ratio, default=None, metavar="RATIO",
                   help="adaptive probing: of the --n-probe nearest buckets visit those within "
                        "RATIO times the nearest one's squared distance (RATIO >= 1, e.g. 1.8); "
                        "'none' visits all --n-probe (default: the index's)")
    p.add_argument("--n-rerank", type=_positive_int, default=None,
                   help="candidates reranked with exact distances (default: the index's)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="search threads (default: all cores; results do not depend on it)")


def build_parser() -> argparse.ArgumentParser:
    """The ``binidx`` argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="binidx", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  binidx build base.fvecs -o base.binidx\n"
               "  binidx eval base.binidx query.fvecs groundtruth.ivecs -k 10\n\n"
               "Run 'binidx COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"binidx {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name] + ".",
                           epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p, top=False)
        return p

    p = command("build")
    p.add_argument("vectors", metavar="VECTORS", help="vector file to index")
    p.add_argument("-o", "--output", metavar="INDEX", required=True,
                   help="index file to write (replaced atomically if it exists)")
    p.add_argument("--metric", choices=("l2", "ip", "cosine"), default="l2",
                   help="l2: squared Euclidean (default); ip: inner product; cosine")
    p.add_argument("--n-lists", type=_positive_int, default=None,
                   help="k-means buckets (default about 4*sqrt(n))")
    p.add_argument("--n-bits", type=_n_bits, default=None,
                   help="bits per binary code, a multiple of 64 in 64..1024 (default: dim "
                        "rounded up to 64)")
    p.add_argument("--ids", metavar="IDS", default=None,
                   help="ids of the vectors, one per vector (.ivecs, .npy, .txt, .csv); "
                        "default 0..n-1")
    p.add_argument("--seed", type=_int, default=0,
                   help="seed of k-means and the rotation (default 0); same seed, same index")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="BLAS threads for training and encoding (needs threadpoolctl; "
                        "default: all)")

    p = command("query")
    p.add_argument("index", metavar="INDEX", help="index file")
    p.add_argument("queries", metavar="QUERIES", help="vector file of queries")
    _search_options(p)
    p.add_argument("-o", "--output", metavar="RESULTS", required=True,
                   help="results: .ivecs or .npy (ids), .csv or .jsonl (ids and distances), "
                        "or - for JSON lines on stdout")
    p.add_argument("--distances", metavar="FILE", default=None,
                   help="also write the distances, shape (n_queries, k): .fvecs, .npy, .csv")

    p = command("add")
    p.add_argument("index", metavar="INDEX", help="index file, rewritten in place")
    p.add_argument("vectors", metavar="VECTORS", help="vector file to add")
    p.add_argument("--ids", metavar="IDS", default=None,
                   help="ids of the new vectors (default: after the largest id in the index)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="BLAS threads for encoding (needs threadpoolctl; default: all)")

    p = command("remove")
    p.add_argument("index", metavar="INDEX", help="index file, rewritten in place")
    p.add_argument("ids", metavar="IDS",
                   help="file of ids (.ivecs, .npy, .txt, .csv) or a list such as 3,17,42")
    p.add_argument("--ignore-missing", action="store_true",
                   help="skip ids that are not in the index (default: error, nothing removed)")

    p = command("info")
    p.add_argument("index", metavar="INDEX", help="index file")

    p = command("eval")
    p.add_argument("index", metavar="INDEX", help="index file")
    p.add_argument("queries", metavar="QUERIES", help="vector file of queries")
    p.add_argument("groundtruth", metavar="GROUNDTRUTH", nargs="?", default=None,
                   help="true neighbour ids per query, nearest first (.ivecs, .npy, "
                        "file.hdf5:neighbors); computed exactly when omitted")
    _search_options(p)
    p.add_argument("--repeat", type=_positive_int, default=1,
                   help="time the search this many times, report the median QPS (default 1)")
    return parser


_RUN = {"build": _cmd_build, "query": _cmd_query, "add": _cmd_add, "remove": _cmd_remove,
        "info": _cmd_info, "eval": _cmd_eval}


def _error(message: str) -> None:
    print(f"binidx: error: {_one_line(message)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``binidx`` command line; returns the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when an input file or the index is at fault, 2 for a usage error,
        130 when interrupted.

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    binidx 0.1.0
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's own usage error
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    out = _Output(args)
    try:
        return _RUN[args.command](args, out)
    except UsageError as exc:
        if args.debug:
            raise
        _error(f"{exc} (see binidx {args.command} --help)")
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): not an error worth a message.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps exit quiet
        return EXIT_OK
    except (BinidxError, KeyError) as exc:
        if args.debug:
            raise
        _error(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc))
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        name = f"{exc.filename}: " if exc.filename else ""
        _error(f"{name}{(exc.strerror or str(exc))}")
        return EXIT_ERROR
    except MemoryError:
        if args.debug:
            raise
        _error(f"out of memory running '{args.command}'; use a smaller input or a machine "
               "with more memory")
        return EXIT_ERROR
    except Exception as exc:  # last resort: one line, not a traceback
        if args.debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
               "traceback and report it)")
        return EXIT_ERROR
