#!/usr/bin/env bash
#  Build kvt_kernels (CUDA), the GPU tests and the standalone bench driver
#  with nvcc and gcc only: no ZeroMQ, CZMQ, msgpack or liburing needed, so
#  the binaries run on a bare GPU machine. cudart is linked statically.
#  Usage: tools/bench/gpu/build.sh [build-dir]   (default build-gpu)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
CUDA_HOME=$(dirname "$(dirname "$NVCC")")
#  sm_90a by default, so the wgmma prefill (kvt_paged_prefill v3) is built;
#  KVT_CUDA_ARCH=sm_90 builds plain sm_90 (the launcher then falls back)
if [ -n "${KVT_CUDA_ARCH:-}" ]; then ARCH_FLAGS="-arch=$KVT_CUDA_ARCH"
else ARCH_FLAGS="-gencode=arch=compute_90a,code=sm_90a"; fi
JOBS=${JOBS:-2}
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -DKVT_WITH_CUDA=1 -I$ROOT/kernels -I$ROOT/tools/bench -I$CUDA_HOME/include"
mkdir -p "$BUILD/obj"
objs=()
pids=()
for cu in "$ROOT"/kernels/*.cu; do
    obj="$BUILD/obj/$(basename "$cu" .cu).cu.o"
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ "$cu" -nt "$obj" ] || [ -n "$(find "$ROOT/kernels" -name '*.cuh' -newer "$obj")" ]; then
        "$NVCC" $ARCH_FLAGS -O3 -lineinfo -DKVT_WITH_CUDA=1 --expt-relaxed-constexpr \
            -Xcompiler=-Wall,-Wextra,-Werror -I"$ROOT/kernels" -c "$cu" -o "$obj" &
        pids+=($!)
        if [ ${#pids[@]} -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
for c in "$ROOT"/kernels/*.c; do
    obj="$BUILD/obj/$(basename "$c" .c).c.o"
    objs+=("$obj")
    gcc $CFLAGS -c "$c" -o "$obj"
done
rm -f "$BUILD/libkvt_kernels_gpu.a"
ar rcs "$BUILD/libkvt_kernels_gpu.a" "${objs[@]}"
LIBS="-L$BUILD -lkvt_kernels_gpu -L$CUDA_HOME/lib64 -lcublas -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm"
#  GPU tests that need the runtime (kvt.h, CZMQ) do not build here: skip them
for t in "$ROOT"/tests/test_gpu_*.c; do
    gcc $CFLAGS -o "$BUILD/$(basename "$t" .c)" "$t" $LIBS 2>"$BUILD/build-test.err" \
        || echo "skipped $(basename "$t" .c): $(grep -m1 error "$BUILD/build-test.err")"
done
gcc $CFLAGS -o "$BUILD/kvt_bench_gpu" "$ROOT/tools/bench/gpu/kvt_bench_gpu.c" \
    "$ROOT/tools/bench/kvt_bench_kernels.c" "$ROOT/tools/bench/kvt_bench_transfer.c" \
    "$ROOT/tools/bench/kvt_bench_transfer_attn.c" \
    "$ROOT/tools/bench/kvt_bench_report.c" $LIBS
echo "built in $BUILD:"; ls "$BUILD"
#  Extra bench binaries with kernel tuning macros, for same-run comparisons:
#  VARIANTS="nopf:-DS_PREFETCH_K=0 u8:-DS_UNROLL=8" builds kvt_bench_gpu_nopf, ...
for variant in ${VARIANTS:-}; do
    suffix=${variant%%:*}
    flags=${variant#*:}
    flags=${flags//,/ }
    mkdir -p "$BUILD/obj-$suffix"
    vobjs=()
    for cu in "$ROOT"/kernels/*.cu; do
        obj="$BUILD/obj-$suffix/$(basename "$cu" .cu).cu.o"
        vobjs+=("$obj")
        "$NVCC" $ARCH_FLAGS -O3 -lineinfo -DKVT_WITH_CUDA=1 $flags --expt-relaxed-constexpr \
            -Xcompiler=-Wall,-Wextra,-Werror -I"$ROOT/kernels" -c "$cu" -o "$obj"
    done
    for obj in "$BUILD"/obj/*.c.o; do vobjs+=("$obj"); done
    rm -f "$BUILD/libkvt_kernels_$suffix.a"
    ar rcs "$BUILD/libkvt_kernels_$suffix.a" "${vobjs[@]}"
    gcc $CFLAGS -o "$BUILD/kvt_bench_gpu_$suffix" "$ROOT/tools/bench/gpu/kvt_bench_gpu.c" \
        "$ROOT/tools/bench/kvt_bench_kernels.c" "$ROOT/tools/bench/kvt_bench_transfer.c" \
        "$ROOT/tools/bench/kvt_bench_transfer_attn.c" \
        "$ROOT/tools/bench/kvt_bench_report.c" -L"$BUILD" -lkvt_kernels_$suffix \
        -L"$CUDA_HOME/lib64" -lcublas -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm
    for vt in block_copy paged_prefill fp8_attention; do
    gcc $CFLAGS -o "$BUILD/variant_${suffix}_test_gpu_$vt" "$ROOT/tests/test_gpu_$vt.c" \
        -L"$BUILD" -lkvt_kernels_$suffix -L"$CUDA_HOME/lib64" -lcudart_static -ldl -lrt -lpthread \
        -lstdc++ -lm
    done
    echo "variant $suffix ($flags): $BUILD/kvt_bench_gpu_$suffix"
done
