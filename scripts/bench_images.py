"""The image rows of scripts/bench: pull + unpack of a multi-layer image
from a local registry, berth against `skopeo copy` + `umoci unpack` and
`ctr image pull` (which unpacks), and `berth run IMAGE true` against the
built-in busybox. Imported by scripts/bench; not run on its own.

The image is made here, seeded (the same bytes every run): 5 layers of
about 70 MiB each, text-like blocks (gzip gets them to ~30 %) with ~5 %
random blocks, about 350 MiB unpacked and 119 MiB gzipped; the bottom
layer also has a static busybox so the image runs. It is pushed with
skopeo to Debian's docker-registry listening on 127.0.0.1 (storage in the
bench's temp dir), started here and killed by PID at the end.
"""

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import tarfile
import time

LAYERS = 5
LAYER_BYTES = 70 << 20
BLOCK = 64 << 10
RANDOM_SHARE = 0.05
REPO = "bench/big:1"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_arch():
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def text_pool(rng, n=64):
    """64 KiB blocks of word-like text; gzip's 32 KiB window cannot see
    across blocks, so each compresses on its own (~0.31)."""
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
             for _ in range(600)]
    pool = []
    for _ in range(n):
        out, size = [], 0
        while size < BLOCK:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "\n"
            out.append(line)
            size += len(line)
        pool.append("".join(out).encode()[:BLOCK])
    return pool


