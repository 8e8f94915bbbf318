#!/usr/bin/python3
"""tierd on a Redis Cluster, through a failover and a reshard (docs/state.md,
"Redis Cluster").

One cluster of 3 masters and 3 replicas (scripts/services' cluster mode,
with a password) and a real broker:
  - start errors: a node that is no cluster node, a seed nobody listens on
    and a wrong password each stop tierd at once with a clear error, and
    nothing is written anywhere; so does one master that may evict keys
    (maxmemory with allkeys-lru), named;
  - 3 tierd instances drain N orders (re-sent orders, returns, month
    boundaries, bad records) streamed in over 8 partitions while
      * the master of one partition's slot is killed with SIGKILL: its
        replica is promoted and tierd goes on by itself (what the promoted
        replica missed is the "Redis went back in time" case), and
      * the slots of two other partitions are migrated to another master
        (ASK while their keys have moved, then MOVED): tierd's
        tierd_redis_redirects_total{kind="ask"} and {kind="moved"} rise;
  - a whole shard down (its master and replica killed): the partitions on
    it wait, each named with that node in /readyz and
    tierd_partition_redis_up, while the others drain; once the nodes are
    back, everything drains;
  - the aggregates equal the independent recomputation, every customer's
    tier changes are numbered 1..n with no gap, and SIGTERM exits 0;
  - tierctl on the cluster: show and explain agree with dump, an unknown
    customer exits 3; backtest (--keep) writes its scratch keys under
    {tierd-bt.<run>.<P>} tags, never in a live partition's slot, spread over
    the masters, and leaves the live state as it was; rebuild of the
    partition that was on the downed shard gives back its dump.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

import redis

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000

svc = h.Services("cluster", redis_cluster=True)


def cluster_keys():
    return svc.redis.dbsize_all()


def start_error(name, extra, env, needle):
    d = h.Daemon(svc, name, extra=extra, env=env).start()
    try:
        rc = d.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s: tierd did not stop at start:\n%s" % (name, d.log_text()[-2000:]))
    text = d.log_text()
    assert rc != 0, "%s: tierd exited 0:\n%s" % (name, text)
    assert needle in text, "%s: the error does not say %r:\n%s" % (name, needle, text[-2000:])
    for pw in {svc.redis_env["TIERD_REDIS_PASSWORD"], (env or {}).get("TIERD_REDIS_PASSWORD")}:
        assert not pw or pw not in text, "%s: a password was logged" % name
    h.log("%s: refused at start: %s" % (name, [l for l in text.splitlines() if needle in l][0][-160:]))


# ---------------------------------------------------------------- start errors
plain_port = h.free_port()
plain_dir = os.path.join(svc.dir, "plain")
os.makedirs(plain_dir)
plain = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(plain_port),
                          "--dir", plain_dir, "--save", "", "--appendonly", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
h._cleanups.append(lambda: (plain.kill(), plain.wait()))
plain_r = redis.Redis(host="127.0.0.1", port=plain_port)


def _ping(r):
    try:
        return r.ping()
    except redis.exceptions.ConnectionError:
        return False


h.wait_for(lambda: _ping(plain_r), "the plain redis-server")
start_error("not-a-cluster", {"redis": "\n  cluster: [\"127.0.0.1:%d\"]" % plain_port},
            {"TIERD_REDIS_PASSWORD": None}, "is not a cluster node")
assert plain_r.dbsize() == 0, "nothing may be written to the plain node"
dead_port = h.free_port()
start_error("unreachable-seed", {"redis": "\n  cluster: [\"127.0.0.1:%d\"]" % dead_port}, {},
            "no cluster node answered")
start_error("wrong-password", None, {"TIERD_REDIS_PASSWORD": "not-the-password"},
            "AUTH refused")

# ACL users on every node (docs/operations.md's rule and its cluster
# additions): without +asking the start-up check refuses at once, naming
# it; with the whole rule tierd starts and claims its partitions.
OPS = open(os.path.join(h.ROOT, "docs", "operations.md")).read()
acl_rule = re.search(r"^ACL SETUSER tierd on >PASSWORD (.+)$", OPS, re.M).group(1).split()
acl_more = re.search(r"add\s+`([^`]+)`\s+to both rules", OPS).group(1).split()
acl_pw = "acl%x" % random.SystemRandom().getrandbits(64)
svc.redis_user("tierd", acl_pw, acl_rule + acl_more)
svc.redis_user("tierd-noask", acl_pw, acl_rule + [r for r in acl_more if r != "+asking"])
seeds = "\n  cluster: [%s]" % ", ".join('"%s"' % a for a in svc.cluster)
start_error("acl-without-asking", {"redis": seeds + "\n  user: tierd-noask"},
            {"TIERD_REDIS_PASSWORD": acl_pw}, "refused: NOPERM")
assert "ASKING" in [l for l in open(os.path.join(svc.dir, "acl-without-asking.log"))
                    if "NOPERM" in l][0]
assert cluster_keys() == 0, "a refused start must write nothing"
d = h.Daemon(svc, "acl", extra={"redis": seeds + "\n  user: tierd"},
             env={"TIERD_REDIS_PASSWORD": acl_pw}).start()
h.wait_for(lambda: h.http_get(d.http_port(), "/readyz")[0] == 200,
           "tierd as the ACL user tierd to claim its partitions", daemons=[d])
assert d.term() == 0 and acl_pw not in d.log_text()
h.log("ACL users on every node: the documented rule and %s let tierd start; without +asking "
      "it is refused at start" % " ".join(acl_more))
plain.kill()
plain.wait()

# One master that may evict keys (a maxmemory with allkeys-lru): refused
# at start, naming that master; the others are as they were.
last = svc.redis.primaries()[-1]
lr = svc.redis._conn(last)
lr.config_set("maxmemory", "1gb")
lr.config_set("maxmemory-policy", "allkeys-lru")
start_error("evicting-master", None, {},
            "master 127.0.0.1:%d: redis: maxmemory 1073741824 bytes with maxmemory-policy "
            "allkeys-lru" % last)
lr.config_set("maxmemory-policy", "noeviction")
lr.config_set("maxmemory", "0")

# ------------------------------------------------------------ the stream
rnd = random.Random(99)
recs = h.generate(N, 3000, seed=20261126)
want_state, want_dead = h.model(recs)
h.log("model: %d customer-months, %d dead letters" % (len(want_state), len(want_dead)))
# Three parts, in order: most of the stream at first, a part that flows
# while slots migrate (so that tierd has requests in the ASK window), the
# rest while a shard is down.
cut_a, cut_b = int(N * 0.8), int(N * 0.9)
producer = h.produce_in_background(svc.bootstrap, recs[:cut_a], seconds=40)

# Small batches, so each fault lands between many reads and commits.
daemons = [h.Daemon(svc, "c%d" % i, extra={"batch": "\n  max_orders: 2000\n  max_ms: 20"}).start()
           for i in range(3)]


def offsets():
    out = {}
    for p in range(8):
        v = svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset")
        out[p] = int(v) if v else 0
    return out


h.wait_for(lambda: sum(offsets().values()) > N // 10, "tierd to be under way", timeout=120,
           daemons=daemons)

# A master killed with SIGKILL mid-stream; its replica takes over.
victim = rnd.randrange(8)
killed = svc.cluster_verb("kill-master", "{orders.%d}" % victim)
h.log("killed node %s, the master of partition %d's slot" % (killed, victim))
before = offsets()
h.wait_for(lambda: offsets()[victim] > before[victim],
           "the replica to take over and tierd to go on on partition %d" % victim, timeout=120,
           daemons=daemons)
h.log("partition %d goes on after the failover: offset %d -> %d" % (
    victim, before[victim], offsets()[victim]))

def scrape(d):
    """{(name, frozenset(labels)): value} of a tierd's /metrics."""
    status, body = h.http_get(d.http_port(), "/metrics")
    assert status == 200, (status, body)
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            labels = frozenset()
            if "{" in name:
                name, rest = name.split("{", 1)
                labels = frozenset(tuple(kv.split("=", 1)) for kv in
                                   rest.rstrip("}").replace('"', "").split(","))
            out[(name, labels)] = float(value)
    return out


