#!/usr/bin/env bash
#  Run on the lent GPU machine from the repository root, after
#  tools/bench/gpu/build.sh built build-gpu here (carried over):
#  GPU tests, compute-sanitizer memcheck on them, PyTorch baselines, then
#  `bench kernels` and `bench transfer` beside those baselines.
#  Logs go to $OUT (or /tmp/kvt-out). Usage: device_run.sh [steps...]
#  steps: info tests sanitize torch kernels transfer (default: all)
set -uo pipefail
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-/tmp/kvt-out}
mkdir -p "$OUT"
#  cuBLAS (test_gpu_layers): the toolkit's, else the one PyTorch ships
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/lib${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
steps=${*:-info tests sanitize torch kernels transfer}
status=0
for step in $steps; do
    echo "=== $step $(date -u +%H:%M:%S)"
    case $step in
    info)
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,pcie.link.gen.current,pcie.link.width.current --format=csv 2>&1 | tee "$OUT/info.txt"
        ;;
    tests)
        for t in "$BUILD"/test_gpu_*; do
            "$t"; rc=$?; echo "$(basename "$t"): exit $rc"
            [ $rc -ne 0 ] && status=1
        done 2>&1 | tee "$OUT/tests.log"
        ;;
    sanitize)
        : > "$OUT/memcheck.log"
        for t in "$BUILD"/test_gpu_*; do
            KVT_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 9 "$t" > /tmp/memcheck.one 2>&1
            rc=$?; cat /tmp/memcheck.one >> "$OUT/memcheck.log"
            echo "memcheck $(basename "$t"): exit $rc"; tail -2 /tmp/memcheck.one
            [ $rc -ne 0 ] && status=1
        done
        ;;
    torch)
        PYTHONUNBUFFERED=1 python3 tools/bench/gpu/baseline_sdpa.py --out "$OUT/torch.txt" 2>&1 | tee "$OUT/torch.log"
        ;;
    kernels)
        "$BUILD/kvt_bench_gpu" kernels --torch "$OUT/torch.txt" 2>&1 | tee "$OUT/bench_kernels.txt"
        ;;
    transfer)
        "$BUILD/kvt_bench_gpu" transfer ${TRANSFER_ARGS:-} 2>&1 | tee "$OUT/bench_transfer.txt"
        ;;
    esac
done
exit $status
