//! `berth port C [PORT[/PROTO]]`: a container's published ports, as
//! `docker port` prints them (`80/tcp -> 0.0.0.0:8080`).

use std::path::Path;

use clap::Args;

use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo, Target};

#[derive(Args, Debug)]
pub struct PortArgs {
    /// Container ID, ID prefix or name.
    container: String,
    /// Only this container port (`80` or `80/tcp`).
    port: Option<String>,
}

pub async fn port(root: &Path, a: PortArgs) -> Outcome {
    let mut c = connect(root).await?;
    let info: ContainerInfo = c
        .call(methods::INSPECT, &Target { id: a.container })
        .await?;
    let filter = a.port.as_deref().map(|p| match p.split_once('/') {
        Some((n, proto)) => (n.to_string(), Some(proto.to_string())),
        None => (p.to_string(), None),
    });
    let mut found = false;
    // What the container holds now: nothing once it has exited and its
    // network was released (as `docker port` of a stopped container).
    let held = info
        .network
        .as_ref()
        .map(|n| n.ports.as_slice())
        .unwrap_or(&[]);
    for m in held {
        if let Some((n, proto)) = &filter {
            if m.container_port.to_string() != *n
                || proto.as_ref().is_some_and(|p| *p != m.protocol.to_string())
            {
                continue;
            }
        }
        found = true;
        say(&m.to_string())?;
    }
    if let (Some(p), false) = (&a.port, found) {
        return Err(Failure::new(format!(
            "no public port {p:?} published for {}",
            info.name
        )));
    }
    Ok(0)
}
