"""Run a snippet under N fake CPU devices in a subprocess (XLA_FLAGS must precede `import jax`)."""
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# LLVM optimisation level 0 and no expensive passes (NOTES.md): 2-3x faster compiles of the same HLO.
# tests/conftest.py puts them in the whole suite's XLA_FLAGS; `run` keeps them in its subprocesses.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run(code: str, devices: int = 8, timeout: float = 600) -> dict:
    """Execute `code` with `devices` CPU devices; it must print one JSON line prefixed 'RESULT '."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_XLA}",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no RESULT line in output:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])
