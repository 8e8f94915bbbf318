#!/usr/bin/python3
"""tierd on a Redis Cluster, through a failover and a reshard (docs/state.md,
"Redis Cluster").

One cluster of 3 masters and 3 replicas (scripts/services' cluster mode,
with a password) and a real broker:
  - start errors: a node that is no cluster node, a seed nobody listens on
    and a wrong password each stop tierd at once with a clear error, and
    nothing is written anywhere;
  - 3 tierd instances drain N orders (re-sent orders, returns, month
    boundaries, bad records) streamed in over 8 partitions while
      * the master of one partition's slot is killed with SIGKILL: its
        replica is promoted and tierd goes on by itself (what the promoted
        replica missed is the "Redis went back in time" case), and
      * the slots of two other partitions are migrated to another master
        (ASK while their keys have moved, then MOVED);
  - the aggregates equal the independent recomputation, every customer's
    tier changes are numbered 1..n with no gap, and SIGTERM exits 0.
"""
import os
import random
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
    assert svc.redis_env["TIERD_REDIS_PASSWORD"] not in text, "%s: the password was logged" % name
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
assert cluster_keys() == 0, "a refused start must write nothing"
plain.kill()
plain.wait()

# ------------------------------------------------------------ the stream
rnd = random.Random(99)
recs = h.generate(N, 3000, seed=20261126)
want_state, want_dead = h.model(recs)
h.log("model: %d customer-months, %d dead letters" % (len(want_state), len(want_dead)))
producer = h.produce_in_background(svc.bootstrap, recs, seconds=40)

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

# The slots of two other partitions migrated to another master.
moved = rnd.sample([p for p in range(8) if p != victim], 2)
for p in moved:
    out = svc.cluster_verb("move-slot", "{orders.%d}" % p, env={"TIERD_SERVICES_ASK_SECONDS": "1"})
    h.log("partition %d: slot %s moved from node %s to node %s" % ((p,) + tuple(out.split())))
    before = offsets()
    h.wait_for(lambda: offsets()[p] > before[p] or not producer.is_alive(),
               "tierd to go on on partition %d on its new master" % p, timeout=120, daemons=daemons)

producer.join()
ends = h.end_offsets(svc.bootstrap, "orders")
h.wait_drained(svc, ends, timeout=600, daemons=daemons)
n_ev, rep_ev = h.check_tier_events(svc, want_state, daemons=daemons)
h.log("%d tier changes, gapless per customer (%d republished)" % (n_ev, rep_ev))
for d in daemons:
    assert d.term() == 0, "SIGTERM must stop tierd with status 0"
h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation: %d customer-months over 3 shards" % len(want_state))
rewinds = sum(d.log_text().count("lost writes") for d in daemons)
h.log("Redis went back in time %d times (a promoted replica missing writes)" % rewinds)
h.log("PASS")
