#!/usr/bin/python3
"""kill -9 at random points while tierd drains eight months of orders.

The months are the eight calendar months (Asia/Shanghai) before the
current one, orders in placed_at order per partition, 320 customers whose
volumes rise, fall, hold, pause or jump about (events_model.Scenario), a
holiday month, and grade changes on customer-profiles between the months:
upgrades, downgrades, compliance caps and every kind of quota event happen.
tierd runs the test's own policy (events_model.Policy) with small batches,
and is killed with SIGKILL at random points of its progress, at least
KILLS times, restarted each time, until every order is applied.

Then, against models written from docs/behaviour.md (harness.model for the
aggregates, events_model.Model for the decisions):
  - the aggregates in Redis equal the recomputation exactly;
  - tier-changes holds exactly the expected tier changes (reason, tiers,
    review month, T* and score) and each customer's are numbered 1..n;
  - quota-events holds exactly the expected (customer, month, kind) set,
    with tier, caps, consumed and the crossing order;
  - every event_id published more than once is byte-identical;
  - at least one UPGRADE, DOWNGRADE, COMPLIANCE and every quota kind.

    test_crash_months.py [KILLS]     the run (needs build/tierd)
    test_crash_months.py --dry-run   the scenario and the model only
"""
import os
import random
import signal
import sys
import time

import harness as h
import events_model as em

