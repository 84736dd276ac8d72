#!/usr/bin/env python3
"""Build ``sift-1m``: 1,000,000 OpenCV SIFT descriptors of real photographs, exact top-100.

The same recipe as ``../shared/data/dev-sift`` (same OpenCV build and SIFT settings, photos
shipped in pinned Debian bookworm packages, fetched with ``apt-get download`` and unpacked
with ``dpkg-deb``, never installed), scaled up with more photo packages: the 51 dev-sift
photos, the 273 landscape photographs of ``endless-sky-data`` and the photographs among
the wallpapers of MATE, KDE Plasma and Lomiri, the OpenCV and scikit-image sample images
and the Stellarium landscape panoramas.  Every photo was looked at (contact sheets): no
drawings, renders or synthetic test patterns.

Output (texmex format, outside the repository)::

    $BINIDX_DATA_DIR/sift-1m/            (default ~/.cache/binidx-data/sift-1m)
        base.bvecs                 1,000,000 x 128 uint8
        query.bvecs                   10,000 x 128 uint8, from photos not in the base
        groundtruth.ivecs             10,000 x 100 int32, exact squared-L2 order, ties -> smaller id
        groundtruth_sqdist.ivecs      10,000 x 100 int32, the squared distances (exact integers)
        images.tsv, provenance.npz    which photo (and scale) every vector comes from
        meta.json, README.md          provenance, counts, checks, sanity statistics

Rebuild (root for apt-get; network access to Debian's archive and PyPI only)::

    python3 -m venv ~/.cache/binidx-dev-data/venv
    ~/.cache/binidx-dev-data/venv/bin/pip install numpy==2.4.6 \\
        opencv-python-headless==5.0.0.93 faiss-cpu==1.15.1
    THREADS=2 nice -n 10 ~/.cache/binidx-dev-data/venv/bin/python benchmarks/make_sift1m.py

Then ``python -m benchmarks run --dataset sift-1m`` loads it (see benchmarks/datasets.py).
``--plan`` stops after the descriptor pools (no ground truth); ``--verify`` only re-checks
the ground truth of an existing folder; ``--rewrite-readme`` re-renders README.md.

The building blocks (texmex I/O, SIFT extraction, Debian download, exact k-NN and its
independent re-check, sanity statistics) are imported from ``make_dev_data.py`` beside the
dev sets, so both datasets are made by the same code with the same settings.
"""
from __future__ import annotations

import os

