//! Real services (issue 12): networks through the CNI plugins on the
//! test's own bridge and subnet, published ports on loopback, mounts,
//! users, limits, security defaults, --init, and that nothing network-
//! related is ever left behind (counted before and after).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{stderr, stdout, Env};

/// A plain HTTP GET to 127.0.0.1:port; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn id_of(out: &str) -> String {
    out.trim().to_string()
}

fn assert_no_leftovers(env: &Env, ids: &[&str]) {
    let mut left = Vec::new();
    env.wait_until(10, "network teardown", || {
        left = env.net_leftovers(ids);
        left.is_empty()
    });
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn published_port_answers_on_loopback_and_containers_reach_each_other() {
    let Some(env) = Env::new() else { return };
    assert!(
        env.net_leftovers(&[]).is_empty(),
        "{:?}",
        env.net_leftovers(&[])
    );
    let www = env.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "served by berth\n").unwrap();
    let port = env.net.port;
    let publish = format!("127.0.0.1:{port}:80");
    let volume = format!("{}:/www:ro", www.display());
    let web = id_of(&env.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, "-v", &volume, "--", "httpd", "-f", "-p",
        "80", "-h", "/www",
    ]));
    let mut body = None;
    env.wait_until(10, "httpd to answer on 127.0.0.1", || {
        body = http_get(port, "/index.html");
        body.is_some()
    });
    assert_eq!(body.as_deref(), Some("served by berth\n"));
    assert_eq!(
        env.ok(&["port", "web"]).trim(),
        format!("80/tcp -> 127.0.0.1:{port}")
    );
    let info = env.inspect("web");
    let ip = info["network"]["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        ip.starts_with(&env.net.prefix),
        "{ip} not in {}",
        env.net.subnet
    );
    assert_eq!(info["network"]["mode"], "bridge");
    assert_eq!(info["network"]["bridge"], env.net.bridge.as_str());
    // /etc/hosts names the container at its address.
    let hosts = env.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "--",
        "cat",
        "/etc/hosts",
    ]);
    assert!(hosts.contains(&format!("{ip}\tweb")), "{hosts}");
    // Another container on the bridge reaches it by address.
    let url = format!("http://{ip}/index.html");
    let got = env.ok(&["run", "--rm", "--", "wget", "-qO-", &url]);
    assert_eq!(got, "served by berth\n");
    // While it runs, the host holds its veth, lease, rules and namespace.
    assert!(!env.net_leftovers(&[&web]).is_empty());
    env.ok(&["rm", "-f", "web"]);
    assert!(http_get(port, "/index.html").is_none_or(|b| b.is_empty()));
    assert_no_leftovers(&env, &[&web]);
    env.assert_clean();
}

