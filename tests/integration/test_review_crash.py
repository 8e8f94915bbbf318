#!/usr/bin/python3
"""kill -9 inside the paged monthly reviews.

40 000 customers over 8 partitions (about 5 000 each: five or six review
pages of 1 000) order in month M (last month, Asia/Shanghai) under the
test's own policy, then orders of M+1 (this month) make every partition
review M.  tierd is killed with SIGKILL at random points while the pages
commit (seen through meta rv_month/rv_after and reviewed), restarted each
time, until MID_KILLS distinct cursors (partition, rv_after) were left by a
kill for a restart to resume from, then left to finish.  At least 5 kills
must land while a review is half done (a cursor in meta), leaving 5
cursors or more in two partitions or more.

The policy makes every customer's first review its INITIAL_EVALUATION
(new_customer.months 1) to T* = the tier of its qty in M (score qty/10,
tiers every 20 points), and makes a second review of the same month
visible: the tier caps are far above any purchase, so a customer reviewed
again is below its tier's floor in every window month and is downgraded
(DOWNGRADE to tier 1; nobody starts on tier 1 except the few whose T* is 1).

Then, against expectations computed here from the orders:
  - each customer's tier changes are exactly NEW_CUSTOMER (sequence 1) and,
    when T* != 2, one INITIAL_EVALUATION 2 -> T* for M (sequence 2):
    evaluated once, gapless, nothing else; repeats byte-identical;
  - each customer's stored state is evaluated, on tier T*, with that
    sequence, and M+1 begins on T*;
  - the aggregates in Redis (tierctl dump, harness.read_state)
    equal harness.model's recomputation;
  - every partition's meta has reviewed = M and no rv_month/rv_after.

Last, tierctl dump with its Redis replies cut off mid-page (a Toxiproxy
limit_data toxic at 3/4 of what a whole dump of partition 0 reads): it
exits 1 naming Redis, after lines that are the whole dump's first ones.

    test_review_crash.py [CUSTOMERS [MID_KILLS]]
"""
import collections
import datetime as dt
import os
import random
import signal
import sys
import time

import redis

import harness as h

CUSTOMERS = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
MID_KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
MAX_KILLS = 4 * MID_KILLS
SEED = 5150
TZ = "Asia/Shanghai"
VERSION = "review-crash-1"
POLICY = """\
name: review-crash
version: "%s"
description: every first review evaluates; a second review of a month would downgrade
time_zone: %s
window_months: 3
new_customer: { months: 1, tier: 2 }
upgrade: { rule: hysteresis, cap_ratio: 0.9, grade_at_least: B, on_order: false }
downgrade: { rule: floor }
score:
  - { kind: linear, metric: qty_total, lo: 0, hi: 1000, points: 100 }
tiers:
  - { tier: 1, min_score: 0,  cap: 1000000000 }
  - { tier: 2, min_score: 20, cap: 2000000000 }
  - { tier: 3, min_score: 40, cap: 3000000000 }
  - { tier: 4, min_score: 60, cap: 4000000000 }
  - { tier: 5, min_score: 80, cap: 5000000000 }
""" % (VERSION, TZ)


