//! The bridge's fixed iptables rules, installed once per bridge, as
//! Docker installs its per-bridge rules: the subnet's masquerade for
//! traffic leaving through another interface, and FORWARD accepts for the
//! subnet (out, and replies in). With them the CNI chain needs neither the
//! bridge plugin's per-container masquerade chain (`ipMasq`) nor the
//! firewall plugin's per-container rules: measured here (quiet machine),
//! the bridge plugin's ADD takes ~30 ms without `ipMasq` against 60-75 ms
//! with it, and the firewall plugin 30-60 ms more, each on the path of
//! every bridge container's start. Per container only portmap's DNAT
//! rules remain (when it publishes ports).
//!
//! Each rule carries the comment `berth bridge <name>`; [`ensure`] adds a
//! rule only when `iptables -C` does not find it, so berthd restarts never
//! stack them, and [`remove`] deletes every copy.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Mutex;

use super::{NetConfig, NetError};

/// Bridges whose rules this process has made sure of.
static ENSURED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// `(table, chain, insert at the top, rule)` for `c`'s bridge.
fn rules(c: &NetConfig) -> Vec<(&'static str, &'static str, bool, Vec<String>)> {
    let tag = format!("berth bridge {}", c.bridge);
    let s = |v: &[&str]| -> Vec<String> {
        v.iter()
            .map(|a| a.to_string())
            .chain(["-m", "comment", "--comment", &tag].map(String::from))
            .collect()
    };
    let (subnet, bridge) = (c.subnet.as_str(), c.bridge.as_str());
    vec![
        (
            "nat",
            "POSTROUTING",
            false,
            s(&["-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"]),
        ),
        // At the top of FORWARD, as the firewall plugin put its jump: a
        // DROP policy or a DROP rule of someone else's must not come first.
        (
            "filter",
            "FORWARD",
            true,
            s(&["-s", subnet, "-j", "ACCEPT"]),
        ),
        (
            "filter",
            "FORWARD",
            true,
            s(&[
                "-d",
                subnet,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
        ),
    ]
}

fn iptables(table: &str, op: &str, chain: &str, rule: &[String]) -> Result<(), String> {
    let mut cmd = Command::new("iptables");
    cmd.args(["--wait", "-t", table, op, chain])
        .args(rule)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    dies_with_caller(&mut cmd);
    let out = cmd.output().map_err(|e| format!("run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Has `cmd`'s child killed if the thread that runs it dies first. berthd
/// adds these rules off its start-up path; SIGKILLed meanwhile (a test's
/// clean-up, an operator), its `iptables -A` used to finish on its own,
/// after whoever cleaned up had deleted the rules, and leave one behind.
/// Killing iptables is safe: each change is committed to the kernel whole
/// or not at all, and the next berthd makes sure of the rules again.
fn dies_with_caller(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let caller = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid); it allocates
    // nothing and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The caller died between fork and prctl: no signal will come.
            if nix::unistd::getppid().as_raw() as u32 != caller {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn failed(c: &NetConfig, e: String) -> NetError {
    NetError::Config(format!("iptables rules for bridge {}: {e}", c.bridge))
}

/// Makes sure the bridge's fixed rules are there: once per process and
/// bridge (later calls return at once), adding only what is missing.
pub fn ensure(c: &NetConfig) -> Result<(), NetError> {
    let mut done = ENSURED.lock().unwrap_or_else(|p| p.into_inner());
    let set = done.get_or_insert_with(HashSet::new);
    if set.contains(&c.bridge) {
        return Ok(());
    }
    for (table, chain, top, rule) in rules(c) {
        if iptables(table, "-C", chain, &rule).is_ok() {
            continue;
        }
        let added = if top {
            let mut at_top = vec!["1".to_string()];
            at_top.extend(rule);
            iptables(table, "-I", chain, &at_top)
        } else {
            iptables(table, "-A", chain, &rule)
        };
        added.map_err(|e| failed(c, e))?;
    }
    set.insert(c.bridge.clone());
    Ok(())
}

/// Deletes the bridge's fixed rules (every copy), when no container uses
/// the bridge any more.
pub fn remove(c: &NetConfig) -> Result<(), NetError> {
    if let Some(set) = ENSURED.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        set.remove(&c.bridge);
    }
    for (table, chain, _, rule) in rules(c) {
        // A bounded loop: a rule that -C finds but -D cannot delete must
        // not spin forever.
        for _ in 0..16 {
            if iptables(table, "-C", chain, &rule).is_err() {
                break;
            }
            iptables(table, "-D", chain, &rule).map_err(|e| failed(c, e))?;
        }
    }
    Ok(())
}

/// The comment every fixed rule of `bridge` carries (for tools and tests).
pub fn comment(bridge: &str) -> String {
    format!("berth bridge {bridge}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// The child outlives the thread that started it only until that
    /// thread ends, as an `iptables` of berthd's does not outlive berthd.
    #[test]
    fn a_child_dies_with_the_thread_that_ran_it() {
        let child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("1000");
            dies_with_caller(&mut cmd);
            cmd.spawn().expect("spawn sleep")
        })
        .join()
        .expect("the spawning thread");
        let mut child = child;
        let status = child.wait().expect("wait sleep");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
