//! What `berth run IMAGE` takes from the image's config: the command
//! (Entrypoint + Cmd, or Entrypoint + the user's COMMAND), Env, WorkingDir,
//! User (names looked up in the image's own /etc/passwd and /etc/group)
//! and StopSignal. The user's `-e`/`-w` win, as in Docker.

use std::io::Read;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::model::ImageConfig;
use crate::{Error, Result};

/// The process an image container runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSettings {
    pub args: Vec<String>,
    /// The image's Env, then the user's (later keys win).
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub stop_signal: Option<String>,
}

/// Combines the image config with what the user gave.
/// `layers` are the image's unpacked layer directories, top first.
pub fn settings(
    image: &str,
    config: &ImageConfig,
    layers: &[PathBuf],
    command: &[String],
    env: &[String],
    cwd: Option<&str>,
) -> Result<RunSettings> {
    let c = config.config.clone().unwrap_or_default();
    let mut args = c.entrypoint.clone().unwrap_or_default();
    if command.is_empty() {
        args.extend(c.cmd.clone().unwrap_or_default());
    } else {
        args.extend(command.iter().cloned());
    }
    if args.is_empty() {
        return Err(Error::Other(format!(
            "no command given and image {image} has no Entrypoint or Cmd: berth run {image} COMMAND"
        )));
    }
    let mut all_env = c.env.clone().unwrap_or_default();
    all_env.extend(env.iter().cloned());
    let cwd = cwd
        .map(str::to_string)
        .or_else(|| c.working_dir.clone().filter(|w| !w.is_empty()));
    let (uid, gid, additional_gids) = match c.user.as_deref().filter(|u| !u.is_empty()) {
        None => (0, 0, Vec::new()),
        Some(u) => resolve_user(image, u, layers)?,
    };
    Ok(RunSettings {
        args,
        env: all_env,
        cwd,
        uid,
        gid,
        additional_gids,
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
    })
}

/// `user`, `uid`, `user:group`, `uid:gid` as Docker reads them.
fn resolve_user(image: &str, spec: &str, layers: &[PathBuf]) -> Result<(u32, u32, Vec<u32>)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_from_layers(layers, "etc/passwd").unwrap_or_default();
    let groups = read_from_layers(layers, "etc/group").unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd);
    let groups = String::from_utf8_lossy(&groups);
    let fail = |what: &str| {
        Error::Other(format!(
            "image {image}: cannot resolve User {spec:?}: {what}"
        ))
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || f[2] == user));
    let (uid, name, mut gid) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| fail("bad /etc/passwd entry"))?,
            Some(f[0].to_string()),
            f[3].parse::<u32>()
                .map_err(|_| fail("bad /etc/passwd entry"))?,
        ),
        (None, Ok(n)) => (n, None, n),
        (None, Err(_)) => return Err(fail("no such user in the image's /etc/passwd")),
    };
    if entry.is_none() && group.is_none() {
        gid = uid;
    }
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| fail("no such group in the image's /etc/group"))?,
        };
    }
    // Supplementary groups: those listing the user by name (not with an
    // explicit group, as Docker).
    let mut extra = Vec::new();
    if let (Some(n), None) = (&name, group) {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == n) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !extra.contains(&g) {
                        extra.push(g);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

/// A small file as the stacked layers show it: the topmost layer that has
/// it as a regular file (a whiteout or anything else hides it). Opened
/// beneath each layer without following any symlink.
fn read_from_layers(layers: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    for dir in layers {
        let Ok(root) = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        match rustix::fs::statat(&root, rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::RegularFile
                {
                    return None;
                }
            }
            Err(_) => continue,
        }
        let fd = rustix::fs::openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?;
        let mut data = Vec::new();
        std::fs::File::from(fd)
            .take(1 << 20)
            .read_to_end(&mut data)
            .ok()?;
        return Some(data);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunConfig;

    fn config(rc: RunConfig) -> ImageConfig {
        ImageConfig {
            config: Some(rc),
            ..Default::default()
        }
    }

    #[test]
    fn command_env_and_cwd() {
        let c = config(RunConfig {
            entrypoint: Some(vec!["/bin/app".into()]),
            cmd: Some(vec!["--default".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            working_dir: Some("/srv".into()),
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        });
        let s = settings("img", &c, &[], &[], &["A=2".into()], None).unwrap();
        assert_eq!(s.args, ["/bin/app", "--default"]);
        assert_eq!(s.env, ["PATH=/bin", "A=1", "A=2"]);
        assert_eq!(s.cwd.as_deref(), Some("/srv"));
        assert_eq!(s.stop_signal.as_deref(), Some("SIGQUIT"));
        let s = settings("img", &c, &[], &["x".into()], &[], Some("/w")).unwrap();
        assert_eq!(s.args, ["/bin/app", "x"]);
        assert_eq!(s.cwd.as_deref(), Some("/w"));
        let err = settings("img", &ImageConfig::default(), &[], &[], &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no Entrypoint or Cmd"), "{err}");
    }

    #[test]
    fn users_from_the_image_files() {
        let top = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("etc")).unwrap();
        std::fs::write(
            base.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            base.path().join("etc/group"),
            "app:x:1001:\nextra:x:1002:app\nstaff:x:50:\n",
        )
        .unwrap();
        let layers = [top.path().to_path_buf(), base.path().to_path_buf()];
        let u = |spec: &str| {
            let c = config(RunConfig {
                cmd: Some(vec!["x".into()]),
                user: Some(spec.into()),
                ..Default::default()
            });
            settings("img", &c, &layers, &[], &[], None).map(|s| (s.uid, s.gid, s.additional_gids))
        };
        assert_eq!(u("app").unwrap(), (1000, 1001, vec![1002]));
        assert_eq!(u("1000").unwrap(), (1000, 1001, vec![1002]));
        assert_eq!(u("app:staff").unwrap(), (1000, 50, vec![]));
        assert_eq!(u("4242").unwrap(), (4242, 4242, vec![]));
        assert_eq!(u("4242:7").unwrap(), (4242, 7, vec![]));
        assert!(u("nobody")
            .unwrap_err()
            .to_string()
            .contains("no such user"));
        // A symlinked /etc/passwd in a layer is not followed.
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.path().join("etc/passwd")).unwrap();
        assert!(u("app").is_err());
    }
}
