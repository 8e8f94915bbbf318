#!/usr/bin/python3
"""tierd against a broker that demands SASL_SSL and a Redis with ACL users
(docs/operations.md, "Security"), with its secrets in systemd-style
credential files ($CREDENTIALS_DIRECTORY: kafka-sasl-password,
redis-password).

The broker (scripts/services, TIERD_SERVICES_KAFKA_SASL_SSL=1) has a
SASL_SSL listener, SCRAM-SHA-512, with a certificate signed by a CA made for
this run, and an authorizer that lets a SASL user do nothing its ACLs do not
allow: tierd's and tierctl's ACLs are the `kafka-acls.sh` lines of
docs/operations.md, run as they are with Kafka's own tool; Redis has users
whose rules are read from the same page.  So the documented rights are the
tested ones.

- Refused at start, each with a clear message, a non-zero exit, within
  seconds, and nothing written to Redis: a wrong Kafka password; a CA that
  did not sign the broker's certificate; a Redis user with the documented
  rule less its write commands; a wrong Redis password; no ACL of tierd's
  on the orders topic.
- Works: with the documented rule and the right credentials, tierd drains
  orders (good and bad) over SASL_SSL, the aggregates equal the harness's
  model, the dead letters and every decided event reach their topics (the
  outbox drains).
- Its Write ACL on the dead-letter topic taken away: the partition of a new
  bad record waits, retrying with a log line that names the fix, while the
  other partitions drain; nothing is dead-lettered, lost or sent as a
  stand-in meanwhile; the ACL given back, that dead letter goes out as it
  was, exactly once, and the aggregates equal the model.
- Its Write ACL on tier-changes taken away: orders are still applied, the
  tier changes they decide wait in the outbox while the publisher's
  warning says why; the ACL given back, every one goes out, gapless.
- Its Read ACL on orders taken away while it runs: tierd goes on living,
  one warning (not one per fetch) names the topic and the right to
  grant, /metrics counts the errors, nothing is applied; given back, the
  orders produced meanwhile are applied once each.
- A dead-letter topic tierd may write to but nobody created: the partition
  of a bad record waits, the warning says to create the topic, the others
  drain; created, the dead letter goes out as it was.
- `tierctl events -e` over SASL_SSL, as Kafka user
  tierctl, prints as many events as the topics hold; as a user with the
  topics' ACL but not the group's it fails with the broker's reason
  (it crashed on that error once); `tierctl show` and `dump` work with the
  documented tierctl rule.
- No secret (the passwords, the wrong ones too, and the broker's keystore
  password) appears in any captured output: every tierd log, /metrics,
  `tierd --help-config`, `tierd --check-config`, tierctl's output, and the
  servers' own logs.
"""
import json
import os
import re
import secrets
import subprocess
import time

import harness as h
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

TIERCTL = h.tierctl_binary()
OPS = open(os.path.join(h.ROOT, "docs", "operations.md")).read()


def documented_rule(user):
    """The rules after `>PASSWORD` of docs/operations.md's
    `ACL SETUSER USER on >PASSWORD ...` line."""
    m = re.search(r"^ACL SETUSER %s on >PASSWORD (.+)$" % re.escape(user), OPS, re.M)
    assert m, "docs/operations.md has no ACL SETUSER %s line" % user
    return m.group(1).split()


def documented_kafka_acls():
    """The arguments of docs/operations.md's `kafka-acls.sh
    --bootstrap-server BROKER ...` lines."""
    lines = re.findall(r"^kafka-acls\.sh --bootstrap-server BROKER (.+)$", OPS, re.M)
    assert len(lines) >= 3, "docs/operations.md has no kafka-acls.sh lines"
    return [l.split() for l in lines]


KAFKA_LIBS = subprocess.run(["bash", "-c", '. "$1/scripts/kafka/env.sh" && echo "$KAFKA_LIBS"',
                            "-", h.ROOT], check=True, stdout=subprocess.PIPE,
                           text=True).stdout.strip()


