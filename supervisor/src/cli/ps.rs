//! `berth ps`: the container table, as `docker ps` prints and filters it.
//!
//! `-a`, `-q`, `--no-trunc`, `-n N`, `-l`, `--filter status=|name=|id=|
//! label=`, `--format` (a Go template, `table ...`, or `json`), and
//! berth's own `--json` (the API's objects, unchanged). Newest first.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::de::IntoDeserializer;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value as Json;

use super::format::{print_rows, Format};
use super::{connect_and_call_frame, Failure, Outcome};
use crate::api::{methods, ContainerStatus, ListParams};
use crate::rpc;

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

/// Docker's default `ps` table, less IMAGE and PORTS until containers
/// have them: what [`Row::default_line`] lays out without the template
/// engine.
#[cfg(test)]
const DEFAULT_TABLE: &str = "table {{.ID}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";

/// Text of berthd's reply, borrowed from it when it has no escapes.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// One container of berthd's `list`: the fields `ps` shows or filters
/// by, decoded straight from the reply (building a `serde_json::Value`
/// of each container first was most of the CLI's time at thousands).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Listed<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    exit_code: Option<i64>,
    #[serde(borrow)]
    created_at: Text<'a>,
    #[serde(borrow)]
    started_at: Option<Text<'a>>,
    #[serde(borrow)]
    finished_at: Option<Text<'a>>,
    #[serde(borrow)]
    command: Vec<Text<'a>>,
    #[serde(borrow)]
    image: Option<Text<'a>>,
    #[serde(borrow)]
    options: ListedOptions<'a>,
    /// `{"mode": ...}` when berthd sends it (`inspect` does, `list` not).
    network: Option<Json>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListedOptions<'a> {
    #[serde(borrow)]
    labels: BTreeMap<Text<'a>, Text<'a>>,
    #[serde(borrow)]
    publish: Vec<ListedPort<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListedPort<'a> {
    #[serde(borrow)]
    host_ip: Option<Text<'a>>,
    host_port: u64,
    container_port: u64,
    #[serde(borrow)]
    protocol: Option<Text<'a>>,
}

impl Listed<'_> {
    /// The status as this build knows it; `None` for a word of a newer
    /// berthd.
    fn known_status(&self) -> Option<ContainerStatus> {
        let word: serde::de::value::StrDeserializer<serde::de::value::Error> =
            (*self.status).into_deserializer();
        ContainerStatus::deserialize(word).ok()
    }
}

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

    fn keep(&self, c: &Listed) -> bool {
        let labels = &c.options.labels;
        (self.status.is_empty() || self.status.iter().any(|v| **v == *c.status))
            && (self.name.is_empty() || self.name.iter().any(|v| c.name.contains(v.as_str())))
            && (self.id.is_empty() || self.id.iter().any(|v| c.id.starts_with(v.as_str())))
            && self
                .label
                .iter()
                .all(|(k, v)| match (labels.get(k.as_str()), v) {
                    (Some(h), Some(v)) => **h == **v,
                    (Some(_), None) => true,
                    (None, _) => false,
                })
    }
}

