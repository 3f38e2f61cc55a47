r"""Host input pipeline: images/s of read + decode + random-resized crops + batch, jaxssl vs torchvision/lightly.

Part 1 (`--peers`, issue 17): the full host path over the same folder of ImageNet-resolution JPEGs
(Imagenette JPEGs upscaled x--upscale, in class sub-folders), one core each, batch 64, uint8 views:
- jaxssl: `jaxssl.data.encoded.make_train_iter("folder:DIR", ...)` (grain, no workers, no threads),
  which reads, decodes once (JPEG draft where the crops allow), crops every view and stacks; once per
  resize backend (`resize="pil"`: Pillow decode and resize, torchvision's pixels; `"opencv"`: simplejpeg
  decode, cv2 INTER_AREA from 2x shrink else INTER_LINEAR, the trainer's default `config.data.resize`;
  jaxssl/data/resize.py).
- torchvision: `ImageFolder` + `RandomResizedCrop` per view + `PILToTensor`, `DataLoader(batch_size=64,
  num_workers=0)`, `torch.set_num_threads(1)` (decodes with PIL's full decode, `convert("RGB")`).
- lightly: `lightly.transforms.DINOTransform()` in the same DataLoader: its multi-crop plus its colour
  ops, float tensors and normalisation on the host (jaxssl and the torchvision column do those on device).
Each contender runs in its own process (jaxssl in this interpreter, the peers in --peer-python, default
.venv-bench) and times whole passes over the folder after one warm-up batch; blocks alternate over
contenders. The per-stage split of jaxssl's path (read / decode incl. draft / crop-resize / stack), for
each resize backend, is timed in this process (median of 3 passes). The mean |difference| between the two backends' crops
(same boxes, uint8 levels) is measured on the same files and on real 224 px photos
(imagenette_val_224_sample.npz) cut into 2 x 96 and 2 x 48 px views.

Part 2 (the skeleton's table): per source image, from its JPEG bytes already in memory:

- decode: `transforms.decode` (full decode to RGB uint8), the floor of any crop path.
- 2x224 / 2x224+6x96 (DINO): `transforms.multi_crop` with scale (0.08, 1) / (0.4, 1) global and
  (0.05, 0.4) local, `use_draft` on and off (the draft rule: see jaxssl/data/transforms.py), Pillow
  resize; "opencv": the same with `resize="opencv"` and draft on.

Files: the first --files JPEGs of ../shared/data/imagenette2-112_train.tar as stored (shorter
side 112 px: every 224 crop is an upsample, so draft never applies), and the same files upscaled
x--upscale (bicubic) and re-encoded at quality 85, a stand-in for ImageNet's resolution (about
400-500 px); upscaled photos are smoother than real ones, so decode costs are indicative only.
Blocks are interleaved over the contenders; the table gives the median images/s.

  .venv/bin/python benchmarks/input_pipeline.py --files 500 --blocks 3            # part 2
  bash benchmarks/setup.sh && .venv/bin/python benchmarks/input_pipeline.py --peers --files 256 --blocks 5

Writes benchmarks/results/input_pipeline<tag>.json (part 2), input_pipeline_peers<tag>.json (part 1).
"""
from __future__ import annotations

import io
import os
import statistics
import tarfile
import time

import _common
import numpy as np
from PIL import Image


argparse_hidden = "internal: one contender in a subprocess"
GLOBAL = {"crop_size": 224, "crop_scale": (0.08, 1.0)}
DINO = [{"crop_size": 224, "crop_scale": (0.4, 1.0)}] * 2 + [{"crop_size": 96, "crop_scale": (0.05, 0.4)}] * 6


