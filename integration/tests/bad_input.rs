//! Bad input: a clear one-line error, a non-zero exit, and nothing left.

use crate::util::{stderr, Env};

fn fails_cleanly(env: &Env, args: &[&str], message: &str) {
    let out = env.berth(args);
    assert!(!out.status.success(), "berth {args:?} succeeded");
    let err = stderr(&out);
    assert!(
        err.contains(message),
        "berth {args:?}: expected {message:?} in {err:?}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    env.assert_clean();
}

#[test]
fn missing_command_reports_runtime_message() {
    let Some(env) = Env::new() else { return };
    let out = env.berth(&["run", "--", "no-such-binary"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );
    env.assert_clean();
}

#[test]
fn bad_rootfs_and_bundle_are_named() {
    let Some(env) = Env::new() else { return };
    fails_cleanly(
        &env,
        &["run", "--rootfs", "/no/such/rootfs", "--", "true"],
        "/no/such/rootfs",
    );
    let bundle = env.dir.path().join("badbundle");
    std::fs::create_dir_all(bundle.join("rootfs")).expect("mkdir");
    std::fs::write(
        bundle.join("config.json"),
        "{\"ociVersion\": \"1.0.2\",\n  \"process\": [}",
    )
    .expect("write");
    let b = bundle.to_str().expect("utf8");
    fails_cleanly(
        &env,
        &["run", "--bundle", b, "--", "true"],
        "config.json: does not parse",
    );
    fails_cleanly(
        &env,
        &["run", "--bundle", "/no/such/bundle", "--", "true"],
        "/no/such/bundle/config.json",
    );
}

#[test]
fn invalid_and_duplicate_names() {
    let Some(env) = Env::new() else { return };
    fails_cleanly(
        &env,
        &["run", "--name", "../x", "--", "true"],
        "invalid container name \"../x\"",
    );
    fails_cleanly(
        &env,
        &["run", "--name", "", "--", "true"],
        "must not be empty",
    );
    let long = "n".repeat(300);
    fails_cleanly(
        &env,
        &["run", "--name", &long, "--", "true"],
        "longer than 64",
    );
    env.ok(&["run", "-d", "--name", "taken", "--", "sleep", "100"]);
    let out = env.berth(&["run", "--name", "taken", "--", "true"]);
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    assert_eq!(env.ps_all().len(), 1);
    let out = env.berth(&["rm", "taken"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    env.ok(&["rm", "-f", "taken"]);
    env.assert_clean();
}

#[test]
fn unknown_container_in_every_verb() {
    let Some(env) = Env::new() else { return };
    for verb in [
        &["logs", "ghost"][..],
        &["inspect", "ghost"],
        &["kill", "ghost"],
        &["rm", "ghost"],
        &["wait", "ghost"],
        &["attach", "ghost"],
    ] {
        fails_cleanly(&env, verb, "no such container: ghost");
    }
}

#[test]
fn missing_runtime_is_reported() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    let empty = env.dir.path().join("emptybin");
    std::fs::create_dir_all(&empty).expect("mkdir");
    env.berthd_env
        .push(("PATH".into(), empty.display().to_string()));
    env.start_berthd();
    fails_cleanly(
        &env,
        &["run", "--", "true"],
        "OCI runtime \"runc\" not found in PATH",
    );
}

#[test]
fn runtime_path_that_does_not_exist() {
    let Some(mut env) = Env::stopped() else {
        return;
    };
    env.berthd_args = vec!["--runtime".into(), "/nonexistent/runc".into()];
    env.start_berthd();
    fails_cleanly(
        &env,
        &["run", "--", "true"],
        "/nonexistent/runc does not exist",
    );
}

#[test]
fn berthd_not_running_is_explained() {
    let Some(env) = Env::stopped() else { return };
    let out = env.berth(&["ps"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach berthd at") && err.contains("is it running?"),
        "{err}"
    );
}

#[test]
fn no_command_and_bad_flags() {
    let Some(env) = Env::new() else { return };
    fails_cleanly(&env, &["run"], "no command given");
    fails_cleanly(&env, &["run", "-e", "=x", "--", "true"], "empty key");
    fails_cleanly(
        &env,
        &["run", "-w", "relative", "--", "true"],
        "not absolute",
    );
    fails_cleanly(&env, &["kill", "-s", "NOPE", "x"], "unknown signal");
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let Some(env) = Env::new() else { return };
    env.ok(&["run", "-d", "--name", "quiet", "--", "sleep", "100"]);
    for args in [&["ps", "-a"][..], &["inspect", "quiet"], &["ps", "--json"]] {
        // `berth ps | head -0`: the pipe is closed before berth writes.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = env
            .cmd(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run berth");
        assert!(out.status.success(), "berth {args:?}: {out:?}");
        assert_eq!(stderr(&out), "", "berth {args:?}");
    }
    env.ok(&["rm", "-f", "quiet"]);
    env.assert_clean();
}
