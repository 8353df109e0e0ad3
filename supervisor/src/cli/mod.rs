//! The `berth` command line: one module per verb.

mod attach;
mod attach_cmd;
mod completion;
mod create;
mod each;
mod events;
mod exec;
mod format;
mod images;
mod info;
mod inspect;
mod kill;
mod logs;
// berthd checks its log defaults (flags, berthd.toml) as `run` checks its flags.
pub use logs::{parse_log_files, parse_log_size};
mod offline;
mod pause;
mod port;
mod ps;
mod pull;
mod restart;
mod rm;
mod run;
mod run_opts;
mod signals;
mod sigproxy;
mod start;
mod stats;
mod stop;
mod term;
mod top;
mod update;
mod version;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use runtime_core::layout::Root;

use crate::rpc::{CallError, RpcClient};

/// berth: run containers under berthd; they outlive berthd restarts.
#[derive(Parser, Debug)]
#[command(name = "berth", version)]
pub struct Cli {
    /// berthd's runtime root (its socket, the shims' sockets).
    #[arg(long, global = true, env = "BERTH_ROOT", default_value = runtime_core::layout::DEFAULT_ROOT)]
    root: PathBuf,
    /// berthd's data root: images, containers' logs and definitions
    /// (default: /var/lib/berth with the default --root, else the --root
    /// directory).
    #[arg(long, global = true, env = "BERTH_DATA_ROOT")]
    data_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create and start a container, attached unless -d.
    Run(run::RunArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Print a container's output (stdout to stdout, stderr to stderr).
    Logs(logs::LogsArgs),
    /// Send a signal to containers (SIGKILL by default).
    Kill(kill::KillArgs),
    /// Show containers' state as JSON (or --format a Go template).
    Inspect(inspect::InspectArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(wait::WaitArgs),
    /// Remove containers and their state.
    Rm(rm::RmArgs),
    /// Attach to a running container's stdio, straight through its shim.
    Attach(attach_cmd::AttachArgs),
    /// Show lifecycle events: the journal's past (--since) and what comes.
    Events(events::EventsArgs),
    /// Show containers' resource use (CPU, memory, PIDs, I/O), once a second.
    Stats(stats::StatsArgs),
    /// Change a container's restart policy, or a running one's memory and CPU limits.
    Update(update::UpdateArgs),
    /// Create a container without starting it; prints its ID.
    Create(run::RunArgs),
    /// Start created containers, or run exited ones again (-a: attached).
    Start(start::StartArgs),
    /// Stop containers: SIGTERM, then SIGKILL after -t seconds.
    Stop(stop::StopArgs),
    /// Stop and start containers again.
    Restart(restart::RestartArgs),
    /// Show a running container's processes.
    Top(top::TopArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Pull an image from a registry.
    Pull(pull::PullArgs),
    /// Log in to a registry: the credentials are tried, then stored (in the data root, mode 0600).
    Login(pull::LoginArgs),
    /// Remove the stored credentials for a registry.
    Logout(pull::LogoutArgs),
    /// Manage images: import, ls, rm, prune.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// List a container's published ports.
    Port(port::PortArgs),
    /// Freeze every process of containers.
    Pause(pause::PauseArgs),
    /// Thaw paused containers.
    Unpause(pause::PauseArgs),

    /// Show the client's and berthd's versions.
    Version(version::VersionArgs),
    /// Show berthd's root, runtime and container counts.
    Info(info::InfoArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(completion::CompletionArgs),
    /// Write man pages into a directory (used at install).
    #[command(hide = true)]
    Man(completion::ManArgs),
}

/// What a failed command reports: a message and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::new(e.to_string())
    }
}

/// Result of a verb: the process exit code.
pub type Outcome = Result<u8, Failure>;

/// Prints one line to stdout. A reader that went away (`berth ps | head`)
/// ends the output quietly, as with any Unix tool; other write errors fail.
pub fn say(line: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Connects to berthd, saying clearly when it is not there (exit 125).
pub async fn connect(root: &std::path::Path) -> Result<RpcClient, Failure> {
    try_connect(root).await.map_err(ConnectError::into_failure)
}

/// Why berthd could not be used.
pub enum ConnectError {
    /// Nothing answers on the socket (not running, or we may not reach
    /// it): verbs that can work from the on-disk state fall back to it.
    Unreachable(Failure),
    /// berthd answered but the session could not be set up (untrusted
    /// peer, another protocol version).
    Refused(Failure),
}

impl ConnectError {
    pub fn into_failure(self) -> Failure {
        match self {
            ConnectError::Unreachable(f) | ConnectError::Refused(f) => f,
        }
    }
}

/// Connects to berthd; tells "unreachable" apart from "refused".
pub async fn try_connect(root: &std::path::Path) -> Result<RpcClient, ConnectError> {
    let sock = Root::new(root).api_socket();
    RpcClient::connect(&sock, AGENT)
        .await
        .map_err(|e| connect_error(&sock, e))
}

/// Connects to berthd and makes a call that changes nothing, written with
/// the hello so berthd answers both in one turn (see
/// `RpcClient::connect_and_call`); returns the call's reply frame.
pub async fn connect_and_call_frame<P: serde::Serialize>(
    root: &std::path::Path,
    method: &str,
    params: &P,
) -> Result<(RpcClient, runtime_core::frame::Frame), Failure> {
    let sock = Root::new(root).api_socket();
    let (client, reply) = RpcClient::connect_and_call_frame(&sock, AGENT, method, params)
        .await
        .map_err(|e| connect_error(&sock, e).into_failure())?;
    Ok((client, reply?))
}

const AGENT: &str = concat!("berth ", env!("CARGO_PKG_VERSION"));

fn connect_error(sock: &std::path::Path, e: CallError) -> ConnectError {
    match e {
        CallError::Transport(_) => ConnectError::Unreachable(unreachable(sock)),
        other => ConnectError::Refused(Failure {
            message: other.to_string(),
            code: 125,
        }),
    }
}

/// Says why berthd's socket cannot be reached: a permission problem (a
/// non-root user and a 0700 root) is named as such, not blamed on berthd.
fn unreachable(sock: &std::path::Path) -> Failure {
    use std::io::ErrorKind;
    let probe = std::fs::metadata(sock).and_then(|_| {
        let (short, _handle) = runtime_core::sockpath::short(sock)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::os::unix::net::UnixStream::connect(short).map(drop)
    });
    let message = match probe {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => format!(
            "cannot reach berthd at {}: permission denied (berthd's root is private to \
             its owner: run berth as root or as the user that runs berthd)",
            sock.display()
        ),
        _ => format!("cannot reach berthd at {}: is it running?", sock.display()),
    };
    Failure { message, code: 125 }
}

/// Entry point of the `berth` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::from(125);
        }
    };
    let root = cli.root.clone();
    let data_root = cli
        .data_root
        .clone()
        .unwrap_or_else(|| runtime_core::layout::default_data_root(&root));
    let outcome = rt.block_on(async move {
        match cli.command {
            Command::Run(a) => run::run(&root, a).await,
            Command::Ps(a) => ps::ps(&root, a).await,
            Command::Logs(a) => logs::logs(&root, &data_root, a).await,
            Command::Kill(a) => kill::kill(&root, a).await,
            Command::Inspect(a) => inspect::inspect(&root, a).await,
            Command::Wait(a) => wait::wait(&root, a).await,
            Command::Rm(a) => rm::rm(&root, a).await,
            Command::Attach(a) => attach_cmd::attach(&root, &data_root, a).await,
            Command::Events(a) => events::events(&root, a).await,
            Command::Stats(a) => stats::stats(&root, a).await,
            Command::Update(a) => update::update(&root, a).await,
            Command::Create(a) => create::create(&root, a).await,
            Command::Start(a) => start::start(&root, a).await,
            Command::Stop(a) => stop::stop(&root, a).await,
            Command::Restart(a) => restart::restart(&root, a).await,
            Command::Top(a) => top::top(&root, a).await,
            Command::Exec(a) => exec::exec(&root, a).await,
            Command::Images(a) => images::images(&data_root, a),
            Command::Rmi(a) => images::rmi(&data_root, a),
            Command::Pull(a) => pull::pull(&data_root, a).await,
            Command::Login(a) => pull::login(&data_root, a).await,
            Command::Logout(a) => pull::logout(&data_root, a),
            Command::Image(c) => images::image(&data_root, c),
            Command::Port(a) => port::port(&root, a).await,
            Command::Pause(a) => pause::pause(&root, a).await,
            Command::Unpause(a) => pause::unpause(&root, a).await,

            Command::Version(a) => version::version(&root, a).await,
            Command::Info(a) => info::info(&root, a).await,
            Command::Completion(a) => completion::completion(a),
            Command::Man(a) => completion::man(a),
        }
    });
    // The stdin reader thread may still block in read(2): leave without it.
    rt.shutdown_background();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("berth: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

/// Usage errors exit 125, as Docker's do; an unknown flag is named as one
/// (`unknown flag: -v`) rather than run as a command.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::UnknownArgument => {
            if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
                if arg.starts_with('-') && arg.len() > 1 {
                    let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
                    eprintln!(
                        "berth: unknown flag: {flag} (see 'berth {}--help')",
                        verb_of_argv()
                    );
                    return ExitCode::from(125);
                }
            }
        }
        _ => {}
    }
    // One line, as every other bad input gets: clap's first line.
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("bad usage");
    eprintln!(
        "berth: {} (see 'berth {}--help')",
        first.strip_prefix("error: ").unwrap_or(first),
        verb_of_argv()
    );
    ExitCode::from(125)
}

/// The verb on our command line ("run "), for "See 'berth run --help'".
fn verb_of_argv() -> String {
    use clap::CommandFactory;
    let cmd = Cli::command();
    std::env::args()
        .skip(1)
        .find(|a| cmd.get_subcommands().any(|s| s.get_name() == a))
        .map(|v| format!("{v} "))
        .unwrap_or_default()
}
