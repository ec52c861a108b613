#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go: the CUDA tests (tests/test_cuda.py, which
# skip everywhere else), then the stacked CNN search's images/s on the GPU
# (benchmarks/search_gpu.py, issue 35's GPU row, with the bfloat16 row).
#
# Run from the repository root on the GPU machine. Logs and the benchmark's table go to
# $OUT if it is set (else to benchmarks/). A machine whose Python lacks skorch (the
# package is pure Python) takes its wheel from .whl/ (ignored by git), fetched beforehand
# where PyPI can be reached:
#
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux2014_x86_64 -d .whl "skorch==1.4.0"
#
# The exit status is the tests'; the benchmark runs whatever they gave.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks}"
if ! python3 -c "import skorch" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log"
tests=${PIPESTATUS[0]}
python3 benchmarks/search_gpu.py --bf16 --out "$out/search_gpu.md" 2>&1 | tee "$out/search_gpu.log"
exit "$tests"
