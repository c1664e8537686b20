#!/usr/bin/env bash
#  Run on the lent GPU machine from the repository root with a build carried
#  over: build-final from tools/bench/gpu/carry.sh (kvtier, the GPU tests;
#  .devlibs beside it), else build-gpu from tools/bench/gpu/build.sh (the
#  kernels, the tests that need no runtime, kvt_bench_gpu).
#  Steps: info tests sanitize torch kernels transfer model demo disk; by
#  default all but disk that the build has (model, demo and disk need
#  kvtier). disk: the cold tiers on the card's disk (DISK_DIR, default
#  /tmp): `bench nvme` on 2 MiB-page buffers at the issue's three sizes,
#  and `bench host` (NVMe -> GPU promotion, host -> NVMe demotion) with
#  the actors as threads and as processes. GPU tests, their
#  compute-sanitizer memcheck, PyTorch baselines, then `bench kernels` and
#  `bench transfer` beside them, the 8B model's prefill beside cuBLAS and
#  the 8B demo's digest with and without the cache. Each command runs under
#  `timeout STEP_LIMIT` (seconds, default 300): a hung kernel costs minutes
#  of the session's device time, not all of it.
#  Logs go to $OUT (or /tmp/kvt-out); summary.txt gathers every step's result.
#  Usage: device_run.sh [steps...]
set -uo pipefail
BUILD=${BUILD:-$( [ -d build-final ] && echo build-final || echo build-gpu )}
OUT=${OUT:-/tmp/kvt-out}
LIMIT=${STEP_LIMIT:-300}
SUMMARY=$OUT/summary.txt
mkdir -p "$OUT"
#  cuBLAS (test_gpu_layers): the toolkit's, else the one PyTorch ships
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH=${PWD}/.devlibs:/usr/local/cuda/lib64:/usr/local/cuda/lib${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export KVT_SOURCE_DIR=$PWD
if [ -x "$BUILD/kvtier" ]; then
    export KVTIER=$PWD/$BUILD/kvtier        #  Tests start actor processes with it
    bench=("$BUILD/kvtier" bench)
    default_steps="info tests sanitize torch kernels transfer model demo"
else
    bench=("$BUILD/kvt_bench_gpu")
    default_steps="info tests sanitize torch kernels transfer"
fi
[ -f "$BUILD/kvt_test_policy_plugin.so" ] \
    && export KVT_TEST_POLICY_PLUGIN=$PWD/$BUILD/kvt_test_policy_plugin.so
steps=${*:-$default_steps}
status=0

#  'name' 'log' command...: run it under the time limit into 'log', note
#  its exit in the summary; a failure fails the run
s_run () {
    local name=$1 log=$2
    shift 2
    timeout "$LIMIT" "$@" > "$log" 2>&1
    local rc=$?
    echo "$name: exit $rc$( [ $rc -eq 124 ] && echo " (over ${LIMIT} s)" )" | tee -a "$SUMMARY"
    [ $rc -ne 0 ] && status=1
    return $rc
}

for step in $steps; do
    echo "=== $step $(date -u +%H:%M:%S)" | tee -a "$SUMMARY"
    case $step in
    info)
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,pcie.link.gen.current,pcie.link.width.current --format=csv 2>&1 | tee "$OUT/info.txt" >> "$SUMMARY"
        ;;
    tests)
        for t in "$BUILD"/test_gpu_*; do
            s_run "$(basename "$t")" "$OUT/$(basename "$t").log" "$t"
            tail -1 "$OUT/$(basename "$t").log" >> "$SUMMARY"
        done
        ;;
    sanitize)
        for t in "$BUILD"/test_gpu_*; do
            s_run "memcheck $(basename "$t")" "$OUT/memcheck_$(basename "$t").log" \
                env KVT_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 9 "$t"
            grep "ERROR SUMMARY" "$OUT/memcheck_$(basename "$t").log" >> "$SUMMARY"
        done
        ;;
    torch)
        s_run torch "$OUT/torch.log" env PYTHONUNBUFFERED=1 \
            python3 tools/bench/gpu/baseline_sdpa.py --out "$OUT/torch.txt"
        ;;
    kernels)
        s_run "bench kernels" "$OUT/bench_kernels.txt" "${bench[@]}" kernels --torch "$OUT/torch.txt"
        grep -v "^#" "$OUT/bench_kernels.txt" >> "$SUMMARY"
        ;;
    transfer)
        s_run "bench transfer" "$OUT/bench_transfer.txt" "${bench[@]}" transfer ${TRANSFER_ARGS:-}
        grep -v "^#" "$OUT/bench_transfer.txt" >> "$SUMMARY"
        ;;
    model)
        s_run "bench model" "$OUT/bench_model.txt" "${bench[@]}" model --only prefill
        grep -v "^#" "$OUT/bench_model.txt" >> "$SUMMARY"
        ;;
    disk)
        if [ ! -x "$BUILD/kvtier" ]; then
            echo "disk: needs kvtier (tools/bench/gpu/carry.sh)" | tee -a "$SUMMARY"
            status=1
            continue
        fi
        disk_dir=${DISK_DIR:-/tmp}
        s_run "bench nvme" "$OUT/bench_nvme.txt" "${bench[@]}" nvme --only sizes \
            --sizes 64k,512k,2m --mib 256 --reps 5 --hugepages --dir "$disk_dir"
        grep -E "^store_(read|write)_[0-9a-z]+_auto|^# (paired|checksums)_" \
            "$OUT/bench_nvme.txt" >> "$SUMMARY"
        for mode in thread process; do
            s_run "bench host ($mode)" "$OUT/bench_host_$mode.txt" "${bench[@]}" host \
                --blocks 2048 --block-kib 256 --reps 3 --no-sweep --dir "$disk_dir" \
                -o tier_nvme/mode=$mode -o tier_host/mode=$mode
            grep -E "^(nvme_to_gpu|host_to_nvme)_gbps|^# paired" \
                "$OUT/bench_host_$mode.txt" >> "$SUMMARY"
        done
        ;;
    demo)
        s_run demo "$OUT/demo.log" "$BUILD/kvtier" demo --config configs/gpu-h100.cfg \
            -o tier_gpu/capacity_blocks=8192 -o tier_host/capacity_blocks=8192 \
            -o demo/trace="$PWD/tools/demo/trace_slice.jsonl"
        grep -E "digest|blocks from|TTFT p50" "$OUT/demo.log" >> "$SUMMARY"
        ;;
    *)
        echo "device_run.sh: no step '$step'" | tee -a "$SUMMARY"
        status=1
        ;;
    esac
done
exit $status
