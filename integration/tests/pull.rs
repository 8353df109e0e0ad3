//! `berth pull` from a registry started by the test (docker-registry on
//! 127.0.0.1, images pushed with skopeo), then run.

use crate::imgutil::{LayerBuilder, Registry, TestImage};
use crate::util::{stderr, Env};

fn image(n_extra: usize) -> TestImage {
    let mut layers = vec![LayerBuilder::new().busybox().build()];
    for i in 0..n_extra {
        layers.push(
            LayerBuilder::new()
                .dir("layers", 0o755)
                .file(
                    &format!("layers/{i}"),
                    0o644,
                    format!("layer {i}\n").as_bytes(),
                )
                .build(),
        );
    }
    TestImage::new(
        layers,
        serde_json::json!({"Cmd": ["sh", "-c", "cat /layers/*"], "Env": ["PATH=/bin"]}),
    )
}

fn push(env: &Env, reg: &Registry, img: &TestImage, repo_tag: &str) -> String {
    let layout = env
        .dir
        .path()
        .join(format!("layout-{}", repo_tag.replace(['/', ':'], "-")));
    img.write_oci_layout(&layout, None);
    reg.push(&layout, repo_tag)
}

#[test]
fn pull_and_run() {
    let Some(env) = Env::new() else { return };
    let reg = Registry::start(env.dir.path());
    let name = push(&env, &reg, &image(2), "team/app:1");
    let out = env.ok(&["pull", "--insecure-registry", &reg.addr, &name]);
    assert!(out.ends_with(&format!("{name}\n")), "{out}");
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["images", "--json"])).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["repository"], format!("{}/team/app", reg.addr));
    assert_eq!(list[0]["tag"], "1");
    assert_eq!(env.ok(&["run", "--rm", &name]), "layer 0\nlayer 1\n");
    // A second pull finds every layer there.
    let out = env.ok(&["pull", "--insecure-registry", &reg.addr, &name]);
    assert!(out.contains("Status: Image is up to date for"), "{out}");
    let out = env.ok(&["pull", "-q", "--insecure-registry", &reg.addr, &name]);
    assert_eq!(out, format!("{name}\n"));
}

fn images(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str(&env.ok(&["images", "--json"])).unwrap()
}

fn tmp_is_empty(env: &Env) -> bool {
    std::fs::read_dir(env.root.join("images/tmp"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

fn refused(env: &Env, args: &[&str], needle: &str) {
    let out = env.berth(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(images(env).is_empty(), "the store is unchanged");
    assert!(tmp_is_empty(env), "no temp layer left");
}

#[test]
fn pull_bad_input() {
    let Some(env) = Env::stopped() else { return };
    let reg = Registry::start(env.dir.path());
    let name = push(&env, &reg, &image(0), "team/app:1");
    let insecure = ["pull", "--insecure-registry", &reg.addr];
    let with = |r: &str| -> Vec<String> {
        insecure
            .iter()
            .map(|s| s.to_string())
            .chain([r.to_string()])
            .collect()
    };
    let run = |args: Vec<String>, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&env, &a, needle);
    };
    // The registry's own words.
    run(
        with(&format!("{}/team/nothere:1", reg.addr)),
        "manifest unknown",
    );
    run(
        with(&format!("{}/team/app:nosuchtag", reg.addr)),
        "manifest unknown",
    );
    run(with("Bad/Name:1"), "invalid image name \"Bad/Name:1\"");
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("127.0.0.1:{port}");
    run(
        vec![
            "pull".into(),
            "--insecure-registry".into(),
            dead.clone(),
            format!("{dead}/team/app:1"),
        ],
        "Connection refused",
    );
    // The right image pulls afterwards.
    env.ok(&with(&name).iter().map(String::as_str).collect::<Vec<_>>());
}

/// A registry that serves a layer that is not what the manifest says.
#[test]
fn pull_refuses_a_digest_mismatch() {
    let Some(env) = Env::stopped() else { return };
    let reg = Registry::start(env.dir.path());
    let img = image(1);
    let name = push(&env, &reg, &img, "team/app:1");
    let blob = crate::imgutil::sha(&crate::imgutil::gzip(&img.layers[1]));
    let hex = &blob[7..];
    corrupt_blob(&env, hex);
    refused(
        &env,
        &["pull", "--insecure-registry", &reg.addr, &name],
        &format!("digest mismatch for layer {blob}"),
    );
    let layer = env
        .root
        .join("images/layers")
        .join(&crate::imgutil::sha(&img.layers[1])[7..]);
    assert!(!layer.exists(), "the bad layer is not in the store");
}

/// An index that lists another platform only.
#[test]
fn pull_refuses_another_platform() {
    let Some(env) = Env::stopped() else { return };
    let reg = Registry::start(env.dir.path());
    let layout = env.dir.path().join("foreign");
    let img = image(0);
    img.write_oci_layout(&layout, None);
    // Wrap the manifest in an index for linux/s390x only.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut desc = index["manifests"][0].clone();
    desc["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc],
    }))
    .unwrap();
    let d = crate::imgutil::sha(&inner);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), &inner).unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": inner.len()}]}))
        .unwrap(),
    )
    .unwrap();
    let dest = format!("docker://{}/team/foreign:1", reg.addr);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", layout.display()))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &env,
        &[
            "pull",
            "--insecure-registry",
            &reg.addr,
            &format!("{}/team/foreign:1", reg.addr),
        ],
        "(it has: linux/s390x)",
    );
}