/// Interface names in a /proc/net/dev listing.
fn interfaces(dev: &str) -> Vec<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn none_has_only_lo_host_sees_the_hosts_container_joins_another() {
    let Some(env) = Env::new() else { return };
    let none = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--",
        "cat",
        "/proc/net/dev",
    ]);
    assert_eq!(interfaces(&none), vec!["lo"], "{none}");
    let host_ifaces = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let host = env.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--",
        "cat",
        "/proc/net/dev",
    ]);
    let seen = interfaces(&host);
    // Interfaces come and go as other tests run; the stable ones match.
    let stable: Vec<&String> = host_ifaces
        .iter()
        .filter(|i| *i != "lo" && !i.starts_with("veth") && !i.starts_with("bt"))
        .collect();
    assert!(!stable.is_empty());
    for i in stable {
        assert!(
            seen.contains(i),
            "host interface {i} not seen with --network host: {seen:?}"
        );
    }
    let a = id_of(&env.ok(&["run", "-d", "--name", "a", "--", "sleep", "1000"]));
    let ip = env.inspect("a")["network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let joined = env.ok(&[
        "run",
        "--rm",
        "--network",
        "container:a",
        "--",
        "ip",
        "addr",
    ]);
    assert!(joined.contains(&ip), "{ip} not in {joined}");
    env.ok(&["rm", "-f", "a"]);
    assert_no_leftovers(&env, &[&a]);
    env.assert_clean();
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let Some(env) = Env::new() else { return };
    let data = env.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in"), "from host").unwrap();
    let rw = format!("{}:/data", data.display());
    let out = env.ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        "--",
        "sh",
        "-c",
        "cat /data/in; echo out > /data/out",
    ]);
    assert_eq!(out, "from host");
    assert_eq!(std::fs::read_to_string(data.join("out")).unwrap(), "out\n");
    let ro = format!("{}:/data:ro", data.display());
    let o = env.berth(&["run", "--rm", "-v", &ro, "--", "touch", "/data/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    let m = format!("type=bind,src={},dst=/d,readonly", data.display());
    let o = env.berth(&[
        "run",
        "--rm",
        "--mount",
        &m,
        "--",
        "sh",
        "-c",
        "cat /d/in && touch /d/y",
    ]);
    assert_eq!(stdout(&o), "from host");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!data.join("x").exists() && !data.join("y").exists());
    // --read-only root with a writable tmpfs.
    let o = env.berth(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--",
        "sh",
        "-c",
        "touch /tmp/ok && echo tmp-ok; touch /x",
    ]);
    assert_eq!(stdout(&o), "tmp-ok\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    env.assert_clean();
}

#[test]
fn bind_over_a_symlink_stays_inside_the_rootfs() {
    let Some(env) = Env::new() else { return };
    let rootfs = env.dir.path().join("rootfs");
    crate::util::make_rootfs(&rootfs);
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // An absolute symlink in the rootfs naming a host directory.
    std::os::unix::fs::symlink(&outside, rootfs.join("link")).unwrap();
    let src = env.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "mounted").unwrap();
    let v = format!("{}:/link", src.display());
    let r = rootfs.display().to_string();
    let out = env.ok(&[
        "run", "--rm", "--rootfs", &r, "-v", &v, "--", "cat", "/link/f",
    ]);
    assert_eq!(out, "mounted");
    // The host directory the link names was never mounted over or written.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*outside.to_string_lossy()));
    env.assert_clean();
}

#[test]
fn users_by_number_and_name() {
    let Some(env) = Env::new() else { return };
    let o = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "1000:1000",
        "--",
        "id",
    ]);
    assert!(o.starts_with("uid=1000 gid=1000"), "{o}");
    let o = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "nobody",
        "--group-add",
        "root",
        "--",
        "id",
    ]);
    assert!(o.starts_with("uid=65534(nobody) gid=65534(nogroup)"), "{o}");
    assert!(o.contains("groups=") && o.contains("0(root)"), "{o}");
    // A non-root user starts with no effective capabilities, as under Docker.
    let o = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "1000",
        "--",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(o.trim(), "CapEff:\t0000000000000000");
    env.assert_clean();
}

