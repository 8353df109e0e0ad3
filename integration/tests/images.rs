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
