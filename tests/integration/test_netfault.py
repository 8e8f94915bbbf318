#!/usr/bin/python3
"""A silent network between tierd and its servers (docs/operations.md, "Outages").

tierd reaches Redis and the broker only through Toxiproxy proxies (the
broker advertises a listener at the proxy's port: scripts/services,
TIERD_SERVICES_KAFKA_PROXY_PORT); the test's own producer, readers and Redis
client go direct.  While about 20 000 orders over 8 partitions stream in,
one scenario cuts the network mid-drain, while tierd works on a burst of
records (dead letters and decided events among them), with more records
produced during the cut:

  redis_cut      Redis silent both ways (timeout toxic, timeout 0: bytes
                 dropped, connection left open), 10 s
  redis_replies  Redis receives and runs the commands, its replies are lost
                 (downstream only), 10 s: commits that happened but look failed
  redis_flap     Redis cut and restored five times, 0.5 to 4 s each
  redis_midreply each connection to Redis closed after 100 003 bytes of
                 replies (limit_data toxic), 10 s: reads cut off in the
                 middle of a reply, a batch's state read above all (the
                 store builds those replies in an arena of its own)
  broker_cut     the broker silent both ways, 12 s (longer than the session)

Then, for every scenario:
  - tierd never hangs: the process stays up, /healthz answers 200 on every
    probe during the cut (the loop turns), /readyz says 503 while Redis is
    cut, and a Redis cut does not make it spin;
  - it recovers by itself within seconds of the cut ending: /readyz 200 and
    stored offsets moving again, no restart;
  - the aggregates equal harness.model()'s recomputation exactly, every bad
    record is dead-lettered, and every decided tier change is on its topic,
    numbered 1..n per customer with no gap, from the same process;
  - SIGTERM during a second cut of the same kind exits within the shutdown
    deadline (shutdown_timeout_ms 5000: within 8 s), and a new tierd then
    finishes the stream exactly.

usage: test_netfault.py SCENARIO [N]
"""
import signal
import sys
import threading
import time

import harness as h

SCENARIOS = ("redis_cut", "redis_replies", "redis_flap", "broker_cut", "redis_midreply")
if len(sys.argv) < 2 or sys.argv[1] not in SCENARIOS:
    raise SystemExit("usage: test_netfault.py {%s} [N]" % "|".join(SCENARIOS))
SCENARIO = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
TAIL = N // 10                # held back for the SIGTERM-during-a-cut phase
REDIS_TIMEOUT_MS = 2000       # redis.timeout_ms: a silent Redis is noticed after this
SHUTDOWN_MS = 5000            # shutdown_timeout_ms
EXIT_WITHIN_S = 8.0           # SIGTERM to exit, with the deadline above
# Recovery after the cut ends: one Redis timeout, the reconnect backoff's cap
# (5 s), and slack for the two shared cores.
RECOVER_S = REDIS_TIMEOUT_MS / 1000 + 5 + 5
# The broker: librdkafka reconnects at once (Toxiproxy closes the held
# connections when the cut ends), then the group is joined again.
RECOVER_BROKER_S = 20

kafka_proxy_port = h.free_port()
svc = h.Services("netfault-" + SCENARIO, kafka_proxy_port=kafka_proxy_port)
tox = h.Toxiproxy(svc.dir)
redis_port = tox.create("redis", "127.0.0.1:%d" % svc.redis_port)
tox.create("kafka", "127.0.0.1:%s" % svc.ports["KAFKA_PROXIED_PORT"],
           listen="127.0.0.1:%d" % kafka_proxy_port)
h.log("tierd reaches redis through :%d, kafka through :%d" % (redis_port, kafka_proxy_port))

known = h.config_keys()
extra = {"batch": "\n  max_orders: 500\n  max_ms: 50",
         "redis": "\n  host: 127.0.0.1\n  port: %d\n  timeout_ms: %d" % (redis_port,
                                                                      REDIS_TIMEOUT_MS)}
if "shutdown_timeout_ms" in known:
    extra["shutdown_timeout_ms"] = SHUTDOWN_MS
