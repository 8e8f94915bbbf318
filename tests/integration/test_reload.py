#!/usr/bin/python3
"""SIGHUP (issue 4): a valid new policy applies to later decisions, and the
events name its version; an invalid one is logged with file and line and the
running policy is kept; tierd keeps running throughout."""
import os
import signal

import harness as h

svc = h.Services("reload")
tz = "Asia/Shanghai"
now = h.now_ms()
policy_src = open(os.path.join(h.ROOT, "config", "policies", "supply-tiers.yaml")).read()
policy = os.path.join(svc.dir, "policy.yaml")


def write_policy(version, broken=False):
    text = policy_src.replace('version: "1"', 'version: "%s"' % version)
    if broken:
        text += "\nnot_a_key: 1\n"
    with open(policy, "w") as f:
        f.write(text)


def place(tag):
    """One first order for 8 new customers: 8 NEW_CUSTOMER events."""
    recs = []
    for i in range(8):
        c = "%s-%d" % (tag, i)
        o = h.order(c + "-o", c, now - 60_000, "SALE", [{"sku": "S", "quantity": 1, "unit_price": 1}])
        recs.append(h.Rec(h.partition_of(c), c.encode(), h.encode(o), o))
    h.produce(svc.bootstrap, "orders", recs)
    return {r.key.decode() for r in recs}


def versions(custs):
    h.wait_for(lambda: h.outbox_len(svc.redis) == 0, "the outbox to drain", daemons=[d])
    evs = h.decode_events(h.read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
    got = {ev["customer_id"]: ev["policy_version"] for ev, _ in evs.values()
           if ev["customer_id"] in custs}
    return got


write_policy("2026.1")
d = h.Daemon(svc, "r", extra={"policy": policy}).start()
first = place("R1")
h.wait_for(lambda: len(versions(first)) == len(first), "first placements", daemons=[d])
assert set(versions(first).values()) == {"2026.1"}

write_policy("2026.2")
d.kill(signal.SIGHUP)
h.wait_for(lambda: "policy supply-tiers version 2026.2 applies" in d.log_text(), "the reload", daemons=[d])
second = place("R2")
h.wait_for(lambda: len(versions(second)) == len(second), "second placements", daemons=[d])
assert set(versions(second).values()) == {"2026.2"}, versions(second)
h.log("a valid policy applies to later decisions: events say version 2026.2")

write_policy("2026.3", broken=True)
d.kill(signal.SIGHUP)
h.wait_for(lambda: "policy refused, the running one stays" in d.log_text(), "the refusal", daemons=[d])
assert "policy.yaml:" in d.log_text().split("policy refused")[-1].splitlines()[0], "file:line named"
third = place("R3")
h.wait_for(lambda: len(versions(third)) == len(third), "third placements", daemons=[d])
assert set(versions(third).values()) == {"2026.2"}, versions(third)
h.log("an invalid policy is refused with file:line; decisions keep version 2026.2")
assert d.alive() and d.term() == 0
h.log("PASS")