DRY = "--dry-run" in sys.argv
args = [a for a in sys.argv[1:] if not a.startswith("--")]
KILLS = int(args[0]) if args else 14
SEED = 8128
MONTHS = 8
PHASES = [(0, 4, 16), (4, 6, 9), (6, 8, 9)]   # months [from, to), seconds to produce them over
PHASE_KILLS = [KILLS // 2, KILLS // 4, KILLS - KILLS // 2 - KILLS // 4]

now = h.now_ms()
base = h.month_index(now, em.TZ) - MONTHS
policy = em.Policy(holiday_month=base + 5)
sc = em.Scenario(SEED, 320, base, MONTHS, h.partition_of)
where = {cid: (part, fmt) for cid, part, _pat, fmt in sc.custs}
model = em.Model(policy)
choose = random.Random(SEED + 1)   # grade changes: part of the scenario
lowered = []


def grade_changes(k):
    """The profile changes between phase k and k+1, picked from the model's
    state (customers past their initial evaluation): lowered grades on
    customers above the cap (COMPLIANCE), lowered grades that move nothing,
    and, later, grades raised again (upgrades stay blocked while a C or D
    month is in the window)."""
    ev = sorted((c for c in model.custs.values() if c.evaluated and c.grade in "AB"),
                key=lambda c: c.id)
    high = [c for c in ev if c.tier >= 3]
    low = [c for c in ev if c.tier <= 2]
    out = [(c.id, choose.choice("CD")) for c in choose.sample(high, min(8 - 2 * k, len(high)))]
    out += [(c.id, "C") for c in choose.sample(low, min(3, len(low)))]
    if k == 1:
        out += [(cid, choose.choice("AB")) for cid in choose.sample(lowered, len(lowered) // 2)]
    lowered.extend(cid for cid, g in out if g in "CD")
    return out


def phase_orders(k):
    lo, hi = PHASES[k][:2]
    return [(p, o) for p, o in sc.orders if base + lo <= sc.month_index(o) < base + hi]


def dry_run():
    for p, cid, grade, fmt in sc.profiles:
        model.profile(p, cid, grade, fmt)
    for k in range(len(PHASES)):
        for p, o in phase_orders(k):
            model.order(p, o)
        if k + 1 < len(PHASES):
            ch = grade_changes(k)
            for cid, g in ch:
                model.profile(where[cid][0], cid, g, where[cid][1])
            print("after phase %d: %s" % (k, " ".join("%s->%s" % x for x in ch)))
    summary()


def summary():
    reasons, kinds = {}, {}
    for e in model.tiers.values():
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    for e in model.quotas.values():
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    h.log("%d orders over %s .. %s (holiday %s), %d customers, %d reviews" % (
        len(sc.orders), em.ym(base), em.ym(base + MONTHS - 1), em.ym(policy.holiday_month),
        len(sc.custs), model.reviews))
    h.log("expected tier changes %s" % sorted(reasons.items()))
    h.log("expected quota events %s" % sorted(kinds.items()))
    missing = [r for r in (em.UP, em.DOWN, em.COMPL, em.INIT) if r not in reasons]
    missing += [k for k in em.KINDS if k not in kinds]
    assert not missing, "the scenario does not cover %s" % missing


if DRY:
    dry_run()
    sys.exit(0)

svc = h.Services("months")
policy_path = os.path.join(svc.dir, "policy-months.yaml")
with open(policy_path, "w") as f:
    f.write(policy.text())
EXTRA = {"policy": policy_path, "idle_close_after_s": 31622400,
         "batch": "\n  max_orders: 60\n  max_ms: 20"}
rnd = random.Random(SEED + 2)     # kill points
started = [0]


def start():
    started[0] += 1
    # One static member across restarts: the broker hands the partitions
    # straight back instead of waiting out the session.
    return h.Daemon(svc, "months-%d" % started[0], extra=EXTRA,
                    kafka_extra={"group.instance.id": "months"}).start()


def applied_total():
    return sum(v or 0 for v in h.meta_field(svc, "offset").values())


def wait_profiles(d):
    ends = h.end_offsets(svc.bootstrap, "customer-profiles")
    h.wait_for(lambda: all((h.meta_field(svc, "poffset")[p] or 0) >= hi
                           for p, hi in ends.items() if hi),
               "the profiles to be applied", timeout=120, daemons=[d])


def produce_profiles(changes):
    recs = [h.Rec(p, cid.encode(), em.profile_value(cid, g, fmt, h.now_ms()))
            for p, cid, g, fmt in changes]
    h.produce(svc.bootstrap, "customer-profiles", recs)
    for p, cid, g, fmt in changes:
        model.profile(p, cid, g, fmt)


all_recs, kills, mid_drain = [], [0], [0]


def run_phase(k, d):
    """Produces phase k's orders over a few seconds and kills tierd at random
    points until the phase is produced and PHASE_KILLS[k] kills landed, then
    lets it apply every order.  A kill point is either a random moment
    0.3-4 s after the start (often while it claims its partitions) or
    20-300 more records committed (then up to 150 ms more: between a
    batch's read and its commit, or in a review).  Returns the running
    daemon."""
    orders = phase_orders(k)
    for p, o in orders:
        model.order(p, o)
    recs = [h.Rec(p, o["customer_id"].encode(), h.encode(o), o) for p, o in orders]
    all_recs.extend(recs)
    producer = h.produce_in_background(svc.bootstrap, recs, PHASES[k][2])
    ends, n = None, 0

    def drained():
        return ends is not None and all((h.meta_field(svc, "offset")[p] or 0) >= hi
                                        for p, hi in ends.items() if hi)
    while True:
        if d is None:
            d = start()
        if ends is None and not producer.is_alive():
            ends = h.end_offsets(svc.bootstrap, "orders")
        if n >= PHASE_KILLS[k] and ends is not None:
            h.wait_drained(svc, ends, daemons=[d])
            break
        if rnd.random() < 0.3:
            at = time.time() + rnd.uniform(0.3, 4.0)
            h.wait_for(lambda: time.time() >= at, "the kill point", daemons=[d])
        else:
            step, t0 = rnd.randint(20, 300), applied_total()
            h.wait_for(lambda: applied_total() >= t0 + step or drained() or
                       (ends is None and not producer.is_alive()),
                       "tierd to make progress", timeout=120, daemons=[d])
            time.sleep(rnd.uniform(0, 0.15))
        pending = ends is None or applied_total() < sum(ends.values())
        d.kill(signal.SIGKILL)
        d, n = None, n + 1
        kills[0] += 1
        mid_drain[0] += pending
    producer.join()
    h.log("phase %d (%s .. %s): %d orders applied, tierd killed %d times" % (
        k, em.ym(base + PHASES[k][0]), em.ym(base + PHASES[k][1] - 1), len(recs), n))
    return d


h.log("policy %s; months %s .. %s" % (policy_path, em.ym(base), em.ym(base + MONTHS - 1)))
d = start()
produce_profiles([(p, cid, g, fmt) for p, cid, g, fmt in sc.profiles])
wait_profiles(d)
for k in range(len(PHASES)):
    d = run_phase(k, d)
    if k + 1 < len(PHASES):
        ch = grade_changes(k)
        produce_profiles([(where[cid][0], cid, g, where[cid][1]) for cid, g in ch])
        # and one kill while they are being applied
        time.sleep(rnd.uniform(0, 0.3))
        d.kill(signal.SIGKILL)
        kills[0] += 1
        d = start()
        wait_profiles(d)
        h.log("grade changes applied: %s" % " ".join("%s->%s" % x for x in ch))

summary()
h.log("killed tierd %d times, %d of them with orders still to apply" % (kills[0], mid_drain[0]))
assert kills[0] >= 10 and mid_drain[0] >= 8, "the kills must land while tierd is draining"

problems, stats = em.check_published(h, svc, model, daemons=[d])
for topic, (n, distinct, repeated) in stats.items():
    h.log("%s: %d records, %d distinct events, %d published more than once" % (
        topic, n, distinct, repeated))
want_state, want_dead = h.model(all_recs)
got_state = h.read_state(svc.redis)
try:
    h.compare_state(got_state, want_state)
    h.log("aggregates equal the recomputation: %d customer-months" % len(want_state))
except AssertionError as e:
    problems.append("aggregates: %s" % e)
assert not want_dead, "the scenario has no bad record"
dead = sum(h.end_offsets(svc.bootstrap, "dead-letter").values())
if dead:
    problems.append("dead-letter: %d records, none expected" % dead)
status = d.term()
if status != 0:
    problems.append("SIGTERM: tierd exited with %s" % status)
em.report(h, problems)
h.log("PASS")
