#!/usr/bin/python3
"""tierctl against a real Redis, a real KRaft broker and a running tierd.

Orders over the last four months (UTC) for a handful of customers whose
tiers, scores and quota use follow by hand from docs/behaviour.md:

  TC-A  1000 units/month in M-3, M-2, M-1 (20 SKUs, price 27 500), 10 units
        in M.  New customer through M-2; the review of M-1 is its initial
        evaluation: qty_avg 1000 -> 22.5, avg_price 27 500 -> 7.5, skus_avg
        20 -> 7.5, profile defaults 9 + 6: 52.50, tier 5.  Live score after
        the M order (window M-2..M): 45*670/2000 + 7.5 + 15*(41/3)/40 + 15
        = 42.70.  In M-3..M-1 the tier in effect is 2 (cap 100): WARNING,
        REACHED, EXCEEDED each month.  M-1 met its floor, so no downgrade
        before the review of M+2.
  TC-B  95 units in M-1, 5 in M: new customer, tier 2, WARNING in M-1;
        first scored at the review of M+1.
  others a few customers over every partition, one with a profile (grade C).

Then: dump equal, customer-month by customer-month, to the harness's
independent recomputation, with TC-A's tier, score and months as above, and
its --partition and --customer filters; show/explain of TC-A and TC-B; show
of an unknown customer (exit 3);
rebuild refused while tierd holds the lease (exit 4, nothing written);
backtest with the abc-volume preset: a matrix whose configured rows equal
the live tiers, tallies equal to the events tierd published, live keys
byte-identical, no new event records, no scratch key left; then tierd
stopped, a partition's keys deleted, rebuilt, and its dump equal to what it
was; then the partition marked format 1: refused by dump, show and
explain, rebuilt, equal again; then the highest partition's meta renamed
away (its states stay): dump prints an error line for it naming the
rebuild, the rest as before, and exits 1 (it printed nothing of it, exit
0, before), with --customer too; also once a claim has written an epoch
into that meta, when `show` refuses the partition as well.  A customer id with a quote, a backslash and non-ASCII letters checks
dump's JSON strings.
"""
import io
import json
import os
import re
import subprocess

import avro.io
import avro.schema

import harness as h

TZ = "UTC"
TIERCTL = h.tierctl_binary()
PROFILE = avro.schema.parse(open(os.path.join(h.ROOT, "schemas", "customer_profile.avsc")).read())

