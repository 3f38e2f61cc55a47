r"""Does any XLA:CPU flag make the jaxssl SimCLR ResNet-18 train step faster on CPU?

XLA_FLAGS is read once, when the CPU backend starts, so every flag set runs in its own
worker subprocess (started with that XLA_FLAGS / env). All workers are started first and each
compiles and warms up `throughput.jaxssl_step` (SimCLR, ResNet-18 CIFAR stem, `--width`,
`--batch`, 32x32, LARS; `jaxssl.train.step.make_train_step`) and reports the loss of its 3rd
step (same init key, same batches, so any difference from the default is numerics). Then the
parent times `--blocks` rounds; in each round it runs, for every candidate, `--steps` steps of
the default worker immediately followed by `--steps` steps of the candidate (order swapped on
odd rounds), so a slow phase of a shared machine hits both sides of a pair. A candidate's ratio
is the median over its pairs of median(candidate) / median(default) (< 1 = faster).

  .venv/bin/python benchmarks/cpu_flags.py --width 0.125 --batch 128 --candidates all
  .venv/bin/python benchmarks/cpu_flags.py --width 0.5 --batch 128 --candidates xnn_greedy,fast_math

Writes /tmp/cpu_flags_w<width>_b<batch><tag>.json (or --json PATH).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (XLA_FLAGS additions, extra env). "default" has neither.
CANDIDATES: dict[str, tuple[str, dict]] = {
    "default": ("", {}),
    "no_xnnpack": ("--xla_cpu_use_xnnpack=false", {}),
    "xnn_greedy": ("--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY", {}),
    "xnn_greedy_slinky": ("--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY", {}),
    "xnn_fusion_all": ("--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce", {}),
    "ynn_conv_dot": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot", {}),
    "onednn": ("--xla_cpu_use_onednn=true", {}),
    "onednn_custom_call": ("--xla_cpu_experimental_onednn_custom_call=true", {}),
    "onednn_fusion_dot": ("--xla_cpu_experimental_onednn_fusion_type=dot", {}),
    "fast_math": ("--xla_cpu_enable_fast_math=true", {}),
    "no_multi_thread_eigen": ("--xla_cpu_multi_thread_eigen=false", {}),
    "opt_fast_runtime": ("--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME", {}),
    "sched_concurrency": ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED", {}),
    "vector_width_512": ("--xla_cpu_prefer_vector_width=512", {}),
    "backend_opt_2": ("--xla_backend_optimization_level=2", {}),
    "matmul_precision_highest": ("", {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}),
    "matmul_precision_bf16": ("", {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}),
}


# --- worker ---------------------------------------------------------------------------------------
def worker(width: float, batch: int) -> None:
    """Builds the step, runs 3 steps (2 warm-up + the loss check), then serves `run N` on stdin."""
    sys.path.insert(0, HERE)
    import argparse

    import jax
    from throughput import jaxssl_step, load_images

    args = argparse.Namespace(width=width, batch=batch, size=32, hidden=512, out=128, dtype="float32")
    images = load_images(max(4096, batch), 32)
    run, box, _ = jaxssl_step("simclr", args, images)
    t = time.perf_counter()
    run()
    compile_s = time.perf_counter() - t
    warm = []
    for _ in range(2):
        t = time.perf_counter()
        run()
        warm.append(time.perf_counter() - t)
    loss3 = float(box["loss"])  # the loss reported by the 3rd step
    print(json.dumps({"ready": True, "compile_s": compile_s, "warm_s": warm, "loss3": loss3,
                      "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times = []
        for _ in range(int(cmd[1])):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        print(json.dumps({"times": times}), flush=True)


# --- parent ---------------------------------------------------------------------------------------
class Worker:
    def __init__(self, name: str, width: float, batch: int):
        flags, env_extra = CANDIDATES[name]
        env = dict(os.environ, **env_extra)
        env["XLA_FLAGS"] = " ".join(x for x in (os.environ.get("XLA_FLAGS", ""), flags) if x)
        self.name, self.flags, self.env_extra = name, flags, env_extra
        self.err_path = f"/tmp/cpu_flags_{name}_{os.getpid()}.err"
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(width), str(batch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.err_path, "w"),
                                     text=True, env=env, cwd=os.path.dirname(HERE))
        self.info: dict | None = None
        self.error: str | None = None

    def _read(self) -> dict | None:
        line = self.proc.stdout.readline()
        while line and not line.startswith("{"):
            line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(self.err_path) as f:
                err = [l for l in f.read().splitlines() if l.strip()]
            self.error = " | ".join(err[-2:])[:300] or f"exit {self.proc.returncode}"
            return None
        return json.loads(line)

    def ready(self) -> bool:
        self.info = self._read()
        return self.info is not None

    def run(self, n: int) -> list[float]:
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        out = self._read()
        if out is None:
            raise RuntimeError(f"{self.name}: {self.error}")
        return out["times"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()


def main():
    import _common
    p = _common.parser(__doc__)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--blocks", type=int, default=5, help="pairs (default, candidate) per candidate.")
    p.add_argument("--steps", type=int, default=1, help="timed steps per side of a pair.")
    p.add_argument("--candidates", default="all", help=f"comma list or 'all': {','.join(list(CANDIDATES)[1:])}")
    p.add_argument("--json", default="", help="result file (default /tmp/cpu_flags_w<width>_b<batch><tag>.json).")
    p.add_argument("--tol", type=float, default=1e-4, help="|loss3 - default loss3| above this = numerics changed.")
    args = p.parse_args()
    names = list(CANDIDATES)[1:] if args.candidates == "all" else args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown candidate(s) {unknown}")

    info = _common.machine_info()  # at the start: load_avg_start is the load before the workers
    print(f"SimCLR ResNet-18 width {args.width}, batch {args.batch}, 32x32; load {_common.loadavg():.2f}; "
          f"XLA_FLAGS from the environment: {os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    # Start and warm up one at a time (compiling in parallel on 2 cores would only slow each).
    workers: dict[str, Worker] = {}
    failed: dict[str, str] = {}
    for name in ["default", *names]:
        t = time.perf_counter()
        w = Worker(name, args.width, args.batch)
        if w.ready():
            workers[name] = w
            print(f"  {name}: ready in {time.perf_counter() - t:.1f}s (first step {w.info['compile_s']:.1f}s, "
                  f"warm-up {', '.join(f'{x:.2f}' for x in w.info['warm_s'])}s), loss3 {w.info['loss3']:.6f}",
                  flush=True)
        else:
            failed[name] = w.error
            print(f"  {name}: FAILED to start: {w.error}", flush=True)
    if "default" not in workers:
        sys.exit("default worker failed")
    base = workers["default"]
    alive = [n for n in names if n in workers]
    times = {n: [] for n in ["default", *alive]}
    pairs = {n: [] for n in alive}  # per pair: (default median, candidate median)
    for b in range(args.blocks):
        for n in list(alive):
            try:
                if b % 2 == 0:
                    d = base.run(args.steps)
                    c = workers[n].run(args.steps)
                else:
                    c = workers[n].run(args.steps)
                    d = base.run(args.steps)
            except RuntimeError as e:
                failed[n] = str(e)
                alive.remove(n)
                print(f"  {n}: died: {e}", flush=True)
                continue
            times["default"] += d
            times[n] += c
            pairs[n].append((statistics.median(d), statistics.median(c)))
        print(f"  block {b + 1}/{args.blocks}, this pair's candidate/default: " + ", ".join(
            f"{n} {pairs[n][-1][1] / pairs[n][-1][0]:.2f}"
            for n in alive) + f" (load {_common.loadavg():.2f})", flush=True)
    for w in workers.values():
        w.close()

    ref_loss = base.info["loss3"]
    rows, stats = [], {}
    dmed = statistics.median(times["default"])
    rows.append(["default", "", dmed, 1.0, "-", len(times["default"]), f"{ref_loss:.6f}", "reference"])
    for n in names:
        if n not in workers or not pairs.get(n):
            rows.append([n, CANDIDATES[n][0] or CANDIDATES[n][1], "-", "-", "-", 0, "-", f"failed: {failed.get(n)}"])
            continue
        ratios = [c / d for d, c in pairs[n]]
        loss = workers[n].info["loss3"]
        dl = abs(loss - ref_loss)
        stats[n] = dict(ratio_median=statistics.median(ratios), ratios=ratios, median_s=statistics.median(times[n]),
                        loss3=loss, loss3_absdiff=dl)
        rows.append([n, CANDIDATES[n][0] or CANDIDATES[n][1], statistics.median(times[n]),
                     f"{statistics.median(ratios):.3f}", f"{min(ratios):.2f}-{max(ratios):.2f}", len(times[n]),
                     f"{loss:.6f}", "same" if dl <= args.tol else f"CHANGED ({dl:.1e})"])
    print(_common.table(["candidate", "flags / env", "median s/step", "time / default (median of pairs)",
                         "pair range", "n steps", "loss after 3 steps", "numerics vs default"], rows))
    record = {"benchmark": "cpu_flags", **vars(args), **info, "stats": stats, "times": times,
              "pairs": pairs, "failed": failed,
              "workers": {n: {**w.info, "flags": w.flags, "env": w.env_extra} for n, w in workers.items()}}
    path = args.json or f"/tmp/cpu_flags_w{args.width:g}_b{args.batch}{args.tag}.json"
    with open(path, "w") as f:
        json.dump({**record, "load_avg_end": _common.loadavg()}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(float(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
