#!/usr/bin/python3
#  SPDX-License-Identifier: Apache-2.0
"""The benches run end to end on a small case and report what they promise.

`kvtier bench host`, `kvtier bench nvme` and `kvtier bench shard` are how the
project's figures are measured (tools/bench/RESULTS.md), but they only run by
hand: this keeps them from rotting. It checks that each runs, prints JSON, that every figure it must
report is there with a positive value beside a positive same-run baseline and
the ratio of the two, and that a bad option is a usage error (exit 2). It
asserts nothing about speed: speed is what the benches measure, not what a
test may check."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

KVTIER = os.environ.get("KVTIER", "build/kvtier")
TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "demo",
                     "trace_slice.jsonl")


def fail(what):
    print(f"FAIL: {what}")
    sys.exit(1)


def bench(args, work):
    """Run `kvtier bench ARGS --json --dir WORK`; return the parsed report."""
    cmd = [KVTIER, "bench"] + args + ["--json", "--dir", work]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        fail(f"{' '.join(cmd)} exited {run.returncode}: {run.stderr[-2000:]}")
    try:
        return json.loads(run.stdout)
    except json.JSONDecodeError as error:
        fail(f"{' '.join(cmd)} did not print JSON ({error}): {run.stdout[:500]}")


def figures(report, names, what):
    """Each named figure is there, positive, beside a positive baseline and their ratio."""
    by_name = {f["figure"]: f for f in report.get("figures", [])}
    for name in names:
        figure = by_name.get(name)
        if figure is None:
            fail(f"{what}: no figure {name} (have {sorted(by_name)})")
        value, baseline, ratio = figure["value"], figure.get("baseline"), figure.get("ratio")
        if not value > 0 or baseline is None or not baseline > 0:
            fail(f"{what}: {name} = {value} beside baseline {baseline}")
        if abs(ratio - value / baseline) > 1e-3 * max(1.0, ratio):
            fail(f"{what}: {name} ratio {ratio} is not {value} / {baseline}")
    print(f"{what}: {len(names)} figures, each beside its baseline")


def main():
    if not os.path.exists(KVTIER):
        print(f"skip: no {KVTIER}")
        return 77
    with tempfile.TemporaryDirectory(prefix="kvt-bench-smoke-") as work:
        #  One prompt stored in pieces (STORE, then STORE_TAILs) and the
        #  same prefix as separate prompts: reads, writes, both baselines
        promotion = ["host_to_gpu_gbps", "nvme_to_gpu_gbps", "host_to_nvme_gbps",
                     "nvme_to_gpu_vs_spread_gbps", "host_to_nvme_vs_spread_gbps", "xxh3_gbps"]
        report = bench(["host", "--blocks", "48", "--block-kib", "64", "--reps", "2",
                        "--prompt-mib", "1"], work)
        if "in 1 prompts" not in report["notes"].get("prefix", ""):
            fail(f"bench host: the prefix is not one prompt: {report['notes']}")
        #  What the host arena sits on, and (tier_nvme/direct = auto) which
        #  way the disk tier's reads went
        if "on 2 MiB pages" not in report["notes"].get("host arena", "") and \
                "does not say" not in report["notes"].get("host arena", ""):
            fail(f"bench host: no host arena note: {report['notes']}")
        if " rounds" not in report["notes"].get("read path", ""):
            fail(f"bench host: no read path note: {report['notes']}")
        #  Each way's ratio paired rep by rep too
        for key, words in (("paired", "NVMe -> GPU / min"), ("paired writes", "host -> NVMe")):
            note = report["notes"].get(key, "")
            if words not in note or not float(note.rsplit(": ", 1)[-1]) > 0:
                fail(f"bench host: no {key} ratio: {report['notes']}")
        figures(report, promotion + ["nvme_to_gpu_vs_best_raw_gbps",
                                     "host_to_nvme_vs_best_raw_gbps"],
                "bench host (one prompt, 3 pieces)")
        #  Raw at qd/4, qd/2, qd and 2 x qd (the tier's depth is 256 here)
        sweep = report["notes"].get("raw sweep GB/s read / write", "")
        if [part.split(":")[0] for part in sweep.split("; ")] != \
                ["qd 64", "qd 128", "qd 256", "qd 512"]:
            fail(f"bench host: the raw sweep is not qd 64/128/256/512: {sweep!r}")
        report = bench(["host", "--blocks", "48", "--block-kib", "64", "--reps", "2",
                        "--prompt-mib", "1", "--split", "--no-sweep"], work)
        if report["notes"].get("raw sweep GB/s read / write", "").count("qd") != 1:
            fail(f"bench host --no-sweep: raw ran at more than one depth: {report['notes']}")
        if "in 3 prompts" not in report["notes"].get("prefix", ""):
            fail(f"bench host --split: not 3 prompts: {report['notes']}")
        figures(report, promotion, "bench host --split")
        #  Promotions beside the upkeep's demotions, both modes: every
        #  request but the first had an upkeep behind it
        report = bench(["host", "--both", "--blocks", "64", "--block-kib", "64", "--reps",
                        "1"], work)
        figures(report, ["both_ways_beside_gbps", "both_ways_after_gbps", "requests_beside_ms"],
                "bench host --both")
        if "0 jobs ran beside" not in report["notes"].get("overlap_upkeep 1", ""):
            fail(f"bench host --both: jobs ran beside the upkeep with overlap_upkeep 1: "
                 f"{report['notes']}")
        report = bench(["host", "--both", "--clients", "2", "--blocks", "64", "--block-kib",
                        "64", "--reps", "1"], work)
        if not report["notes"].get("shape", "").startswith("2 client(s) at once"):
            fail(f"bench host --both --clients 2: not 2 clients: {report['notes']}")
        figures(report, ["both_ways_beside_gbps", "requests_beside_ms"],
                "bench host --both --clients 2")
        report = bench(["nvme", "--mib", "8", "--reps", "1", "--sizes", "64k", "--only",
                        "sizes"], work)
        figures(report, ["store_read_64k_direct_gbps", "store_write_64k_direct_gbps",
                         "store_read_64k_auto_gbps", "store_write_64k_auto_gbps"],
                "bench nvme")
        #  Every paired ratio comes with raw's own A/A ratio, its noise floor
        if "noise floor): write" not in report["notes"].get("raw_aa_64k", ""):
            fail(f"bench nvme: no A/A control in {report['notes']}")
        #  ...and the reads beside raw reads that hash what lands
        if "raw reads that hash each block" not in report["notes"].get("checked_64k", ""):
            fail(f"bench nvme: no checked raw reads in {report['notes']}")
        #  Static layer sharding: F = 1 then F = 0.5, one runtime each,
        #  the same tokens out of both; the decode keys of the simulator's
        #  calibration written beside a link key already in the file
        calibration_dir = tempfile.mkdtemp(prefix="kvt-bench-smoke-cal-")
        calibration = os.path.join(calibration_dir, "calibration.json")
        with open(calibration, "w") as out:
            json.dump({"kvtier_calibration": 1, "h2d_GBps": 20.0}, out)
        report = bench(["shard", "--prompt", "64", "--new", "4", "--fractions", "0.5",
                        "--calibration", calibration], work)
        with open(calibration) as source:
            written = json.load(source)
        decode = next(f["value"] for f in report["figures"]
                      if f["figure"] == "f0.5_decode_per_token_ms")
        if written.get("h2d_GBps") != 20.0 or not 0 < written.get("decode_ms_per_token", 0) \
                or written.get("decode_shard_step_ms", -1) < 0 \
                or written.get("decode_shard_step_ms") > decode:
            fail(f"bench shard --calibration wrote {written} (F = 0.5 decode {decode} ms)")
        #  The tiny CPU shape: 8 layers x 2 (K, V) x 4 KV heads x 128 x 2 B a token
        if written.get("block_bytes") != 8 * 2 * 4 * 128 * 2 * 512:
            fail(f"bench shard --calibration: block_bytes {written.get('block_bytes')}")
        run = subprocess.run([KVTIER, "replay", TRACE, "--simulate", "--requests", "50",
                              "--policy", "lru", "--capacity", "100", "--gpu-layer-fraction",
                              "0.5", "--calibration", calibration, "--json"],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            fail(f"replay --calibration {calibration} exited {run.returncode}: {run.stderr}")
        with open(calibration, "w") as out:
            out.write('{"kvtier_calibration": 1, "no_such_key": 3}')
        run = subprocess.run([KVTIER, "bench", "shard", "--prompt", "64", "--new", "4",
                              "--fractions", "0.5", "--calibration", calibration,
                              "--dir", work], capture_output=True, text=True, timeout=300)
        if run.returncode != 1 or "no_such_key" not in open(calibration).read():
            fail(f"bench shard over a calibration file that does not load exited "
                 f"{run.returncode} (want 1, the file kept)")
        shutil.rmtree(calibration_dir)
        figures(report, ["f0.5_ttft_computed_ms", "f0.5_ttft_gpu_hit_ms",
                         "f0.5_decode_per_token_ms"], "bench shard")
        notes = report["notes"]
        if notes.get("F=0.5 outputs") != "identical to F=1 (all 3 requests)":
            fail(f"bench shard: outputs at F = 0.5 not noted identical: {notes}")
        if "4/8 layers on GPU" not in notes.get("F=0.5 tier_gpu", "") or \
                "2.00x F=1" not in notes.get("F=0.5 tier_gpu", ""):
            fail(f"bench shard: F = 0.5 does not keep 4/8 layers in 2x the blocks: {notes}")
        if "MiB/step" not in notes.get("F=0.5 host read", ""):
            fail(f"bench shard: no host read note: {notes}")
        if os.listdir(work):
            fail(f"the benches left files behind in {work}: {os.listdir(work)}")
    for bad in (["host", "--blocks", "0"], ["host", "--block-kib", "96"],
                ["host", "--both", "--clients", "0"],
                ["host", "--qd", "-1"], ["shard", "--fractions", "1.5"],
                ["shard", "--fractions", "0"], ["shard", "--new", "1"],
                ["shard", "-o", "tier_gpu/capcity=3"]):
        run = subprocess.run([KVTIER, "bench"] + bad, capture_output=True, text=True,
                             timeout=60)
        if run.returncode != 2:
            fail(f"kvtier bench {' '.join(bad)} exited {run.returncode}, not 2 (usage)")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
