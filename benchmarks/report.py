r"""Markdown tables from benchmarks/results/*.json (what RESULTS.md quotes), with each run's
machine, load, commit and command.

  .venv/bin/python benchmarks/report.py
"""
from __future__ import annotations

import glob
import json
import os
import statistics

import _common


def header(d: dict) -> str:
    return (f"`{d['command']}`  \n{d['nproc']} cores, {d['cpu']}, {d['jax_device']}; load average "
            f"{d['load_avg_start']:.1f} -> {d['load_avg_end']:.1f}; commit {d['commit'][:10]}"
            f"{' + uncommitted changes' if d.get('dirty') else ''}; finished {d['finished_utc']}"
            + (f"; torch {d['torch']} with {d['torch_threads']} thread(s)" if d.get("torch") else ""))


def paired_ratio(d: dict, a: str, b: str) -> str:
    """Median over blocks of (a's block median / b's block median): the two ran minutes apart at
    most, so a change of machine load between blocks cancels out."""
    t, n = d["times"], d["steps"]
    if a not in t or b not in t:
        return "-"
    med = lambda xs: statistics.median(xs)
    r = [med(t[a][i:i + n]) / med(t[b][i:i + n]) for i in range(0, len(t[a]), n)]
    return f"{med(r):.2f} [{min(r):.2f}-{max(r):.2f}]"


def throughput(d: dict) -> str:
    s = d["stats"]
    rows = []
    for n, v in s.items():
        ratios = [paired_ratio(d, n, k) for k in ("handwritten", "lightly")]
        rows.append([n, v["median_s"], f"{v['q1_s']:.3g}-{v['q3_s']:.3g}", round(v["images_per_s"], 1), *ratios])
    return _common.table(["contender", "median s/step", "IQR s", "images/s",
                          "time / handwritten, per-block median [range]", "time / lightly, same"], rows)


def augment(d: dict) -> str:
    s = d["stats"]
    j = s.get("jaxssl", {}).get("images_per_s")
    rows = [[n, v["median_s"], round(v["images_per_s"], 1), f"{j / v['images_per_s']:.1f}x" if j else "-"]
            for n, v in s.items()]
    return _common.table(["contender", "median s/batch", "source images/s (2 views each)", "jaxssl speed-up"], rows)


def mfu(d: dict) -> str:
    note = (f"FLOPs re-derived by `mfu.py --recount` from {d['recount']['from']} on {d['recount']['cpu']} "
            f"(jax {d['recount']['jax']}); step times as measured.\n\n" if d.get("recount") else "")
    rows = [[r["model"], d["batch"], r["median_step_s"], f"{r['model_flops'] / 1e9:.1f}",
             f"{r['step_flops_xla'] / 1e9:.1f}", f"{r['achieved_tflops'] * 1e3:.1f}",
             f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no peak for this device)"] for r in d["results"]]
    return note + _common.table(["model", "batch", "median s/step", "model GFLOP/step (3x fwd)", "XLA GFLOP/step",
                                 "achieved model GFLOP/s", "MFU"], rows)


def tta(d: dict) -> str:
    rows = [[lib, r["steps"], r["train_s"], r["first_step_s"], round(r["steps"] * d["batch"] / r["train_s"], 1),
             r["losses"][-1][1], 100 * r["knn_k20_t0.07_top1"], 100 * r["knn_k200_t0.1_top1"]]
            for lib, r in d["results"].items()]
    return _common.table(["library", "steps", "train s", "first step s", "images/s", "last loss",
                          "kNN k=20 top-1 %", "kNN k=200 top-1 %"], rows)


def profile(d: dict) -> str:
    return _common.table(["phase", "median s", "IQR s"], [[n, v["median_s"], f"{v['q1_s']:.3g}-{v['q3_s']:.3g}"]
                                                         for n, v in d["stats"].items()])


def step_cost(d: dict) -> str:
    keys = ("flops", "bytes accessed", "transcendentals")
    return _common.table(["step", "GFLOP", "GB accessed (unfused)", "G transcendentals"],
                         [[n, *(f"{c[k] / 1e9:.2f}" for k in keys)] for n, c in d["costs"].items()])


def main():
    render = {"profile_step": profile, "throughput": throughput, "throughput_dino": throughput,
              "augment_throughput": augment, "mfu": mfu, "time_to_accuracy": tta,
              "dino_step_cost": step_cost}
    for path in sorted(glob.glob(os.path.join(_common.RESULTS_DIR, "*.json"))):
        with open(path) as f:
            d = json.load(f)
        fn = render.get(d["benchmark"])
        body = fn(d) if fn else "(no table for this benchmark here: its script prints one; raw numbers in the JSON)"
        print(f"### {os.path.basename(path)}\n\n{header(d)}\n\n{body}\n")


if __name__ == "__main__":
    main()
