//! `create` from an image: the container's lease on the image (which also
//! holds the store's shared lock until the overlay is mounted), and the
//! process the image's config asks for.

use std::path::PathBuf;

use oci_spec::runtime::Spec;

use berth_image::runconfig::{self, RunSettings};
use berth_image::store::Lease;
use runtime_core::protocol::{ErrorCode, RpcError};

use super::Daemon;
use crate::api::CreateParams;

/// An image resolved for one container.
pub struct Prepared {
    pub lease: Lease,
    pub settings: RunSettings,
}

fn from_image(e: berth_image::Error) -> RpcError {
    match e {
        berth_image::Error::NotFound(name) => RpcError::new(
            ErrorCode::NotFound,
            format!("no such image: {name} (berth pull or berth image import it first)"),
        ),
        other => RpcError::new(ErrorCode::InvalidArgument, other.to_string()),
    }
}

/// Takes the lease for the container whose directory will be `dir`, and
/// works out its process from the image config and the user's options.
pub async fn prepare(
    d: &Daemon,
    dir: PathBuf,
    image: &str,
    p: &CreateParams,
) -> Result<Prepared, RpcError> {
    let data_root = d.config.data_root.clone();
    let image = image.to_string();
    let (command, env, cwd) = (p.command.clone(), p.env.clone(), p.cwd.clone());
    let (user, group_add) = (p.options.user.clone(), p.options.group_add.clone());
    tokio::task::spawn_blocking(move || {
        let store = berth_image::Store::open(&data_root)?;
        let lease = store.lease(&dir, &image)?;
        let settings = runconfig::settings(
            &image,
            &lease.config,
            lease.layer_dirs(),
            &runconfig::UserInput {
                command: &command,
                env: &env,
                cwd: cwd.as_deref(),
                user: user.as_deref(),
                group_add: &group_add,
            },
        )?;
        Ok(Prepared { lease, settings })
    })
    .await
    .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(from_image)
}

/// Sets the process's user (uid, gid, supplementary groups) and, unless
/// the environment has one, `HOME` from the user's entry (as Docker).
pub fn apply_user(oci: &mut Spec, s: &RunSettings) {
    let mut process = oci.process().clone().unwrap_or_default();
    let mut user = process.user().clone();
    user.set_uid(s.uid);
    user.set_gid(s.gid);
    user.set_additional_gids((!s.additional_gids.is_empty()).then(|| s.additional_gids.clone()));
    process.set_user(user);
    if let Some(home) = &s.home {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={home}"));
            process.set_env(Some(env));
        }
    }
    oci.set_process(Some(process));
}
