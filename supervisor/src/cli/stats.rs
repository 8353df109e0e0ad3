//! `berth stats [--no-stream] [--json] [CONTAINER...]`: CPU %, memory,
//! PIDs, block and network I/O from each container's cgroup, refreshed
//! once a second like `docker stats`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::{connect, Failure, Outcome};
use crate::api::{methods, ContainerInfo, ListParams, Target};
use crate::rpc::{CallError, RpcClient};
use crate::stats::{binary, decimal, Row, Sample};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    no_stream: bool,
    /// One JSON object per container and sample.
    #[arg(long)]
    json: bool,
    /// Containers (ID, ID prefix or name); default: every running one.
    containers: Vec<String>,
}

const INTERVAL: Duration = Duration::from_secs(1);

pub async fn stats(root: &Path, a: StatsArgs) -> Outcome {
    let mut c = connect(root).await?;
    let explicit = !a.containers.is_empty();
    let clear = !a.json && !a.no_stream && std::io::stdout().is_terminal();
    let mut before: HashMap<String, Sample> = HashMap::new();
    // Named containers must be running now: a clear error if one is not.
    if explicit {
        for name in &a.containers {
            let s = sample(&mut c, name).await.map_err(Failure::from)?;
            before.insert(name.clone(), s);
        }
    } else {
        for name in running(&mut c).await? {
            if let Ok(s) = sample(&mut c, &name).await {
                before.insert(name, s);
            }
        }
    }
    loop {
        tokio::time::sleep(INTERVAL).await;
        let names = if explicit {
            a.containers.clone()
        } else {
            running(&mut c).await?
        };
        let mut rows = Vec::new();
        let mut now = HashMap::new();
        for name in names {
            // One that stopped since is left out, as docker stats does.
            let Ok(s) = sample(&mut c, &name).await else {
                continue;
            };
            rows.push(Row::new(&s, before.get(&name)));
            now.insert(name, s);
        }
        before = now;
        if !print(&rows, a.json, clear) {
            return Ok(0);
        }
        if a.no_stream || (explicit && rows.is_empty()) {
            return Ok(0);
        }
    }
}

async fn sample(c: &mut RpcClient, name: &str) -> Result<Sample, CallError> {
    c.call(
        methods::STATS,
        &Target {
            id: name.to_string(),
        },
    )
    .await
}

async fn running(c: &mut RpcClient) -> Result<Vec<String>, Failure> {
    let list: Vec<ContainerInfo> = c.call(methods::LIST, &ListParams { all: false }).await?;
    Ok(list.into_iter().map(|i| i.id).collect())
}

/// Prints one refresh; false once stdout is gone.
fn print(rows: &[Row], json: bool, clear: bool) -> bool {
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    if json {
        for r in rows {
            match serde_json::to_string(r) {
                Ok(line) => text += &(line + "\n"),
                Err(_) => return false,
            }
        }
    } else {
        if clear {
            text += "\x1b[2J\x1b[H";
        }
        text += &format!(
            "{:<16}  {:<20}  {:>7}  {:>21}  {:>7}  {:>19}  {:>19}  {:>5}\n",
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS"
        );
        for r in rows {
            text += &format!(
                "{:<16}  {:<20}  {:>6.2}%  {:>21}  {:>6.2}%  {:>19}  {:>19}  {:>5}\n",
                r.id,
                r.name,
                r.cpu_percent,
                format!("{} / {}", binary(r.memory_usage), binary(r.memory_limit)),
                r.memory_percent,
                format!("{} / {}", decimal(r.net_rx), decimal(r.net_tx)),
                format!("{} / {}", decimal(r.block_read), decimal(r.block_write)),
                r.pids
            );
        }
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}
