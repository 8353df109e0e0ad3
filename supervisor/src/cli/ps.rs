//! `berth ps [-a] [--json]`: the container table.

use std::path::Path;
use std::time::SystemTime;

use clap::Args;

use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo, ContainerStatus, ListParams};

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Include containers that are not running.
    #[arg(short, long)]
    all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn ps(root: &Path, a: PsArgs) -> Outcome {
    let mut c = connect(root).await?;
    let list: Vec<ContainerInfo> = c.call(methods::LIST, &ListParams { all: a.all }).await?;
    if a.json {
        let text = serde_json::to_string_pretty(&list).map_err(|e| Failure::new(e.to_string()))?;
        say(&text)?;
        return Ok(0);
    }
    say(&format!(
        "{:<16}  {:<20}  {:<14}  {:<16}  COMMAND",
        "ID", "NAME", "STATUS", "CREATED"
    ))?;
    for info in &list {
        say(&format!(
            "{:<16}  {:<20}  {:<14}  {:<16}  {}",
            info.id,
            truncate(&info.name, 20),
            status_text(info),
            ago(&info.created_at),
            truncate(&shell_join(&info.command), 40)
        ))?;
    }
    Ok(0)
}

/// "running", "exited (3)", "exited (?)" when the code is unknown.
pub fn status_text(info: &ContainerInfo) -> String {
    match (info.status, info.exit_code) {
        (ContainerStatus::Exited, Some(code)) => format!("exited ({code})"),
        (ContainerStatus::Exited, None) => "exited (?)".into(),
        (s, _) => s.to_string(),
    }
}

fn ago(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else {
        return "?".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=59 => format!("{secs} seconds ago"),
        60..=3599 => format!("{} minutes ago", secs / 60),
        3600..=86399 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_truncates_commands() {
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo a; exit 3".to_string(),
        ];
        assert_eq!(shell_join(&cmd), "sh -c 'echo a; exit 3'");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