# BLAS/OpenMP read these once, at import: set them before numpy/faiss are imported.
THREADS = int(os.environ.get("THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import fnmatch
import hashlib
import importlib.util
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NAME = "sift-1m"
SEED = 1_000_003
N_BASE = 1_000_000
N_QUERY = 10_000
K_GT = 100
#: At most this many distinct descriptors of one photo (both scales together) enter the
#: base pool, so that no photo dominates (the richest gives ~143k, the median ~2.7k).
CAP_BASE = 6_000
#: At most this many per query *group* enter the query pool, so that queries spread
#: evenly over the ~20 independent query groups (a photographer's series is one group).
CAP_QUERY = 700
#: A group of photos (not from dev-sift) gives queries when sha256(f"{salt}:{group}")
#: read as an integer is divisible by QUERY_EVERY: about 1 group in QUERY_EVERY.
QUERY_EVERY = 14
QUERY_SALT = "sift-1m-queries"
#: Tested with these; other versions give other descriptors (the build says so).
PINNED_PY = {"opencv-python-headless": "5.0.0.93", "numpy": "2.4.6", "faiss-cpu": "1.15.1"}
OPENCV_VERSION = "5.0.0"

# ======================================================================================
# photo sources: Debian bookworm packages, pinned by version and by the .deb's sha256
# ======================================================================================
PACKAGES = {  # package: (version, sha256 of the .deb)
    "kphotoalbum": ("5.9.1-1",
                    "00f8b26b5db1beb30a822d15f464b3c68ffa556d267870aa98a59aaaaf81ec43"),
    "tuxpaint-data": ("1:0.9.28-sdl2-1",
                      "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5"),
    "palapeli-data": ("4:22.12.3-1",
                      "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058"),
    "python3-sklearn": ("1.2.1+dfsg-1",
                        "ca0c6be401d14871c7e93cfdd8d1f561595dc65e6e2ad2501d568aee7f7efc58"),
    "digikam-data": ("4:7.9.0-1",
                     "a941a504ba7bdf9d276a43ca3c2a0b2b5b74a55420d8c4b4f29d681e96cbf450"),
    "endless-sky-data": ("0.9.8-1.2",
                         "e45835e05a11e84bb1a890a0ded390246a53b8318f21a25925aa70fa54f80c13"),
    "mate-backgrounds": ("1.26.0-1",
                         "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
    "plasma-workspace-wallpapers": (
        "4:5.27.5-2", "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"),
    "lomiri-wallpapers-16.04": (
        "20.04.0-2", "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab"),
    "lomiri-wallpapers-20.04": (
        "20.04.0-2", "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709"),
    "opencv-doc": ("4.6.0+dfsg-12",
                   "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a"),
    "python3-skimage": ("0.19.3-8",
                        "728d88c3e3440f1f3712de0805dc834d29248ff07e1eec8c0f3da07606f752f9"),
    "python-matplotlib-data": (
        "3.6.3-1", "e4150fcebd35ea11e0f66268da97ce62f98a4cf530c944f755f241da1a9158f9"),
    "stellarium-data": ("0.22.2-1",
                        "45aaebf39a814acbd6dcccea058c2f5651bcb5635599da03a215feeb51f4d5a5"),
}

ES = "usr/share/games/endless-sky/images/land/"
MATE = "usr/share/backgrounds/mate/nature/"
PLASMA = "usr/share/wallpapers/"
LOMIRI = "usr/share/backgrounds/"
OCV = "usr/share/doc/opencv-doc/examples/"
SKI = "usr/lib/python3/dist-packages/skimage/data/"
STEL = "usr/share/stellarium/landscapes/"

# (package, folder, file names or one glob).  What was left out, and why, is said beside.
SOURCES = [
    # all 273 'land' photos (morguefile / unsplash / Wikimedia / NASA / contributors)
    ("endless-sky-data", ES, "*.jpg"),
    # nature/: photographs; abstract/ and desktop/ are drawings and renders
    ("mate-backgrounds", MATE, [
        "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg",
        "GreenMeadow.jpg", "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg",
        "Wood.jpg", "YellowFlower.jpg"]),
    # the photographic Plasma wallpapers (one resolution each); Autumn is a painting,
    # Volna, MilkyWay, Flow, Shell, ... are renders
    ("plasma-workspace-wallpapers", PLASMA, [
        f"{w}/contents/images/2560x1600.jpg" for w in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
            "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")]),
    # Ubuntu Touch wallpaper photos; umang, analogpattern, Fossa, Infinite-Sea and
    # Painting-Colors are renders or composites
    ("lomiri-wallpapers-16.04", LOMIRI, [
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg",
        "Picture_0B_by_freespace.jpg", "Picture_1A_by_freespace.jpg",
        "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg"]),
    ("lomiri-wallpapers-20.04", LOMIRI, ["Kleiber_by_Lukas_Baubkus.jpg"]),
    # OpenCV's sample photos; left out: the chessboard calibration series, starry_night
    # (a painting), synthetic patterns, text renderings, depth maps, logos, drawings
    ("opencv-doc", OCV, [
        "alphamat/input_images/plant.jpg", "data/aero1.jpg", "data/aero3.jpg",
        "data/aloeL.jpg", "data/aloeR.jpg", "data/apple.jpg", "data/baboon.jpg",
        "data/basketball1.png", "data/basketball2.png", "data/board.jpg", "data/box.png",
        "data/box_in_scene.png", "data/building.jpg", "data/butterfly.jpg",
        "data/chicky_512.png", "data/ela_modified.jpg", "data/ela_original.jpg",
        "data/fruits.jpg", "data/graf1.png", "data/graf3.png", "data/home.jpg",
        "data/left.jpg", "data/right.jpg", "data/leuvenA.jpg", "data/leuvenB.jpg",
        "data/messi5.jpg", "data/orange.jpg", "data/rubberwhale1.png",
        "data/rubberwhale2.png", "data/squirrel_cls.jpg", "data/stuff.jpg",
        "data/sudoku.png", "dnn_superres/butterfly.png", "hfs/data/000.jpg", "reg/home.png",
        "text/scenetext01.jpg", "text/scenetext02.jpg", "text/scenetext03.jpg",
        "text/scenetext04.jpg", "text/scenetext05.jpg", "text/scenetext06.jpg",
        "text/scenetext_segmented_word01.jpg", "text/scenetext_segmented_word02.jpg",
        "text/scenetext_segmented_word03.jpg", "text/scenetext_segmented_word04.jpg",
        "text/scenetext_segmented_word05.jpg", "text/scenetext_word02.jpg",
        "text/scenetext_word04.jpg"]),
    # scikit-image's sample photos (not: color wheel, logo, text/page scans, motion blur)
    ("python3-skimage", SKI, [
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
        "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
        "moon.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg",
        "rocket.jpg"]),
    ("python-matplotlib-data", "usr/share/matplotlib/mpl-data/sample_data/",
     ["grace_hopper.jpg"]),
    # Stellarium's photographic landscape panoramas (tiles of one scene stay one group);
    # 'ocean' is rendered, grossmugl a thin strip
    ("stellarium-data", STEL, [
        "garching/garching-gl1.png", "garching/garching-gl2.png", "garching/garching-gl3.png",
        "garching/garching-gl4.png", "garching/garching-ground3.png",
        "guereins/guereins1.png", "guereins/guereins2.png", "guereins/guereins6.png",
        "guereins/guereins7.png", "guereins/guereins8.png", "guereins/guereinsb.png",
        "hurricane/hurricane1.png", "hurricane/hurricane2.png", "hurricane/hurricane3.png",
        "hurricane/hurricane4.png", "hurricane/hurricane5.png", "hurricane/hurricane6.png",
        "hurricane/hurricane7.png", "hurricane/hurricane8.png", "hurricane/hurricaneb.png",
        "mars/mars.png", "moon/apollo17.png", "trees/trees_512.png"]),
]

# Photos of one scene, object or series stay in one split: (package, regex on the path
# inside `folder`) -> group name.  Anything unmatched is a group of its own.
_ES_SERIES = ("bwerner", "myrabella", "dmottl", "mfield", "nasa", "station", "space", "loc")
GROUP_RULES = [
    ("endless-sky-data", rf"^({'|'.join(_ES_SERIES)})\d", r"\1"),
    ("endless-sky-data", r"-(sfiera|harro|iridium|spfld|striker)\.jpg$", r"\1"),
    ("lomiri-wallpapers-16.04", r"_by_(.+)\.jpg$", r"\1"),
    ("opencv-doc", r"data/(aloe|basketball|box|ela_|graf|leuven|rubberwhale)", r"\1"),
    ("opencv-doc", r"data/(left|right)\.jpg$", "stereo-books"),
    ("opencv-doc", r"^text/", "scenetext"),
    ("python3-skimage", r"^motorcycle_", "motorcycle"),
    ("stellarium-data", r"^([a-z0-9]+)/", r"\1"),
]


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, flush=True)


def import_dev_module(dev_dir: Path):
    """``make_dev_data`` from the shared data folder (only numpy is imported with it)."""
    path = dev_dir / "make_dev_data.py"
    if not path.exists():
        raise SystemExit(f"{path} not found: pass --dev-data DIR, the folder holding "
                         "make_dev_data.py and dev-sift/ (default ../shared/data)")
    spec = importlib.util.spec_from_file_location("make_dev_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def group_of(pkg: str, rel: str, dev_groups: dict) -> str:
    """Group name of one photo; photos of a group always share a split."""
    if (pkg, rel) in dev_groups:
        return dev_groups[(pkg, rel)]
    for p, pattern, repl in GROUP_RULES:
        if p == pkg:
            m = re.search(pattern, rel)
            if m:
                return f"{pkg}:{m.expand(repl)}"
    return f"{pkg}:{rel}"


def query_group(group: str) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{QUERY_SALT}:{group}".encode()).digest()[:8], "big")
    return h % QUERY_EVERY == 0


def deb_members(deb: Path) -> list[str]:
    """Regular-file paths inside a .deb (without the leading ./)."""
    p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    out = subprocess.run(["tar", "-t"], stdin=p1.stdout, capture_output=True, text=True,
                         check=True).stdout
    p1.stdout.close()
    p1.wait()
    return [m[2:] for m in out.splitlines() if not m.endswith("/")]


def photo_list(mdd, work: Path, allow_mismatch: bool):
    """Download/unpack the packages; return photo records (without descriptors) in a fixed
    order: first the dev-sift photos (their own split), then SOURCES."""
    debs, versions, deb_sha, problems = {}, {}, {}, []
    for pkg, (ver, sha) in PACKAGES.items():
        deb, got = mdd.fetch_deb(work, pkg, ver)
        debs[pkg], versions[pkg] = deb, got
        deb_sha[pkg] = mdd.sha256_file(deb)
        if got != ver or deb_sha[pkg] != sha:
            problems.append(f"{pkg}: got {got} sha256 {deb_sha[pkg][:16]}..., "
                            f"pinned {ver} {sha[:16]}...")
    if problems and not allow_mismatch:
        raise SystemExit("packages differ from the pinned ones:\n  " + "\n  ".join(problems)
                         + "\nrerun with --allow-mismatch to build from them anyway")

    photos = []
    dev_groups = {}
    for pkg, rel, split, sha_prefix in mdd.PHOTOS:
        stem = re.sub(r"(_\d+)?\.jpg$", "", rel.rsplit("/", 1)[1])
        dev_groups[(pkg, rel)] = f"dev-sift:{stem}"
        photos.append({"package": pkg, "path": rel, "split": split, "group": f"dev-sift:{stem}",
                       "sha_prefix": sha_prefix, "dev_sift": True})
    for pkg, folder, names in SOURCES:
        if isinstance(names, str):
            members = deb_members(debs[pkg])
            names = sorted(m[len(folder):] for m in members
                           if m.startswith(folder) and fnmatch.fnmatch(m[len(folder):], names))
        for name in names:
            g = group_of(pkg, name, {})
            photos.append({"package": pkg, "path": folder + name, "group": g,
                           "split": "query" if query_group(g) else "base", "dev_sift": False})
    for pkg in PACKAGES:
        mdd.unpack_members(debs[pkg], [p["path"] for p in photos if p["package"] == pkg],
                           work / "debx" / pkg)
    seen = set()
    for i, p in enumerate(photos):
        if (p["package"], p["path"]) in seen:
            raise SystemExit(f"photo listed twice: {p['package']}:{p['path']}")
        seen.add((p["package"], p["path"]))
        p["id"] = i
    return photos, versions, deb_sha, problems


def extract_all(mdd, photos, work: Path, threads: int):
    """SIFT descriptors of every photo at every scale (cached per image sha256)."""
    import cv2

    cv2.setNumThreads(threads)
    if cv2.__version__ != OPENCV_VERSION:
        log(f"WARNING: OpenCV {cv2.__version__}; the recipe pins {OPENCV_VERSION} "
            "(other versions give other descriptors)")
    cache = work / "sift_cache"
    cache.mkdir(parents=True, exist_ok=True)
    tag = mdd.sha256_bytes(json.dumps([mdd.SIFT_PARAMS, mdd.MAX_SIDE,
                                       cv2.__version__]).encode())[:10]
    descs = []
    mismatches = []
    fresh = 0  # (photo, scale) pairs described in this run rather than read from the cache
    t0 = time.time()
    for p in photos:
        path = work / "debx" / p["package"] / p["path"]
        p["sha256"] = mdd.sha256_file(path)
        if p.get("sha_prefix") and not p["sha256"].startswith(p["sha_prefix"]):
            mismatches.append(f"{p['package']}:{p['path']}")
        img, (w0, h0) = mdd.load_gray(path)
        p.update(width=int(w0), height=int(h0), used_width=int(img.shape[1]),
                 used_height=int(img.shape[0]), per_scale={})
        per = []
        for sc in mdd.SIFT_SCALES:
            cf = cache / f"{p['sha256'][:20]}_{sc:.4f}_{tag}.npy"
            if cf.exists():
                d = np.load(cf)
            else:
                d = mdd.sift_extract(img, sc)
                np.save(cf, d)
                fresh += 1
            p["per_scale"][f"{sc:g}"] = len(d)
            per.append(d)
        descs.append(per)
        if (p["id"] + 1) % 25 == 0 or p["id"] + 1 == len(photos):
            log(f"sift {p['id'] + 1}/{len(photos)} ({time.time() - t0:.0f}s)")
    return descs, mismatches, fresh


def build_pools(photos, descs, seed):
    """Distinct, non-zero descriptors, capped per base photo and per query group; the
    query pool holds only descriptors that occur nowhere in the base photos."""
    rows, img, scl = [], [], []
    order = sorted(photos, key=lambda p: (p["split"] != "base", p["id"]))  # base photos first
    for p in order:
        for si, d in enumerate(descs[p["id"]]):
            rows.append(d)
            img.append(np.full(len(d), p["id"], np.int32))
            scl.append(np.full(len(d), si, np.uint8))
    allv = np.ascontiguousarray(np.concatenate(rows))
    img, scl = np.concatenate(img), np.concatenate(scl)
    is_base = np.array([p["split"] == "base" for p in photos])[img]
    nb = int(is_base.sum())  # base rows come first (see `order`)
    _, first, inv = np.unique(allv.view(np.dtype((np.void, 128))).ravel(),
                              return_index=True, return_inverse=True)
    keep = (first[inv.ravel()] == np.arange(len(allv))) & allv.any(1)
    pools = {"base_raw": nb, "query_raw": int(len(allv) - nb),
             "base_distinct": int(keep[:nb].sum()),
             "query_distinct_not_in_base": int(keep[nb:].sum())}
    def capped(idx, cap, key: str):
        if len(idx) <= cap:
            return idx
        # seeded by the photo's sha256 / the group's name: one photo's (group's) choice
        # never depends on the other photos
        rng = np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)])
        return np.sort(rng.choice(idx, cap, replace=False))

    sel = {"base": [], "query": []}
    qgroups: dict[str, list] = {}
    for p in photos:
        idx = np.nonzero(keep & (img == p["id"]))[0]
        p["distinct"] = len(idx)
        if p["split"] == "base":
            idx = capped(idx, CAP_BASE, p["sha256"])
            p["in_pool"] = len(idx)
            sel["base"].append(idx)
        else:
            qgroups.setdefault(p["group"], []).append(idx)
    for g in sorted(qgroups):
        idx = capped(np.concatenate(qgroups[g]), CAP_QUERY, g)
        sel["query"].append(idx)
    in_pool = np.bincount(img[np.concatenate(sel["query"])], minlength=len(photos))
    for p in photos:
        if p["split"] == "query":
            p["in_pool"] = int(in_pool[p["id"]])
    for split in ("base", "query"):
        sel[split] = np.concatenate(sel[split])
    pools["base_after_cap"] = len(sel["base"])
    pools["query_after_cap"] = len(sel["query"])
    return allv, img, scl, sel, pools


