#  Thin wrapper over CMake. `make demo` and `make test` each install missing
#  packages, configure, build and run, from a fresh clone.

JOBS      ?= $(shell nproc)
BUILD     ?= build
TESTBUILD ?= build-asan
CUDABUILD ?= build-cuda

.PHONY: all deps demo test test-cuda-compile clean

all: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@tools/install-deps.sh

demo: all
	$(BUILD)/kvtier demo

#  CPU tests under ASan/UBSan; then every .cu file compiles (when nvcc is
#  present) so that GPU code cannot rot on a machine without a GPU.
test: deps
	cmake -S . -B $(TESTBUILD) -DCMAKE_BUILD_TYPE=Debug -DKVT_SANITIZE=ON -DKVT_CUDA=OFF
	cmake --build $(TESTBUILD) -j $(JOBS)
	cd $(TESTBUILD) && ctest -L cpu --output-on-failure -j $(JOBS)
	$(MAKE) test-cuda-compile

test-cuda-compile:
	@if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then \
	    cmake -S . -B $(CUDABUILD) -DCMAKE_BUILD_TYPE=Release -DKVT_CUDA=ON \
	        -DCMAKE_CUDA_COMPILER=$$(command -v nvcc || echo /usr/local/cuda/bin/nvcc) && \
	    cmake --build $(CUDABUILD) -j $(JOBS) --target kvt_kernels kvtier kvt_selftest; \
	else echo "nvcc not found: CUDA compile check skipped"; fi

clean:
	rm -rf $(BUILD) $(TESTBUILD) $(CUDABUILD)
