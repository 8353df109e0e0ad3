//! `pause` and `unpause`: the shim freezes and thaws the container with
//! the runtime (cgroup v1 freezer here, v2 elsewhere); `ps` shows
//! `paused` in between.

use runtime_core::protocol::{shim_methods as m, ErrorCode, RpcError, ShimStatus};

use super::registry::Phase;
use super::shim;
use super::{reconcile, Daemon};

/// Freezes a running container.
pub async fn pause(d: &Daemon, id: &str) -> Result<(), RpcError> {
    change(d, id, ShimStatus::Running, m::PAUSE, "pause").await
}

/// Thaws a paused container.
pub async fn unpause(d: &Daemon, id: &str) -> Result<(), RpcError> {
    change(d, id, ShimStatus::Paused, m::RESUME, "unpause").await
}

async fn change(
    d: &Daemon,
    id: &str,
    from: ShimStatus,
    method: &str,
    verb: &str,
) -> Result<(), RpcError> {
    reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    if !matches!(&entry.phase, Phase::Live(s) if s.status == from && s.exit.is_none()) {
        let need = if from == ShimStatus::Paused {
            "only a paused container can be unpaused"
        } else {
            "only a running container can be paused"
        };
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!(
                "container {} is {}: {need}",
                entry.meta.name,
                entry.info_status()
            ),
        ));
    }
    let paths = d.root.container(id);
    let done = match shim::connect(&paths).await {
        Ok(mut c) => c.call_value(method, &()).await,
        Err(e) => Err(e),
    };
    let done = match done {
        Ok(v) => Ok(v),
        Err(e) => Err(reconcile::call_failed(d, id, e).await),
    };
    reconcile::refresh(d, id).await;
    match done {
        Err(e) if e.code == ErrorCode::UnknownMethod => Err(RpcError::new(
            ErrorCode::Conflict,
            format!(
                "container {}'s shim is older than {verb} (protocol 1.0); run the container again under this berthd to {verb} it",
                entry.meta.name
            ),
        )),
        Err(e) => Err(e),
        Ok(_) => {
            super::events::paused(d, id, from == ShimStatus::Running);
            Ok(())
        }
    }
}
