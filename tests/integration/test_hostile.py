#!/usr/bin/python3
"""Hostile records among 100 000 good orders (docs/behaviour.md, "Bad input").

100 000 good orders (re-sends, returns, both framings, Asia/Shanghai months)
over 8 partitions, and among them records built to hurt:

  placed_at INT64_MIN, -2^62, year 1, 1970-01-01 and 1 ms before 2000-01-01
      BAD_PLACED_AT (before min_placed_at_s, default 946684800)
  a year-1 order as one partition's very first record, normal orders after
      BAD_PLACED_AT, and the partition's month is not dragged to year 1
  placed_at INT64_MAX                                   FUTURE
  3 MB of garbage (orders accepts 8 MB, the dead-letter topic keeps its
  default 1 MB)                                         NOT_AVRO
  an order whose order_id is 2 MB                       BAD_ID
  invalid UTF-8 (\\xff, overlong \\xc0\\x80, surrogate \\xed\\xa0\\x80, truncated
  \\xe2\\x82) in customer_id, order_id and sku             BAD_UTF8

Expected: every good order applied exactly (Redis equals harness.model());
every bad record dead-lettered exactly once with its reason, the ones too
big for the dead-letter topic as a stand-in (publish.c): the usual headers
plus tierd.standin (why), tierd.original.size and tierd.original.fnv1a64 (of
the original value), the value and key cut to a prefix that fits; every
other dead letter carries the original key and bytes; no partition stands
still for more than STALL_S seconds, with work waiting, while the other
partitions apply 30 % of the stream or half of what they had left (a
machine too busy for anything to move is no stall); Redis holds no month
key outside its partition's window or before 2000; SIGTERM exits 0 within
the shutdown deadline.  The binary is $TIERD_BIN, so the ASan build runs it
too (ctest --test-dir build-asan -R hostile); any sanitizer report fails.

usage: test_hostile.py [N]
TIERD_HOSTILE_SKIP=REGEX leaves out the hostile records whose description
matches (to find which one hurts); the test then says so and fails.
"""
import random
import re
import signal
import sys
import time
import zlib

import os

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
STALL_S = 5.0                   # a partition may not stand still longer, with work waiting,
STALL_RECORDS = N * 3 // 10     # ... while the others together apply this many records
SHUTDOWN_S = 20.0               # shutdown_timeout_ms default
DEAD_LETTER_MAX = 1048588       # the dead-letter topic's max.message.bytes (Kafka's default)
ORDERS_MAX = 8 * 1024 * 1024    # orders' max.message.bytes here
MIN_PLACED_MS = 946684800 * 1000
YEAR1_MS = -62135596800000

svc = h.Services("hostile", topic_config={"orders": {"max.message.bytes": ORDERS_MAX}})
rnd = random.Random(20261201)
recs = h.generate(N, 2000, seed=77077, bad_per_kind=0)  # good orders (and the whale pair)
good_customers = sorted({r.order["customer_id"] for r in recs if r.order is not None})
by_part = {}
for c in good_customers:
    by_part.setdefault(h.partition_of(c), []).append(c)
assert len(by_part) == 8
now = h.now_ms()
t_ok = now - 3600_000  # a placed_at every rule accepts


def lines_ok():
    return [(b"SKU-H%02d" % rnd.randrange(20), rnd.randint(1, 9), rnd.randint(0, 5000))]


hostile = []  # (Rec, what it is)
placed = []   # (position among the good records, Rec)


SKIP = os.environ.get("TIERD_HOSTILE_SKIP")
skipped = []


def add(what, reason, value, customer=None, key=None, partition=None, pos=None):
    """A hostile record for `customer` (bytes), keyed by it, on its
    partition, placed at a random position among the good records (or at
    `pos`).  value: bytes, or value(customer, t) where t is the placed_at of
    the good order at that position: a record refused for another reason
    carries a time that fits there, so that if tierd wrongly applies it,
    only that record is wrong, not the partition's month after it."""
    if SKIP and re.search(SKIP, what):
        skipped.append(what)
        return None
    if customer is None:
        p = len(hostile) % 8 if partition is None else partition
        customer = rnd.choice(by_part[p]).encode()
    key = customer if key is None else key
    part = zlib.crc32(customer) % 8 if partition is None else partition
    pos = rnd.randint(0, len(recs) - 1) if pos is None else pos
    t = int(recs[pos].order["placed_at"].timestamp() * 1000)
    rec = h.Rec(part, key, value(customer, t) if callable(value) else value, None, reason)
    hostile.append((rec, what))
    placed.append((pos, rec))
    return rec


