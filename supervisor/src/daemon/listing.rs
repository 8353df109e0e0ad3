//! `list`'s reply, encoded straight from the table: each entry is written
//! as its [`ContainerInfo`] would be, byte for byte, but from borrowed
//! fields, so no `ContainerInfo` (a dozen strings and a `RunOptions`
//! copied per container) is built, sorted and dropped. At 1,000 idle
//! containers building, sorting and dropping them was over a third of
//! berthd's cost of a `ps`.
//!
//! [`ContainerInfo`]: crate::api::ContainerInfo

use std::fmt::Display;

use serde::ser::{Serialize, SerializeSeq, SerializeStruct, Serializer};

use runtime_core::layout::ContainerLookup;

use super::registry::Entry;
use super::{reconcile, Daemon};
use crate::rpc::{Message, SendError};

/// Bytes of JSON an entry takes, generously: the reply's buffer is
/// reserved once for all (pages never written are never touched).
const ENTRY_BYTES: usize = 2048;

/// The reply to `list` request `id`: the containers (all, or those that
/// may run), newest first, each cached "running" entry settled against
/// its exit record first. Encoded while the table is locked: berthd's
/// runtime is single-threaded, so nothing else would run meanwhile
/// anyway, and the entries need not be copied out.
pub async fn reply(d: &Daemon, id: u64, all: bool) -> Result<Message, SendError> {
    reconcile::settle_all(d).await;
    let table = d.registry.lock();
    let mut entries: Vec<&Entry> = table
        .values()
        .map(|e| &**e)
        // A container being removed is gone as far as users are concerned.
        .filter(|e| !e.removing && (all || e.maybe_running()))
        .collect();
    entries.sort_by(|a, b| b.meta.created_at.cmp(&a.meta.created_at));
    let mut message = Message::with_capacity(64 + entries.len() * ENTRY_BYTES);
    let reply = Reply {
        id,
        result: Listed {
            entries: &entries,
            paths: &d.root.lookup(),
        },
    };
    serde_json::to_writer(message.payload(), &reply)?;
    drop(table);
    message.check()?;
    Ok(message)
}

/// `Response::ok`'s shape.
#[derive(serde::Serialize)]
struct Reply<'a> {
    id: u64,
    result: Listed<'a>,
}

/// The entries, as a `[ContainerInfo]` serializes.
struct Listed<'a> {
    entries: &'a [&'a Entry],
    paths: &'a ContainerLookup<'a>,
}

impl Serialize for Listed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.entries.len()))?;
        for entry in self.entries {
            seq.serialize_element(&Info {
                entry,
                paths: self.paths,
            })?;
        }
        seq.end()
    }
}

/// One entry as its `ContainerInfo` serializes: the same fields in the
/// same order (`Entry::info` builds the owned one from the same
/// [`Entry::facts`]; a test holds the two to the same bytes).
struct Info<'a> {
    entry: &'a Entry,
    paths: &'a ContainerLookup<'a>,
}

impl Serialize for Info<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.entry;
        let m = &e.meta;
        let f = e.facts();
        let paths = self.paths.container(&m.id);
        let mut st = s.serialize_struct("ContainerInfo", 24)?;
        st.serialize_field("id", &m.id)?;
        st.serialize_field("name", &m.name)?;
        st.serialize_field("status", &e.info_status())?;
        st.serialize_field("pid", &f.pid)?;
        st.serialize_field("exit_code", &f.exit.map(|x| x.exit_code))?;
        st.serialize_field("signal", &f.exit.and_then(|x| x.signal))?;
        st.serialize_field("reason", &f.reason)?;
        st.serialize_field("created_at", &m.created_at)?;
        st.serialize_field("started_at", &f.started_at)?;
        st.serialize_field("finished_at", &f.exit.map(|x| &x.finished_at))?;
        st.serialize_field("oom_killed", &f.exit.is_some_and(|x| x.oom_killed))?;
        st.serialize_field("command", &m.command)?;
        st.serialize_field("rootfs", &m.rootfs)?;
        st.serialize_field("log_path", &Shown(paths.log().display()))?;
        st.serialize_field("attach_socket", &Shown(paths.attach_sock().display()))?;
        st.serialize_field("state_dir", &Shown(paths.dir().display()))?;
        // `ContainerInfo` skips an empty `data_dir`; a path never is.
        st.serialize_field("data_dir", &Shown(paths.data_dir().display()))?;
        st.serialize_field("tty", &m.tty)?;
        st.serialize_field("stdin", &m.stdin)?;
        st.serialize_field("auto_remove", &m.auto_remove)?;
        st.serialize_field("shim_pid", &f.shim_pid)?;
        st.serialize_field("restart_count", &m.restart_count)?;
        // `restart` and `network` are `inspect`'s only (skipped when None).
        st.serialize_field("options", &m.options)?;
        st.end()
    }
}