/// Two pulls of one image at once: both succeed, each layer is stored once.
#[test]
fn concurrent_pulls_share_the_work() {
    let Some(env) = Env::stopped() else { return };
    let reg = Registry::start(env.dir.path());
    let name = push(&env, &reg, &image(3), "team/app:1");
    let spawn = || {
        env.cmd(&["pull", "-q", "--insecure-registry", &reg.addr, &name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(images(&env).len(), 1);
    assert_eq!(
        std::fs::read_dir(env.root.join("images/layers"))
            .unwrap()
            .count(),
        4
    );
    assert!(tmp_is_empty(&env));
}

/// A pull SIGKILLed while it unpacks leaves nothing a later pull trusts;
/// the retry succeeds and the image runs.
#[test]
fn pull_killed_halfway_then_retried() {
    let Some(env) = Env::new() else { return };
    let reg = Registry::start(env.dir.path());
    // 48 MiB that does not compress: the pull takes a while.
    let mut big = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut img = image(1);
    img.layers
        .push(LayerBuilder::new().file("big", 0o644, &big).build());
    let name = push(&env, &reg, &img, "team/big:1");
    let mut child = env
        .cmd(&["pull", "-q", "--insecure-registry", &reg.addr, &name])
        .spawn()
        .unwrap();
    let tmp = env.root.join("images/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let started = loop {
        let partial = std::fs::read_dir(&tmp).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("diff/big"))
                .find(|p| p.metadata().is_ok_and(|m| m.len() > 0))
        });
        if partial.is_some() {
            break true;
        }
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(
        started,
        "the pull finished before it could be killed halfway"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(images(&env).is_empty());
    let big_layer = crate::imgutil::sha(&img.layers[2]);
    assert!(!env
        .root
        .join("images/layers")
        .join(&big_layer[7..])
        .exists());
    env.ok(&["pull", "-q", "--insecure-registry", &reg.addr, &name]);
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            &name,
            "sh",
            "-c",
            "stat -c %s /big; cat /layers/0"
        ]),
        format!("{}\nlayer 0\n", 48 << 20)
    );
}

