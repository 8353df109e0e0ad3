//! Each test instance's own network: a bridge name and a /24 in
//! 10.200.0.0-10.254.255.0 that no concurrently running test holds, claimed
//! with a file made O_EXCL (a claim whose owner died is taken over), and
//! what a test counts to prove nothing network-related was left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Claims live here, shared by every test process on the machine.
const CLAIMS: &str = "/run/berth-test-nets";
const SLOTS: u32 = 55 * 256;

/// One claimed bridge + subnet; released on drop.
pub struct NetClaim {
    file: PathBuf,
    pub bridge: String,
    pub subnet: String,
    /// "10.2xx.y." : every address of the subnet starts with it.
    pub prefix: String,
    /// A host port no other test instance uses (15000 + slot).
    pub port: u16,
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl NetClaim {
    pub fn claim() -> NetClaim {
        std::fs::create_dir_all(CLAIMS).expect("claims dir");
        let start = (std::process::id().wrapping_mul(2654435761)) % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let file = Path::new(CLAIMS).join(slot.to_string());
            let fresh = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file);
            let mut f = match fresh {
                Ok(f) => f,
                Err(_) => {
                    let owner = std::fs::read_to_string(&file)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    // A claim is written in one go; an unreadable or dead
                    // owner's claim is stale, unless it was just made.
                    if owner.is_some_and(alive) || owner.is_none() {
                        continue;
                    }
                    let _ = std::fs::remove_file(&file);
                    match std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&file)
                    {
                        Ok(f) => f,
                        Err(_) => continue,
                    }
                }
            };
            write!(f, "{}", std::process::id()).expect("write claim");
            let (a, b) = (200 + slot / 256, slot % 256);
            let claim = NetClaim {
                file,
                bridge: format!("bt{slot}"),
                subnet: format!("10.{a}.{b}.0/24"),
                prefix: format!("10.{a}.{b}."),
                port: 15000 + slot as u16,
            };
            // A bridge left by a killed earlier owner goes first.
            claim.delete_bridge();
            return claim;
        }
        panic!("no free test network slot in {CLAIMS}");
    }

    pub fn delete_bridge(&self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .output();
        }
    }

    /// Interfaces enslaved to our bridge (the host ends of veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        std::fs::read_dir(Path::new("/sys/class/net").join(&self.bridge).join("brif"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// iptables rules (nat and filter) that mention our subnet or a name.
    pub fn iptables_rules(&self, names: &[&str]) -> Vec<String> {
        let mut rules = Vec::new();
        for table in ["nat", "filter"] {
            let out = Command::new("iptables-save")
                .args(["-t", table])
                .output()
                .expect("iptables-save");
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if l.starts_with("-A")
                    && (l.contains(&self.prefix) || names.iter().any(|n| l.contains(n)))
                {
                    rules.push(l.to_string());
                }
            }
        }
        rules
    }
}

impl Drop for NetClaim {
    fn drop(&mut self) {
        self.delete_bridge();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// IPAM leases held under a berth root (host-local: one file per address).
pub fn leases(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("net/ipam/berth"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect()
        })
        .unwrap_or_default()
}

/// Mounts under a berth root that are network namespaces.
pub fn netns_mounts(root: &Path) -> Vec<String> {
    let needle = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle) && l.contains("nsfs"))
        .map(str::to_string)
        .collect()
}
