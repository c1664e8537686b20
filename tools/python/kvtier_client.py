# SPDX-License-Identifier: Apache-2.0
"""kvtier_client - a Python client of the kvtier front door.

Speaks messages/PROTOCOL.md over one ZeroMQ DEALER socket with msgpack
(Debian's python3-zmq and python3-msgpack). One request in flight per
client; each request carries a fresh request id and any reply with another
id (late or duplicate) is discarded. After a timeout the socket is
replaced, so a late reply can never be taken for a later answer.

    from kvtier_client import Client, KvtierError
    with Client("tcp://127.0.0.1:5557") as c:
        info = c.hello()
        out = c.generate(c.random_tokens(64, seed=1), max_new_tokens=4)

Errors: an ERROR reply raises KvtierError(code, name, detail); a timeout
raises KvtierError(-110, "ETIMEDOUT", ...); a reply of the wrong type
raises KvtierError(-71, "EPROTO", ...).
"""

import errno
import os
import random
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1

# Message ids, as in KVT_MSG_CATALOGUE (messages/kvt_msg.h).
ERROR = 1
HELLO, HELLO_OK = 2, 3
LOOKUP, LOOKUP_OK = 4, 5
STORE, STORE_OK = 6, 7
LOAD, LOAD_OK = 8, 9
GENERATE, GENERATE_OK = 10, 11
STATS, STATS_OK = 12, 13
DEMOTE, DEMOTE_OK = 14, 15
STORE_TAIL, STORE_TAIL_OK = 16, 17

# Field names of each reply, in wire order.
REPLY_FIELDS = {
    ERROR: ("code", "name", "detail"),
    HELLO_OK: ("server", "protocol", "block_tokens", "block_bytes", "layers",
               "kv_heads", "head_dim", "vocab", "dtype"),
    LOOKUP_OK: ("matched_blocks", "tiers", "hashes"),
    STORE_OK: ("stored_blocks", "present_blocks"),
    LOAD_OK: ("blocks", "kv", "tiers"),
    GENERATE_OK: ("tokens", "ttft_us", "total_us", "from_gpu", "from_host",
                  "from_nvme", "computed"),
    STATS_OK: ("counters",),
    DEMOTE_OK: ("moved",),
    STORE_TAIL_OK: ("stored_blocks", "present_blocks"),
}

TIER_GPU, TIER_HOST, TIER_NVME = 0, 1, 2

_MASK = (1 << 64) - 1


class KvtierError(Exception):
    """An ERROR reply (or a local timeout / protocol failure)."""

    def __init__(self, code, name, detail):
        super().__init__(f"{name} ({code}): {detail}")
        self.code = code
        self.name = name
        self.detail = detail


def _splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return state, z ^ (z >> 31)


def random_tokens(count, vocab, seed=1):
    """Deterministic token ids < vocab: the same as kvt_client_random_tokens."""
    state, out = seed & _MASK, []
    for _ in range(count):
        state, value = _splitmix(state)
        out.append(value % vocab)
    return out


def fill_bytes(size, seed=1):
    """Deterministic bytes: the same as kvt_client_fill_bytes."""
    state, out = seed & _MASK, bytearray()
    while len(out) < size:
        state, value = _splitmix(state)
        out += value.to_bytes(8, "little")
    return bytes(out[:size])


def encode(msg_id, request_id, *fields, ext=None, version=PROTOCOL_VERSION):
    """One frame: [version, id, request_id, fields..., {ext}?]."""
    body = [version, msg_id, request_id, *fields]
    if ext is not None:
        body.append(ext)
    return msgpack.packb(body, use_bin_type=True)


def decode(frame):
    """Return (version, id, request_id, fields) of a frame, or raise ValueError."""
    body = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    if not isinstance(body, list) or len(body) < 3:
        raise ValueError("not a kvtier frame")
    return body[0], body[1], body[2], body[3:]


class Client:
    """One DEALER connection to a kvtier server; not thread-safe."""

    def __init__(self, endpoint="tcp://127.0.0.1:5557", timeout_ms=30000, context=None):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.context = context or zmq.Context.instance()
        self.socket = None
        self.stale_count = 0
        self.reconnect_count = 0
        self.next_request_id = random.getrandbits(32) + 1
        self._connect()

    def _connect(self):
        if self.socket is not None:
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(self.endpoint)

    def close(self):
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------------
    def request_raw(self, frame, request_id=None, timeout_ms=None):
        """Send one raw frame; return the first reply (version, id, rid, fields)
        whose request id matches (any reply if request_id is None)."""
        self.socket.send(frame)
        return self._wait(request_id, timeout_ms)

    def _wait(self, request_id, timeout_ms=None):
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(wait):
                self.reconnect_count += 1
                self._connect()
                raise KvtierError(-errno.ETIMEDOUT, "ETIMEDOUT", "no reply in time")
            frames = self.socket.recv_multipart()
            try:
                reply = decode(frames[-1])
            except Exception:
                self.stale_count += 1
                continue
            if request_id is not None and reply[2] != request_id:
                self.stale_count += 1
                continue
            return reply

    def request(self, msg_id, *fields):
        """Send message msg_id with fields; return the reply fields as a dict.
        Raises KvtierError for ERROR replies, timeouts and wrong reply types."""
        request_id = self.next_request_id
        self.next_request_id += 1
        _, reply_id, _, values = self.request_raw(encode(msg_id, request_id, *fields),
                                                  request_id)
        if reply_id == ERROR:
            code, name, detail = (list(values) + [None, "EUNKNOWN", ""])[:3]
            raise KvtierError(code, name, detail)
        if reply_id != msg_id + 1 or reply_id not in REPLY_FIELDS:
            raise KvtierError(-errno.EPROTO, "EPROTO",
                              f"message {msg_id} answered with {reply_id}")
        names = REPLY_FIELDS[reply_id]
        return dict(zip(names, values[:len(names)]))

    # ----------------------------------------------------------------------
    def hello(self, client="kvtier_client.py"):
        return self.request(HELLO, client)

    def lookup(self, tokens, tenant=""):
        return self.request(LOOKUP, tenant, list(tokens))

    def store(self, tokens, kv, tenant=""):
        return self.request(STORE, tenant, list(tokens), bytes(kv))

    def store_tail(self, tokens, from_block, kv, tenant=""):
        """KV of the full blocks from from_block on; the blocks before must be cached."""
        return self.request(STORE_TAIL, tenant, list(tokens), from_block, bytes(kv))

    def load(self, tokens, tenant=""):
        return self.request(LOAD, tenant, list(tokens))

    def generate(self, tokens, max_new_tokens=8, tenant=""):
        return self.request(GENERATE, tenant, list(tokens), max_new_tokens)

    def stats(self):
        return self.request(STATS)["counters"]

    def demote(self, from_tier, to_tier, max_blocks):
        return self.request(DEMOTE, from_tier, to_tier, max_blocks)["moved"]


if __name__ == "__main__":
    import json
    import sys
    endpoint = os.environ.get("KVTIER_ENDPOINT", "tcp://127.0.0.1:5557")
    if len(sys.argv) > 1:
        endpoint = sys.argv[1]
    with Client(endpoint, timeout_ms=5000) as c:
        print(json.dumps(c.hello()))
        print(json.dumps(c.stats()))
