//! containerd-shim-berth-v2: berth's shim under containerd (runtime
//! `io.containerd.berth.v2`). containerd runs `start` to get a shim per
//! task and `delete` to clean up after a dead one; the forked shim serves
//! the task API over ttrpc. See ARCHITECTURE.md.
#![deny(unsafe_code)]

mod delete;
mod error;
mod flags;
mod monitor;
mod mount;
mod oom;
mod paths;
mod publish;
mod runc;
mod serve;
mod server;
mod service;
mod shim;
mod start;
mod stats;
mod stdio;
mod stopped;
mod task;

use std::io::Write;
use std::process::ExitCode;

/// Logs to stderr: containerd's log fifo once serving.
struct Logger {
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!(
                "time=\"{}\" level={} msg=\"{}\" runtime=io.containerd.berth.v2 pid={}\n",
                runtime_core::time::now_rfc3339(),
                r.level().as_str().to_lowercase(),
                r.args(),
                std::process::id()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match flags::Flags::parse(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e}");
            return ExitCode::from(125);
        }
    };
    if flags.version {
        println!(
            "containerd-shim-berth-v2:\n  Version: {}\n  Runtime: runc",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let level = if flags.debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger: &'static Logger = Box::leak(Box::new(Logger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    let result = match flags.verb.as_deref() {
        Some("start") => start::start(&flags),
        Some("delete") => delete::delete(&flags),
        other => {
            eprintln!(
                "containerd-shim-berth-v2: unknown command {:?}; containerd runs it as `-namespace NS -address ADDR -publish-binary BIN -id ID start|delete`",
                other.unwrap_or("")
            );
            return ExitCode::from(125);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-shim-berth-v2: {e:#}");
            ExitCode::from(125)
        }
    }
}
