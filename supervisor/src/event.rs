//! Events as berthd journals them and `berth events` shows them: the
//! record, the `events` request, filters and the `--since`/`--until`
//! time forms. Shared by the daemon (which filters) and the CLI (which
//! validates before it asks, so bad input changes nothing).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Create,
    Start,
    Exit,
    Oom,
    Pause,
    Unpause,
    ExecStart,
    ExecExit,
    Restart,
    Delete,
    /// berthd adopted a running container after its own restart.
    Restore,
}

impl EventKind {
    /// Every kind, for error messages and parsing.
    pub const ALL: [EventKind; 11] = [
        EventKind::Create,
        EventKind::Start,
        EventKind::Exit,
        EventKind::Oom,
        EventKind::Pause,
        EventKind::Unpause,
        EventKind::ExecStart,
        EventKind::ExecExit,
        EventKind::Restart,
        EventKind::Delete,
        EventKind::Restore,
    ];

    /// The name used on the wire, in filters and in the text output.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Start => "start",
            EventKind::Exit => "exit",
            EventKind::Oom => "oom",
            EventKind::Pause => "pause",
            EventKind::Unpause => "unpause",
            EventKind::ExecStart => "exec_start",
            EventKind::ExecExit => "exec_exit",
            EventKind::Restart => "restart",
            EventKind::Delete => "delete",
            EventKind::Restore => "restore",
        }
    }

    fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the journal: strictly increasing, also across berthd
    /// restarts; a client resumes after the last one it saw.
    pub seq: u64,
    /// When it happened (RFC 3339, UTC, nanoseconds). For an exit, the
    /// shim's own time from the exit record, even when berthd learns of
    /// it later.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    /// Why, when berthd did not see it directly (e.g. the shim died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
    /// For `oom`: which kill of the container's run this is (1 for the
    /// first): one event per kill, told apart even when several share a
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// Set when berthd learned of the event after it happened (it was down):
    /// the time it wrote the record. `time` stays the true time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
}

impl Event {
    /// One line for people: time, type, ID and the attributes.
    pub fn text(&self) -> String {
        let mut attrs = vec![format!("name={}", self.name)];
        if let Some(c) = self.exit_code {
            attrs.push(format!("exit_code={c}"));
        }
        if let Some(s) = self.signal {
            attrs.push(format!("signal={s}"));
        }
        if let Some(e) = &self.exec_id {
            attrs.push(format!("exec_id={e}"));
        }
        if let Some(n) = self.restart_count {
            attrs.push(format!("restart_count={n}"));
        }
        if let Some(n) = self.oom_kill {
            attrs.push(format!("oom_kill={n}"));
        }
        if let Some(r) = &self.reason {
            attrs.push(format!("reason={r:?}"));
        }
        if let Some(at) = &self.reconciled_at {
            attrs.push(format!("reconciled_at={at}"));
        }
        format!(
            "{} container {} {} ({})",
            self.time,
            self.kind.as_str(),
            self.id,
            attrs.join(", ")
        )
    }
}

/// `events` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsParams {
    /// Only events that happened at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Only events that happened before this time; the stream ends when
    /// the clock passes it.
    #[serde(default)]
    pub until: Option<String>,
    /// Only events after this journal position (a reconnecting client).
    #[serde(default)]
    pub after_seq: Option<u64>,
    /// Keep the stream open for new events.
    #[serde(default)]
    pub follow: bool,
    #[serde(default)]
    pub filters: Filters,
}

/// A pushed reply on an `events` stream: an event, or the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamItem {
    Event(Event),
    /// The replay is done: every event up to this position was considered.
    /// A client that reconnects asks for what came after it.
    Caught(u64),
    /// Nothing more will come (`--until` reached, or no follow).
    End,
}

/// Filters: values of one key match any, different keys must all match
/// (Docker's rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    /// Container ID, ID prefix or name.
    #[serde(default)]
    pub container: Vec<String>,
    #[serde(default)]
    pub kind: Vec<EventKind>,
}

/// Why a filter or a time was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("invalid filter {0:?}: expected KEY=VALUE")]
    FilterShape(String),
    #[error("invalid filter key {0:?}: use container or type (event)")]
    FilterKey(String),
    #[error("invalid event type {0:?}: one of {1}")]
    FilterType(String, String),
    #[error("invalid time {0:?}: use a duration (10m, 1h30m), RFC 3339 (2026-11-28T10:00:00Z) or Unix seconds")]
    Time(String),
}

