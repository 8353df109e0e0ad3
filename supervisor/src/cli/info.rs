//! `berth info`: berthd's version, root, runtime and the container counts,
//! like `docker info`'s first lines.

use std::path::Path;

use clap::Args;
use serde_json::Value as Json;

use super::{connect, say, Outcome};
use crate::api::{methods, ContainerStatus, DaemonInfo, ListParams};

#[derive(Args, Debug)]
pub struct InfoArgs {}

pub async fn info(root: &Path, _a: InfoArgs) -> Outcome {
    let mut c = connect(root).await?;
    let d: DaemonInfo = c.call(methods::INFO, &Json::Null).await?;
    let list: Vec<Json> = c.call(methods::LIST, &ListParams { all: true }).await?;
    let count = |s: ContainerStatus| {
        list.iter()
            .filter(|c| ContainerStatus::of(c) == Some(s))
            .count()
    };
    say("Client:")?;
    say(&format!(" Version:          {}", env!("CARGO_PKG_VERSION")))?;
    say("")?;
    say("Server:")?;
    say(&format!(" Containers:       {}", list.len()))?;
    say(&format!(
        "  Running:         {}",
        count(ContainerStatus::Running)
    ))?;
    say(&format!(
        "  Paused:          {}",
        count(ContainerStatus::Paused)
    ))?;
    say(&format!(
        "  Stopped:         {}",
        count(ContainerStatus::Exited)
    ))?;
    say(&format!(
        "  Created:         {}",
        count(ContainerStatus::Created)
    ))?;
    say(&format!(" Server Version:   {}", d.version))?;
    say(&format!(" Root Dir:         {}", d.root))?;
    say(&format!(" Runtime:          {}", d.runtime))?;
    say(&format!(" Shim:             {}", d.shim))?;
    say(&format!(" berthd PID:       {}", d.pid))?;
    let uname = nix::sys::utsname::uname().ok();
    if let Some(u) = uname {
        say(&format!(
            " Kernel Version:   {}",
            u.release().to_string_lossy()
        ))?;
    }
    say(&format!(
        " OSType:           {}\n Architecture:     {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    ))?;
    Ok(0)
}
