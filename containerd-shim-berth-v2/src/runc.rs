//! The runc commands runtime-core's driver does not have (exec, pause,
//! resume, ps, stats, update, kill --all). Same shape: a `Command` with
//! runc's global options, run by the caller through the shim's reaper.

use std::path::Path;
use std::process::{Command, Stdio};

use runtime_core::runc::Runc;

fn base(r: &Runc) -> Command {
    let mut cmd = Command::new(&r.binary);
    cmd.arg("--root")
        .arg(&r.root)
        .arg("--log")
        .arg(&r.log)
        .arg("--log-format=json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// `runc exec --detach --pid-file P --process SPEC [--console-socket S] ID`.
pub fn exec(r: &Runc, id: &str, spec: &Path, pid_file: &Path, console: Option<&Path>) -> Command {
    let mut cmd = base(r);
    cmd.arg("exec")
        .arg("--detach")
        .arg("--pid-file")
        .arg(pid_file)
        .arg("--process")
        .arg(spec);
    if let Some(c) = console {
        cmd.arg("--console-socket").arg(c);
    }
    cmd.arg(id);
    cmd
}

/// `runc pause ID` / `runc resume ID`.
pub fn pause(r: &Runc, id: &str, pause: bool) -> Command {
    let mut cmd = base(r);
    cmd.arg(if pause { "pause" } else { "resume" }).arg(id);
    cmd
}

/// `runc kill [--all] ID SIGNAL`.
pub fn kill(r: &Runc, id: &str, signal: u32, all: bool) -> Command {
    let mut cmd = base(r);
    cmd.arg("kill");
    if all {
        cmd.arg("--all");
    }
    cmd.arg(id).arg(signal.to_string());
    cmd
}

/// `runc ps --format json ID`: the container's PIDs as a JSON array.
pub fn ps(r: &Runc, id: &str) -> Command {
    let mut cmd = base(r);
    cmd.args(["ps", "--format", "json", id])
        .stdout(Stdio::piped());
    cmd
}

/// `runc events --stats ID`: one JSON object of cgroup statistics.
pub fn stats(r: &Runc, id: &str) -> Command {
    let mut cmd = base(r);
    cmd.args(["events", "--stats", id]).stdout(Stdio::piped());
    cmd
}

/// `runc update --resources - ID`, the resources JSON on stdin.
pub fn update(r: &Runc, id: &str) -> Command {
    let mut cmd = base(r);
    cmd.args(["update", "--resources", "-", id])
        .stdin(Stdio::piped());
    cmd
}
