//! Images: import (OCI layout dir/tar, docker save), images, rmi, prune,
//! hostile and broken archives.

use crate::imgutil::{gzip, sha, tar_dir, LayerBuilder, TestImage};
use crate::util::{stderr, stdout, Env};

fn app_image() -> TestImage {
    let base = LayerBuilder::new()
        .busybox()
        .dir("data", 0o755)
        .file("data/gone", 0o644, b"whited out\n")
        .file("data/old/inner", 0o644, b"in an opaque dir\n")
        .file("data/keep", 0o644, b"kept\n")
        .file("data/suid", 0o4755, b"#!/bin/sh\n")
        .build();
    let top = LayerBuilder::new()
        .dir("data", 0o755)
        .file("data/.wh.gone", 0o644, b"")
        .dir("data/old", 0o755)
        .file("data/old/.wh..wh..opq", 0o644, b"")
        .file("data/old/new", 0o644, b"new\n")
        .file_owned("data/owned", 0o640, 1000, 1001, b"mine\n")
        .file("data/keep", 0o644, b"kept\n")
        .hardlink("data/keep-link", "data/keep")
        .symlink("data/sym", "keep")
        .build();
    TestImage::new(
        vec![base, top],
        serde_json::json!({
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo from-cmd; id -u; id -g; pwd; echo $GREETING"],
            "Env": ["PATH=/bin", "GREETING=hello-env"],
            "WorkingDir": "/data",
            "User": "app",
            "StopSignal": "SIGQUIT",
        }),
    )
}

fn images_json(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str(&env.ok(&["images", "--json"])).unwrap()
}

