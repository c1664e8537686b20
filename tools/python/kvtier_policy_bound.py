#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""kvtier_policy_bound - how much can a cache policy learn from these features?

Before building a policy around a feature, check whether the feature says which
blocks come back and when, out of sample (issue #5, POLICIES.md "Session 3").

Every offer of a full block (block 0, shared by all, is counted as always hit) gets
a class from what a prefix cache knows when it is offered: the request's lineage
depth (earlier turns its prefix extends), whether the block was offered before,
log2 of the request's full blocks and of its new blocks, log2 of the lineage's
previous inter-turn gap (in requests), log2 of the output tokens (which the policy
interface does not carry). For one class, keeping its blocks t requests gives
(hits, block-time) = (#gaps <= t, sum of min(gap, t)); keeping a fraction of them
scales both, so the best "per class, keep (some of) the blocks for a time" policy
follows the upper concave hull of those points, and at capacity C the best
allocation is a fractional knapsack of hull segments by slope within C x requests.
That family holds per-class TTLs, (class, age) rankings such as LHD, and "keep a
subset for long". Capacity is relaxed to an average and prefix closure is ignored,
so the figures are optimistic for the family.

A plan fitted on the first half of the trace is read on the second (A->B), beside
the plan fitted on the second half itself (B->B, hindsight). A feature worth a
policy raises A->B, not only B->B.

    python3 tools/python/kvtier_policy_bound.py TRACE [--capacities 1000,4000,16000]
                                                [--classes before,depth+before,...]
"""

import argparse
import bisect
import collections
import json
import math

BLOCK_TOKENS = 512


def _log2 (x):
    return int(math.log2(x)) if x >= 1 else -1


#  Features of one offer: depth, before, length, new, gap, output
FEATURES = {
    "depth": lambda o: min(o["depth"], 7),
    "before": lambda o: o["before"],
    "length": lambda o: _log2(o["length"]),
    "new": lambda o: _log2(max(1, o["new"])),
    "gap": lambda o: -1 if o["gap"] is None else _log2(o["gap"]),
    "output": lambda o: _log2(o["output"] + 1),
}
DEFAULT_CLASSES = ["none", "before", "depth", "depth+before", "length+before",
                   "gap+before", "depth+before+gap", "depth+before+output",
                   "depth+before+length+new+gap"]


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def gaps_by_class(trace, lo, hi, classify):
    """Per class: reuse gaps (requests) and offers, over requests [lo, hi)."""
    last, last_class = {}, {}
    gaps, offers = collections.defaultdict(list), collections.Counter()
    last_full, depth_of = {}, {}
    for i in range(lo, hi):
        r = trace[i]
        ids = r["hash_ids"]
        full = len(ids) - (1 if r["input_length"] % BLOCK_TOKENS
                           and r["input_length"] < len(ids) * BLOCK_TOKENS else 0)
        depth, gap = 0, None
        for j in range(len(ids) - 1, 0, -1):
            if ids[j] in last_full:
                parent = last_full[ids[j]]
                depth, gap = depth_of[parent] + 1, i - parent
                break
        depth_of[i] = depth
        new = sum(1 for b in ids[1:full] if b not in last)
        for b in ids[1:full]:
            before = b in last
            if before:
                gaps[last_class[b]].append(i - last[b])
            c = classify({"depth": depth, "before": before, "length": full, "new": new,
                          "gap": gap, "output": r["output_length"]})
            last[b], last_class[b] = i, c
            offers[c] += 1
        if full > 1:
            last_full[ids[full - 1]] = i
    blocks = sum(len(r["hash_ids"]) for r in trace[lo:hi])
    return {"gaps": gaps, "offers": offers, "blocks": blocks, "block0": hi - lo - 1,
            "requests": hi - lo}


def hulls(half):
    """Per class: upper concave hull of (block-time, hits, ttl) over TTLs."""
    out = {}
    for c, n in half["offers"].items():
        g = sorted(half["gaps"][c])
        prefix = [0]
        for x in g:
            prefix.append(prefix[-1] + x)
        hull = [(0.0, 0.0, 0)]
        for t in sorted(set(g)):
            k = bisect.bisect_right(g, t)
            p = (prefix[k] + (n - k) * t, k, t)
            while len(hull) >= 2:
                (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
                if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                    hull.pop()
                else:
                    break
            hull.append(p)
        out[c] = hull
    return out


def plan(hull_of, budget):
    """Best allocation within 'budget' block-requests: class -> [(share, ttl)]."""
    segments = []
    for c, hull in hull_of.items():
        for a, b in zip(hull, hull[1:]):
            if b[0] > a[0]:
                segments.append(((b[1] - a[1]) / (b[0] - a[0]), c, a, b))
    segments.sort(key=lambda s: -s[0])
    chosen = {}
    for _, c, a, b in segments:
        if budget <= 0:
            break
        take = min(1.0, budget / (b[0] - a[0]))
        budget -= take * (b[0] - a[0])
        chosen[c] = [(1 - take, a[2]), (take, b[2])]
    return chosen


def evaluate(chosen, half, capacity):
    """Hit ratio of a plan on a half; a plan that overfills the cache there
    keeps hits in proportion to the block-time it fits (a rough penalty)."""
    hits = used = 0.0
    for c, n in half["offers"].items():
        g = half["gaps"].get(c, [])
        for share, t in chosen.get(c, []):
            if share > 0 and t > 0:
                hits += share * sum(1 for x in g if x <= t)
                used += share * (sum(min(x, t) for x in g) + (n - len(g)) * t)
    budget = capacity * half["requests"]
    if used > budget:
        hits *= budget / used
    return (hits + half["block0"]) / half["blocks"]


def classifier(name):
    if name == "none":
        return lambda o: 0
    parts = name.split("+")
    for p in parts:
        if p not in FEATURES:
            raise SystemExit("unknown feature %r (known: %s)" % (p, ", ".join(FEATURES)))
    return lambda o: tuple(FEATURES[p](o) for p in parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--capacities", default="1000,4000,16000")
    ap.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                    help="comma-separated; each 'none' or features joined by '+' "
                         "(%s)" % ", ".join(FEATURES))
    a = ap.parse_args()
    trace = load(a.trace)
    capacities = [int(x) for x in a.capacities.split(",")]
    half = len(trace) // 2
    print("%s: %d requests; first half fits, second half reads; C = %s"
          % (a.trace, len(trace), " / ".join(map(str, capacities))))
    print("%-32s %-28s %s" % ("classes", "fitted on A, read on B", "hindsight B->B"))
    for name in a.classes.split(","):
        classify = classifier(name)
        first = gaps_by_class(trace, 0, half, classify)
        second = gaps_by_class(trace, half, len(trace), classify)
        hull_a, hull_b = hulls(first), hulls(second)
        out = [evaluate(plan(hull_a, c * first["requests"]), second, c) for c in capacities]
        ins = [evaluate(plan(hull_b, c * second["requests"]), second, c) for c in capacities]
        print("%-32s %-28s %s" % (name, " / ".join("%.4f" % x for x in out),
                                  " / ".join("%.4f" % x for x in ins)))


if __name__ == "__main__":
    main()
