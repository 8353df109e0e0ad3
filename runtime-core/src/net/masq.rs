//! The one piece of CNI state the plugins cannot free without the
//! namespace: the bridge plugin finds the addresses whose masquerade
//! rules it must delete on the container's interface, so when the
//! namespace is already gone (a reboot that kept iptables, someone
//! unmounting it) its DEL leaves the POSTROUTING rule and its `CNI-...`
//! chain behind. berth removes them by the comment the plugin put on them
//! (`name: "berth" id: "<container id>"`), which names this container only.

use std::process::Command;

fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .arg("--wait")
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes the container's masquerade rules in nat POSTROUTING and the
/// chains they jump to. Best effort: what cannot be deleted is logged.
pub fn remove_leftovers(network: &str, container_id: &str) {
    let comment = format!("name: \"{network}\" id: \"{container_id}\"");
    let Some(listing) = iptables(&["-t", "nat", "-L", "POSTROUTING", "-n", "--line-numbers"])
    else {
        return;
    };
    // Highest rule number first, so the numbers of the rest stay valid.
    let mut found: Vec<(u32, String)> = listing
        .lines()
        .filter(|l| l.contains(&comment))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let num = f.next()?.parse().ok()?;
            let target = f.next()?.to_string();
            Some((num, target))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (num, chain) in found {
        let n = num.to_string();
        if iptables(&["-t", "nat", "-D", "POSTROUTING", &n]).is_none() {
            log::warn!("container {container_id}: could not delete its nat POSTROUTING rule {n}");
            continue;
        }
        if chain.starts_with("CNI-") {
            let _ = iptables(&["-t", "nat", "-F", &chain]);
            if iptables(&["-t", "nat", "-X", &chain]).is_none() {
                log::warn!("container {container_id}: could not delete nat chain {chain}");
            }
        }
    }
}
