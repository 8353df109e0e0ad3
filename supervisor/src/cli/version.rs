//! `berth version`: the client's and berthd's versions, as `docker
//! version` lays them out; the client part is printed even when berthd
//! cannot be reached (then the exit code is 125, as for any verb).

use std::path::Path;

use clap::Args;

use runtime_core::protocol::{Hello, PROTOCOL_MAJOR, PROTOCOL_MINOR};

use super::{connect, say, Outcome};
use crate::api::{methods, DaemonInfo};

#[derive(Args, Debug)]
pub struct VersionArgs {}

pub async fn version(root: &Path, _a: VersionArgs) -> Outcome {
    say("Client:")?;
    say(&format!(" Version:      {}", env!("CARGO_PKG_VERSION")))?;
    say(&format!(" API version:  {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"))?;
    say(&format!(
        " OS/Arch:      {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    ))?;
    say("")?;
    let mut c = connect(root).await?;
    let hello: Hello = c
        .call(
            methods::HELLO,
            &Hello::current(concat!("berth ", env!("CARGO_PKG_VERSION"))),
        )
        .await?;
    let info: DaemonInfo = c.call(methods::INFO, &serde_json::Value::Null).await?;
    say("Server:")?;
    say(" berthd:")?;
    say(&format!("  Version:     {}", info.version))?;
    say(&format!("  API version: {}.{}", hello.major, hello.minor))?;
    say(&format!("  PID:         {}", info.pid))?;
    say(&format!(" runtime:      {}", info.runtime))?;
    Ok(0)
}