/// A value serialized as its `Display` text, with no `String` made
/// (serde_json escapes it as it is written).
struct Shown<T: Display>(T);

impl<T: Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ContainerInfo;
    use crate::daemon::registry::Phase;
    use runtime_core::exit::ExitRecord;
    use runtime_core::layout::Root;
    use runtime_core::meta::ContainerMeta;
    use runtime_core::protocol::{ShimState, ShimStatus};
    use serde_json::json;
    use std::os::unix::ffi::OsStrExt;

    fn entry(id: &str, created: &str, phase: Phase) -> Entry {
        let meta: ContainerMeta = serde_json::from_value(json!({
            "id": id, "name": format!("n-{id}"), "created_at": created,
            "command": ["sh", "-c", "echo \"a\\b\"; exit 3"], "rootfs": "/r",
            "log": {"max_size": 0, "max_files": 1}, "runtime": "runc",
            "tty": true, "restart_count": 2,
            "options": {"labels": {"tier": "db"}, "network": "none",
                        "publish": [{"host_ip": "", "host_port": 8080, "container_port": 80, "protocol": "tcp"}]},
        }))
        .unwrap();
        Entry::new(meta, phase)
    }

    fn exit(reason: Option<&str>) -> ExitRecord {
        serde_json::from_value(json!({
            "pid": 42, "exit_code": 137, "signal": 9, "finished_at": "2026-01-01T00:00:09Z",
            "started_at": "2026-01-01T00:00:01Z", "reason": reason, "oom_killed": true,
        }))
        .unwrap()
    }

    fn live(status: ShimStatus, exit: Option<ExitRecord>) -> Phase {
        Phase::Live(ShimState {
            id: "x".into(),
            status,
            pid: 7,
            started_at: Some("2026-01-01T00:00:02Z".into()),
            exit: exit.map(Box::new),
            shim_pid: 6,
            execs: Vec::new(),
            oom_kills: 0,
            oom_at: None,
        })
    }

    /// Every phase an entry can be in.
    fn every_phase() -> Vec<Entry> {
        vec![
            entry("a1", "2026-01-01T00:00:01Z", Phase::Creating),
            entry("a2", "2026-01-01T00:00:02Z", Phase::Restoring),
            entry(
                "a3",
                "2026-01-01T00:00:03Z",
                live(ShimStatus::Running, None),
            ),
            entry("a4", "2026-01-01T00:00:04Z", live(ShimStatus::Paused, None)),
            entry(
                "a5",
                "2026-01-01T00:00:05Z",
                live(ShimStatus::Created, None),
            ),
            entry(
                "a6",
                "2026-01-01T00:00:06Z",
                live(ShimStatus::Stopped, Some(exit(Some("oom")))),
            ),
            entry(
                "a7",
                "2026-01-01T00:00:07Z",
                Phase::Unknown {
                    reason: "shim speaks 9.0".into(),
                    retrying: false,
                },
            ),
            entry("a8", "2026-01-01T00:00:08Z", Phase::Unstarted),
            entry(
                "a9",
                "2026-01-01T00:00:09Z",
                Phase::Gone {
                    exit: Some(exit(None)),
                    reason: Some("shim died".into()),
                },
            ),
            entry(
                "b1",
                "2026-01-01T00:00:09Z",
                Phase::Gone {
                    exit: Some(exit(Some("killed by the reboot"))),
                    reason: None,
                },
            ),
            entry(
                "b2",
                "2026-01-01T00:00:10Z",
                Phase::Gone {
                    exit: None,
                    reason: None,
                },
            ),
        ]
    }

    #[test]
    fn each_entry_encodes_as_its_container_info_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        // With two roots, a3 was made before the split: its data is in
        // its runtime directory.
        let legacy = dir.path().join("run/containers/a3");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("meta.json"), "{}").unwrap();
        for root in [
            Root::new(dir.path().join("one root")),
            Root::with_data(dir.path().join("run"), dir.path().join("data \"lib\"")),
            // Not UTF-8: shown lossily, as `Path::display` does.
            Root::new(dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xffroot"))),
        ] {
            let entries = every_phase();
            let refs: Vec<&Entry> = entries.iter().collect();
            let encoded = serde_json::to_string(&Listed {
                entries: &refs,
                paths: &root.lookup(),
            })
            .unwrap();
            let infos: Vec<ContainerInfo> = entries.iter().map(|e| e.info(&root)).collect();
            assert_eq!(encoded, serde_json::to_string(&infos).unwrap());
            // What the printers read is there (a test of the test).
            assert!(encoded.contains(r#""reason":"shim died""#), "{encoded}");
            assert!(encoded.contains(r#""labels":{"tier":"db"}"#), "{encoded}");
            let legacy_data = format!(r#""data_dir":"{}""#, legacy.display());
            assert_eq!(encoded.contains(&legacy_data), !root.is_single());
        }
    }
}
