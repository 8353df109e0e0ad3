//! `berth ps`: the container table, as `docker ps` prints and filters it.
//!
//! `-a`, `-q`, `--no-trunc`, `-n N`, `-l`, `--filter status=|name=|id=|
//! label=`, `--format` (a Go template, `table ...`, or `json`), and
//! berth's own `--json` (the API's objects, unchanged). Newest first.

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};

use super::format::{print_rows, Format};
use super::{connect, say, Failure, Outcome};
use crate::api::{methods, ContainerStatus, ListParams};

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Include containers that are not running.
    #[arg(short, long)]
    all: bool,
    /// Print only the IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Do not cut IDs and commands short.
    #[arg(long)]
    no_trunc: bool,
    /// Show the N last created containers (all states).
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Show the last created container (all states).
    #[arg(short, long)]
    latest: bool,
    /// Filter: status=running|exited|created|paused..., name=TEXT, id=PREFIX, label=KEY[=VALUE].
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// A Go template ({{.ID}} {{.Names}} {{.Status}} ...), `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Print berth's own JSON (the API's objects) instead of a table.
    #[arg(long, conflicts_with_all = ["format", "quiet"])]
    json: bool,
}

/// Docker's default `ps` table, less IMAGE and PORTS until containers have them.
const DEFAULT_TABLE: &str = "table {{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";

/// Parsed `--filter`s: values of one key are alternatives, keys combine.
#[derive(Debug, Default)]
struct Filters {
    status: Vec<String>,
    name: Vec<String>,
    id: Vec<String>,
    label: Vec<(String, Option<String>)>,
}

impl Filters {
    fn parse(specs: &[String]) -> Result<Filters, Failure> {
        let mut f = Filters::default();
        let bad = |m: String| Failure {
            message: m,
            code: 125,
        };
        for spec in specs {
            let (key, value) = spec
                .split_once('=')
                .ok_or_else(|| bad(format!("bad filter {spec:?}: want KEY=VALUE")))?;
            match key {
                "status" => {
                    const KNOWN: &[&str] = &[
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                        "creating",
                        "restoring",
                        "unknown",
                    ];
                    if !KNOWN.contains(&value) {
                        return Err(bad(format!(
                            "invalid filter status={value}: one of {}",
                            KNOWN.join(", ")
                        )));
                    }
                    f.status.push(value.to_string());
                }
                "name" => f.name.push(value.to_string()),
                "id" => f.id.push(value.to_string()),
                "label" => f.label.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                other => {
                    return Err(bad(format!(
                        "invalid filter {other:?}: berth filters by status, name, id and label"
                    )))
                }
            }
        }
        Ok(f)
    }

    fn is_empty(&self) -> bool {
        self.status.is_empty()
            && self.name.is_empty()
            && self.id.is_empty()
            && self.label.is_empty()
    }

