//! `berth inspect [--format T] CONTAINER...`: the container's state as
//! JSON. berth's own fields (snake_case, as the API reports them) stay;
//! Docker's layout is added beside them where scripts look for it
//! (`State.ExitCode`, `Config.Env`, `HostConfig`, `Mounts` ...), built from
//! berthd's answer and the container's own files (meta.json, the bundle's
//! config.json). One container prints one object, several an array;
//! `--format` renders a Go template per container.

use std::path::Path;

use clap::Args;
use serde_json::{json, Map, Value as Json};

use runtime_core::meta::ContainerMeta;

use super::format::{print_rows, Format};
use super::kill::partial;
use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerInfo, ContainerStatus, Target};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A Go template, e.g. '{{.State.ExitCode}}' or '{{json .Config}}'.
    #[arg(short, long)]
    format: Option<String>,
    /// Container IDs, ID prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Docker's zero time, for times that have not happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub async fn inspect(root: &Path, a: InspectArgs) -> Outcome {
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    let mut c = connect(root).await?;
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for id in &a.containers {
        let r: Result<Json, _> = c.call(methods::INSPECT, &Target { id: id.clone() }).await;
        match r {
            Ok(v) => found.push(with_docker_layout(v)),
            Err(e) => failed.push(e.to_string()),
        }
    }
    match &format {
        Some(f) => {
            let rows = found
                .iter()
                .map(|v| f.render(v))
                .collect::<Result<Vec<_>, _>>()?;
            print_rows(&rows, false)?;
        }
        None if !found.is_empty() => {
            let out = if a.containers.len() == 1 {
                found.swap_remove(0)
            } else {
                Json::Array(found)
            };
            say(&serde_json::to_string_pretty(&out).map_err(|e| Failure::new(e.to_string()))?)?;
        }
        None => {}
    }
    partial(failed)
}

/// Adds Docker's keys to berthd's object (they are CamelCase, berth's are
/// snake_case: none collide).
fn with_docker_layout(v: Json) -> Json {
    let Ok(info) = serde_json::from_value::<ContainerInfo>(v.clone()) else {
        return v;
    };
    let Json::Object(mut obj) = v else { return v };
    let paths = info.paths();
    let meta: Option<ContainerMeta> = runtime_core::atomic::read_json(&paths.meta()).ok();
    let spec = oci_spec::runtime::Spec::load(paths.bundle_config()).ok();
    for (k, val) in docker_view(&info, &obj, meta.as_ref(), spec.as_ref()) {
        obj.insert(k, val);
    }
    Json::Object(obj)
}

