"""Shared pieces of the benchmark scripts: machine/commit record, interleaved timing, table, JSON.

Nothing here is a test. Every script prints a markdown table and writes
`benchmarks/results/<name>.json` with the machine, the commit, the command line and the raw
per-step times, so a number in RESULTS.md can be traced to one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python benchmarks/x.py` from the repository root imports jaxssl/configs.
    sys.path.insert(0, ROOT)
# BENCH_RESULTS_DIR redirects the JSON files (e.g. to a GPU machine's output folder).
RESULTS_DIR = os.environ.get("BENCH_RESULTS_DIR") or os.path.join(ROOT, "benchmarks", "results")


def data_file(*names: str) -> str | None:
    """The first of `names` found in $BENCH_DATA_DIR, ../shared/data or /work/shared/data (the
    team's real datasets, README there), else None. A GPU machine gets a copy in BENCH_DATA_DIR."""
    dirs = [os.environ.get("BENCH_DATA_DIR", ""), os.path.join(ROOT, "..", "shared", "data"), "/work/shared/data"]
    for name in names:
        for d in dirs:
            if d and os.path.exists(os.path.join(d, name)):
                return os.path.join(d, name)
    return None


def load_cifar10():
    """(x_train, y_train, x_test, y_test): the real CIFAR-10 arrays (uint8 NHWC, int64 labels) of
    the team's data folder (`data_file`; the training set is two parts, see its README)."""
    import numpy as np
    names = ("cifar10_train_part1.npz", "cifar10_train_part2.npz", "cifar10_test.npz")
    paths = [data_file(n) for n in names]
    if None in paths:
        raise FileNotFoundError(f"CIFAR-10 arrays {names} not found in $BENCH_DATA_DIR, ../shared/data or "
                                f"/work/shared/data.")
    parts = [np.load(p) for p in paths]
    x_train = np.concatenate([p["x"] for p in parts[:2]])
    y_train = np.concatenate([p["y"] for p in parts[:2]])
    return x_train, y_train, parts[2]["x"], parts[2]["y"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> float:
    """1-minute load average (other processes on a shared machine show up here)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine_info() -> dict:
    """nproc, CPU model, load, accelerator, library versions and the git commit."""
    def git(*a):
        try:
            return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:  # no git on the machine
            return ""
    info = dict(nproc=os.cpu_count(), cpu=cpu_model(), load_avg_start=loadavg(), platform=platform.platform(),
                python=platform.python_version(),
                # BENCH_COMMIT: the commit of a working tree copied to another machine (a GPU
                # machine's copy may carry no .git, or a stale one).
                commit=os.environ.get("BENCH_COMMIT") or git("rev-parse", "HEAD"),
                dirty=None if os.environ.get("BENCH_COMMIT") else bool(git("status", "--porcelain", "--untracked-files=no")),
                command=" ".join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT)
                                  else "python", *sys.argv]))
    import jax
    info.update(jax=jax.__version__, jax_device=str(jax.devices()[0].device_kind), jax_devices=jax.device_count())
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return info


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        return True
    except ImportError:
        return False


def xla_cost(stage) -> dict:
    """XLA's cost analysis ("flops", "bytes accessed", ...) of a `jax.stages.Lowered` (unoptimised
    HLO) or `Compiled` program as one dict (some jax versions return a list of one)."""
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(cost or {})


def jaxssl_state(method, tx, example, mesh, seed: int = 0, abstract: bool = False):
    """jaxssl's TrainState in its sharded layout, created under `jit(out_shardings=...)` as
    train/loop.py does (an eagerly created, uncommitted state would make the first timed call
    compile a second program). abstract=True: ShapeDtypeStructs carrying those shardings,
    nothing allocated (to lower a step for its cost analysis)."""
    import jax

    from jaxssl.train import sharding as shd, step as step_lib
    init = lambda r: step_lib.init_state(method, tx, r, example)
    shapes = jax.eval_shape(init, jax.random.key(seed))
    shardings = shd.state_shardings(shapes, mesh)
    if abstract:
        return jax.tree_util.tree_map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                                      shapes, shardings)
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def jaxssl_runner(train_step, state, images, batch: int, mesh):
    """(run, box) for `interleaved`: each run() draws `batch` of `images` (uint8, host), places them
    with `train.sharding.to_global` (as the trainer does), runs one donated jaxssl step and waits
    for it. box holds the state and the first and last loss."""
    import jax
    import numpy as np

    from jaxssl.train import sharding as shd
    rng, np_rng = jax.random.key(0), np.random.default_rng(0)
    box = {"state": state}

    def run():
        x = shd.to_global({"image": images[np_rng.choice(len(images), batch, replace=False)]}, mesh)
        box["state"], metrics = train_step(box["state"], x, rng)
        box["loss"] = metrics["loss"]
        box.setdefault("first_loss", metrics["loss"])
        jax.block_until_ready(box["state"])

    return run, box


def time_compiled(compiled, state, batch, *, warmup: int, steps: int, label: str = ""):
    """Runs `compiled(state, batch, key(i))` warmup + steps times, each waited for; returns
    (the timed steps' seconds, the last state, the last metrics). `label`: print each step with the load."""
    import jax  # pylint: disable=import-outside-toplevel

    times, metrics = [], None
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch, jax.random.key(i))
        jax.block_until_ready(state)
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if label:
            print(f"  {label} step {i}: {time.perf_counter() - t:.2f} s (load {loadavg():.2f})", flush=True)
    return times, state, metrics


def interleaved(fns: Mapping[str, Callable[[], None]], *, warmup: int, blocks: int, steps: int,
                log: bool = True) -> dict[str, list[float]]:
    """Per-call wall times of each `fn`, measured in alternating blocks (A B C, B C A, ...).

    Each fn runs one step and waits for its result (block_until_ready / synchronisation). All
    fns are warmed up first (compilation, allocator, caches). Then `blocks` rounds; in each,
    every fn runs `steps` timed calls, the order rotating from round to round, so slow phases
    of a shared, noisy machine hit every contender alike. Returns {name: [seconds, ...]}.
    """
    names = list(fns)
    for name in names:
        t = time.perf_counter()
        for _ in range(warmup):
            fns[name]()
        if log:
            print(f"  warm-up {name}: {time.perf_counter() - t:.1f} s", flush=True)
    times: dict[str, list[float]] = {n: [] for n in names}
    for b in range(blocks):
        order = names[b % len(names):] + names[:b % len(names)]
        for name in order:
            for _ in range(steps):
                t = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t)
        if log:
            print(f"  block {b + 1}/{blocks}: " + ", ".join(f"{n} {statistics.median(times[n]):.3f}s"
                                                          for n in names) + f" (load {loadavg():.2f})", flush=True)
    return times


