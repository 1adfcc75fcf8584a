#!/usr/bin/env bash
# Build .venv-verl/: verl and its dependencies beside ticgrpo, for the tests in tests/verl/.
#
# verl pins a transformers range of its own and pulls ray, hydra and wandb, so it gets its own
# virtual environment instead of the main one. torch is pinned to the CPU build (2.13.0) in the
# same pip command, so the resolver can never swap in a multi-GB CUDA wheel.
#
# Usage: bash .ci/verl_env.sh [VENV_DIR]   (default .venv-verl, at the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-verl}
VERL_VERSION=${VERL_VERSION:-0.9.1}  # tested; the plugin supports >=0.7.1,<0.10
TORCH_VERSION=2.13.0
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet \
  "torch==$TORCH_VERSION" "verl==$VERL_VERSION" "pytest>=8" -e .
"$VENV/bin/python" - <<PY
import torch, verl
assert torch.__version__.split("+")[0] == "$TORCH_VERSION", torch.__version__
assert not torch.version.cuda, f"a CUDA build of torch was installed: {torch.version.cuda}"
print(f"verl {verl.__version__}, torch {torch.__version__} in $VENV")
PY
