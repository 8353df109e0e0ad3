//! berthd: the berth supervisor daemon. See `berth_supervisor::daemon`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use berth_supervisor::daemon::{self, config_file, Config};
use runtime_core::meta::LogConfig;

/// The berth container supervisor. Containers keep running when it stops.
///
/// Settings come from the flags (and their environment variables), then
/// from the config file (/etc/berth/berthd.toml, or --config), then from
/// the defaults shown.
#[derive(Parser, Debug)]
#[command(name = "berthd", version)]
struct Args {
    /// The config file; a missing default one is no error.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Runtime root: sockets, pid files, runc state, network namespaces;
    /// what a reboot ends [default: /run/berth].
    #[arg(long, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// Data root: images, container definitions, logs, exit records,
    /// restart-policy state, the event journal; what outlives a reboot
    /// (default: /var/lib/berth with the default --root, else the --root
    /// directory).
    #[arg(long, env = "BERTH_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// OCI runtime: a name looked up in PATH, or a path [default: runc].
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// The berth-shim binary (default: next to berthd, else from PATH).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// Containers' log rotation size unless they set --log-max-size
    /// (bytes, or 64k, 10m, 1.5g; 0: never) [default: 10m].
    #[arg(long, value_parser = berth_supervisor::cli::parse_log_size)]
    log_max_size: Option<u64>,
    /// Containers' log files kept unless they set --log-max-files
    /// [default: 5].
    #[arg(long, value_parser = berth_supervisor::cli::parse_log_files)]
    log_max_files: Option<u32>,
    /// Rotate the event journal at this size (bytes, or with k/m suffix).
    #[arg(long, default_value = "1m", value_parser = parse_size)]
    events_max_size: u64,
    /// Event journal files to keep, the current one included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    events_max_files: u32,
    /// The Linux bridge of `--network bridge` (berth's own, not docker0)
    /// [default: berth0].
    #[arg(long, env = "BERTH_BRIDGE")]
    bridge: Option<String>,
    /// The bridge's IPv4 subnet; containers get addresses from it
    /// [default: 10.88.0.0/16].
    #[arg(long, env = "BERTH_BRIDGE_SUBNET")]
    bridge_subnet: Option<String>,
    /// Directory of the CNI plugins [default: /usr/lib/cni].
    #[arg(long, env = "BERTH_CNI_PATH")]
    cni_path: Option<PathBuf>,
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

/// The daemon's settings: each flag, else the file's value, else the
/// default; every value checked before anything is created.
fn settle(args: Args, notify: daemon::notify::Notifier) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(path) => config_file::load(path, true)?,
        None => config_file::load(Path::new(config_file::DEFAULT_PATH), false)?,
    };
    let root = absolute(
        "--root",
        args.root
            .or(file.root)
            .unwrap_or_else(|| PathBuf::from(runtime_core::layout::DEFAULT_ROOT)),
    )?;
    let data_root = match args.data_root.or(file.data_root) {
        Some(d) => absolute("--data-root", d)?,
        None => runtime_core::layout::default_data_root(&root),
    };
    let defaults = LogConfig::default();
    let log = LogConfig {
        max_size: args
            .log_max_size
            .or(file.log.max_size)
            .unwrap_or(defaults.max_size),
        max_files: args
            .log_max_files
            .or(file.log.max_files)
            .unwrap_or(defaults.max_files),
    };
    let net = runtime_core::net::NetConfig {
        bridge: args
            .bridge
            .or(file.network.bridge)
            .unwrap_or_else(|| runtime_core::net::DEFAULT_BRIDGE.into()),
        subnet: args
            .bridge_subnet
            .or(file.network.subnet)
            .unwrap_or_else(|| runtime_core::net::DEFAULT_SUBNET.into()),
        cni_bin: args
            .cni_path
            .or(file.network.cni_path)
            .unwrap_or_else(|| runtime_core::net::DEFAULT_CNI_BIN.into()),
        dir: runtime_core::layout::Root::new(&root).net_dir(),
    };
    net.validate()?;
    Ok(Config {
        data_root,
        root,
        runtime: args
            .runtime
            .or(file.runtime)
            .unwrap_or_else(|| PathBuf::from("runc")),
        shim: args.shim.unwrap_or_else(default_shim),
        log,
        events: daemon::events::JournalLimits {
            max_size: args.events_max_size,
            max_files: args.events_max_files,
        },
        net,
        notify,
    })
}

/// A relative flag is taken from the working directory, as the shell user
/// meant it (the file's paths are absolute already).
fn absolute(flag: &str, p: PathBuf) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("cannot resolve relative {flag}: {e}"))?;
    Ok(cwd.join(p))
}

/// Fixes glibc's thresholds for returning memory to the kernel. By default
/// both adapt upwards: once a large block (a 3 MB `ps` reply at 3,000
/// containers, the buffers of a restore) is freed, later ones of that size
/// come from the heap, which then keeps up to twice that unreturned. That
/// was 6-10 MiB of berthd's RSS at 3,000 containers; fixed at 128 KiB each,
/// large blocks are mapped and unmapped and the heap's free top returned.
/// One arena for every thread: the start-up reader threads parse every
/// container's meta.json, and with an arena each their
/// leftovers kept berthd's RSS ~0.4 MiB higher at 3,000 containers. They
/// and the async thread do allocate at the same time during a restore;
/// measured, the restart was no slower with the one arena.
#[cfg(target_env = "gnu")]
fn fix_malloc_thresholds() {
    const AT: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets allocator parameters (no pointers); it runs
    // first thing in main, before any other thread exists. A refusal (0)
    // leaves glibc's defaults, which only cost memory. (No safe wrapper
    // exists; GLIBC_TUNABLES, as berthd sets for the shims, would need
    // berthd's own starter to set it.)
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, AT);
        libc::mallopt(libc::M_TRIM_THRESHOLD, AT);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(target_env = "gnu"))]
fn fix_malloc_thresholds() {}

fn main() -> ExitCode {
    fix_malloc_thresholds();
    // First, while berthd is one thread: nothing it spawns inherits it.
    let notify = daemon::notify::Notifier::from_env();
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match settle(args, notify) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::from(1);
        }
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