/// A registry with basic auth: refused without credentials (its own
/// error shown); `berth login` refuses a wrong password (the registry
/// checks it) and keeps the right one 0600; the pull then works.
#[test]
fn login_then_pull_with_basic_auth() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = Env::stopped() else { return };
    // bcrypt (cost 4) of "berth-secret".
    let reg = Registry::start_with(
        env.dir.path(),
        Some("tester:$2b$04$HRnb81Rq98eZIPUJmDGHAONIAgi3o/CDOS9Lxz96xvqjrQuCheo1i"),
    );
    let layout = env.dir.path().join("layout-auth");
    image(0).write_oci_layout(&layout, None);
    let name = reg.push_as(&layout, "team/private:1", Some("tester:berth-secret"));
    refused(
        &env,
        &["pull", "--insecure-registry", &reg.addr, &name],
        "Not authorized",
    );
    // A wrong password is refused by the registry at login, as docker
    // login does: one line naming the registry, exit 125, nothing stored.
    let out = env.berth_input(
        &["login", "-u", "tester", "--password-stdin", &reg.addr],
        b"wrong-password\n",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("login to {} failed", reg.addr)) && err.contains("401"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!env.root.join("auth.json").exists(), "nothing stored");
    // So is an unknown user.
    let out = env.berth_input(
        &["login", "-u", "nobody", "--password-stdin", &reg.addr],
        b"berth-secret\n",
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(!env.root.join("auth.json").exists(), "nothing stored");
    refused(
        &env,
        &["pull", "--insecure-registry", &reg.addr, &name],
        "Not authorized",
    );
    let out = env.berth_input(
        &["login", "-u", "tester", "--password-stdin", &reg.addr],
        b"berth-secret\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(env.root.join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    env.ok(&["pull", "-q", "--insecure-registry", &reg.addr, &name]);
    assert_eq!(images(&env).len(), 1);
    env.ok(&["logout", &reg.addr]);
}

/// zstd layers (`application/vnd.oci.image.layer.v1.tar+zstd`), compressed
/// by the test itself: pulled, imported, and run.
#[test]
fn zstd_layers_pull_and_import() {
    let Some(env) = Env::new() else { return };
    let reg = Registry::start(env.dir.path());
    let mut img = image(2);
    img.zstd_layers = vec![0, 2];
    let layout = env.dir.path().join("layout-zstd");
    img.write_oci_layout(&layout, Some("example.com/team/zstd:1"));
    let manifest: serde_json::Value = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let d = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    assert_eq!(
        manifest["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let name = reg.push(&layout, "team/zstd:1");
    env.ok(&["pull", "-q", "--insecure-registry", &reg.addr, &name]);
    assert_eq!(env.ok(&["run", "--rm", &name]), "layer 0\nlayer 1\n");
    // The same layout imported into another store.
    let other = Env::stopped().unwrap();
    let out = other.ok(&["image", "import", layout.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: example.com/team/zstd:1");
    let layers = std::fs::read_dir(other.root.join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 3);
    // A corrupt zstd layer is refused, named by its digest.
    // (A layer of its own: one already in the store is not downloaded.)
    let mut bad = image(0);
    bad.layers.push(
        LayerBuilder::new()
            .file("corrupt", 0o644, &b"not in the store yet\n".repeat(1000))
            .build(),
    );
    bad.zstd_layers = vec![1];
    let bad_blob = crate::imgutil::sha(&crate::imgutil::zstd(&bad.layers[1]));
    let name = push(&env, &reg, &bad, "team/zstd-bad:1");
    let hex = &bad_blob[7..];
    corrupt_blob(&env, hex);
    let out = env.berth(&["pull", "--insecure-registry", &reg.addr, &name]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("digest mismatch for layer {bad_blob}")),
        "{err}"
    );
    assert!(tmp_is_empty(&env));
}

/// A multi-platform image (an OCI index the test pushes): the pull picks
/// the host's manifest and keeps the index digest as the repository's
/// digest (Docker's RepoDigests), shown by `images --digests` and
/// `image inspect`; the image runs by that digest.
#[test]
fn index_pull_keeps_the_index_digest() {
    let Some(env) = Env::new() else { return };
    let reg = Registry::start(env.dir.path());
    let img = image(1);
    let layout = env.dir.path().join("layout-multi");
    let (index_digest, manifest_digest) = img.write_multi_platform_layout(&layout, &["s390x"]);
    let name = reg.push_all(&layout, "team/multi:1");
    let out = env.ok(&["pull", "--insecure-registry", &reg.addr, &name]);
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    let list = images(&env);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], index_digest.as_str());
    assert_eq!(list[0]["manifest"], manifest_digest.as_str());
    let table = env.ok(&["images", "--digests"]);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "REPOSITORY",
            "TAG",
            "DIGEST",
            "IMAGE",
            "ID",
            "CREATED",
            "SIZE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..3],
        [&format!("{}/team/multi", reg.addr), "1", &index_digest][..]
    );
    // Without --digests, Docker's columns.
    assert!(!env.ok(&["images"]).contains("DIGEST"));
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &name])).unwrap();
    let i = &inspect[0];
    assert_eq!(
        i["RepoDigests"],
        serde_json::json!([format!("{}/team/multi@{index_digest}", reg.addr)])
    );
    assert_eq!(i["RepoTags"], serde_json::json!([name.clone()]));
    assert_eq!(i["Manifest"], manifest_digest.as_str());
    assert_eq!(i["Index"], index_digest.as_str());
    assert_eq!(i["Architecture"], crate::imgutil::host_arch());
    assert_eq!(i["Id"], crate::imgutil::sha(&img.config_json()));
    // By the index digest: the same image, found without a pull.
    let by_digest = format!("{}/team/multi@{index_digest}", reg.addr);
    assert_eq!(env.ok(&["run", "--rm", &by_digest]), "layer 0\n");
    // A pull by digest keeps it too, with no tag added.
    env.ok(&["pull", "-q", "--insecure-registry", &reg.addr, &by_digest]);
    let list = images(&env);
    assert_eq!(list.len(), 1, "{list:?}");
    // An unknown image: one line, exit 125, `[]` printed as Docker does.
    let out = env.berth(&["image", "inspect", "nosuch:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(stderr(&out).trim(), "berth: no such image: nosuch:1");
}

/// A registry with TLS (a private CA made by the test) and basic auth:
/// not trusted until its CA is in `<data-root>/certs.d/<host:port>/`
/// (Docker's certs.d layout); then `login` checks the password over
/// verified TLS and `pull` works without --insecure-registry.
#[test]
fn tls_registry_with_a_private_ca_and_basic_auth() {
    let Some(env) = Env::new() else { return };
    // bcrypt (cost 4) of "berth-secret".
    let (reg, ca) = Registry::start_tls(
        env.dir.path(),
        Some("tester:$2b$04$HRnb81Rq98eZIPUJmDGHAONIAgi3o/CDOS9Lxz96xvqjrQuCheo1i"),
    );
    let layout = env.dir.path().join("layout-tls");
    image(1).write_oci_layout(&layout, None);
    let name = reg.push_as(&layout, "team/tls:1", Some("tester:berth-secret"));
    let login = |password: &[u8]| {
        env.berth_input(
            &["login", "-u", "tester", "--password-stdin", &reg.addr],
            password,
        )
    };
    // The CA is not known yet: TLS fails, and a loopback registry that
    // speaks TLS is not retried over plain HTTP as if it had none.
    let out = login(b"berth-secret\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&format!("login to {} failed", reg.addr)),
        "{err}"
    );
    assert!(err.contains("certificate"), "the TLS error is shown: {err}");
    assert!(!env.root.join("auth.json").exists());
    let out = env.berth(&["pull", "-q", &name]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    let certs = env.root.join("certs.d").join(&reg.addr);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), &ca).unwrap();
    let out = login(b"wrong-password\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!env.root.join("auth.json").exists());
    let out = login(b"berth-secret\n");
    assert!(out.status.success(), "{}", stderr(&out));
    env.ok(&["pull", "-q", &name]);
    assert_eq!(env.ok(&["run", "--rm", &name]), "layer 0\n");
}

/// Flips one byte in the middle of the registry's copy of blob `hex`, so
/// its content no longer matches its digest.
fn corrupt_blob(env: &Env, hex: &str) {
    let data = env
        .dir
        .path()
        .join("registry-data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
}