pub async fn ps(root: &Path, a: PsArgs) -> Outcome {
    let filters = Filters::parse(&a.filter)?;
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    // -n, -l and a status filter look at every container, as Docker's do.
    let all = a.all || a.latest || a.last.is_some() || !filters.status.is_empty();
    let last = if a.latest { Some(1) } else { a.last };
    // `list` goes with the hello (one turn of berthd, not two); its reply
    // is decoded in place: the containers' text is borrowed from it.
    let (_client, frame) = connect_and_call_frame(root, methods::LIST, &ListParams { all }).await?;
    let bad = |e: serde_json::Error| Failure::new(format!("bad list reply from berthd: {e}"));
    if a.json {
        // berthd's own objects, as it encoded them (newest first): each
        // is decoded only when a filter must look at it, and printed by
        // streaming its text through serde_json's pretty printer.
        let list: Vec<&RawValue> = rpc::decode_reply(methods::LIST, &frame)?;
        let mut kept = Vec::with_capacity(list.len());
        for raw in list {
            if !filters.is_empty() && !filters.keep(&serde_json::from_str(raw.get()).map_err(bad)?)
            {
                continue;
            }
            kept.push(raw);
        }
        if let Some(n) = last {
            kept.truncate(n);
        }
        return print_pretty(&kept).map(|()| 0);
    }
    let list: Vec<Listed> = rpc::decode_reply(methods::LIST, &frame)?;
    let mut list: Vec<Listed> = list.into_iter().filter(|c| filters.keep(c)).collect();
    // Newest first; RFC 3339 times in UTC sort as text.
    list.sort_by(|x, y| y.created_at.cmp(&x.created_at));
    if let Some(n) = last {
        list.truncate(n);
    }
    if a.quiet {
        let ids: Vec<&str> = list.iter().map(|c| short_id(&c.id, a.no_trunc)).collect();
        return print_rows(&ids, false).map(|()| 0);
    }
    let now = SystemTime::now();
    let rows = list.iter().map(|c| Row::of(c, now, a.no_trunc));
    let out: Vec<String> = match format {
        // Docker's default table, laid out directly: the same text its
        // template renders (a unit test holds the two together).
        None => std::iter::once(Row::header().default_line())
            .chain(rows.map(|r| r.default_line()))
            .collect(),
        Some(format) => {
            let mut out = Vec::with_capacity(list.len() + 1);
            if format.is_table() {
                out.push(format.render_value(Row::header().to_gtmpl())?);
            }
            for r in rows {
                out.push(format.render_value(r.to_gtmpl())?);
            }
            return print_rows(&out, format.is_table()).map(|()| 0);
        }
    };
    print_rows(&out, true).map(|()| 0)
}

/// The ID as `ps` shows it: 12 characters unless `--no-trunc`.
fn short_id(id: &str, no_trunc: bool) -> &str {
    match id.char_indices().nth(12) {
        Some((at, _)) if !no_trunc => &id[..at],
        _ => id,
    }
}

/// A JSON array of `items` as `serde_json::to_string_pretty` prints one,
/// each item's keys in berthd's order, and a newline, on stdout.
fn print_pretty(items: &[&RawValue]) -> Result<(), Failure> {
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match write_pretty(out, items) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// [`print_pretty`] to `out`: the items' text is streamed through
/// serde_json's pretty printer (serde-transcode), never built into
/// `Value`s or copied into one string first.
fn write_pretty<W: Write>(out: W, items: &[&RawValue]) -> std::io::Result<()> {
    let mut ser = serde_json::Serializer::pretty(out);
    Items(items)
        .serialize(&mut ser)
        .map_err(std::io::Error::from)?;
    let mut out = ser.into_inner();
    out.write_all(b"\n")?;
    out.flush()
}

/// Raw JSON values serialized as a sequence, each transcoded from its text.
struct Items<'a>(&'a [&'a RawValue]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            let mut de = serde_json::Deserializer::from_str(item.get());
            seq.serialize_element(&serde_transcode::Transcoder::new(&mut de))?;
        }
        seq.end()
    }
}

