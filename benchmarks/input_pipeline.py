r"""Host input pipeline (skeleton): images/s of decode + random-resized crops, with and without draft.

One process, jaxssl's side only (the torchvision ImageFolder/DataLoader and lightly columns of
issue 17 come later). Per source image, from its JPEG bytes already in memory:

- decode: `transforms.decode` (full decode to RGB uint8), the floor of any crop path.
- 2x224 / 2x224+6x96 (DINO): `transforms.multi_crop` with scale (0.08, 1) / (0.4, 1) global and
  (0.05, 0.4) local, `use_draft` on and off (the draft rule: see jaxssl/data/transforms.py).

Files: the first --files JPEGs of ../shared/data/imagenette2-112_train.tar as stored (shorter
side 112 px: every 224 crop is an upsample, so draft never applies), and the same files upscaled
x--upscale (bicubic) and re-encoded at quality 85, a stand-in for ImageNet's resolution (about
400-500 px); upscaled photos are smoother than real ones, so decode costs are indicative only.
Blocks are interleaved over the contenders; the table gives the median images/s.

  .venv/bin/python benchmarks/input_pipeline.py --files 500 --blocks 3

Writes benchmarks/results/input_pipeline<tag>.json.
"""
from __future__ import annotations

import io
import statistics
import tarfile
import time

import _common
import numpy as np
from PIL import Image

from jaxssl.data import transforms

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
    rng = np.random.default_rng(0)

    def crops(views, draft):
        return lambda: [transforms.multi_crop(rng, f, views, use_draft=draft) for f in files]

    return {"decode": lambda: [transforms.decode(f) for f in files],
            "2x224 draft": crops([GLOBAL] * 2, True), "2x224 no draft": crops([GLOBAL] * 2, False),
            "dino draft": crops(DINO, True), "dino no draft": crops(DINO, False)}


def main():
    p = _common.parser(__doc__)
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--upscale", type=int, default=4, help="the ImageNet-like set's factor (0: skip it)")
    p.add_argument("--blocks", type=int, default=3)
    args = p.parse_args()
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
