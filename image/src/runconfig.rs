//! What `berth run IMAGE` takes from the image's config: the command
//! (Entrypoint + Cmd, or Entrypoint + the user's COMMAND), Env, WorkingDir,
//! User and StopSignal. The user's `-e`/`-w`/`-u` win, as in Docker. The
//! user (the image's or `-u`'s) is looked up in the image's own
//! /etc/passwd and /etc/group, read from its layers before any overlay is
//! mounted, with runtime-core's bounds and resolved by its rules
//! (`runtime_core::user`), the same as for any other rootfs.

use std::path::PathBuf;

use runtime_core::user::{self, Databases};

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
    /// The user's home from the image's /etc/passwd (for `HOME`).
    pub home: Option<String>,
    pub stop_signal: Option<String>,
}

/// What the user gave `run IMAGE`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserInput<'a> {
    pub command: &'a [String],
    pub env: &'a [String],
    pub cwd: Option<&'a str>,
    /// `-u`: replaces the image's User.
    pub user: Option<&'a str>,
    pub group_add: &'a [String],
}

/// Combines the image config with what the user gave.
/// `layers` are the image's unpacked layer directories, top first.
pub fn settings(
    image: &str,
    config: &ImageConfig,
    layers: &[PathBuf],
    given: &UserInput<'_>,
) -> Result<RunSettings> {
    let (command, env, cwd) = (given.command, given.env, given.cwd);
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
    let image_user = c.user.as_deref().filter(|u| !u.is_empty());
    let who = match (given.user, image_user) {
        (None, None) if given.group_add.is_empty() => None,
        (spec, _) => {
            let db = Databases {
                passwd: read_from_layers(layers, "etc/passwd")?.unwrap_or_default(),
                group: read_from_layers(layers, "etc/group")?.unwrap_or_default(),
            };
            let spec = spec.or(image_user);
            let who =
                user::resolve_in(&db, spec, given.group_add).map_err(|e| match given.user {
                    Some(_) => Error::Other(e.to_string()),
                    None => Error::Other(format!(
                        "image {image}: cannot resolve its User {:?}: {e}",
                        spec.unwrap_or_default()
                    )),
                })?;
            Some(who)
        }
    };
    Ok(RunSettings {
        args,
        env: all_env,
        cwd,
        uid: who.as_ref().map_or(0, |w| w.uid),
        gid: who.as_ref().map_or(0, |w| w.gid),
        additional_gids: who
            .as_ref()
            .map(|w| w.additional_gids.clone())
            .unwrap_or_default(),
        home: who.and_then(|w| w.home),
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
    })
}

/// A small file as the stacked layers show it: the topmost layer that has
/// it as a regular file (a whiteout or anything else hides it). Opened
/// beneath each layer without following any symlink, never blocking, and
/// read within runtime-core's bounds (a regular file of at most
/// `user::MAX_FILE_SIZE` bytes, checked on the open file).
fn read_from_layers(layers: &[PathBuf], rel: &str) -> Result<Option<Vec<u8>>> {
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
                    return Ok(None);
                }
            }
            Err(_) => continue,
        }
        let Ok(fd) = rustix::fs::openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) else {
            return Ok(None);
        };
        let shown = format!("/{rel}");
        return user::read_bounded(std::fs::File::from(fd), &shown)
            .map(Some)
            .map_err(|e| Error::Other(e.to_string()));
    }
    Ok(None)
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
        let env = ["A=2".to_string()];
        let given = UserInput {
            env: &env,
            ..Default::default()
        };
        let s = settings("img", &c, &[], &given).unwrap();
        assert_eq!(s.args, ["/bin/app", "--default"]);
        assert_eq!(s.env, ["PATH=/bin", "A=1", "A=2"]);
        assert_eq!(s.cwd.as_deref(), Some("/srv"));
        assert_eq!(s.stop_signal.as_deref(), Some("SIGQUIT"));
        let command = ["x".to_string()];
        let given = UserInput {
            command: &command,
            cwd: Some("/w"),
            ..Default::default()
        };
        let s = settings("img", &c, &[], &given).unwrap();
        assert_eq!(s.args, ["/bin/app", "x"]);
        assert_eq!(s.cwd.as_deref(), Some("/w"));
        let err = settings("img", &ImageConfig::default(), &[], &UserInput::default())
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
            settings("img", &c, &layers, &UserInput::default())
                .map(|s| (s.uid, s.gid, s.additional_gids))
        };
        assert_eq!(u("app").unwrap(), (1000, 1001, vec![1002]));
        assert_eq!(u("1000").unwrap(), (1000, 1001, vec![1002]));
        assert_eq!(u("app:staff").unwrap(), (1000, 50, vec![]));
        // Docker's rule: a UID without an entry runs with GID 0.
        assert_eq!(u("4242").unwrap(), (4242, 0, vec![]));
        assert_eq!(u("4242:7").unwrap(), (4242, 7, vec![]));
        let e = u("nobody").unwrap_err().to_string();
        assert!(
            e.contains("cannot resolve its User \"nobody\": unable to find user nobody"),
            "{e}"
        );
        // -u wins over the image's User, resolved in the same files.
        let c = config(RunConfig {
            cmd: Some(vec!["x".into()]),
            user: Some("root".into()),
            ..Default::default()
        });
        let given = UserInput {
            user: Some("app"),
            group_add: &["staff".to_string()],
            ..Default::default()
        };
        let s = settings("img", &c, &layers, &given).unwrap();
        assert_eq!(
            (s.uid, s.gid, s.additional_gids),
            (1000, 1001, vec![1002, 50])
        );
        let given = UserInput {
            user: Some("ghost"),
            ..Default::default()
        };
        let e = settings("img", &c, &layers, &given)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unable to find user ghost"), "{e}");
        // A symlinked /etc/passwd in a layer is not followed.
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.path().join("etc/passwd")).unwrap();
        assert!(u("app").is_err());
    }

    #[test]
    fn layer_files_are_read_within_bounds() {
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        let layers = [top.path().to_path_buf()];
        let passwd = top.path().join("etc/passwd");
        std::fs::File::create(&passwd)
            .unwrap()
            .set_len(user::MAX_FILE_SIZE + 1)
            .unwrap();
        let c = config(RunConfig {
            cmd: Some(vec!["x".into()]),
            user: Some("app".into()),
            ..Default::default()
        });
        let e = settings("img", &c, &layers, &UserInput::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/passwd is larger than"), "{e}");
    }
}
