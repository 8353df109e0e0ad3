//! `berth run`: create, attach, start, stream, exit with the container's
//! code (128+N for a signal death), like `docker run`.
//!
//! The attach connection is made before the container starts, so not a
//! byte of output is missed; the exit code comes in the same stream, after
//! the last byte of output.

use std::path::{Path, PathBuf};

use clap::Args;

use super::attach::{self, AttachEnd, SessionOpts};
use super::attach_cmd::{finish, DEFAULT_DETACH_KEYS};
use super::sigproxy::SigProxy;
use super::term::{self, parse_detach_keys};
use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo, CreateParams, RemoveParams, Target, WaitResult};
use crate::rpc::{CallError, RpcClient};
use runtime_core::protocol::ErrorCode;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open and forward ours to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// A name for the container (letters, digits, '_', '.', '-'; up to 64).
    /// Options that take a value take the next word whatever it looks
    /// like, as docker's do (`--hostname -x` is a hostname, refused by
    /// berthd's validation, not an unknown flag).
    #[arg(long, allow_hyphen_values = true)]
    name: Option<String>,
    /// Run on this exploded root filesystem instead of berth's busybox.
    #[arg(long, conflicts_with = "bundle")]
    rootfs: Option<PathBuf>,
    /// Run this OCI bundle (its config.json); a COMMAND replaces its args.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy ours).
    #[arg(short, long = "env", allow_hyphen_values = true)]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long = "workdir", allow_hyphen_values = true)]
    workdir: Option<String>,
    /// Container hostname (default: its name).
    #[arg(long, allow_hyphen_values = true)]
    hostname: Option<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Key sequence that detaches from a tty session.
    #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Forward the signals berth receives to the container (attached, no tty).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    sig_proxy: bool,
    /// Rotate the log at this size (bytes, or 64k, 10m, 1.5g; 0: never).
    #[arg(long, value_parser = super::logs::parse_log_size)]
    log_max_size: Option<u64>,
    /// Log files to keep, the current one included (1 to 10000).
    #[arg(long, value_parser = super::logs::parse_log_files)]
    log_max_files: Option<u32>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    restart: Option<String>,
    #[command(flatten)]
    service: super::run_opts::ServiceArgs,
    /// IMAGE and its COMMAND, or after `--` a command for berth's busybox.
    /// Flags go before it: a flag berth
    /// does not know is refused, never taken as the command.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

/// Whether our command line has `--` right before these words (clap
/// does not say whether the trailing words came after one).
fn after_double_dash(words: &[String]) -> bool {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter()
        .enumerate()
        .any(|(i, a)| a == "--" && args[i + 1..] == *words)
}

fn absolute(p: &Path) -> Result<String, Failure> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Failure::new(format!("current directory: {e}")))?
            .join(p)
    };
    Ok(abs.display().to_string())
}

/// Exit code for a failed create: 127 when the command does not exist
/// in the container, 126 when it cannot be run, 125 for everything else
/// (as Docker), from berthd's typed error code, never from its text.
pub fn start_failure(e: CallError, name: Option<&str>) -> Failure {
    let code = match e.code() {
        Some(ErrorCode::CommandNotFound) => 127,
        Some(ErrorCode::CommandNotExecutable) => 126,
        _ => 125,
    };
    let message = match e {
        // berthd died mid-create: the container may well exist (the shim
        // may have started it, and the next berthd adopts it).
        CallError::Transport(t) => format!(
            "lost berthd during create ({t}): the container may exist; see `berth ps -a`{}",
            name.map(|n| format!(" (name {n})")).unwrap_or_default()
        ),
        other => other.to_string(),
    };
    Failure { message, code }
}