def redirects(kind):
    return sum(scrape(d).get(("tierd_redis_redirects_total", frozenset({("kind", kind)})), 0)
               for d in daemons)


# The slots of two other partitions migrated to another master, while
# orders flow on every partition.
producer.join()
producer = h.produce_in_background(svc.bootstrap, recs[cut_a:cut_b], seconds=10)
asks, moveds = redirects("ask"), redirects("moved")
moved = rnd.sample([p for p in range(8) if p != victim], 2)
for p in moved:
    out = svc.cluster_verb("move-slot", "{orders.%d}" % p, env={"TIERD_SERVICES_ASK_SECONDS": "2"})
    h.log("partition %d: slot %s moved from node %s to node %s" % ((p,) + tuple(out.split())))
    before = offsets()
    h.wait_for(lambda: offsets()[p] > before[p], "tierd to go on on partition %d" % p,
               timeout=120, daemons=daemons)
# /metrics is a snapshot of the last second: wait for it to show both.
h.wait_for(lambda: redirects("ask") > asks and redirects("moved") > moveds,
           "tierd_redis_redirects_total to show an ASK and a MOVED followed", timeout=30,
           daemons=daemons)
asks, moveds = redirects("ask") - asks, redirects("moved") - moveds
h.log("tierd followed %d ASK and %d MOVED replies during the migrations" % (asks, moveds))
producer.join()


