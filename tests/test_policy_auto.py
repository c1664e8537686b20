# SPDX-License-Identifier: Apache-2.0
"""test_policy_auto - prefix-auto follows the better of its two candidates.

Generates two synthetic chat traces with tools/python/kvtier_synth_chat.py
(seeded, so the same every run): "many quick turns", where prefix-density
is the better design at small capacity (it keeps about twice the hits of
prefix-adaptive at 250 blocks), and "unpredictable gaps", where
prefix-adaptive leads a little. `kvtier replay --simulate --json` runs
prefix-adaptive, prefix-density and prefix-auto on each; prefix-auto must
keep at least 95% of the better candidate's hit ratio at every capacity:
on the first trace it must have left prefix-adaptive (which keeps half of
prefix-density's hits at 250 blocks, checked too, so that the test
shows something), on the second it must not lose by following. And
prefix-auto with option fuse=0 (its followed candidate's shadow kept apart
from the start) must give the same hit ratios as the default, where that
candidate on the tier serves as its own shadow while the simulator keeps
the shadows' protocol: the first trace makes it change candidates.
Exit 0 pass, 1 fail, 77 skip.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KVTIER = os.environ.get("KVTIER", "build/kvtier")
SYNTH = os.path.join(HERE, "..", "tools", "python", "kvtier_synth_chat.py")
POLICIES = ["prefix-adaptive", "prefix-density", "prefix-auto"]

#  name, generator options, capacities (blocks of the trace)
TRACES = [
    ("many quick turns", ["--turns", "8", "--think", "5", "--rate", "0.5", "--convs", "1500",
                          "--seed", "3"], [250, 1000]),
    ("unpredictable gaps", ["--jitter", "1.2", "--think-spread", "0.2", "--seed", "2"],
     [250, 4000]),
]


def fail(message):
    print(f"test_policy_auto: FAIL: {message}")
    sys.exit(1)


def hit_ratios(trace, capacities, policies=POLICIES, options=None):
    """{(policy, capacity): hit ratio} from one simulated replay."""
    command = [KVTIER, "replay", trace, "--simulate", "--policy", ",".join(policies),
               "--capacity", ",".join(str(c) for c in capacities), "--json"]
    if options:
        command += ["--options", options]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        fail(f"kvtier replay exited {run.returncode}: {run.stderr[-500:]}")
    report = json.loads(run.stdout)
    return {(r["policy"], r["capacity"]): r["hit_ratio"] for r in report["results"]}


def main():
    if not os.path.exists(KVTIER):
        print(f"skip: no {KVTIER}")
        return 77
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="kvt-policy-auto-") as work:
        for name, options, capacities in TRACES:
            trace = os.path.join(work, name.replace(" ", "_") + ".jsonl")
            with open(trace, "w") as out:
                subprocess.run([sys.executable, SYNTH] + options, stdout=out, check=True)
            ratios[name] = hit_ratios(trace, capacities)
            apart = hit_ratios(trace, capacities, ["prefix-auto"], "fuse=0")
            for capacity in capacities:
                adaptive = ratios[name][("prefix-adaptive", capacity)]
                density = ratios[name][("prefix-density", capacity)]
                auto = ratios[name][("prefix-auto", capacity)]
                best = max(adaptive, density)
                print(f"{name}, {capacity} blocks: prefix-adaptive {adaptive:.4f}, "
                      f"prefix-density {density:.4f}, prefix-auto {auto:.4f}")
                if not best > 0:
                    fail(f"{name}, {capacity} blocks: no hits for either candidate")
                if apart[("prefix-auto", capacity)] != auto:
                    fail(f"{name}, {capacity} blocks: prefix-auto fuse=0 "
                         f"{apart[('prefix-auto', capacity)]:.6f} differs from fused {auto:.6f}")
                if auto < 0.95 * best:
                    fail(f"{name}, {capacity} blocks: prefix-auto {auto:.4f} under 95% of the "
                         f"better candidate's {best:.4f}")
    #  The first trace is one where following prefix-adaptive would not do:
    #  the check above is not one that candidate passes alone
    quick = ratios["many quick turns"]
    if quick[("prefix-adaptive", 250)] >= 0.75 * quick[("prefix-density", 250)]:
        fail("many quick turns: prefix-adaptive is not far behind there; the test shows nothing")
    print("test_policy_auto: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