impl RunArgs {
    /// The create request these options make (`run` and `create` share
    /// them); the caller sets `start` and `attach`.
    pub fn create_params(&self) -> Result<CreateParams, Failure> {
        let (options, file_env) = self.service.parse()?;
        // --env-file first, so -e overrides it (as Docker).
        let env = file_env
            .into_iter()
            .chain(self.env.iter().cloned())
            .collect::<Vec<_>>();
        let env = env
            .iter()
            .filter_map(|e| match e.split_once('=') {
                Some(_) => Some(e.clone()),
                None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
            })
            .collect();
        let (image, command) = self.image_and_command();
        Ok(CreateParams {
            name: self.name.clone(),
            image,
            command,
            rootfs: self.rootfs.as_deref().map(absolute).transpose()?,
            bundle: self.bundle.as_deref().map(absolute).transpose()?,
            env,
            cwd: self.workdir.clone(),
            hostname: self.hostname.clone(),
            tty: self.tty,
            stdin: self.interactive,
            auto_remove: self.rm,
            start: false,
            attach: false,
            log_max_size: self.log_max_size,
            log_max_files: self.log_max_files,
            restart: self
                .restart
                .as_deref()
                .map(crate::policy::check)
                .transpose()
                .map_err(|message| Failure { message, code: 125 })?,
            options,
        })
    }

    /// `run IMAGE [COMMAND...]` as docker's; after `--` (no image), or
    /// with --rootfs/--bundle, the words are the command, as before.
    fn image_and_command(&self) -> (Option<String>, Vec<String>) {
        if self.rootfs.is_some()
            || self.bundle.is_some()
            || self.command.is_empty()
            || after_double_dash(&self.command)
        {
            return (None, self.command.clone());
        }
        (Some(self.command[0].clone()), self.command[1..].to_vec())
    }

    /// The container's name, if one was given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

pub async fn run(root: &Path, a: RunArgs) -> Outcome {
    let keys = parse_detach_keys(&a.detach_keys).map_err(Failure::new)?;
    if a.tty && a.interactive && !a.detach {
        term::check_input_is_tty()?;
    }
    // Docker proxies signals only without a tty: with one, the terminal
    // itself carries ctrl-c and friends to the container.
    let mut proxy = (a.sig_proxy && !a.detach && !a.tty).then(SigProxy::install);
    let params = CreateParams {
        start: a.detach,
        attach: !a.detach,
        ..a.create_params()?
    };
    // Every failure of berth's own is 125 for `run`, as for `docker run`.
    let mut c = connect(root)
        .await
        .map_err(|f| Failure { code: 125, ..f })?;
    let info: ContainerInfo = c
        .call(methods::CREATE, &params)
        .await
        .map_err(|e| start_failure(e, a.name.as_deref()))?;
    if a.detach {
        say(&info.id)?;
        return Ok(0);
    }
    if let Some(p) = proxy.as_mut() {
        let shim = info.paths().shim_sock();
        p.forward_to(info.name.clone(), shim);
    }
    let session = match attach::connect(Path::new(&info.attach_socket), a.interactive).await {
        Ok(s) => s,
        Err(f) => {
            discard(&mut c, &info.id).await;
            return Err(f);
        }
    };
    let end = session.run(SessionOpts { detach_keys: keys }).await?;
    let outcome = match end {
        AttachEnd::Lost(msg) => {
            // Cut off or disconnected: the container's code is still known to berthd.
            eprintln!("berth: {msg}");
            // A fresh connection: the first may have been closed meanwhile
            // (berthd restarted, or it closed idle clients to make room).
            let r: WaitResult = connect(root)
                .await?
                .call(
                    methods::WAIT,
                    &Target {
                        id: info.id.clone(),
                    },
                )
                .await?;
            r.exit_code
                .map(|code| code.clamp(0, 255) as u8)
                .ok_or_else(|| Failure::new(r.reason.unwrap_or_else(|| "exit code unknown".into())))
        }
        other => finish(other),
    };
    if a.rm && outcome.is_ok() {
        // The exit code is known: hand the removal to berthd and leave (it
        // hides the container from `ps` from the moment it starts removing).
        let params = RemoveParams {
            id: info.id.clone(),
            force: false,
        };
        let _ = c.send_only(methods::REMOVE, &params).await;
    }
    outcome
}

async fn discard(c: &mut RpcClient, id: &str) {
    let _ = c
        .call_value(
            methods::REMOVE,
            &RemoveParams {
                id: id.to_string(),
                force: true,
            },
        )
        .await;
}