# A whole shard down: the partitions on it wait, named in /readyz and in
# /metrics with their node, while the others drain.
def slot_ports():
    """[(first slot, last slot, port)] of the masters, from scripts/services."""
    out = []
    for line in svc.cluster_verb("cluster-nodes").splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "master":
            for r in f[3:]:
                lo, _, hi = r.partition("-")
                out.append((int(lo), int(hi or lo), int(f[1])))
    return out


def master_port(p):
    key = "tierd:{orders.%d}:meta" % p
    slot = svc.redis._conn(svc.redis.live_ports()[0]).execute_command("CLUSTER", "KEYSLOT", key)
    return [port for lo, hi, port in slot_ports() if lo <= slot <= hi][0]


# A shard other than the one that failed over, so that it has a replica.
ports = {p: master_port(p) for p in range(8)}
shard = [p for p in range(8) if ports[p] != ports[victim]][0]
down_port = ports[shard]
waiting = sorted(p for p in range(8) if ports[p] == down_port)
live = [p for p in range(8) if p not in waiting]
down = svc.cluster_verb("kill-shard", "{orders.%d}" % shard).split()
down_node = "127.0.0.1:%d" % down_port
h.log("shard down: nodes %s (master %s, partitions %s)" % (down, down_node, waiting))
# The backtest below replays only the last 3000 orders: from t_last on.
cut_c = max(cut_b, N - 3000)
h.produce(svc.bootstrap, "orders", recs[cut_b:cut_c])
t_last = h.now_ms()
h.produce(svc.bootstrap, "orders", recs[cut_c:])
ends = h.end_offsets(svc.bootstrap, "orders")
want_lines = sorted("partition %d waits on redis %s" % (p, down_node) for p in waiting)


def readiness():
    lines, states = [], []
    for d in daemons:
        status, body = h.http_get(d.http_port(), "/readyz")
        lines += [l for l in body.splitlines() if l.startswith("partition ")]
        states.append((status, body.splitlines()[0] if body else ""))
    return sorted(lines), states


h.wait_for(lambda: readiness()[0] == want_lines, "/readyz to name %s" % want_lines, timeout=60,
           daemons=daemons)
h.wait_drained(svc, {p: ends[p] for p in live}, timeout=300, daemons=daemons)
lines, states = readiness()
assert lines == want_lines, (lines, want_lines)
# A tierd is ready while one of its partitions goes on.
assert (200, "ready") in states and all(
    st in ((200, "ready"), (503, "not ready")) for st in states), states
seen = set()
for d in daemons:
    for (name, labels), v in scrape(d).items():
        if name == "tierd_partition_redis_up":
            lab = dict(labels)
            seen.add(int(lab["partition"]))
            want = (0, down_node) if int(lab["partition"]) in waiting else (1, None)
            assert v == want[0] and (want[1] is None or lab["node"] == want[1]), (d.name, lab, v)
assert seen == set(range(8)), "tierd_partition_redis_up for partitions %s only" % sorted(seen)
h.log("shard down: partitions %s wait on %s in /readyz and /metrics, %s drained; %s" % (
    waiting, down_node, live, states))
for i in down:
    svc.cluster_verb("start-node", i)
h.wait_drained(svc, ends, timeout=600, daemons=daemons)
h.wait_for(lambda: readiness()[0] == [], "/readyz to name no partition", timeout=60,
           daemons=daemons)
