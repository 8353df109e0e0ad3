//! `start`: what containerd runs to get a shim for a new task. It binds
//! the task's socket, writes the bundle's `address` file (containerd reads
//! it back after a restart), forks the serving shim (no second exec) and
//! prints the address. containerd reads stdout and stderr together until
//! EOF, so the serving shim keeps neither.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::{bail, Context};
use nix::unistd::{dup2, fork, setsid, ForkResult};

use crate::flags::Flags;
use crate::paths::{self, Bundle};

/// containerd writes the runtime options to our stdin; read them so its
/// writer never blocks (they are not used: runc and its defaults).
pub fn drain_stdin() {
    let stdin = std::io::stdin();
    let is_pipe = nix::sys::stat::fstat(stdin.as_raw_fd())
        .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFIFO);
    if is_pipe {
        let mut sink = Vec::new();
        let _ = stdin.lock().take(1 << 20).read_to_end(&mut sink);
    }
}

fn bind(sock: &Path) -> anyhow::Result<UnixListener> {
    let dir = Path::new(paths::SOCKET_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))?;
    match UnixListener::bind(sock) {
        Ok(l) => return finish_bind(l, sock),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => return Err(e).with_context(|| format!("bind {}", sock.display())),
    }
    if UnixStream::connect(sock).is_ok() {
        bail!("a shim is already serving {} for this task", sock.display());
    }
    // A dead shim's socket: take its place.
    std::fs::remove_file(sock).with_context(|| format!("remove stale {}", sock.display()))?;
    let l = UnixListener::bind(sock).with_context(|| format!("bind {}", sock.display()))?;
    finish_bind(l, sock)
}

fn finish_bind(l: UnixListener, sock: &Path) -> anyhow::Result<UnixListener> {
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", sock.display()))?;
    Ok(l)
}

pub fn start(flags: &Flags) -> anyhow::Result<()> {
    drain_stdin();
    paths::check_id("task id", &flags.id).map_err(anyhow::Error::msg)?;
    let bundle = Bundle::new(std::env::current_dir().context("current directory (the bundle)")?);
    let sock = paths::socket(&flags.address, &flags.namespace, &flags.id);
    let listener = bind(&sock)?;
    let address = format!("unix://{}", sock.display());
    let written = runtime_core::atomic::write_until_reboot(&bundle.address(), address.as_bytes());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&sock);
        return Err(e).context("write the address file");
    }
    let log = open_log(&bundle)?;
    let null = File::open("/dev/null").context("open /dev/null")?;
    // SAFETY: `start` has not spawned a thread, so the child may run any
    // code; it never returns into our caller (serve ends in exit).
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }.context("fork the shim")?;
    match forked {
        ForkResult::Child => {
            let _ = setsid();
            let redirected = dup2(null.as_raw_fd(), 0)
                .and_then(|_| dup2(null.as_raw_fd(), 1))
                .and_then(|_| dup2(log.as_raw_fd(), 2));
            if redirected.is_err() {
                std::process::exit(1);
            }
            drop((null, log));
            let code = crate::serve::serve(flags, bundle, sock, listener);
            std::process::exit(code);
        }
        ForkResult::Parent { .. } => {
            drop(listener);
            print!("{address}");
            Ok(())
        }
    }
}

/// The shim's own log: the fifo containerd opened in the bundle (its
/// content lands in containerd's log), else a file in the bundle, else
/// nowhere.
fn open_log(bundle: &Bundle) -> anyhow::Result<File> {
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(bundle.log_fifo());
    if let Ok(f) = fifo {
        return Ok(f);
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(bundle.dir.join("shim.log"));
    match file {
        Ok(f) => Ok(f),
        Err(_) => OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .context("open /dev/null"),
    }
}