/// Docker's `ps --format` fields, in one place: the key a template
/// names and the header title Docker derives from it.
const COLUMNS: [(&str, &str); 13] = [
    ("ID", "CONTAINER ID"),
    ("Names", "NAMES"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Size", "SIZE"),
];
const ID: usize = 0;
const NAMES: usize = 1;
const COMMAND: usize = 2;
const RUNNING_FOR: usize = 4;
const STATUS: usize = 6;

/// One container as `docker ps --format` sees it: the text of each of
/// `COLUMNS`, in order.
#[derive(Debug)]
struct Row([String; 13]);

impl Row {
    /// The column titles.
    fn header() -> Row {
        Row(COLUMNS.map(|(_, title)| title.to_string()))
    }

    fn of(c: &Listed, now: SystemTime, no_trunc: bool) -> Row {
        let command: Vec<&str> = c.command.iter().map(|a| &**a).collect();
        let command =
            shlex::try_join(command.iter().copied()).unwrap_or_else(|_| command.join(" "));
        let labels = c
            .options
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", &**k, &**v))
            .collect::<Vec<_>>()
            .join(",");
        let network = c
            .network
            .as_ref()
            .and_then(|n| n.get("mode"))
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| m.to_string())
            })
            .unwrap_or_default();
        Row([
            short_id(&c.id, no_trunc).to_string(),
            c.name.to_string(),
            format!(
                "\"{}\"",
                if no_trunc {
                    command
                } else {
                    ellipsis(&command, 20)
                }
            ),
            docker_time(&c.created_at),
            since(&c.created_at, now)
                .map(|d| format!("{d} ago"))
                .unwrap_or_default(),
            c.status.to_string(),
            status_text_at(c, now),
            c.image.as_deref().unwrap_or("").to_string(),
            port_text(&c.options.publish),
            labels,
            String::new(),
            network,
            String::new(),
        ])
    }

    /// The line `DEFAULT_TABLE` renders.
    fn default_line(&self) -> String {
        let c = &self.0;
        [ID, COMMAND, RUNNING_FOR, STATUS, NAMES]
            .map(|i| c[i].as_str())
            .join("\t")
    }

    /// The row as the template engine's value: an object of `COLUMNS`.
    fn to_gtmpl(&self) -> gtmpl::Value {
        gtmpl::Value::Object(
            COLUMNS
                .iter()
                .zip(&self.0)
                .map(|((key, _), v)| (key.to_string(), gtmpl::Value::String(v.clone())))
                .collect(),
        )
    }
}

