#!/usr/bin/python3
"""A Redis of state formats 2 and 3 is taken over without a rebuild
(docs/state-format.md, "Upgrading from an older format").

The orders of the first half of four months are drained by tierd, which
is then stopped.  The customer states of partitions 0 to 3 are rewritten
in format 2 (harness.encode_state_v2) and their meta says format 2; those
of partitions 4 to 7 in format 3 (harness.state_v4_as_v3) with meta
format 3: the Redis the releases before leave behind.  Then:
  - tierctl dump reads it, and its aggregates equal the recomputation;
  - a new tierd drains the second half (its months close, so reviews run):
    the aggregates of all the orders equal the recomputation, nothing was
    counted twice or lost, tier changes are gapless per customer (their
    sequences continue from the old states);
  - every partition's meta says format 4, and every customer the batches
    and reviews touched is stored as format 4 (those with a tier: the
    review rewrites all of them);
  - a value of format 5 is refused by name, not misread; a partition
    whose meta says format 5 is refused by tierd, naming
    `tierctl rebuild --partition N`, and left untouched while the others
    drain.
"""
import os
import subprocess

import harness as h

N, CUSTOMERS = 20_000, 1_500

svc = h.Services("upgrade")
recs = h.generate(N, CUSTOMERS, seed=20261126, bad_per_kind=2)
half = len(recs) // 2
first, second = recs[:half], recs[half:]

h.produce(svc.bootstrap, "orders", first)
ends = h.end_offsets(svc.bootstrap, "orders")
d = h.Daemon(svc, "a").start()
h.wait_drained(svc, ends, daemons=[d])
assert d.term() == 0, "SIGTERM must stop tierd with status 0"

# --- the Redis format-2 and format-3 tierds leave ---------------------------
n_old = {2: 0, 3: 0}
for p in range(8):
    key, fmt = "tierd:{orders.%d}:c" % p, 2 if p < 4 else 3
    for cust, v in list(svc.redis.hscan_iter(key, count=1000)):
        s = h.decode_state(v)
        assert s["format"] == 4, (p, cust, s["format"])
        old = h.encode_state_v2(s) if fmt == 2 else h.state_v4_as_v3(v)
        assert h.decode_state(old) == dict(s, format=fmt), "format %d must say the same" % fmt
        svc.redis.hset(key, cust, old)
        n_old[fmt] += 1
    svc.redis.hset("tierd:{orders.%d}:meta" % p, "format", str(fmt))
assert n_old[2] > 0 and n_old[3] > 0, n_old
h.log("customer states rewritten in formats 2 and 3 (%s), metas to match" % n_old)

want_first, _ = h.model(first)
h.compare_state(h.read_state(svc.redis), want_first)
h.log("tierctl dump reads formats 2 and 3: %d customer-months as recomputed" % len(want_first))

# --- a tierd that writes format 4 takes over --------------------------------
h.produce(svc.bootstrap, "orders", second)
ends = h.end_offsets(svc.bootstrap, "orders")
d = h.Daemon(svc, "b").start()
h.wait_drained(svc, ends, daemons=[d])
want, _ = h.model(recs)
n_events, _ = h.check_tier_events(svc, want, daemons=[d])
assert d.term() == 0, "SIGTERM must stop tierd with status 0"
h.compare_state(h.read_state(svc.redis), want)
h.log("aggregates of all %d records equal the recomputation; %d tier changes, gapless"
      % (len(recs), n_events))
assert "holds state format" not in d.log_text(), \
    "no partition may be refused:\n%s" % d.log_text()[-3000:]

formats, left = {2: 0, 3: 0, 4: 0}, []
for p in range(8):
    m = svc.redis.hgetall("tierd:{orders.%d}:meta" % p)
    assert m[b"format"] == b"4", "partition %d meta: %s" % (p, m)
    for cust, v in svc.redis.hscan_iter("tierd:{orders.%d}:c" % p, count=1000):
        s = h.decode_state(v)
        formats[s["format"]] += 1
        if s["format"] < 4 and s["tier"] > 0:
            left.append((p, cust, s["format"], s["tier"]))
assert not left, "customers with a tier left in an old format after the reviews: %s" % left[:5]
assert formats[4] >= sum(n_old.values()), formats
h.log("every meta says format 4; states by format: %s" % formats)

# --- a format this tierd does not read is refused by name -----------------
p = 0
cust, v = next(iter(svc.redis.hscan_iter("tierd:{orders.%d}:c" % p, count=10)))
s = h.decode_state(v)
bad = bytearray(h.encode_state_v2(s))
bad[0] = 5
bad[-4:] = h.crc32c(bad[:-4]).to_bytes(4, "little")
svc.redis.hset("tierd:{orders.%d}:c" % p, cust, bytes(bad))
c = h.Daemon(svc, "c")  # its configuration only: never started
r = subprocess.run([h.tierctl_binary(), "-c", c.cfg, "show", cust.decode()],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                   env=dict({k: v for k, v in os.environ.items() if not k.startswith("TIERD_")},
                            **{k: v for k, v in c.env.items() if v is not None}))
text = r.stdout.decode(errors="replace")
assert r.returncode != 0 and "format 5" in text, (r.returncode, text)
h.log("a value of format 5 is refused by name: %s" % text.strip().splitlines()[-1])

# --- a partition whose meta names a format tierd does not read -------------
# tierd refuses that partition, naming the fix, and never writes to it;
# the others go on (partition 0 holds the format-5 value: left out).
P4 = 1
svc.redis.hset("tierd:{orders.%d}:meta" % P4, "format", "5")
before = svc.redis.hgetall("tierd:{orders.%d}:meta" % P4)
more = h.generate(800, 300, seed=20261127, bad_per_kind=0, dup_ratio=0)
h.produce(svc.bootstrap, "orders", more)
ends = h.end_offsets(svc.bootstrap, "orders")
assert any(r.partition == P4 for r in more), "the refused partition must get orders"
d = h.Daemon(svc, "d").start()
h.wait_drained(svc, {p: e for p, e in ends.items() if p not in (0, P4)}, daemons=[d])
fix = "tierctl rebuild --partition %d" % P4
h.wait_for(lambda: "holds state format 5" in d.log_text() and fix in d.log_text(),
           "tierd to refuse partition %d by name" % P4, timeout=60, daemons=[d])
after = svc.redis.hgetall("tierd:{orders.%d}:meta" % P4)
assert d.term() == 0, "SIGTERM must stop tierd with status 0"
for f in (b"offset", b"month", b"reviewed", b"format"):
    assert before.get(f) == after.get(f), (f, before.get(f), after.get(f))
h.log("meta format 5: partition %d refused with '%s', untouched; the others drained"
      % (P4, fix))
h.log("PASS")
