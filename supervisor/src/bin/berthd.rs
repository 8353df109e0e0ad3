//! berthd: the berth supervisor daemon. See `berth_supervisor::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use berth_supervisor::daemon::{self, Config};

/// The berth container supervisor. Containers keep running when it stops.
#[derive(Parser, Debug)]
#[command(name = "berthd", version)]
struct Args {
    /// State directory (sockets, containers, logs).
    #[arg(long, env = "BERTH_ROOT", default_value = runtime_core::layout::DEFAULT_ROOT)]
    root: PathBuf,
    /// Where images are stored (default: /var/lib/berth with the default
    /// --root, else the --root directory).
    #[arg(long, env = "BERTH_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// OCI runtime: a name looked up in PATH, or a path.
    #[arg(long, default_value = "runc")]
    runtime: PathBuf,
    /// The berth-shim binary (default: next to berthd, else from PATH).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// Rotate the event journal at this size (bytes, or with k/m suffix).
    #[arg(long, default_value = "1m", value_parser = parse_size)]
    events_max_size: u64,
    /// Event journal files to keep, the current one included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    events_max_files: u32,
    /// The Linux bridge of `--network bridge` (berth's own, not docker0).
    #[arg(long, env = "BERTH_BRIDGE", default_value = runtime_core::net::DEFAULT_BRIDGE)]
    bridge: String,
    /// The bridge's IPv4 subnet; containers get addresses from it.
    #[arg(long, env = "BERTH_BRIDGE_SUBNET", default_value = runtime_core::net::DEFAULT_SUBNET)]
    bridge_subnet: String,
    /// Directory of the CNI plugins.
    #[arg(long, env = "BERTH_CNI_PATH", default_value = runtime_core::net::DEFAULT_CNI_BIN)]
    cni_path: PathBuf,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        _ => (lower.as_str(), 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!("invalid size {s:?}: use bytes or a k/m suffix")),
    }
}

fn default_shim() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("berth-shim"))
}

/// The error and its causes on one line, each said once: an io error
/// wrapped with its path already quotes its cause, and `{:#}` would repeat
/// it ("No space left on device" twice).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let root = if args.root.is_absolute() {
        args.root
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(args.root),
            Err(e) => {
                eprintln!("berthd: cannot resolve relative --root: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let data_root = match args.data_root {
        Some(d) if d.is_relative() => match std::env::current_dir() {
            Ok(cwd) => cwd.join(d),
            Err(e) => {
                eprintln!("berthd: cannot resolve relative --data-root: {e}");
                return ExitCode::from(1);
            }
        },
        Some(d) => d,
        None => berth_image::default_data_root(&root),
    };
    let net = runtime_core::net::NetConfig {
        bridge: args.bridge,
        subnet: args.bridge_subnet,
        cni_bin: args.cni_path,
        dir: runtime_core::layout::Root::new(&root).net_dir(),
    };
    if let Err(e) = net.validate() {
        eprintln!("berthd: {e}");
        return ExitCode::from(1);
    }
    let config = Config {
        data_root,
        root,
        runtime: args.runtime,
        shim: args.shim.unwrap_or_else(default_shim),
        events: daemon::events::JournalLimits {
            max_size: args.events_max_size,
            max_files: args.events_max_files,
        },
        net,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}
