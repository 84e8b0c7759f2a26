#!/usr/bin/env bash
# The packages benchmarks/gpu.sh installs on the GPU machine, which has no network: downloaded here into
# benchmarks/wheels/ (not committed) for its python (3.12 on the machines lent so far; PYTHON_VERSION
# overrides). ANTLR's runtime 4.9 comes as a source archive: pure Python, built there without network.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
mkdir -p wheels
pip download --quiet --dest wheels --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    hydra-core omegaconf wandb
pip download --quiet --dest wheels --no-deps --no-binary=:all: "antlr4-python3-runtime==4.9.3"
ls wheels