def t_star(qty):
    """score = qty_total / 10 (one month bought in the window); tier t
    needs 20 * (t - 1) points, that is 200 * (t - 1) units."""
    return min(5, qty // 200 + 1)


def ym(m):
    return "%04d-%02d" % (m // 12, m % 12 + 1)


def yyyymm(m):
    return (m // 12) * 100 + m % 12 + 1


now = h.now_ms()
cur = h.month_index(now, TZ)
M = cur - 1
rnd = random.Random(SEED)
skus = ["SKU-%02d" % i for i in range(30)]


def sale(oid, cust, t, qty):
    """A SALE of qty units over 1-3 lines."""
    n = min(qty, rnd.randint(1, 3))
    parts = [1] * (n - 1) + [qty - (n - 1)]
    lines = [{"sku": s, "quantity": q, "unit_price": rnd.randint(100, 50000)}
             for s, q in zip(rnd.sample(skus, n), parts)]
    return h.order(oid, cust, t, "SALE", lines)


def month_orders():
    """Month M: each customer 1-3 orders whose qty lands well inside the
    band of the tier chosen for it (a RETURN now and then, after its
    sales).  Returns the records in placed_at order."""
    t0, t1 = h.month_start_ms(M, TZ), h.month_start_ms(M + 1, TZ) - 3600_000
    out = []
    for i in range(CUSTOMERS):
        cid = "RC%05d" % i
        tier = rnd.choices([1, 2, 3, 4, 5], [1, 5, 5, 5, 5])[0]
        qty = 200 * (tier - 1) + rnd.randint(40, 160)
        n = rnd.choice([1, 1, 1, 2, 3])
        times = sorted(rnd.randint(t0, t1) for _ in range(n + 1))
        ret = rnd.randint(1, 30) if rnd.random() < 0.08 else 0
        cuts = sorted(rnd.sample(range(1, qty + ret), n - 1))
        split = [b - a for a, b in zip([0] + cuts, cuts + [qty + ret])]
        for k, q in enumerate(split):
            out.append((times[k], sale("%s-M-%d" % (cid, k), cid, times[k], q)))
        if ret:
            o = h.order("%s-M-R" % cid, cid, times[n], "RETURN",
                        [{"sku": skus[0], "quantity": ret, "unit_price": 100}])
            out.append((times[n], o))
    out.sort(key=lambda x: x[0])
    return [rec(o) for _t, o in out]


def next_month_orders():
    """M+1: one order for every fifth customer, and 40 customers new in M+1
    (placed, never reviewed).  Placed in the first hour of M+1 (at most an
    hour ahead of the clock when M+1 has just begun: within the skew)."""
    t0 = h.month_start_ms(M + 1, TZ)
    out = []
    for i in list(range(0, CUSTOMERS, 5)) + ["N%02d" % j for j in range(40)]:
        cid = "RC%05d" % i if isinstance(i, int) else "RN-" + i
        t = t0 + rnd.randint(60_000, 3600_000)
        out.append((t, sale("%s-N" % cid, cid, t, rnd.randint(1, 20))))
    out.sort(key=lambda x: x[0])
    return [rec(o) for _t, o in out]


def rec(o):
    c = o["customer_id"]
    return h.Rec(h.partition_of(c), c.encode(), h.encode(o), o)


def metas(r):
    """Per partition: (reviewed, rv_month, rv_after), None where unset."""
    pipe = r.pipeline(transaction=False)
    for p in range(8):
        pipe.hmget("tierd:{orders.%d}:meta" % p, "reviewed", "rv_month", "rv_after")
    return [tuple(v.decode() if v is not None else None for v in row) for row in pipe.execute()]


def all_reviewed(ms):
    return all(m[0] is not None and int(m[0]) >= yyyymm(M) for m in ms)


def poll_until(cond, what, d, timeout=120):
    """harness.wait_for at 2 ms a poll: a review page takes tens of ms."""
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out waiting for " + what
        assert d.alive(), "tierd %s died:\n%s" % (d.name, d.log_text()[-3000:])
        time.sleep(0.002)


def drained_to(svc, ends):
    def ok():
        return all(int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset") or 0) >= hi
                   for p, hi in ends.items() if hi)
    return ok


# ------------------------------------------------------------------- run

svc = h.Services("review-crash")
policy_path = os.path.join(svc.dir, "policy-review-crash.yaml")
with open(policy_path, "w") as f:
    f.write(POLICY)
EXTRA = {"policy": policy_path, "idle_close_after_s": 31622400}
started = [0]


def start():
    started[0] += 1
    # One static member across restarts: the partitions come straight back.
    return h.Daemon(svc, "rc-%d" % started[0], time_zone=TZ, extra=EXTRA,
                    kafka_extra={"group.instance.id": "review-crash"}).start()


h.log("policy %s; %d customers order in %s, reviews run at the first orders of %s" % (
    policy_path, CUSTOMERS, ym(M), ym(M + 1)))
first = month_orders()
d = start()
h.produce(svc.bootstrap, "orders", first)
h.wait_for(drained_to(svc, h.end_offsets(svc.bootstrap, "orders")),
           "month %s to be applied" % ym(M), timeout=300, daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the placements to be published",
           timeout=120, daemons=[d])
assert not any(m[0] and int(m[0]) >= yyyymm(M) for m in metas(svc.redis)), \
    "nothing may review %s before an order of %s" % (ym(M), ym(M + 1))
assert d.term() == 0
h.log("%d orders of %s applied; tierd stopped" % (len(first), ym(M)))

# The orders of M+1 wait on the topic, so the reviews start under watch.
second = next_month_orders()
h.produce(svc.bootstrap, "orders", second)
kills, mid, resumes, kill_log = 0, 0, set(), []
d = start()
while True:
    ms = metas(svc.redis)
    if all_reviewed(ms) or len(resumes) >= MID_KILLS or kills >= MAX_KILLS:
        break
    if rnd.random() < 0.25:
        # a random moment after the start: claiming, pass 1, or a page.
        # The whole review of every partition now takes a few hundred ms
        # (it took seconds when states were decoded whole), so a moment up
        # to 1.5 s later, or 25 ms after a page, mostly fell after its end
        # and left too few kills inside it: up to 0.4 s, and 8 ms below.
        at = time.time() + rnd.uniform(0.05, 0.4)
        poll_until(lambda: time.time() >= at or all_reviewed(metas(svc.redis)),
                   "the kill point", d)
    else:
        # the next page commit that leaves a review half done (or the last
        # one), then a random moment in what follows
        def half_done():
            at = metas(svc.redis)
            return all_reviewed(at) or (at != ms and any(m[1] is not None for m in at))
        poll_until(half_done, "a review page to commit", d)
        time.sleep(rnd.uniform(0, 0.008))  # a page takes a few ms now
    d.kill(signal.SIGKILL)
    kills += 1
    after = metas(svc.redis)
    half = [p for p, m in enumerate(after) if m[1] is not None]
    if half:
        mid += 1
        resumes.update((p, after[p][2]) for p in half)
    kill_log.append(" ".join("%d:%s" % (p, after[p][2]) for p in half) or "-")
    if all_reviewed(after):
        break
    d = start()
if not d.alive():
    d = start()
parts = {p for p, _ in resumes}
h.log("killed tierd %d times, %d of them with a review half done; %d cursors to resume from "
      "in partitions %s" % (kills, mid, len(resumes), sorted(parts)))
h.log("cursors at the kills: %s" % "; ".join(kill_log))
assert mid >= 5 and len(resumes) >= 5 and len(parts) >= 2, \
    "at least 5 kills must land inside paged reviews, leaving 5 cursors in 2 partitions or more"

ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_drained(svc, ends, timeout=300, daemons=[d])
h.wait_for(lambda: all_reviewed(metas(svc.redis)), "every partition to review %s" % ym(M),
           timeout=120, daemons=[d])
want_state, want_dead = h.model(first + second, tz=TZ)
assert not want_dead, "the test produces no bad record"
n_ev, repeats = h.check_tier_events(svc, want_state, daemons=[d])
h.log("%d tier changes on the topic, sequences gapless, %d republished (byte-identical)" % (
    n_ev, repeats))
assert d.term() == 0

# --- the decisions ---------------------------------------------------
problems = []
qty_m = {c: v[0] for (_p, m, c), v in want_state.items() if m == yyyymm(M)}
first_at = {}
for r in first + second:
    c, t = r.order["customer_id"], r.order["placed_at"]
    first_at[c] = min(first_at.get(c, t), t)
want = {}
for c in first_at:
    # a placement's review_month is the month of the order that placed it
    evs = [(1, "NEW_CUSTOMER", None, 2, ym(h.month_index(first_at[c].timestamp() * 1000, TZ)),
            first_at[c])]
    if c in qty_m and t_star(qty_m[c]) != 2:
        evs.append((2, "INITIAL_EVALUATION", 2, t_star(qty_m[c]), ym(M),
                    dt.datetime.fromtimestamp(h.month_start_ms(M + 1, TZ) / 1000, dt.timezone.utc)))
    want[c] = evs
tiers = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
got = collections.defaultdict(list)
for ev, _ in tiers.values():
    got[ev["customer_id"]].append(ev)
wrong = []
for c in sorted(set(want) | set(got)):
    evs = sorted(got.get(c, []), key=lambda e: e["sequence"])
    g = [(e["sequence"], e["reason"], e["previous_tier"], e["new_tier"], e["review_month"],
          e["decided_at"]) for e in evs]
    if g != want.get(c):
        wrong.append((c, g, want.get(c)))
    for e in evs:
        if e["policy_version"] != VERSION or e["event_id"] != "%s:tier:%d" % (c, e["sequence"]):
            wrong.append((c, e["event_id"], e["policy_version"]))
        if e["reason"] == "INITIAL_EVALUATION" and (
                e["target_tier"] != e["new_tier"] or abs(e["score"] - qty_m[c] / 10) > 1e-9):
            wrong.append((c, "score", e["score"], e["target_tier"], qty_m[c]))
if wrong:
    problems.append("%d customers' tier changes differ (got, want): %s" % (len(wrong), wrong[:4]))
evaluated = collections.Counter(w[-1][1] for w in want.values())
h.log("tier changes as expected for %d customers: %s" % (len(want), sorted(evaluated.items())))
quotas = h.read_topic(svc.bootstrap, "quota-events")
if quotas:
    problems.append("%d quota events; the caps are out of reach" % len(quotas))

# --- the stored states and meta ----------------------------------------
bad_state = []
for p in range(8):
    for cust, v in svc.redis.hscan_iter("tierd:{orders.%d}:c" % p, count=1000):
        c = cust.decode()
        s = h.decode_state(v)
        if c not in qty_m:  # new in M+1: placed, never reviewed
            exp = (0, 2, 1)
        else:
            exp = (1, t_star(qty_m[c]), len(want[c]))
        nxt = [mo["tier"] for mo in s["months"] if mo["month"] == M + 1]
        if (s["flags"] & 1, s["tier"], s["seq"]) != exp or (c in qty_m and nxt != [exp[1]]):
            bad_state.append((p, c, s["flags"], s["tier"], s["seq"], nxt, exp))
if bad_state:
    problems.append("%d states differ (partition, customer, flags, tier, seq, M+1 tier, "
                    "want evaluated/tier/seq): %s" % (len(bad_state), bad_state[:4]))
for p, (reviewed, rv_month, rv_after) in enumerate(metas(svc.redis)):
    if reviewed != "%06d" % yyyymm(M) or rv_month is not None or rv_after is not None:
        problems.append("partition %d meta: reviewed %s rv_month %s rv_after %s" % (
            p, reviewed, rv_month, rv_after))
try:
    h.compare_state(h.read_state(svc.redis), want_state)
    h.log("aggregates equal the recomputation: %d customer-months" % len(want_state))
except AssertionError as e:
    problems.append("aggregates: %s" % e)
assert not problems, "\n  ".join(["%d problems:" % len(problems)] + problems)

# --- the dump when its connection drops mid-page ------------------------
# Through a Toxiproxy of the test's own: partition 0 (about 5 000 states,
# five or six pages) whole, then with the replies cut off after 3/4 of the
# bytes that dump took from Redis.  The HSCAN that lists the ids reads
# the states too (Redis 7.0 has no NOVALUES), so that is about half; the
# cut lands in the middle of the pages, which are pipelined (the next
# HMGET is sent before this page prints): while one is in the air.
tox = h.Toxiproxy(svc.dir)
via = redis.Redis(host="127.0.0.1", port=tox.create("redis", "127.0.0.1:%d" % svc.redis_port))
whole = h.dump(via, "--partition", "0")
out_before = svc.redis.info("stats")["total_net_output_bytes"]
assert h.dump(svc.redis, "--partition", "0") == whole
dump_bytes = svc.redis.info("stats")["total_net_output_bytes"] - out_before
tox.add_toxic("redis", "half", "limit_data", "downstream", bytes=dump_bytes * 3 // 4)
cut = h.dump(via, "--partition", "0", rc=1, stderr_has="tierctl: dump: redis")
printed = sum(1 for o in cut if o["type"] == "customer")
assert cut == whole[:len(cut)], "a cut dump printed lines a whole one does not"
assert 1000 <= printed < sum(1 for o in whole if o["type"] == "customer"), (
    "the cut dump printed %d customers; want a page or more, and fewer than all" % printed)
h.log("a dump cut off after %d of %d reply bytes exits 1 after %d whole customer lines" % (
    dump_bytes * 3 // 4, dump_bytes, printed))
h.log("PASS")