    fn keep(&self, c: &Json) -> bool {
        let s = |k: &str| c.get(k).and_then(Json::as_str).unwrap_or("");
        let labels = labels_of(c);
        (self.status.is_empty() || self.status.iter().any(|v| v == s("status")))
            && (self.name.is_empty() || self.name.iter().any(|v| s("name").contains(v.as_str())))
            && (self.id.is_empty() || self.id.iter().any(|v| s("id").starts_with(v.as_str())))
            && self.label.iter().all(|(k, v)| {
                let have = labels.and_then(|l| l.get(k)).and_then(Json::as_str);
                match (have, v) {
                    (Some(h), Some(v)) => h == v,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
            })
    }
}

pub async fn ps(root: &Path, a: PsArgs) -> Outcome {
    let filters = Filters::parse(&a.filter)?;
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    // -n, -l and a status filter look at every container, as Docker's do.
    let all = a.all || a.latest || a.last.is_some() || !filters.status.is_empty();
    let mut c = connect(root).await?;
    if a.json {
        // berthd's own objects, as it encoded them: each is parsed only
        // when a filter must look at it, and printed by re-indenting its
        // text (at thousands of containers, building a `Value` of each to
        // print it was most of the CLI's time). berthd lists newest first.
        let list: Vec<Box<RawValue>> = c.call(methods::LIST, &ListParams { all }).await?;
        let mut kept = Vec::with_capacity(list.len());
        for raw in list {
            if !filters.is_empty() {
                let c: Json = serde_json::from_str(raw.get())
                    .map_err(|e| Failure::new(format!("bad list reply from berthd: {e}")))?;
                if !filters.keep(&c) {
                    continue;
                }
            }
            kept.push(raw);
        }
        if let Some(n) = if a.latest { Some(1) } else { a.last } {
            kept.truncate(n);
        }
        let text = pretty_list(&kept)
            .map_err(|e| Failure::new(format!("bad list reply from berthd: {e}")))?;
        say(&text)?;
        return Ok(0);
    }
    let list: Vec<Json> = c.call(methods::LIST, &ListParams { all }).await?;
    let mut list: Vec<Json> = list.into_iter().filter(|c| filters.keep(c)).collect();
    // Newest first; RFC 3339 times in UTC sort as text.
    fn created(c: &Json) -> &str {
        c.get("created_at").and_then(Json::as_str).unwrap_or("")
    }
    list.sort_by(|x, y| created(y).cmp(created(x)));
    if let Some(n) = if a.latest { Some(1) } else { a.last } {
        list.truncate(n);
    }
    let now = SystemTime::now();
    let rows: Vec<Json> = list
        .iter()
        .map(|c| docker_row(c, now, a.no_trunc))
        .collect();
    if a.quiet {
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r["ID"].as_str().unwrap_or("").to_string())
            .collect();
        return print_rows(&ids, false).map(|()| 0);
    }
    let format = match format {
        Some(f) => f,
        None => Format::parse(DEFAULT_TABLE)?,
    };
    let mut out = Vec::with_capacity(rows.len() + 1);
    if format.is_table() {
        out.push(format.render(&header())?);
    }
    for r in &rows {
        out.push(format.render(r)?);
    }
    print_rows(&out, format.is_table()).map(|()| 0)
}

/// A JSON array of `items` as `serde_json::to_string_pretty` prints one,
/// each item's keys in berthd's order: the items' text is streamed through
/// serde_json's pretty printer (serde-transcode), never built into `Value`s.
fn pretty_list(items: &[Box<RawValue>]) -> Result<String, serde_json::Error> {
    let mut joined =
        String::with_capacity(items.iter().map(|i| i.get().len() + 1).sum::<usize>() + 2);
    joined.push('[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            joined.push(',');
        }
        joined.push_str(item.get());
    }
    joined.push(']');
    let mut out = Vec::with_capacity(joined.len() * 2);
    let mut ser = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(&mut serde_json::Deserializer::from_str(&joined), &mut ser)?;
    // serde_json writes UTF-8; the lossy path is never taken.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Column titles, as Docker derives them from the field names.
fn header() -> Json {
    json!({
        "ID": "CONTAINER ID", "Names": "NAMES", "Command": "COMMAND",
        "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "State": "STATE",
        "Status": "STATUS", "Image": "IMAGE", "Ports": "PORTS",
        "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "Size": "SIZE",
    })
}

/// One container as `docker ps --format` sees it.
fn docker_row(c: &Json, now: SystemTime, no_trunc: bool) -> Json {
    let s = |k: &str| c.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let id = s("id");
    let command: Vec<String> = c
        .get("command")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let command =
        shlex::try_join(command.iter().map(String::as_str)).unwrap_or_else(|_| command.join(" "));
    let labels = labels_of(c)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "ID": if no_trunc { id.clone() } else { id.chars().take(12).collect() },
        "Names": s("name"),
        "Command": format!("\"{}\"", if no_trunc { command } else { ellipsis(&command, 20) }),
        "CreatedAt": docker_time(&s("created_at")),
        "RunningFor": since(&s("created_at"), now).map(|d| format!("{d} ago")).unwrap_or_default(),
        "State": s("status"),
        "Status": status_text_at(c, now),
        "Image": c.get("image").and_then(Json::as_str).unwrap_or(""),
        "Ports": c.pointer("/options/publish").map(port_text).unwrap_or_default(),
        "Labels": labels,
        "Mounts": "",
        "Networks": c.pointer("/network/mode").map(|m| m.as_str().map(str::to_string).unwrap_or_else(|| m.to_string())).unwrap_or_default(),
        "Size": "",
    })
}