def kafka_acls(args):
    """Kafka's own kafka-acls (kafka.admin.AclCommand, from the broker's
    jars) on the PLAINTEXT listener, a super user's."""
    subprocess.run(["java", "-cp", KAFKA_LIBS + "/*", "kafka.admin.AclCommand", "--bootstrap-server",
                    svc.bootstrap, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, text=True, timeout=120)


TIERD_RULE = documented_rule("tierd")
TIERCTL_RULE = documented_rule("tierctl")
WRITES = {"+hset", "+hdel", "+hincrby", "+xadd", "+xdel"}
assert WRITES <= set(TIERD_RULE), "the write commands tierd needs are in its rule"
READ_ONLY_RULE = [r for r in TIERD_RULE if r not in WRITES]


def secret(name):
    return "%s-%s" % (name, secrets.token_hex(12))


KAFKA_PW, REDIS_PW = secret("kafka"), secret("redis")
WRONG_KAFKA_PW, WRONG_REDIS_PW = secret("wrongkafka"), secret("wrongredis")
RO_PW, TIERCTL_PW = secret("readonly"), secret("tierctl")

svc = h.Services("security", sasl_ssl=True)
with open(os.path.join(svc.dir, "tls", "store.pass")) as f:
    STORE_PW = f.read().strip()
SECRETS = [KAFKA_PW, REDIS_PW, WRONG_KAFKA_PW, WRONG_REDIS_PW, RO_PW, TIERCTL_PW, STORE_PW]

svc.kafka_user("tierd", KAFKA_PW)
svc.kafka_user("tierctl", TIERCTL_PW)
svc.kafka_user("nogroup", TIERCTL_PW)
ACLS = documented_kafka_acls()
for args in ACLS:
    kafka_acls(args)
    if "User:tierctl" in args and "--topic" in args:  # the topics', not the group's
        kafka_acls([a.replace("User:tierctl", "User:nogroup") for a in args])
h.log("kafka ACLs as docs/operations.md gives them: %s" % "; ".join(" ".join(a) for a in ACLS))
svc.redis_user("tierd", REDIS_PW, TIERD_RULE)
svc.redis_user("tierd-ro", RO_PW, READ_ONLY_RULE)
svc.redis_user("tierctl", TIERCTL_PW, TIERCTL_RULE)
h.log("users: kafka tierd (SCRAM-SHA-512); redis tierd %s, tierd-ro without %s, tierctl %s" % (
    " ".join(TIERD_RULE), " ".join(sorted(WRITES)), " ".join(TIERCTL_RULE)))

# A CA of the test's own that signed nothing the broker shows.
other_ca = os.path.join(svc.dir, "other-ca.pem")
subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-keyout", os.path.join(svc.dir, "other-ca.key"),
                "-out", other_ca, "-days", "2", "-subj", "/CN=a CA tierd must not trust"],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def credentials(name, kafka_pw, redis_pw):
    """A credentials directory as systemd's LoadCredential= makes it."""
    d = os.path.join(svc.dir, "credentials-" + name)
    os.makedirs(d, mode=0o700)
    for f, v in (("kafka-sasl-password", kafka_pw), ("redis-password", redis_pw)):
        fd = os.open(os.path.join(d, f), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as out:
            out.write(v + "\n")
    return d


def kafka_conf(ca=None, user="tierd"):
    """SASL_SSL as user; tierd's own in the group its ACL names (the
    default group.id)."""
    conf = {"bootstrap.servers": svc.sasl_bootstrap, "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user,
            "ssl.ca.location": ca or svc.ca}
    if user == "tierd":
        conf["group.id"] = "tierd"
    return conf


def redis_section(user):
    return "\n  host: 127.0.0.1\n  port: %d\n  user: %s" % (svc.redis_port, user)


captured = []  # (what, text): everything tierd and tierctl said


def refused_at_start(name, creds, want, ca=None, redis_user="tierd"):
    """tierd exits non-zero within 20 s with `want` in its log, and Redis
    holds no key."""
    d = h.Daemon(svc, name, kafka_extra=kafka_conf(ca), extra={"redis": redis_section(redis_user)},
                 env={"CREDENTIALS_DIRECTORY": creds})
    t = time.time()
    d.start()
    try:
        rc = d.proc.wait(timeout=20)
    except Exception:
        raise AssertionError("%s: tierd still runs 20 s after its start:\n%s" % (
            name, d.log_text()[-3000:]))
    text = d.log_text()
    captured.append((name + " log", text))
    assert rc != 0, "%s: exit %d\n%s" % (name, rc, text)
    assert re.search(want, text), "%s: no %r in the log:\n%s" % (name, want, text[-3000:])
    assert svc.redis.dbsize() == 0, "%s: tierd wrote %s" % (name, svc.redis.keys("*")[:5])
    line = [l for l in text.splitlines() if re.search(want, l)][-1]
    h.log("%s: exit %d after %.1fs, nothing written: %s" % (name, rc, time.time() - t, line[:200]))


def tierd_sees(topic):
    """Whether the broker lets user tierd see the topic (Read and Write
    imply Describe): read-only, so probing writes nothing."""
    c = Consumer({k: v for k, v in kafka_conf().items() if k != "group.id"} |
                 {"group.id": "tierd-probe", "sasl.password": KAFKA_PW})
    try:
        return c.list_topics(topic, timeout=10).topics[topic].error is None
    finally:
        c.close()


good = credentials("good", KAFKA_PW, REDIS_PW)
refused_at_start("wrong-kafka-password", credentials("wrong-kafka", WRONG_KAFKA_PW, REDIS_PW),
                 r"error main: kafka: the broker refused tierd's login at start: .*SASL "
                 r"authentication error.*kafka-sasl-password")
refused_at_start("untrusted-ca", good,
                 r"error main: kafka: the TLS handshake with the broker failed at start: "
                 r".*certificate verify failed.*kafka\.ssl\.ca\.location", ca=other_ca)
refused_at_start("redis-read-only", credentials("read-only", KAFKA_PW, RO_PW),
                 r"error main: redis: HSET tierd:\{orders\.0\}:meta refused: NOPERM",
                 redis_user="tierd-ro")
refused_at_start("wrong-redis-password", credentials("wrong-redis", KAFKA_PW, WRONG_REDIS_PW),
                 r"error main: redis: AUTH refused: WRONGPASS")
# No ACL of tierd's on the orders topic: refused at start, naming it.
ORDERS_READ = ["--allow-principal", "User:tierd", "--operation", "Read", "--topic", "orders"]
kafka_acls(["--remove", "--force", *ORDERS_READ])
h.wait_for(lambda: not tierd_sees("orders"), "the broker to refuse tierd orders")
refused_at_start("no-acl-on-orders", good,
                 r"error main: kafka: the broker does not let tierd's user see topic orders "
                 r"\(topics\.orders\): grant it Read on the topic")
kafka_acls(["--add", *ORDERS_READ])
h.wait_for(lambda: tierd_sees("orders"), "the broker to show tierd orders again")

# ---------------------------------------------------------------- it works
recs = h.generate(4000, 200, seed=1101, bad_per_kind=1)
h.produce(svc.bootstrap, "orders", recs)
want_state, want_dead = h.model(recs)
ends = h.end_offsets(svc.bootstrap, "orders")
d = h.Daemon(svc, "good", kafka_extra=kafka_conf(), extra={"redis": redis_section("tierd")},
             env={"CREDENTIALS_DIRECTORY": good})
d.start()
port = d.http_port()
# The documented rule has +info: the start-up check read the eviction policy.
assert "cannot tell whether Redis may evict" not in d.log_text(), d.log_text()[-2000:]
h.wait_drained(svc, ends, daemons=[d])
h.compare_state(h.read_state(svc.redis), want_state)
h.check_dead_letters(svc.bootstrap, recs, want_dead, allow_repeats=False)
n_events, _ = h.check_tier_events(svc, want_state, daemons=[d])
quota = h.decode_events(h.read_topic(svc.bootstrap, "quota-events"), "quota_event.avsc")
assert n_events > 0 and len(quota) > 0, (n_events, len(quota))
h.log("drained over SASL_SSL: %d orders, %d dead letters, %d tier changes and %d quota events "
      "published" % (len(recs), len(want_dead), n_events, len(quota)))
status, metrics = h.http_get(port, "/metrics")
assert status == 200 and "tierd_orders_applied_total" in metrics, status
captured.append(("/metrics", metrics))

# ------------------------------- a dead-letter topic tierd may not write to
# tierd's Write ACL on dead-letter taken away: the partition of a bad record
# waits, retrying, its log naming the fix (nothing lost, no stand-in), while
# the other partitions go on; the ACL given back, the dead letter goes out
# as it was and the partition catches up.
DL_WRITE = ["--allow-principal", "User:tierd", "--operation", "Write", "--topic", "dead-letter"]
kafka_acls(["--remove", "--force", *DL_WRITE])
h.wait_for(lambda: not tierd_sees("dead-letter"), "the broker to refuse tierd dead-letter")
now = h.now_ms()


def new_orders(prefix, n, customers, line, garbage=None):
    """n SALE orders, placed in the last hour, of `customers` customers
    new to the run (prefix + number), order i with line(i); with garbage
    (bytes), that record too, in the middle of the first customer's
    partition.  Returns (the records, the garbage's Rec or None)."""
    recs_ = []
    for i in range(n):
        c = "%s%04d" % (prefix, i % customers)
        o = h.order("%s%07d" % (prefix, i), c, now - 3600_000 - i * 100, "SALE", [line(i)])
        recs_.append(h.Rec(h.partition_of(c), c.encode(), h.encode(o), o))
    if garbage is None:
        return recs_, None
    bad = h.Rec(recs_[0].partition, None, garbage, expect="NOT_AVRO")
    mine = [i for i, r in enumerate(recs_) if r.partition == bad.partition]
    recs_.insert(mine[len(mine) // 2], bad)
    return recs_, bad


more, garbage = new_orders("D", 1600, 80, lambda i: {
    "sku": "SKU-%d" % (i % 7), "quantity": 1 + i % 5, "unit_price": 100 + i}, b"\x07 not an order")
held = garbage.partition
h.produce(svc.bootstrap, "orders", more)
ends2 = h.end_offsets(svc.bootstrap, "orders")
dead_before = sum(h.end_offsets(svc.bootstrap, "dead-letter").values())


def stored(p):
    return int(svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset") or 0)


HINT = re.compile(r"dead-letter topic dead-letter: \d+ records unacknowledged, 1 failed: "
                  r"Broker: Topic authorization failed \(grant tierd's Kafka user Write on "
                  r"the topic")


def attempts():
    return len(HINT.findall(d.log_text()))


h.wait_for(lambda: attempts() > 0 and all(
    stored(p) >= e for p, e in ends2.items() if p != held), "the other partitions to drain "
    "and the refusal to be logged", timeout=120, daemons=[d])
# Retried, not dropped: still held after more attempts.
tries = attempts()
h.wait_for(lambda: attempts() >= tries + 2, "two more attempts", daemons=[d])
assert stored(held) <= garbage.offset, (stored(held), garbage.offset)
assert sum(h.end_offsets(svc.bootstrap, "dead-letter").values()) == dead_before
status, metrics = h.http_get(port, "/metrics")
for name in ("tierd_dead_letter_standins_total", "tierd_dead_letters_lost_total"):
    assert re.search(r"^%s 0$" % name, metrics, re.M), (name, metrics)
h.log("without Write on dead-letter: partitions %s drained, partition %d held at offset %d "
      "(the bad record at %d) after %d attempts, nothing lost or sent as a stand-in" % (
          sorted(p for p in ends2 if p != held), held, stored(held), garbage.offset,
          attempts()))

kafka_acls(["--add", *DL_WRITE])
h.wait_drained(svc, ends2, timeout=120, daemons=[d])
want_state, want_dead = h.model(recs + more)
h.compare_state(h.read_state(svc.redis), want_state)
h.check_dead_letters(svc.bootstrap, recs + more, want_dead, allow_repeats=False)
letter = [hdr for hdr, _k, v in h.read_dead_letters(svc.bootstrap)
          if int(hdr["tierd.source.partition"]) == held and
          int(hdr["tierd.source.offset"]) == garbage.offset]
assert len(letter) == 1 and "tierd.standin" not in letter[0], letter
h.log("Write given back: partition %d caught up, its dead letter went out as it was (%s)" % (
    held, letter[0]["tierd.reason"]))

# ------------------------------- a tier-changes topic tierd may not write to
# Orders of new customers (each placed: a tier change; each over its caps:
# quota events, in the same outbox entries) are still applied, the tier
# changes wait in the outbox, the publisher's warning says why, and the
# quota events go out once, not again at each retry; the ACL given back,
# every event goes out, gapless.
TC_WRITE = ["--allow-principal", "User:tierd", "--operation", "Write", "--topic", "tier-changes"]
kafka_acls(["--remove", "--force", *TC_WRITE])
h.wait_for(lambda: not tierd_sees("tier-changes"), "the broker to refuse tierd tier-changes")
tc_before = len(h.read_topic(svc.bootstrap, "tier-changes"))
q_before = len(h.read_topic(svc.bootstrap, "quota-events"))
newcomers, _ = new_orders("E", 400, 40,
                          lambda i: {"sku": "SKU-1", "quantity": 100, "unit_price": 500})
h.produce(svc.bootstrap, "orders", newcomers)
ends3 = h.end_offsets(svc.bootstrap, "orders")
h.wait_drained(svc, ends3, timeout=120, daemons=[d])
REFUSED = re.compile(r"warn +publish: orders outboxes: \d+ of \d+ outbox entries not acknowledged "
                     r"yet: tier-changes: Broker: Topic authorization failed \(grant tierd's "
                     r"Kafka user Write on the topic: docs/operations.md, Security\); will retry")
h.wait_for(lambda: len(REFUSED.findall(d.log_text())) >= 2, "the publisher's refusals",
           daemons=[d])
assert h.outbox_len(svc.redis) > 0
assert len(h.read_topic(svc.bootstrap, "tier-changes")) == tc_before
waiting = h.outbox_len(svc.redis)
q_during = len(h.read_topic(svc.bootstrap, "quota-events")) - q_before
assert q_during > 0, "no quota event went out while tier-changes refused tierd"
kafka_acls(["--add", *TC_WRITE])
want_state, want_dead = h.model(recs + more + newcomers)
h.compare_state(h.read_state(svc.redis), want_state)
n_events, _ = h.check_tier_events(svc, want_state, daemons=[d])
quota = h.decode_events(h.read_topic(svc.bootstrap, "quota-events"), "quota_event.avsc")
assert h.decode_events.repeats == 0, "%d quota events sent again" % h.decode_events.repeats
h.log("without Write on tier-changes: %d orders of 40 new customers applied, %d outbox entries "
      "waited, their %d quota events went out once; given back, the outbox drained: %d tier "
      "changes and %d quota events in all, gapless" % (
          len(newcomers), waiting, q_during, n_events, len(quota)))

# ------------------------------------------ an orders topic tierd may not read
# tierd's Read ACL on orders taken away while it runs: it keeps running,
# says once (not at every fetch) which topic refuses it and what to grant,
# and counts the errors in /metrics; nothing is applied meanwhile. Given
# back, the orders produced in between are applied, once each.
h.wait_drained(svc, h.end_offsets(svc.bootstrap, "orders"), timeout=120, daemons=[d])
kafka_acls(["--remove", "--force", *ORDERS_READ])
h.wait_for(lambda: not tierd_sees("orders"), "the broker to refuse tierd orders")
taken = time.time()
CANNOT = re.compile(r"warn +consumer: cannot read topic orders: .*Broker: Topic authorization "
                    r"failed \(grant tierd's Kafka user Read on the topic: docs/operations.md, "
                    r"Security\)")


def read_errors():
    m = re.search(r'^tierd_read_errors_total\{input="orders"\} (\d+)$',
                  h.http_get(port, "/metrics")[1], re.M)
    return int(m.group(1)) if m else 0


# A fetch the broker let in before the ACL went waits there for records
# (fetch.wait.max.ms) and may still return some: new orders are produced
# once tierd's own fetches are refused.
h.wait_for(lambda: read_errors() >= 1, "tierd's fetches to be refused", timeout=120,
           daemons=[d])
before = {p: stored(p) for p in range(8)}
unread, _ = new_orders("G", 800, 80, lambda i: {"sku": "SKU-3", "quantity": 2, "unit_price": 700})
h.produce(svc.bootstrap, "orders", unread)
ends5 = h.end_offsets(svc.bootstrap, "orders")
h.wait_for(lambda: CANNOT.search(d.log_text()) and read_errors() >= 8,
           "the refusal logged and counted", timeout=120, daemons=[d])
lines = len(CANNOT.findall(d.log_text()))
assert lines <= 1 + (time.time() - taken) // 30, "%d lines in %.0f s" % (
    lines, time.time() - taken)
assert h.http_get(port, "/healthz")[0] == 200
assert {p: stored(p) for p in range(8)} == before, ({p: stored(p) for p in range(8)}, before)
h.log("without Read on orders: %d read errors counted, %d log line(s) naming the fix, nothing "
      "applied" % (read_errors(), lines))
kafka_acls(["--add", *ORDERS_READ])
given = time.time()
h.wait_drained(svc, ends5, timeout=120, daemons=[d])
h.wait_for(lambda: re.search(r"info +consumer: topic orders reads again", d.log_text()),
           "the line that says orders reads again", daemons=[d])
want_state, _ = h.model(recs + more + newcomers + unread)
h.compare_state(h.read_state(svc.redis), want_state)
n_events, _ = h.check_tier_events(svc, want_state, daemons=[d])
quota = h.decode_events(h.read_topic(svc.bootstrap, "quota-events"), "quota_event.avsc")
assert h.decode_events.repeats == 0, "%d quota events sent again" % h.decode_events.repeats
h.log("Read given back: the %d orders produced meanwhile applied once each, %.1f s later" % (
    len(unread), time.time() - given))

# tierctl with its own user and credentials, Kafka over SASL_SSL too.
tierctl_creds = credentials("tierctl", TIERCTL_PW, TIERCTL_PW)
tierctl_cfg = os.path.join(svc.dir, "tierctl.yaml")
with open(tierctl_cfg, "w") as f:
    f.write("kafka:\n" +
            "".join("  %s: \"%s\"\n" % kv for kv in kafka_conf(user="tierctl").items()) +
            "redis:%s\ntime_zone: Asia/Shanghai\nwindow_months: 3\n" % redis_section("tierctl"))
env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
env["CREDENTIALS_DIRECTORY"] = tierctl_creds


def tierctl(*args, cfg=tierctl_cfg, want=0):
    p = subprocess.run([TIERCTL, "-c", cfg, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    captured.append(("tierctl " + " ".join(args), p.stdout + p.stderr))
    assert p.returncode == want, "tierctl %s: exit %d\n%s" % (" ".join(args), p.returncode,
                                                              p.stderr)
    return p.stdout if want == 0 else p.stderr


events = [json.loads(l) for l in tierctl("events", "-e").splitlines()]
assert len(events) == n_events + len(quota), (len(events), n_events, len(quota))
nogroup_cfg = os.path.join(svc.dir, "tierctl-nogroup.yaml")
with open(tierctl_cfg) as f, open(nogroup_cfg, "w") as out:
    out.write(f.read().replace('sasl.username: "tierctl"', 'sasl.username: "nogroup"'))
said = tierctl("events", "-e", cfg=nogroup_cfg, want=1)
assert "Group authorization failed" in said, said
customer = events[0]["customer_id"]
assert customer in tierctl("show", customer)
dumped = [json.loads(l) for l in tierctl("dump", "--partition", "0").splitlines()]
assert any(o["type"] == "customer" for o in dumped) and not any(
    o["type"] == "error" for o in dumped), dumped[:3]
h.log("tierctl as redis user tierctl: events -e over SASL_SSL (%d events), show, dump; "
      "without the group's ACL: %s" % (len(events), said.strip()[:120]))

for args in (["--help-config"], ["--check-config", "-c", d.cfg]):
    p = subprocess.run([h.tierd_binary(), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True,
                       env=dict(env, CREDENTIALS_DIRECTORY=good))
    assert p.returncode == 0, (args, p.stdout)
    captured.append(("tierd " + " ".join(args), p.stdout))

assert d.term() == 0
captured.append(("good log", d.log_text()))

# ------------------------------------ a dead-letter topic that does not exist
# tierd may write to it, but nobody made it (the broker creates no topic
# by itself): the partition of a bad record waits, the warning says to
# create the topic; once it exists, the dead letter goes out as it was.
DL2 = "dead-letter-2"
kafka_acls(["--add", "--allow-principal", "User:tierd", "--operation", "Write", "--topic", DL2])
late, garbage2 = new_orders("F", 400, 40,
                            lambda i: {"sku": "SKU-2", "quantity": 1, "unit_price": 300},
                            b"\x09 not an order either")
held = garbage2.partition
h.produce(svc.bootstrap, "orders", late)
ends4 = h.end_offsets(svc.bootstrap, "orders")
# librdkafka waits topic.metadata.propagation.max.ms (30 s) before it
# calls a topic missing; the test need not.
d2 = h.Daemon(svc, "missing-dead-letter",
              kafka_extra=kafka_conf() | {"topic.metadata.propagation.max.ms": "3000"},
              extra={"redis": redis_section("tierd"), "topics": "\n  dead_letter: " + DL2},
              env={"CREDENTIALS_DIRECTORY": good})
d2.start()
MISSING = re.compile(r"dead-letter topic %s: \d+ records unacknowledged, 1 failed: .*\(create "
                     r"the topic, or name one that exists in topics\.\*\)" % DL2)
h.wait_for(lambda: MISSING.search(d2.log_text()) and all(
    stored(p) >= e for p, e in ends4.items() if p != held), "the other partitions to drain "
    "and the missing topic to be named", timeout=120, daemons=[d2])
held_at = stored(held)
assert held_at <= garbage2.offset, (held_at, garbage2.offset)
admin = AdminClient({"bootstrap.servers": svc.bootstrap})  # kept until the result
admin.create_topics([NewTopic(DL2, 8, 1)])[DL2].result(30)
h.wait_topics_ready(svc.bootstrap, [DL2], 8)
h.wait_drained(svc, ends4, timeout=120, daemons=[d2])
got = [(hdr, v) for hdr, _k, v in h.read_dead_letters(svc.bootstrap, DL2)]
assert len(got) == 1 and got[0][0]["tierd.reason"] == "NOT_AVRO" and \
    int(got[0][0]["tierd.source.offset"]) == garbage2.offset and \
    "tierd.standin" not in got[0][0] and got[0][1] == garbage2.value, got
want_state, _ = h.model(recs + more + newcomers + unread + late)
h.compare_state(h.read_state(svc.redis), want_state)
assert d2.term() == 0
captured.append(("missing-dead-letter log", d2.log_text()))
h.log("dead-letter topic %s missing: partition %d held at offset %d (the bad record at %d), "
      "the others drained; created, the dead letter went out as it was" % (
          DL2, held, held_at, garbage2.offset))

# The servers' own logs too: the users were made without a password on any
# command line or log (the broker's keystore password is in its
# server.properties, as the broker needs it, and nowhere else).
for f in ("redis.log", "kafka/kafka.log", "kafka/kafka.out", "tls.log"):
    path = os.path.join(svc.dir, f)
    assert os.path.exists(path), "no %s to look into" % path
    with open(path, errors="replace") as log:
        captured.append(("services " + f, log.read()))

# ---------------------------------------------------------------- no secret
found = [(what, s[:6] + "...") for what, text in captured for s in SECRETS if s in text]
assert not found, "secrets in the output: %s" % found
for cfg in (d.cfg, tierctl_cfg):  # the configuration files name none either
    assert not any(s in open(cfg).read() for s in SECRETS), cfg
h.log("no secret in %d captured outputs (%d bytes): %s" % (
    len(captured), sum(len(t) for _, t in captured), ", ".join(w for w, _ in captured)))
h.log("PASS")
