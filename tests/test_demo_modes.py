#!/usr/bin/env python3
"""The demo gives identical results with actors as threads and as processes.

Runs `kvtier demo` on a short prefix of the bundled trace twice: on the
embedded default (every actor a thread) and with configs/multiprocess.cfg
(tier_host, tier_nvme and migration as processes over ipc://). Every line
of the report that is not a timing must match: prefix blocks per tier,
blocks computed, bytes moved on each link, and the digest of every output
token. Each run also checks itself: identical outputs with and without the
cache, and no request errors.
"""
import os
import subprocess
import sys

TIMING = ("TTFT", "wall time", "prefill avoided")


def run_demo(kvtier, extra):
    #  Small tiers so that 150 requests push blocks through host and NVMe;
    #  the GPU tier still holds the longest of those prompts (236 blocks)
    command = [kvtier, "demo", "-o", "demo/requests=150", "-o", "tier_gpu/capacity_blocks=240",
               "-o", "tier_host/capacity_blocks=48"] + extra
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    report = [line for line in lines if line.startswith("  ") and line.strip()
              and not any(word in line for word in TIMING)]
    if "outputs identical with and without the cache: yes" not in done.stdout:
        sys.exit("demo outputs differ with and without the cache:\n" + done.stdout)
    return report


def main():
    kvtier = os.environ.get("KVTIER")
    source = os.environ.get("KVT_SOURCE_DIR")
    if not kvtier or not source:
        print("KVTIER or KVT_SOURCE_DIR not set: skip")
        return 77
    threads = run_demo(kvtier, [])
    processes = run_demo(kvtier, ["--config", os.path.join(source, "configs/multiprocess.cfg")])
    if threads != processes:
        for a, b in zip(threads, processes):
            marker = "   " if a == b else "!! "
            print(marker + a + "\n   " + b)
        sys.exit("the demo's report differs between thread and process mode")
    nvme = [line for line in threads if "prefix blocks from NVMe" in line]
    assert nvme and int(nvme[0].split()[-2]) > 0, threads     #  Blocks came back from disk
    print("\n".join(threads))
    print("test_demo_modes: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
