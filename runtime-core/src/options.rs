//! Applies [`RunOptions`] to a container's OCI config: the user, Docker's
//! security defaults, mounts, `--init` (its mount here, its args in
//! [`wrap_init`]) and limits. The network namespace
//! is the `net` module's (it needs the namespace made first); the
//! read-only root is set with the root itself (`spec::set_root`).

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::runopts::{OptError, RunOptions};
use crate::user::UserError;
use crate::{limits, mounts, security, user};

/// Everything applying the options can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(transparent)]
    Opt(#[from] OptError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Security(#[from] security::SecurityError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
}

/// Where `-u` and `--group-add` are resolved.
#[derive(Debug, Clone, Copy)]
pub enum UserLookup<'a> {
    /// In the /etc/passwd and /etc/group of the rootfs at this host path
    /// (the root the container will see).
    Rootfs(&'a Path),
    /// Already resolved into the spec by the caller: an image's user is
    /// looked up in its layers before its overlay is mounted.
    Done,
}

/// Applies `o` to `spec`.
pub fn apply(spec: &mut Spec, o: &RunOptions, users: UserLookup<'_>) -> Result<(), OptionsError> {
    o.validate()?;
    let mut process = spec.process().clone().unwrap_or_default();
    // Without -u/--group-add the user stays what the spec (or the
    // image's config) says.
    let rootfs = match users {
        UserLookup::Rootfs(r) if o.user.is_some() || !o.group_add.is_empty() => Some(r),
        _ => None,
    };
    if let Some(rootfs) = rootfs {
        let who = user::resolve(rootfs, o.user.as_deref(), &o.group_add)?;
        let mut u = process.user().clone();
        u.set_uid(who.uid);
        u.set_gid(who.gid);
        u.set_additional_gids(
            (!who.additional_gids.is_empty()).then(|| who.additional_gids.clone()),
        );
        process.set_user(u);
        if let Some(home) = &who.home {
            let mut env = process.env().clone().unwrap_or_default();
            if !env.iter().any(|e| e.starts_with("HOME=")) {
                env.push(format!("HOME={home}"));
                process.set_env(Some(env));
            }
        }
    }
    let root_user = process.user().uid() == 0;
    let mut extra = mounts::user_mounts(&o.mounts)?;
    if o.init {
        let init = mounts::find_init()?;
        extra.push(mounts::bind(&init, mounts::INIT_PATH, true));
    }
    spec.set_process(Some(process));
    security::apply(spec, o, root_user)?;
    mounts::add(spec, extra);
    limits::apply(spec, &o.limits);
    Ok(())
}

/// With `--init`, puts tini in front of the process's args (after the
/// command was checked, which is the user's, not tini).
pub fn wrap_init(spec: &mut Spec, o: &RunOptions) {
    if !o.init {
        return;
    }
    let mut process = spec.process().clone().unwrap_or_default();
    let mut args = vec![mounts::INIT_PATH.to_string(), "--".to_string()];
    args.extend(process.args().clone().unwrap_or_default());
    process.set_args(Some(args));
    spec.set_process(Some(process));
}
