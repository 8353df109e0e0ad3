//! Checks of everything a create hands to a file or to the runtime, made
//! before anything is written, each failure a typed error naming what was
//! wrong.
//!
//! The command is looked up in the container's rootfs as the runtime will
//! (PATH from the process's environment, symlinks resolved inside the
//! rootfs), so "not found" (127) and "cannot execute" (126) are decided
//! here, from the filesystem, and never by reading the runtime's messages.
//! A command under one of the spec's mounts cannot be seen from here; the
//! runtime decides those (its failure is then a plain runtime error, 125).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

use runtime_core::protocol::{ErrorCode, RpcError};

fn invalid(msg: String) -> RpcError {
    RpcError::new(ErrorCode::InvalidArgument, msg)
}

/// A hostname as RFC 1123 allows: dot-separated labels of letters, digits
/// and '-', none starting or ending with '-', 63 bytes a label, 253 in all.
pub fn hostname(h: &str) -> Result<(), RpcError> {
    let bad = |why: &str| Err(invalid(format!("invalid hostname {h:?}: {why}")));
    if h.is_empty() {
        return bad("empty");
    }
    if h.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated part must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a part may not start or end with '-'");
        }
    }
    Ok(())
}

/// An environment entry: `KEY=VALUE`, the key non-empty without '=',
/// whitespace or control characters; no NUL anywhere (execve could not
/// pass it). A value may hold newlines: programs do use them.
pub fn env_entry(kv: &str) -> Result<(), RpcError> {
    let Some((key, value)) = kv.split_once('=') else {
        return Err(invalid(format!(
            "environment entry {kv:?} is not KEY=VALUE"
        )));
    };
    if key.is_empty() {
        return Err(invalid(format!(
            "environment entry {kv:?} has an empty key"
        )));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "environment variable name {key:?} contains whitespace or a control character"
        )));
    }
    if value.contains('\0') {
        return Err(invalid(format!(
            "environment variable {key} contains a NUL byte"
        )));
    }
    Ok(())
}

/// A path the user gave (rootfs, bundle, working directory): no control
/// characters (a newline would split the lines of any file it reaches).
pub fn path_text(what: &str, p: &str) -> Result<(), RpcError> {
    if p.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} {p:?} contains a control character"
        )));
    }
    Ok(())
}

/// Checks the final spec (the user's bundle plus the command line).
pub fn spec(spec: &Spec) -> Result<(), RpcError> {
    if let Some(h) = spec.hostname() {
        hostname(h)?;
    }
    let Some(process) = spec.process() else {
        return Ok(());
    };
    for kv in process.env().iter().flatten() {
        env_entry(kv)?;
    }
    for arg in process.args().iter().flatten() {
        if arg.contains('\0') {
            return Err(invalid(format!("argument {arg:?} contains a NUL byte")));
        }
    }
    if let Some(cwd) = process.cwd().to_str() {
        path_text("working directory", cwd)?;
    }
    Ok(())
}

/// Why the command cannot run, decided from the rootfs.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Found,
    NotFound(String),
    NotExecutable(String),
    /// Under a mount, or beyond what we can see: the runtime decides.
    Unknown,
}

/// Looks the spec's command up in `rootfs`; `Err` with
/// `CommandNotFound` (127) or `CommandNotExecutable` (126).
pub fn command(spec: &Spec, rootfs: &Path) -> Result<(), RpcError> {
    match lookup(spec, rootfs) {
        Lookup::Found | Lookup::Unknown => Ok(()),
        Lookup::NotFound(m) => Err(RpcError::new(ErrorCode::CommandNotFound, m)),
        Lookup::NotExecutable(m) => Err(RpcError::new(ErrorCode::CommandNotExecutable, m)),
    }
}

fn lookup(spec: &Spec, rootfs: &Path) -> Lookup {
    let Some(process) = spec.process() else {
        return Lookup::Unknown;
    };
    let Some(cmd) = process.args().as_ref().and_then(|a| a.first()) else {
        return Lookup::Unknown;
    };
    let mounts: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().clone())
        .collect();
    let under_mount = |p: &Path| mounts.iter().any(|m| p.starts_with(m));
    if cmd.contains('/') {
        let in_container = process.cwd().join(cmd);
        if under_mount(&in_container) {
            return Lookup::Unknown;
        }
        return match resolve(rootfs, &in_container) {
            Some(host) => executable(cmd, &host),
            None => Lookup::NotFound(format!(
                "exec: {cmd:?}: stat {cmd}: no such file or directory"
            )),
        };
    }
    let path = process
        .env()
        .iter()
        .flatten()
        .filter_map(|kv| kv.strip_prefix("PATH="))
        .next_back()
        .unwrap_or("");
    let mut denied = None;
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let in_container = Path::new(dir).join(cmd);
        if under_mount(&in_container) {
            return Lookup::Unknown;
        }
        if let Some(host) = resolve(rootfs, &in_container) {
            match executable(cmd, &host) {
                Lookup::Found => return Lookup::Found,
                // As execvp: keep looking, report "permission denied" if
                // nothing better turns up.
                other => denied = denied.or(Some(other)),
            }
        }
    }
    denied.unwrap_or_else(|| {
        Lookup::NotFound(format!("exec: {cmd:?}: executable file not found in $PATH"))
    })
}