/// The container's labels (`run -l K=V`), as berthd reports them.
fn labels_of(c: &Json) -> Option<&serde_json::Map<String, Json>> {
    c.pointer("/options/labels").and_then(Json::as_object)
}

/// Docker's PORTS: "0.0.0.0:8080->80/tcp, ...".
fn port_text(v: &Json) -> String {
    let Some(ports) = v.as_array() else {
        return String::new();
    };
    ports
        .iter()
        .map(|p| {
            let ip = p
                .get("host_ip")
                .and_then(Json::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("0.0.0.0");
            let proto = p.get("protocol").and_then(Json::as_str).unwrap_or("tcp");
            format!(
                "{ip}:{}->{}/{proto}",
                p.get("host_port").and_then(Json::as_u64).unwrap_or(0),
                p.get("container_port").and_then(Json::as_u64).unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `docker ps`'s STATUS: "Up 3 minutes", "Exited (3) 2 minutes ago",
/// "Created", "Up 5 seconds (Paused)"; other states capitalized.
fn status_text_at(c: &Json, now: SystemTime) -> String {
    let s = |k: &str| c.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let up = || {
        since(&s("started_at"), now)
            .map(|d| format!("Up {d}"))
            .unwrap_or_else(|| "Up".into())
    };
    match ContainerStatus::of(c) {
        Some(ContainerStatus::Running) => up(),
        Some(ContainerStatus::Paused) => format!("{} (Paused)", up()),
        Some(ContainerStatus::Created) => "Created".into(),
        Some(ContainerStatus::Exited) => {
            let code = c
                .get("exit_code")
                .and_then(Json::as_i64)
                .map_or("?".to_string(), |c| c.to_string());
            match since(&s("finished_at"), now) {
                Some(d) => format!("Exited ({code}) {d} ago"),
                None => format!("Exited ({code})"),
            }
        }
        // Creating, Restoring, Unknown, or a word a newer berthd sent.
        _ => {
            let mut w = s("status");
            if let Some(f) = w.get_mut(0..1) {
                f.make_ascii_uppercase();
            }
            w
        }
    }
}

/// How long ago `rfc3339` was, in words with the right number ("1
/// minute", "3 minutes", "Less than a second").
fn since(rfc3339: &str, now: SystemTime) -> Option<String> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(words(now.duration_since(t).unwrap_or(Duration::ZERO)))
}

fn words(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return "Less than a second".into();
    }
    let mut f = timeago::Formatter::new();
    f.ago("");
    f.convert(d).trim_end().to_string()
}

/// Docker's CreatedAt: "2026-11-28 10:00:00 +0000 UTC".
fn docker_time(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339) {
        Ok(t) => {
            let s = humantime::format_rfc3339_seconds(t).to_string();
            format!(
                "{} +0000 UTC",
                s.trim_end_matches('Z').replacen('T', " ", 1)
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// Cuts `s` to `max` displayed characters, the last one an ellipsis.
fn ellipsis(s: &str, max: usize) -> String {
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
    #[test]
    fn a_raw_list_prints_as_serde_json_pretty_prints_it() {
        let items = vec![
            json!({"a": [], "b": {}, "c": {"d": [1, -2.5, null, true, false], "e": {"f": "g"}},
                   "h": "quote \" back\\slash [x] {y} a,b c:d \u{1f600} \n\t\u{1}", "z": 0}),
            json!({"only": [{"x": []}, {}]}),
            json!([]),
            json!("text"),
        ];
        let raw: Vec<Box<RawValue>> = items
            .iter()
            .map(|v| RawValue::from_string(serde_json::to_string(v).unwrap()).unwrap())
            .collect();
        assert_eq!(
            pretty_list(&raw).unwrap(),
            serde_json::to_string_pretty(&items).unwrap()
        );
        assert_eq!(
            pretty_list(&[]).unwrap(),
            serde_json::to_string_pretty(&Vec::<Json>::new()).unwrap()
        );
        // Text that came with spaces of its own is indented the same way.
        let spaced = RawValue::from_string("{ \"a\" : [ 1 , 2 ] , \"b\" : { } }".into()).unwrap();
        let value: Json = serde_json::from_str(spaced.get()).unwrap();
        assert_eq!(
            pretty_list(&[spaced]).unwrap(),
            serde_json::to_string_pretty(&[value]).unwrap()
        );
    }

    use super::*;

    #[test]
    fn status_words_like_docker() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let c = |v: Json| status_text_at(&v, now);
        assert_eq!(
            c(json!({"status": "running", "started_at": "2026-11-28T11:57:00Z"})),
            "Up 3 minutes"
        );
        assert_eq!(
            c(json!({"status": "running", "started_at": "2026-11-28T11:59:00Z"})),
            "Up 1 minute"
        );
        assert_eq!(
            c(json!({"status": "running", "started_at": "2026-11-28T11:59:59.6Z"})),
            "Up Less than a second"
        );
        assert_eq!(
            c(json!({"status": "exited", "exit_code": 3, "finished_at": "2026-11-28T11:58:00Z"})),
            "Exited (3) 2 minutes ago"
        );
        assert_eq!(
            c(json!({"status": "exited", "exit_code": 0, "finished_at": "2026-11-28T11:00:00Z"})),
            "Exited (0) 1 hour ago"
        );
        assert_eq!(c(json!({"status": "created"})), "Created");
        assert_eq!(
            c(json!({"status": "paused", "started_at": "2026-11-28T11:59:58Z"})),
            "Up 2 seconds (Paused)"
        );
        assert_eq!(c(json!({"status": "unknown"})), "Unknown");
    }

    #[test]
    fn rows_quote_and_cut_commands_and_filters_combine() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let info = json!({"id": "0123456789abcdef", "name": "web", "status": "running",
            "created_at": "2026-11-28T11:00:00Z", "command": ["sh", "-c", "echo a; exit 3"],
            "options": {"labels": {"tier": "db"}, "publish": [
                {"host_ip": "", "host_port": 8080, "container_port": 80, "protocol": "tcp"}]}});
        let r = docker_row(&info, now, false);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Command"], "\"sh -c 'echo a; exit…\"");
        assert_eq!(r["RunningFor"], "1 hour ago");
        assert_eq!(r["Ports"], "0.0.0.0:8080->80/tcp");
        assert_eq!(r["Labels"], "tier=db");
        assert_eq!(r["CreatedAt"], "2026-11-28 11:00:00 +0000 UTC");
        let r = docker_row(&info, now, true);
        assert_eq!(r["ID"], "0123456789abcdef");
        assert_eq!(r["Command"], "\"sh -c 'echo a; exit 3'\"");

        let f = |specs: &[&str]| {
            Filters::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        assert!(f(&["status=running", "status=exited"]).keep(&info));
        assert!(!f(&["status=exited"]).keep(&info));
        assert!(f(&["name=we", "label=tier=db", "id=0123"]).keep(&info));
        assert!(!f(&["label=tier=web"]).keep(&info));
        assert!(f(&["label=tier"]).keep(&info));
        assert!(Filters::parse(&["status=nope".into()]).is_err());
        assert!(Filters::parse(&["color=red".into()]).is_err());
    }
}
