#!/usr/bin/python3
"""SIGHUP (docs/configuration.md, "Reload"): a valid new policy applies to
later decisions, and the events name its version; an invalid one, or a
configuration file tierd would refuse at its next start, is logged with
file and line and the running policy is kept; tierd keeps running
throughout."""
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
# Window 6 in both the configuration and the policy: the configuration's
# window changes only at a restart, so a policy for 6 months would fail
# every decision of the running 3-month tierd.  It is refused.
with open(policy, "w") as f:
    f.write(policy_src.replace('version: "1"', 'version: "2026.4"')
            .replace("window_months: 3 ", "window_months: 6 ", 1))
cfg = open(d.cfg).read()
assert "window_months: 3" in cfg
with open(d.cfg, "w") as f:
    f.write(cfg.replace("window_months: 3", "window_months: 6"))
d.kill(signal.SIGHUP)
h.wait_for(lambda: "window_months changes only at a restart" in d.log_text(), "the refusal",
           daemons=[d])
assert "window_months changed: it applies at the next restart" in d.log_text() or \
    "policy refused" in d.log_text().split("window_months changes only")[0].splitlines()[-1]
fourth = place("R4")
h.wait_for(lambda: len(versions(fourth)) == len(fourth), "fourth placements", daemons=[d])
assert set(versions(fourth).values()) == {"2026.2"}, versions(fourth)
h.log("a policy for another window than the running one is refused; decisions go on")
# A file tierd would refuse at its next start (a time zone with no zoneinfo)
# is refused now, with its valid policy: nothing of it applies.
write_policy("2026.5")
with open(d.cfg, "w") as f:
    f.write(cfg.replace("time_zone: %s" % tz, "time_zone: Mars/Olympus_Mons"))
assert "Mars/Olympus_Mons" in open(d.cfg).read()
d.kill(signal.SIGHUP)
h.wait_for(lambda: "time_zone: time zone \"Mars/Olympus_Mons\" is unknown" in d.log_text(),
           "the refusal", daemons=[d])
assert "configuration refused, the running one stays" in \
    d.log_text().split("Mars/Olympus_Mons")[0].splitlines()[-1]
fifth = place("R5")
h.wait_for(lambda: len(versions(fifth)) == len(fifth), "fifth placements", daemons=[d])
assert set(versions(fifth).values()) == {"2026.2"}, versions(fifth)
h.log("a configuration with an unknown time zone is refused whole; decisions keep 2026.2")
assert d.alive() and d.term() == 0
h.log("PASS")