fn executable(cmd: &str, host: &Path) -> Lookup {
    match std::fs::metadata(host) {
        Ok(m) if m.is_dir() => Lookup::NotExecutable(format!("exec: {cmd:?}: is a directory")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Lookup::NotExecutable(format!("exec: {cmd:?}: permission denied"))
        }
        Ok(_) => Lookup::Found,
        Err(_) => Lookup::Unknown,
    }
}

/// Resolves `path` (absolute, inside the container) to a host path under
/// `rootfs`, following symlinks as the container will see them (an
/// absolute target starts again at the rootfs, `..` stops at it). None if
/// something on the way does not exist.
fn resolve(rootfs: &Path, path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = components(path);
    pending.reverse();
    let mut inside = PathBuf::from("/");
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == OsStr::new("..") {
            inside.pop();
            continue;
        }
        let candidate = inside.join(&name);
        let host = rootfs.join(candidate.strip_prefix("/").ok()?);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                inside = PathBuf::from("/");
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
        } else {
            inside = candidate;
        }
    }
    Some(rootfs.join(inside.strip_prefix("/").ok()?))
}

fn components(p: &Path) -> Vec<std::ffi::OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsStr::from_bytes(b"..").to_os_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn spec_with(args: &[&str], env: &[&str]) -> Spec {
        let mut s = Spec::default();
        let mut p = s.process().clone().unwrap_or_default();
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        p.set_env(Some(env.iter().map(|a| a.to_string()).collect()));
        s.set_process(Some(p));
        s.set_mounts(None);
        s
    }

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("usr")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"x").unwrap();
        std::fs::set_permissions(r.join("bin/busybox"), PermissionsExt::from_mode(0o755)).unwrap();
        symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        symlink("../bin/../bin/busybox", r.join("usr/true")).unwrap();
        std::fs::write(r.join("bin/data"), b"x").unwrap();
        symlink("/bin/loop", r.join("bin/loop")).unwrap();
        // Absolute links resolve inside the rootfs, never on the host.
        symlink("/etc/passwd", r.join("bin/hostfile")).unwrap();
        dir
    }

    #[test]
    fn finds_commands_through_path_and_in_rootfs_symlinks() {
        let r = rootfs();
        let env = ["PATH=/usr:/bin"];
        for cmd in ["sh", "true", "/bin/sh", "/usr/../bin/busybox"] {
            assert_eq!(
                lookup(&spec_with(&[cmd], &env), r.path()),
                Lookup::Found,
                "{cmd}"
            );
        }
    }

    #[test]
    fn missing_and_unexecutable_commands_are_typed() {
        let r = rootfs();
        let env = ["PATH=/usr:/bin"];
        let err = command(&spec_with(&["nope"], &env), r.path()).unwrap_err();
        assert_eq!(err.code, ErrorCode::CommandNotFound);
        assert!(
            err.message.contains("executable file not found in $PATH"),
            "{err}"
        );
        for cmd in ["hostfile", "loop", "/bin/nope"] {
            let err = command(&spec_with(&[cmd], &env), r.path()).unwrap_err();
            assert_eq!(err.code, ErrorCode::CommandNotFound, "{cmd}");
        }
        for cmd in ["data", "/bin", "/bin/data"] {
            let err = command(&spec_with(&[cmd], &env), r.path()).unwrap_err();
            assert_eq!(err.code, ErrorCode::CommandNotExecutable, "{cmd}: {err}");
        }
        // No PATH: nothing is found by name, as with the runtime.
        let err = command(&spec_with(&["sh"], &[]), r.path()).unwrap_err();
        assert_eq!(err.code, ErrorCode::CommandNotFound);
    }

    #[test]
    fn commands_under_a_mount_are_left_to_the_runtime() {
        let r = rootfs();
        let mut s = spec_with(&["/opt/tool"], &[]);
        let mut m = oci_spec::runtime::Mount::default();
        m.set_destination(PathBuf::from("/opt"));
        s.set_mounts(Some(vec![m]));
        command(&s, r.path()).unwrap();
    }

    #[test]
    fn hostnames_env_and_paths() {
        for ok in ["web", "a.b-c.d", "x1"] {
            hostname(ok).unwrap();
        }
        for bad in ["", "a\nb", "-a", "a-", "a..b", "a b", &"x".repeat(64)] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
        env_entry("A=line1\nline2").unwrap();
        for bad in ["A", "=x", "A B=1", "A\n=1", "A=x\0y"] {
            assert!(env_entry(bad).is_err(), "{bad:?}");
        }
        assert!(path_text("rootfs", "/a\nb").is_err());
        path_text("rootfs", "/a b").unwrap();
    }
}
