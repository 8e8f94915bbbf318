"""Integration harness: real Redis and a real KRaft broker, started by the
project's scripts/services, and the tierd binary under test.

Everything a test starts is stopped by stop_all(), which runs on normal exit,
on exceptions and on SIGTERM/SIGINT (CTest's timeout), so no server outlives
a failing test.

The expected state is recomputed here, independently of the C code, from the
orders the test produced: the input and aggregate rules of docs/behaviour.md
written again in
Python (zoneinfo for months, Python integers for sums).
"""
import atexit
import datetime as dt
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from zoneinfo import ZoneInfo

import avro.io
import avro.schema
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA = avro.schema.parse(open(os.path.join(ROOT, "schemas", "order.avsc")).read())
INT64_MAX = 2**63 - 1

_cleanups = []


def stop_all(*_):
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # keep stopping the rest
            print("cleanup:", e, file=sys.stderr)


_failed = []  # set when the test fails: its run directory is kept


def _on_exception(kind, value, tb):
    _failed.append(kind)
    sys.__excepthook__(kind, value, tb)


def _on_signal(sig, _frame):
    _failed.append(sig)
    stop_all()
    sys.exit(128 + sig)


sys.excepthook = _on_exception
atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


TOPICS = ("orders", "customer-profiles", "tier-changes", "quota-events", "dead-letter")


# The guard of a test's servers (_guard): it leaves the test's process
# tree (a CTest timeout kills the whole tree with SIGKILL, and no cleanup
# of the test runs), waits for the test's process to end, and then stops
# whatever still runs from the run directory.  After a normal stop,
# scripts/services finds nothing of its own there and does nothing.
_GUARD = """
import os, select, subprocess, sys
fd, script, run_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if os.fork():
    os._exit(0)
poll = select.poll()
poll.register(fd, select.POLLIN)
while not poll.poll():
    pass
if os.path.isdir(run_dir):
    subprocess.run([script, "stop", run_dir], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
"""


