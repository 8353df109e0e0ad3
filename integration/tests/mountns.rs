//! Each container's overlay lives in its shim's own mount namespace: the
//! host's mount table never holds it, and nothing is left mounted after
//! the shim and the container die, however they die.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::Env;

/// Mountinfo lines under `dir` in the namespace of `pid` ("self": ours,
/// the host's).
fn mounts_under(pid: &str, dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" overlay ") && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Every process (of any mount namespace) that still sees an overlay
/// under `dir`.
fn holders(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok() && !mounts_under(&name, dir).is_empty() {
            found.push(name);
        }
    }
    found
}

fn pid_file(env: &Env, id: &str, name: &str) -> i32 {
    let p = env.root.join("containers").join(id).join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

/// run -d of several containers (berth's rootfs and an image): their
/// rootfs works, their shims see their overlays, the host sees none.
#[test]
fn overlays_stay_out_of_the_host_mount_table() {
    let Some(env) = Env::new() else { return };
    let layout = env.dir.path().join("mountns-layout");
    let users = crate::imgutil::LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nsvc:x:2345:2346:svc:/tmp:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nsvcg:x:2346:\n")
        .dir("tmp", 0o1777)
        .build();
    crate::imgutil::TestImage::new(
        vec![crate::imgutil::LayerBuilder::new().busybox().build(), users],
        serde_json::json!({"Cmd": ["sleep", "300"], "Env": ["PATH=/bin"]}),
    )
    .write_oci_layout(&layout, Some("example.com/mountns:1"));
    env.ok(&["image", "import", layout.to_str().unwrap()]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = env.ok(&["run", "-d", "--network", "none", "--", "sleep", "300"]);
        ids.push(id.trim().to_string());
    }
    // A name only the image's own /etc/passwd knows, for run and exec.
    let image = env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-u",
        "svc",
        "example.com/mountns:1",
    ]);
    let image = image.trim().to_string();
    assert_eq!(env.ok(&["exec", &image, "id", "-u"]), "2345\n");
    assert_eq!(env.ok(&["exec", "-u", "root", &image, "id", "-u"]), "0\n");
    ids.push(image.clone());
    let containers = env.root.join("containers");
    for id in &ids {
        // The container's files are there: it writes to its own upper.
        env.ok(&["exec", id, "sh", "-c", "echo hi > /tmp/f && cat /tmp/f"]);
        let shim = pid_file(&env, id, "shim.pid").to_string();
        let dir = containers.join(id);
        assert_eq!(
            mounts_under(&shim, &dir).len(),
            1,
            "the shim of {id} should hold its overlay"
        );
        assert!(
            dir.join("upper/tmp/f").is_file(),
            "the write of {id} is in its upper dir"
        );
    }
    assert_eq!(env.ok(&["exec", "-u", "svc", &image, "id", "-g"]), "2346\n");
    // --read-only: the shim's overlay is mounted, the container's / is not writable.
    let ro = env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--read-only",
        "--",
        "sleep",
        "300",
    ]);
    let ro = ro.trim().to_string();
    let wrote = env.berth(&["exec", &ro, "touch", "/x"]);
    assert!(!wrote.status.success(), "a read-only rootfs took a write");
    assert_eq!(
        env.ok(&["exec", &ro, "cat", "/etc/passwd"]).lines().next(),
        Some("root:x:0:0:root:/root:/bin/sh")
    );
    ids.push(ro);
    assert_eq!(
        mounts_under("self", &containers),
        Vec::<String>::new(),
        "no container overlay in the host's mount table"
    );
    for id in &ids {
        env.ok(&["rm", "-f", id]);
    }
    env.wait_until(10, "no overlay held anywhere", || {
        holders(&containers).is_empty()
    });
    env.assert_clean();
}

/// SIGKILL of the shim and the container: nothing is left mounted in any
/// namespace, and the exited container starts again (a new shim mounts
/// its overlay again, over the same upper dir).
#[test]
fn nothing_stays_mounted_after_shim_and_container_are_killed() {
    let Some(env) = Env::new() else { return };
    let id = env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "echo kept > /kept; sleep 300",
    ]);
    let id = id.trim();
    let dir = env.root.join("containers").join(id);
    env.wait_until(10, "the container's write", || {
        dir.join("upper/kept").is_file()
    });
    let shim = pid_file(&env, id, "shim.pid");
    let init = pid_file(&env, id, "init.pid");
    // The shim's namespace, and the container's (its `/`).
    let held = holders(&dir);
    assert!(
        held.contains(&shim.to_string()) && held.contains(&init.to_string()),
        "{held:?}"
    );
    kill(Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(init), Signal::SIGKILL).unwrap();
    env.wait_until(10, "no overlay held anywhere", || holders(&dir).is_empty());
    env.wait_until(10, "the container seen as exited", || {
        env.inspect(id)["State"]["Running"] == false
    });
    env.ok(&["start", id]);
    assert_eq!(env.ok(&["exec", id, "cat", "/kept"]), "kept\n");
    assert!(mounts_under("self", &dir).is_empty());
    env.ok(&["rm", "-f", id]);
    env.wait_until(10, "no overlay held anywhere", || holders(&dir).is_empty());
    env.assert_clean();
}