else:
    h.log("NOTE: this tierd has no shutdown_timeout_ms key; the SIGTERM deadline below "
          "still expects an exit within %.0f s" % EXIT_WITHIN_S)
kafka = {"bootstrap.servers": "127.0.0.1:%d" % kafka_proxy_port}


def new_daemon(name):
    return h.Daemon(svc, name, extra=extra, kafka_extra=kafka)


def offsets():
    """Each partition's stored offset, read directly (not through the proxy)."""
    return {p: int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset") or 0)
            for p in range(8)}


def fail(d, msg):
    raise AssertionError("%s\n--- end of %s's log:\n%s" % (msg, d.name, d.log_text()[-4000:]))


# What tierd must do while and after a fault (probes, recovery time, exit
# time) is checked as it happens but reported together at the end, so one
# broken promise does not hide the others; exactness fails at once.
problems = []


def check(ok, msg):
    if not ok:
        h.log("FAIL: " + msg)
        problems.append(msg)


class Prober:
    """Asks /healthz and /readyz every 0.25 s in a thread while a fault
    lasts; remembers (time, healthz, readyz) and the process's CPU time."""

    def __init__(self, d, port):
        self.d, self.port, self.samples = d, port, []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.time()
            hz = h.http_get(self.port, "/healthz", timeout=2)[0]
            rz = h.http_get(self.port, "/readyz", timeout=2)[0]
            self.samples.append((t, hz, rz))
            self.stop_ev.wait(0.25)

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=10)
        return self.samples


def cpu_ratio_between(d, t_from, t_to):
    """CPU seconds tierd used per wall second from t_from to t_to (waits)."""
    while time.time() < t_from:
        time.sleep(0.05)
    c0, w0 = d.cpu_seconds(), time.time()
    while time.time() < t_to:
        time.sleep(0.05)
    return (d.cpu_seconds() - c0) / max(0.1, time.time() - w0)


def hold_cut(d, cut, seconds, cpu_check):
    """Applies `cut`, keeps it `seconds`, restores.  Returns (the time the
    cut ended, the CPU ratio over its last part or None)."""
    cut()
    t0 = time.time()
    ratio = None
    if cpu_check and seconds >= 6:
        # From 3 s in: by then a Redis call in flight has timed out and
        # tierd is waiting for the store, which must not cost a core.
        ratio = cpu_ratio_between(d, t0 + 3, t0 + seconds)
    while time.time() < t0 + seconds:
        assert d.alive(), fail(d, "tierd died during the cut")
        time.sleep(0.1)
    return t0, ratio


def cut_redis_both():
    tox.cut("redis")


def cut_redis_replies():
    tox.cut("redis", streams=("downstream",))


def cut_redis_midreply():
    tox.add_toxic("redis", "midreply", "limit_data", "downstream", bytes=100_003)


def cut_broker():
    tox.cut("kafka")


def restore_all():
    tox.restore("redis")
    tox.restore("kafka")


def wait_recovered(d, port, base, ends_at_cut, t_end, limit, what):
    """Until tierd is ready again and has stored offsets beyond `base`
    (and, for the broker, beyond what was on the topic when the cut began,
    which it can only have fetched after the cut): seconds after t_end.
    Later than `limit` is a problem; no recovery in 120 s fails at once."""
    def done():
        o = offsets()
        moved = sum(o.values()) > sum(base.values())
        if ends_at_cut is not None:
            moved = moved and any(o[p] > ends_at_cut[p] for p in o)
        return moved and h.http_get(port, "/readyz", timeout=2)[0] == 200

    deadline = t_end + max(limit, 120)
    while time.time() < deadline:
        if not d.alive():
            fail(d, "tierd died after %s" % what)
        if done():
            took = time.time() - t_end
            h.log("recovered %.1f s after %s ended" % (took, what))
            check(took <= limit, "recovery took %.1f s after %s ended, more than %.0f s" % (
                took, what, limit))
            return took
        time.sleep(0.1)
    fail(d, "no recovery within %.0f s of the end of %s: offsets %s (at the end of the cut %s), "
         "/readyz %s" % (deadline - t_end, what, offsets(), base,
                         h.http_get(port, "/readyz", timeout=2)))


