#!/usr/bin/env bash
#  Build kvtier with CUDA on this machine and gather what the lent GPU
#  machine needs to run it: it has the CUDA toolkit, cuBLAS and PyTorch but
#  not libzmq, CZMQ, liburing, msgpack-c or xxhash. Stripped binaries go to
#  build-final/, the shared libraries they load from outside the C library
#  and CUDA to .devlibs/ (both ignored by git). Carry both (the device tool
#  takes 64 MiB in all; this checks the sum) and, on the card, from the
#  repository root:
#      export LD_LIBRARY_PATH=$PWD/.devlibs:/usr/local/cuda/lib64
#      export KVTIER=$PWD/build-final/kvtier KVT_SOURCE_DIR=$PWD
#      export KVT_TEST_POLICY_PLUGIN=$PWD/build-final/kvt_test_policy_plugin.so
#  (KVTIER: tests that start actor processes run it.)
#  Usage: tools/bench/gpu/carry.sh [target ...]
#  Default targets: kvtier, the test policy plugin and every tests/test_gpu_*.c.
#  BUILD (default build-gpurt) is the CMake build folder; NVCC the compiler.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${BUILD:-$ROOT/build-gpurt}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
LIMIT_MIB=64
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(kvtier kvt_test_policy_plugin)
    for test in "$ROOT"/tests/test_gpu_*.c; do
        targets+=("$(basename "$test" .c)")
    done
fi
cmake -S "$ROOT" -B "$BUILD" -DKVT_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_COMPILER="$NVCC" > /dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "${targets[@]}"

rm -rf "$ROOT/build-final" "$ROOT/.devlibs"
mkdir -p "$ROOT/build-final" "$ROOT/.devlibs"
for target in "${targets[@]}"; do
    for file in "$BUILD/$target" "$BUILD/$target.so"; do
        [ -f "$file" ] && strip -o "$ROOT/build-final/$(basename "$file")" "$file"
    done
done
#  Every library a carried binary loads, but the C and C++ runtimes, the
#  loader and CUDA's own (the card's toolkit has those)
for binary in "$ROOT"/build-final/*; do
    ldd "$binary" | awk '/=> \// { print $3 }'
done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' \
     | grep -vE '/lib(cudart|cublas|cublasLt|cuda)\.so' \
     | while read -r library; do cp -L "$library" "$ROOT/.devlibs/"; done

mib=$(du -smc "$ROOT/build-final" "$ROOT/.devlibs" | awk 'END { print $1 }')
ls "$ROOT/build-final"
echo "carry build-final and .devlibs: $mib MiB of $LIMIT_MIB"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
    echo "carry.sh: more than the device tool carries; name fewer targets" >&2
    exit 1
fi
