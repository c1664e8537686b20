# SPDX-License-Identifier: Apache-2.0
"""test_remote_policy - an eviction policy in another process, live.

Starts tools/python/kvtier_policy_example.py ("evict deepest first") on a
private ipc endpoint and `kvtier serve -o migration/policy=remote:...` with
a tiny GPU tier, runs prompts A then B (8 blocks each) and DEMOTEs 8 GPU
blocks: the policy process moves the tails of both prompts to host, where
the built-in lru (run first, same steps, on a server of its own) moves all
of A. Then it kills the policy process and checks that the server keeps
serving (GENERATE, DEMOTE, HELLO) with prefix_index.policy_fallbacks > 0
in STATS; then starts the policy again and checks the server uses it
again; then one that answers later than the deadline, and checks that a
DEMOTE waits only that long (policy_remote_timeouts). Exit 0 pass, 1
fail, 77 skip.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_TOOLS = os.path.join(HERE, "..", "tools", "python")
sys.path.insert(0, PYTHON_TOOLS)
try:
    import msgpack  # noqa: F401 - the example needs it
    import zmq  # noqa: F401
    import kvtier_client as kc
except ImportError as exc:                      # pragma: no cover
    print(f"skip: {exc}")
    sys.exit(77)

BLOCKS = 8                                      # Full blocks per prompt


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def start_policy(endpoint, log, delay_ms=0):
    """Start the example policy; return once it has bound its endpoint."""
    proc = subprocess.Popen([sys.executable, "-u",
                             os.path.join(PYTHON_TOOLS, "kvtier_policy_example.py"),
                             endpoint, "--policy", "deepest", "--verbose",
                             "--delay-ms", str(delay_ms)],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    check("kvtier_policy_example: deepest on" in line, f"policy did not start: '{line}'")
    return proc


def start_server(kvtier, policy, log, extra=()):
    tcp = f"tcp://127.0.0.1:{free_port()}"
    args = [kvtier, "serve", "-o", f"scheduler/endpoint={tcp}",
            "-o", f"migration/policy={policy}",
            "-o", "tier_gpu/capacity_blocks=32",
            "-o", "migration/high_watermark=100"]
    for option in extra:
        args += ["-o", option]
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    client = kc.Client(tcp, timeout_ms=1000)
    deadline = time.monotonic() + 30
    while True:
        check(server.poll() is None, f"server exited early with {server.returncode}")
        try:
            hello = client.hello("test_remote_policy")
            break
        except kc.KvtierError as exc:
            check(exc.name == "ETIMEDOUT", f"HELLO: {exc}")
            check(time.monotonic() < deadline, "no HELLO_OK within 30 s")
    client.timeout_ms = 30000
    return server, client, hello


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prompt(hello, seed):
    return kc.random_tokens(BLOCKS * hello["block_tokens"] + 3, hello["vocab"], seed=seed)


def placement(client, hello, seed):
    """Tier of each of the prompt's blocks, '-' where not cached."""
    found = client.lookup(prompt(hello, seed))
    tiers = found["tiers"][:found["matched_blocks"]]
    return "".join(str(t) for t in tiers).ljust(BLOCKS, "-")


def two_prompts_then_demote(client, hello):
    for seed in (1, 2):
        out = client.generate(prompt(hello, seed), 1)
        check(len(out["tokens"]) == 1, f"generate: {out}")
    check(placement(client, hello, 1) == "0" * BLOCKS, "A on the GPU")
    check(placement(client, hello, 2) == "0" * BLOCKS, "B on the GPU")
    moved = client.demote(kc.TIER_GPU, kc.TIER_HOST, BLOCKS)
    check(moved == BLOCKS, f"DEMOTE moved {moved}, want {BLOCKS}")
    return placement(client, hello, 1), placement(client, hello, 2)


