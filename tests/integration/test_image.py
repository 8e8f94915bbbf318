#!/usr/bin/python3
"""The container image, built and run (docker/README.md).

podman builds docker/Dockerfile from the repository (its build stage runs
the unit tests; the base image debian:bookworm-slim is made locally by
`scripts/setup --base-image`, as no image registry is reachable), in under
10 minutes.  The image then runs as compose.yaml runs its tierd service
(the same user, read-only root, no capabilities, no-new-privileges, the same
environment and the same mounted tierd.yaml), with the network of the host
so that it reaches this test's own Redis and broker on the loopback:
  - its HEALTHCHECK turns healthy;
  - a few thousand orders, with re-sends and bad records, drain through it,
    and Redis holds exactly what the harness recomputes, the dead-letter
    topic exactly the bad records with their reasons;
  - the image's tierctl reads the same state as the host's;
  - `podman stop` (SIGTERM, compose's grace period) ends it with status 0.
The container is removed on every exit, pass or fail; the image stays
tagged (localhost/tierd:test) as the cache of the next build, and the
previous build's image is removed once a new one exists.
"""
import json
import os
import subprocess
import sys
import time

import yaml

import harness as h

N = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
BUILD_LIMIT_S = 600  # the image must build from the repository in under 10 minutes
IMAGE = "localhost/tierd:test"
BUILD_STAGE = "localhost/tierd-build:test"  # tagged so its layers stay the cache
RUNC = "/usr/sbin/runc"

# podman on a machine without systemd as PID 1 (docker/containers.conf).
os.environ["CONTAINERS_CONF"] = os.path.join(h.ROOT, "docker", "containers.conf")


