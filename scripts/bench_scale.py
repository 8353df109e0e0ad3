"""The scale rows of scripts/bench (`--scale N[,N...]`, `--lifecycles N`).
Imported by scripts/bench; run on its own only to draw the plot
(`bench_scale.py plot DATA.json OUT.png`, by the python3 that has matplotlib).

Scale: idle containers (`--network none`: a Linux bridge takes at most
1024 ports, so a bridged run could never pass 1,023) started one after
another, one berth container and one bare `runc run -d` of a plain bundle
per round, in a random order, so both start against the same host (the
same mount table, the same number of processes). At each count: the
start latency (probe rounds: the same number at every count, each round a
berth start, a bare runc start and a berth start in a second root that
holds only SMALL containers, in a random order, each probe removed before
the next so the count stays N; the second root tells berth's own growth,
its code and its root's state, from the host's), berthd's RSS and open fds,
`berth ps --json` and `berth ps` (the table) latency, SIGKILL berthd +
restart until every container is listed running (each restart after 2 s of
quiet). After the largest count
the reference line's containers are deleted and, once the count of memory
cgroups has stopped falling (the kernel releasing theirs), `ps --json` and the restart are measured again with
berth's containers alone (the targets name N idle containers, not 2N), then every verb once and `rm -f` of all of them at
once (and it must leave none). The bench draws the four against the count as
one PNG (matplotlib) and names the limits this machine puts on the count.

Lifecycles: berthd's RSS, fd count and `ps` latency, then N complete
lifecycles (`run` of `true` attached until it exits, then `rm`), then the
same three again after the same quiet second.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import time

PLOT = os.path.join("bench", "scale.png")
# Seconds of quiet before each SIGKILL of berthd in the restarts: each is
# from a quiet state, not from the tail of the one before.
QUIET_S = 2
# Lifecycles before the steady-state "before" figure (see ScaleBench.lifecycles).
WARM = 100
# Probe rounds of the start latency at each count (quick: fewer), and the
# containers in the second berth root the probes also start in.
PROBES, PROBES_QUICK = 20, 10
SMALL = 10
# The second root's berthd bridge (10.47.x.x: helper flat's private range;
# its containers use --network none, the bridge is only berthd's set-up).
SMALL_BRIDGE = ["--bridge", "bs47", "--bridge-subnet", "10.47.3.0/24"]


def med(xs):
    return statistics.median(xs)


def quartiles(xs):
    """The first and third quartiles (the spread the start rows report)."""
    if len(xs) < 2:
        return (xs[0], xs[0])
    q = statistics.quantiles(xs, n=4)
    return (q[0], q[2])


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def meminfo_kb(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def soft_limit(pid, name):
    """The soft limit `name` ("Max open files", ...) of process `pid`."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith(name):
                v = line[len(name):].split()[0]
                return math.inf if v == "unlimited" else int(v)
    return math.inf


def read_int(path):
    try:
        v = open(path).read().split()[0]
    except OSError:
        return math.inf
    return math.inf if v == "max" else int(v)


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench: installing python3-matplotlib", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600",
                        "python3-matplotlib"], env=env, check=True, stdout=subprocess.DEVNULL)


def memory_cgroups():
    """The kernel's count of memory cgroups (/proc/cgroups), dying ones
    included."""
    with open("/proc/cgroups") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "memory":
                return int(parts[2])
    return 0


def settle_cgroups(limit_s=60):
    """Waits until the kernel has released the cgroups of containers just
    deleted (kernel workers do it after the delete returns, with CPU the
    next measurement would share): until the count of memory cgroups has
    not fallen for 2 s, at most `limit_s`. Returns the seconds waited."""
    t0 = time.monotonic()
    last, same_since = memory_cgroups(), time.monotonic()
    while time.monotonic() - t0 < limit_s:
        time.sleep(0.5)
        now = memory_cgroups()
        if now < last:
            last, same_since = now, time.monotonic()
        elif time.monotonic() - same_since >= 2:
            break
    return time.monotonic() - t0


