"""Network rows of scripts/bench: berth beside Docker 20.10 (Debian's
docker.io) in one run.

A private dockerd, started here and stopped here: its own --data-root,
--exec-root, --pidfile and unix socket under the bench's temp dir, its
bridge one the bench makes on 10.44.2.0/24 (not docker0), the busybox image
loaded from a tar built here from berth's own busybox rootfs (no
internet). Afterwards dockerd is stopped by PID, its bridge deleted, every
iptables rule and chain it added removed (rules are compared with a
snapshot taken before it started, so other users' rules are never
touched) and the FORWARD policy put back as it was.

docker.io is installed when missing, without starting the system's
service (a policy-rc.d that exits 101 during the install, when none is
there), and the bench checks that no system dockerd runs.
"""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"          # docker.io's own 20.10 CLI, not any other on PATH
BRIDGE = "bdk44"
BRIDGE_CIDR = "10.44.2.1/24"
SUBNET = "10.44.2.0/24"
IMAGE = "berth-bench/busybox:latest"
POLICY_RC = "/usr/sbin/policy-rc.d"


def ensure_docker():
    if os.path.exists(DOCKERD) and os.path.exists(DOCKER):
        return
    print("bench: installing docker.io (its service is not started)", file=sys.stderr)
    made_policy = not os.path.exists(POLICY_RC)
    if made_policy:
        with open(POLICY_RC, "w") as f:
            f.write("#!/bin/sh\n# scripts/bench: start no service while docker.io installs\nexit 101\n")
        os.chmod(POLICY_RC, 0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", "docker.io"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        if made_policy:
            os.unlink(POLICY_RC)


def system_dockerd_pids(own):
    """dockerd processes that are not the bench's own."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == own:
            continue
        try:
            exe = os.readlink(f"/proc/{p}/exe")
        except OSError:
            continue
        if os.path.basename(exe) == "dockerd":
            pids.append(int(p))
    return pids


def iptables_save(table):
    r = subprocess.run(["iptables-save", "-t", table], stdout=subprocess.PIPE, text=True, check=True)
    return r.stdout.splitlines()


def forward_policy():
    for line in iptables_save("filter"):
        if line.startswith(":FORWARD "):
            return line.split()[1]
    return "ACCEPT"


def busybox_tar(rootfs, path):
    """A `docker save` archive of one layer: berth's busybox rootfs."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name)
    layer = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [IMAGE],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, data in [(config_name, config), ("layer/layer.tar", layer), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


class PrivateDocker:
    def __init__(self, tmp):
        self.d = os.path.join(tmp, "docker")
        self.sock = os.path.join(self.d, "docker.sock")
        self.proc = None
        self.before = {}
        self.policy = None
        self.made_bridge = False

    def cli(self, *args):
        return [DOCKER, "-H", f"unix://{self.sock}", *args]

    def start(self, rootfs):
        ensure_docker()
        others = system_dockerd_pids(0)
        if others:
            raise SystemExit(f"bench: a dockerd is already running (pids {others}); "
                             "the bench starts its own and leaves the system's alone: stop it first")
        os.makedirs(self.d, exist_ok=True)
        self.before = {t: set(iptables_save(t)) for t in ("filter", "nat")}
        self.policy = forward_policy()
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        self.made_bridge = True
        subprocess.run(["ip", "addr", "add", BRIDGE_CIDR, "dev", BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        log = open(os.path.join(self.d, "dockerd.log"), "a")
        self.proc = subprocess.Popen(
            [DOCKERD, "--data-root", os.path.join(self.d, "data"), "--exec-root", os.path.join(self.d, "exec"),
             "--pidfile", os.path.join(self.d, "dockerd.pid"), "-H", f"unix://{self.sock}",
             "--bridge", BRIDGE, "--storage-driver", "overlay2", "--log-driver", "json-file"],
            stdout=log, stderr=log, start_new_session=True)
        for _ in range(3000):
            if subprocess.run(self.cli("version"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the private dockerd exited; see {self.d}/dockerd.log")
            time.sleep(0.01)
        else:
            raise SystemExit("bench: the private dockerd did not answer")
        tar = os.path.join(self.d, "busybox.tar")
        busybox_tar(rootfs, tar)
        subprocess.run(self.cli("load", "-q", "-i", tar), check=True, stdout=subprocess.DEVNULL)

    def version(self):
        r = subprocess.run(self.cli("version", "--format", "{{.Server.Version}}"), stdout=subprocess.PIPE, text=True)
        return "Docker " + r.stdout.strip()

    def stop(self):
        """Stops dockerd by PID (it stops its containers and its containerd),
        then removes its bridge, rules and chains, and restores FORWARD's policy."""
        if self.proc is not None and self.proc.poll() is None:
            r = subprocess.run(self.cli("ps", "-aq"), stdout=subprocess.PIPE, text=True)
            if r.returncode == 0 and r.stdout.split():
                subprocess.run(self.cli("rm", "-f", *r.stdout.split()), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # What it started in its own session (its containerd, shims, proxies).
        if self.proc is not None:
            for p in os.listdir("/proc"):
                if not p.isdigit():
                    continue
                try:
                    if os.getsid(int(p)) == self.proc.pid:
                        os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        subprocess.run(f"grep -o ' {self.d}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                       shell=True, check=False)
        if self.made_bridge:
            subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)
        for table in ("filter", "nat"):
            if table not in self.before:
                continue
            now = iptables_save(table)
            added = [l for l in now if l.startswith("-A ") and l not in self.before[table]
                     and ("DOCKER" in l or BRIDGE in l or SUBNET in l)]
            for rule in reversed(added):
                subprocess.run(["iptables", "-t", table] + ["-D"] + shlex_split(rule[3:]),
                               stderr=subprocess.DEVNULL)
            chains = [l.split()[0][1:] for l in now if l.startswith(":DOCKER") and l not in self.before[table]]
            for c in chains:
                subprocess.run(["iptables", "-t", table, "-F", c], stderr=subprocess.DEVNULL)
            for c in chains:
                subprocess.run(["iptables", "-t", table, "-X", c], stderr=subprocess.DEVNULL)
        if self.policy is not None and forward_policy() != self.policy:
            subprocess.run(["iptables", "-P", "FORWARD", self.policy], check=False)


def shlex_split(s):
    import shlex
    return shlex.split(s)


def network_rows(bench, runs):
    """Start-to-exit of `true` with --network none, the default bridge,
    and the bridge plus one -p, berth and Docker in interleaved rounds (a
    fresh random order each). Returns {row: {system: [ms]}}."""
    dk = PrivateDocker(bench.t)
    bench.docker = dk
    dk.start(bench.rootfs)
    bp, dp = 47081, 47082   # host ports on 127.0.0.1, one per system
    berth = lambda *a: [bench.berth_bin, "--root", bench.berth_root, "run", "--rm", *a]
    docker = lambda *a: dk.cli("run", "--rm", *a)
    cases = {
        "--network none": {
            "berth": berth("--network", "none", "--", "true"),
            "docker": docker("--network", "none", IMAGE, "true"),
        },
        "default bridge": {
            "berth": berth("--", "true"),
            "docker": docker(IMAGE, "true"),
        },
        "bridge + one -p": {
            "berth": berth("-p", f"127.0.0.1:{bp}:80", "--", "true"),
            "docker": docker("-p", f"127.0.0.1:{dp}:80", IMAGE, "true"),
        },
    }

    def once(cmd):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        return (time.perf_counter() - t0) * 1000

    res = {case: {"berth": [], "docker": []} for case in cases}
    # The machine is shared: the report says the load the rounds ran under.
    bench.net_load = [os.getloadavg()[0]]
    pairs = [(case, who) for case in cases for who in ("berth", "docker")]
    warmup = 2
    for r in range(warmup + runs):
        for case, who in bench.shuffled(pairs):
            ms = once(cases[case][who]) - bench.launch_ms
            if r >= warmup:
                res[case][who].append(ms)
    bench.net_load.append(os.getloadavg()[0])
    for case, cmds in cases.items():
        for who, cmd in cmds.items():
            bench.commands.append((f"network: {case}", who, " ".join(cmd)))
    return res


def report_lines(res, docker_version, load):
    import statistics
    med = statistics.median
    lines = ["", "## Networks against Docker", "",
             f"Start-to-exit of `true`, median ms of interleaved rounds (random order each round), "
             f"berth against a private {docker_version} dockerd (its bridge on {SUBNET}, "
             "default userland proxy, image loaded from berth's busybox). Target: berth at most "
             "one third of Docker on the bridge rows. Measured "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 1-minute load average "
             f"{load[0]:.1f} at the first round and {load[-1]:.1f} at the last.", "",
             "| network | berth | Docker | berth/Docker | min-max berth | min-max Docker | runs |",
             "|---|---|---|---|---|---|---|"]
    for case, r in res.items():
        b, d = r["berth"], r["docker"]
        lines.append(f"| {case} | {med(b):.1f} | {med(d):.1f} | {med(b)/med(d):.2f} | "
                     f"{min(b):.0f}-{max(b):.0f} | {min(d):.0f}-{max(d):.0f} | {len(b)} |")
    return lines