def oid():
    return b"H%07d" % len(hostile)


for what, ms in (("placed_at INT64_MIN", -2**63), ("placed_at -2^62", -2**62),
                 ("placed_at year 1", YEAR1_MS), ("placed_at 1970-01-01", 0),
                 ("placed_at 1 ms before 2000-01-01", MIN_PLACED_MS - 1)):
    for copy in range(2):
        add(what, "BAD_PLACED_AT", lambda c, t, ms=ms: h.encode_raw(oid(), c, ms, lines_ok()))
for copy in range(2):
    add("placed_at INT64_MAX", "FUTURE",
        lambda c, t: h.encode_raw(oid(), c, h.INT64_MAX, lines_ok()))

garbage = bytes(rnd.randrange(256) for _ in range(1024)) * (3 * 1024)  # 3 MB
garbage = b"\x7f" + garbage[1:]  # not the Confluent magic byte: plain "Avro" from byte 0
add("3 MB of garbage", "NOT_AVRO", garbage)
add("a 2 MB order_id", "BAD_ID",
    lambda c, t: h.encode_raw(b"X" * (2 * 1024 * 1024), c, t, lines_ok()))

BAD_UTF8 = ((b"\xff", "a \\xff byte"), (b"\xc0\x80", "overlong \\xc0\\x80"),
            (b"\xed\xa0\x80", "surrogate \\xed\\xa0\\x80"), (b"\xe2\x82", "truncated \\xe2\\x82"))
for pat, name in BAD_UTF8:
    add("customer_id with " + name, "BAD_UTF8",
        lambda c, t: h.encode_raw(oid(), c, t, lines_ok()),
        customer=b"U8-" + pat + b"-%d" % len(hostile))
    add("order_id with " + name, "BAD_UTF8",
        lambda c, t, pat=pat: h.encode_raw(b"O-" + pat + b"-1", c, t, lines_ok()))
    add("sku with " + name, "BAD_UTF8",
        lambda c, t, pat=pat: h.encode_raw(oid(), c, t, [(b"SKU-" + pat, 1, 100)]))
# The truncated sequence at the very end of a string, where a decoder that
# reads past it would read the next field's bytes.
add("customer_id ending in \\xe2\\x82", "BAD_UTF8",
    lambda c, t: h.encode_raw(oid(), c, t, lines_ok()), customer=b"U8-end\xe2\x82")

# A year-1 order as partition FIRST_P's very first record, normal ones after.
FIRST_P = 5
first = add("a year-1 order as the partition's first record", "BAD_PLACED_AT",
            lambda c, t: h.encode_raw(oid(), c, YEAR1_MS, lines_ok()), partition=FIRST_P,
            customer=by_part[FIRST_P][0].encode(), pos=0)
# Each before the good record at its position (stable: the year-1 order first).
stream, at = [], sorted(placed, key=lambda x: (x[0], x[1] is not first))
j = 0
for i, r in enumerate(recs):
    while j < len(at) and at[j][0] == i:
        stream.append(at[j][1])
        j += 1
    stream.append(r)
assert len(stream) == len(recs) + len(hostile)
if skipped:
    h.log("TIERD_HOSTILE_SKIP=%r leaves out: %s" % (SKIP, skipped))
else:
    assert {r.partition for r, _ in hostile} == set(range(8)), "hostile records on every partition"

# Self-check of the hand encoder: a good order written both ways is the same bytes.
probe = h.order("P1", "C1", t_ok, "SALE", [{"sku": "S", "quantity": 2, "unit_price": 3}])
assert h.encode(probe) == h.encode_raw(b"P1", b"C1", t_ok, [(b"S", 2, 3)])

h.log("producing %d records (%d hostile)" % (len(stream), len(hostile)))
h.produce(svc.bootstrap, "orders", stream, config={"message.max.bytes": 16 * 1024 * 1024})
assert not first or first.offset == 0, "the year-1 order must be partition %d's first record" % FIRST_P
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(stream)
what_at = {(r.partition, r.offset): w for r, w in hostile}
assert all(want_dead[(r.partition, r.offset)] == r.expect for r, _ in hostile)
h.log("model: %d customer-months, %d dead letters expected" % (len(want_state), len(want_dead)))

d = h.Daemon(svc, "hostile").start()
port = d.http_port()

problems = []


def check(ok, msg):
    if not ok:
        h.log("FAIL: " + msg)
        problems.append(msg)