/// A shim's mount namespace holds only the network namespace pins its
/// container joins. It starts as a copy of the host's, with the pin of
/// every earlier bridge container, which the shim leaves behind before the
/// runtime runs (the runtime would copy and walk each of them again on
/// every start; a start at 1,000 such mounts took ~20 ms longer): so no
/// shim keeps another container's network namespace alive either. A
/// `container:` network joins through the other container's process
/// (`/proc/PID/ns/net`, as Docker's), so its shim holds no pin at all.
#[test]
fn a_shim_holds_only_the_netns_pins_its_container_joins() {
    let Some(env) = Env::new() else { return };
    let a = env.ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    let a = a.trim();
    let b = env.ok(&["run", "-d", "--name", "b", "--", "sleep", "300"]);
    let b = b.trim();
    let c = env.ok(&[
        "run",
        "-d",
        "--network",
        "container:b",
        "--",
        "sleep",
        "300",
    ]);
    let c = c.trim();
    let pin = |id: &str| {
        runtime_core::layout::netns_in(&env.root.join("containers").join(id))
            .to_string_lossy()
            .into_owned()
    };
    let pins_held_by = |id: &str| -> Vec<String> {
        let shim = pid_file(&env, id, "shim.pid");
        let all = [a, b, c];
        std::fs::read_to_string(format!("/proc/{shim}/mountinfo"))
            .unwrap()
            .lines()
            .filter(|l| l.contains(" nsfs "))
            .filter_map(|l| all.iter().find(|x| l.contains(&pin(x))))
            .map(|x| x.to_string())
            .collect()
    };
    assert_eq!(pins_held_by(b), [b], "b's shim: its own pin only");
    assert!(pins_held_by(c).is_empty(), "c's shim: no pin");
    // c runs in b's network namespace all the same.
    let ns = |id: &str| {
        let pid = env.inspect(id)["pid"].as_i64().unwrap();
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
    };
    assert_eq!(ns(c), ns(b));
    for id in [c, b, a] {
        env.ok(&["rm", "-f", id]);
    }
    env.assert_clean();
}

/// On a host whose `/` is shared (every systemd host; this VM's is
/// private, so berthd runs here in a mount namespace of its own with
/// shared propagation), a namespace pin made after a shim started must
/// not reach that shim's mount namespace: otherwise N bridge containers
/// cost N^2 mounts and each start propagates into N namespaces.
#[test]
fn a_later_containers_netns_pin_does_not_reach_an_earlier_shim_on_a_shared_host() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.berthd_wrapper = ["unshare", "-m", "--propagation", "shared"]
        .map(String::from)
        .to_vec();
    env.start_berthd();
    let b = env.ok(&["run", "-d", "--", "sleep", "300"]);
    let b = b.trim().to_string();
    let b_shim = pid_file(&env, &b, "shim.pid");
    let mut later = Vec::new();
    for _ in 0..3 {
        let a = env.ok(&["run", "-d", "--", "sleep", "300"]);
        later.push(a.trim().to_string());
    }
    let info = std::fs::read_to_string(format!("/proc/{b_shim}/mountinfo")).unwrap();
    let nsfs: Vec<&str> = info.lines().filter(|l| l.contains(" nsfs ")).collect();
    // b's own pin is there (runc joined it); no later one is.
    assert!(nsfs.iter().any(|l| l.contains(b.as_str())), "{nsfs:#?}");
    for a in &later {
        assert!(
            !nsfs.iter().any(|l| l.contains(a.as_str())),
            "{a}'s netns pin reached b's shim: {nsfs:#?}"
        );
    }
    for id in later.iter().chain([&b]) {
        env.ok(&["rm", "-f", id]);
    }
    env.assert_clean();
    // Stopped with no container left, berthd leaves nothing mounted.
    env.stop_berthd();
}