# `tierctl --help` and the usage docs/tierctl.md shows first say the same.
helptext = subprocess.run([TIERCTL, "--help"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout
doc = open(os.path.join(h.ROOT, "docs", "tierctl.md")).read()
usage = doc.split("```")[1].strip().splitlines()
assert len(usage) > 10 and all(l in helptext.splitlines() for l in usage), (
    "docs/tierctl.md's usage differs from tierctl --help")

svc = h.Services("tierctl")
now = h.now_ms() - 1000
M = h.month_index(now, TZ)


def at(month, day=10):
    return h.month_start_ms(month, TZ) + (day - 1) * 86400_000 + 3600_000


def mtext(m):
    return "%04d-%02d" % (m // 12, m % 12 + 1)


def sale(cust, oid, when, qty, skus=1, price=27500):
    per = [qty // skus + (1 if i < qty % skus else 0) for i in range(skus)]
    lines = [{"sku": "SKU-%02d" % i, "quantity": q, "unit_price": price}
             for i, q in enumerate(per)]
    o = h.order(oid, cust, when, "SALE", lines)
    return h.Rec(h.partition_of(cust), cust.encode(), h.encode(o), o)


orders = []
for k, m in enumerate((M - 3, M - 2, M - 1)):
    orders.append(sale("TC-A", "A-%d" % k, at(m), 1000, skus=20))
orders.append(sale("TC-B", "B-0", at(M - 1), 95))
ESC = 'TC-"esc\\\u00e9\u4e2d'  # a quote, a backslash, two non-ASCII letters
orders.append(sale(ESC, "E-0", at(M - 1), 7))
others = ["TC-O%02d" % i for i in range(14)]
for i, c in enumerate(others):
    for k, m in enumerate((M - 3, M - 2, M - 1)):
        if (i + k) % 3:
            orders.append(sale(c, "%s-%d" % (c, k), at(m, 5 + i), 40 + 37 * i, skus=1 + i % 4,
                               price=8000 + 3000 * i))
# Every customer orders in M, so each partition reviewed M-1, live and replayed.
when_m = max(h.month_start_ms(M, TZ) + 1000, now - 60_000)
orders.append(sale("TC-A", "A-M", when_m, 10, skus=1))
orders.append(sale("TC-B", "B-M", when_m, 5))
orders.append(sale(ESC, "E-M", when_m, 1))
orders += [sale(c, c + "-M", when_m, 3) for c in others]
orders.sort(key=lambda r: r.order["placed_at"])


def profile(cust, grade):
    buf = io.BytesIO()
    avro.io.DatumWriter(PROFILE).write({
        "customer_id": cust, "format": "SUPERMARKET", "market": "RURAL", "chain": False,
        "compliance_grade": grade, "cooperation": 0.8, "growth": 0.4, "tier_override": None,
        "updated_at": h.dt.datetime.fromtimestamp(now / 1000, h.dt.timezone.utc)}, avro.io.BinaryEncoder(buf))
    return h.Rec(h.partition_of(cust), cust.encode(), buf.getvalue())


h.produce(svc.bootstrap, "customer-profiles", [profile(others[3], "C")])
h.produce(svc.bootstrap, "orders", orders)
ends = h.end_offsets(svc.bootstrap, "orders")

d = h.Daemon(svc, "t", time_zone=TZ).start()
cfg = d.cfg
h.wait_drained(svc, ends, timeout=60, daemons=[d])
h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[d])
h.log("tierd applied %d orders" % len(orders))


def tierctl(*args, rc=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
    p = subprocess.run([TIERCTL, "-c", cfg, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert p.returncode == rc, "tierctl %s: exit %d, want %d\n%s\n%s" % (
        " ".join(args), p.returncode, rc, p.stdout, p.stderr)
    return p.stdout, p.stderr


# ---------------------------------------------------------------------- dump
pa = h.partition_of("TC-A")
full = h.dump(svc.redis)
want_state, want_dead = h.model(orders, tz=TZ, window=3, now=now)
assert not want_dead, want_dead
h.compare_state(h.read_state(svc.redis), want_state)
assert all(o["type"] in ("partition", "customer", "month") for o in full), full
parts = [o for o in full if o["type"] == "partition"]
assert [o["partition"] for o in parts] == list(range(8)), parts  # tierd claimed them all
for o in parts:
    if ends[o["partition"]]:  # every customer ordered before M: M-1 was reviewed
        assert o["offset"] == ends[o["partition"]] and o["month"] == mtext(M), o
        assert o["reviewed"] == mtext(M - 1) and o["epoch"] >= 1, o
    else:
        assert (o["offset"], o["month"], o["reviewed"]) == (None, None, None), o
custs = {o["customer"]: o for o in full if o["type"] == "customer"}
assert sorted(custs) == sorted({r.order["customer_id"] for r in orders}), sorted(custs)
for p in {o["partition"] for o in parts}:  # ids in byte order, each once
    ids = [o["customer"].encode() for o in full if o["type"] == "customer" and o["partition"] == p]
    assert ids == sorted(set(ids)), ids
a = custs["TC-A"]
assert a == {"type": "customer", "partition": pa, "customer": "TC-A", "tier": 5, "sequence": 2,
             "first_month": mtext(M - 3), "evaluated": True, "live_score": 42.7}, a
a_months = [(o["month"], o["tier"], o["grade"], o["applied"])
            for o in full if o["type"] == "month" and o["customer"] == "TC-A"]
assert a_months == [(mtext(M - 3), 2, "A", 1), (mtext(M - 2), 2, "A", 1),
                    (mtext(M - 1), 2, "A", 1), (mtext(M), 5, "A", 1)], a_months
b = custs["TC-B"]
assert (b["tier"], b["sequence"], b["evaluated"], b["first_month"]) == (2, 1, False, mtext(M - 1)), b
assert custs[ESC]["tier"] == 2, custs[ESC]
# The filters print exactly the lines of the full dump they select.
only_pa = h.dump(svc.redis, "--partition", str(pa))
assert only_pa == [o for o in full if o["partition"] == pa], only_pa[:3]
only_a = h.dump(svc.redis, "--customer", "TC-A")
assert only_a == [o for o in full if o.get("customer") == "TC-A" or
                  (o["type"] == "partition" and o["partition"] == pa)], only_a
assert h.dump(svc.redis, "--partition", str(pa), "--customer", "TC-A") == only_a
pe = h.partition_of(ESC)
assert h.dump(svc.redis, "--partition", str(pe), "--customer", ESC)[1] == custs[ESC]
h.dump(svc.redis, "--customer", "NO-SUCH-CUSTOMER", rc=3)
h.dump(svc.redis, "--partition", str((pa + 1) % 8), "--customer", "TC-A", rc=3)
raw = subprocess.run([TIERCTL, "-c", cfg, "dump", "--customer", ESC], stdout=subprocess.PIPE,
                     check=True, env={k: v for k, v in os.environ.items()
                                      if not k.startswith("TIERD_")}).stdout
assert b'"customer":"TC-\\"esc\\\\\xc3\xa9\xe4\xb8\xad"' in raw, raw
h.log("dump: %d customer-months equal to the model; TC-A tier 5, live score 42.7; "
      "--partition, --customer filter" % len(want_state))

# ------------------------------------------------------------ show, explain
out, _ = tierctl("show", "TC-A")
assert "customer:    TC-A (partition %d of orders)" % pa in out, out
assert re.search(r"^tier:\s+5;", out, re.M), out
assert re.search(r"^live score:\s+42\.70 ", out, re.M), out
for m in (M - 2, M - 1):
    assert re.search(r"^\s+%s\s+1000\s+27500000\s+1\s+20\s+2\s+A\s+WARNING,REACHED,EXCEEDED$"
                     % mtext(m), out, re.M), out
assert re.search(r"^\s+%s\s+10\s+275000\s+1\s+1\s+5\s+A\s+-$" % mtext(M), out, re.M), out
assert "consumed 10 of cap 700 (tier 5)" in out, out
assert re.search(r"tier 2 -> 5\s+INITIAL_EVALUATION review %s" % mtext(M - 1), out), out
assert "quota TC-A:%s:EXCEEDED" % mtext(M - 1) in out, out
h.log("show TC-A: tier 5, live score 42.70, window, quota, last events")

out, _ = tierctl("explain", "TC-A")
assert "if %s closed now: HOLD -> tier 5 (no change)" % mtext(M) in out, out
assert "downgrade: not before the review of %s" % mtext(M + 2) in out, out
assert "upgrade: needs a score of 60.00 for tier 6" in out, out
out, _ = tierctl("explain", "TC-B")
assert "new customer since %s" % mtext(M - 1) in out, out
assert "the review of %s" % mtext(M + 1) in out, out
out, _ = tierctl("show", "--events", "0", "TC-B")
assert re.search(r"^tier:\s+2;.*new customer", out, re.M), out
assert re.search(r"^\s+%s\s+95\s.*\s2\s+A\s+WARNING$" % mtext(M - 1), out, re.M), out
tierctl("show", "NO-SUCH-CUSTOMER", rc=3)
h.log("explain: hold, downgrade not before %s; new customer; unknown customer exits 3"
      % mtext(M + 2))


# ------------------------------------------------------------- live state
def live_keys():
    """Every live key: name -> DUMP bytes (meta without the lease tierd renews)."""
    out = {}
    for k in svc.redis.scan_iter(match="*", count=1000):
        if k.endswith(b":meta"):
            out[k] = sorted((f, v) for f, v in svc.redis.hgetall(k).items() if f != b"lease")
        else:
            out[k] = svc.redis.dump(k)
    return out


def event_ends():
    return (h.end_offsets(svc.bootstrap, "tier-changes"), h.end_offsets(svc.bootstrap, "quota-events"))


# ------------------------------------------------- rebuild refused while live
before = live_keys()
_, err = tierctl("rebuild", "--partition", str(pa), rc=4)
assert "refused" in err and "owned by t" in err, err
tierctl("rebuild", "--all", rc=4)
assert live_keys() == before, "a refused rebuild wrote"
h.log("rebuild refused (exit 4) while tierd holds the lease; nothing written")

# ------------------------------------------------------------------ backtest
events_before = event_ends()
before = live_keys()
out, err = tierctl("backtest", "--policy", os.path.join(h.ROOT, "config", "policies",
                                                        "abc-volume.yaml"))
assert "tierctl: backtest: partition %d:" % pa in err, err
assert live_keys() == before, "backtest touched live keys"
assert event_ends() == events_before, "backtest published events"
assert not list(svc.redis.scan_iter(match="tierctl-backtest-*")), "scratch keys left"

live_tiers = {}
for o in h.dump(svc.redis):
    if o["type"] == "customer":
        t = o["tier"] or 0
        live_tiers[t] = live_tiers.get(t, 0) + 1
rows = {}
lines = out.splitlines()
head = next(i for i, l in enumerate(lines) if l.startswith("tier matrix"))
cols = lines[head + 2].split()
assert cols == ["-", "1", "(C)", "2", "(B)", "3", "(A)", "total"], cols
for l in lines[head + 3:head + 12]:
    f = l.split()
    rows[f[0]] = [int(x) for x in f[1:]]
assert set(rows) == {"-"} | {str(i) for i in range(1, 9)}, rows
got = {int(k): v[-1] for k, v in rows.items() if k != "-" and v[-1]}
assert got == live_tiers, "configured rows %s, live tiers %s" % (got, live_tiers)
assert rows["-"][-1] == 0 and sum(v[0] for v in rows.values()) == 0, out
assert sum(v[-1] for v in rows.values()) == 3 + len(others), out

published = h.decode_events(h.read_topic(svc.bootstrap, "quota-events"), "quota_event.avsc")
kinds = {}
for ev, _ in published.values():
    kinds[ev["kind"]] = kinds.get(ev["kind"], 0) + 1
changes = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
reasons = {}
for ev, _ in changes.values():
    reasons[ev["reason"]] = reasons.get(ev["reason"], 0) + 1
for kind in ("WARNING", "REACHED", "EXCEEDED", "HARD_CAP_EXCEEDED"):
    m = re.search(r"^\s+%s\s+(\d+)\s+(\d+)$" % kind, out, re.M)
    assert m and int(m.group(1)) == kinds.get(kind, 0), (kind, kinds, out)
for reason in ("NEW_CUSTOMER", "INITIAL_EVALUATION", "UPGRADE", "DOWNGRADE", "COMPLIANCE"):
    m = re.search(r"^\s+%s\s+(\d+)\s+(\d+)$" % reason, out, re.M)
    assert m and int(m.group(1)) == reasons.get(reason, 0), (reason, reasons, out)
assert kinds["EXCEEDED"] >= 3 and reasons["INITIAL_EVALUATION"] >= 1, (kinds, reasons)
h.log("backtest: matrix rows = live tiers %s, tallies = published events, live keys "
      "and event topics untouched" % live_tiers)

# ------------------------------------------------------------------- rebuild
assert d.term() == 0, "tierd did not stop cleanly"


def partition_state():
    """What a rebuild must restore: the dump of partition pa (the epoch
    aside, a rebuild bumps it), its meta but for the owner's fields, and its
    profiles."""
    lines = [dict(o, epoch=None) if o["type"] == "partition" else o
             for o in h.dump(svc.redis, "--partition", str(pa))]
    meta = {f: v for f, v in svc.redis.hgetall("tierd:{orders.%d}:meta" % pa).items()
            if f not in (b"epoch", b"owner", b"updated_at", b"lease")}
    return lines, meta, svc.redis.hgetall("tierd:{orders.%d}:p" % pa)


want = partition_state()
assert svc.redis.xlen("tierd:{orders.%d}:outbox" % pa) == 0
assert sum(o["type"] == "month" for o in want[0]) >= 5 and want[1][b"format"] == b"4", want
assert svc.redis.hget("tierd:{orders.%d}:meta" % pa, "lease") is None, "lease not released"
svc.redis.delete(*svc.redis.keys("tierd:{orders.%d}:*" % pa))
out, err = tierctl("rebuild", "--partition", str(pa))
assert "rebuilt orders [%d]" % pa in out, out
assert b"lease" not in svc.redis.hgetall("tierd:{orders.%d}:meta" % pa), "rebuild kept its lease"
got = partition_state()
for what, g, w in zip(("dump", "meta", "profiles"), got, want):
    if what == "dump":
        diff = [(x, y) for x, y in zip(g, w) if x != y][:5] + ([len(g), len(w)] if len(g) != len(w) else [])
    else:
        diff = sorted(k for k in set(g) | set(w) if g.get(k) != w.get(k))
    assert g == w, "rebuilt %s differs: %s" % (what, diff)
assert event_ends() == events_before, "rebuild published events"

out, _ = tierctl("show", "--events", "0", "TC-A")
assert re.search(r"^live score:\s+42\.70 ", out, re.M), out
h.log("rebuild: partition %d deleted and rebuilt equal, nothing published" % pa)

# A partition of another state format is refused, naming the fix, until a
# rebuild, which must not trip over the format field itself.
svc.redis.hset("tierd:{orders.%d}:meta" % pa, "format", "1")
fix = "tierctl rebuild --partition %d" % pa
lines = h.dump(svc.redis, "--partition", str(pa), rc=1)
assert len(lines) == 1 and lines[0]["type"] == "error" and fix in lines[0]["error"], lines
assert "customer" not in lines[0], lines
_, err = tierctl("show", "--events", "0", "TC-A", rc=1)
assert "format 1" in err and fix in err, err
tierctl("explain", "TC-A", rc=1)
tierctl("rebuild", "--partition", str(pa))
got = partition_state()
assert got == want, "rebuilt from format 1 differs: %s" % (
    [(x, y) for x, y in zip(got[0], want[0]) if x != y][:5] or got[1:])
h.log("format 1: dump, show and explain refuse and name the rebuild, which restores it")

# Customer states without their partition's meta (deleted by hand): the
# dump says so and exits 1, never prints the partition as one without
# state; also for the highest partition, which only its states name.
whole = h.dump(svc.redis)
top = max(o["partition"] for o in whole if o["type"] == "customer")
someone = next(o["customer"] for o in whole if o["type"] == "customer" and o["partition"] == top)
svc.redis.rename("tierd:{orders.%d}:meta" % top, "aside:meta")
lines = h.dump(svc.redis, rc=1, stderr_has="holds customer states but no meta")
errors = [o for o in lines if o["type"] == "error"]
assert len(errors) == 1 and errors[0]["partition"] == top, errors
assert "tierctl rebuild --partition %d" % top in errors[0]["error"], errors
assert [o for o in lines if o["type"] != "error"] == [o for o in whole if o["partition"] != top]
lines = h.dump(svc.redis, "--customer", someone, rc=1)
assert [o["type"] for o in lines] == ["error"], lines
# The same when a claim has written an epoch since (the meta exists, with
# no offset, format or review): show refuses it too.
svc.redis.hset("tierd:{orders.%d}:meta" % top, "epoch", "3")
lines = h.dump(svc.redis, rc=1, stderr_has="holds customer states but no meta")
assert [o["partition"] for o in lines if o["type"] == "error"] == [top], lines
_, err = tierctl("show", "--events", "0", someone, rc=1)
assert "holds customer states but no meta" in err and "--partition %d" % top in err, err
svc.redis.delete("tierd:{orders.%d}:meta" % top)
svc.redis.rename("aside:meta", "tierd:{orders.%d}:meta" % top)
assert h.dump(svc.redis) == whole
h.log("states without meta in partition %d: dump names it and the rebuild, exit 1" % top)
h.log("PASS")
