//! berth-shim: one per container. Owns the container's stdio, writes its
//! log, reaps its init and records its exit, so berthd can come and go.
//!
//! `berth-shim start ...` is what berthd runs: it forks the serving shim
//! (what `berth-shim serve ...` runs) and exits; the serving shim, once
//! the container is created and the sockets accept, writes their
//! addresses and state as one line on its inherited stdout (berthd's
//! pipe) and closes it.
#![deny(unsafe_code)]

mod attach;
mod bootstrap;
mod conn;
mod container;
mod control;
mod daemon;
mod exec;
mod memory;
mod mountns;
mod oom;
mod phase;
mod process;
mod reaper;
mod retire;
mod runtime;
mod server;
mod stdio;

use std::process::ExitCode;

use runtime_core::shimcmd::ShimConfig;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (verb, rest) = match args.split_first() {
        Some((v, r)) => (v.as_str(), r),
        None => ("", &[][..]),
    };
    let config = match ShimConfig::parse(rest) {
        Ok(c) => c,
        Err(e) if verb == "start" || verb == "serve" => {
            eprintln!("berth-shim: {e}");
            return ExitCode::from(2);
        }
        Err(_) => ShimConfig::default(),
    };
    match verb {
        "start" => daemon::start(&config),
        "serve" => server::serve(config),
        "--version" => {
            println!(
                "berth-shim {} (protocol {}.{})",
                env!("CARGO_PKG_VERSION"),
                runtime_core::protocol::PROTOCOL_MAJOR,
                runtime_core::protocol::PROTOCOL_MINOR
            );
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("berth-shim: unknown command {other:?}; usage: berth-shim start|serve --id ID --state-dir DIR --bundle DIR [--runtime PATH] [--runc-root DIR] [--stdin] [--tty] [--log-max-size N] [--log-max-files N]");
            ExitCode::from(2)
        }
    }
}
