//! Images made by the tests themselves: layers as tars built here (gzip,
//! sha256 computed here), written as an OCI image layout or a `docker
//! save` archive. No network.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub fn sha(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A layer tar being built. Names are written raw (no checks), so tests
/// can make hostile layers.
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, name, mode, 0);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    pub fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, name, mode, data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    pub fn file_owned(mut self, name: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, name, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(kind, name, 0o777, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, name, target)
    }
    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, name, target)
    }
    /// A static busybox with the applets the tests use, and users.
    pub fn busybox(self) -> Self {
        let bb = std::fs::read("/bin/busybox")
            .or_else(|_| std::fs::read("/usr/bin/busybox"))
            .expect("busybox-static");
        let mut s = self
            .dir("bin", 0o755)
            .file("bin/busybox", 0o755, &bb)
            .dir("etc", 0o755)
            .file(
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
            )
            .file(
                "etc/group",
                0o644,
                b"root:x:0:\napp:x:1001:\nextra:x:1002:app\n",
            )
            .dir("tmp", 0o1777)
            .dir("home", 0o755)
            .dir("home/app", 0o755);
        for applet in [
            "sh", "echo", "cat", "ls", "id", "pwd", "env", "true", "test", "stat", "sleep",
        ] {
            s = s.symlink(&format!("bin/{applet}"), "busybox");
        }
        s
    }
    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// zstd, as `application/vnd.oci.image.layer.v1.tar+zstd` layers are.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// An image: uncompressed layer tars (bottom first) and its run config.
pub struct TestImage {
    pub layers: Vec<Vec<u8>>,
    pub config: serde_json::Value,
    /// Layers (by index) written zstd-compressed; the others gzip.
    pub zstd_layers: Vec<usize>,
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl TestImage {
    pub fn new(layers: Vec<Vec<u8>>, config: serde_json::Value) -> Self {
        TestImage {
            layers,
            config,
            zstd_layers: Vec::new(),
        }
    }
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha(l)).collect()
    }
    pub fn config_json(&self) -> Vec<u8> {
        self.config_json_for(host_arch())
    }
    /// The config as built for another architecture.
    pub fn config_json_for(&self, arch: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": arch,
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids()},
        }))
        .unwrap()
    }
    /// Writes blobs (gzipped layers), the manifest and index.json; returns
    /// the manifest's digest.
    pub fn write_oci_layout(&self, dir: &Path, name: Option<&str>) -> String {
        let desc = self.write_manifest(dir, host_arch());
        let md = desc["digest"].as_str().unwrap().to_string();
        write_layout_index(dir, desc, name);
        md
    }
    /// Writes the blobs and manifest of the image built for `arch`;
    /// returns the manifest's descriptor (with its platform).
    pub fn write_manifest(&self, dir: &Path, arch: &str) -> serde_json::Value {
        let config = self.config_json_for(arch);
        let (cd, cs) = put_blob(dir, &config);
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (data, kind) = if self.zstd_layers.contains(&i) {
                    (zstd(l), "zstd")
                } else {
                    (gzip(l), "gzip")
                };
                let (d, s) = put_blob(dir, &data);
                serde_json::json!({"mediaType": format!("application/vnd.oci.image.layer.v1.tar+{kind}"), "digest": d, "size": s})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers,
        }))
        .unwrap();
        let (md, ms) = put_blob(dir, &manifest);
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "platform": {"os": "linux", "architecture": arch},
        })
    }
    /// A multi-platform image: an OCI index of this image for the host
    /// and for each of `others` (architectures), as the layout's one
    /// image. Returns (index digest, the host's manifest digest).
    pub fn write_multi_platform_layout(&self, dir: &Path, others: &[&str]) -> (String, String) {
        let host = self.write_manifest(dir, host_arch());
        let mut manifests = vec![host.clone()];
        manifests.extend(others.iter().map(|a| self.write_manifest(dir, a)));
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let (d, s) = put_blob(dir, &index);
        write_layout_index(
            dir,
            serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": s}),
            None,
        );
        (d, host["digest"].as_str().unwrap().to_string())
    }
    /// A `docker save` archive (Docker's classic format: `<id>/layer.tar`,
    /// `<config>.json`, manifest.json with RepoTags). `skip_layer` leaves
    /// one layer file out.
    pub fn write_docker_save(&self, path: &Path, tag: &str, skip_layer: Option<usize>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        let config = self.config_json();
        let config_name = format!("{}.json", &sha(&config)[7..]);
        add(&config_name, &config);
        let mut layer_names = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let name = format!("{}/layer.tar", &sha(l)[7..]);
            if skip_layer != Some(i) {
                add(&name, l);
            }
            layer_names.push(name);
        }
        let manifest =
            serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]);
        add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        std::fs::write(path, b.into_inner().unwrap()).unwrap();
    }
}

/// The `auth:` section for basic auth with one htpasswd line (none: "").
fn htpasswd_auth(dir: &Path, htpasswd: Option<&str>) -> String {
    match htpasswd {
        Some(line) => {
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            )
        }
        None => String::new(),
    }
}