/// `-u NAME` with `run IMAGE`: the name is looked up in the image's own
/// /etc/passwd and /etc/group (read from its layers: the overlay is not
/// mounted yet when the user is resolved), and wins over the image's User.
#[test]
fn users_by_name_from_an_images_own_passwd() {
    let Some(env) = Env::new() else { return };
    let base = crate::imgutil::LayerBuilder::new().busybox().build();
    let top = crate::imgutil::LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nsvc:x:2345:2346:svc:/srv:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\nsvcg:x:2346:\nops:x:2400:svc\n",
        )
        .dir("srv", 0o755)
        .build();
    let layout = env.dir.path().join("users-layout");
    crate::imgutil::TestImage::new(
        vec![base, top],
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "User": "root"}),
    )
    .write_oci_layout(&layout, Some("example.com/users:1"));
    env.ok(&["image", "import", layout.to_str().unwrap()]);
    let img = "example.com/users:1";
    let script = "id -u; id -g; id -G; echo $HOME";
    let run = |user: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(user);
        args.extend_from_slice(&[img, "sh", "-c", script]);
        env.ok(&args)
    };
    assert_eq!(run(&["-u", "svc"]), "2345\n2346\n2346 2400\n/srv\n");
    assert_eq!(run(&["-u", "svc:ops"]), "2345\n2400\n2400\n/srv\n");
    assert_eq!(
        run(&["-u", "2345", "--group-add", "ops"]),
        "2345\n2346\n2346 2400\n/srv\n"
    );
    // Without -u the image's User (root here) applies.
    assert_eq!(run(&[]), "0\n0\n0\n/root\n");
    // A name the image does not have: one line, 125, nothing left.
    let out = env.berth(&["run", "--rm", "-u", "nosuch", img, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(
        stderr(&out).trim(),
        "berth: unable to find user nosuch: no matching entries in the container's /etc/passwd"
    );
    assert!(env.ok(&["ps", "-aq"]).trim().is_empty());
    env.assert_clean();
}

/// The cgroup file of a running container, v1 or v2 names.
fn cgroup_value(env: &Env, v1: &str, v2: &str) -> String {
    let v2_host = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && !std::path::Path::new("/sys/fs/cgroup/memory").exists();
    let file = if v2_host { v2 } else { v1 };
    env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "50",
        "--",
        "cat",
        file,
    ])
    .trim()
    .to_string()
}

#[test]
fn limits_reach_the_cgroup() {
    let Some(env) = Env::new() else { return };
    let v2 = !std::path::Path::new("/sys/fs/cgroup/memory").exists();
    assert_eq!(
        cgroup_value(
            &env,
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory.max"
        ),
        "67108864"
    );
    let cpu = cgroup_value(
        &env,
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        "/sys/fs/cgroup/cpu.max",
    );
    assert_eq!(cpu, if v2 { "50000 100000" } else { "50000" });
    assert_eq!(
        cgroup_value(
            &env,
            "/sys/fs/cgroup/pids/pids.max",
            "/sys/fs/cgroup/pids.max"
        ),
        "50"
    );
    if !v2 {
        assert_eq!(
            cgroup_value(&env, "/sys/fs/cgroup/cpu/cpu.shares", ""),
            "512"
        );
        if std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                cgroup_value(
                    &env,
                    "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                    ""
                ),
                "134217728"
            );
        }
    }
    // Stored, and shown by inspect.
    let id = id_of(&env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "--label",
        "app=web",
        "--stop-signal",
        "SIGQUIT",
        "--stop-timeout",
        "3",
        "-u",
        "nobody",
        "--",
        "sleep",
        "1000",
    ]));
    let check = |env: &Env| {
        let o = &env.inspect(&id)["options"];
        assert_eq!(o["limits"]["memory"], 64 << 20);
        assert_eq!(o["limits"]["pids_limit"], 50);
        assert_eq!(o["labels"]["app"], "web");
        assert_eq!(o["stop_signal"], "SIGQUIT");
        assert_eq!(o["stop_timeout"], 3);
        assert_eq!(o["user"], "nobody");
        assert_eq!(o["network"], "none");
    };
    check(&env);
    let mut env = env;
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    check(&env);
    env.ok(&["rm", "-f", &id]);
    env.assert_clean();
}

