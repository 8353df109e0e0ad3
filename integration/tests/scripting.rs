//! The scripting surface (issue 11): ps flags, filters and formats,
//! inspect's Docker layout and templates, version, info, completions and
//! man pages, against a real berthd.

use std::process::Command;

use crate::util::{stderr, stdout, Env};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn ps_flags_filters_and_formats() {
    let Some(env) = Env::new() else { return };
    let a = env.ok(&["run", "-d", "--name", "first", "--", "sh", "-c", "exit 3"]);
    assert_eq!(env.ok(&["wait", "first"]), "3\n");
    let b = env.ok(&["run", "-d", "--name", "second", "--", "sleep", "100"]);
    let c = env.ok(&[
        "run", "-d", "--label", "tier=db", "--name", "third", "--", "sleep", "100",
    ]);
    let (a, b, c) = (a.trim(), b.trim(), c.trim());

    // -q: running only, newest first, IDs cut to 12 as Docker's.
    assert_eq!(
        env.ok(&["ps", "-q"]),
        format!("{}\n{}\n", &c[..12], &b[..12])
    );
    assert_eq!(
        env.ok(&["ps", "-aq", "--no-trunc"]),
        format!("{c}\n{b}\n{a}\n")
    );
    assert_eq!(
        env.ok(&["ps", "-q", "-n", "2", "--no-trunc"]),
        format!("{c}\n{b}\n")
    );
    assert_eq!(env.ok(&["ps", "-ql", "--no-trunc"]), format!("{c}\n"));
    // A status filter looks at every container, as Docker's does.
    assert_eq!(
        env.ok(&["ps", "-q", "--filter", "status=exited", "--no-trunc"]),
        format!("{a}\n")
    );
    assert_eq!(
        env.ok(&[
            "ps",
            "-aq",
            "--no-trunc",
            "-f",
            "name=ir",
            "-f",
            "status=running"
        ]),
        format!("{c}\n")
    );
    assert_eq!(
        env.ok(&["ps", "-aq", "--no-trunc", "--filter", "label=tier=db"]),
        format!("{c}\n")
    );
    assert_eq!(env.ok(&["ps", "-aq", "--filter", "label=tier=web"]), "");
    assert_eq!(
        env.ok(&["ps", "-q", "--no-trunc", "--filter", "label=tier"]),
        format!("{c}\n")
    );

    // Go templates over Docker's fields.
    let out = env.ok(&["ps", "-a", "--format", "{{.Names}}|{{.Status}}|{{.State}}"]);
    let rows = lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with("third|Up ") && rows[0].ends_with("|running"),
        "{out}"
    );
    assert!(
        rows[2].starts_with("first|Exited (3) ") && rows[2].ends_with(" ago|exited"),
        "{out}"
    );
    // json: one object per line.
    for line in lines(&env.ok(&["ps", "--format", "json"])) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v["Names"] == "second" || v["Names"] == "third", "{v}");
        assert_eq!(v["State"], "running");
    }
    // table: a header from the field names, columns aligned.
    let out = env.ok(&["ps", "-a", "--format", "table {{.Names}}\\t{{.ID}}"]);
    let rows = lines(&out);
    assert!(
        rows[0].starts_with("NAMES") && rows[0].contains("CONTAINER ID"),
        "{out}"
    );
    let col = rows[0].find("CONTAINER ID").expect("column");
    assert!(
        rows[1..].iter().all(|r| r[col..].starts_with(&a[..12])
            || r[col..].starts_with(&b[..12])
            || r[col..].starts_with(&c[..12])),
        "{out}"
    );
    // The default table is Docker's.
    let header = lines(&env.ok(&["ps"]))[0].to_string();
    for col in ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "NAMES"] {
        assert!(header.contains(col), "{header}");
    }

    for bad in [
        &["ps", "--filter", "status=nope"][..],
        &["ps", "--filter", "color=red"],
        &["ps", "--format", "{{.Names"],
    ] {
        let out = env.berth(bad);
        assert_eq!(out.status.code(), Some(125), "{bad:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim_end().lines().count(),
            1,
            "{}",
            stderr(&out)
        );
    }
    env.ok(&["rm", "-f", "first", "second", "third"]);
    env.assert_clean();
}

