#!/usr/bin/env bash
# Creates .venv-bench at the repository root: jaxssl's pinned stack + the PyTorch peers used by
# benchmarks/. Two steps, because lightly is installed without its dependencies (the "#nodeps"
# lines of benchmarks/requirements.txt; see that file).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
.venv-bench/bin/pip install -r requirements.txt -r benchmarks/requirements.txt
.venv-bench/bin/pip install --no-deps $(sed -n 's/^#nodeps //p' benchmarks/requirements.txt)
.venv-bench/bin/python -c "import torch, torchvision, jax, lightly.loss, lightly.models.modules, lightly.transforms; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'jax', jax.__version__)"