# --------------------------------------------------------------- the stream

recs = h.generate(N + TAIL, 800, seed=8080 + SCENARIOS.index(SCENARIO), bad_per_kind=3)
main, tail = recs[:-TAIL], recs[-TAIL:]
d = new_daemon("nf").start()
port = d.http_port()
h.wait_for(lambda: h.http_get(port, "/readyz")[0] == 200, "tierd to be ready", daemons=[d])
# The stream in three parts: the first 45 % paced over 15 s; then 25 % at
# once, and the cut as soon as tierd is working on that burst, so that
# records it fetched, dead letters (generate() puts the bad records in the
# second half) and decided events are in its hands when the network goes;
# the rest paced over 20 s from the start of the cut, so records arrive that
# tierd can only fetch once the network is back.
a, b = len(main) * 45 // 100, len(main) * 70 // 100
producer = h.produce_in_background(svc.bootstrap, main[:a], seconds=15)
producer.join()
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), timeout=120, daemons=[d])
before_burst = sum(offsets().values())
h.produce(svc.bootstrap, "orders", main[a:b])
ends_at_cut = h.end_offsets(svc.bootstrap, "orders")
deadline = time.time() + 60
while sum(offsets().values()) <= before_burst:  # closely: the burst takes tierd well under 1 s
    assert time.time() < deadline and d.alive(), fail(d, "tierd did not start on the burst")
    time.sleep(0.01)
h.log("mid-drain: %d of %d records stored, %d on the topic; cutting (%s)" % (
    sum(offsets().values()), len(main), sum(ends_at_cut.values()), SCENARIO))

base_at_cut = offsets()
if SCENARIO != "broker_cut":
    ends_at_cut = None
probe = Prober(d, port)
producer = h.produce_in_background(svc.bootstrap, main[b:], seconds=20)
cpu_ratio = None
if SCENARIO == "redis_flap":
    # (cut, then up) seconds: short and long cuts, some shorter than the
    # Redis timeout and some longer, some restores shorter than a backoff.
    t_first = None
    for cut_s, up_s in ((1.0, 2.0), (3.0, 1.0), (0.5, 3.0), (4.0, 0.5), (2.0, 2.0)):
        t_cut, _ = hold_cut(d, cut_redis_both, cut_s, False)
        t_first = t_first or t_cut
        base = offsets()
        tox.restore("redis")
        t_end = time.time()
        h.log("flap: cut %.1f s, up %.1f s" % (cut_s, up_s))
        time.sleep(up_s)  # the fault's shape, not a wait for a condition
    t_cut = t_first
elif SCENARIO == "redis_midreply":
    t_cut, _ = hold_cut(d, cut_redis_midreply, 10, False)
    cuts = d.log_text().count("redis: ")
    base = offsets()
    tox.restore("redis")
    t_end = time.time()
    check(cuts > 0, "no Redis call failed while replies were cut off")
    h.log("replies cut off mid-stream: %d Redis errors logged" % cuts)
elif SCENARIO == "broker_cut":
    t_cut, _ = hold_cut(d, cut_broker, 12, False)
    base = offsets()
    tox.restore("kafka")
    t_end = time.time()
else:
    t_cut, cpu_ratio = hold_cut(d, cut_redis_both if SCENARIO == "redis_cut" else cut_redis_replies,
                                10, True)
    base = offsets()
    tox.restore("redis")
    t_end = time.time()
took = wait_recovered(d, port, base, ends_at_cut, t_end,
                      RECOVER_BROKER_S if SCENARIO == "broker_cut" else RECOVER_S, SCENARIO)
samples = probe.stop()

# During the fault: /healthz always 200; /readyz 503 while Redis was cut.
during = [(t, hz, rz) for t, hz, rz in samples if t_cut <= t <= t_end]
bad_health = [(round(t - t_cut, 1), hz) for t, hz, _ in during if hz != 200]
check(not bad_health, "/healthz not 200 on %d of %d probes during the fault (seconds into it, "
      "status): %s" % (len(bad_health), len(during), bad_health[:12]))
if not bad_health:
    h.log("/healthz 200 on all %d probes during the fault" % len(during))
