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

/// ADD through the whole list; the last plugin's result. On failure the
/// plugins already run are deleted again, so nothing is left.
pub fn add(list: &Value, call: &Call<'_>) -> Result<Value, NetError> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(list) {
        let conf = plugin_conf(list, &plugin, call, prev.as_ref());
        match exec(call, "ADD", &conf) {
            Ok(r) => prev = Some(r),
            Err(e) => {
                let _ = del(list, call, prev.as_ref());
                return Err(e);
            }
        }
    }
    Ok(prev.unwrap_or_else(|| json!({})))
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