def main():
    kvtier = os.environ.get("KVTIER")
    if not kvtier or not os.path.exists(kvtier):
        print("skip: KVTIER not set (run through ctest)")
        return 77
    endpoint = f"ipc:///tmp/kvt-policy-{os.getpid()}.ipc"
    log = tempfile.NamedTemporaryFile(prefix="kvt-remote-policy-", suffix=".log", delete=False)
    server = policy = None
    status = 1
    try:
        # Baseline: the built-in lru moves the older prompt whole
        server, client, hello = start_server(kvtier, "lru", log)
        a, b = two_prompts_then_demote(client, hello)
        print(f"lru:     A {a}  B {b}")
        check((a, b) == ("1" * BLOCKS, "0" * BLOCKS), f"lru placement A {a} B {b}")
        client.close()
        stop(server)

        # The policy process: the deepest blocks of both prompts go
        policy = start_policy(endpoint, log)
        server, client, hello = start_server(
            kvtier, f"remote:{endpoint}", log,
            ("migration/policy_timeout_ms=1000", "migration/policy_retry_ms=200"))
        a, b = two_prompts_then_demote(client, hello)
        print(f"remote:  A {a}  B {b}")
        half = "0" * (BLOCKS // 2) + "1" * (BLOCKS // 2)
        check((a, b) == (half, half), f"remote 'deepest' placement A {a} B {b}")
        stats = client.stats()
        check(stats.get("prefix_index.policy_remote_decisions", 0) >= 1,
              f"remote decisions counted: {stats}")
        check(stats.get("prefix_index.policy_fallbacks", 0) == 0,
              f"no fallback while the policy answers: {stats}")

        # Kill it: the server keeps serving and falls back, counted
        policy.kill()
        policy.wait()
        policy.stdout.close()
        policy = None
        for seed in (3, 4):
            out = client.generate(prompt(hello, seed), 1)
            check(len(out["tokens"]) == 1, f"generate without the policy: {out}")
            moved = client.demote(kc.TIER_GPU, kc.TIER_HOST, 4)
            check(moved == 4, f"DEMOTE without the policy moved {moved}")
        check(client.hello("after")["protocol"] == kc.PROTOCOL_VERSION, "HELLO after")
        stats = client.stats()
        fallbacks = stats.get("prefix_index.policy_fallbacks", 0)
        print(f"after kill: policy_fallbacks {fallbacks}, "
              f"unreachable {stats.get('prefix_index.policy_remote_unreachable', 0)}, "
              f"timeouts {stats.get('prefix_index.policy_remote_timeouts', 0)}")
        check(fallbacks > 0, f"policy_fallbacks > 0 after the policy died: {stats}")

        # Start it again: after the retry pause the server asks it again
        decisions = stats.get("prefix_index.policy_remote_decisions", 0)
        policy = start_policy(endpoint, log)
        deadline = time.monotonic() + 20
        while True:
            time.sleep(0.3)
            out = client.generate(prompt(hello, 10 + int(time.monotonic() * 10) % 1000), 1)
            client.demote(kc.TIER_GPU, kc.TIER_HOST, 2)
            now = client.stats().get("prefix_index.policy_remote_decisions", 0)
            if now > decisions:
                break
            check(time.monotonic() < deadline, "the restarted policy is never asked again")
        print(f"restarted: policy_remote_decisions {decisions} -> {now}")

        # A policy slower than the deadline (1000 ms here): each decision
        # costs at most the deadline, then the LRU order decides, counted
        policy.kill()
        policy.wait()
        policy.stdout.close()
        policy = start_policy(endpoint, log, delay_ms=3000)
        deadline = time.monotonic() + 20
        while True:
            time.sleep(0.3)
            client.generate(prompt(hello, 2000 + int(time.monotonic() * 10) % 1000), 1)
            start = time.monotonic()
            moved = client.demote(kc.TIER_GPU, kc.TIER_HOST, 2)
            took = time.monotonic() - start
            check(moved == 2, f"DEMOTE past a slow policy moved {moved}")
            check(took < 2.5, f"DEMOTE waited {took:.2f} s on a slow policy")
            timeouts = client.stats().get("prefix_index.policy_remote_timeouts", 0)
            if timeouts > 0:
                break
            check(time.monotonic() < deadline, "the slow policy never timed out")
        print(f"slow policy: DEMOTE took {took:.2f} s, policy_remote_timeouts {timeouts}")
        client.close()
        stop(server)
        check(server.returncode == 0, f"server exit status {server.returncode}")
        server = None
        status = 0
    except AssertionError as exc:
        print(f"FAIL: {exc}")
    finally:
        stop(server)
        if policy is not None:
            policy.kill()
            policy.wait()
            policy.stdout.close()
        log.close()
        if status != 0:
            with open(log.name, errors="replace") as f:
                print("---- server and policy output ----")
                print(f.read()[-4000:])
        os.unlink(log.name)
        path = endpoint[len("ipc://"):]
        if os.path.exists(path):
            os.unlink(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