def load(n: int, upscale: int) -> tuple[list[bytes], float]:
    """The first n JPEGs of the tar (sorted), optionally upscaled and re-encoded; and read s/image."""
    path = _common.data_file("imagenette2-112_train.tar")
    if path is None:
        raise SystemExit("imagenette2-112_train.tar not found (BENCH_DATA_DIR or ../shared/data).")
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)[:n]
        start = time.perf_counter()  # Reading the listed members only (page cache warm or not).
        files = [tar.extractfile(m).read() for m in members]
    read_s = (time.perf_counter() - start) / len(files)
    if upscale > 1:
        out = []
        for data in files:
            img = Image.open(io.BytesIO(data))
            img = img.resize((img.width * upscale, img.height * upscale), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            out.append(buf.getvalue())
        files = out
    return files, read_s


def contenders(files: list[bytes]) -> dict:
    """name -> function that processes every file once."""
    from jaxssl.data import transforms  # pylint: disable=g-import-not-at-top  (not in .venv-bench)
    rng = np.random.default_rng(0)

    def crops(views, draft, resize="pil"):
        return lambda: [transforms.multi_crop(rng, f, views, use_draft=draft, resize=resize) for f in files]

    return {"decode": lambda: [transforms.decode(f) for f in files],
            "2x224 draft": crops([GLOBAL] * 2, True), "2x224 no draft": crops([GLOBAL] * 2, False),
            "2x224 opencv": crops([GLOBAL] * 2, True, "opencv"),
            "dino draft": crops(DINO, True), "dino no draft": crops(DINO, False),
            "dino opencv": crops(DINO, True, "opencv")}


def _folder(files: list[bytes], root: str) -> str:
    """Writes the files into 10 class sub-folders of root (ImageFolder's layout)."""
    for i, data in enumerate(files):
        d = os.path.join(root, f"c{i % 10}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i:05d}.jpg"), "wb") as f:
            f.write(data)
    return root


def _views(kind: str) -> list[dict]:
    return [GLOBAL] * 2 if kind == "2x224" else DINO


def _run_side(side: str, kind: str, root: str, batch: int) -> float:
    """One contender's images/s over the folder (a pass after one warm-up batch). Runs in a subprocess."""
    if side.startswith("jaxssl"):  # "jaxssl pil" / "jaxssl opencv": the resize backend.
        from jaxssl.data import encoded  # pylint: disable=g-import-not-at-top
        it = encoded.make_train_iter(f"folder:{root}", "train", _views(kind), global_batch_size=batch,
                                     seed=0, process_index=0, process_count=1, worker_count=0,
                                     num_threads=0, prefetch=0, resize=side.split()[1])
        n = len(encoded.FolderSource(root)) // batch
        next(it)
        start = time.perf_counter()
        for _ in range(n):
            next(it)
        return n * batch / (time.perf_counter() - start)
    import torch  # pylint: disable=g-import-not-at-top
    from torchvision import datasets, transforms as T  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(1)
    if side == "lightly":
        from lightly.transforms import DINOTransform  # pylint: disable=g-import-not-at-top
        transform = DINOTransform()
    else:
        crops = [T.Compose([T.RandomResizedCrop(v["crop_size"], scale=v["crop_scale"]), T.PILToTensor()])
                 for v in _views(kind)]
        transform = lambda img: [c(img) for c in crops]
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(root, transform=transform), batch_size=batch,
                                         shuffle=True, num_workers=0, drop_last=True)
    it = iter(loader)
    next(it)
    n = len(loader) - 1
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * batch / (time.perf_counter() - start)


