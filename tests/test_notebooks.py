"""The colab/ notebooks run end to end, offline, at their small size (JAXSSL_NOTEBOOK_SMALL=1).

All four are executed once per module with nbclient, concurrently (one kernel each; XLA
compiles single-threaded, so two cores serve two kernels at once), in the venv's python3
kernel, from colab/ as the working directory, on the CIFAR-10 subset of the
`cifar10_data_dir` fixture (passed as $TFDS_DATA_DIR). Each test then checks what its notebook
promises to show: a printed kNN accuracy, an inline figure, losses per modality.

Compilation dominates (about 130 s of CPU for the four cold, 35 s warm): the kernels share a
persistent JAX compilation cache in the git-ignored <repo>/.cache/jax_notebooks, like the
prepared CIFAR-10 subset in .cache/tfds_test, so a rerun on the same checkout skips XLA.
"""
from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import pathlib
import re
import shutil
import time

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
NOTEBOOKS = ("01_quickstart_simclr_cifar10.ipynb", "02_dino_vit_attention.ipynb", "03_functional_library.ipynb",
             "04_data2vec_modalities.ipynb")
CELL_TIMEOUT_S = 300
JAX_CACHE = REPO / ".cache" / "jax_notebooks"


def _build_module():
    spec = importlib.util.spec_from_file_location("colab_build", COLAB / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def _execute_all(paths, envs):
    clients = []
    for path, env in zip(paths, envs):
        nb = nbformat.read(path, as_version=4)
        clients.append(NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                      resources={"metadata": {"path": str(COLAB)}}))

    async def run(client, env):
        start = time.perf_counter()
        try:
            await client.async_execute(env=env)
            return None, time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 -- reported per notebook by its test
            return e, time.perf_counter() - start

    results = await asyncio.gather(*(run(c, e) for c, e in zip(clients, envs)))
    return {path.name: (client.nb, err, secs) for path, client, (err, secs) in zip(paths, clients, results)}


@pytest.fixture(scope="module")
def executed(cifar10_data_dir, tmp_path_factory):
    """{notebook name: (executed notebook, exception or None, seconds)}."""
    # The cache only grows (jax_compilation_cache_max_size needs the `filelock` package): start
    # it afresh beyond 256 MiB (about 6 MiB are added per change of the compiled code).
    if JAX_CACHE.is_dir() and sum(f.stat().st_size for f in JAX_CACHE.iterdir()) > 256 << 20:
        shutil.rmtree(JAX_CACHE)
    envs = []
    for name in NOTEBOOKS:
        env = {k: v for k, v in os.environ.items() if k not in ("JAXSSL_REPO", "PYTEST_CURRENT_TEST")}
        env.update(JAXSSL_NOTEBOOK_SMALL="1", TFDS_DATA_DIR=cifar10_data_dir, JAX_PLATFORMS="cpu",
                   JAXSSL_NOTEBOOK_WORKDIR=str(tmp_path_factory.mktemp(name.split("_")[0])),
                   MPLBACKEND="module://matplotlib_inline.backend_inline",
                   JAX_COMPILATION_CACHE_DIR=str(JAX_CACHE), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        envs.append(env)
    return asyncio.run(_execute_all([COLAB / n for n in NOTEBOOKS], envs))


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))


def _ran(executed, name):
    nb, err, secs = executed[name]
    if err is not None:
        raise AssertionError(f"{name} failed after {secs:.0f} s: {err}")
    return nb, _stdout(nb)


def _floats(pattern: str, text: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, text)]


def test_notebooks_are_stored_without_outputs_and_match_build_script():
    build = _build_module()
    assert tuple(name for name, *_ in build.NOTEBOOKS.values()) == NOTEBOOKS
    for n, (name, *_) in build.NOTEBOOKS.items():
        text = (COLAB / name).read_text()
        assert text == build.render(n), f"{name} is stale: run `python colab/_build.py`"
        nb = nbformat.reads(text, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for c in code:  # also the Colab-only branches, which CI cannot run
            ast.parse(c.source, filename=f"{name}:{c.id}")
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
        assert "google.colab" in code[0].source and "REPO_URL" in code[0].source
        assert "jax.devices()" in code[0].source
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "JAXSSL_NOTEBOOK_SMALL" in params[0].source, name


def test_quickstart_trains_simclr_and_prints_knn(executed):
    nb, out = _ran(executed, NOTEBOOKS[0])
    top1 = _floats(r"kNN top-1: ([\d.]+)%", out)
    assert len(top1) == 1 and 0.0 <= top1[0] <= 100.0, out
    assert _images(nb) >= 1  # the loss curve, inline


def test_dino_vit_shows_attention_maps(executed):
    nb, out = _ran(executed, NOTEBOOKS[1])
    m = re.search(r"attention maps: \((\d+), (\d+), 32, 32\)", out)
    assert m and int(m.group(2)) >= 2, out  # (images, heads, H, W), one map per head
    assert re.search(r"mass kept by the masks: ([\d.]+)", out), out
    assert min(_floats(r"mass kept by the masks: ([\d.]+)", out)) >= 0.6
    assert _images(nb) >= 1


def test_functional_library_runs_custom_method_and_knn(executed):
    nb, out = _ran(executed, NOTEBOOKS[2])
    losses = _floats(r"step \d+: loss ([-\d.]+)", out)
    assert len(losses) >= 3 and losses[-1] < losses[0], out
    assert re.search(r"mesh: .*'data'", out), out
    top1 = _floats(r"kNN top-1: ([\d.]+)%", out)
    assert len(top1) == 1 and 0.0 <= top1[0] <= 100.0, out
    assert _images(nb) >= 1  # the augmented views


def test_data2vec_runs_three_modalities(executed):
    nb, out = _ran(executed, NOTEBOOKS[3])
    for modality in ("image", "text", "speech"):
        m = re.search(rf"{modality}: loss ([-\d.]+) -> ([-\d.]+)", out)
        assert m, f"no loss line for {modality}:\n{out}"
        first, last = map(float, m.groups())
        assert last < first, f"{modality}: the loss did not go down ({first} -> {last})"
    assert _images(nb) >= 1
