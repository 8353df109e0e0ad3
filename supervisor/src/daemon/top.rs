//! `top`: the container's processes, from the runtime's list of PIDs
//! (`runc ps`) and the host's /proc: PID, USER, TIME, COMMAND.

use std::process::Stdio;

use runtime_core::protocol::{ErrorCode, RpcError};
use runtime_core::runc::Runc;

use super::registry::Phase;
use super::{reconcile, Daemon};
use crate::api::TopResult;

/// Lists a running container's processes.
pub async fn top(d: &Daemon, id: &str) -> Result<TopResult, RpcError> {
    reconcile::settle(d, id).await;
    let entry = d
        .registry
        .get(id)
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("no such container: {id}")))?;
    if !matches!(&entry.phase, Phase::Live(s) if s.status.is_alive() && s.exit.is_none()) {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!(
                "container {} is {}: it has no processes to show",
                entry.meta.name,
                entry.info_status()
            ),
        ));
    }
    let runc = Runc {
        binary: entry.meta.runtime.clone().into(),
        root: d.root.runc_root(),
        log: d.root.container(id).runc_log(),
    };
    let mark = runc.log_mark();
    let mut cmd = tokio::process::Command::from(runc.ps(id));
    cmd.stdout(Stdio::piped());
    let out = cmd.output().await.map_err(|e| {
        RpcError::new(
            ErrorCode::Runtime,
            format!("{}: {e}", runc.binary.display()),
        )
    })?;
    if !out.status.success() {
        let fallback = format!("{} ps {id} failed: {}", runc.binary.display(), out.status);
        return Err(RpcError::new(
            ErrorCode::Runtime,
            runc.error_since(mark, &fallback),
        ));
    }
    let pids: Vec<i32> = serde_json::from_slice(&out.stdout).map_err(|e| {
        RpcError::new(
            ErrorCode::Runtime,
            format!("unreadable answer from {} ps: {e}", runc.binary.display()),
        )
    })?;
    let processes = pids.iter().filter_map(|&pid| process_row(pid)).collect();
    Ok(TopResult {
        titles: ["PID", "USER", "TIME", "COMMAND"]
            .map(String::from)
            .to_vec(),
        processes,
    })
}

/// One row from /proc; None if the process is gone by now.
fn process_row(pid: i32) -> Option<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    // Fields after "(comm)": state is field 3, utime 14 and stime 15.
    let (comm_part, rest) = stat.rsplit_once(')')?;
    let comm = comm_part.split_once('(').map(|(_, c)| c).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let command = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(vec![pid.to_string(), user, cpu_time(ticks), command])
}

/// CPU time as ps prints it: [DD-]HH:MM:SS.
fn cpu_time(ticks: u64) -> String {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&n| n > 0)
        .unwrap_or(100) as u64;
    let secs = ticks / hz;
    let (days, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_a_row() {
        let row = process_row(std::process::id() as i32).unwrap();
        assert_eq!(row[0], std::process::id().to_string());
        assert_eq!(row.len(), 4);
        assert!(row[2].contains(':'), "{row:?}");
    }

    #[test]
    fn cpu_time_is_formatted_as_ps_does() {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as u64;
        assert_eq!(cpu_time(61 * hz), "00:01:01");
        assert_eq!(cpu_time((86400 + 3600) * hz), "1-01:00:00");
    }
}
