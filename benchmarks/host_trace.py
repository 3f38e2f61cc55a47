r"""Does a training step wait on the host? A `jax.profiler` trace of the real trainer, analysed.

Runs `jaxssl.train.loop.train` (the trainer itself, not a copy) on a small DINO ViT on the prepared
CIFAR-10 subset under `jax.profiler.trace`, once per `config.data.prefetch` value ("before": 1, each
batch read and placed when its step starts; "after": 2, the double-buffered device iterator of
`jaxssl/data/prefetch.py`), and reads the trace (`perfetto_trace.json.gz`):

- host: the loop's `StepTraceAnnotation("train")` regions and the `"input"` region inside each
  (reading the next batch from the grain iterator + `make_array_from_process_local_data`);
- device: the XLA client's execution threads (the thunks of the step program and the host->device
  copies); on a CPU these are threads of the same process, on a GPU the streams.

Over the steps after `--skip` warm-up steps (log steps, which fetch the metrics, included) it reports
the device's idle fraction of the wall time, and the part of that idle time during which the host
was inside `"input"`: the time the devices waited for the next batch. Zero means no step waits on
the host. It also reports the host's median time per step in `"input"` and in the whole loop
iteration (input, dispatch, and at log steps the wait for the metrics).

  .venv/bin/python benchmarks/host_trace.py                      # before/after table, ~2 min on 2 cores
  .venv/bin/python benchmarks/host_trace.py --steps 40 --batch 64

Writes benchmarks/results/host_trace<tag>.json. On a CPU the "device" shares the cores with the
host's data work, so overlap cannot make the input free there; the numbers to read are the waits.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import statistics
import tempfile

import _common  # also puts the repository root on sys.path
import jax

from configs import dino_cifar10
from jaxssl.data import prepare
from jaxssl.train import loop

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "tfds_test")


def _config(args, prefetch: int):
    config = dino_cifar10.get_config("vit,cpu")
    config.data.data_dir = args.data_dir
    config.data.prepare_offline = False
    config.data.prefetch = prefetch
    config.progress_bar = False
    config.batch_size = args.batch
    config.total_steps = args.steps
    config.log_steps = args.log_steps
    config.ckpt_steps = args.steps  # one checkpoint, at the end
    config.evals = {}
    # The second run compiles nothing: the programs are the same whatever config.data.prefetch says.
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return config


def _intervals_union(iv):
    out = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def _overlap(a, b) -> float:
    """Total length of the intersection of two sorted disjoint interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def analyse(trace_path: str, skip: int, total_steps: int) -> dict:
    """Host/device timelines of one trace -> per-step fractions (microseconds in, seconds out)."""
    with gzip.open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    steps = {}
    for e in spans:
        if e["name"] == "train" and "step_num" in e.get("args", {}):
            steps[int(e["args"]["step_num"])] = (e["ts"], e["ts"] + e["dur"], threads.get((e["pid"], e["tid"])))
    host_thread = next(iter(steps.values()))[2]
    inputs = [(e["ts"], e["ts"] + e["dur"]) for e in spans if e["name"] == "input"
              and threads.get((e["pid"], e["tid"])) == host_thread]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    accelerators = {pid for pid, name in processes.items()
                    if name.startswith("/device:") and not name.startswith("/device:CPU")}
    if accelerators:  # GPU/TPU: the device's own timeline (kernels and copies on its streams)
        device = [(e["ts"], e["ts"] + e["dur"]) for e in spans if e["pid"] in accelerators]
    else:  # CPU: the XLA client's threads that run the program's thunks and the host->device copies
        device = [(e["ts"], e["ts"] + e["dur"]) for e in spans
                  if threads.get((e["pid"], e["tid"]), "").startswith("tf_XLA")
                  and not e["name"].startswith(("ThreadpoolListener", "end: "))]
    # After the warm-up (compilation), up to the last step (its final fetch and checkpoint): log steps,
    # which fetch the metrics and drain the device queue, are part of what a run pays.
    keep = sorted(n for n in steps if skip < n < total_steps)
    if len(keep) < 2:
        raise ValueError(f"too few steps after the warm-up ({keep}); raise --steps.")
    lo, hi = steps[keep[0]][0], steps[keep[-1] + 1][0]
    clip = lambda iv: [[max(s, lo), min(e, hi)] for s, e in iv if e > lo and s < hi]
    busy = _intervals_union(clip(device))
    idle = []
    cursor = lo
    for s, e in busy:
        if s > cursor:
            idle.append([cursor, s])
        cursor = max(cursor, e)
    if cursor < hi:
        idle.append([cursor, hi])
    inp = _intervals_union(clip(inputs))
    wall = hi - lo
    host_step = [steps[n][1] - steps[n][0] for n in keep]
    input_s = [sum(max(0.0, min(e, steps[n][1]) - max(s, steps[n][0])) for s, e in inputs) for n in keep]
    return {"steps": len(keep), "wall_s_per_step": wall / len(keep) / 1e6,
            "device_busy_fraction": sum(e - s for s, e in busy) / wall,
            "device_idle_fraction": sum(e - s for s, e in idle) / wall,
            "device_waits_on_input_fraction": _overlap(idle, inp) / wall,
            "host_input_s_median": statistics.median(input_s) / 1e6,
            "host_step_s_median": statistics.median(host_step) / 1e6}


def run(args, prefetch: int) -> dict:
    """One traced `loop.train` run (compilation included; its steps are skipped in the analysis)."""
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # XLA and the loop's annotations only (Python calls would swamp the trace)
    with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True, profiler_options=options):
            loop.train(_config(args, prefetch), os.path.join(workdir, "run"))
        path = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)[0]
        return analyse(path, args.skip, args.steps)


def main():
    p = _common.parser(__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=24, help="steps per run (all traced).")
    p.add_argument("--skip", type=int, default=4, help="steps left out at the start (compilation, warm-up).")
    p.add_argument("--log_steps", type=int, default=4, help="metrics fetched every this many steps.")
    p.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "jaxssl_host_trace_cache"))
    p.add_argument("--data_dir", default=DATA_DIR)
    p.add_argument("--prefetch", default="1,2", help="config.data.prefetch values to compare.")
    args = p.parse_args()
    # The tests' CIFAR-10 subset (tests/conftest.py), prepared offline when missing.
    prepare.ensure_prepared("cifar10", args.data_dir, train_limit=2048, test_limit=512)
    results = {}
    for value in (int(v) for v in args.prefetch.split(",")):
        results[value] = run(args, value)
        print(f"prefetch={value}: {results[value]}", flush=True)
    keys = ("wall_s_per_step", "device_busy_fraction", "device_idle_fraction", "device_waits_on_input_fraction",
            "host_input_s_median", "host_step_s_median")
    rows = [[f"data.prefetch={v}" + {1: " (before)", 2: " (after)"}.get(v, "")] + [f"{r[k]:.4g}" for k in keys]
            for v, r in results.items()]
    print(_common.table(["trainer"] + list(keys), rows))
    _common.write_json(f"host_trace{args.tag}", {"benchmark": "host_trace", **vars(args),
                                                 "results": {str(k): v for k, v in results.items()},
                                                 **_common.machine_info()})


if __name__ == "__main__":
    main()