def _stages(views: list[dict], root: str, batch: int, resize: str) -> dict:
    """Seconds per image of jaxssl's host path by stage: read, decode (with draft), crop-resize, stack."""
    from jaxssl.data import resize as resizing, transforms  # pylint: disable=g-import-not-at-top
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    rng = np.random.default_rng(0)
    t = {"read": 0.0, "decode": 0.0, "crop": 0.0, "stack": 0.0}
    out = []
    for path in paths:
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            data = f.read()
        t1 = time.perf_counter()
        img = transforms._image(data, path)  # pylint: disable=protected-access
        width, height = img.size
        sizes = [transforms._size_hw(v["crop_size"]) for v in views]  # pylint: disable=protected-access
        boxes = [transforms.random_resized_crop_box(rng, height, width, v["crop_scale"]) for v in views]
        factor = min(transforms.draft_factor((h, w), o) for (_, _, h, w), o in zip(boxes, sizes))
        # Decode as the backend does (opencv: simplejpeg straight into an array; pil: Pillow image).
        src, red = transforms._decode_for(img, data, factor, resize, path)  # pylint: disable=protected-access
        t2 = time.perf_counter()
        out.append([resizing.box(src, (l / red, tp / red, (l + w) / red, (tp + h) / red), o, resize)
                    for (tp, l, h, w), o in zip(boxes, sizes)])
        t3 = time.perf_counter()
        t["read"] += t1 - t0
        t["decode"] += t2 - t1
        t["crop"] += t3 - t2
    for i in range(0, len(out) - batch + 1, batch):
        t0 = time.perf_counter()
        [np.stack([o[v] for o in out[i:i + batch]]) for v in range(len(views))]
        t["stack"] += time.perf_counter() - t0
    return {k: v / len(paths) for k, v in t.items()}


def _backend_diff(files: list, views: list[dict]) -> dict:
    """Mean and 99th percentile |pil - opencv| in uint8 levels over every crop of the files (same boxes)."""
    from jaxssl.data import transforms  # pylint: disable=g-import-not-at-top
    diffs = []
    for i, data in enumerate(files):
        a, b = (transforms.multi_crop(np.random.default_rng(i), data, views, resize=r) for r in ("pil", "opencv"))
        diffs += [np.abs(x.astype(np.int16) - y).ravel() for x, y in zip(a, b)]
    d = np.concatenate(diffs)
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": int(d.max()),
            "crops": len(diffs)}


