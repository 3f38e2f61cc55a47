r"""Library overhead only: jaxssl's train step vs the hand-written jitted JAX step (no PyTorch needed).

The same measurement as `throughput.py --frameworks jaxssl,handwritten` (see its docstring for
what each step contains); kept as its own entry point because it runs in the library's venv:

  .venv/bin/python benchmarks/step_overhead.py --method simclr --batch 256 --width 0.125

Target: jaxssl / hand-written <= 1.05. Writes benchmarks/results/throughput_<method>_...json.
"""
import os
import runpy
import sys

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--frameworks", "jaxssl,handwritten", *sys.argv[1:]]
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"), run_name="__main__")