def summary(times: Sequence[float], batch: int) -> dict:
    """Median and quartiles of step times, and images/s at the median."""
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    med = statistics.median(times)
    return dict(median_s=med, q1_s=q[0], q3_s=q[2], n=len(times), images_per_s=batch / med)


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, result: dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    result = {**result, "load_avg_end": loadavg(), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return path


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (JAX uses all cores).")
    p.add_argument("--tag", default="", help="suffix of the JSON file name (results/<name><tag>.json).")
    p.add_argument("--torch_device", default=None,
                   help="device of the PyTorch contenders: cpu or cuda (default: cuda when torch sees one).")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype of every contender: jaxssl/flax `dtype=`, torch autocast; params stay float32.")
    return p


def torch_device(args) -> str:
    """The PyTorch contenders' device: `--torch_device`, else cuda when available, else cpu."""
    import torch
    if args.torch_device:
        return args.torch_device
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_setup(args) -> str:
    """Before JAX starts its backend: torch's intra-op threads (`--threads`) and the contenders'
    device; on a GPU, JAX limited to 45% of its memory (XLA_PYTHON_CLIENT_MEM_FRACTION, unless
    set) instead of its default 75%, so that torch has room on the same card."""
    import torch
    torch.set_num_threads(args.threads)
    device = torch_device(args)
    if device != "cpu":
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    return device
