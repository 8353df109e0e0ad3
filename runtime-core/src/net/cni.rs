//! The CNI plugin protocol (containernetworking/cni SPEC.md): each plugin
//! of a network configuration list is executed with the command in its
//! environment and its configuration on stdin; ADD runs the chain in
//! order, each plugin getting the previous one's result, DEL runs it in
//! reverse with the ADD result.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::NetError;

/// One invocation's context.
pub struct Call<'a> {
    /// Directory holding the plugin binaries (CNI_PATH).
    pub bin_dir: &'a Path,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// Passed to plugins that declare the capability (portMappings).
    pub runtime_config: &'a Value,
}

fn exec(call: &Call<'_>, command: &str, conf: &Value) -> Result<Value, NetError> {
    let kind = conf["type"].as_str().unwrap_or_default().to_string();
    let plugin = call.bin_dir.join(&kind);
    let fail = |message: String| NetError::Plugin {
        plugin: kind.clone(),
        command: command.to_string(),
        message,
    };
    let mut child = Command::new(&plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", call.bin_dir)
        // iptables and friends are looked up in PATH by the plugins.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", plugin.display())))?;
    let input = serde_json::to_vec(conf).map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .map_err(|e| fail(format!("write its config: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("wait: {e}")))?;
    if out.status.success() {
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("its result does not parse: {e}")));
    }
    // A plugin's error is JSON {code, msg, details} on stdout.
    let message = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            let msg = v["msg"].as_str()?.to_string();
            Some(match v["details"].as_str().filter(|d| !d.is_empty()) {
                Some(d) => format!("{msg}: {d}"),
                None => msg,
            })
        })
        .unwrap_or_else(|| {
            let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if s.is_empty() {
                format!("exited with {}", out.status)
            } else {
                s
            }
        });
    Err(fail(message))
}

/// The configuration one plugin of the list gets.
fn plugin_conf(list: &Value, plugin: &Value, call: &Call<'_>, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(caps) = plugin["capabilities"].as_object() {
        let mut rc = serde_json::Map::new();
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = call.runtime_config.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            conf["runtimeConfig"] = Value::Object(rc);
        }
    }
    if let Some(p) = prev.filter(|p| !p.is_null()) {
        conf["prevResult"] = p.clone();
    }
    conf
}

fn plugins(list: &Value) -> Vec<Value> {
    list["plugins"].as_array().cloned().unwrap_or_default()
}

/// Plugins whose ADD result is their prevResult unchanged (they add
/// iptables rules for the interfaces the result names and touch nothing
/// else of it): the reference plugins' portmap and firewall.
const PASS_THROUGH: [&str; 2] = ["portmap", "firewall"];

fn passes_through(plugin: &Value) -> bool {
    plugin["type"]
        .as_str()
        .is_some_and(|t| PASS_THROUGH.contains(&t))
}

/// ADD through the whole list; the last plugin's result. A run of
/// pass-through plugins after the first result (portmap, firewall) is
/// executed side by side: each gets the same prevResult it would get in
/// order, and returns it, so the outcome is the ordered chain's while
/// the time is the slowest plugin's, not their sum. On failure the
/// plugins already run are deleted again, so nothing is left.
pub fn add(list: &Value, call: &Call<'_>) -> Result<Value, NetError> {
    let all = plugins(list);
    let mut prev: Option<Value> = None;
    let mut next = 0;
    while next < all.len() {
        let group = match &prev {
            Some(_) => all[next..]
                .iter()
                .take_while(|p| passes_through(p))
                .count()
                .max(1),
            None => 1,
        };
        let confs: Vec<Value> = all[next..next + group]
            .iter()
            .map(|plugin| plugin_conf(list, plugin, call, prev.as_ref()))
            .collect();
        next += group;
        let results = run_side_by_side(call, &confs);
        // In list order: the last result is the chain's, the first
        // failure the one reported.
        let mut failed = None;
        for r in results {
            match r {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            let _ = del(list, call, prev.as_ref());
            return Err(e);
        }
    }
    Ok(prev.unwrap_or_else(|| json!({})))
}

/// ADD of each configuration, each plugin a process of its own, on
/// threads of their own when there are several; results in input order.
fn run_side_by_side(call: &Call<'_>, confs: &[Value]) -> Vec<Result<Value, NetError>> {
    if let [one] = confs {
        return vec![exec(call, "ADD", one)];
    }
    std::thread::scope(|scope| {
        let threads: Vec<_> = confs
            .iter()
            .map(|conf| scope.spawn(move || exec(call, "ADD", conf)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(NetError::Internal("a CNI ADD thread panicked".into())))
            })
            .collect()
    })
}