def podman(*args, check=True, capture=True, timeout=120):
    p = subprocess.run(["podman", *args], stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("podman %s: exit %d\n%s" % (" ".join(args), p.returncode,
                                                          (p.stderr or "")[-3000:]))
    return p


def image_id(ref):
    p = podman("image", "inspect", "--format", "{{.ID}}", ref, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def build(run_dir):
    """Builds both stages, each tagged, and returns the final image's id.
    The build's output goes to RUN_DIR/build.log (its tail on failure)."""
    t = time.time()  # from Debian packages to the image: the base counts too
    base = subprocess.run([os.path.join(h.ROOT, "scripts", "setup"), "--base-image"],
                          check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    h.log("base image %s present after %.0fs" % (base, time.time() - t))
    old = {image_id(IMAGE), image_id(BUILD_STAGE)} - {None}
    common = ["build", "--format", "docker",  # the OCI format has no HEALTHCHECK
              "--network=host", "--runtime", RUNC, "--pull=never",
              "--ignorefile", os.path.join(h.ROOT, "docker", "Dockerfile.dockerignore"),
              "-f", os.path.join(h.ROOT, "docker", "Dockerfile")]
    iid = os.path.join(run_dir, "image.id")
    logpath = os.path.join(run_dir, "build.log")
    with open(logpath, "w") as logf:
        for extra in (["--target", "build", "-t", BUILD_STAGE], ["-t", IMAGE, "--iidfile", iid]):
            p = subprocess.run(["podman", *common, *extra, h.ROOT], stdout=logf,
                               stderr=subprocess.STDOUT, timeout=BUILD_LIMIT_S + 60)
            if p.returncode != 0:
                with open(logpath) as f:
                    tail = f.read()[-4000:]
                raise AssertionError("podman build failed (exit %d); %s ends:\n%s" % (
                    p.returncode, logpath, tail))
    took = time.time() - t
    with open(iid) as f:
        new = f.read().strip().split(":")[-1]  # sha256:ID
    h.log("image %s (%s) built in %.0fs, base image included" % (IMAGE, new[:12], took))
    assert took < BUILD_LIMIT_S, "the image took %.0fs to build, more than %ds" % (
        took, BUILD_LIMIT_S)
    # The previous build's images, and the layers only they used; one still
    # in use (another run's container) stays.
    for ref in old - {new, image_id(BUILD_STAGE)}:
        podman("rmi", ref, check=False)
    return new


class Container:
    """One container of the image, named for this test run; removed by
    stop_all() whatever happens, after its log is saved in the run dir."""

    def __init__(self, svc, image, name):
        self.svc, self.image, self.name = svc, image, name
        self.logpath = os.path.join(svc.dir, "%s.log" % name)
        h._cleanups.append(self.remove)

    def start(self, service, http_port):
        """Runs the image as compose.yaml's SERVICE, with the broker, Redis
        and http.listen of this test (on the loopback, the host's network)."""
        env = dict(service.get("environment") or {})
        env.update({"TIERD_KAFKA_BOOTSTRAP_SERVERS": self.svc.bootstrap,
                    "TIERD_REDIS_HOST": "127.0.0.1",
                    "TIERD_REDIS_PORT": str(self.svc.redis_port),
                    "TIERD_HTTP_LISTEN": "127.0.0.1:%d" % http_port})
        # The image's HEALTHCHECK as built.  Without systemd podman cannot
        # run it on its interval (it says so, and starts the container):
        # the test runs it itself, with `podman healthcheck run`.
        args = ["run", "--detach", "--name", self.name, "--runtime", RUNC, "--network=host"]
        if service.get("user"):
            args += ["--user", str(service["user"])]
        if service.get("read_only"):
            args.append("--read-only")
        args += ["--cap-drop=%s" % c for c in service.get("cap_drop") or []]
        args += ["--security-opt=%s" % o for o in service.get("security_opt") or []]
        for v in service.get("volumes") or []:
            src, rest = v.split(":", 1)  # relative to docker/, as compose reads it
            args += ["--volume", "%s:%s" % (os.path.join(h.ROOT, "docker", src), rest)]
        for k, v in sorted(env.items()):
            args += ["--env", "%s=%s" % (k, v)]
        podman(*args, self.image)
        return self

    def inspect(self, fmt):
        return podman("inspect", "--format", fmt, self.name).stdout.strip()

    def alive(self):
        return self.inspect("{{.State.Running}}") == "true"

    def log_text(self):
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def healthy(self):
        """One run of the image's HEALTHCHECK; podman records its result."""
        return podman("healthcheck", "run", self.name, check=False).returncode == 0

    def stop(self, grace_s):
        """SIGTERM, as `podman stop` (and compose) sends it: the exit status."""
        podman("stop", "--time", str(grace_s), self.name, timeout=grace_s + 30)
        return int(self.inspect("{{.State.ExitCode}}"))

    def remove(self):
        if podman("container", "exists", self.name, check=False).returncode != 0:
            return
        with open(self.logpath, "w") as f:
            f.write(self.log_text())
        podman("rm", "--force", "--time", "10", self.name, check=False)
        h.log("container %s removed (its log: %s)" % (self.name, self.logpath))


svc = h.Services("image")
image = build(svc.dir)

with open(os.path.join(h.ROOT, "docker", "compose.yaml")) as f:
    compose = yaml.safe_load(f)
service = compose["services"]["tierd"]
grace_s = int(str(service.get("stop_grace_period", "60s")).rstrip("s"))

c = Container(svc, image, "tierd-image-test-%d" % os.getpid())
c.start(service, h.free_port())
h.wait_for(c.healthy, "the container's health check to pass", timeout=90, daemons=[c])
status = c.inspect("{{.State.Health.Status}}")
assert status == "healthy", "podman inspect says %r after a passing health check" % status
h.log("container %s healthy" % c.name)

# The image's configuration buckets months in UTC.
recs = h.generate(N, 300, seed=20261126, tz="UTC", bad_per_kind=2)
h.log("producing %d records" % len(recs))
h.produce(svc.bootstrap, "orders", recs)
ends = h.end_offsets(svc.bootstrap, "orders")
want_state, want_dead = h.model(recs, tz="UTC")
h.wait_drained(svc, ends, daemons=[c])

got = h.read_state(svc.redis)
h.compare_state(got, want_state)
h.log("aggregates equal the recomputation: %d customer-months" % len(want_state))
h.check_dead_letters(svc.bootstrap, recs, want_dead, allow_repeats=False)
h.log("dead-letter topic holds exactly the %d bad records" % len(want_dead))

# The operator's tool in the image, as `docker compose exec tierd tierctl`:
# it reads the same state as the host's tierctl.
p = podman("exec", c.name, "tierctl", "-c", "/etc/tierd/tierd.yaml", "dump", timeout=120)
assert [json.loads(l) for l in p.stdout.splitlines()] == h.dump(svc.redis), \
    "the image's tierctl dump differs from the host's"
h.log("the image's tierctl dump equals the host's")
assert c.healthy(), "still healthy after the drain"

code = c.stop(grace_s)
assert code == 0, "podman stop: tierd exited %d\n%s" % (code, c.log_text()[-3000:])
assert "stopped (clean)" in c.log_text(), c.log_text()[-3000:]
h.log("podman stop: tierd exited 0")
c.remove()
h.log("PASS")