def ivf_recall(base, query, gt, nlist, nprobes, threads, seed, n_train=100_000):
    """recall@10 of faiss IndexIVFFlat at several nprobe (a sanity check of the data's
    cluster structure, not a benchmark)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    xb = np.ascontiguousarray(base, dtype=np.float32)
    rng = np.random.default_rng(seed)
    train = xb[np.sort(rng.choice(len(xb), min(n_train, len(xb)), replace=False))]
    quant = faiss.IndexFlatL2(xb.shape[1])
    index = faiss.IndexIVFFlat(quant, xb.shape[1], nlist)
    index.cp.seed = seed
    index.train(train)
    index.add(xb)
    q = np.ascontiguousarray(query, dtype=np.float32)
    out = {}
    for npb in nprobes:
        index.nprobe = npb
        _, ids = index.search(q, 10)
        hits = [len(set(a) & set(b[:10])) for a, b in zip(ids, gt)]
        out[str(npb)] = round(float(np.mean(hits)) / 10, 4)
    return {"nlist": nlist, "train_points": len(train), "queries": len(q),
            "recall_at_10_by_nprobe": out}


def build(args, mdd):
    t0 = time.time()
    work, outdir = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    photos, versions, deb_sha, pkg_problems = photo_list(mdd, work, args.allow_mismatch)
    nq_photos = sum(p["split"] == "query" for p in photos)
    log(f"{len(photos)} photos ({len(photos) - nq_photos} base, {nq_photos} query) "
        f"in {len({p['group'] for p in photos})} groups")
    descs, mismatches, fresh = extract_all(mdd, photos, work, args.threads)
    if mismatches and not args.allow_mismatch:
        raise SystemExit(f"dev-sift photos differ from the shipped build (sha256): {mismatches}")
    t_sift = time.time() - t0
    allv, img, scl, sel, pools = build_pools(photos, descs, args.seed)
    log(f"pools {pools}")
    if args.plan:
        per = np.array([p["distinct"] for p in photos if p["split"] == "base"])
        log(f"base photos: distinct descriptors per photo p10/50/90/max "
            f"{np.percentile(per, [10, 50, 90, 100]).astype(int).tolist()}")
        for p in photos:
            if p["split"] == "query":
                log(f"  query photo {p['group']} {p['path'].rsplit('/', 1)[1]} {p['distinct']}")
        return
    if pools["base_after_cap"] < N_BASE or pools["query_after_cap"] < N_QUERY:
        raise SystemExit(f"not enough descriptors after the per-photo caps: {pools}")
    selb = sel["base"][np.random.default_rng(args.seed).choice(len(sel["base"]), N_BASE,
                                                                replace=False)]
    selq = sel["query"][np.random.default_rng(args.seed + 1).choice(len(sel["query"]),
                                                                     N_QUERY, replace=False)]
    base, query = allv[selb], allv[selq]
    del allv

    t = time.time()
    gt, gt_sq, diag = mdd.exact_knn(base, query, K_GT, "l2", args.threads)
    t_gt = time.time() - t
    log(f"ground truth in {t_gt:.0f}s {diag}")
    outdir.mkdir(parents=True, exist_ok=True)
    mdd.write_vecs(outdir / "base.bvecs", base)
    mdd.write_vecs(outdir / "query.bvecs", query)
    mdd.write_vecs(outdir / "groundtruth.ivecs", gt)
    mdd.write_vecs(outdir / "groundtruth_sqdist.ivecs", gt_sq.astype(np.int64))
    np.savez_compressed(outdir / "provenance.npz", base_image=img[selb], base_scale=scl[selb],
                        query_image=img[selq], query_scale=scl[selq],
                        scales=np.array(mdd.SIFT_SCALES))
    nbv = np.bincount(img[selb], minlength=len(photos))
    nqv = np.bincount(img[selq], minlength=len(photos))
    for p in photos:
        p["base_vectors"], p["query_vectors"] = int(nbv[p["id"]]), int(nqv[p["id"]])
        p.pop("sha_prefix", None)
    write_images_tsv(outdir / "images.tsv", photos, mdd.SIFT_SCALES)

    chk = recheck(mdd, outdir, args)
    st = mdd.sanity_stats(base, query, np.sqrt(gt_sq), "l2", args.seed)
    st["value_max"] = int(base.max())
    st["mean"] = float(base.mean())
    st["fraction_zero_components"] = float((base == 0).mean())
    st["l2_norm"] = mdd.pct(np.linalg.norm(base.astype(np.float64), axis=1))
    st["base_per_scale"] = {f"{s:g}": int((scl[selb] == i).sum())
                            for i, s in enumerate(mdd.SIFT_SCALES)}
    st["query_per_scale"] = {f"{s:g}": int((scl[selq] == i).sum())
                             for i, s in enumerate(mdd.SIFT_SCALES)}
    ivf = {}
    if not args.no_ivf_check:
        t = time.time()
        nq = min(2000, len(query))
        ivf = ivf_recall(base, query[:nq], gt[:nq], 1024, (1, 4, 16, 64), args.threads,
                         args.seed)
        ivf["seconds"] = round(time.time() - t, 1)
        log(f"IVF check {ivf}")
    dev = compare_dev(mdd, Path(args.dev_data), args)

    import cv2

    meta = {
        "name": NAME, "seed": args.seed, "metric": "L2", "k": K_GT, "dim": 128,
        "n_base": N_BASE, "n_query": N_QUERY, "sift_params": mdd.SIFT_PARAMS,
        "scales": list(mdd.SIFT_SCALES), "max_side": mdd.MAX_SIDE, "opencv": cv2.__version__,
        "cap_base_per_photo": CAP_BASE, "cap_query_per_group": CAP_QUERY,
        "query_groups": {"rule": f"sha256('{QUERY_SALT}:' + group) % {QUERY_EVERY} == 0, "
                                 "plus the dev-sift query photos"},
        "debian_packages": {k: {"version": versions[k], "deb_sha256": deb_sha[k]}
                            for k in PACKAGES},
        "package_mismatches": pkg_problems, "image_mismatches": mismatches,
        "python_packages": mdd.pip_versions(list(PINNED_PY)),
        "pools": pools, "gt": diag, "recheck": chk, "stats": st, "ivf_check": ivf,
        "dev_sift_comparison": dev, "images": photos,
        "timings_s": {"sift_and_download": round(t_sift, 1), "ground_truth": round(t_gt, 1),
                      "total": round(time.time() - t0, 1)},
        "sift_described_this_run": f"{fresh} of {len(photos) * len(mdd.SIFT_SCALES)} "
                                   "(photo, scale) pairs; the rest came from the cache",
        "threads": args.threads, "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    meta["files"] = mdd.file_rows(outdir)
    (outdir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_readme(outdir, meta, mdd)
    log(f"{NAME} done in {time.time() - t0:.0f}s -> {outdir}")


def write_images_tsv(path: Path, photos, scales):
    cols = (["image_id", "split", "group", "package", "path", "width", "height",
             "used_width", "used_height"] + [f"desc_scale_{s:g}" for s in scales]
            + ["distinct", "in_pool", "base_vectors", "query_vectors", "sha256"])
    with open(path, "w") as f:
        f.write("\t".join(cols) + "\n")
        for p in photos:
            vals = ([p["id"], p["split"], p["group"], p["package"], p["path"], p["width"],
                     p["height"], p["used_width"], p["used_height"]]
                    + list(p["per_scale"].values())
                    + [p["distinct"], p["in_pool"], p["base_vectors"], p["query_vectors"],
                       p["sha256"]])
            f.write("\t".join(str(v) for v in vals) + "\n")


def recheck(mdd, outdir: Path, args):
    """Reload the files and re-check the ground truth by an independent numpy brute force
    (make_dev_data.recheck_ground_truth) on a random sample of queries."""
    base = mdd.read_vecs(outdir / "base.bvecs")
    query = mdd.read_vecs(outdir / "query.bvecs")
    gt = mdd.read_vecs(outdir / "groundtruth.ivecs")
    sq = mdd.read_vecs(outdir / "groundtruth_sqdist.ivecs")
    if base.shape != (N_BASE, 128) or query.shape != (N_QUERY, 128):
        raise RuntimeError(f"{outdir}: unexpected shapes {base.shape}, {query.shape}")
    if gt.shape != (N_QUERY, K_GT) or gt.min() < 0 or gt.max() >= N_BASE or sq.shape != gt.shape:
        raise RuntimeError(f"{outdir}: bad ground truth shape or ids {gt.shape}")
    d = base[gt[:50]].astype(np.int64) - query[:50, None, :].astype(np.int64)
    if not np.array_equal((d * d).sum(-1), sq[:50]):
        raise RuntimeError(f"{outdir}: groundtruth_sqdist.ivecs disagrees with the vectors")
    res = mdd.recheck_ground_truth(base, query, gt, "l2", args.recheck, args.seed)
    log(f"re-check {res}")
    if res["equivalent_lists"] != res["queries_checked"]:
        raise RuntimeError(f"{outdir}: ground truth does not match the brute-force re-check")
    return res


def compare_dev(mdd, dev_dir: Path, args):
    """dev-sift's sanity statistics (from its meta.json) and, when its files are there, the
    same IVF check on it: the two sets should look alike."""
    meta_path = dev_dir / "dev-sift" / "meta.json"
    if not meta_path.exists():
        return {}
    dm = json.loads(meta_path.read_text())
    out = {"stats": {k: dm["stats"][k] for k in ("nn1", "nn10", "nn100", "random_pair",
                                                 "relative_contrast", "lid_k100", "mean",
                                                 "fraction_zero_components", "l2_norm")}}
    if not args.no_ivf_check:
        base = mdd.read_vecs(dev_dir / "dev-sift" / "base.bvecs")
        query = mdd.read_vecs(dev_dir / "dev-sift" / "query.bvecs")
        gt = mdd.read_vecs(dev_dir / "dev-sift" / "groundtruth.ivecs")
        out["ivf_check"] = ivf_recall(base, query, gt, 1024, (1, 4, 16, 64), args.threads,
                                      args.seed)
        log(f"dev-sift IVF check {out['ivf_check']}")
    return out


def write_readme(outdir: Path, m, mdd):
    st, pool, gtd, rc = m["stats"], m["pools"], m["gt"], m["recheck"]
    photos = m["images"]
    nbp = sum(p["split"] == "base" for p in photos)
    nqp = len(photos) - nbp
    capped = sum(p["distinct"] > p["in_pool"] for p in photos if p["split"] == "base")
    n_groups = len({p["group"] for p in photos})
    n_qgroups = len({p["group"] for p in photos if p["split"] == "query"})
    L = [f"# {m['name']}: 1M SIFT descriptors of real photographs", "",
         "Made by `benchmarks/make_sift1m.py` of the binidx repository with the recipe of",
         "`../shared/data/dev-sift` (same code, OpenCV build and SIFT settings), from more photos.",
         "", "| file | shape | type |", "| --- | --- | --- |",
         f"| `base.bvecs` | {m['n_base']:,} x 128 | uint8 (texmex bvecs) |",
         f"| `query.bvecs` | {m['n_query']:,} x 128 | uint8 |",
         f"| `groundtruth.ivecs` | {m['n_query']:,} x {m['k']} | int32, 0-based base ids |",
         f"| `groundtruth_sqdist.ivecs` | {m['n_query']:,} x {m['k']} | int32, exact squared L2 |",
         "| `images.tsv` | one row per photo | split, group, source, size, counts, sha256 |",
         ("| `provenance.npz` | per vector | `base_image`/`query_image` (image_id), "
          "`base_scale`/`query_scale` (index into `scales`) |"),
         "", "**Metric: L2.** Ground truth = exact top-100 by squared L2 on the integer values,",
         "ties broken by the smaller base id.", "", "## How it was made", "",
         f"* **Photos:** {len(photos)} real photographs ({nbp} base, {nqp} query) from Debian",
         "  bookworm packages fetched with `apt-get download` (version and .deb sha256 pinned)",
         "  and unpacked with `dpkg-deb`, never installed. Every photo was looked at on contact",
         "  sheets; drawings, renders, paintings and synthetic test images were left out.", ""]
    for pkg, v in m["debian_packages"].items():
        n = sum(p["package"] == pkg for p in photos)
        L.append(f"  * `{pkg}` {v['version']} (`{v['deb_sha256'][:16]}...`): {n} photo(s)")
    L += ["",
          "* **Splits:** photos are grouped by scene or series (panorama tiles, stereo pairs,",
          "  one photographer's series); a whole group is base or query. The 51 dev-sift photos",
          "  keep their dev-sift split (so dev-sift's base photos are base here too); every",
          f"  other group is a query group when {m['query_groups']['rule'].split(',')[0]}.",
          f"  {n_groups} groups, {n_qgroups} of them query groups.",
          f"* **Descriptors:** OpenCV {m['opencv']}, `cv2.SIFT_create("
          + ", ".join(f"{k}={v}" for k, v in m["sift_params"].items()) + ")`, grey image,",
          f"  long side shrunk to at most {m['max_side']} px, scales {m['scales']}; keypoints",
          "  sorted by geometry (all as in `make_dev_data.sift_extract`).",
          "* **Cleaning and caps:** exact duplicates (first occurrence kept, base photos first)",
          "  and all-zero descriptors removed; query descriptors that occur in any base photo",
          (f"  removed. Then at most {m['cap_base_per_photo']:,} distinct descriptors per base "
           f"photo ({capped} base photos"),
          (f"  were capped) and {m['cap_query_per_group']:,} per query group are kept (seeded "
           "samples), so that no photo dominates the base and no group the queries."),
          (f"  Base photos gave {pool['base_raw']:,} descriptors ({pool['base_distinct']:,} "
           f"distinct, {pool['base_after_cap']:,} after the caps);"),
          (f"  query photos {pool['query_raw']:,} ({pool['query_distinct_not_in_base']:,} "
           f"distinct and not in the base, {pool['query_after_cap']:,} after the caps)."),
          f"* **Sampling:** {m['n_base']:,} base vectors uniformly without replacement from the",
          f"  capped pool (`numpy.random.default_rng({m['seed']}).choice`), {m['n_query']:,} queries",
          f"  with `default_rng({m['seed'] + 1})`; file order = draw order. Per scale: base",
          f"  {st['base_per_scale']}, queries {st['query_per_scale']}.",
          f"* **Ground truth:** faiss `IndexFlatL2` proposes {gtd['candidates_per_query']} candidates",
          "  per query, re-scored exactly in float64 and sorted by (distance, id); queries not",
          (f"  provably complete are brute-forced ({gtd['full_scans']}). Ties at rank 100/101: "
           f"{gtd['ties_at_rank_k']}."),
          "* **Checked:** files reloaded; independent numpy brute force on",
          f"  {rc['queries_checked']} random queries: {rc['identical_id_lists']} identical id lists,",
          (f"  {rc['equivalent_lists']} with identical distances; `groundtruth_sqdist` "
           "recomputed from the vectors."),
          "", "## Sanity check (L2 distance, not squared) next to dev-sift", ""]
    dev = m.get("dev_sift_comparison", {}).get("stats")
    rows = [("1st neighbour", "nn1"), ("10th neighbour", "nn10"), ("100th neighbour", "nn100"),
            ("random query-base pair", "random_pair")]
    L += [("| L2 distance from a query to its | sift-1m p10 / **median** / p90 | "
           "dev-sift p10 / **median** / p90 |"), "| --- | --- | --- |"]
    for label, key in rows:
        a = st[key]
        b = dev[key] if dev else None
        L.append(f"| {label} | {a['p10']:.0f} / **{a['p50']:.0f}** / {a['p90']:.0f} | "
                 + (f"{b['p10']:.0f} / **{b['p50']:.0f}** / {b['p90']:.0f} |" if b else "- |"))
    extra = [("relative contrast", st["relative_contrast"], dev and dev["relative_contrast"]),
             ("LID (MLE, k=100), median", st["lid_k100"]["p50"], dev and dev["lid_k100"]["p50"]),
             ("mean component", st["mean"], dev and dev["mean"]),
             ("zero components", st["fraction_zero_components"],
              dev and dev["fraction_zero_components"]),
             ("L2 norm, median", st["l2_norm"]["p50"], dev and dev["l2_norm"]["p50"])]
    for label, a, b in extra:
        L.append(f"| {label} | {a:.3g} | {b:.3g} |" if b else f"| {label} | {a:.3g} | - |")
    ivf = m.get("ivf_check")
    if ivf:
        dv = m.get("dev_sift_comparison", {}).get("ivf_check")
        L += ["", (f"faiss `IndexIVFFlat` (nlist {ivf['nlist']}, trained on "
                   f"{ivf['train_points']:,} base vectors), recall@10 on {ivf['queries']:,} "
                   "queries:"), "",
              "| nprobe | " + " | ".join(ivf["recall_at_10_by_nprobe"]) + " |",
              "| --- |" + " ---: |" * len(ivf["recall_at_10_by_nprobe"]),
              "| sift-1m | " + " | ".join(f"{v:.3f}" for v in
                                         ivf["recall_at_10_by_nprobe"].values()) + " |"]
        if dv:
            L.append("| dev-sift | " + " | ".join(f"{v:.3f}" for v in
                                                  dv["recall_at_10_by_nprobe"].values()) + " |")
    L += ["", "## Photos per package and split", "",
          "| package | base photos | base vectors | query photos | query vectors |",
          "| --- | ---: | ---: | ---: | ---: |"]
    for pkg in m["debian_packages"]:
        ps = [p for p in photos if p["package"] == pkg]
        b = [p for p in ps if p["split"] == "base"]
        q = [p for p in ps if p["split"] == "query"]
        L.append(f"| `{pkg}` | {len(b)} | {sum(p['base_vectors'] for p in b):,} | {len(q)} | "
                 f"{sum(p['query_vectors'] for p in q):,} |")
    per = np.array([p["base_vectors"] for p in photos if p["split"] == "base"])
    L += ["", f"Base vectors per base photo: median {np.median(per):.0f}, max {per.max():,} "
          f"({100 * per.max() / m['n_base']:.2f}% of the base). Query photos: "
          + ", ".join(f"`{p['path'].rsplit('/', 1)[1]}`" for p in photos if p["split"] == "query")
          + ".", "", "## Files", "", "| file | bytes | sha256 |", "| --- | ---: | --- |"]
    for f in m["files"]:
        L.append(f"| `{f['name']}` | {f['bytes']:,} | `{f['sha256'][:16]}...` |")
    t = m["timings_s"]
    L += ["", f"Built in {t['total']:.0f} s (download + SIFT {t['sift_and_download']:.0f} s: "
          f"{m.get('sift_described_this_run', '?')}; "
          f"ground truth {t['ground_truth']:.0f} s) with {m['threads']} thread(s) on "
          f"{m['platform']}, Python {m['python']}; "
          + ", ".join(f"{k}=={v}" for k, v in m["python_packages"].items()) + ".", "",
          "Rebuild: see the docstring of `benchmarks/make_sift1m.py` (the same command gives the",
          "same files: fixed photo list, seeds and order)."]
    (outdir / "README.md").write_text("\n".join(L) + "\n")


def main():
    data_root = Path(os.environ.get("BINIDX_DATA_DIR",
                                    Path.home() / ".cache" / "binidx-data")).expanduser()
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(data_root / NAME),
                    help="output folder (default $BINIDX_DATA_DIR/sift-1m, "
                         "BINIDX_DATA_DIR defaulting to ~/.cache/binidx-data)")
    ap.add_argument("--work", default=str(data_root / "work"),
                    help="downloads, unpacked photos and the SIFT cache")
    ap.add_argument("--dev-data", default=os.environ.get(
        "BINIDX_SHARED_DATA", str(REPO.parent / "shared" / "data")),
        help="folder with make_dev_data.py and dev-sift/ (default ../shared/data)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="threads for OpenCV and faiss (default $THREADS or 1)")
    ap.add_argument("--recheck", type=int, default=200,
                    help="queries re-checked by brute force")
    ap.add_argument("--allow-mismatch", action="store_true",
                    help="build even if a package or dev-sift photo differs from the pins")
    ap.add_argument("--no-ivf-check", action="store_true", help="skip the faiss IVF check")
    ap.add_argument("--plan", action="store_true",
                    help="stop after the descriptor pools (prints per-photo counts)")
    ap.add_argument("--verify", action="store_true", help="only re-check an existing folder")
    ap.add_argument("--rewrite-readme", action="store_true",
                    help="only re-render README.md from meta.json")
    args = ap.parse_args()
    mdd = import_dev_module(Path(args.dev_data))
    if args.rewrite_readme:
        write_readme(Path(args.out), json.loads((Path(args.out) / "meta.json").read_text()), mdd)
    elif args.verify:
        recheck(mdd, Path(args.out), args)
    else:
        build(args, mdd)


if __name__ == "__main__":
    main()