def _guard(script, run_dir):
    """Starts the guard of run_dir's servers: it stops them once this
    process has ended, however it ended."""
    fd = os.pidfd_open(os.getpid())
    try:
        subprocess.run([sys.executable, "-c", _GUARD, str(fd), script, run_dir], pass_fds=(fd,),
                       start_new_session=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    finally:
        os.close(fd)


class Services:
    """Redis and Kafka for one test, in their own run directory.

    kafka_proxy_port: the broker also advertises a PROXIED listener at this
    port (scripts/services, TIERD_SERVICES_KAFKA_PROXY_PORT); its real port is
    self.ports["KAFKA_PROXIED_PORT"], for a proxy to forward to.
    topic_config: {topic: {config: value}} set on the topics once made (for
    example a larger max.message.bytes on orders).
    sasl_ssl: the broker also has a SASL_SSL listener (SCRAM-SHA-512) at
    self.sasl_bootstrap, its certificate signed by self.ca (a CA made for
    this run); users come from kafka_user()."""

    def __init__(self, name, kafka_proxy_port=None, topic_config=None, sasl_ssl=False,
                 redis_cluster=False):
        """redis_cluster: a Redis Cluster of 3 masters and 3 replicas, with a
        password made up here (scripts/services' cluster mode): self.redis is
        then a redis.cluster.RedisCluster, self.cluster the seeds tierd gets,
        and self.redis_env the variables tierd and tierctl need."""
        self.dir = tempfile.mkdtemp(prefix="tierd-%s-" % name)
        self.script = os.path.join(ROOT, "scripts", "services")
        _cleanups.append(self.stop)
        _guard(self.script, self.dir)
        t = time.time()
        env = dict(os.environ)
        if kafka_proxy_port:
            env["TIERD_SERVICES_KAFKA_PROXY_PORT"] = str(kafka_proxy_port)
        self.cluster, self.redis_env = None, {}
        if redis_cluster:
            env["TIERD_SERVICES_REDIS_CLUSTER"] = "1"
            env["TIERD_SERVICES_REDIS_PASSWORD"] = "t%x" % random.SystemRandom().getrandbits(64)
        if sasl_ssl:
            env["TIERD_SERVICES_KAFKA_SASL_SSL"] = "1"
        out = subprocess.run([self.script, "start", self.dir], check=True,
                             stdout=subprocess.PIPE, text=True, env=env).stdout
        self.env = dict(l.split("=", 1) for l in out.split() if "=" in l)
        with open(os.path.join(self.dir, "ports")) as f:
            self.ports = dict(l.strip().split("=", 1) for l in f if "=" in l)
        self.bootstrap = self.env["TIERD_KAFKA_BOOTSTRAP_SERVERS"]
        if redis_cluster:
            self.cluster = self.env["TIERD_REDIS_CLUSTER"].split(",")
            self.redis_env = {"TIERD_REDIS_PASSWORD": self.env["TIERD_REDIS_PASSWORD"]}
            self.redis_port = int(self.cluster[0].split(":")[1])
        else:
            self.redis_port = int(self.env["TIERD_REDIS_PORT"])
        if sasl_ssl:
            self.sasl_bootstrap = "127.0.0.1:%s" % self.ports["KAFKA_SASL_SSL_PORT"]
            self.ca = os.path.join(self.dir, "tls", "ca.pem")
        log("services up in %.1fs: kafka %s, redis %s" % (
            time.time() - t, self.bootstrap, ",".join(self.cluster or [str(self.redis_port)])))
        subprocess.run([os.path.join(ROOT, "scripts", "topics"), "--bootstrap", self.bootstrap,
                        "--partitions", "8"], check=True, stdout=subprocess.DEVNULL)
        if topic_config:
            set_topic_config(self.bootstrap, topic_config)
        wait_topics_ready(self.bootstrap, TOPICS, 8)
        self.redis = self.connect_redis()

    def connect_redis(self):
        if not self.cluster:
            return redis.Redis(host="127.0.0.1", port=self.redis_port)
        return ClusterReader(self)

    def cluster_verb(self, verb, *args, env=None):
        """A scripts/services fault verb on the cluster; its stdout."""
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([self.script, verb, self.dir, *args], check=True,
                              stdout=subprocess.PIPE, text=True, env=e).stdout.strip()

    def restart_redis(self):
        subprocess.run([self.script, "restart-redis", self.dir], check=True, stdout=subprocess.DEVNULL)
        self.redis = redis.Redis(host="127.0.0.1", port=self.redis_port)

    def kafka_user(self, name, password):
        """A SCRAM-SHA-512 user the SASL_SSL listener accepts (the password
        goes on stdin, never on a command line)."""
        subprocess.run([self.script, "kafka-user", self.dir, name], check=True, text=True,
                       input=password + "\n", stdout=subprocess.DEVNULL)

    def redis_user(self, name, password, rules):
        """A Redis ACL user with exactly these rules (ACL SETUSER NAME reset
        on >PASSWORD RULES...)."""
        subprocess.run([self.script, "redis-user", self.dir, name, *rules], check=True,
                       text=True, input=password + "\n", stdout=subprocess.DEVNULL)

    def run(self, action, *flags):
        subprocess.run([self.script, action, self.dir, *flags], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        """Stops the servers; a passing test also removes its run directory
        (a failing one keeps it, logs and data, and says where)."""
        subprocess.run([self.script, "stop", self.dir], check=False, stdout=subprocess.DEVNULL)
        if _failed or os.environ.get("TIERD_KEEP_RUN_DIR"):
            print("run directory kept: %s" % self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class ClusterReader:
    """What the tests read from a cluster: each command on a key goes to the
    node that answers for it, following MOVED and ASK, and asking the
    running nodes again while a master fails over.  (redis-py 4.3's
    RedisCluster gives up with "cannot pickle" when a node it knew died.)"""

    def __init__(self, svc):
        self.svc, self.tierd_password = svc, svc.redis_env["TIERD_REDIS_PASSWORD"]
        self.conns, self.slot_port = {}, {}

    def _conn(self, port):
        if port not in self.conns:
            self.conns[port] = redis.Redis(host="127.0.0.1", port=port,
                                           password=self.tierd_password, socket_timeout=5)
        return self.conns[port]

    def live_ports(self):
        return [int(l.split()[1]) for l in self.svc.cluster_verb("cluster-nodes").splitlines()
                if "down" not in l.split()]

    def primaries(self):
        return [int(l.split()[1]) for l in self.svc.cluster_verb("cluster-nodes").splitlines()
                if l.split()[2] == "master"]

    def get_primaries(self):
        return [type("Node", (), {"host": "127.0.0.1", "port": p}) for p in self.primaries()]

    def execute(self, key, *args):
        key = key.encode() if isinstance(key, str) else key
        deadline = time.time() + 60
        port = self.slot_port.get(key) or self.live_ports()[0]
        asking = False
        while True:
            try:
                c = self._conn(port)
                if asking:
                    c.execute_command("ASKING")
                return c.execute_command(*args)
            except redis.exceptions.ResponseError as e:
                words = str(e).split()
                if words and words[0] in ("MOVED", "ASK"):
                    port, asking = int(words[2].rsplit(":", 1)[1]), words[0] == "ASK"
                    if not asking:
                        self.slot_port[key] = port
                    continue
                if not words or words[0] not in ("CLUSTERDOWN", "TRYAGAIN", "LOADING"):
                    raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                self.conns.pop(port, None)
                port = self.live_ports()[0]
            if time.time() > deadline:
                raise AssertionError("the cluster did not answer %s for 60 s" % (args,))
            time.sleep(0.1)

    def hget(self, key, field):
        return self.execute(key, "HGET", key, field)

    def xlen(self, key):
        return self.execute(key, "XLEN", key)

    def dbsize_all(self):
        return sum(self._conn(p).dbsize() for p in self.primaries())


def tierd_binary():
    b = os.environ.get("TIERD_BIN")
    if b:
        return b
    for cand in ("build/tierd", "build/daemon/tierd"):
        p = os.path.join(ROOT, cand)
        if os.path.exists(p):
            return p
    raise SystemExit("tierd binary not found: set TIERD_BIN")


def sanitizer_reports(text):
    """The lines of an ASan/UBSan/LSan report in a log (the sanitizer
    build of scripts/test)."""
    return [l for l in text.splitlines()
            if "runtime error:" in l or "ERROR: AddressSanitizer" in l or
            "ERROR: LeakSanitizer" in l]


class Daemon:
    """One tierd process with its own config file and log."""

    def __init__(self, svc, name, time_zone="Asia/Shanghai", extra=None, kafka_extra=None,
                 env=None):
        self.svc, self.name = svc, name
        self.env = dict(svc.redis_env)
        self.env.update(env or {})
        self.cfg = os.path.join(svc.dir, "%s.yaml" % name)
        self.logpath = os.path.join(svc.dir, "%s.log" % name)
        kafka = {"bootstrap.servers": svc.bootstrap, "group.id": "tierd-test",
                 "session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
        kafka.update(kafka_extra or {})
        lines = ["kafka:"] + ["  %s: \"%s\"" % kv for kv in kafka.items()]
        redis_lines = ["redis:", "  host: 127.0.0.1", "  port: %d" % svc.redis_port]
        if svc.cluster:
            redis_lines = ["redis:", "  cluster:"] + ["    - \"%s\"" % a for a in svc.cluster]
        lines += redis_lines + ["time_zone: %s" % time_zone, "currency: CNY", "window_months: 3",
                  "instance_id: %s" % name, "log_level: info"]
        extra = dict(extra or {})
        if "redis" in extra:  # a whole redis: section replaces the default
            lines = [l for l in lines if l not in redis_lines]
        if "http" not in extra:  # many daemons at once: each on a free port
            lines += ["http:", "  listen: \"127.0.0.1:0\""]
        for k, v in extra.items():
            lines.append("%s: %s" % (k, v))
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        _cleanups.append(self.kill)

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
        env.update(self.env)
        env = {k: v for k, v in env.items() if v is not None}  # None: not set
        self.logf = open(self.logpath, "a")
        self.proc = subprocess.Popen([tierd_binary(), "-c", self.cfg], stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                return self.proc.wait(timeout=60)
        return None

    def cpu_seconds(self):
        """User + system CPU time the process has used."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def term(self):
        """SIGTERM and the exit status (must be 0 for a clean stop).  A
        sanitizer build's reports in the log fail the test here: UBSan
        reports and goes on, so the exit status alone would not say."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        reports = sanitizer_reports(self.log_text())
        assert not reports, "%s: sanitizer reports: %s" % (self.name, reports[:5])
        return rc

    def http_port(self, timeout=30):
        """The port of /metrics, from the log line tierd writes at start."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log_text().splitlines():
                if "serving /metrics" in line:
                    return int(line.split(" on port ")[1].split()[0])
            if not self.alive():
                raise AssertionError("%s exited before serving /metrics" % self.name)
            time.sleep(0.1)
        raise AssertionError("%s never said where /metrics is" % self.name)

    def log_text(self):
        with open(self.logpath) as f:
            return f.read()


# ----------------------------------------------------------------- orders

def encode(order, confluent=False):
    buf = io.BytesIO()
    avro.io.DatumWriter(SCHEMA).write(order, avro.io.BinaryEncoder(buf))
    b = buf.getvalue()
    return (b"\x00" + (7).to_bytes(4, "big") + b) if confluent else b


def order(oid, cust, placed_ms, kind="SALE", lines=None, currency="CNY"):
    return {"order_id": oid, "customer_id": cust,
            "placed_at": dt.datetime.fromtimestamp(placed_ms / 1000, dt.timezone.utc),
            "kind": kind, "lines": lines if lines is not None else [], "currency": currency}


def now_ms():
    return int(time.time() * 1000)


class Rec:
    """A record to produce, and what the model says about it."""
    __slots__ = ("partition", "key", "value", "order", "expect", "offset")

    def __init__(self, partition, key, value, order=None, expect=None):
        self.partition, self.key, self.value = partition, key, value
        self.order, self.expect, self.offset = order, expect, None


def produce(bootstrap, topic, recs, config=None):
    """Produces in list order per partition; records each offset.  config:
    more producer properties (e.g. message.max.bytes for huge records)."""
    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 20, "queue.buffering.max.messages": 200000}
    conf.update(config or {})
    p = Producer(conf)

    def dr(err, msg, rec):
        if err:
            raise RuntimeError("produce failed: %s" % err)
        rec.offset = msg.offset()

    for r in recs:
        while True:
            try:
                p.produce(topic, value=r.value, key=r.key, partition=r.partition,
                          on_delivery=lambda e, m, rec=r: dr(e, m, rec))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    assert left == 0, "%d records not delivered" % left


# Errors a broker gives while a partition's leadership is still settling
# (right after a topic is made, or after a restart): asking again helps.
# KafkaError.retriable() is only set on errors librdkafka raised itself, and
# not on the ones a watermark query raises, so the codes are listed.
RETRIABLE = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
             KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.REQUEST_TIMED_OUT,
             KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
             KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.UNKNOWN_LEADER_EPOCH,
             KafkaError.FENCED_LEADER_EPOCH, KafkaError.OFFSET_NOT_AVAILABLE,
             KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
             KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC,
             KafkaError._WAIT_COORD, KafkaError._NOENT}


def kafka_retry(fn, what, timeout=60):
    """fn() until it does not raise a retriable Kafka error, for up to
    `timeout` seconds; any other error, or the last one, is raised."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is None or err.code() not in RETRIABLE or time.time() >= deadline:
                raise
            log("%s: %s; asking again" % (what, err.name()))
            time.sleep(0.2)


def wait_topics_ready(bootstrap, topics, partitions, timeout=60):
    """Until every partition of every topic has a leader in the metadata
    and that leader answers a watermark query: a leader in the metadata is
    not yet enough, the broker may still say NOT_LEADER_FOR_PARTITION for a
    moment after a topic is made."""
    deadline = time.time() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while True:
        md = kafka_retry(lambda: admin.list_topics(timeout=10), "metadata", timeout)
        pending = [t for t in topics
                   if t not in md.topics or md.topics[t].error is not None or
                   len(md.topics[t].partitions) < partitions or
                   any(p.leader < 0 or p.error is not None
                       for p in md.topics[t].partitions.values())]
        if not pending:
            break
        if time.time() >= deadline:
            raise AssertionError("topics without a leader after %ds: %s" % (timeout, pending))
        time.sleep(0.1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tierd-test-probe"})
    try:
        for t in topics:
            for i in range(partitions):
                kafka_retry(lambda: c.get_watermark_offsets(TopicPartition(t, i), timeout=10),
                            "watermarks of %s[%d]" % (t, i), max(1, deadline - time.time()))
    finally:
        c.close()


def set_topic_config(bootstrap, topic_config):
    """{topic: {name: value}}: sets these topic configurations (replacing
    any other dynamic ones, which tests' topics do not have) and waits
    until the broker reports them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = [ConfigResource(ConfigResource.Type.TOPIC, t, set_config=dict(c))
           for t, c in topic_config.items()]
    for r, fut in admin.alter_configs(res).items():
        kafka_retry(lambda: fut.result(30), "alter %s" % r)

    def applied():
        for t, c in topic_config.items():
            got = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t)])
            entries = list(got.values())[0].result(30)
            if any(entries[k].value != str(v) for k, v in c.items()):
                return False
        return True

    wait_for(applied, "topic configuration %s" % topic_config, timeout=30)


def end_offsets(bootstrap, topic, partitions=8):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tierd-test-probe"})
    out = {}
    try:
        for i in range(partitions):
            lo, hi = kafka_retry(lambda: c.get_watermark_offsets(TopicPartition(topic, i), timeout=10),
                                 "watermarks of %s[%d]" % (topic, i))
            out[i] = hi
    finally:
        c.close()
    return out


def wait_drained(svc, ends, timeout=300, daemons=()):
    """Waits until every partition's stored offset reaches the topic end."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = True
        for p, hi in ends.items():
            if hi == 0:
                continue
            try:
                v = svc.redis.hget("tierd:{orders.%d}:meta" % p, "offset")
            except redis.exceptions.ConnectionError:
                v = None
            if v is None or int(v) < hi:
                done = False
                break
        if done:
            return
        for d in daemons:
            assert d.alive(), "tierd %s died:\n%s" % (d.name, d.log_text()[-3000:])
        time.sleep(0.2)
    raise AssertionError("not drained after %ds" % timeout)


def read_dead_letters(bootstrap, topic="dead-letter", partitions=8):
    ends = end_offsets(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tierd-test-dlq-%d" % os.getpid(),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
    want = sum(ends.values())
    got = []
    deadline = time.time() + 60
    while len(got) < want and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        h = {k: (v.decode() if v is not None else None) for k, v in (m.headers() or [])}
        got.append((h, m.key(), m.value()))
    c.close()
    assert len(got) == want, "read %d of %d dead letters" % (len(got), want)
    return got


def tierctl_binary():
    """tierctl, built next to the tierd the tests run (TIERCTL_BIN overrides)."""
    return os.environ.get("TIERCTL_BIN") or os.path.join(
        os.path.dirname(tierd_binary()), "tierctl")


def dump(r, *args, rc=0, stderr_has=None):
    """`tierctl dump ARGS` against the Redis r talks to: its lines, parsed.
    Tests read the state through dump's documented format, never through
    Redis keys, so a new layout changes tierctl, not the tests.  Every line
    must parse, also of a dump that fails (rc 1); stderr_has: a text its
    stderr must hold."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERD_")}
    if hasattr(r, "get_primaries"):  # a cluster: its masters are the seeds
        seeds = ", ".join('"%s:%d"' % (n.host, n.port) for n in r.get_primaries())
        redis_conf = "redis:\n  cluster: [%s]\n" % seeds
        pw = getattr(r, "tierd_password", None)
        if pw:
            env["TIERD_REDIS_PASSWORD"] = pw
    else:
        kw = r.connection_pool.connection_kwargs
        redis_conf = "redis:\n  host: %s\n  port: %d\n" % (kw.get("host", "127.0.0.1"),
                                                          kw.get("port", 6379))
    fd, cfg = tempfile.mkstemp(prefix="tierctl-dump-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        # Kafka is never contacted by dump; the configuration requires it.
        f.write("kafka:\n  bootstrap.servers: \"127.0.0.1:9\"\n" + redis_conf)
    try:
        p = subprocess.run([tierctl_binary(), "-c", cfg, "dump", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=300)
    finally:
        os.unlink(cfg)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == rc, "tierctl dump %s: exit %d, want %d\n%s" % (
        " ".join(args), p.returncode, rc, err[-3000:])
    assert stderr_has is None or stderr_has in err, "tierctl dump %s: stderr lacks %r:\n%s" % (
        " ".join(args), stderr_has, err[-3000:])
    return [json.loads(l) for l in p.stdout.splitlines()]


def yyyymm(text):
    """202611 for "2026-11", as dump writes months."""
    y, m = text.split("-")
    return int(y) * 100 + int(m)


def read_state(r, errors="strict"):
    """Every aggregate in Redis, from `tierctl dump`:
    {(partition, yyyymm, customer): (qty, amount, orders, skus)} for each
    customer-month that counted an order (a month that only carries the tier
    it began with has applied 0).  errors is accepted for callers of the
    older reader: dump writes ids as JSON text, never raw bytes."""
    out = {}
    for o in dump(r):
        assert o["type"] != "error", o
        if o["type"] == "month" and o["applied"] > 0:
            key = (o["partition"], yyyymm(o["month"]), o["customer"])
            assert key not in out, "dump printed %s twice" % (key,)
            out[key] = (o["qty"], o["amount"], o["orders"], o["skus"])
    return out


# ------------------------------------------------------------------ model

MIN_PLACED_AT_MS = 946684800000  # min_placed_at_s's default, 2000-01-01T00:00:00Z


def _raw(s):
    """The bytes a string field stands for.  A test that wants bytes which
    are not UTF-8 writes them as bytes, or as a str holding surrogateescape
    code points (b"\\xff".decode("utf-8", "surrogateescape"))."""
    return s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")


def _ctrl(b):
    return any(c < 0x20 or c == 0x7F for c in b)


def _utf8(b):
    """Well-formed UTF-8, as utf8.c judges it: Python's strict decoder also
    refuses overlong forms, surrogates and code points above U+10FFFF."""
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def judge(o, key, now, skew_ms=86400000, currency="CNY", min_ms=MIN_PLACED_AT_MS):
    """The order rules (docs/behaviour.md, "Bad input") a single record breaks,
    or None; the first
    in validate.c's order when it breaks several."""
    ids = [_raw(o[f]) for f in ("order_id", "customer_id")]
    # The decoder refuses before validation sees the order: its pre-scan
    # counts the lines, then decode_copy bounds each string in field order.
    if len(o["lines"]) > 1000:
        return "TOO_MANY_LINES"
    for b in ids:
        if len(b) > 64:
            return "BAD_ID"
    for l in o["lines"]:
        if len(_raw(l["sku"])) > 64:
            return "BAD_SKU"
    if len(_raw(o["currency"])) > 3:
        return "BAD_CURRENCY"
    if any(b == b"" for b in ids):
        return "EMPTY_ID"
    for b in ids:
        if _ctrl(b):
            return "BAD_ID"
        if not _utf8(b):
            return "BAD_UTF8"
    if key is not None and key != b"":
        if not _utf8(key):
            return "BAD_UTF8"
        if key != ids[1]:
            return "KEY_MISMATCH"
    if not o["lines"]:
        return "NO_LINES"
    # Every line's own rules first, then the sums (validate_line, then
    # validate_sums).
    for l in o["lines"]:
        sku = _raw(l["sku"])
        if sku == b"" or _ctrl(sku):
            return "BAD_SKU"
        if not _utf8(sku):
            return "BAD_UTF8"
        if l["quantity"] <= 0:
            return "BAD_QUANTITY"
        if l["unit_price"] < 0:
            return "NEGATIVE_PRICE"
    q = a = 0
    for l in o["lines"]:
        q += l["quantity"]
        a += l["quantity"] * l["unit_price"]
        if l["quantity"] * l["unit_price"] > INT64_MAX or q > INT64_MAX or a > INT64_MAX:
            return "OVERFLOW"
    cur = _raw(o["currency"])
    if not _utf8(cur):
        return "BAD_UTF8"
    if cur != currency.encode():
        return "BAD_CURRENCY"
    placed = int(o["placed_at"].timestamp() * 1000)
    if placed < min_ms:
        return "BAD_PLACED_AT"
    if placed > now + skew_ms:
        return "FUTURE"
    return None


def month_index(ms, tz):
    d = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
    return d.year * 12 + d.month - 1


def model(recs, tz="Asia/Shanghai", window=3, now=None):
    """Applies recs (each partition in offset order) by docs/behaviour.md,
    returning (aggregates as read_state() returns them, {(partition,
    offset): reason}); model.duplicates counts the orders ignored as
    already applied."""
    now = now or now_ms()
    by_part = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        by_part.setdefault(r.partition, []).append(r)
    state, dead = {}, {}
    model.duplicates = 0
    for part, rs in by_part.items():
        cur, seen, agg = None, set(), {}
        for r in rs:
            if r.order is None:
                dead[(part, r.offset)] = r.expect  # not Avro at all
                continue
            why = judge(r.order, r.key, now)
            if why:
                dead[(part, r.offset)] = why
                continue
            o = r.order
            m = month_index(int(o["placed_at"].timestamp() * 1000), tz)
            if cur is not None and m < cur - window + 1:
                dead[(part, r.offset)] = "LATE"
                continue
            cur = m if cur is None else max(cur, m)
            ident = (o["customer_id"], o["order_id"])
            if ident in seen:
                model.duplicates += 1
                continue
            q = sum(l["quantity"] for l in o["lines"])
            a = sum(l["quantity"] * l["unit_price"] for l in o["lines"])
            e = agg.setdefault((m, o["customer_id"]), [0, 0, 0, set()])
            if o["kind"] == "SALE":
                if e[0] + q > INT64_MAX or e[1] + a > INT64_MAX:
                    dead[(part, r.offset)] = "OVERFLOW"
                    continue
                e[0] += q
                e[1] += a
                e[2] += 1
                e[3].update(l["sku"] for l in o["lines"])
            else:
                e[0] = max(0, e[0] - q)
                e[1] = max(0, e[1] - a)
            seen.add(ident)
        for (m, c), e in agg.items():
            if m >= cur - window:
                state[(part, (m // 12) * 100 + m % 12 + 1, c)] = (e[0], e[1], e[2], len(e[3]))
    return state, dead


def compare_state(got, want):
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]]
    assert not missing and not extra and not wrong, (
        "state differs: %d missing %s, %d extra %s, %d wrong %s" % (
            len(missing), missing[:5], len(extra), extra[:5], len(wrong), wrong[:5]))


# -------------------------------------------------------------- generation

CUSTOMER_PARTITION = {}


def partition_of(cust, partitions=8):
    # Co-partitioning by customer: a stable hash, as a producer would use.
    import zlib
    return zlib.crc32(cust.encode()) % partitions


def month_start_ms(m, tz):
    return int(dt.datetime(m // 12, m % 12 + 1, 1, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def generate(n_orders, n_customers, seed, tz="Asia/Shanghai", partitions=8, months=4,
             bad_per_kind=12, dup_ratio=0.01, confluent_ratio=0.1):
    """Orders spanning `months` calendar months up to now, each partition in
    rough time order with local disorder, plus exact re-sends (same order
    at a new offset) and every kind of bad record."""
    rnd = random.Random(seed)
    now = now_ms()
    cur = month_index(now, tz)
    t0 = month_start_ms(cur - months + 1, tz)
    t1 = now - 3600_000
    customers = ["C%05d-%s" % (i, rnd.choice("ZBCSYFQ")) for i in range(n_customers)]
    skus = ["SKU-%03d" % i for i in range(60)]
    recs = []
    times = sorted(rnd.randint(t0, t1) for _ in range(n_orders))
    for i, t in enumerate(times):
        # local disorder: up to ~2 days
        t = min(t1, max(t0, t + rnd.randint(-2 * 86400_000, 2 * 86400_000)))
        c = rnd.choice(customers)
        kind = "RETURN" if rnd.random() < 0.05 else "SALE"
        lines = [{"sku": rnd.choice(skus), "quantity": rnd.randint(1, 40),
                  "unit_price": rnd.randint(0, 60000)} for _ in range(rnd.randint(1, 5))]
        if kind == "RETURN":
            for l in lines:
                l["quantity"] = rnd.randint(1, 120)  # sometimes more than bought
        o = order("O%07d" % i, c, t, kind, lines)
        recs.append(Rec(partition_of(c, partitions), c.encode(),
                        encode(o, confluent=rnd.random() < confluent_ratio), o))
    # exact re-sends: same bytes, later offset
    for r in rnd.sample(recs, int(n_orders * dup_ratio)):
        recs.insert(min(len(recs), recs.index(r) + rnd.randint(1, 2000)),
                    Rec(r.partition, r.key, r.value, r.order))
    return interleave(recs, bad_records(rnd, customers, t0, t1, now, cur, tz, partitions,
                                        bad_per_kind), rnd)


def bad_records(rnd, customers, t0, t1, now, cur, tz, partitions, per_kind):
    """Records that each break exactly one rule, and the reason expected."""
    out = []

    def good(cust, t=None):
        return order("B%08d" % rnd.randrange(10**8), cust, t or rnd.randint(t0, t1), "SALE",
                     [{"sku": "SKU-BAD", "quantity": 2, "unit_price": 100}])

    kinds = {
        "NOT_AVRO_GARBAGE": lambda c: (None, bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 60)))),
        "NOT_AVRO_TRUNCATED": lambda c: (None, encode(good(c))[:-3]),
        "NOT_AVRO_TRAILING": lambda c: (None, encode(good(c)) + b"\x02"),
        "EMPTY_ID": lambda c: dict(good(c), order_id=""),
        "BAD_ID": lambda c: dict(good(c), order_id="X" * 65),
        "BAD_ID_CTRL": lambda c: dict(good(c), order_id="bad\nid"),
        "KEY_MISMATCH": lambda c: ("mismatch", dict(good(c), customer_id=c + "-other")),
        "NO_LINES": lambda c: dict(good(c), lines=[]),
        "TOO_MANY_LINES": lambda c: dict(good(c), lines=[{"sku": "S", "quantity": 1, "unit_price": 1}] * 1001),
        "BAD_SKU": lambda c: dict(good(c), lines=[{"sku": "", "quantity": 1, "unit_price": 1}]),
        "BAD_QUANTITY": lambda c: dict(good(c), lines=[{"sku": "S", "quantity": rnd.choice([0, -3]), "unit_price": 1}]),
        "NEGATIVE_PRICE": lambda c: dict(good(c), lines=[{"sku": "S", "quantity": 1, "unit_price": -5}]),
        "OVERFLOW": lambda c: dict(good(c), lines=[{"sku": "S", "quantity": 2**40, "unit_price": 2**30}]),
        "BAD_CURRENCY": lambda c: dict(good(c), currency="USD"),
        "FUTURE": lambda c: dict(good(c), placed_at=dt.datetime.fromtimestamp((now + 3 * 86400_000) / 1000, dt.timezone.utc)),
        "LATE": lambda c: dict(good(c), placed_at=dt.datetime.fromtimestamp((month_start_ms(cur - 5, tz) + 86400_000) / 1000, dt.timezone.utc)),
    }
    for kind, make in kinds.items():
        for _ in range(per_kind):
            c = rnd.choice(customers)
            made = make(c)
            p = partition_of(c, partitions)
            if isinstance(made, tuple) and made[0] is None:
                exp = "NOT_AVRO"
                out.append(Rec(p, c.encode(), made[1], None, exp))
            elif isinstance(made, tuple):
                out.append(Rec(p, c.encode(), encode(made[1]), made[1], kind))
            else:
                out.append(Rec(p, c.encode(), encode(made), made, kind.split("_CTRL")[0]))
    # A month-total overflow: two orders that are fine alone.
    whale = "WHALE-%d" % rnd.randrange(1000)
    for i in range(2):
        o = order("W%d" % i, whale, t1, "SALE", [{"sku": "BIG", "quantity": 2**62, "unit_price": 0}])
        out.append(Rec(partition_of(whale, partitions), whale.encode(), encode(o), o, "OVERFLOW" if i else None))
    rnd.shuffle(out)
    return out


def interleave(good, bad, rnd):
    """Bad records go after the first third of the stream, so LATE ones
    arrive when their partition's month has moved on."""
    res = list(good)
    for b in bad:
        res.insert(rnd.randint(len(res) // 2, len(res)), b)
    return res


def last_stats(log_text):
    """The counters of the daemon's last stats line."""
    line = [l for l in log_text.splitlines() if " stats: " in l][-1]
    return {k: v for k, v in (f.split("=", 1) for f in line.split(" stats: ")[1].split())}


def produce_in_background(bootstrap, recs, seconds):
    """Produces recs in chunks spread over about `seconds`, in a thread, so
    faults land while the stream flows.  join() the returned thread."""
    import threading

    chunks = max(1, int(seconds * 4))
    size = max(1, len(recs) // chunks + 1)

    def run():
        for i in range(0, len(recs), size):
            produce(bootstrap, "orders", recs[i:i + size])
            time.sleep(0.25)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def check_dead_letters(bootstrap, recs, want_dead, allow_repeats):
    """Every bad record is on the dead-letter topic with its reason.  After
    crashes a record may appear twice (published, then the crash came
    before the commit): consumers dedupe on the source coordinates."""
    seen, repeats = {}, 0
    for hdr, _key, _value in read_dead_letters(bootstrap):
        coord = (int(hdr["tierd.source.partition"]), int(hdr["tierd.source.offset"]))
        if coord in seen:
            repeats += 1
            assert allow_repeats, "dead letter %s published twice" % (coord,)
            assert seen[coord] == hdr["tierd.reason"]
        seen[coord] = hdr["tierd.reason"]
    assert seen == want_dead, "dead letters differ: missing %s, unexpected %s" % (
        sorted(set(want_dead) - set(seen))[:5], sorted(set(seen) - set(want_dead))[:5])
    return repeats


# ------------------------------------------------------------- decisions

def read_topic(bootstrap, topic, partitions=8):
    """Every record of a topic: [(key, value bytes)], each partition in order."""
    return [(k, v) for _, k, v, _, _ in read_records(bootstrap, topic, partitions)]


def decode_events(records, schema_file):
    """Decodes Avro event records with python3-avro against the .avsc:
    {event_id: (decoded, value bytes)}; a repeat must be byte-identical."""
    schema = avro.schema.parse(open(os.path.join(ROOT, "schemas", schema_file)).read())
    reader = avro.io.DatumReader(schema)
    out, repeats = {}, 0
    for key, value in records:
        ev = reader.read(avro.io.BinaryDecoder(io.BytesIO(value)))
        assert key.decode() == ev["customer_id"], "event key must be the customer id"
        if ev["event_id"] in out:
            repeats += 1
            assert out[ev["event_id"]][1] == value, "republished %s differs" % ev["event_id"]
        out[ev["event_id"]] = (ev, value)
    decode_events.repeats = repeats
    return out


def check_tier_events(svc, want_state, daemons=()):
    """Every decided tier change reached Kafka, whatever the test did to
    tierd: the outbox drains, each customer's tier changes are numbered
    1..n with no gap (a repeat must be byte-identical: decode_events), and
    every customer with an applied SALE was placed (it has event 1).
    Returns (distinct events, repeats)."""
    wait_for(lambda: outbox_len(svc.redis) == 0, "the outbox to drain", timeout=120,
             daemons=daemons)
    evs = decode_events(read_topic(svc.bootstrap, "tier-changes"), "tier_change.avsc")
    seqs = {}
    for ev, _ in evs.values():
        seqs.setdefault(ev["customer_id"], []).append(ev["sequence"])
    gaps = {c: sorted(s) for c, s in seqs.items() if sorted(s) != list(range(1, len(s) + 1))}
    assert not gaps, "tier-change sequences with gaps: %s" % list(gaps.items())[:5]
    placed = {c for (_p, _m, c), v in want_state.items() if v[2] > 0}
    missing = sorted(placed - set(seqs))
    assert not missing, "%d customers with orders have no tier change: %s" % (
        len(missing), missing[:5])
    return len(evs), decode_events.repeats


def outbox_ids(r, partitions=8):
    """Event ids waiting in the outboxes."""
    ids = set()
    for p in range(partitions):
        # An entry holds the events of one transaction: t, k, i, v repeated.
        # redis-py folds an entry's fields into a dict, losing repeats: read raw.
        conn = r.connection_pool.get_connection("XRANGE")
        try:
            conn.send_command("XRANGE", "tierd:{orders.%d}:outbox" % p, "-", "+")
            raw = conn.read_response()
        finally:
            r.connection_pool.release(conn)
        for _id, flat in raw:
            for j in range(0, len(flat), 8):
                assert flat[j + 4] == b"i"
                ids.add(flat[j + 5].decode())
    return ids


def outbox_len(r, partitions=8):
    return sum(r.xlen("tierd:{orders.%d}:outbox" % p) for p in range(partitions))


def wait_for(cond, what, timeout=60, daemons=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        for d in daemons:
            assert d.alive(), "tierd %s died:\n%s" % (d.name, d.log_text()[-3000:])
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


# ------------------------------------------------ events by id, Redis rollback

def read_records(bootstrap, topic, partitions=8):
    """Every record of a topic with its headers:
    [(headers {name: str}, key, value, partition, offset)], each partition in order."""
    ends = end_offsets(bootstrap, topic, partitions)
    want = sum(ends.values())
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tierd-test-rec-%d" % os.getpid(),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
    got, deadline = [], time.time() + 60
    while len(got) < want and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        hdr = {k: (v.decode() if v is not None else None) for k, v in (m.headers() or [])}
        got.append((hdr, m.key(), m.value(), m.partition(), m.offset()))
    c.close()
    assert len(got) == want, "read %d of %d records of %s" % (len(got), want, topic)
    return got


def group_events(records, schema_file):
    """Groups event records by their tierd.event_id header.  Returns
    (events {event_id: decoded first copy}, copies {event_id: [value bytes, ...]
    in topic order}, problems [str]): a header that disagrees with the
    event_id inside, or a key that is not the customer, is a problem."""
    schema = avro.schema.parse(open(os.path.join(ROOT, "schemas", schema_file)).read())
    reader = avro.io.DatumReader(schema)
    events, copies, problems = {}, {}, []
    for hdr, key, value, part, off in records:
        ev = reader.read(avro.io.BinaryDecoder(io.BytesIO(value)))
        eid = hdr.get("tierd.event_id")
        if eid != ev["event_id"]:
            problems.append("%s p%d@%d: header event_id %r, inside %r" % (schema_file, part, off,
                                                                        eid, ev["event_id"]))
            eid = ev["event_id"]
        if key is None or key.decode() != ev["customer_id"]:
            problems.append("%s p%d@%d: key %r is not the customer" % (schema_file, part, off, key))
        events.setdefault(eid, ev)
        copies.setdefault(eid, []).append(value)
    return events, copies, problems


def differing_copies(copies, schema_file):
    """[(event_id, {field: [values over the distinct copies]})] of the ids
    published with more than one distinct value."""
    schema = avro.schema.parse(open(os.path.join(ROOT, "schemas", schema_file)).read())
    reader = avro.io.DatumReader(schema)
    out = []
    for eid, vals in copies.items():
        distinct = list(dict.fromkeys(vals))
        if len(distinct) < 2:
            continue
        decoded = [reader.read(avro.io.BinaryDecoder(io.BytesIO(v))) for v in distinct]
        fields = {f: [d[f] for d in decoded] for f in decoded[0]
                  if any(d[f] != decoded[0][f] for d in decoded)}
        out.append((eid, fields))
    return out


def meta_field(svc, field, partitions=8):
    """{partition: int or None} of one field of every partition's meta hash."""
    pipe = svc.redis.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hget("tierd:{orders.%d}:meta" % p, field)
    return {p: (int(v) if v is not None else None) for p, v in enumerate(pipe.execute())}


def redis_snapshot(svc, dest):
    """Copies Redis' AOF directory to dest while Redis runs, with client
    writes paused for the copy so it ends at a transaction boundary."""
    src = os.path.join(svc.dir, "redis", "appendonlydir")
    svc.redis.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
    try:
        shutil.copytree(src, dest)
    finally:
        svc.redis.execute_command("CLIENT", "UNPAUSE")


def redis_restore(svc, snapshot):
    """Redis loses acknowledged writes: stopped (by its pid file), its AOF
    replaced by an older copy, started again on the same port."""
    svc.run("stop-redis")
    dst = os.path.join(svc.dir, "redis", "appendonlydir")
    shutil.rmtree(dst)
    shutil.copytree(snapshot, dst)
    svc.run("start-redis")
    svc.redis = redis.Redis(host="127.0.0.1", port=svc.redis_port)


# ------------------------------------------------- state formats 2, 3 and 4

STATE_FORMATS = (2, 3, 4)
TIERS = 17  # POLICY_TIERS_MAX + 1


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli, reflected), the state value's checksum."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC32C[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


class StateError(ValueError):
    pass


class _Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def u8(self):
        if self.i >= len(self.b):
            raise StateError("truncated at byte %d" % self.i)
        self.i += 1
        return self.b[self.i - 1]

    def uv(self):
        v, shift, n = 0, 0, 0
        while True:
            x = self.u8()
            n += 1
            if n > 10 or (n == 10 and x > 1):
                raise StateError("varint past 64 bits at byte %d" % self.i)
            if n > 1 and x == 0:
                raise StateError("overlong varint at byte %d" % self.i)
            v |= (x & 0x7F) << shift
            shift += 7
            if not x & 0x80:
                return v

    def sv(self):
        u = self.uv()
        return (u >> 1) ^ -(u & 1)

    def rice(self, n):
        """n SKU fingerprints, Rice-coded (formats 3 and 4): gaps, each its high
        part in unary (1s, then a 0) and its low k = 32 - bitlen(n)
        bits, least significant first; the last byte's spare bits 0."""
        k, bit, out, prev = 32 - n.bit_length(), self.i * 8, [], -1

        def get():
            nonlocal bit
            if bit >= len(self.b) * 8:
                raise StateError("truncated in a SKU set at byte %d" % (bit // 8))
            v = (self.b[bit // 8] >> (bit % 8)) & 1
            bit += 1
            return v
        for _ in range(n):
            q = 0
            while get():
                q += 1
            low = sum(get() << j for j in range(k))
            prev = prev + 1 + ((q << k) | low)
            if prev >= 1 << 32:
                raise StateError("a SKU fingerprint past 32 bits")
            out.append(prev)
        while bit % 8:
            if get():
                raise StateError("spare bits of a SKU set not 0")
        self.i = bit // 8
        return out

    def raw(self, n):
        if self.i + n > len(self.b):
            raise StateError("%d bytes wanted at byte %d, %d left" % (n, self.i, len(self.b) - self.i))
        self.i += n
        return self.b[self.i - n:self.i]


def decode_state(b, check_crc=True):
    """One customer's value (daemon/state.h, formats 2 to 4) as a dict:
    format/flags/tier/first_month/override_tier/seq/live_score_c/scale and
    months: [{month (year*12 + month-1), qty, amount, orders, tier, grade,
    qmask, skus: [u32], fps: [u64]}].  Raises StateError for anything the
    layout does not allow (the checksum too unless check_crc is false)."""
    r = _Reader(b)
    fmt = r.u8()
    if fmt not in STATE_FORMATS:
        raise StateError("format %d, not one of %s" % (fmt, STATE_FORMATS))
    if fmt == 2:
        s = {"flags": r.uv(), "tier": r.uv(), "first_month": r.sv(), "override_tier": r.uv(),
             "seq": r.uv(), "live_score_c": r.sv(), "scale": chr(r.u8())}
    else:
        mark = r.uv()
        s = {"flags": mark % 4, "scale": "X123"[mark // 4 % 4] if mark < 4 * 4 * TIERS else "?",
             "override_tier": mark // 16, "tier": r.uv(), "seq": r.uv(),
             "live_score_c": r.uv() - 1}
    s["format"] = fmt
    if s["flags"] & ~3:
        raise StateError("unknown flag bits %#x" % s["flags"])
    if s["scale"] not in "X123":
        raise StateError("scale %r" % s["scale"])
    s["months"] = []
    prev = None
    for k in range(r.uv()):
        m = r.sv() if k == 0 else prev + r.uv() + 1
        prev = m
        mo = {"month": m, "qty": r.uv(), "amount": r.uv(), "orders": r.uv()}
        if fmt == 2:
            mo.update(tier=r.uv(), grade=r.uv(), qmask=r.uv())
            mo["skus"] = [int.from_bytes(r.raw(4), "little") for _ in range(r.uv())]
        else:
            mark = r.uv()
            mo.update(tier=mark % TIERS, grade=mark // TIERS % 5, qmask=mark // TIERS // 5)
            n = r.uv()
            size = r.uv() if fmt == 4 else None  # format 4: the set's length first
            at = r.i
            mo["skus"] = r.rice(n)
            if size is not None and r.i - at != size:
                raise StateError("month %d: SKU set of %d bytes, %d stored" % (m, r.i - at, size))
        mo["fps"] = [int.from_bytes(r.raw(8), "little") for _ in range(r.uv())]
        for name in ("skus", "fps"):
            v = mo[name]
            if any(v[j] >= v[j + 1] for j in range(len(v) - 1)):
                raise StateError("month %d: %s not strictly ascending" % (m, name))
        s["months"].append(mo)
    if fmt >= 3:
        s["first_month"] = r.sv() + (s["months"][0]["month"] if s["months"] else 0)
    body = r.i
    crc = int.from_bytes(r.raw(4), "little")
    if r.i != len(b):
        raise StateError("%d trailing bytes" % (len(b) - r.i))
    if check_crc and crc != crc32c(b[:body]):
        raise StateError("checksum mismatch")
    return s




def _uv(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _sv(v):
    return _uv(v * 2 if v >= 0 else -v * 2 - 1)


def encode_state_v2(s):
    """A dict decode_state gives, written in format 2 (the layout the
    release before format 3 wrote): what a Redis of that release holds."""
    b = bytearray([2])
    b += _uv(s["flags"]) + _uv(s["tier"]) + _sv(s["first_month"]) + _uv(s["override_tier"])
    b += _uv(s["seq"]) + _sv(s["live_score_c"]) + s["scale"].encode() + _uv(len(s["months"]))
    prev = None
    for mo in s["months"]:
        b += _sv(mo["month"]) if prev is None else _uv(mo["month"] - prev - 1)
        prev = mo["month"]
        for f in ("qty", "amount", "orders", "tier", "grade", "qmask"):
            b += _uv(mo[f])
        b += _uv(len(mo["skus"])) + b"".join(x.to_bytes(4, "little") for x in mo["skus"])
        b += _uv(len(mo["fps"])) + b"".join(x.to_bytes(8, "little") for x in mo["fps"])
    return bytes(b) + crc32c(b).to_bytes(4, "little")


def state_v4_as_v3(b):
    """A format-4 value rewritten in format 3 (the layout the release
    before format 4 wrote): the same bytes without each month's SKU set
    length, resealed."""
    r, out = _Reader(b), bytearray([3])
    assert r.u8() == 4, "not a format-4 value"

    def copy(k=1):
        """k varints copied as they are; the last one's value."""
        for _ in range(k):
            at = r.i
            v = r.uv()
            out.extend(b[at:r.i])
        return v
    copy(4)
    for _ in range(copy()):  # nmonths
        copy(6)  # month, qty, amount, orders, mark, nskus
        out.extend(r.raw(r.uv()))  # the set, without its length
        out.extend(r.raw(8 * copy()))  # nfps, then the fingerprints
    copy()  # first_month
    return bytes(out) + crc32c(out).to_bytes(4, "little")


# ----------------------------------------------------------- network faults

def free_port():
    """A port free on 127.0.0.1 right now, below the ephemeral range
    (scripts/freeports, the same picker scripts/services uses)."""
    import runpy
    picker = runpy.run_path(os.path.join(ROOT, "scripts", "freeports"))
    return picker["free_ports"](1)[0]


def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path; (None, why) when
    nothing answers in time."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def metric(port, name):
    """The value of the unlabelled series `name` (or `name{labels}`, given
    whole) on tierd's /metrics."""
    status, body = http_get(port, "/metrics")
    assert status == 200, status
    m = re.search(r"^%s (\S+)$" % re.escape(name), body, re.M)
    assert m, "%s not in /metrics" % name
    return float(m.group(1))


def partition_metric(port, name):
    """{partition: value text} of a per-partition series on /metrics."""
    body = http_get(port, "/metrics")[1]
    return dict(re.findall(r"^%s\{partition=\"(\d+)\"\} (\S+)$" % re.escape(name), body,
                           re.M))


def make_again(svc, *topics, daemons=()):
    """Deletes the topics and makes them again (scripts/topics), empty."""
    admin = AdminClient({"bootstrap.servers": svc.bootstrap})
    for f in admin.delete_topics(list(topics), operation_timeout=30).values():
        f.result()
    wait_for(lambda: not set(topics) & set(admin.list_topics(timeout=10).topics),
             "%s to be gone" % ", ".join(topics), daemons=daemons)
    subprocess.run([os.path.join(ROOT, "scripts", "topics"), "--bootstrap", svc.bootstrap,
                    "--partitions", "8"], check=True, stdout=subprocess.DEVNULL)



def config_keys(binary=None):
    """The configuration keys the tierd under test knows (--help-config)."""
    out = subprocess.run([binary or tierd_binary(), "--help-config"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return {l.split()[0] for l in out.splitlines()[1:] if l.strip()}


def toxiproxy_server():
    """The Toxiproxy server scripts/setup built (it builds it if missing)."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "setup"), "--toxiproxy-path"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


class Toxiproxy:
    """A Toxiproxy server of this test's own, on a free loopback port, and a
    small client of its HTTP API: proxies, and toxics on them.  Stopped (by
    its pid) with everything else the test started."""

    def __init__(self, run_dir):
        server = toxiproxy_server()
        self.logpath = os.path.join(run_dir, "toxiproxy.log")
        self.proc = None
        _cleanups.append(self.stop)
        for attempt in range(5):  # the free port may be taken before we bind it
            self.port = free_port()
            self.logf = open(self.logpath, "a")
            self.proc = subprocess.Popen([server, "-host", "127.0.0.1", "-port", str(self.port)],
                                         stdout=self.logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.time() + 20
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    self._call("GET", "/version")
                    log("toxiproxy up on port %d" % self.port)
                    return
                except (urllib.error.URLError, OSError):
                    time.sleep(0.1)
            self.stop()
        raise AssertionError("toxiproxy did not start; see %s" % self.logpath)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def _call(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            is_json = "json" in (r.headers.get("Content-Type") or "")
        return json.loads(text) if is_json and text.strip() else text

    def create(self, name, upstream, listen="127.0.0.1:0"):
        """A proxy listening on `listen` (port 0: any free one); returns the
        port it listens on.  The upstream is only dialled per connection, so
        it may be a placeholder until update()."""
        p = self._call("POST", "/proxies", {"name": name, "listen": listen,
                                            "upstream": upstream, "enabled": True})
        return int(p["listen"].rsplit(":", 1)[1])

    def update(self, name, upstream, listen):
        """Points a proxy at another upstream (it listens again on `listen`)."""
        self._call("POST", "/proxies/%s" % name, {"listen": listen, "upstream": upstream,
                                                  "enabled": True})

    def delete(self, name):
        self._call("DELETE", "/proxies/%s" % name)

    def add_toxic(self, proxy, name, kind, stream, toxicity=1.0, **attributes):
        """stream: "upstream" (client to server) or "downstream" (replies)."""
        self._call("POST", "/proxies/%s/toxics" % proxy,
                   {"name": name, "type": kind, "stream": stream, "toxicity": toxicity,
                    "attributes": attributes})

    def remove_toxic(self, proxy, name):
        self._call("DELETE", "/proxies/%s/toxics/%s" % (proxy, name))

    def toxics(self, proxy):
        return [t["name"] for t in self._call("GET", "/proxies/%s/toxics" % proxy)]

    def cut(self, proxy, streams=("upstream", "downstream")):
        """A silent cut: the timeout toxic with timeout 0 drops every byte
        and never closes the connection, as a dead network looks."""
        for st in streams:
            self.add_toxic(proxy, "cut-" + st, "timeout", st, timeout=0)

    def restore(self, proxy):
        """Removes every toxic of the proxy (Toxiproxy closes the connections
        a timeout toxic held, as a peer's RST would once the path is back)."""
        for t in self.toxics(proxy):
            self.remove_toxic(proxy, t)


# ------------------------------------------------------------ raw records

def _avro_long(n):
    """Avro's zigzag varint of a 64-bit signed integer."""
    assert -2**63 <= n < 2**63
    z = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_bytes(b):
    return _avro_long(len(b)) + b


def encode_raw(order_id, customer_id, placed_ms, lines, kind=0, currency=b"CNY"):
    """An Order in plain Avro binary, written by hand so that it can hold
    what python3-avro refuses to write: any 64-bit placed_at (its datetime
    stops at years 1..9999) and strings that are not UTF-8.  Ids, skus and
    the currency are bytes; lines are (sku, quantity, unit_price); kind is
    the enum index (0 SALE, 1 RETURN)."""
    out = [_avro_bytes(order_id), _avro_bytes(customer_id), _avro_long(placed_ms),
           _avro_long(kind)]
    if lines:
        out.append(_avro_long(len(lines)))
        for sku, qty, price in lines:
            out += [_avro_bytes(sku), _avro_long(qty), _avro_long(price)]
    out.append(_avro_long(0))
    out.append(_avro_bytes(currency))
    return b"".join(out)
