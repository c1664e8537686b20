#!/usr/bin/env python3
#  SPDX-License-Identifier: Apache-2.0
#  PyTorch baselines for `kvtier bench kernels --torch FILE`, run on the same
#  GPU in the same session. Writes "name value" lines (microseconds, median
#  of CUDA-event timings after warm-up) that kvt_bench_kernels.c reads.
#
#  Decode: one query token per sequence, 32 query / 8 KV heads, head_dim 128,
#  bf16, K/V contiguous [batch, kv_heads, len, 128]. GQA decode is computed
#  as SDPA with the 4 query heads of each KV group as 4 query rows
#  (q [batch, 8, 4, 128]), which is exact and reads each KV byte once;
#  enable_gqa=True is timed too where the backend takes it.
#  Prefill: causal, q [batch, 32, len, 128], K/V with 8 heads (enable_gqa),
#  flash backend; K/V expanded to 32 heads if the backend refuses GQA.
#
#  Usage: baseline_sdpa.py --out FILE [--reps N]
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


BATCH = 4   # calls timed together, as kvtier bench kernels does (S_BATCH)


def time_us(fn, reps):
    """Median over reps batches of the time per call: BATCH calls queued
    back to back between two events, so that Python's dispatch overlaps the
    device's work and the figure is the device's time."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(BATCH):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1000.0 / BATCH)
    return statistics.median(times)


def decode(batch, length, reps, lines):
    label = f"{batch}x{length // 1024}K"
    kv_heads, group, dim = 8, 4, 128
    gen = torch.Generator(device="cuda").manual_seed(batch * 7 + length)
    k = torch.rand(batch, kv_heads, length, dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
    v = torch.rand(batch, kv_heads, length, dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
    q_rows = torch.rand(batch, kv_heads, group, dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
    q_gqa = q_rows.reshape(batch, kv_heads * group, 1, dim)
    best = None
    for name, backend in BACKENDS.items():
        results = []
        for variant, fn in (
            ("rows", lambda: F.scaled_dot_product_attention(q_rows, k, v)),
            ("gqa", lambda: F.scaled_dot_product_attention(q_gqa, k, v, enable_gqa=True)),
        ):
            try:
                with sdpa_kernel([backend]):
                    us = time_us(fn, reps)
                results.append(us)
                print(f"# decode {label} {name} {variant}: {us:.1f} us", flush=True)
            except Exception as error:  # backend refuses this shape
                print(f"# decode {label} {name} {variant}: unsupported ({str(error).splitlines()[0][:80]})",
                      flush=True)
        if results:
            lines.append(f"sdpa_{name}_{label}_us {min(results):.3f}")
            best = min(results) if best is None else min(best, min(results))
    if best is not None:
        lines.append(f"sdpa_best_{label}_us {best:.3f}")
    del k, v
    torch.cuda.empty_cache()


def prefill(batch, length, reps, lines):
    label = f"{batch}x{length // 1024}K"
    heads, kv_heads, dim = 32, 8, 128
    gen = torch.Generator(device="cuda").manual_seed(batch * 11 + length)
    q = torch.rand(batch, heads, length, dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
    k = torch.rand(batch, kv_heads, length, dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
    v = torch.rand(batch, kv_heads, length, dim, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1
    for name in ("flash", "cudnn"):
        backend = BACKENDS[name]
        us = None
        try:
            with sdpa_kernel([backend]):
                us = time_us(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                    enable_gqa=True), reps)
            variant = "gqa"
        except Exception:
            k_full = k.repeat_interleave(heads // kv_heads, dim=1)
            v_full = v.repeat_interleave(heads // kv_heads, dim=1)
            try:
                with sdpa_kernel([backend]):
                    us = time_us(lambda: F.scaled_dot_product_attention(q, k_full, v_full,
                                                                        is_causal=True), reps)
                variant = "expanded"
            except Exception as error:
                print(f"# prefill {label} {name}: unsupported ({str(error).splitlines()[0][:80]})",
                      flush=True)
        if us is not None:
            print(f"# prefill {label} {name} {variant}: {us:.1f} us", flush=True)
            lines.append(f"{name}_{label}_us {us:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--only", choices=["decode", "prefill"],
                        help="time only these baselines")
    args = parser.parse_args()
    lines = [f"# torch {torch.__version__} cudnn {torch.backends.cudnn.version()} "
             f"{torch.cuda.get_device_name()}"]
    print(lines[0], flush=True)
    if args.only != "prefill":
        decode(64, 4096, args.reps, lines)
        decode(16, 32768, args.reps, lines)
        decode(1, 131072, args.reps, lines)
    if args.only != "decode":
        prefill(1, 8192, args.reps, lines)
        prefill(4, 4096, args.reps, lines)
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