impl Filters {
    /// Parses `KEY=VALUE` filters as `--filter` gives them.
    pub fn parse(args: &[String]) -> Result<Filters, InputError> {
        let mut f = Filters::default();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| InputError::FilterShape(a.clone()))?;
            match k {
                "container" => f.container.push(v.to_string()),
                // Docker calls the action "event"; the issue calls it "type".
                "type" | "event" => f.kind.push(EventKind::parse(v).ok_or_else(|| {
                    let all: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    InputError::FilterType(v.to_string(), all.join(", "))
                })?),
                other => return Err(InputError::FilterKey(other.to_string())),
            }
        }
        Ok(f)
    }

    /// True if the event passes every filter key given.
    pub fn matches(&self, e: &Event) -> bool {
        // A name or an ID, whole or the 12-digit short form: a shorter
        // prefix could name different containers over the journal's life.
        let container_ok = self.container.is_empty()
            || self.container.iter().any(|c| {
                *c == e.name || *c == e.id || (c.len() >= 12 && e.id.starts_with(c.as_str()))
            });
        let kind_ok = self.kind.is_empty() || self.kind.contains(&e.kind);
        container_ok && kind_ok
    }
}

/// Parses a `--since`/`--until` value relative to `now`: a duration ago
/// (`10m`, `1h30m`), an RFC 3339 time, or Unix seconds (`1764320000`,
/// `1764320000.5`), as `docker events` takes them.
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, InputError> {
    let bad = || InputError::Time(s.to_string());
    if let Ok(d) = humantime::parse_duration(s) {
        return now.checked_sub(d).ok_or_else(bad);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        if let Ok(secs) = s.parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 {
                return SystemTime::UNIX_EPOCH
                    .checked_add(Duration::from_secs_f64(secs))
                    .ok_or_else(bad);
            }
        }
    }
    Err(bad())
}

/// Parses an event's own time; `None` for a malformed record.
pub fn event_time(e: &Event) -> Option<SystemTime> {
    humantime::parse_rfc3339(&e.time).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, id: &str, name: &str) -> Event {
        Event {
            seq: 1,
            time: "2026-11-28T10:00:00.000000000Z".into(),
            kind,
            id: id.into(),
            name: name.into(),
            exit_code: None,
            signal: None,
            exec_id: None,
            reason: None,
            restart_count: None,
            oom_kill: None,
            reconciled_at: None,
        }
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let f = Filters::parse(&[
            "container=web".into(),
            "container=db".into(),
            "type=exit".into(),
        ])
        .unwrap();
        assert!(f.matches(&ev(EventKind::Exit, "abc", "web")));
        assert!(f.matches(&ev(EventKind::Exit, "abc", "db")));
        assert!(!f.matches(&ev(EventKind::Start, "abc", "web")));
        assert!(!f.matches(&ev(EventKind::Exit, "abc", "cache")));
        let id = "0123456789abcdef";
        let by_id = Filters::parse(&["container=0123456789ab".into()]).unwrap();
        assert!(by_id.matches(&ev(EventKind::Start, id, "x")));
        let short = Filters::parse(&["container=01".into()]).unwrap();
        assert!(!short.matches(&ev(EventKind::Start, id, "x")));
        let whole = Filters::parse(&[format!("container={id}")]).unwrap();
        assert!(whole.matches(&ev(EventKind::Start, id, "x")));
        assert!(Filters::default().matches(&ev(EventKind::Oom, "z", "z")));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        assert_eq!(
            Filters::parse(&["colour=red".into()]),
            Err(InputError::FilterKey("colour".into()))
        );
        assert_eq!(
            Filters::parse(&["container".into()]),
            Err(InputError::FilterShape("container".into()))
        );
        let e = Filters::parse(&["type=explode".into()]).unwrap_err();
        assert!(e.to_string().contains("\"explode\""), "{e}");
        assert!(e.to_string().contains("exec_start"), "{e}");
        assert_eq!(
            Filters::parse(&["event=exec_exit".into()]).unwrap().kind,
            vec![EventKind::ExecExit]
        );
    }

    #[test]
    fn times_in_every_form_docker_takes() {
        let now = humantime::parse_rfc3339("2026-11-28T10:00:00Z").unwrap();
        let t = |s| parse_time(s, now).map(|t| humantime::format_rfc3339(t).to_string());
        assert_eq!(t("10m").unwrap(), "2026-11-28T09:50:00Z");
        assert_eq!(t("1h30m").unwrap(), "2026-11-28T08:30:00Z");
        assert_eq!(t("2026-11-28T09:00:00Z").unwrap(), "2026-11-28T09:00:00Z");
        assert_eq!(t("1764320000").unwrap(), "2025-11-28T08:53:20Z");
        for bad in ["yesterday-ish", "", "-5", "10 parsecs", "1.2.3"] {
            assert_eq!(t(bad), Err(InputError::Time(bad.into())), "{bad}");
        }
    }

    #[test]
    fn event_json_round_trips_and_names_its_type() {
        let mut e = ev(EventKind::ExecExit, "abc", "web");
        e.exit_code = Some(3);
        e.reconciled_at = Some("2026-11-28T10:00:01Z".into());
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains("\"type\":\"exec_exit\""), "{s}");
        assert!(!s.contains("signal"), "{s}");
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
        assert!(e
            .text()
            .contains("container exec_exit abc (name=web, exit_code=3"));
    }
}