h.log("shard back: every partition drained, none waiting")
n_ev, rep_ev = h.check_tier_events(svc, want_state, daemons=daemons)
h.log("%d tier changes, gapless per customer (%d republished)" % (n_ev, rep_ev))
for d in daemons:
    assert d.term() == 0, "SIGTERM must stop tierd with status 0"
h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation: %d customer-months over 3 shards" % len(want_state))

# ------------------------------------------------------------ tierctl
TIERCTL = h.tierctl_binary()


def tierctl(*args, rc=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
    env.update(svc.redis_env)
    p = subprocess.run([TIERCTL, "-c", daemons[0].cfg, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert p.returncode == rc, "tierctl %s: exit %d, want %d\n%s\n%s" % (
        " ".join(args), p.returncode, rc, p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout, p.stderr


full = h.dump(svc.redis)
cust = next(o for o in full if o["type"] == "customer" and o["tier"])
out, _ = tierctl("show", cust["customer"])
assert "customer:    %s (partition %d of orders)" % (cust["customer"], cust["partition"]) in out, out
assert re.search(r"^tier:\s+%d;" % cust["tier"], out, re.M), (cust, out)
out, _ = tierctl("explain", cust["customer"])
assert cust["customer"] in out, out
tierctl("show", "NO-SUCH-CUSTOMER", rc=3)
h.log("tierctl show/explain %s: tier %d, partition %d, as dump says; unknown customer exits 3"
      % (cust["customer"], cust["tier"], cust["partition"]))


def keyslot(key):
    return svc.redis._conn(svc.redis.live_ports()[0]).execute_command("CLUSTER", "KEYSLOT", key)


def scratch_keys():
    """{key: port} of every backtest scratch key, on every master."""
    return {k.decode(): port for port in svc.redis.primaries()
            for k in svc.redis._conn(port).scan_iter(match="tierctl-backtest-*", count=1000)}


live_slots = {keyslot("tierd:{orders.%d}:meta" % p) for p in range(8)}
out, err = tierctl("backtest", "--policy", os.path.join(h.ROOT, "config", "policies",
                                                        "abc-volume.yaml"),
                   "--from", str(t_last), "--keep")
assert "tier matrix" in out, out
scratch = scratch_keys()
tags = {}
for k, port in scratch.items():
    tag = k[k.index("{") + 1:k.index("}")]
    assert re.fullmatch(r"tierd-bt\.\d+-\d+-(configured|candidate)\.\d", tag), k
    tags.setdefault(tag, set()).add(keyslot(k))
assert len(tags) == 16, sorted(tags)  # two lanes, 8 partitions
assert all(len(v) == 1 for v in tags.values()), tags  # a scratch partition: one slot
assert not (set().union(*tags.values()) & live_slots), "scratch keys in a live slot"
assert len(set(scratch.values())) > 1, "scratch keys on one master only"
assert h.dump(svc.redis) == full, "backtest changed the live state"
for k in scratch:
    svc.redis.execute(k, "UNLINK", k)
h.log("backtest: %d scratch keys under %d tags of their own, on %d masters; live state unchanged"
      % (len(scratch), len(tags), len(set(scratch.values()))))

rb = waiting[0]
want_rb = [dict(o, epoch=None) if o["type"] == "partition" else o
           for o in h.dump(svc.redis, "--partition", str(rb))]
# Rebuilt from nothing: the partition's keys (one slot, so one master) go first.
rb_keys = ["tierd:{orders.%d}:%s" % (rb, k) for k in ("meta", "c", "outbox", "p")]
svc.redis.execute(rb_keys[0], "UNLINK", *rb_keys)
assert svc.redis.execute(rb_keys[0], "EXISTS", *rb_keys) == 0, "partition %d kept keys" % rb
out, _ = tierctl("rebuild", "--partition", str(rb))
assert "rebuilt orders [%d]" % rb in out, out
got_rb = [dict(o, epoch=None) if o["type"] == "partition" else o
          for o in h.dump(svc.redis, "--partition", str(rb))]
assert got_rb == want_rb, "rebuild of partition %d differs" % rb
h.log("rebuild of partition %d on the cluster: %d dump lines as before" % (rb, len(got_rb)))

rewinds = sum(d.log_text().count("lost writes") for d in daemons)
h.log("Redis went back in time %d times (a promoted replica missing writes)" % rewinds)
h.log("PASS")
