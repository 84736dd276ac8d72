"""The directory of a sharded index: manifest, template, one durable index per shard.

::

    PATH/
      sharded.json        manifest: uid, n_shards, routing rule, index parameters
      template.binidx     the trained, empty index every shard started from
      shard-0000/         a durable index (snapshot + write-ahead log, binidx.open)
        shard.json        which sharded index and which shard this directory is
      shard-0001/
      ...

The manifest is written last when the index is created, so a directory without one is
either not a sharded index or a creation that did not finish.
"""
from __future__ import annotations

import json
import os
from typing import Any

from .._format import atomic_write
from .._validation import check_probe_ratio
from ..errors import IndexFormatError, InvalidInputError
from ._routing import HASH_NAME

MANIFEST_NAME = "sharded.json"
TEMPLATE_NAME = "template.binidx"
SHARD_MARKER_NAME = "shard.json"
KIND = "binidx.ShardedIndex"
SHARD_KIND = "binidx.ShardedIndex.shard"
FORMAT_VERSION = 1

_REQUIRED = {"kind": str, "version": int, "uid": str, "n_shards": int, "routing": str,
             "dim": int, "metric": str, "n_bits": int, "n_lists": int}


def manifest_path(path: str) -> str:
    return os.path.join(path, MANIFEST_NAME)


def template_path(path: str) -> str:
    return os.path.join(path, TEMPLATE_NAME)


def shard_dir(path: str, shard: int) -> str:
    return os.path.join(path, f"shard-{shard:04d}")


def write_json(path: str, content: dict) -> None:
    """Write ``content`` as JSON atomically (temporary file, fsync, rename)."""
    data = (json.dumps(content, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            content = json.loads(f.read().decode())
    except FileNotFoundError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: cannot read the {what} ({exc}); the file is "
                               "damaged: restore it from a backup") from None
    if not isinstance(content, dict):
        raise IndexFormatError(f"{path}: the {what} is not a JSON object; the file is damaged")
    return content


def read_manifest(path: str) -> dict:
    """The manifest of the sharded index in ``path``, checked.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no manifest.
    IndexFormatError
        If the manifest is damaged, of a newer version or uses an unknown routing rule.
    """
    where = manifest_path(path)
    try:
        m = _read_json(where, "manifest of a sharded index")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} holds no sharded index (no {MANIFEST_NAME}); create one with "
            "ShardedIndex.create(path, n_shards, dim, train_x=...)") from None
    for key, typ in _REQUIRED.items():
        if not isinstance(m.get(key), typ) or isinstance(m.get(key), bool):
            raise IndexFormatError(f"{where}: field {key!r} is missing or not a "
                                   f"{typ.__name__}; the manifest is damaged")
    if m["kind"] != KIND:
        raise IndexFormatError(f"{where}: holds a {m['kind']!r}, not a {KIND}")
    if m["version"] > FORMAT_VERSION:
        raise IndexFormatError(f"{where}: format version {m['version']} is newer than this "
                               f"binidx reads ({FORMAT_VERSION}); upgrade binidx")
    if m["routing"] != HASH_NAME:
        raise IndexFormatError(f"{where}: routing rule {m['routing']!r} is unknown (this "
                               f"binidx knows {HASH_NAME!r}); upgrade binidx")
    if m["n_shards"] < 1:
        raise IndexFormatError(f"{where}: n_shards is {m['n_shards']}; the manifest is damaged")
    try:
        # Optional: manifests written before adaptive probing have none (fixed probing).
        m["probe_ratio"] = check_probe_ratio(m.get("probe_ratio"))
    except InvalidInputError:
        raise IndexFormatError(f"{where}: probe_ratio is {m['probe_ratio']!r}, not null or a "
                               "number >= 1; the manifest is damaged") from None
    return m


def write_shard_marker(directory: str, uid: str, shard: int, n_shards: int) -> None:
    write_json(os.path.join(directory, SHARD_MARKER_NAME),
               {"kind": SHARD_KIND, "uid": uid, "shard": shard, "n_shards": n_shards})


def check_shard_marker(directory: str, uid: str, shard: int, n_shards: int) -> None:
    """Refuse a shard directory that belongs to another sharded index or another shard.

    A directory copied or mounted in the wrong place would otherwise serve (and accept
    writes for) ids that the routing sends elsewhere.
    """
    where = os.path.join(directory, SHARD_MARKER_NAME)
    try:
        marker: dict[str, Any] = _read_json(where, "shard marker")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{directory} is not a shard of a sharded index (no {SHARD_MARKER_NAME}): is the "
            "storage mounted at the same path on this node?") from None
    expected = {"kind": SHARD_KIND, "uid": uid, "shard": shard, "n_shards": n_shards}
    got = {key: marker.get(key) for key in expected}
    if got != expected:
        raise IndexFormatError(
            f"{directory} belongs to another sharded index or shard ({got}, expected "
            f"{expected}); the directories were moved or mixed up")