fn docker_view(
    info: &ContainerInfo,
    raw: &Map<String, Json>,
    meta: Option<&ContainerMeta>,
    spec: Option<&oci_spec::runtime::Spec>,
) -> Map<String, Json> {
    let status = info.status.as_str();
    let up = info.status.is_up();
    let process = spec.and_then(|s| s.process().as_ref());
    let env: Vec<String> = process.and_then(|p| p.env().clone()).unwrap_or_default();
    let cwd = process
        .map(|p| p.cwd().display().to_string())
        .unwrap_or_default();
    let hostname = spec.and_then(|s| s.hostname().clone()).unwrap_or_default();
    let mounts: Vec<Json> = spec
        .and_then(|s| s.mounts().as_ref())
        .map(|ms| {
            ms.iter()
                .filter(|m| {
                    let opts = m.options().clone().unwrap_or_default();
                    let bind = m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
                    let source = m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default();
                    // Files berth itself puts in (resolv.conf, hosts,
                    // hostname) live in the container's directory; Docker
                    // does not list those either.
                    bind && !source.starts_with(&info.state_dir)
                })
                .map(|m| {
                    let opts = m.options().clone().unwrap_or_default();
                    json!({
                        "Type": "bind",
                        "Source": m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default(),
                        "Destination": m.destination().display().to_string(),
                        "Mode": opts.iter().find(|o| *o == "ro" || *o == "rw").cloned().unwrap_or_default(),
                        "RW": !opts.iter().any(|o| o == "ro"),
                        "Propagation": opts.iter().find(|o| o.contains("shared") || o.contains("slave") || o.contains("private")).cloned().unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let oom = raw
        .get("oom_killed")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut config = json!({
        "Hostname": hostname,
        "Cmd": info.command,
        "Env": env,
        "WorkingDir": cwd,
        "Tty": info.tty,
        "OpenStdin": info.stdin,
        "AttachStdin": info.stdin,
    });
    for (from, to) in [
        ("/image", "Image"),
        ("/options/labels", "Labels"),
        ("/options/user", "User"),
    ] {
        if let (Some(v), Some(c)) = (
            Json::Object(raw.clone()).pointer(from).cloned(),
            config.as_object_mut(),
        ) {
            if !v.is_null() {
                c.insert(to.into(), v);
            }
        }
    }
    let mut host = json!({
        "AutoRemove": info.auto_remove,
        "LogConfig": {
            "Type": "cri-file",
            "Config": meta.map(|m| json!({
                "max-size": m.log.max_size.to_string(),
                "max-file": m.log.max_files.to_string(),
            })).unwrap_or_else(|| json!({})),
        },
    });
    if let (Some(m), Some(h)) = (meta, host.as_object_mut()) {
        h.insert("Runtime".into(), json!(m.runtime));
    }
    // Docker's RestartPolicy: the name without the count, the count apart.
    let restart = info.restart.as_ref();
    let policy = restart.and_then(|r| r.policy.parse::<crate::policy::RestartPolicy>().ok());
    if let (Some(p), Some(h)) = (policy, host.as_object_mut()) {
        let (name, max) = match p {
            crate::policy::RestartPolicy::OnFailure { max_retries } => {
                ("on-failure".to_string(), max_retries)
            }
            other => (other.to_string(), 0),
        };
        h.insert(
            "RestartPolicy".into(),
            json!({"Name": name, "MaximumRetryCount": max}),
        );
    }
    let restarting = restart.is_some_and(|r| r.restarting_at.is_some());
    let mut out = Map::new();
    let mut put = |k: &str, v: Json| {
        out.insert(k.to_string(), v);
    };
    put("Id", json!(info.id));
    put("Created", json!(info.created_at));
    put(
        "Path",
        json!(info.command.first().cloned().unwrap_or_default()),
    );
    put(
        "Args",
        json!(info.command.iter().skip(1).collect::<Vec<_>>()),
    );
    put(
        "State",
        json!({
            "Status": status,
            "Running": up,
            "Paused": info.status == ContainerStatus::Paused,
            "Restarting": restarting,
            "OOMKilled": oom,
            "Dead": false,
            "Pid": if up { info.pid.unwrap_or(0) } else { 0 },
            "ExitCode": info.exit_code.unwrap_or(0),
            "Error": info.reason.clone().unwrap_or_default(),
            "StartedAt": info.started_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
            "FinishedAt": info.finished_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
        }),
    );
    put("Name", json!(format!("/{}", info.name)));
    put("RestartCount", json!(info.restart_count));
    put("LogPath", json!(info.log_path));
    put("Config", config);
    put("HostConfig", host);
    put("Mounts", json!(mounts));
    // Docker's ExecIDs: the container's exec instances (null when none).
    let exec_ids: Vec<Json> = raw
        .get("execs")
        .and_then(Json::as_array)
        .map(|es| es.iter().filter_map(|e| e.get("id").cloned()).collect())
        .unwrap_or_default();
    put(
        "ExecIDs",
        if exec_ids.is_empty() {
            Json::Null
        } else {
            Json::Array(exec_ids)
        },
    );
    if let Some(net) = raw.get("network").filter(|n| !n.is_null()) {
        let s = |k: &str| net.get(k).cloned().unwrap_or(Json::Null);
        put(
            "NetworkSettings",
            json!({
                "Mode": s("mode"),
                "Bridge": s("bridge"),
                "IPAddress": s("ip"),
                "Gateway": s("gateway"),
                "MacAddress": s("mac"),
                "Ports": s("ports"),
            }),
        );
    }
    out
}
