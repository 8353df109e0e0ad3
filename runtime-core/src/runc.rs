//! A typed driver for runc (or any OCI runtime with runc's CLI).
//!
//! Options become `OsString` arguments here and nowhere else. Callers run
//! the returned `Command` themselves, because the shim must reap runc with
//! its own pid-keyed reaper rather than `Child::wait`. runc reports its
//! errors in a JSON log (`--log`), which is where the user-facing message
//! ("executable file not found in $PATH") is read from.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to invoke the runtime for one container.
#[derive(Debug, Clone)]
pub struct Runc {
    /// The runtime binary (a name resolved through PATH, or a path).
    pub binary: PathBuf,
    /// runc's `--root`: where it keeps its own state.
    pub root: PathBuf,
    /// runc's `--log`, written as JSON.
    pub log: PathBuf,
}

/// Options of `runc create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Start the process too (`runc run --detach`).
    pub start: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

/// Options of `runc exec`.
#[derive(Debug, Clone)]
pub struct ExecOpts {
    /// A file holding the OCI `process` object to run.
    pub process: PathBuf,
    pub pid_file: PathBuf,
    pub console_socket: Option<PathBuf>,
}

impl Runc {
    fn base(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        let args: [OsString; 5] = [
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format=json".into(),
        ];
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// `runc create --bundle B [--pid-file P] [--console-socket S] ID`,
    /// or with `opts.start` `runc run --detach ...`: created and started
    /// in one runtime invocation.
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOpts) -> Command {
        let mut cmd = self.base();
        if opts.start {
            cmd.arg("run").arg("--detach");
        } else {
            cmd.arg("create");
        }
        cmd.arg("--bundle").arg(bundle);
        if let Some(p) = &opts.pid_file {
            cmd.arg("--pid-file").arg(p);
        }
        if let Some(s) = &opts.console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id);
        cmd
    }

    /// `runc start ID`.
    pub fn start(&self, id: &str) -> Command {
        let mut cmd = self.base();
        cmd.arg("start").arg(id);
        cmd
    }

    /// `runc kill ID SIGNAL`.
    pub fn kill(&self, id: &str, signal: i32) -> Command {
        let mut cmd = self.base();
        cmd.arg("kill").arg(id).arg(signal.to_string());
        cmd
    }

    /// `runc ps --format json ID`: the container's host PIDs as a JSON
    /// array on stdout (the caller pipes stdout).
    pub fn ps(&self, id: &str) -> Command {
        let mut cmd = self.base();
        cmd.args(["ps", "--format", "json"]).arg(id);
        cmd
    }

    /// `runc pause ID`: freeze every process of the container.
    pub fn pause(&self, id: &str) -> Command {
        let mut cmd = self.base();
        cmd.arg("pause").arg(id);
        cmd
    }

    /// `runc resume ID`: thaw a paused container.
    pub fn resume(&self, id: &str) -> Command {
        let mut cmd = self.base();
        cmd.arg("resume").arg(id);
        cmd
    }

    /// `runc exec --detach --process P --pid-file F [--console-socket S] ID`:
    /// one more process in the container, left running; runc exits once
    /// it has started, and the process is the caller's (a subreaper's) to reap.
    pub fn exec(&self, id: &str, opts: &ExecOpts) -> Command {
        let mut cmd = self.base();
        cmd.args(["exec", "--detach"])
            .arg("--process")
            .arg(&opts.process)
            .arg("--pid-file")
            .arg(&opts.pid_file);
        if let Some(s) = &opts.console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id);
        cmd
    }

    /// `runc delete [--force] ID`: plain delete once the init is reaped.
    pub fn delete(&self, id: &str, force: bool) -> Command {
        let mut cmd = self.base();
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        cmd
    }

    /// Size of runc's log now, so an error can be read from what follows.
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The runtime's own message for a failure after `mark`: the last
    /// error-level record of its JSON log, else `fallback`.
    pub fn error_since(&self, mark: u64, fallback: &str) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            if f.seek(SeekFrom::Start(mark)).is_ok() {
                let _ = f.take(1 << 20).read_to_string(&mut text);
            }
        }
        last_error(&text).unwrap_or_else(|| fallback.to_string())
    }
}

/// What to tell a user when the runtime failed without a message of its
/// own: "runc create was killed by SIGKILL", "runc start exited with
/// status 2". Never a Rust Debug rendering of the wait status.
pub fn failure_text(binary: &Path, op: &str, status: nix::sys::wait::WaitStatus) -> String {
    let name = binary.file_name().map_or_else(
        || binary.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match status {
        nix::sys::wait::WaitStatus::Signaled(..) => {
            format!("{name} {op} failed: {name} {}", status_text(status))
        }
        _ => format!("{name} {op} failed: it {}", status_text(status)),
    }
}

/// How a process ended, in words: "exited with status 2", "was killed
/// by SIGKILL".
pub fn status_text(status: nix::sys::wait::WaitStatus) -> String {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {}", sig.as_str()),
        _ => "stopped in an unexpected way".to_string(),
    }
}

/// Finds the last error or fatal message in runc's JSON log text.
pub fn last_error(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_last_error_from_runc_log() {
        let log = concat!(
            r#"{"level":"info","msg":"hello","time":"t"}"#,
            "\n",
            r#"{"level":"error","msg":"first","time":"t"}"#,
            "\n",
            "not json\n",
            r#"{"level":"error","msg":"runc create failed: exec: \"nope\": executable file not found in $PATH","time":"t"}"#,
            "\n"
        );
        let msg = last_error(log).unwrap();
        assert!(msg.contains("executable file not found"), "{msg}");
        assert_eq!(last_error("{}"), None);
    }

    #[test]
    fn failures_are_told_in_words_not_debug_text() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        use nix::unistd::Pid;
        let pid = Pid::from_raw(12546);
        let killed = failure_text(
            Path::new("/usr/sbin/runc"),
            "create",
            WaitStatus::Signaled(pid, Signal::SIGKILL, false),
        );
        assert_eq!(killed, "runc create failed: runc was killed by SIGKILL");
        let exited = failure_text(Path::new("runc"), "start", WaitStatus::Exited(pid, 2));
        assert_eq!(exited, "runc start failed: it exited with status 2");
        for text in [killed, exited] {
            assert!(!text.contains("Pid("), "{text}");
        }
    }

    #[test]
    fn exec_is_detached_with_its_process_file_and_pid_file() {
        let r = Runc {
            binary: "runc".into(),
            root: "/r".into(),
            log: "/l".into(),
        };
        let opts = ExecOpts {
            process: "/s/exec-e1.json".into(),
            pid_file: "/s/exec-e1.pid".into(),
            console_socket: Some("/s/exec-e1.console".into()),
        };
        let args: Vec<_> = r
            .exec("c1", &opts)
            .get_args()
            .skip(5)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "exec",
                "--detach",
                "--process",
                "/s/exec-e1.json",
                "--pid-file",
                "/s/exec-e1.pid",
                "--console-socket",
                "/s/exec-e1.console",
                "c1"
            ]
        );
    }

    #[test]
    fn arguments_are_in_runc_order() {
        let r = Runc {
            binary: "runc".into(),
            root: "/r".into(),
            log: "/l".into(),
        };
        let cmd = r.create(
            "c1",
            Path::new("/b"),
            &CreateOpts {
                start: false,
                pid_file: Some("/p".into()),
                console_socket: None,
            },
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--root",
                "/r",
                "--log",
                "/l",
                "--log-format=json",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "c1"
            ]
        );
    }
}
