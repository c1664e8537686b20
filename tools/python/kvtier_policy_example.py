#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""kvtier_policy_example - an eviction policy for kvtier in its own process.

Run it, then point a server at it:

    python3 tools/python/kvtier_policy_example.py ipc:///tmp/kvt-policy.ipc &
    build/kvtier serve -o migration/policy=remote:ipc:///tmp/kvt-policy.ipc

kvtier's prefix index connects a DEALER to this endpoint (we bind a
ROUTER) and speaks messages/PROTOCOL.md ("Outside-process policies"):

  POLICY_EVENTS (60) {clock, kinds, tiers, hashes, parents, depths}
      one-way: what happened to which block in which tier since the last
      message (kinds: 1 access, 2 insert, 3 evict). No reply.
  POLICY_VICTIMS (61) {tier, count, candidates}
      answer POLICY_VICTIMS_OK (62) {hashes} with up to `count` of the
      `candidates` (the tier's unpinned blocks, least recently used
      first), within migration/policy_timeout_ms (default 5 ms). Late,
      garbage or silent answers make the index use its LRU order.

Policies (--policy):
  deepest  evict the deepest blocks first (the tails of long sequences),
           least recently used first among equals: keeps every
           conversation's shared head cached. The default.
  mru      evict the most recently used candidates first.
  lru      evict the least recently used first (what the index does alone).

Events may be lost (the index drops them while this process is away), so
the policy trusts the candidates list and treats an unknown block as
depth 0. Needs Debian's python3-zmq and python3-msgpack. SIGTERM or
SIGINT stops it; --verbose prints each decision; --delay-ms N answers
late, to watch the server give up on it.
"""

import argparse
import signal
import sys
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
ERROR = 1
POLICY_EVENTS, POLICY_VICTIMS, POLICY_VICTIMS_OK = 60, 61, 62
ACCESS, INSERT, EVICT = 1, 2, 3
ENOTSUP, EBADMSG = -95, -74


class Policy:
    """What the policy knows: per tier, each block's depth and last use."""

    def __init__(self, name):
        self.name = name
        self.depth = {}             # (tier, hash) -> depth
        self.events = 0
        self.decisions = 0

    def on_events(self, clock, kinds, tiers, hashes, parents, depths):
        for kind, tier, block, depth in zip(kinds, tiers, hashes, depths):
            self.events += 1
            if kind in (ACCESS, INSERT):
                self.depth[(tier, block)] = depth
            elif kind == EVICT:
                self.depth.pop((tier, block), None)

    def victims(self, tier, count, candidates):
        """Up to `count` of `candidates` (least recently used first)."""
        self.decisions += 1
        if self.name == "lru":
            return candidates[:count]
        if self.name == "mru":
            return candidates[::-1][:count]
        # deepest first; among equals, the least recently used
        order = sorted(range(len(candidates)),
                       key=lambda i: (-self.depth.get((tier, candidates[i]), 0), i))
        return [candidates[i] for i in order[:count]]


def serve(endpoint, policy, verbose=False, ready=None, delay_ms=0):
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    if ready:
        print(ready, flush=True)
    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running[0]:
        if not sock.poll(200):
            continue
        frames = sock.recv_multipart()
        if len(frames) < 2:
            continue
        identity, frame = frames[0], frames[-1]
        try:
            message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            version, msg_id, request_id, fields = (message[0], message[1], message[2],
                                                   message[3:])
        except Exception:                        # noqa: BLE001 - garbage is dropped
            continue
        if version != PROTOCOL_VERSION:
            continue
        if msg_id == POLICY_EVENTS and len(fields) >= 6:
            policy.on_events(*fields[:6])
        elif msg_id == POLICY_VICTIMS and len(fields) >= 3:
            tier, count, candidates = fields[:3]
            chosen = policy.victims(tier, count, candidates)
            if delay_ms:
                time.sleep(delay_ms / 1000)     # A slow policy, for tests
            if verbose:
                print(f"victims tier {tier} count {count} of {len(candidates)}: "
                      f"{[hex(h) for h in chosen]}", flush=True)
            sock.send_multipart([identity, msgpack.packb(
                [PROTOCOL_VERSION, POLICY_VICTIMS_OK, request_id, chosen])])
        elif msg_id != POLICY_EVENTS:
            sock.send_multipart([identity, msgpack.packb(
                [PROTOCOL_VERSION, ERROR, request_id, ENOTSUP, "ENOTSUP",
                 f"policy example: message {msg_id} not served"])])
    print(f"kvtier_policy_example: {policy.events} events, {policy.decisions} decisions",
          flush=True)
    sock.close(0)
    context.term()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("endpoint", nargs="?", default="ipc:///tmp/kvt-policy.ipc",
                        help="ZeroMQ endpoint to bind (default %(default)s)")
    parser.add_argument("--policy", choices=("deepest", "mru", "lru"), default="deepest")
    parser.add_argument("--verbose", action="store_true", help="print every decision")
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="answer victims this late (to test the server's deadline)")
    args = parser.parse_args(argv)
    serve(args.endpoint, Policy(args.policy), args.verbose,
          ready=f"kvtier_policy_example: {args.policy} on {args.endpoint}",
          delay_ms=args.delay_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