if SCENARIO in ("redis_cut", "redis_replies"):
    not_ready = [t for t, _, rz in during if rz == 503]
    check(not_ready, "/readyz never said 503 while Redis was cut: %s" % [
        (round(t - t_cut, 1), rz) for t, _, rz in during])
    if not_ready:
        h.log("/readyz 503 from %.1f s into the cut" % (not_ready[0] - t_cut))
    check(cpu_ratio is not None and cpu_ratio < 0.5, "tierd used %.2f CPU seconds per second "
          "while Redis was cut: it must wait, not spin" % cpu_ratio)
    h.log("CPU while Redis was cut: %.2f s/s" % cpu_ratio)
if SCENARIO != "broker_cut":
    assert all(offsets()[p] >= base_at_cut[p] for p in range(8))

producer.join()
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(main)
h.wait_drained(svc, ends, timeout=240, daemons=[d])
n_ev, rep_ev = h.check_tier_events(svc, want_state, daemons=[d])
h.log("%d tier changes on the topic, gapless, from the same process (%d republished)" % (
    n_ev, rep_ev))
h.compare_state(h.read_state(svc.redis), want_state)
h.log("aggregates equal the recomputation after %s: %d customer-months" % (
    SCENARIO, len(want_state)))
repeats = h.check_dead_letters(svc.bootstrap, main, want_dead, allow_repeats=True)
h.log("all %d bad records dead-lettered (%d twice)" % (len(want_dead), repeats))
assert d.alive(), "the same tierd did all of this"

# ------------------------------------------------- SIGTERM during a cut

h.produce(svc.bootstrap, "orders", tail)
before = sum(offsets().values())
h.wait_for(lambda: sum(offsets().values()) > before, "tierd to consume the last orders",
           daemons=[d])
cut = {"redis_replies": cut_redis_replies, "broker_cut": cut_broker}.get(SCENARIO, cut_redis_both)
cut()
t_cut = time.time()
if SCENARIO == "broker_cut":
    # Stalled means: what tierd fetched before the cut is stored, nothing moves.
    last = [None]

    def stalled():
        o = offsets()
        same, last[0] = o == last[0], o
        return same and time.time() - t_cut >= 2

    h.wait_for(stalled, "tierd to stall behind the cut broker", daemons=[d])
else:
    h.wait_for(lambda: h.http_get(port, "/readyz")[0] == 503, "/readyz 503 in the second cut",
               daemons=[d])
h.log("second cut in place for %.1f s; SIGTERM" % (time.time() - t_cut))
t0 = time.time()
d.proc.send_signal(signal.SIGTERM)
try:
    rc = d.proc.wait(timeout=60)
except Exception:
    rc = None
took_exit = time.time() - t0
if rc is None:
    d.kill(signal.SIGKILL)
h.log("SIGTERM during the cut: %s after %.1f s" % (
    "exit status %d" % rc if rc is not None else "still running, killed -9", took_exit))
check(rc is not None and took_exit <= EXIT_WITHIN_S,
      "SIGTERM during a cut: tierd exited after %.1f s (status %s), not within %.0f s "
      "(shutdown_timeout_ms %d%s); its last lines:\n%s" % (
          took_exit, rc, EXIT_WITHIN_S, SHUTDOWN_MS,
          "" if "shutdown_timeout_ms" in known else ", a key this tierd does not know",
          "\n".join(d.log_text().splitlines()[-8:])))
restore_all()

d2 = new_daemon("nf2").start()
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs)
h.wait_drained(svc, ends, timeout=240, daemons=[d2])
h.check_tier_events(svc, want_state, daemons=[d2])
h.compare_state(h.read_state(svc.redis), want_state)
h.check_dead_letters(svc.bootstrap, recs, want_dead, allow_repeats=True)
h.log("a new tierd after the SIGTERM finished the stream exactly: %d customer-months" % len(
    want_state))
assert d2.term() == 0
assert not problems, "%d of tierd's promises broken during %s:\n- %s\n--- end of %s's log:\n%s" % (
    len(problems), SCENARIO, "\n- ".join(problems), d.name, d.log_text()[-3000:])
h.log("PASS")