def stored():
    pipe = svc.redis.pipeline()
    for p in range(8):
        pipe.hget("tierd:{orders.%d}:meta" % p, "offset")
    return {p: int(v) if v is not None else -1 for p, v in enumerate(pipe.execute())}


def describe(p, off):
    """What is at partition p's offset off, for a message."""
    return what_at.get((p, off), "a good order")


# Drain, watching every partition: with records waiting, its stored offset
# must move at least every STALL_S seconds, unless the others did not get
# on either (a busy machine, an ASan build): a partition stalls when it
# stands still that long while the others apply STALL_RECORDS records (30 %
# of the stream, many batches of every partition) or, near the end, half
# of what they had left when it last moved.
# Nothing moving anywhere for a minute ends the wait: it is stuck.
h.wait_for(lambda: any(v >= 0 for v in stored().values()), "the first commit", timeout=120,
           daemons=[d])
t_start = time.time()
last = stored()
moved_at = {p: t_start for p in range(8)}
total_at = {p: sum(max(v, 0) for v in last.values()) for p in range(8)}  # all offsets then


def others_left(o, p):
    return sum(max(ends[q] - max(o[q], 0), 0) for q in range(8) if q != p)


need = {p: min(STALL_RECORDS, others_left(last, p) // 2) for p in range(8)}
stalls = {}
deadline = t_start + 300
while time.time() < deadline:
    assert d.alive(), "tierd died:\n" + d.log_text()[-4000:]
    o = stored()
    t = time.time()
    total = sum(max(v, 0) for v in o.values())
    for p in range(8):
        if o[p] != last[p]:
            moved_at[p] = t
            total_at[p] = total
            need[p] = min(STALL_RECORDS, others_left(o, p) // 2)
        elif (o[p] < ends[p] and t - moved_at[p] > STALL_S and need[p] > 0
              and total - total_at[p] > need[p] and p not in stalls):
            at = max(o[p], 0)
            stalls[p] = at
            h.log("partition %d stands still at offset %d (%s) for %.0f s while the others "
                  "applied %d records" % (p, at, describe(p, at), t - moved_at[p], total - total_at[p]))
    last = o
    if all(o[p] >= ends[p] for p in range(8)):
        break
    if t - max(moved_at.values()) > 60:
        h.log("no partition moved for 60 s: stuck")
        break
    time.sleep(0.2)
drained = all(last[p] >= ends[p] for p in range(8))
h.log("drain %s after %.1f s: stored %s of %s" % ("done" if drained else "NOT done",
                                                   time.time() - t_start, last, ends))
check(not skipped, "TIERD_HOSTILE_SKIP left out %d hostile records" % len(skipped))
check(not stalls, "partitions stood still more than %.0f s with records waiting, while the others "
      "applied %d: %s" % (STALL_S, STALL_RECORDS, {p: "offset %d (%s)" % (o, describe(p, o)) for p, o in stalls.items()}))
check(drained, "not drained: %s" % {
    p: "offset %d of %d (%s)" % (last[p], ends[p], describe(p, max(last[p], 0)))
    for p in range(8) if last[p] < ends[p]})

# Exactness of the good orders.
try:
    h.compare_state(h.read_state(svc.redis, errors="backslashreplace"), want_state)
    h.log("aggregates equal the recomputation: %d customer-months" % len(want_state))
except AssertionError as e:
    check(False, str(e))

def fnv1a64(b):
    """FNV-1a, 64 bits: the stand-in's digest of the original value."""
    x = 14695981039346656037
    for c in b:
        x = ((x ^ c) * 1099511628211) & (2**64 - 1)
    return "%016x" % x


# Every bad record exactly once, with its reason.
src = {(r.partition, r.offset): r for r in stream}
seen, dups, wrong, stand_ins = {}, [], [], []
for hdr, key, value in h.read_dead_letters(svc.bootstrap):
    coord = (int(hdr["tierd.source.partition"]), int(hdr["tierd.source.offset"]))
    if coord in seen:
        dups.append(coord)
    seen[coord] = hdr.get("tierd.reason")
    r = src.get(coord)
    if r is None:
        continue
    if len(r.value) + len(r.key or b"") + 1024 > DEAD_LETTER_MAX:
        stand_ins.append((coord, hdr, len(value)))
        value = value or b""
        key = key or b""
        why = []
        if "tierd.standin" not in hdr:
            why.append("no tierd.standin header")
        if hdr.get("tierd.original.size") != str(len(r.value)):
            why.append("tierd.original.size %r, not %d" % (hdr.get("tierd.original.size"),
                                                           len(r.value)))
        if hdr.get("tierd.original.fnv1a64") != fnv1a64(r.value):
            why.append("tierd.original.fnv1a64 %r, not %s" % (hdr.get("tierd.original.fnv1a64"),
                                                              fnv1a64(r.value)))
        if len(value) >= len(r.value) or r.value[:len(value)] != value:
            why.append("value of %d bytes is not a shorter prefix of the %d-byte original" % (
                len(value), len(r.value)))
        if (r.key or b"")[:len(key)] != key:
            why.append("key is not a prefix of the original key")
        if why:
            wrong.append("%s (%s) stand-in: %s" % (coord, describe(*coord), "; ".join(why)))
    elif value != r.value or key != r.key or "tierd.standin" in hdr:
        wrong.append("%s (%s): not the original key and bytes" % (coord, describe(*coord)))
missing = sorted(set(want_dead) - set(seen))
unexpected = sorted(set(seen) - set(want_dead))
reasons = [(c, describe(*c), seen[c], want_dead[c]) for c in want_dead
           if c in seen and seen[c] != want_dead[c]]
check(not dups, "dead-lettered more than once: %s" % [(c, describe(*c)) for c in dups])
check(not missing, "%d bad records not dead-lettered: %s" % (
    len(missing), [(c, describe(*c), want_dead[c]) for c in missing]))
check(not unexpected, "%d dead letters for records that are fine: %s" % (
    len(unexpected), unexpected[:10]))
check(not reasons, "%d dead letters with the wrong reason (source, what, got, want): %s" % (
    len(reasons), reasons))
check(not wrong, "dead letters with the wrong body: %s" % wrong)
for coord, hdr, n in stand_ins:
    h.log("stand-in for %s (%s): %d bytes, tierd.standin %r" % (
        coord, describe(*coord), n, hdr.get("tierd.standin")))
if not (missing or unexpected or reasons or dups):
    h.log("dead-letter topic holds exactly the %d bad records, each once, right reasons" % len(
        want_dead))

# Only the partition keys tierd writes, and no month outside its
# partition's kept range, none before 2000, none after the month of now +
# the allowed skew (a customer's months live in its state: tierctl dump).
W = 3
latest = h.month_index(now + 86400_000, "Asia/Shanghai")
bad_keys = []
for key in svc.redis.scan_iter(match="tierd:*", count=1000):
    k = key.decode(errors="replace")
    if not re.match(r"^tierd:\{orders\.\d+\}:(meta|c|p|outbox)$", k):
        bad_keys.append(k)
cur_of = {}
for p in range(8):
    cur = svc.redis.hget("tierd:{orders.%d}:meta" % p, "month")
    if cur is not None and int(cur) > 0:
        cur_of[p] = (int(cur) // 100) * 12 + int(cur) % 100 - 1
for o in h.dump(svc.redis):
    if o["type"] != "month":
        continue
    ym = h.yyyymm(o["month"])
    mi = (ym // 100) * 12 + ym % 100 - 1
    cur_i = cur_of.get(o["partition"])
    # A review of the current month opens the next one (its tier in effect).
    if ym < 200001 or mi > latest + 1 or cur_i is None or not cur_i - W <= mi <= cur_i + 1:
        bad_keys.append("%s month %s (partition %d month %s)" % (
            o["customer"], o["month"], o["partition"], cur_i))
check(not bad_keys, "keys or months outside the window: %s" % bad_keys[:20])
month_first = svc.redis.hget("tierd:{orders.%d}:meta" % FIRST_P, "month")
check(month_first is not None and int(month_first) >= 200001,
      "partition %d's month is %s after a year-1 first record" % (FIRST_P, month_first))

# SIGTERM: exit 0 within the shutdown deadline.
t0 = time.time()
d.proc.send_signal(signal.SIGTERM)
try:
    rc = d.proc.wait(timeout=SHUTDOWN_S + 40)
except Exception:
    rc = None
    d.kill(signal.SIGKILL)
took = time.time() - t0
check(rc == 0 and took <= SHUTDOWN_S + 2, "SIGTERM: %s after %.1f s (want 0 within %.0f s)" % (
    "exit status %s" % rc if rc is not None else "still running, killed -9", took, SHUTDOWN_S))
text = d.log_text()
sanitizer = h.sanitizer_reports(text)
check(not sanitizer, "sanitizer reports: %s" % sanitizer[:5])

assert not problems, "%d of tierd's promises broken by hostile records:\n- %s\n--- end of %s's log:\n%s" % (
    len(problems), "\n- ".join(problems), d.name, text[-4000:])
h.log("PASS")