fn layer_count(env: &Env) -> usize {
    std::fs::read_dir(env.root.join("images/layers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn import_layout_dir_tar_and_docker_save() {
    let Some(env) = Env::stopped() else { return };
    let img = app_image();
    let layout = env.dir.path().join("layout");
    let md = img.write_oci_layout(&layout, Some("example.com/team/app:1.0"));
    let out = env.ok(&["image", "import", layout.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: example.com/team/app:1.0");
    let list = images_json(&env);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["repository"], "example.com/team/app");
    assert_eq!(list[0]["tag"], "1.0");
    assert_eq!(list[0]["digest"], md);
    assert_eq!(list[0]["id"], sha(&img.config_json()));
    assert_eq!(layer_count(&env), 2);

    // The same layout as a tar, under another name: layers are shared.
    let layout2 = env.dir.path().join("layout2");
    img.write_oci_layout(&layout2, Some("example.com/team/app:2.0"));
    let tarball = env.dir.path().join("layout2.tar");
    tar_dir(&layout2, &tarball);
    env.ok(&["image", "import", tarball.to_str().unwrap()]);
    // Docker's format.
    let saved = env.dir.path().join("saved.tar");
    img.write_docker_save(&saved, "busybox-app:latest", None);
    let out = env.ok(&["image", "import", saved.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox-app:latest");
    let list = images_json(&env);
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list.iter().all(|i| i["id"] == sha(&img.config_json())));
    assert_eq!(layer_count(&env), 2, "layers are stored once by diff ID");
    let table = env.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains("busybox-app"), "{table}");

    // rmi: untag one by one; the last removes the image and its layers.
    let out = env.ok(&["rmi", "example.com/team/app:1.0"]);
    assert_eq!(out.trim(), "Untagged: example.com/team/app:1.0");
    env.ok(&["rmi", "example.com/team/app:2.0"]);
    assert_eq!(layer_count(&env), 2);
    let out = env.ok(&["rmi", "busybox-app"]);
    assert!(out.contains("Untagged: busybox-app:latest"), "{out}");
    assert!(
        out.contains(&format!("Deleted: {}", sha(&img.config_json()))),
        "{out}"
    );
    assert!(images_json(&env).is_empty());
    assert_eq!(layer_count(&env), 0, "unused layers are removed");
}

#[test]
fn import_refuses_broken_and_hostile_archives() {
    let Some(env) = Env::stopped() else { return };
    let img = app_image();
    let fails = |path: &std::path::Path, needle: &str| {
        let out = env.berth(&["image", "import", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(images_json(&env).is_empty(), "the store is unchanged");
    };

    // A docker save archive cut short.
    let saved = env.dir.path().join("saved.tar");
    img.write_docker_save(&saved, "app:1", None);
    let data = std::fs::read(&saved).unwrap();
    let cut = env.dir.path().join("cut.tar");
    std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
    fails(&cut, "truncated");

    // A docker save archive missing a layer.
    let missing = env.dir.path().join("missing.tar");
    img.write_docker_save(&missing, "app:1", Some(1));
    fails(&missing, "missing from the archive");

    // A layer blob that is not what the manifest says.
    let layout = env.dir.path().join("tampered");
    img.write_oci_layout(&layout, Some("example.com/app:1"));
    let victim = gzip(&img.layers[1]);
    let victim_path = layout.join("blobs/sha256").join(&sha(&victim)[7..]);
    // Same size, one byte changed in the middle.
    let mut evil = victim.clone();
    let mid = evil.len() / 2;
    evil[mid] ^= 0xff;
    std::fs::write(&victim_path, &evil).unwrap();
    fails(
        &layout,
        &format!(
            "digest mismatch for layer blobs/sha256/{}",
            &sha(&victim)[7..]
        ),
    );
    assert_eq!(layer_count(&env), 1, "only the intact base layer was kept");

    // Not an archive at all.
    let junk = env.dir.path().join("junk");
    std::fs::write(&junk, b"hello").unwrap();
    fails(&junk, "junk");
    fails(&env.dir.path().join("nonexistent"), "nonexistent");
}

/// Layers that try to write outside their directory are refused, and
/// nothing lands outside.
#[test]
fn path_escapes_are_refused() {
    let Some(env) = Env::stopped() else { return };
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "path contains '..'",
            LayerBuilder::new()
                .file("../../../../../escaped", 0o644, b"x")
                .build(),
        ),
        (
            "absolute path",
            LayerBuilder::new()
                .file(&format!("{}/abs", outside.display()), 0o644, b"x")
                .build(),
        ),
        (
            "a parent is a symlink",
            LayerBuilder::new()
                .symlink("evil", outside.to_str().unwrap())
                .file("evil/through-symlink", 0o644, b"x")
                .build(),
        ),
        (
            "a parent is a symlink",
            LayerBuilder::new()
                .symlink("hop", "..")
                .file("hop/through-dotdot-link", 0o644, b"x")
                .build(),
        ),
        (
            "is not in this layer",
            LayerBuilder::new()
                .hardlink("link", "../../../../etc/passwd")
                .build(),
        ),
    ];
    for (i, (needle, layer)) in cases.into_iter().enumerate() {
        let img = TestImage::new(vec![layer], serde_json::json!({"Cmd": ["true"]}));
        let layout = env.dir.path().join(format!("evil{i}"));
        img.write_oci_layout(&layout, Some("example.com/evil:1"));
        let out = env.berth(&["image", "import", layout.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(125), "case {i}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("refused"), "case {i}: {err}");
        if i != 4 {
            assert!(err.contains(needle), "case {i}: expected {needle:?}: {err}");
        } else {
            assert!(
                err.contains("leaves") || err.contains(".."),
                "case {i}: {err}"
            );
        }
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!env.dir.path().join("escaped").exists());
    assert!(images_json(&env).is_empty());
    assert_eq!(layer_count(&env), 0);
    assert_eq!(
        std::fs::read_dir(env.root.join("images/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn rmi_and_names_bad_input() {
    let Some(env) = Env::stopped() else { return };
    for (args, needle) in [
        (vec!["rmi", "nosuchimage"], "no such image: nosuchimage"),
        (vec!["rmi", "Bad/Name"], "invalid image name \"Bad/Name\""),
        (vec!["rmi", "app:tag:x"], "invalid image name"),
    ] {
        let out = env.berth(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    // prune on an empty store is fine.
    let out = env.ok(&["image", "prune", "-a"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
}

fn import_app(env: &Env) -> &'static str {
    let layout = env.dir.path().join("app-layout");
    app_image().write_oci_layout(&layout, Some("example.com/team/app:1.0"));
    env.ok(&["image", "import", layout.to_str().unwrap()]);
    "example.com/team/app:1.0"
}

/// `berth run IMAGE`: the image's Entrypoint, Cmd, Env, WorkingDir and
/// User apply; the user's COMMAND, -e and -w win; the layers stack with
/// whiteouts, opaque dirs, hardlinks, symlinks, owners and modes intact.
#[test]
fn run_image_applies_its_config_and_layers() {
    let Some(env) = Env::new() else { return };
    let img = import_app(&env);
    let out = env.ok(&["run", "--rm", img]);
    assert_eq!(out, "from-cmd\n1000\n1001\n/data\nhello-env\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=over",
        "-w",
        "/tmp",
        img,
        "pwd; echo $GREETING; id -G",
    ]);
    assert_eq!(out, "/tmp\nover\n1001 1002\n");
    let out = env.ok(&[
        "run",
        "--rm",
        img,
        "ls -a /data | tr '\\n' ' '; echo; ls /data/old; stat -c '%h' /data/keep; \
         stat -c '%a %u:%g' /data/owned /data/suid; cat /data/sym; stat -c %Y /data/keep",
    ]);
    assert_eq!(
        out,
        ". .. keep keep-link old owned suid sym \nnew\n2\n640 1000:1001\n4755 0:0\nkept\n1600000000\n"
    );
    // The container's writes stay in its own upper layer.
    assert_eq!(
        env.ok(&["run", "--rm", img, "echo new > /tmp/new; cat /tmp/new"]),
        "new\n"
    );
    assert_eq!(
        env.ok(&["run", "--rm", img, "test -e /tmp/new || echo pristine"]),
        "pristine\n"
    );
    // Docker's order keeps working without an image after `--`.
    assert_eq!(
        env.ok(&["run", "--rm", "--", "echo", "busybox"]),
        "busybox\n"
    );
}

#[test]
fn run_unknown_or_invalid_image_fails_cleanly() {
    let Some(env) = Env::new() else { return };
    for (args, needle) in [
        (vec!["run", "nosuch:1"], "no such image: nosuch:1"),
        (
            vec!["run", "Bad!Name", "true"],
            "invalid image name \"Bad!Name\"",
        ),
    ] {
        let out = env.berth(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let img = import_app(&env);
    // Through the image's `sh -c` entrypoint: the shell's 127.
    let out = env.berth(&["run", "--rm", img, "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    env.assert_clean();
}

/// rmi of an image a container uses is refused; with -f the tag goes but
/// the container keeps its layers until it is removed.
#[test]
fn rmi_while_in_use() {
    let Some(env) = Env::new() else { return };
    let img = import_app(&env);
    let id = env.ok(&["run", "-d", img, "sleep 1000"]).trim().to_string();
    let out = env.berth(&["rmi", img]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!("is in use by container {id}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(images_json(&env).len(), 1);
    let out = env.ok(&["rmi", "-f", img]);
    assert_eq!(out.trim(), "Untagged: example.com/team/app:1.0");
    let list = images_json(&env);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["repository"], "<none>");
    env.ok(&["image", "prune", "-a"]);
    assert_eq!(layer_count(&env), 2, "the container's layers stay");
    let running = env.inspect(&id);
    assert_eq!(running["status"], "running", "{running}");
    env.ok(&["rm", "-f", &id]);
    env.ok(&["image", "prune"]);
    assert!(images_json(&env).is_empty());
    assert_eq!(layer_count(&env), 0);
}

/// `berth stop` sends the image's StopSignal (SIGQUIT here).
#[test]
fn stop_uses_the_image_stop_signal() {
    let Some(env) = Env::new() else { return };
    let img = import_app(&env);
    let id = env
        .ok(&[
            "run",
            "-d",
            img,
            "trap 'exit 7' QUIT; trap 'exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    env.wait_until(10, "the trap to be set", || {
        env.ok(&["logs", &id]).contains("ready")
    });
    env.ok(&["stop", &id]);
    assert_eq!(env.ok(&["wait", &id]).trim(), "7");
    env.ok(&["rm", &id]);
}
