#!/usr/bin/env bash
# The GPU run of issue 20, for the first machine with a CUDA GPU: one command, under 8
# minutes on one H100/H200. Writes benchmarks/results/gpu/gpu.json and gpu.md (or --out).
#   bash benchmarks/gpu.sh            # on the GPU machine
#   bash benchmarks/gpu.sh --smoke    # tiny shapes on CPU (what the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import spry" 2>/dev/null || python -m pip install -q --no-deps -e .
PYTHONUNBUFFERED=1 exec python benchmarks/gpu.py "$@"