#[test]
fn docker_security_defaults_and_overrides() {
    let Some(env) = Env::new() else { return };
    let status = |args: &[&str]| {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[
            "--",
            "grep",
            "-E",
            "^(CapEff|CapBnd|Seccomp|NoNewPrivs):",
            "/proc/self/status",
        ]);
        env.ok(&a)
    };
    let d = status(&[]);
    // Docker's 14 default capabilities.
    assert!(d.contains("CapEff:\t00000000a80425fb"), "{d}");
    assert!(d.contains("Seccomp:\t2"), "{d}");
    assert!(d.contains("NoNewPrivs:\t0"), "{d}");
    let p = status(&["--privileged"]);
    assert!(p.contains("Seccomp:\t0"), "{p}");
    assert!(!p.contains("CapEff:\t00000000a80425fb"), "{p}");
    let c = status(&["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"]);
    assert!(c.contains("CapEff:\t0000000000000400"), "{c}");
    let n = status(&[
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        "seccomp=unconfined",
    ]);
    assert!(
        n.contains("NoNewPrivs:\t1") && n.contains("Seccomp:\t0"),
        "{n}"
    );
    // Masked /proc paths read empty (here on the host it has content);
    // chown works (CAP_CHOWN), as under Docker.
    assert!(!std::fs::read_to_string("/proc/timer_list")
        .unwrap()
        .is_empty());
    let o = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "wc -c < /proc/timer_list; touch /f && chown 1000 /f && echo chown-ok",
    ]);
    assert_eq!(o, "0\nchown-ok\n");
    // Without the defaults (runc spec's 3 capabilities) chown fails.
    let o = env.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-drop",
        "CHOWN",
        "--",
        "sh",
        "-c",
        "touch /f && chown 1000 /f",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    env.assert_clean();
}

/// Children of `pid` in zombie state.
fn zombie_children(pid: i64) -> Vec<i64> {
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|s| s.parse::<i64>().ok()) == Some(pid) {
            z.push(p);
        }
    }
    z
}