class SmallRoot:
    """A second berthd with a root of its own holding SMALL idle containers,
    for the probes: a start there and one in the bench's main root, in the
    same round, meet the same host, so their ratio is what berth's own code
    and its root's state add as the main root grows."""

    def __init__(self, bench):
        self.b = bench
        self.root = os.path.join(bench.t, "small")
        berthd = os.path.join(os.path.dirname(bench.berth_bin), "berthd")
        log = open(os.path.join(bench.t, "berthd-small.log"), "a")
        self.berthd = subprocess.Popen([berthd, "--root", self.root, *SMALL_BRIDGE], stdout=log, stderr=log)
        bench.pids.append(self.berthd.pid)
        for _ in range(500):
            if self.berth("ps", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                return
            time.sleep(0.01)
        raise SystemExit("bench: the second berthd did not start")

    def berth(self, *args, **kw):
        return subprocess.run([self.b.berth_bin, "--root", self.root, *args], **kw)

    def start(self):
        """Starts one idle container; returns its ID."""
        return self.berth("run", "-d", "--network", "none", "--", "sleep", "1000000", check=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True).stdout.strip()

    def stop(self):
        """Removes its containers and stops its berthd cleanly (which
        removes its fixed rules; scripts/bench's clean-up does if not)."""
        ids = self.berth("ps", "-aq", stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        if ids:
            self.berth("rm", "-f", *ids, check=True, stdout=subprocess.DEVNULL)
        self.berthd.terminate()
        self.berthd.wait(timeout=30)


class ScaleBench:
    def __init__(self, bench, counts, root):
        self.b = bench
        self.counts = sorted(set(counts))
        self.root = root
        self.points = []        # one dict per count
        self.limits = []        # (what, limit, per container, max count, note)
        self.rm = None
        self.alone = None        # the largest count's figures without the reference line
        self.settled_s = 0       # waited for the reference line's cgroups to go
        self.verb_ms = []        # (verb, ms) at the largest count
        self.lifecycle = None

    # ---- helpers ------------------------------------------------------
    def timed_ms(self, reps, *args):
        """Median wall time of `berth ARGS` (less the harness's launch
        cost), and the last run's output."""
        ts, out = [], b""
        for _ in range(reps):
            t0 = time.perf_counter()
            out = self.b.berth(*args, stdout=subprocess.PIPE, check=True).stdout
            ts.append((time.perf_counter() - t0) * 1000 - self.b.launch_ms)
        return med(ts), out

    def ps_ms(self, reps, expect=None):
        """Median wall time of `berth ps --json`, and its last listing."""
        ms, out = self.timed_ms(reps, "ps", "--json")
        last = json.loads(out)
        if expect is not None and len(last) != expect:
            raise SystemExit(f"bench: ps --json listed {len(last)} containers, expected {expect}")
        return ms, last

    def table_ms(self, reps):
        """Median wall time of `berth ps` (the table)."""
        return self.timed_ms(reps, "ps")[0]

    def launch(self):
        if not self.b.launch_ms:
            t = []
            for _ in range(30):
                t0 = time.perf_counter()
                subprocess.run(["/bin/true"], check=True)
                t.append((time.perf_counter() - t0) * 1000)
            self.b.launch_ms = med(t)

    # ---- scale ----------------------------------------------------------
    def run(self):
        self.launch()
        b = self.b
        quick = b.quick
        small = SmallRoot(b)
        sleep_b = b.bundle("scale-sleep", ["/bin/sleep", "1000000"])
        runc_ids = []
        have = 0
        mem0 = meminfo_kb("MemAvailable")
        pids0 = len([p for p in os.listdir("/proc") if p.isdigit()])
        t_start = time.monotonic()
        for _ in range(SMALL):
            small.start()

        def runc_start(rid):
            subprocess.run(["runc", "--root", b.runc_root, "run", "-d", "--bundle", sleep_b, rid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)

        def fill(name, i):
            if name == "berth":
                b.berth("run", "-d", "--network", "none", "--", "sleep", "1000000", check=True,
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            else:
                rid = f"sc{os.getpid()}-{i}"
                runc_start(rid)
                runc_ids.append(rid)

        def probe(name):
            """One timed start (less the harness's launch cost); the
            container is removed (untimed) before the next probe."""
            t0 = time.perf_counter()
            if name == "berth":
                cid = b.berth("run", "-d", "--network", "none", "--", "sleep", "1000000", check=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True).stdout.strip()
            elif name == "small":
                cid = small.start()
            else:
                cid = f"probe{os.getpid()}"
                runc_start(cid)
            ms = (time.perf_counter() - t0) * 1000 - b.launch_ms
            if name == "berth":
                b.berth("rm", "-f", cid, check=True, stdout=subprocess.DEVNULL)
            elif name == "small":
                small.berth("rm", "-f", cid, check=True, stdout=subprocess.DEVNULL)
            else:
                subprocess.run(["runc", "--root", b.runc_root, "delete", "-f", cid], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return ms

        for n in self.counts:
            while have < n:
                for name in b.shuffled(["berth", "runc"]):
                    fill(name, have)
                have += 1
                if have % 500 == 0:
                    print(f"bench: scale: {have} of each running ({time.monotonic() - t_start:.0f}s)",
                          file=sys.stderr)
            time.sleep(1)
            times = {"berth": [], "runc": [], "small": []}
            for _ in range(PROBES_QUICK if quick else PROBES):
                for name in b.shuffled(list(times)):
                    times[name].append(probe(name))
            time.sleep(1)
            pid = b.berthd.pid
            ps, listed = self.ps_ms(3 if quick else 7, expect=n)
            table = self.table_ms(3 if quick else 7)
            running = sum(1 for c in listed if c["status"] == "running")
            if running != n:
                raise SystemExit(f"bench: {running} of {n} berth containers running")
            restarts = [b.berth_restart_time(n, QUIET_S) * 1000 for _ in range(1 if quick else 3)]
            time.sleep(1)
            pid = b.berthd.pid
            self.points.append(dict(
                n=n, berth_start=med(times["berth"]), runc_start=med(times["runc"]),
                small_start=med(times["small"]), start_spread=quartiles(times["berth"]),
                runc_spread=quartiles(times["runc"]), small_spread=quartiles(times["small"]),
                k=len(times["berth"]),
                rss_kb=rss_kb(pid), fds=fds(pid), ps_ms=ps, table_ms=table,
                restart_ms=med(restarts),
                restart_spread=(min(restarts), max(restarts)),
                ps_after_restart=self.ps_ms(3 if quick else 5, expect=n)[0],
                rss_after_restart_kb=rss_kb(pid),
                mem_used_kb=mem0 - meminfo_kb("MemAvailable"),
                pids=len([p for p in os.listdir("/proc") if p.isdigit()]) - pids0))
            p = self.points[-1]
            print(f"bench: scale {n}: start {p['berth_start']:.1f} ms (runc {p['runc_start']:.1f}, "
                  f"berth in a {SMALL}-container root {p['small_start']:.1f}), "
                  f"berthd RSS {p['rss_kb'] / 1024:.1f} MiB, {p['fds']} fds, ps --json {ps:.1f} ms, "
                  f"restart {p['restart_ms']:.0f} ms", file=sys.stderr)
        small.stop()
        self.find_limits(have)
        # The reference line's containers go before the berth-only figures:
        # the targets name N idle containers on this machine, and the rows
        # above ran with 2N (twice the processes and cgroups).
        t0 = time.perf_counter()
        for rid in runc_ids:
            subprocess.run(["runc", "--root", b.runc_root, "delete", "-f", rid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runc_rm_s = time.perf_counter() - t0
        self.settled_s = settle_cgroups()
        self.alone = self.measure_alone(have, quick)
        self.verbs(have)
        # rm -f of every container at once (the ids from ps -aq).
        ids = b.berth("ps", "-aq", stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        t0 = time.perf_counter()
        r = b.berth("rm", "-f", *ids, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rm_s = time.perf_counter() - t0
        left = len(b.berth("ps", "-aq", stdout=subprocess.PIPE, text=True, check=True).stdout.split())
        self.rm = dict(n=len(ids), s=rm_s, rc=r.returncode, left=left, err=r.stderr.strip()[:300],
                       runc_s=runc_rm_s)
        b.commands.append(("scale, berth", "one start", "berth run -d --network none -- sleep 1000000"))
        b.commands.append(("scale, runc", "one start", "runc run -d --bundle B ID (plain `runc spec` bundle)"))
        b.commands.append(("scale, berth", "rm", "berth rm -f $(berth ps -aq)"))
        if r.returncode != 0 or left:
            raise SystemExit(f"bench: rm -f of {len(ids)} containers: exit {r.returncode}, "
                             f"{left} left: {self.rm['err']}")

    def measure_alone(self, n, quick):
        """`ps --json`, RSS and restart at the largest count with berth's
        containers alone on the host, after the same quiet second."""
        time.sleep(1)
        ps = self.ps_ms(5 if quick else 15, expect=n)[0]
        restarts = [self.b.berth_restart_time(n, QUIET_S) * 1000 for _ in range(3 if quick else 7)]
        time.sleep(1)
        return dict(n=n, ps_ms=ps, restart_ms=med(restarts), restart_spread=(min(restarts), max(restarts)),
                    reps=len(restarts), rss_kb=rss_kb(self.b.berthd.pid),
                    ps_after_restart=self.ps_ms(5 if quick else 15, expect=n)[0])

    def verbs(self, n):
        """Every verb once at the largest count, on one of the N containers
        (its state put back by the end) and on a new one: each must succeed;
        the wall times go into the report."""
        b = self.b
        ids = b.berth("ps", "-q", stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        if len(ids) != n:
            raise SystemExit(f"bench: ps -q listed {len(ids)} containers, expected {n}")
        c = ids[len(ids) // 2]
        name = f"verbs{os.getpid()}"
        steps = [
            ("ps", ["ps"]), ("ps -a", ["ps", "-a"]), ("ps -q", ["ps", "-q"]), ("info", ["info"]),
            ("inspect", ["inspect", c]), ("logs", ["logs", c]), ("port", ["port", c]),
            ("top", ["top", c]), ("stats --no-stream", ["stats", "--no-stream", c]),
            ("exec true", ["exec", c, "true"]), ("pause", ["pause", c]), ("unpause", ["unpause", c]),
            ("update -m 64m --cpus 0.5", ["update", "-m", "64m", "--cpus", "0.5", c]),
            ("stop -t 1", ["stop", "-t", "1", c]), ("start", ["start", c]),
            ("restart -t 1", ["restart", "-t", "1", c]), ("kill", ["kill", c]), ("wait", ["wait", c]),
            ("start (again)", ["start", c]),
            ("events --since 5m --until 0s", ["events", "--since", "5m", "--until", "0s"]),
            ("run --rm -- true", ["run", "--rm", "--network", "none", "--", "true"]),
            ("create", ["create", "--network", "none", "--name", name, "--", "sleep", "1000000"]),
            ("start (created)", ["start", name]), ("rm -f", ["rm", "-f", name]),
        ]
        self.verb_ms = []
        for label, args in steps:
            t0 = time.perf_counter()
            r = b.berth(*args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True)
            ms = (time.perf_counter() - t0) * 1000 - b.launch_ms
            if r.returncode != 0:
                raise SystemExit(f"bench: `berth {' '.join(args)}` with {n} containers: "
                                 f"exit {r.returncode}: {r.stderr.strip()[:300]}")
            self.verb_ms.append((label, ms))
        running = sum(1 for x in self.ps_ms(1, expect=n)[1] if x["status"] == "running")
        if running != n:
            raise SystemExit(f"bench: {running} of {n} running after the verbs")

    def find_limits(self, n):
        """What this machine allows, from what the largest count used."""
        b = self.b
        p = self.points[-1]
        p0 = self.points[0]
        pid = b.berthd.pid
        # Per container, from the growth between the smallest and largest
        # count (both systems ran the same number; the berth side is what the
        # pid and memory figures below attribute to berth: its shim and the
        # container's init, against runc's init alone).
        dn = max(p["n"] - p0["n"], 1)
        shims = [int(x) for x in os.listdir("/proc") if x.isdigit() and self.is_shim(x)]
        shim_pss = statistics.mean(self.pss(s) for s in shims[:50]) if shims else 0
        pids_per = 2  # the shim and the container's process (berthd holds no thread per container)
        pid_max = read_int("/proc/sys/kernel/pid_max")
        pids_now = len([x for x in os.listdir("/proc") if x.isdigit()])
        self.limits.append(("pids (kernel.pid_max)", pid_max, f"{pids_per} (shim + container)",
                            n + (pid_max - pids_now) // pids_per,
                            f"{pids_now} pids in use on the host now"))
        threads_max = read_int("/proc/sys/kernel/threads-max")
        self.limits.append(("threads (kernel.threads-max)", threads_max, f"{pids_per}",
                            n + (threads_max - pids_now) // pids_per, "the shim is single-threaded"))
        nofile = soft_limit(pid, "Max open files")
        fd_per = (p["fds"] - p0["fds"]) / dn
        if fd_per > 0:
            self.limits.append(("berthd open files (RLIMIT_NOFILE, raised to the hard limit)", nofile,
                                f"{fd_per:.2f} fds in berthd", int(n + (nofile - p["fds"]) / fd_per),
                                f"{p['fds']} open at {p['n']}"))
        else:
            self.limits.append(("berthd open files (RLIMIT_NOFILE)", nofile, "0 fds in berthd",
                                math.inf, f"{p['fds']} open at {p['n']} and at {p0['n']}: none per container"))
        avail = meminfo_kb("MemAvailable")
        mem_per = max((p["mem_used_kb"] - p0["mem_used_kb"]) / dn, 1)
        self.limits.append(("memory (MemAvailable)", f"{avail / 2**20:.1f} GiB free",
                            f"{mem_per:.0f} kB for one berth + one runc container (shim PSS {shim_pss:.0f} kB)",
                            int(n + avail / mem_per),
                            "measured as MemAvailable's drop: other engineers' work moves it"))
        cg = self.cgroup_pids_max()
        if cg is not None:
            self.limits.append(("pids.max of berthd's cgroup", cg[0], f"{pids_per}", cg[1], cg[2]))
        inst = read_int("/proc/sys/fs/inotify/max_user_instances")
        self.limits.append(("inotify instances (fs.inotify.max_user_instances)", inst,
                            "0 (berthd and the shims use none; `berth logs -f` uses one while it runs)",
                            math.inf, "not a limit on the count"))
        self.limits.append(("bridge ports (a Linux bridge's 1024)", 1024,
                            "1 per container on the default network", 1023,
                            "only for bridged containers: this run used --network none"))

    @staticmethod
    def is_shim(pid):
        try:
            return open(f"/proc/{pid}/comm").read().strip() == "berth-shim"
        except OSError:
            return False

    @staticmethod
    def pss(pid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def cgroup_pids_max(self):
        try:
            rel = open(f"/proc/{self.b.berthd.pid}/cgroup").read().strip().split("::", 1)[1]
        except (OSError, IndexError):
            return None
        base = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
        cur = base
        best = None
        while cur.startswith("/sys/fs/cgroup") and cur != "/sys/fs/cgroup":
            lim = read_int(os.path.join(cur, "pids.max"))
            used = read_int(os.path.join(cur, "pids.current"))
            if lim != math.inf and (best is None or lim - used < best[0] - best[1]):
                best = (lim, used, cur)
            cur = os.path.dirname(cur)
        if best is None:
            return ("max", math.inf, f"no pids.max above {rel}")
        lim, used, where = best
        return (lim, self.points[-1]["n"] + (lim - used) // 2, f"{used} in use in {where}")

    # ---- lifecycles -----------------------------------------------------
    def lifecycles(self, n):
        self.launch()
        b = self.b
        reps = 10

        def sample():
            time.sleep(1)
            pid = b.berthd.pid
            return dict(rss_kb=rss_kb(pid), fds=fds(pid), ps_ms=self.ps_ms(reps)[0])

        # A few lifecycles first, so one-off start-up allocations (the first
        # client, the first shim spawn) are in the "fresh" figure too; then
        # WARM more, which touch every code page a lifecycle uses and fill
        # the bounded caches (the 256 recent events): "warm" is the steady
        # state the N lifecycles are compared with. Both are reported.
        for i in range(5):
            self.one_lifecycle(f"fresh{i}")
        fresh = sample()
        for i in range(WARM):
            self.one_lifecycle(f"warm{i}")
        before = sample()
        t0 = time.monotonic()
        for i in range(n):
            self.one_lifecycle(f"lc{i}")
            if (i + 1) % 250 == 0:
                print(f"bench: lifecycles: {i + 1} ({time.monotonic() - t0:.0f}s)", file=sys.stderr)
        after = sample()
        left = b.berth("ps", "-aq", stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        if left:
            raise SystemExit(f"bench: {len(left)} containers left after {n} lifecycles")
        self.lifecycle = dict(n=n, fresh=fresh, before=before, after=after, s=time.monotonic() - t0)
        b.commands.append(("lifecycles", "berth", "berth run --network none --name lcN -- true; berth rm lcN"))

    def one_lifecycle(self, name):
        self.b.berth("run", "--network", "none", "--name", name, "--", "true", check=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.b.berth("rm", name, check=True, stdout=subprocess.DEVNULL)

    # ---- report ---------------------------------------------------------
    def plot(self):
        """bench/scale.png, drawn by Debian's python3 (where apt puts
        python3-matplotlib) when this interpreter has no matplotlib."""
        ensure_matplotlib()
        path = os.path.join(self.root, PLOT)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = os.path.join(self.b.t, "scale.json")
        title = (f"berth at scale ({time.strftime('%Y-%m-%d', time.gmtime())}, "
                 f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
        json.dump(dict(points=self.points, title=title), open(data, "w"))
        try:
            import matplotlib  # noqa: F401
            py = sys.executable
        except ImportError:
            py = "/usr/bin/python3"
        subprocess.run([py, os.path.abspath(__file__), "plot", data, path], check=True)
        return path

    def growth(self, key):
        """How `key` grows from the second-largest count to the largest: the
        exponent k in y ~ n^k (1 is linear, 0 flat)."""
        if len(self.points) < 2:
            return None
        a, z = self.points[-2], self.points[-1]
        if a[key] <= 0 or z[key] <= 0:
            return None
        return math.log(z[key] / a[key]) / math.log(z["n"] / a["n"])

    def section(self, load):
        lines = ["", "## Scale", "",
                 f"`scripts/bench --scale {','.join(str(n) for n in self.counts)}` "
                 f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, release build, load average "
                 f"{load[0]:.1f} / {load[1]:.1f} at the start / end: the 2 cores are shared with other "
                 "builds, so compare berth with runc in the same row, not with other runs). Idle containers "
                 "(`--network none`: a Linux bridge takes at most 1024 ports, so a bridged run stops at "
                 "1,023) started one after another, one berth and one bare `runc run -d` of a plain bundle "
                 "per round in a random order, so both start against the same host. Start latency: at each "
                 f"count {self.points[0]['k'] if self.points else PROBES} probe rounds, each a `berth run -d`, a bare "
                 f"`runc run -d` and a `berth run -d` in a second berth root that holds {SMALL} containers "
                 "throughout, in a random order, each probe removed before the next so the count stays N; "
                 "median (first-third quartile), minus the harness's launch cost. The second root meets the "
                 "same host in the same rounds: the main root's start against it is what berth's own code and "
                 "root state add with the count, the second root's growth is the host's. Restart: SIGKILL "
                 "berthd after 2 s of quiet, start it, poll `ps --json` until all are listed running.", "",
                 f"![berth at scale]({PLOT})", "",
                 f"| running | berth start ms | runc start ms | berth/runc | berth start in the {SMALL}-container "
                 "root ms | berthd RSS MiB | berthd fds | "
                 "ps --json ms | ps ms | restart ms | ps after restart ms | host memory used MiB |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def spread(p, key):
            return f"{p[key + '_start']:.1f} ({p[key + '_spread'][0]:.0f}-{p[key + '_spread'][1]:.0f})"
        for p in self.points:
            lines.append(f"| {p['n']} | {p['berth_start']:.1f} ({p['start_spread'][0]:.0f}-{p['start_spread'][1]:.0f}) "
                         f"| {spread(p, 'runc')} | {p['berth_start'] / p['runc_start']:.2f} | {spread(p, 'small')} | "
                         f"{p['rss_kb'] / 1024:.1f} | {p['fds']} | {p['ps_ms']:.1f} | {p['table_ms']:.1f} | "
                         f"{p['restart_ms']:.0f} "
                         f"({p['restart_spread'][0]:.0f}-{p['restart_spread'][1]:.0f}) | {p['ps_after_restart']:.1f} | "
                         f"{p['mem_used_kb'] / 1024:.0f} |")
        z = self.points[-1]
        first = self.points[0]
        # The targets name N idle containers on the host: judged on the
        # figures taken with the reference line's containers gone.
        t = self.alone or z
        rss_all = max(z["rss_kb"], t["rss_kb"])
        lines += ["", f"Targets at {z['n']}, with berth's {z['n']} containers alone on the host"
                  + (f" (the reference line's removed first, then {self.settled_s:.0f} s until the count "
                     "of memory cgroups stopped falling)" if self.alone else "")
                  + f": berthd RSS <= 16 MiB: {rss_all / 1024:.1f} MiB (the larger of the row's and this; "
                  f"{'met' if rss_all <= 16 * 1024 else 'NOT met'}); ps --json <= 40 ms: {t['ps_ms']:.1f} ms "
                  f"({'met' if t['ps_ms'] <= 40 else 'NOT met'}); restart <= 400 ms: {t['restart_ms']:.0f} ms"
                  + (f" (median of {t['reps']}, {t['restart_spread'][0]:.0f}-{t['restart_spread'][1]:.0f})"
                     if self.alone else "")
                  + f" ({'met' if t['restart_ms'] <= 400 else 'NOT met'})."
                  + (f" In the row above, with the {z['n']} reference containers running too: ps --json "
                     f"{z['ps_ms']:.1f} ms, restart {z['restart_ms']:.0f} ms. `ps --json` after these restarts: "
                     f"{t['ps_after_restart']:.1f} ms." if self.alone else "")
                  + f" Start with {z['n']} running against {first['n']} (medians of {z['k']} probes each): berth "
                  f"{z['berth_start'] / first['berth_start']:.2f}x, bare runc "
                  f"{z['runc_start'] / first['runc_start']:.2f}x; of berth's, its own part (the main root's "
                  f"start against the {SMALL}-container root's in the same rounds) "
                  f"{z['berth_start'] / z['small_start']:.2f}x at {z['n']} ({first['berth_start'] / first['small_start']:.2f}x "
                  f"at {first['n']}), the host's (the {SMALL}-container root's start at {z['n']} against at "
                  f"{first['n']}) {z['small_start'] / first['small_start']:.2f}x."]
        g = [(k, self.growth(k)) for k in ("berth_start", "runc_start", "rss_kb", "ps_ms", "restart_ms")]
        if len(self.points) >= 2:
            a = self.points[-2]
            lines += ["", f"Growth from {a['n']} to {z['n']} as an exponent k in y ~ n^k (1 linear, 0 flat): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in g if v is not None)
                      + ". RSS grows slower than linear because of its fixed base; the per-container "
                      f"part is {(z['rss_kb'] - a['rss_kb']) / (z['n'] - a['n']):.2f} kB."]
        if self.verb_ms:
            lines += ["", f"Every verb with {z['n']} containers, once each (one of them stopped, started, "
                      "paused, killed and started again, and a new one made and removed), all exit 0, ms: "
                      + ", ".join(f"{label} {ms:.0f}" for label, ms in self.verb_ms) + "."]
        if self.rm:
            r = self.rm
            lines += ["", f"`berth rm -f $(berth ps -aq)` of all {r['n']}: {r['s']:.1f} s, exit {r['rc']}, "
                      f"{r['left']} left (`runc delete -f` of the {z['n']} bare runc containers one by one: "
                      f"{r['runc_s']:.1f} s)."]
        lines += ["", "Limits this machine puts on the count (projected from what the run used):", "",
                  "| limit | value | per berth container | max containers | note |", "|---|---|---|---|---|"]
        for what, lim, per, mx, note in self.limits:
            mxs = "none" if mx == math.inf else f"{mx:,}"
            lines.append(f"| {what} | {lim} | {per} | {mxs} | {note} |")
        finite = [(mx, what) for what, _, _, mx, _ in self.limits if mx != math.inf and "bridge" not in what]
        if finite:
            mx, what = min(finite)
            lines += ["", f"First limit berth hits with `--network none`: **{what}**, at about {mx:,} containers "
                      "(bridged containers stop at 1,023 first)."]
        return "\n".join(lines) + "\n"

    def lifecycle_section(self, load):
        lc = self.lifecycle
        fr, bf, af = lc["fresh"], lc["before"], lc["after"]
        lines = ["", "## Steady state", "",
                 f"`scripts/bench --lifecycles {lc['n']}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                 f"load average {load[0]:.1f}): berthd's RSS, open fds and `ps --json` latency (median of 10) "
                 f"after 5 lifecycles (fresh), after {WARM} more (warm: every code page a lifecycle touches is "
                 f"mapped and the 256 recent events in memory are full) and after {lc['n']} more "
                 f"(`berth run --network none --name lcN -- true`, then `berth rm lcN`; {lc['s']:.0f} s), "
                 "each read after 1 s quiet.", "",
                 "| measurement | fresh | warm | after | change from warm | change from fresh |",
                 "|---|---|---|---|---|---|",
                 f"| berthd RSS, kB | {fr['rss_kb']} | {bf['rss_kb']} | {af['rss_kb']} | "
                 f"{af['rss_kb'] - bf['rss_kb']:+d} | {af['rss_kb'] - fr['rss_kb']:+d} |",
                 f"| berthd open fds | {fr['fds']} | {bf['fds']} | {af['fds']} | "
                 f"{af['fds'] - bf['fds']:+d} | {af['fds'] - fr['fds']:+d} |",
                 f"| `ps --json` ms | {fr['ps_ms']:.1f} | {bf['ps_ms']:.1f} | {af['ps_ms']:.1f} | "
                 f"{af['ps_ms'] - bf['ps_ms']:+.1f} | {af['ps_ms'] - fr['ps_ms']:+.1f} |"]
        return "\n".join(lines) + "\n"


def run(bench, counts, lifecycles, output, replace_section):
    """`--scale` and/or `--lifecycles`: a berthd of its own, no peers."""
    load0 = os.getloadavg()
    s = ScaleBench(bench, counts or [], os.path.dirname(os.path.abspath(output)))
    if lifecycles:
        t0 = time.monotonic()
        s.lifecycles(lifecycles)
        print(f"bench: lifecycles done in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    if counts:
        t0 = time.monotonic()
        s.run()
        print(f"bench: scale done in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    load1 = os.getloadavg()
    report = None
    if counts:
        s.plot()
        report = replace_section(output, "## Scale", s.section((load0[0], load1[0])))
    if lifecycles:
        tmp = output
        if report is not None:
            tmp = output + ".tmp"
            open(tmp, "w").write(report)
        report = replace_section(tmp, "## Steady state", s.lifecycle_section(load0))
        if tmp != output:
            os.unlink(tmp)
    return report



def draw(data, path):
    """The four panels against the count, log x axis (10, 100, 1,000, ...)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = json.load(open(data))
    pts = d["points"]
    ns = [p["n"] for p in pts]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (ax[0][0], "start latency of one more container, ms",
         [("berth run -d", [p["berth_start"] for p in pts]),
          ("runc run -d (bare, reference)", [p["runc_start"] for p in pts])]
         + ([(f"berth run -d in a root of {SMALL} (same rounds)", [p["small_start"] for p in pts])]
            if all("small_start" in p for p in pts) else [])),
        (ax[0][1], "berthd RSS, MiB", [("berthd", [p["rss_kb"] / 1024 for p in pts])]),
        (ax[1][0], "berth ps --json, ms", [("berth ps --json", [p["ps_ms"] for p in pts])]),
        (ax[1][1], "SIGKILL berthd, restart until all listed running, ms",
         [("berthd restart", [p["restart_ms"] for p in pts])]),
    ]
    for a, title, series in panels:
        for label, ys in series:
            a.plot(ns, ys, marker="o", label=label)
        a.set_xscale("log")
        a.set_xticks(ns)
        a.set_xticklabels([str(n) for n in ns])
        a.set_ylim(bottom=0)
        a.set_title(title, fontsize=10)
        a.set_xlabel("idle containers running")
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(d["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "plot":
    draw(sys.argv[2], sys.argv[3])
