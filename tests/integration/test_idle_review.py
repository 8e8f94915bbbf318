#!/usr/bin/python3
"""The idle rule (docs/behaviour.md, "When a month is reviewed"): a
partition that receives no order for idle_close_after reviews its open
month once the wall clock has passed the month's end -- here the month
before this one, with idle_close_after_s 2.
Customers placed then become evaluated later; what this test checks is
that the month is closed (meta.reviewed) without any order of a later month,
and exactly once (the stats count one review per partition)."""
import harness as h

svc = h.Services("idle")
tz = "Asia/Shanghai"
cur = h.month_index(h.now_ms(), tz)
t = h.month_start_ms(cur - 1, tz) + 3 * 86400_000
recs = []
for i in range(16):
    c = "IDLE-%02d" % i
    o = h.order("I-%d" % i, c, t, "SALE", [{"sku": "S", "quantity": 5, "unit_price": 100}])
    recs.append(h.Rec(h.partition_of(c), c.encode(), h.encode(o), o))
h.produce(svc.bootstrap, "orders", recs)
parts = {r.partition for r in recs}
d = h.Daemon(svc, "idle", extra={"idle_close_after_s": 2}).start()
want = "%04d%02d" % ((cur - 1) // 12, (cur - 1) % 12 + 1)


def closed():
    return all((svc.redis.hget("tierd:{orders.%d}:meta" % p, "reviewed") or b"").decode() == want
               for p in parts)


h.wait_for(closed, "idle partitions to review %s" % want, timeout=60, daemons=[d])
h.log("%d idle partitions reviewed %s with no later order" % (len(parts), want))
assert d.term() == 0
assert int(h.last_stats(d.log_text())["reviews"]) == len(parts), "one review per partition"
h.log("PASS")