#[test]
fn init_reaps_an_orphan_zombie() {
    let Some(env) = Env::new() else { return };
    // The orphan `sleep 0.2` is reparented to PID 1; `exec sleep` never reaps.
    let script = "(sleep 0.2 &); exec sleep 1000";
    let plain = id_of(&env.ok(&["run", "-d", "--network", "none", "--", "sh", "-c", script]));
    let init = id_of(&env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--init",
        "--",
        "sh",
        "-c",
        script,
    ]));
    let plain_pid = env.inspect(&plain)["pid"].as_i64().unwrap();
    let init_pid = env.inspect(&init)["pid"].as_i64().unwrap();
    // Without an init the zombie stays: the test can tell the difference.
    env.wait_until(10, "a zombie under a PID 1 that does not reap", || {
        !zombie_children(plain_pid).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(zombie_children(init_pid).is_empty());
    let cmdline = std::fs::read_to_string(format!("/proc/{init_pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("/dev/init\0--\0sh"), "{cmdline:?}");
    env.ok(&["rm", "-f", &plain, &init]);
    env.assert_clean();
}

/// Runs berth expecting exit 125 and one line naming the problem, and
/// that nothing (container, network, mount) was left.
fn refused(env: &Env, args: &[&str], message: &str) {
    let o = env.berth(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
    assert!(err.contains(message), "{args:?}: {err:?} lacks {message:?}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert_no_leftovers(env, &[]);
    env.assert_clean();
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing() {
    let Some(env) = Env::new() else { return };
    // Create the bridge first, so leftovers would be countable on it.
    env.ok(&["run", "--rm", "--", "true"]);
    let port = env.net.port;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let taken = format!("127.0.0.1:{port}:80");
    refused(
        &env,
        &["run", "--rm", "-p", &taken, "--", "true"],
        &format!("port 127.0.0.1:{port}/tcp is already in use"),
    );
    drop(listener);
    refused(
        &env,
        &["run", "--rm", "--network", "overlay", "--", "true"],
        "unknown network mode",
    );
    refused(
        &env,
        &["run", "--rm", "-p", "80", "--", "true"],
        "invalid -p \"80\"",
    );
    refused(
        &env,
        &["run", "--rm", "-p", "1:2:3:4", "--", "true"],
        "invalid -p",
    );
    refused(
        &env,
        &["run", "--rm", "-v", "rel/dir:/x", "--", "true"],
        "is relative",
    );
    refused(
        &env,
        &["run", "--rm", "-v", "/nonexistent/berth:/x", "--", "true"],
        "bind source path does not exist: /nonexistent/berth",
    );
    refused(
        &env,
        &["run", "--rm", "-u", "nosuchuser", "--", "true"],
        "unable to find user nosuchuser",
    );
    refused(
        &env,
        &["run", "--rm", "--memory", "1x", "--", "true"],
        "invalid --memory \"1x\"",
    );
    refused(
        &env,
        &["run", "--rm", "--cpus", "-1", "--", "true"],
        "invalid --cpus \"-1\"",
    );
    refused(
        &env,
        &["run", "--rm", "--network", "container:nosuch", "--", "true"],
        "container:nosuch",
    );
    refused(
        &env,
        &["run", "--rm", "--cap-add", "NOPE", "--", "true"],
        "unknown capability",
    );
    // A host port another container publishes.
    let a = id_of(&env.ok(&[
        "run", "-d", "--name", "a", "-p", &taken, "--", "sleep", "1000",
    ]));
    let o = env.berth(&["run", "--rm", "-p", &taken, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("already published by container a"),
        "{}",
        stderr(&o)
    );
    env.ok(&["rm", "-f", &a]);
    assert_no_leftovers(&env, &[&a]);
    // `run --rm -p` back to back: the previous one's removal (in the
    // background) does not hold the port against the next.
    for _ in 0..4 {
        env.ok(&["run", "--rm", "-p", &taken, "--", "true"]);
    }
    assert_no_leftovers(&env, &[]);
}

#[test]
fn berthd_killed_mid_network_setup_or_while_running_leaks_nothing() {
    for step in ["after-netns", "after-shim"] {
        let Some(mut env) = Env::stopped() else {
            return;
        };
        env.berthd_env = vec![("BERTH_TEST_CRASH_AT".into(), step.into())];
        env.start_berthd();
        let publish = format!("127.0.0.1:{}:80", env.net.port);
        let out = env.berth(&[
            "run", "-d", "--name", "c", "-p", &publish, "--", "sleep", "1000",
        ]);
        assert!(!out.status.success(), "{step}: run succeeded");
        assert!(
            !env.wait_berthd_exit().success(),
            "{step}: berthd did not die"
        );
        // The namespace and the CNI chain were set up before the crash.
        assert!(
            !env.net_leftovers(&[]).is_empty(),
            "{step}: nothing was set up"
        );
        let ids: Vec<String> = std::fs::read_dir(env.root.join("containers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        env.berthd_env.clear();
        env.start_berthd();
        if step == "after-shim" {
            env.wait_until(10, "adoption", || env.inspect("c")["status"] == "running");
            env.ok(&["rm", "-f", "c"]);
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_no_leftovers(&env, &ids);
        env.assert_clean();
    }
}

/// Waits for a container to print "ready" (its traps are set: a signal
/// sent before would find the shell's defaults).
fn traps_set(env: &Env, id: &str) {
    env.wait_until(10, "the traps", || {
        stdout(&env.berth(&["logs", id])).contains("ready")
    });
}

#[test]
fn stop_uses_the_containers_stop_signal_and_timeout() {
    let Some(env) = Env::new() else { return };
    // It exits 7 on SIGUSR1 and ignores SIGTERM: only the stored signal stops it.
    let a = id_of(&env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--stop-signal",
        "USR1",
        "--",
        "sh",
        "-c",
        "trap 'exit 7' USR1; trap '' TERM; echo ready; while true; do sleep 0.1; done",
    ]));
    traps_set(&env, &a);
    env.ok(&["stop", &a]);
    assert_eq!(env.inspect(&a)["exit_code"], 7);
    // It ignores its stop signal: SIGKILL after the stored timeout (137).
    let b = id_of(&env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--stop-signal",
        "USR2",
        "--stop-timeout",
        "1",
        "--",
        "sh",
        "-c",
        "trap '' USR2; echo ready; while true; do sleep 0.1; done",
    ]));
    traps_set(&env, &b);
    env.ok(&["stop", &b]);
    assert_eq!(env.inspect(&b)["exit_code"], 137);
    // -s on the command line still wins.
    let c = id_of(&env.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--stop-signal",
        "USR1",
        "--",
        "sh",
        "-c",
        "trap 'exit 7' USR1; trap 'exit 8' HUP; echo ready; while true; do sleep 0.1; done",
    ]));
    traps_set(&env, &c);
    env.ok(&["stop", "-s", "HUP", &c]);
    assert_eq!(env.inspect(&c)["exit_code"], 8);
    env.ok(&["rm", &a, &b, &c]);
    env.assert_clean();
}

#[test]
fn an_exited_container_runs_again_with_its_network() {
    let Some(env) = Env::new() else { return };
    let a = id_of(&env.ok(&["run", "-d", "--name", "a", "--", "sleep", "1000"]));
    let b = id_of(&env.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "container:a",
        "--",
        "sh",
        "-c",
        "ip addr; sleep 1000",
    ]));
    env.ok(&["kill", "-s", "KILL", "b"]);
    env.ok(&["kill", "-s", "KILL", "a"]);
    env.wait_until(10, "both to exit", || {
        env.inspect("a")["status"] == "exited" && env.inspect("b")["status"] == "exited"
    });
    // Exited, a has given its network up (as after a reboot, its
    // namespace is gone): start sets it up anew.
    assert_no_leftovers(&env, &[&a]);
    env.ok(&["start", "a"]);
    let ip2 = env.inspect("a")["network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip2.starts_with(&env.net.prefix), "{ip2}");
    let out = env.ok(&[
        "run",
        "--rm",
        "--network",
        "container:a",
        "--",
        "ip",
        "addr",
    ]);
    assert!(out.contains(&ip2), "{ip2} not in {out}");
    // b joins a as it runs now (another PID than when b was made).
    env.ok(&["start", "b"]);
    env.wait_until(10, "b to print its addresses again", || {
        stdout(&env.berth(&["logs", "b"])).matches(&*ip2).count() >= 1
            && stdout(&env.berth(&["logs", "b"])).matches(" lo").count() >= 2
    });
    env.ok(&["rm", "-f", "b", "a"]);
    assert_no_leftovers(&env, &[&a, &b]);
    env.assert_clean();
}

/// A directory with an index.html saying "served by NAME", as a `-v`
/// argument mounting it read-only at /www.
fn site(env: &Env, name: &str) -> String {
    let www = env.dir.path().join(format!("www-{name}"));
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), format!("served by {name}\n")).unwrap();
    format!("{}:/www:ro", www.display())
}

/// Waits until the test's port answers with `who`'s site.
fn serves(env: &Env, who: &str) {
    let port = env.net.port;
    let want = format!("served by {who}\n");
    env.wait_until(10, &format!("{who} to answer on port {port}"), || {
        http_get(port, "/index.html").as_deref() == Some(want.as_str())
    });
}

/// As Docker: a stopped container gives its published port up (with its
/// address, veth, namespace and rules) and takes it again when it starts;
/// meanwhile another container may publish the port, and then the start
/// is refused. Creates racing for one port: exactly one gets it (the
/// check runs under the lock that reserves the container).
#[test]
fn published_ports_are_released_at_stop_and_taken_again_at_start() {
    let Some(env) = Env::new() else { return };
    let port = env.net.port;
    let publish = format!("127.0.0.1:{port}:80");
    let site = |name: &str| site(&env, name);
    let run_args = |name: &'static str, volume: &str| -> Vec<String> {
        [
            "run", "-d", "--name", name, "-p", &publish, "-v", volume, "--", "httpd", "-f", "-p",
            "80", "-h", "/www",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let serves = |who: &str| serves(&env, who);
    let va = site("a");
    let args = run_args("a", &va);
    let a = id_of(&env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    serves("a");
    env.ok(&["stop", "-t", "1", "a"]);
    assert_no_leftovers(&env, &[&a]);
    assert_eq!(env.ok(&["port", "a"]), "");
    // Three creates at once for the port a gave up: one wins.
    let vb = site("b");
    let racers: Vec<_> = ["b1", "b2", "b3"]
        .into_iter()
        .map(|name| {
            let args = run_args(name, &vb);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (
                name,
                env.cmd(&args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut winners = Vec::new();
    for (name, child) in racers {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            winners.push(name);
        } else {
            let err = stderr(&out);
            assert!(
                err.contains("is already published by container b"),
                "{name}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let b = winners[0];
    serves("b");
    // a cannot take its port back while b holds it; it stays exited.
    let out = env.berth(&["start", "a"]);
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "host port {port}/tcp is already published by container {b}"
        )),
        "{err}"
    );
    assert_eq!(env.inspect("a")["status"], "exited");
    env.ok(&["rm", "-f", b]);
    env.ok(&["start", "a"]);
    serves("a");
    assert_eq!(
        env.ok(&["port", "a"]).trim(),
        format!("80/tcp -> 127.0.0.1:{port}")
    );
    env.ok(&["rm", "-f", "a"]);
    assert_no_leftovers(&env, &[&a]);
    env.assert_clean();
}

/// The port window: an exited container's port mappings (iptables rules)
/// exist until its network is released, after the exit (or by the
/// removal of `--rm`), in the background. A `run -p` of the same port
/// right after the exit waits for that release instead of setting its
/// own rules up beside the old ones. The release is slowed down here (a
/// portmap wrapper sleeps before its DEL) so the window is wide open:
/// without the wait the new `run` returns while the old rules still
/// exist.
#[test]
fn a_port_freed_by_an_exit_is_taken_once_the_old_rules_are_gone() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut env) = Env::stopped() else {
        return;
    };
    let cni = env.dir.path().join("cni");
    std::fs::create_dir(&cni).unwrap();
    for e in std::fs::read_dir("/usr/lib/cni").unwrap().flatten() {
        if e.file_name() != "portmap" {
            std::os::unix::fs::symlink(e.path(), cni.join(e.file_name())).unwrap();
        }
    }
    let portmap = cni.join("portmap");
    std::fs::write(
        &portmap,
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && sleep 3\nexec /usr/lib/cni/portmap\n",
    )
    .unwrap();
    std::fs::set_permissions(&portmap, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.berthd_args = vec!["--cni-path".into(), cni.display().to_string()];
    env.start_berthd();

    let port = env.net.port;
    let publish = format!("127.0.0.1:{port}:80");
    let site = |name: &str| site(&env, name);
    let web = |name: &str| -> String {
        let volume = site(name);
        id_of(&env.ok(&[
            "run", "-d", "--name", name, "-p", &publish, "-v", &volume, "--", "httpd", "-f", "-p",
            "80", "-h", "/www",
        ]))
    };
    let serves = |who: &str| serves(&env, who);
    // Rules that name the container (portmap's DNAT chain, the bridge
    // plugin's masquerade), not the subnet the next container shares.
    let rules_of = |id: &str| -> Vec<String> {
        env.net
            .iptables_rules(&[id])
            .into_iter()
            .filter(|r| r.contains(id))
            .collect()
    };

    // Stopped: its rules are released in the background.
    let a = web("a");
    serves("a");
    assert!(!rules_of(&a).is_empty(), "a runs without port mappings");
    env.ok(&["stop", "-t", "1", "a"]);
    let b = web("b");
    assert_eq!(
        rules_of(&a),
        Vec::<String>::new(),
        "a's rules outlived b's run"
    );
    serves("b");
    assert_eq!(env.inspect("a")["status"], "exited");
    env.ok(&["rm", "-f", "b"]);

    // `--rm`: removed (its network with it) after the client has left.
    env.ok(&["run", "--rm", "--name", "c", "-p", &publish, "--", "true"]);
    let d = web("d");
    // Every container's rules carry its ID: only d's may exist now.
    let others: Vec<String> = env
        .net
        .iptables_rules(&[])
        .into_iter()
        .filter(|r| r.contains(" id: ") && !r.contains(&d))
        .collect();
    assert_eq!(others, Vec::<String>::new(), "c's rules outlived d's run");
    assert!(!rules_of(&d).is_empty(), "d runs without port mappings");
    serves("d");
    env.ok(&["rm", "-f", "d", "a"]);
    assert_no_leftovers(&env, &[&a, &b, &d]);
    env.assert_clean();
}

/// `--env-file` reaches the process (`-e` wins over the file, as
/// Docker), and a bridge container's network (mode, address, ports)
/// shows in inspect the same after berthd is killed and restarted.
#[test]
fn env_file_reaches_the_process_and_the_network_survives_a_berthd_restart() {
    let Some(mut env) = Env::new() else { return };
    let file = env.dir.path().join("env");
    std::fs::write(&file, "# comment\nA=from-file\nC=from-file\n").unwrap();
    let file = file.display().to_string();
    let publish = format!("127.0.0.1:{}:80", env.net.port);
    let id = id_of(&env.ok(&[
        "run",
        "-d",
        "--name",
        "e",
        "--env-file",
        &file,
        "-e",
        "C=from-flag",
        "-p",
        &publish,
        "--",
        "sh",
        "-c",
        "echo \"$A $C\"; sleep 1000",
    ]));
    env.wait_until(10, "the environment in the log", || {
        stdout(&env.berth(&["logs", "e"])).contains("from-file from-flag")
    });
    let before = env.inspect("e")["network"].clone();
    assert_eq!(before["mode"], "bridge", "{before}");
    assert!(
        before["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with(&env.net.prefix)),
        "{before}"
    );
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    assert_eq!(env.inspect("e")["network"], before);
    assert_eq!(
        env.ok(&["port", "e"]).trim(),
        format!("80/tcp -> 127.0.0.1:{}", env.net.port)
    );
    env.ok(&["rm", "-f", "e"]);
    assert_no_leftovers(&env, &[&id]);
    env.assert_clean();
}

/// The bridge's fixed rules (the subnet's masquerade, FORWARD accepts)
/// are installed once: a berthd restart does not stack them; a clean stop
/// with no container left removes them; a running bridge container keeps
/// them across a stop.
#[test]
fn the_bridges_fixed_rules_are_installed_once_and_leave_with_the_last_container() {
    let Some(mut env) = Env::new() else { return };
    let tag = runtime_core::net::fixed::comment(&env.net.bridge);
    let fixed = |env: &Env| -> Vec<String> {
        env.net
            .iptables_rules(&[&tag])
            .into_iter()
            .filter(|r| r.contains(&tag))
            .collect()
    };
    let id = env
        .ok(&["run", "-d", "--", "sleep", "300"])
        .trim()
        .to_string();
    assert_eq!(fixed(&env).len(), 3, "{:?}", fixed(&env));
    env.kill_berthd();
    env.start_berthd();
    env.wait_restored();
    env.wait_until(10, "berthd's start-up to settle", || fixed(&env).len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fixed(&env).len(), 3, "stacked: {:?}", fixed(&env));
    // Stopped with a bridge container running: the rules stay for it.
    env.stop_berthd();
    assert_eq!(fixed(&env).len(), 3, "{:?}", fixed(&env));
    env.start_berthd();
    env.wait_restored();
    env.ok(&["rm", "-f", &id]);
    env.stop_berthd();
    assert_eq!(fixed(&env), Vec::<String>::new());
}