def peers(args) -> None:
    """Part 1: the full host path, jaxssl vs torchvision (and lightly for DINO), one core each."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    load_start = _common.loadavg()
    files, _ = load(args.files, args.upscale)
    bench_py = args.peer_python or os.path.join(_common.ROOT, ".venv-bench", "bin", "python")
    jaxssl_sides = ("jaxssl pil", "jaxssl opencv")
    contenders_ = [(s, k) for k in ("2x224", "dino") for s in jaxssl_sides + ("torchvision",)] + [("lightly", "dino")]
    with tempfile.TemporaryDirectory(prefix="jaxssl_bench_") as root:
        _folder(files, root)
        ips = {c: [] for c in contenders_}
        for _ in range(args.blocks):
            for side, kind in contenders_:
                py = sys.executable if side in jaxssl_sides else bench_py
                cmd = [py, os.path.abspath(__file__), "--side", side, "--kind", kind, "--dir", root,
                       "--batch", str(args.batch)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env={**os.environ, "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1"})
                ips[(side, kind)].append(float(res.stdout.strip().splitlines()[-1]))
        # Three passes per backend, alternating, and the median per stage (the load changes within a pass).
        passes = [{f"{kind} {r}": _stages(_views(kind), root, args.batch, r)
                   for kind in ("2x224", "dino") for r in ("pil", "opencv")} for _ in range(3)]
        stages = {k: {st: statistics.median(p[k][st] for p in passes) for st in passes[0][k]} for k in passes[0]}
        load_mid = _common.loadavg()
        diff = {kind: _backend_diff(files, _views(kind)) for kind in ("2x224", "dino")}
        photos = _common.data_file("imagenette_val_224_sample.npz")  # Real 224 px photos: their own detail.
        if photos:
            with np.load(photos) as z:
                real = [x for x in z["x"]]
            for size in (96, 48):
                diff[f"imagenette val 224 px photos -> 2 x {size}"] = _backend_diff(real, [{"crop_size": size}] * 2)
        sizes = [Image.open(io.BytesIO(f)).size for f in files[:5]]
    med = {c: statistics.median(v) for c, v in ips.items()}
    ratios = lambda mine, kind, peer: [a / b for a, b in zip(ips[(mine, kind)], ips[(peer, kind)])]
    ratio = lambda mine, kind, peer: statistics.median(ratios(mine, kind, peer))
    span = lambda mine, kind, peer: f"[{min(ratios(mine, kind, peer)):.2f}-{max(ratios(mine, kind, peer)):.2f}]"
    rows = [[f"{side} {kind}", " ".join(f"{v:.0f}" for v in ips[(side, kind)]), med[(side, kind)]]
            + [f"{ratio(m, kind, side):.2f} {span(m, kind, side)}" if side not in jaxssl_sides else ""
               for m in jaxssl_sides] for side, kind in contenders_]
    print(_common.table(["contender", "images/s per block", "median"]
                        + [f"{m} / this, median [range]" for m in jaxssl_sides], rows))
    srows = [[kind] + [1 / v if v else float("inf") for v in st.values()] + [1 / sum(st.values())]
             for kind, st in stages.items()]
    print(_common.table(["jaxssl stage split (images/s of each stage alone)", "read", "decode (+draft)",
                         "crop+resize", "stack", "all"], srows))
    print(_common.table(["views", "crops", "mean |pil - opencv| (uint8 levels)", "99th percentile", "max"],
                        [[k, d["crops"], d["mean"], d["p99"], d["max"]] for k, d in diff.items()]))
    _common.write_json(f"input_pipeline_peers{args.tag}", {
        "machine": _common.machine_info(), "args": vars(args), "example_sizes": sizes,
        "loadavg_1min": {"start": load_start, "after_blocks": load_mid, "end": _common.loadavg()},
        "images_per_s": {f"{s} {k}": v for (s, k), v in ips.items()},
        "ratios": {f"{m}/{p} {k}": ratio(m, k, p) for m in jaxssl_sides for p, k in contenders_
                   if p not in jaxssl_sides},
        "ratio_ranges": {f"{m}/{p} {k}": [min(ratios(m, k, p)), max(ratios(m, k, p))] for m in jaxssl_sides
                         for p, k in contenders_ if p not in jaxssl_sides},
        "stage_s_per_image": stages, "pil_vs_opencv_abs_diff": diff})


def main():
    p = _common.parser(__doc__)
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--upscale", type=int, default=4, help="the ImageNet-like set's factor (0: skip it)")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--peers", action="store_true", help="part 1: jaxssl vs torchvision/lightly (needs .venv-bench)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--peer-python", default=os.environ.get("BENCH_PEER_PYTHON", ""),
                   help="interpreter with torch, torchvision and lightly (default: .venv-bench/bin/python)")
    p.add_argument("--side", default="", help=argparse_hidden)
    p.add_argument("--kind", default="2x224", help=argparse_hidden)
    p.add_argument("--dir", default="", help=argparse_hidden)
    args = p.parse_args()
    if args.side:
        print(_run_side(args.side, args.kind, args.dir, args.batch))
        return
    if args.peers:
        peers(args)
        return
    result = {"machine": _common.machine_info(), "args": vars(args), "sets": {}}
    rows = []
    for name, upscale in (("112px", 1), (f"x{args.upscale}", args.upscale)):
        if upscale == 0:
            continue
        files, read_s = load(args.files, upscale)
        sizes = [Image.open(io.BytesIO(f)).size for f in files[:50]]
        fns = contenders(files)
        times = {k: [] for k in fns}
        for _ in range(args.blocks):  # Interleaved, so load changes hit every contender alike.
            for k, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
        ips = {k: len(files) / statistics.median(v) for k, v in times.items()}
        result["sets"][name] = {"read_s_per_image": read_s, "times_s": times, "images_per_s": ips,
                                "example_sizes": sizes[:5]}
        rows.append([name, f"{sizes[0][0]}x{sizes[0][1]}", 1 / read_s] + [ips[k] for k in fns])
    print(_common.table(["files", "e.g. WxH", "read (tar)"] + list(fns), rows))
    print("(source images/s, one process, median of blocks)")
    _common.write_json(f"input_pipeline{args.tag}", result)


if __name__ == "__main__":
    main()