/// Stores a blob in an OCI layout; returns its digest and size.
fn put_blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let d = sha(data);
    std::fs::write(blobs.join(&d[7..]), data).unwrap();
    (d, data.len())
}

/// The layout's index.json (one image, `desc`) and oci-layout.
fn write_layout_index(dir: &Path, mut desc: serde_json::Value, name: Option<&str>) {
    if let Some(n) = name {
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": n});
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [desc]})).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Tars a directory (an OCI layout as one file).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

/// A private registry (Debian's docker-registry) on 127.0.0.1, its storage
/// in the test's temp dir; killed by PID when dropped.
pub struct Registry {
    child: std::process::Child,
    pub addr: String,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        Self::start_with(dir, None)
    }

    /// With `htpasswd`: basic auth (an htpasswd line, bcrypt).
    pub fn start_with(dir: &Path, htpasswd: Option<&str>) -> Registry {
        Self::start_full(dir, &htpasswd_auth(dir, htpasswd), false)
    }

    /// With `auth_yaml` as the configuration's `auth:` section.
    pub fn start_with_auth(dir: &Path, auth_yaml: &str) -> Registry {
        Self::start_full(dir, auth_yaml, false)
    }

    /// Over TLS, with a certificate for 127.0.0.1 from a CA made here
    /// (openssl); returns the registry and the CA's PEM.
    pub fn start_tls(dir: &Path, htpasswd: Option<&str>) -> (Registry, Vec<u8>) {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&tls)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(tls.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ]);
        let reg = Self::start_full(dir, &htpasswd_auth(dir, htpasswd), true);
        (reg, std::fs::read(tls.join("ca.crt")).unwrap())
    }

    fn start_full(dir: &Path, auth: &str, tls: bool) -> Registry {
        let bin = registry_bin();
        // A free port is only known free until someone else binds it: the
        // registry is started on it and must be seen listening on it
        // itself; when it lost the port (it exits), another one is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(reg) = Self::start_on(bin, dir, port, auth, tls) {
                return reg;
            }
        }
        panic!("docker-registry could not listen on any of 5 free ports (see registry.log)");
    }

    /// Starts the registry on `port`; None when it exits without listening
    /// there (the port was taken meanwhile).
    fn start_on(bin: &str, dir: &Path, port: u16, auth: &str, tls: bool) -> Option<Registry> {
        let addr = format!("127.0.0.1:{port}");
        let store = dir.join("registry-data");
        std::fs::create_dir_all(&store).unwrap();
        let config = dir.join("registry.yml");
        let tls = if tls {
            format!(
                "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\n",
                dir.join("tls").display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}",
                store.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut reg = Registry { child, addr };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if listens_on(reg.child.id(), port) {
                return Some(reg);
            }
            if reg.child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not listen on {}",
                reg.addr
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Pushes an OCI layout (its only image) as `repo:tag` with skopeo.
    pub fn push(&self, layout: &Path, repo_tag: &str) -> String {
        self.push_as(layout, repo_tag, None)
    }

    /// Pushes with `user:password` credentials when given.
    pub fn push_as(&self, layout: &Path, repo_tag: &str, creds: Option<&str>) -> String {
        self.push_with(layout, repo_tag, creds, false)
    }

    /// Pushes every image of an index (skopeo's `--all`).
    pub fn push_all(&self, layout: &Path, repo_tag: &str) -> String {
        self.push_with(layout, repo_tag, None, true)
    }

    fn push_with(&self, layout: &Path, repo_tag: &str, creds: Option<&str>, all: bool) -> String {
        let dest = format!("docker://{}/{repo_tag}", self.addr);
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        let out = cmd
            .arg(format!("oci:{}", layout.display()))
            .arg(&dest)
            .output()
            .expect("skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}/{repo_tag}", self.addr)
    }
}

fn registry_bin() -> &'static str {
    ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| {
            panic!("docker-registry is missing: apt-get install docker-registry (scripts/install-deps)")
        })
}

/// True when process `pid` holds a TCP socket listening on `port`: a
/// listening entry of /proc/PID/net/tcp whose inode is one of its fds.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            let listening = u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A";
            listening.then(|| format!("socket:[{}]", f.get(9).copied().unwrap_or_default()))
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            })
        })
        .unwrap_or(false)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// The free-port race: a port someone else took between the probe and
/// the registry's start is noticed (the registry exits; the listener
/// answering there is not the registry's), so `start` tries another.
#[test]
fn a_registry_that_lost_its_port_is_not_taken_for_started() {
    let dir = tempfile::tempdir().unwrap();
    let thief = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = thief.local_addr().unwrap().port();
    assert!(listens_on(std::process::id(), port));
    assert!(!listens_on(std::process::id(), port.wrapping_add(1)));
    assert!(Registry::start_on(registry_bin(), dir.path(), port, "", false).is_none());
    let reg = Registry::start(dir.path());
    assert!(listens_on(
        reg.child.id(),
        reg.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    ));
}
