#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a CUDA device and torch + triton installed
# (run from the repository root): the CUDA and Triton tests, then the custom-cell and
# parallel-scan benchmarks against cuDNN. Each step has its own time limit, so that one slow
# step still leaves the others' results. Logs go to $OUT (default runs/gpu).
#
#     bash scripts/gpu_checks.sh            # about 7 minutes on one H200 (SWEEP=0: 5)
set -u
out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, its output to the screen and $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', \
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"

step tests 170 $py -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py tests/test_triton_kernels.py
step custom_cells 120 $py benchmarks/custom_cells.py --device cuda --repeats 9
step parallel 120 $py benchmarks/parallel.py --device cuda --full --repeats 5
step parallel_log 40 $py benchmarks/parallel.py --device cuda --T 16384 --cases mingru --scan log --repeats 5
step min_scan_chunks 40 $py benchmarks/parallel.py --device cuda --T 16384 --cases mingru --chunk-sweep
if [ "${SWEEP:-1}" = 1 ]; then
    step sweep 100 $py benchmarks/custom_cells.py --device cuda --sweep --repeats 5
fi