/// DEL through the list in reverse. Every plugin is asked even when one
/// fails (each owns different state); the first failure is returned.
pub fn del(list: &Value, call: &Call<'_>, result: Option<&Value>) -> Result<(), NetError> {
    let mut first = None;
    for plugin in plugins(list).iter().rev() {
        let conf = plugin_conf(list, plugin, call, result);
        if let Err(e) = exec(call, "DEL", &conf) {
            log::warn!("{e}");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const RESULT: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.44.9.2/24"}]}"#;

    /// A fake plugin: keeps its configuration as `<type>.<command>`, then
    /// runs `body` and prints the fixed result.
    fn plugin(dir: &Path, kind: &str, body: &str) {
        let path = dir.join(kind);
        let script = format!(
            "#!/bin/sh\ncat > \"{d}/{kind}.$CNI_COMMAND\"\n{body}\necho '{RESULT}'\n",
            d = dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Waits (up to 10 s) for the other plugin to have started: only
    /// plugins that run side by side both get past it.
    fn rendezvous(dir: &Path, me: &str, other: &str) -> String {
        let d = dir.display();
        format!(
            "touch \"{d}/{me}.started\"\ni=0\nwhile [ ! -e \"{d}/{other}.started\" ]; do\n  \
             i=$((i+1)); [ $i -gt 100 ] && {{ echo '{{\"code\":11,\"msg\":\"{me} ran alone\"}}'; exit 1; }}\n  \
             sleep 0.1\ndone"
        )
    }

    /// The call every test makes: container c1's eth0 in a made-up netns.
    fn call<'a>(bin_dir: &'a Path, runtime_config: &'a Value) -> Call<'a> {
        Call {
            bin_dir,
            container_id: "c1",
            netns: Path::new("/x"),
            ifname: "eth0",
            runtime_config,
        }
    }

    fn list() -> Value {
        json!({"cniVersion": "1.0.0", "name": "t", "plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"}
        ]})
    }

    #[test]
    fn pass_through_plugins_run_side_by_side_with_the_chains_prev_result() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        plugin(d, "bridge", "");
        plugin(d, "portmap", &rendezvous(d, "portmap", "firewall"));
        plugin(d, "firewall", &rendezvous(d, "firewall", "portmap"));
        let rc = json!({"portMappings": [{"hostPort": 8080}]});
        let call = call(d, &rc);
        let result = add(&list(), &call).unwrap();
        assert_eq!(result, serde_json::from_str::<Value>(RESULT).unwrap());
        let conf = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(d.join(name)).unwrap()).unwrap()
        };
        assert!(conf("bridge.ADD").get("prevResult").is_none());
        for p in ["portmap.ADD", "firewall.ADD"] {
            assert_eq!(conf(p)["prevResult"], result, "{p}");
        }
        assert_eq!(conf("portmap.ADD")["runtimeConfig"], rc);
    }

    #[test]
    fn a_failing_side_by_side_plugin_undoes_the_whole_chain() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        plugin(d, "bridge", "");
        plugin(
            d,
            "portmap",
            "[ \"$CNI_COMMAND\" = ADD ] && { echo '{\"code\":11,\"msg\":\"no port\"}'; exit 1; }",
        );
        plugin(d, "firewall", "");
        let rc = json!({});
        let call = call(d, &rc);
        let e = add(&list(), &call).unwrap_err();
        assert!(
            matches!(&e, NetError::Plugin { plugin, .. } if plugin == "portmap"),
            "{e}"
        );
        for p in ["firewall.DEL", "portmap.DEL", "bridge.DEL"] {
            assert!(d.join(p).exists(), "{p} not run");
        }
    }
}