/// Docker's PORTS: "0.0.0.0:8080->80/tcp, ...".
fn port_text(ports: &[ListedPort]) -> String {
    ports
        .iter()
        .map(|p| {
            let ip = p
                .host_ip
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("0.0.0.0");
            let proto = p.protocol.as_deref().unwrap_or("tcp");
            format!("{ip}:{}->{}/{proto}", p.host_port, p.container_port)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `docker ps`'s STATUS: "Up 3 minutes", "Exited (3) 2 minutes ago",
/// "Created", "Up 5 seconds (Paused)"; other states capitalized.
fn status_text_at(c: &Listed, now: SystemTime) -> String {
    let up = || {
        c.started_at
            .as_deref()
            .and_then(|t| since(t, now))
            .map(|d| format!("Up {d}"))
            .unwrap_or_else(|| "Up".into())
    };
    match c.known_status() {
        Some(ContainerStatus::Running) => up(),
        Some(ContainerStatus::Paused) => format!("{} (Paused)", up()),
        Some(ContainerStatus::Created) => "Created".into(),
        Some(ContainerStatus::Exited) => {
            let code = c.exit_code.map_or("?".to_string(), |c| c.to_string());
            match c.finished_at.as_deref().and_then(|t| since(t, now)) {
                Some(d) => format!("Exited ({code}) {d} ago"),
                None => format!("Exited ({code})"),
            }
        }
        // Creating, Restoring, Unknown, or a word a newer berthd sent.
        _ => {
            let mut w = c.status.to_string();
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
    use super::*;
    use serde_json::json;

    fn pretty(items: &[&RawValue]) -> String {
        let mut out = Vec::new();
        write_pretty(&mut out, items).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_raw_list_prints_as_serde_json_pretty_prints_it() {
        let items = vec![
            json!({"a": [], "b": {}, "c": {"d": [1, -2.5, null, true, false], "e": {"f": "g"}},
                   "h": "quote \" back\\slash [x] {y} a,b c:d \u{1f600} \n\t\u{1}", "z": 0}),
            json!({"only": [{"x": []}, {}]}),
            json!([]),
            json!("text"),
        ];
        let texts: Vec<String> = items
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        let raw: Vec<&RawValue> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(
            pretty(&raw),
            serde_json::to_string_pretty(&items).unwrap() + "\n"
        );
        assert_eq!(
            pretty(&[]),
            serde_json::to_string_pretty(&Vec::<Json>::new()).unwrap() + "\n"
        );
        // Text that came with spaces of its own is indented the same way.
        let text = "{ \"a\" : [ 1 , 2 ] , \"b\" : { } }";
        let spaced: &RawValue = serde_json::from_str(text).unwrap();
        let value: Json = serde_json::from_str(text).unwrap();
        assert_eq!(
            pretty(&[spaced]),
            serde_json::to_string_pretty(&[value]).unwrap() + "\n"
        );
    }

    /// `c` as `ps` decodes it from berthd's reply.
    fn with_listed<T>(c: &Json, f: impl FnOnce(&Listed) -> T) -> T {
        let text = c.to_string();
        f(&serde_json::from_str(&text).unwrap())
    }

    fn cell<'a>(r: &'a Row, key: &str) -> &'a str {
        let i = COLUMNS.iter().position(|(k, _)| *k == key).unwrap();
        &r.0[i]
    }

    #[test]
    fn status_words_like_docker() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let c = |v: Json| with_listed(&v, |l| status_text_at(l, now));
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
        assert_eq!(c(json!({"status": "running", "started_at": null})), "Up");
        assert_eq!(
            c(json!({"status": "exited", "exit_code": 3, "finished_at": "2026-11-28T11:58:00Z"})),
            "Exited (3) 2 minutes ago"
        );
        assert_eq!(
            c(json!({"status": "exited", "exit_code": 0, "finished_at": "2026-11-28T11:00:00Z"})),
            "Exited (0) 1 hour ago"
        );
        assert_eq!(
            c(json!({"status": "exited", "exit_code": null})),
            "Exited (?)"
        );
        assert_eq!(c(json!({"status": "created"})), "Created");
        assert_eq!(
            c(json!({"status": "paused", "started_at": "2026-11-28T11:59:58Z"})),
            "Up 2 seconds (Paused)"
        );
        assert_eq!(c(json!({"status": "unknown"})), "Unknown");
        assert_eq!(c(json!({"status": "hibernating"})), "Hibernating");
    }

    fn info() -> Json {
        json!({"id": "0123456789abcdef", "name": "web", "status": "running",
            "created_at": "2026-11-28T11:00:00Z", "command": ["sh", "-c", "echo a; exit 3"],
            "exit_code": null, "started_at": "2026-11-28T11:30:00Z",
            "options": {"labels": {"tier": "db", "a": "x=y"}, "publish": [
                {"host_ip": "", "host_port": 8080, "container_port": 80, "protocol": "tcp"},
                {"host_ip": "127.0.0.1", "host_port": 53, "container_port": 5353, "protocol": "udp"}]}})
    }

    #[test]
    fn rows_quote_and_cut_commands_and_filters_combine() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let info = info();
        let r = with_listed(&info, |l| Row::of(l, now, false));
        assert_eq!(cell(&r, "ID"), "0123456789ab");
        assert_eq!(cell(&r, "Names"), "web");
        assert_eq!(cell(&r, "Command"), "\"sh -c 'echo a; exit…\"");
        assert_eq!(cell(&r, "RunningFor"), "1 hour ago");
        assert_eq!(cell(&r, "Status"), "Up 30 minutes");
        assert_eq!(cell(&r, "State"), "running");
        assert_eq!(
            cell(&r, "Ports"),
            "0.0.0.0:8080->80/tcp, 127.0.0.1:53->5353/udp"
        );
        assert_eq!(cell(&r, "Labels"), "a=x=y,tier=db");
        assert_eq!(cell(&r, "CreatedAt"), "2026-11-28 11:00:00 +0000 UTC");
        assert_eq!(cell(&r, "Networks"), "");
        let r = with_listed(&info, |l| Row::of(l, now, true));
        assert_eq!(cell(&r, "ID"), "0123456789abcdef");
        assert_eq!(cell(&r, "Command"), "\"sh -c 'echo a; exit 3'\"");
        let with_net = json!({"id": "ab", "status": "running", "network": {"mode": "bridge"}});
        let r = with_listed(&with_net, |l| Row::of(l, now, false));
        assert_eq!(cell(&r, "Networks"), "bridge");
        assert_eq!(cell(&r, "ID"), "ab");

        let f = |specs: &[&str]| {
            Filters::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let keep = |filters: Filters| with_listed(&info, |l| filters.keep(l));
        assert!(keep(f(&["status=running", "status=exited"])));
        assert!(!keep(f(&["status=exited"])));
        assert!(keep(f(&["name=we", "label=tier=db", "id=0123"])));
        assert!(!keep(f(&["name=db"])));
        assert!(!keep(f(&["id=123"])));
        assert!(!keep(f(&["label=tier=web"])));
        assert!(keep(f(&["label=tier"])));
        assert!(!keep(f(&["label=zone"])));
        assert!(Filters::parse(&["status=nope".into()]).is_err());
        assert!(Filters::parse(&["color=red".into()]).is_err());
    }

    #[test]
    fn the_default_table_is_what_its_template_renders() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let table = Format::parse(DEFAULT_TABLE).unwrap();
        let header = Row::header();
        assert_eq!(
            table.render_value(header.to_gtmpl()).unwrap(),
            header.default_line()
        );
        assert_eq!(
            header.default_line(),
            "CONTAINER ID\tCOMMAND\tCREATED\tSTATUS\tNAMES"
        );
        let odd = json!({"id": "ff", "name": "n\"q", "status": "exited", "exit_code": 137,
            "created_at": "2026-11-28T11:59:00Z", "finished_at": "2026-11-28T11:59:30Z",
            "command": ["printf", "%s\t{{.ID}}", "é <&>"]});
        for c in [info(), odd] {
            for no_trunc in [false, true] {
                let r = with_listed(&c, |l| Row::of(l, now, no_trunc));
                assert_eq!(
                    table.render_value(r.to_gtmpl()).unwrap(),
                    r.default_line(),
                    "{c}"
                );
            }
        }
        // A user's template sees every column (`json` prints them all).
        let all = Format::parse("json").unwrap();
        let r = with_listed(&info(), |l| Row::of(l, now, false));
        let printed: Json = serde_json::from_str(&all.render_value(r.to_gtmpl()).unwrap()).unwrap();
        assert_eq!(printed.as_object().unwrap().len(), COLUMNS.len());
        assert_eq!(printed["Image"], "");
    }

    #[test]
    fn text_is_borrowed_unless_escaped() {
        let text =
            r#"{"id": "abc", "name": "a\"b", "command": ["x", "y\nz"], "status": "created"}"#;
        let l: Listed = serde_json::from_str(text).unwrap();
        assert!(matches!(l.id.0, Cow::Borrowed("abc")));
        assert!(matches!(&l.name.0, Cow::Owned(n) if n == "a\"b"));
        assert_eq!(&*l.command[1], "y\nz");
        assert_eq!(l.known_status(), Some(ContainerStatus::Created));
        // A reply of the wrong shape is an error, not a row of blanks.
        assert!(serde_json::from_str::<Listed>(r#"{"id": 3}"#).is_err());
    }

    #[test]
    fn ids_are_cut_at_twelve_characters() {
        assert_eq!(short_id("0123456789abcdef", false), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef", true), "0123456789abcdef");
        assert_eq!(short_id("0123456789ab", false), "0123456789ab");
        assert_eq!(short_id("short", false), "short");
    }
}