def layer_tar(rng, pool, index, busybox):
    """One layer's uncompressed tar: files of 256 KiB to 4 MiB."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data=None, kind=tarfile.REGTYPE, mode=0o644, target=""):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = 1_700_000_000
            info.linkname = target
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
        if busybox:
            add("bin", kind=tarfile.DIRTYPE, mode=0o755)
            add("bin/busybox", open(busybox, "rb").read(), mode=0o755)
            for applet in ("sh", "true", "cat", "ls"):
                add(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, target="busybox")
        top = f"data{index}"
        add(top, kind=tarfile.DIRTYPE, mode=0o755)
        written, n = 0, 0
        while written < LAYER_BYTES:
            size = min(rng.choice([256, 512, 1024, 2048, 4096]) << 10, LAYER_BYTES - written)
            blocks = []
            for _ in range(0, size, BLOCK):
                blocks.append(rng.randbytes(BLOCK) if rng.random() < RANDOM_SHARE else rng.choice(pool))
            add(f"{top}/f{n:04d}", b"".join(blocks)[:size])
            written += size
            n += 1
    return buf.getvalue()


def make_layout(dir, busybox, seed=13):
    """Writes the bench image as an OCI layout; returns (gzipped, unpacked) bytes."""
    rng = random.Random(seed)
    pool = text_pool(rng)
    blobs = os.path.join(dir, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        d = sha(data)
        with open(os.path.join(blobs, d[7:]), "wb") as f:
            f.write(data)
        return d, len(data)

    layers, diff_ids, gz_total, raw_total = [], [], 0, 0
    for i in range(LAYERS):
        raw = layer_tar(rng, pool, i, busybox if i == 0 else None)
        # gzip's default level, as docker and skopeo write layers.
        gz = gzip.compress(raw, compresslevel=6, mtime=0)
        d, s = put(gz)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
        diff_ids.append(sha(raw))
        gz_total += s
        raw_total += len(raw)
    config = json.dumps({
        "created": "2026-01-01T00:00:00Z", "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    cd, cs = put(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }).encode()
    md, ms = put(manifest)
    with open(os.path.join(dir, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
    with open(os.path.join(dir, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return gz_total, raw_total, [os.path.join(blobs, l["digest"][7:]) for l in layers]


class ImageBench:
    """Set up by `setup`, measured by `pull` and `run`, written by `rows`."""

    def __init__(self, bench):
        self.b = bench
        self.t = os.path.join(bench.t, "images")
        os.makedirs(self.t)

    def start_registry(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.addr = f"127.0.0.1:{port}"
        cfg = os.path.join(self.t, "registry.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.t}/registry\n"
                    f"http:\n  addr: {self.addr}\n")
        log = open(os.path.join(self.t, "registry.log"), "a")
        p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        self.b.pids.append(p.pid)
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("bench: docker-registry did not listen")

    def setup(self):
        self.start_registry()
        layout = os.path.join(self.t, "layout")
        busybox = shutil.which("busybox") or "/bin/busybox"
        t0 = time.monotonic()
        self.gz, self.raw, blobs = make_layout(layout, busybox)
        self.ref = f"{self.addr}/{REPO}"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        f"oci:{layout}:big", f"docker://{self.ref}"], check=True)
        # GNU gzip alone on the same layers: what inflating costs, one core
        # and all layers at once (the reference numbers).
        def gunzip(paths):
            t = time.monotonic()
            ps = [subprocess.Popen(["gzip", "-dc", p], stdout=subprocess.DEVNULL) for p in paths]
            for p in ps:
                p.wait()
            return time.monotonic() - t
        self.gunzip_serial = min(sum(gunzip([p]) for p in blobs) for _ in range(2))
        self.gunzip_parallel = min(gunzip(blobs) for _ in range(2))
        shutil.rmtree(layout)
        print(f"bench: image made and pushed in {time.monotonic() - t0:.1f}s "
              f"({self.gz / 2**20:.0f} MiB gzipped, {self.raw / 2**20:.0f} MiB unpacked)")

    # ---- pull + unpack ---------------------------------------------------
    def berth_pull(self):
        self.b.berth("pull", "-q", "--insecure-registry", self.addr, self.ref,
                     check=True, stdout=subprocess.DEVNULL)

    def berth_clean(self):
        self.b.berth("rmi", self.ref, check=True, stdout=subprocess.DEVNULL)
        self.b.berth("image", "prune", "-a", check=True, stdout=subprocess.DEVNULL)

    def skopeo_umoci(self):
        oci = os.path.join(self.t, "skopeo-oci")
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                        f"docker://{self.ref}", f"oci:{oci}:big"], check=True)
        subprocess.run(["umoci", "unpack", "--image", f"{oci}:big", os.path.join(self.t, "umoci-bundle")],
                       check=True, stdout=subprocess.DEVNULL)

    def skopeo_umoci_clean(self):
        shutil.rmtree(os.path.join(self.t, "skopeo-oci"))
        shutil.rmtree(os.path.join(self.t, "umoci-bundle"))

    def ctr_pull(self):
        subprocess.run(self.b.ctr("image", "pull", "--plain-http", self.ref), check=True,
                       stdout=subprocess.DEVNULL)

    def ctr_clean(self):
        # --sync: the content and snapshots are gone when it returns.
        subprocess.run(self.b.ctr("image", "rm", "--sync", self.ref), check=True,
                       stdout=subprocess.DEVNULL)

    def pull(self):
        rounds = 3 if self.b.quick else 7
        systems = [("berth pull", self.berth_pull, self.berth_clean),
                   ("skopeo copy + umoci unpack", self.skopeo_umoci, self.skopeo_umoci_clean),
                   ("ctr image pull", self.ctr_pull, self.ctr_clean)]
        self.pull_times = {name: [] for name, _, _ in systems}
        # One warm-up round (the registry's files into the page cache for
        # all alike), then interleaved rounds in a fresh random order; each
        # clean-up (and a sync, so one system's writeback does not fall on
        # the next) is outside the timing.
        for r in range(rounds + 1):
            for name, run, clean in self.b.shuffled(systems):
                subprocess.run(["sync"])
                t0 = time.monotonic()
                run()
                dt = time.monotonic() - t0
                clean()
                if r > 0:
                    self.pull_times[name].append(dt)
        # Left pulled: `run` below uses it.
        self.berth_pull()

    # ---- run IMAGE true ----------------------------------------------------
    def run(self):
        runs = 15 if self.b.quick else 40
        argv = {
            "berth run IMAGE true (5 layers)": ["run", "--rm", "--network", "none", self.ref, "true"],
            "berth run -- true (built-in busybox)": ["run", "--rm", "--network", "none", "--", "true"],
        }
        self.run_times = {k: [] for k in argv}
        for r in range(runs + 2):
            for name in self.b.shuffled(argv):
                t0 = time.perf_counter()
                self.b.berth(*argv[name], check=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if r >= 2:
                    self.run_times[name].append((time.perf_counter() - t0) * 1000)

    # ---- report ------------------------------------------------------------
    def rows(self, med, spread):
        p = {k: med(v) for k, v in self.pull_times.items()}
        fastest = min((k for k in p if k != "berth pull"), key=p.get)
        ri, rb = (med(v) for v in self.run_times.values())
        lines = ["", "## Images", "",
                 f"Pull + unpack of a {LAYERS}-layer image made by the bench ({self.gz / 2**20:.0f} MiB gzipped, "
                 f"{self.raw / 2**20:.0f} MiB unpacked, text-like with ~5 % random blocks) from Debian's docker-registry "
                 "on 127.0.0.1, in interleaved rounds (random order, a warm-up round first, `sync` and the "
                 "clean-up outside the timing); every store (berth's, skopeo's and umoci's directories, "
                 f"containerd's root) on {'the temp dir' + chr(39) + 's filesystem' if self.b.disk else 'the bench' + chr(39) + 's tmpfs'}. For scale: GNU gzip alone inflates these layers in "
                 f"{self.gunzip_serial:.2f} s one after another, {self.gunzip_parallel:.2f} s all at once.", "",
                 "| measurement | median s | min-max | runs | berth / this |", "|---|---|---|---|---|"]
        for k, xs in self.pull_times.items():
            lines.append(f"| {k} | {p[k]:.2f} | {spread(xs)} | {len(xs)} | {p['berth pull'] / p[k]:.2f} |")
        lines += ["", f"berth pull / fastest peer ({fastest}): **{p['berth pull'] / p[fastest]:.2f}** (target: at most 0.5)", "",
                  "| start-to-exit | median ms | min-max | runs |", "|---|---|---|---|"]
        for k, xs in self.run_times.items():
            lines.append(f"| {k} | {med(xs):.1f} | {spread(xs)} | {len(xs)} |")
        lines += ["", f"berth run IMAGE true / built-in busybox: **{ri / rb:.2f}** (target: at most 1.1)", "",
                  "Commands: berth: `berth pull -q --insecure-registry R R/bench/big:1` (then `rmi` and "
                  "`image prune -a`); skopeo + umoci: `skopeo copy docker://R/bench/big:1 oci:DIR:big` then "
                  "`umoci unpack --image DIR:big BUNDLE`; containerd: `ctr image pull --plain-http R/bench/big:1` "
                  "(the bench's own containerd, overlayfs snapshotter; then `ctr image rm --sync`); start-to-exit: "
                  "`berth run --rm --network none R/bench/big:1 true` against `berth run --rm --network none -- true`."]
        return lines