#[test]
fn inspect_has_dockers_layout_templates_and_arrays() {
    let Some(env) = Env::new() else { return };
    let _ = env.berth(&[
        "run", "--name", "done", "-e", "A=1", "-w", "/tmp", "--", "sh", "-c", "exit 3",
    ]);
    env.ok(&["run", "-d", "--rm", "--name", "live", "--", "sleep", "100"]);

    let v = env.inspect("done");
    // berth's own fields stay.
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["status"], "exited");
    // Docker's beside them.
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(v["State"]["Running"], false);
    assert_eq!(v["State"]["OOMKilled"], false);
    assert!(
        v["State"]["FinishedAt"]
            .as_str()
            .unwrap_or("")
            .starts_with("20"),
        "{v}"
    );
    assert_eq!(v["Name"], "/done");
    assert_eq!(v["Path"], "sh");
    assert_eq!(
        v["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "exit 3"])
    );
    assert!(
        v["Config"]["Env"]
            .as_array()
            .expect("env")
            .contains(&"A=1".into()),
        "{v}"
    );
    assert_eq!(v["Config"]["WorkingDir"], "/tmp");
    assert_eq!(v["HostConfig"]["AutoRemove"], false);
    assert_eq!(v["Mounts"], serde_json::json!([]));

    let out = env.ok(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}} {{.State.Running}} {{json .Config.Cmd}}",
        "done",
        "live",
    ]);
    assert_eq!(
        out,
        "3 false [\"sh\",\"-c\",\"exit 3\"]\n0 true [\"sleep\",\"100\"]\n"
    );
    let both: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "done", "live"])).expect("json");
    let both = both.as_array().expect("an array for several");
    assert_eq!(both.len(), 2);
    assert_eq!(both[1]["HostConfig"]["AutoRemove"], true);
    assert!(both[1]["State"]["Pid"].as_i64().unwrap_or(0) > 1);

    // One missing: the others printed, the missing one named, exit 1.
    let out = env.berth(&["inspect", "--format", "{{.Name}}", "done", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "/done\n");
    assert!(stderr(&out).contains("no such container: ghost"));

    env.ok(&["rm", "-f", "done", "live"]);
    env.assert_clean();
}

#[test]
fn version_and_info_name_both_ends() {
    let Some(mut env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "up", "--", "sleep", "100"]);
    env.ok(&["run", "--name", "down", "--", "true"]);
    let v = env.ok(&["version"]);
    assert!(
        v.contains("Client:") && v.contains("Server:") && v.contains("berthd:"),
        "{v}"
    );
    assert_eq!(v.matches(env!("CARGO_PKG_VERSION")).count(), 2, "{v}");
    let i = env.ok(&["info"]);
    assert!(i.contains("Containers:       2"), "{i}");
    assert!(
        i.contains("Running:         1") && i.contains("Stopped:         1"),
        "{i}"
    );
    assert!(
        i.contains(&format!("Root Dir:         {}", env.root.display())),
        "{i}"
    );
    assert!(i.contains("Runtime:"), "{i}");
    env.ok(&["rm", "-f", "up", "down"]);
    env.kill_berthd();
    // berthd down: the client's half, then 125.
    let out = env.berth(&["version"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stdout(&out).contains("Client:") && !stdout(&out).contains("Server:"));
}

#[test]
fn completion_scripts_load_and_man_pages_render() {
    let Some(env) = Env::stopped() else { return };
    let bash = env.ok(&["completion", "bash"]);
    let file = env.dir.path().join("berth.bash");
    std::fs::write(&file, &bash).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash -n");
    assert!(check.status.success(), "{}", stderr(&check));
    // Loaded for real, it registers a completion for berth.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p berth", file.display()))
        .output()
        .expect("bash");
    assert!(stdout(&loaded).contains("berth"), "{}", stderr(&loaded));
    for shell in ["zsh", "fish"] {
        let s = env.ok(&["completion", shell]);
        assert!(s.contains("berth") && s.contains("no-trunc"), "{shell}");
    }
    let out = env.berth(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(125));

    let dir = env.dir.path().join("man");
    env.ok(&["man", dir.to_str().expect("utf-8")]);
    let page = Command::new("man")
        .arg("-l")
        .arg(dir.join("berth-ps.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man -l (apt-get install man-db)");
    assert!(page.status.success(), "{}", stderr(&page));
    let text = stdout(&page);
    assert!(
        text.contains("berth-ps") && text.contains("--no-trunc") && text.contains("--filter"),
        "{text}"
    );
    assert!(dir.join("berth.1").is_file() && dir.join("berth-run.1").is_file());
}
