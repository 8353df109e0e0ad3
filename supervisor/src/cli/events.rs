//! `berth events [--since T] [--until T] [--filter K=V]... [--json]`:
//! replays the journal and follows new events, like `docker events`.
//!
//! When berthd goes away while following (restarted, upgraded) the CLI
//! reconnects and asks for what came after the last journal position it
//! had, so nothing in between is missed or shown twice.

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::{connect, Failure, Outcome};
use crate::api::methods;
use crate::event::{self, EventsParams, Filters, StreamItem};
use crate::rpc::CallError;

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show events since this time: a duration ago (10m), RFC 3339, or Unix seconds.
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms); without it, follow until interrupted.
    #[arg(long)]
    until: Option<String>,
    /// KEY=VALUE: container=NAME|ID, type=create|start|exit|... (repeatable).
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn bad_input(e: impl std::fmt::Display) -> Failure {
    Failure {
        message: e.to_string(),
        code: 125,
    }
}

pub async fn events(root: &Path, a: EventsArgs) -> Outcome {
    // Everything is checked before berthd is asked anything.
    let filters = Filters::parse(&a.filter).map_err(bad_input)?;
    let now = SystemTime::now();
    // Relative times are fixed now, so a reconnect later asks the same.
    let since = a
        .since
        .as_deref()
        .map(|s| event::parse_time(s, now))
        .transpose()
        .map_err(bad_input)?;
    let until = a
        .until
        .as_deref()
        .map(|s| event::parse_time(s, now))
        .transpose()
        .map_err(bad_input)?;
    let fmt = |t: SystemTime| runtime_core::time::format_rfc3339(t);
    let mut params = EventsParams {
        since: since.map(fmt),
        until: until.map(fmt),
        after_seq: None,
        follow: true,
        filters,
    };
    let mut reconnecting = false;
    loop {
        let mut c = match connect(root).await {
            Ok(c) => c,
            // Following: wait for berthd to come back.
            Err(_) if reconnecting => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(f) => return Err(f),
        };
        if reconnecting {
            eprintln!("berth: reconnected to berthd");
        }
        match stream(&mut c, &mut params, a.json).await {
            Ok(()) => return Ok(0),
            Err(CallError::Transport(_)) if params.after_seq.is_some() => {
                eprintln!("berth: lost berthd; reconnecting (no event will be missed)");
                reconnecting = true;
            }
            Err(CallError::Remote(e)) => return Err(bad_input(e)),
            Err(e) => return Err(Failure::from(e)),
        }
    }
}

/// Prints the stream until its end; records the position for a reconnect.
async fn stream(
    c: &mut crate::rpc::RpcClient,
    params: &mut EventsParams,
    json: bool,
) -> Result<(), CallError> {
    c.send_only(methods::EVENTS, params).await?;
    loop {
        let item: StreamItem = serde_json::from_value(c.next_reply().await?)
            .map_err(|e| CallError::Transport(format!("bad event from berthd: {e}")))?;
        match item {
            StreamItem::Event(ev) => {
                let line = if json {
                    serde_json::to_string(&ev).map_err(|e| CallError::Transport(e.to_string()))?
                } else {
                    ev.text()
                };
                params.after_seq = Some(ev.seq);
                if !print(&line) {
                    // Our reader went away (`berth events | head`): done.
                    return Ok(());
                }
            }
            StreamItem::Caught(seq) => {
                params.after_seq = Some(params.after_seq.map_or(seq, |s| s.max(seq)));
            }
            StreamItem::End => return Ok(()),
        }
    }
}

/// Prints one line; false once stdout is gone.
fn print(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}
