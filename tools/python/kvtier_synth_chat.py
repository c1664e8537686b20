#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""kvtier_synth_chat - a synthetic multi-turn chat trace in the Mooncake format.

Writes one JSON line per request, {"timestamp" (ms), "input_length",
"output_length", "hash_ids"}, as ../shared/traces/mooncake_conversation.jsonl, so
`kvtier replay FILE --simulate` reads it. Use it to check that a cache policy is
not fitted to one trace (issue #5): vary the turn count and the gap statistics.

Model: conversations arrive as a Poisson process (--rate per second). Each picks
one of --prompts system prompts of --prompt-blocks whole blocks (shared by every
conversation using it), a geometric number of turns (mean --turns) and its own
think time: --think seconds x lognormal(0, --think-spread). Turn k appends a user
message (lognormal around --user tokens, 4x on the first turn) and the model's
output (lognormal around --out tokens); the next turn comes output/50 s + the
think time x lognormal(0, --jitter) later. A small --jitter makes a
conversation's next gap predictable from its previous one; a large one does not.
Block ids are chained (an id names a block with everything before it) and dense
in order of first use; the partial last block of a prompt gets its own id.

    python3 tools/python/kvtier_synth_chat.py --seed 1 > /tmp/chat.jsonl
    kvtier replay /tmp/chat.jsonl --simulate --policy all --capacity 250,1000,4000
"""

import argparse
import json
import math
import random
import sys

BLOCK_TOKENS = 512


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--convs", type=int, default=4000, help="conversations (4000)")
    ap.add_argument("--rate", type=float, default=2.0, help="new conversations per s (2)")
    ap.add_argument("--turns", type=float, default=3.0, help="mean turns, geometric (3)")
    ap.add_argument("--think", type=float, default=60.0, help="median think time, s (60)")
    ap.add_argument("--think-spread", type=float, default=1.0,
                    help="sigma of log think time across conversations (1)")
    ap.add_argument("--jitter", type=float, default=0.3,
                    help="sigma of log gap within a conversation (0.3)")
    ap.add_argument("--prompts", type=int, default=4, help="system prompts (4)")
    ap.add_argument("--prompt-blocks", type=int, default=2, help="blocks per prompt (2)")
    ap.add_argument("--user", type=float, default=800, help="median user tokens (800)")
    ap.add_argument("--out", type=float, default=300, help="median output tokens (300)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (1)")
    a = ap.parse_args()
    if a.convs < 1 or a.rate <= 0 or a.turns < 1 or a.think <= 0 or a.prompts < 1 \
            or a.prompt_blocks < 0:
        ap.error("counts and rates must be positive, --turns >= 1")
    rng = random.Random(a.seed)
    requests = []                   # (time s, conversation, prompt, input, output)
    start = 0.0
    for conv in range(a.convs):
        start += rng.expovariate(a.rate)
        prompt = rng.randrange(a.prompts)
        turns = 1
        while rng.random() > 1.0 / a.turns:
            turns += 1
        think = a.think * math.exp(rng.gauss(0, a.think_spread))
        history = a.prompt_blocks * BLOCK_TOKENS
        at = start
        for turn in range(turns):
            user = int(a.user * (4 if turn == 0 else 1) * math.exp(rng.gauss(0, 0.8))) + 1
            output = int(a.out * math.exp(rng.gauss(0, 0.7))) + 1
            requests.append((at, conv, prompt, history + user, output))
            history += user + output
            at += output / 50.0 + think * math.exp(rng.gauss(0, a.jitter))
    requests.sort()
    ids = {}
    out = sys.stdout
    for at, conv, prompt, tokens, output in requests:
        hash_ids = []
        parent = None
        for j in range((tokens + BLOCK_TOKENS - 1) // BLOCK_TOKENS):
            if j < a.prompt_blocks:
                key = (parent, "prompt", prompt, j)
            elif (j + 1) * BLOCK_TOKENS <= tokens:
                key = (parent, "conv", conv, j)
            else:
                key = (parent, "conv", conv, j, tokens)     # partial last block
            parent = ids.setdefault(key, len(ids))
            hash_ids.append(parent)
        out.write(json.dumps({"timestamp": int(at * 1000), "input_length": tokens,
                              "output_length": output, "hash_ids": hash_ids}) + "\n")


if __name__ == "__main__":
    main()
