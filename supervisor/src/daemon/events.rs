//! The event journal: every lifecycle event, appended as one JSON line to
//! `<root>/events/events.log`, rotated by size (`events.log.1` ...), so
//! `berth events --since` replays what happened, across berthd restarts.
//!
//! Each event gets a sequence number that keeps growing across restarts
//! (the next berthd continues from the last line on disk); a following
//! client resumes after the last number it saw, so reconnecting loses
//! nothing that is still in the journal. The newest events are also kept
//! in memory, so followers rarely touch the files.
//!
//! Exits are the one kind berthd can learn of late (it was down when the
//! container died). They are journaled with the shim's own exit time, once:
//! a marker in the container's directory names the last exit journaled
//! (`pending` before the append, `done` after), and a restart that finds a
//! `pending` marker looks in the journal before writing again.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::frame;
use runtime_core::layout::ContainerPaths;
use runtime_core::protocol::{
    shim_methods, ErrorCode, ExecState, Request, Response, RpcError, ShimState,
};

use super::{shim, Daemon};
use crate::api::ContainerStatus;
use crate::event::{self, Event, EventKind, EventsParams, StreamItem};

/// The journal file's name; rotated ones get `.1`, `.2`, ...
const JOURNAL: &str = "events.log";
/// Events kept in memory for followers (~400 bytes each): enough for a
/// follower a burst behind; one further behind reads the files. (4,096 made
/// the ring alone 1.6 MB of berthd's memory once a busy host had filled it.)
const RECENT: usize = 256;

/// Size bounds of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// Rotate when the current file would pass this many bytes.
    pub max_size: u64,
    /// Files kept, the current one included.
    pub max_files: u32,
}

impl Default for JournalLimits {
    /// 1 MiB x 5: some 20,000 events, days of a busy host.
    fn default() -> Self {
        JournalLimits {
            max_size: 1 << 20,
            max_files: 5,
        }
    }
}

/// What can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encode event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("reading the journal stopped: {0}")]
    Reader(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

struct Inner {
    /// The current file, open for appending. None after a rotation that
    /// renamed it away but could not open its successor: the next append
    /// opens `events.log` again rather than writing into `events.log.1`.
    file: Option<File>,
    size: u64,
    last_seq: u64,
    recent: VecDeque<Event>,
}

/// The journal of one berthd root.
pub struct Journal {
    dir: PathBuf,
    limits: JournalLimits,
    inner: Mutex<Inner>,
    /// The last sequence number written; followers wait on it.
    latest: watch::Sender<u64>,
    /// When this berthd started: an exit before it was missed while down.
    started: SystemTime,
}

impl Journal {
    /// Opens (creating) the journal in `dir` and finds the last sequence
    /// number on disk.
    pub fn open(dir: &Path, limits: JournalLimits) -> Result<Journal, JournalError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
        let limits = JournalLimits {
            max_size: limits.max_size.max(1),
            max_files: limits.max_files.max(1),
        };
        let last_seq = files(dir, limits.max_files)
            .iter()
            .rev()
            .find_map(|p| last_event(p).map(|e| e.seq))
            .unwrap_or(0);
        let path = dir.join(JOURNAL);
        let mut file = open_append(&path)?;
        let mut size = file.metadata().map_err(io("stat", &path))?.len();
        if size > 0 && !ends_with_newline(&path) {
            // A torn last line (killed mid-write): end it, so the next
            // event starts a line of its own.
            file.write_all(b"\n").map_err(io("append to", &path))?;
            size += 1;
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            limits,
            inner: Mutex::new(Inner {
                file: Some(file),
                size,
                last_seq,
                recent: VecDeque::new(),
            }),
            latest: watch::channel(last_seq).0,
            started: SystemTime::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic mid-append leaves at worst a torn last line, which
        // readers skip; the journal itself stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event (its `seq` is assigned here); returns it.
    pub fn append(&self, mut ev: Event) -> Result<Event, JournalError> {
        let mut inner = self.lock();
        ev.seq = inner.last_seq + 1;
        let mut line = serde_json::to_vec(&ev)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if inner.size > 0 && inner.size + len > self.limits.max_size {
            if let Err(e) = self.rotate(&mut inner) {
                // Events are what an operator reads after something went
                // wrong: keep them while the file is within twice its
                // bound, and fail only past that.
                if inner.size + len > self.limits.max_size.saturating_mul(2) {
                    return Err(e);
                }
                log::error!("event journal: {e}; appending to the current file");
            }
        }
        let path = self.dir.join(JOURNAL);
        let file = match inner.file.take() {
            Some(f) => f,
            None => open_append(&path)?,
        };
        // One write of a whole line to an O_APPEND file: a crash leaves the
        // line or a torn tail, never a line in the middle of another.
        let file = inner.file.insert(file);
        file.write_all(&line).map_err(io("append to", &path))?;
        inner.size += line.len() as u64;
        inner.last_seq = ev.seq;
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(ev.clone());
        drop(inner);
        self.latest.send_replace(ev.seq);
        Ok(ev)
    }

    /// Shifts the files by one (the oldest goes) and opens a new current
    /// one. Failing part way leaves the files in order (a gap at most) and
    /// never a descriptor on a renamed file: once `events.log` is renamed
    /// the old descriptor is dropped, so no event lands in `events.log.1`.
    fn rotate(&self, inner: &mut Inner) -> Result<(), JournalError> {
        let name = |n: u32| match n {
            0 => self.dir.join(JOURNAL),
            n => self.dir.join(format!("{JOURNAL}.{n}")),
        };
        let keep = self.limits.max_files - 1;
        // Only the run of files from `.1` up to the first gap moves: a
        // gap left by an earlier attempt that failed part way is filled,
        // not shifted along (which would delete the oldest file at every
        // retry).
        let mut top = 1;
        while top < keep && name(top).exists() {
            top += 1;
        }
        for n in (1..top).rev() {
            let (from, to) = (name(n), name(n + 1));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("rename", &from)(e)),
            }
        }
        let current = name(0);
        if keep == 0 {
            fs::remove_file(&current).map_err(io("remove", &current))?;
        } else {
            let to = name(1);
            fs::rename(&current, &to).map_err(io("rename", &current))?;
        }
        inner.file = None;
        inner.size = 0;
        inner.file = Some(open_append(&current)?);
        Ok(())
    }

    /// The last sequence number written.
    pub fn last_seq(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Wakes on every append.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Every event after `after`, oldest first: from memory when it holds
    /// them, else from the files (read off the async runtime). A file
    /// that cannot be read is an error, never a silent gap in a replay.
    pub async fn read_after(&self, mut after: u64) -> Result<Vec<Event>, JournalError> {
        let mut out = Vec::new();
        loop {
            let opened = {
                let inner = self.lock();
                match inner.recent.front() {
                    Some(first) if first.seq <= after + 1 => {
                        out.extend(inner.recent.iter().filter(|e| e.seq > after).cloned());
                        return Ok(out);
                    }
                    None if inner.last_seq <= after => return Ok(out),
                    _ => {}
                }
                // Open every file under the lock: a rotation afterwards
                // renames them but the open descriptors keep their content.
                // One that vanished between listing and opening was
                // rotated away: it holds nothing a reader can still have.
                let mut opened = Vec::new();
                for p in files(&self.dir, self.limits.max_files) {
                    match File::open(&p) {
                        Ok(f) => opened.push((p, f)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io("open", &p)(e)),
                    }
                }
                opened
            };
            let read = tokio::task::spawn_blocking(move || {
                let mut evs = Vec::new();
                for (p, f) in opened {
                    read_lines(f, after, &mut evs).map_err(io("read", &p))?;
                }
                Ok::<_, JournalError>(evs)
            })
            .await
            .map_err(|e| JournalError::Reader(e.to_string()))??;
            let Some(last) = read.last().map(|e| e.seq) else {
                // Nothing on disk after `after`: what memory has is all.
                let inner = self.lock();
                out.extend(inner.recent.iter().filter(|e| e.seq > after).cloned());
                return Ok(out);
            };
            out.extend(read);
            after = last;
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: this many next opens of a journal file fail.
    static FAIL_OPENS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn open_append(path: &Path) -> Result<File, JournalError> {
    #[cfg(test)]
    if FAIL_OPENS.with(|f| f.replace(f.get().saturating_sub(1))) > 0 {
        return Err(io("open", path)(std::io::Error::other("injected")));
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io("open", path))
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8; 1];
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)
        })
        .is_ok_and(|()| last[0] == b'\n')
}

/// The journal files that exist, oldest first.
fn files(dir: &Path, max_files: u32) -> Vec<PathBuf> {
    (0..max_files)
        .rev()
        .map(|n| match n {
            0 => dir.join(JOURNAL),
            n => dir.join(format!("{JOURNAL}.{n}")),
        })
        .filter(|p| p.exists())
        .collect()
}

/// Appends the events of one file with `seq > after`, keeping the order
/// strictly increasing (a torn or repeated line is skipped).
fn read_lines(f: File, after: u64, out: &mut Vec<Event>) -> std::io::Result<()> {
    for line in BufReader::new(f).split(b'\n') {
        let Ok(ev) = serde_json::from_slice::<Event>(&line?) else {
            continue;
        };
        let floor = out.last().map_or(after, |e| e.seq);
        if ev.seq > floor {
            out.push(ev);
        }
    }
    Ok(())
}

fn last_event(path: &Path) -> Option<Event> {
    let f = File::open(path).ok()?;
    let mut evs = Vec::new();
    if let Err(e) = read_lines(f, 0, &mut evs) {
        log::error!("event journal: read {}: {e}", path.display());
    }
    evs.pop()
}

// ---- recording, called from the lifecycle code (one line each) ----

fn base(kind: EventKind, id: &str, name: &str) -> Event {
    Event {
        seq: 0,
        time: runtime_core::time::now_rfc3339(),
        kind,
        id: id.to_string(),
        name: name.to_string(),
        exit_code: None,
        signal: None,
        exec_id: None,
        reason: None,
        restart_count: None,
        oom_kill: None,
        reconciled_at: None,
    }
}

fn write(d: &Daemon, ev: Event) {
    // Events are hints: a full disk must not fail a container's start.
    match d.journal.append(ev) {
        Ok(ev) => log::debug!("event {}", ev.text()),
        Err(e) => log::error!("event journal: {e}"),
    }
}

fn name_of(d: &Daemon, id: &str) -> String {
    d.registry
        .lock()
        .get(id)
        .map_or_else(|| id.to_string(), |e| e.meta.name.clone())
}

/// Records an event that happens now (a start: at the shim's start time).
pub fn record(d: &Daemon, kind: EventKind, id: &str) {
    let mut ev = base(kind, id, &name_of(d, id));
    if kind == EventKind::Start {
        if let Some(t) = d.registry.get(id).and_then(|e| e.info(&d.root).started_at) {
            ev.time = t;
        }
    }
    write(d, ev);
}

/// `create` succeeded: `create`, and `start` when it runs already, at
/// the times meta.json and the shim give.
pub fn created(d: &Daemon, id: &str) {
    let Some(info) = d.registry.get(id).map(|e| e.info(&d.root)) else {
        return;
    };
    let mut ev = base(EventKind::Create, id, &info.name);
    ev.time = info.created_at.clone();
    write(d, ev);
    if info.status == ContainerStatus::Running || info.finished_at.is_some() {
        let mut ev = base(EventKind::Start, id, &info.name);
        if let Some(t) = info.started_at {
            ev.time = t;
        }
        write(d, ev);
    }
}

/// A container was removed (`name` from before it left the table).
pub fn deleted(d: &Daemon, id: &str, name: &str) {
    write(d, base(EventKind::Delete, id, name));
}

/// The restart policy is about to run the container again. `retry`: the
/// same attempt was begun by a berthd that died; its event may be in the
/// journal already, and then it is not written twice. `why`: the policy
/// and the exit it answers.
pub fn restarting(d: &Daemon, id: &str, count: u32, retry: bool, why: String) {
    if retry
        && journaled_where(d, |e| {
            e.kind == EventKind::Restart && e.id == id && e.restart_count == Some(count)
        })
    {
        return;
    }
    let mut ev = base(EventKind::Restart, id, &name_of(d, id));
    ev.restart_count = Some(count);
    ev.reason = Some(why);
    write(d, ev);
}

/// `pause`/`unpause` succeeded.
pub fn paused(d: &Daemon, id: &str, paused: bool) {
    let kind = if paused {
        EventKind::Pause
    } else {
        EventKind::Unpause
    };
    record(d, kind, id);
}

/// An exec started (`time`: when the shim was asked to start it; the
/// process may have ended before the answer): `exec_start`, and `exec_exit` with the shim's
/// code and time once the shim reports it ended (asked every 50 ms at
/// first, backing off to once a second: the shim's protocol has no wait
/// for an exec, and a long-running exec costs one small call a second).
/// An exec that ends while berthd is down gets its `exec_exit` when
/// berthd adopts the container again (`restored`, `restored_execs_on_disk`); one whose container
/// is removed first gets none.
pub fn exec_started(d: &Arc<Daemon>, id: &str, exec_id: &str, time: String) {
    let mut ev = base(EventKind::ExecStart, id, &name_of(d, id));
    ev.exec_id = Some(exec_id.to_string());
    ev.time = time;
    write(d, ev);
    let (d, id, exec_id) = (Arc::clone(d), id.to_string(), exec_id.to_string());
    tokio::spawn(async move { follow_exec(&d, &id, &exec_id).await });
}

/// Asks until the exec has ended, then journals its exit. The answer is
/// the shim's, or the exec's exit record on disk when the shim no longer
/// holds it (it lets go of an exit once a `state` reply carried it) or
/// is gone. A shim that does not answer is asked again (a busy shim, a
/// restart of the connection): only a container that has ended with no
/// record of the exec, or was removed, ends the following.
async fn follow_exec(d: &Daemon, id: &str, exec_id: &str) {
    let paths = d.root.container(id);
    let mut delay = Duration::from_millis(50);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        let Some((name, ended)) = d
            .registry
            .get(id)
            .map(|e| (e.meta.name.clone(), e.finished().is_some()))
        else {
            return;
        };
        let asked = match shim::connect(&paths).await {
            Ok(mut c) => {
                c.call::<_, ShimState>(shim_methods::STATE, &Value::Null)
                    .await
            }
            Err(e) => Err(e),
        };
        let held = match &asked {
            Ok(state) => state.execs.iter().find(|e| e.id == exec_id).cloned(),
            Err(e) => {
                log::debug!("container {id}: exec {exec_id}: state: {e}");
                None
            }
        };
        let exec = held.or_else(|| atomic::read_json(&paths.exec_exit(exec_id)).ok());
        match exec {
            Some(e) if !e.running => {
                if let Some(exit) = &e.exit {
                    exec_exited(d, id, &name, exec_id, exit);
                    return;
                }
            }
            Some(_) => {}
            None if asked.is_err() && ended => {
                log::warn!("container {id}: exec {exec_id}: the container ended and left no exit record of it");
                return;
            }
            None => {}
        }
    }
}

/// berthd adopted a running container after a restart. Its execs as
/// the shim reports them are picked up: one that ended while berthd was
/// down gets its `exec_exit` now (at the shim's time, once: see
/// `exec_exited`), one still running is followed again. Those the shim
/// already forgot are on disk: [`restored_execs_on_disk`], which the
/// start-up restore runs once every container is adopted.
pub fn restored(d: &Arc<Daemon>, id: &str, state: &ShimState) {
    record(d, EventKind::Restore, id);
    restored_execs(d, id, &state.execs);
}

/// The exec records a restored container's shim left on disk (execs it
/// reported to the berthd before and forgot): an exit not yet journaled
/// is. Reading every container's directory was a fifth of berthd's work
/// in adopting 3,000 containers, and nothing of it is needed to list
/// them, so it runs after. An exit also seen from the shim's state (or by
/// a follower) is journaled once all the same: `exec_exited` is
/// idempotent.
pub fn restored_execs_on_disk(d: &Arc<Daemon>, id: &str, paths: &ContainerPaths) {
    restored_execs(d, id, &runtime_core::protocol::exec_records(paths));
}

/// The exec records on disk of containers `ids` (see
/// [`restored_execs_on_disk`]), those that have any: blocking reads, for
/// a blocking thread.
pub fn execs_on_disk(d: &Daemon, ids: Vec<String>) -> Vec<(String, Vec<ExecState>)> {
    let lookup = d.root.lookup();
    ids.into_iter()
        .filter_map(|id| {
            let execs = runtime_core::protocol::exec_records(&lookup.container(&id));
            (!execs.is_empty()).then_some((id, execs))
        })
        .collect()
}

/// Execs found at a restore: an exit is journaled (once), a running one
/// followed again. The container's name is looked up only when there is
/// one: nearly never, and this runs for every container adopted.
pub fn restored_execs(d: &Arc<Daemon>, id: &str, execs: &[ExecState]) {
    if execs.is_empty() {
        return;
    }
    let name = name_of(d, id);
    for exec in execs {
        match exec.exit.as_ref().filter(|_| !exec.running) {
            Some(exit) => exec_exited(d, id, &name, &exec.id, exit),
            None => {
                let (d, id, exec_id) = (Arc::clone(d), id.to_string(), exec.id.clone());
                tokio::spawn(async move { follow_exec(&d, &id, &exec_id).await });
            }
        }
    }
}

/// Journals an exec's exit once, however many berthds see it: a marker
/// beside its record (`exec-<id>.event`) says `pending` before the append
/// and `done` after, as `exit.event` does for the container's exit; only
/// a `pending` one (a berthd killed in between) is looked up in the journal.
fn exec_exited(d: &Daemon, id: &str, name: &str, exec_id: &str, exit: &ExitRecord) {
    let paths = d.root.container(id);
    let mark = paths.exec_event_mark(exec_id);
    let journaled = || {
        journaled_where(d, |e| {
            e.kind == EventKind::ExecExit && e.id == id && e.exec_id.as_deref() == Some(exec_id)
        })
    };
    match fs::read(&mark).as_deref() {
        Ok(b"done") => return,
        Ok(b"pending") if journaled() => {
            let _ = atomic::write_until_reboot(&mark, b"done");
            return;
        }
        _ => {}
    }
    if let Err(e) = atomic::write_until_reboot(&mark, b"pending") {
        log::error!("container {id}: {e}");
    }
    let mut ev = base(EventKind::ExecExit, id, name);
    ev.exec_id = Some(exec_id.to_string());
    ev.time = exit.finished_at.clone();
    ev.exit_code = Some(exit.exit_code);
    ev.signal = exit.signal;
    if event::event_time(&ev).is_some_and(|t| t < d.journal.started) {
        ev.reconciled_at = Some(runtime_core::time::now_rfc3339());
    }
    write(d, ev);
    // Until-reboot, like the journal's own appends (see `exited`).
    if let Err(e) = atomic::write_until_reboot(&mark, b"done") {
        log::error!("container {id}: {e}");
    }
    forget_old_execs(&paths);
}

/// How many ended execs' records a container keeps on disk (and so in
/// `inspect`) once their `exec_exit` is journaled: a container that runs
/// an exec every few seconds for months must not fill its directory.
const KEEP_ENDED_EXECS: usize = 64;

/// Removes the records (and markers) of the oldest ended execs beyond
/// [`KEEP_ENDED_EXECS`], only those whose exit is journaled (`done`),
/// oldest by the time the record was written.
fn forget_old_execs(paths: &ContainerPaths) {
    let mut ended: Vec<(SystemTime, String)> = runtime_core::protocol::exec_records(paths)
        .into_iter()
        .filter(|r| !r.running)
        .filter(|r| fs::read(paths.exec_event_mark(&r.id)).is_ok_and(|m| m == b"done"))
        .filter_map(|r| {
            let written = fs::metadata(paths.exec_exit(&r.id)).ok()?.modified().ok()?;
            Some((written, r.id))
        })
        .collect();
    if ended.len() <= KEEP_ENDED_EXECS {
        return;
    }
    ended.sort();
    let extra = ended.len() - KEEP_ENDED_EXECS;
    for (_, exec_id) in ended.into_iter().take(extra) {
        for path in [paths.exec_exit(&exec_id), paths.exec_event_mark(&exec_id)] {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// `oom.event`: the OOM kills of one run (the init's PID) journaled
/// live, and how far a berthd killed mid-way had got.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OomMark {
    pid: i32,
    /// Journaled.
    kills: u64,
    /// Being journaled (up to this count) when the mark was written.
    #[serde(default)]
    pending: u64,
}

/// The shim's state says its container's cgroup had OOM kills: one
/// `oom` event per kill not journaled yet, at the time the shim saw it,
/// while the container still runs (the killed process need not be the
/// init; containerd's shim publishes TaskOOM the same way). Called on
/// every state berthd's watcher fetches, which a new kill wakes; kills
/// from while berthd was down are journaled when it adopts the container,
/// marked reconciled. Once only: `oom.event` counts what is journaled for
/// this run, written (pending) before the appends and after them.
pub fn oom_seen(d: &Daemon, id: &str, state: &ShimState) {
    if state.oom_kills == 0 {
        return;
    }
    let paths = d.root.container(id);
    let mark_path = paths.oom_event_mark();
    let mark = atomic::read_json::<OomMark>(&mark_path)
        .ok()
        .filter(|m| m.pid == state.pid)
        .unwrap_or(OomMark {
            pid: state.pid,
            ..OomMark::default()
        });
    if state.oom_kills <= mark.kills {
        return;
    }
    let name = name_of(d, id);
    let pending = OomMark {
        pid: state.pid,
        kills: mark.kills,
        pending: state.oom_kills,
    };
    // Until-reboot writes, as the exit marker's: see `exited`.
    let save = |m: &OomMark| {
        if let Err(e) = atomic::to_json(&mark_path, m)
            .and_then(|data| atomic::write_until_reboot(&mark_path, &data))
        {
            log::error!("container {id}: {e}");
        }
    };
    save(&pending);
    for k in mark.kills + 1..=state.oom_kills {
        let mut ev = base(EventKind::Oom, id, &name);
        if let Some(at) = &state.oom_at {
            ev.time = at.clone();
        }
        ev.oom_kill = Some(k);
        // Killed mid-way last time: the journal says what was written.
        if k <= mark.pending && journaled(d, &ev) {
            continue;
        }
        if event::event_time(&ev).is_some_and(|t| t < d.journal.started) {
            ev.reconciled_at = Some(runtime_core::time::now_rfc3339());
        }
        write(d, ev);
    }
    save(&OomMark {
        pid: state.pid,
        kills: state.oom_kills,
        pending: 0,
    });
}

/// The `oom` events the run that ended with `exit` still owes: one per
/// kill its record counts beyond those journaled live (`oom.event`),
/// numbered on from them. The first kill takes the time the shim first
/// saw one, later ones the time it last saw new ones. A record of an
/// older shim has no count: one event when nothing was journaled live.
fn oom_owed(paths: &ContainerPaths, exit: &ExitRecord, id: &str, name: &str) -> Vec<Event> {
    if !exit.oom_killed {
        return Vec::new();
    }
    let live = atomic::read_json::<OomMark>(&paths.oom_event_mark())
        .ok()
        .filter(|m| m.pid == exit.pid)
        .map_or(0, |m| m.kills);
    let total = exit.oom_kills.unwrap_or(1).max(1);
    (live + 1..=total)
        .map(|k| {
            let mut o = base(EventKind::Oom, id, name);
            let at = match k {
                1 => exit.oom_at.as_ref(),
                _ => exit.oom_last_at.as_ref().or(exit.oom_at.as_ref()),
            };
            o.time = at.unwrap_or(&exit.finished_at).clone();
            o.oom_kill = Some(k);
            o
        })
        .collect()
}

/// After the exit journaled the kills it owed: `oom.event` counts them,
/// so a state fetched late (after the exit) journals none twice.
fn oom_settled(paths: &ContainerPaths, exit: &ExitRecord) {
    let Some(kills) = exit.oom_kills.filter(|_| exit.oom_killed) else {
        return;
    };
    let path = paths.oom_event_mark();
    let done = OomMark {
        pid: exit.pid,
        kills,
        pending: 0,
    };
    if let Err(e) =
        atomic::to_json(&path, &done).and_then(|data| atomic::write_until_reboot(&path, &data))
    {
        log::error!("{e}");
    }
}

/// The container has ended: journals its exit once, however many times
/// and from wherever this is called (watcher, removal, a restart). The
/// time is the shim's; an exit from before this berthd started is marked
/// reconciled. With no exit record (the shim died first) the reason is
/// journaled instead of a code. An exit record that says the OOM killer
/// struck is preceded by an `oom` event at the time the shim saw the
/// kill (Docker's order: oom, then die), under the same once-only marker.
pub fn exited(d: &Daemon, id: &str) {
    let Some(entry) = d.registry.get(id) else {
        return;
    };
    let paths = d.root.container(id);
    let mut ev = base(EventKind::Exit, id, &entry.meta.name);
    let mut oom = Vec::new();
    let mut record = None;
    let key = match atomic::read_json::<ExitRecord>(&paths.exit()) {
        Ok(exit) => {
            ev.time = exit.finished_at.clone();
            ev.exit_code = Some(exit.exit_code);
            ev.signal = exit.signal;
            ev.reason = exit.reason.clone();
            oom = oom_owed(&paths, &exit, id, &entry.meta.name);
            let key = format!("{}@{}", exit.pid, exit.finished_at);
            record = Some(exit);
            key
        }
        Err(_) => match entry.finished() {
            Some((None, Some(reason))) => {
                ev.reason = Some(reason.to_string());
                format!("lost@{reason}")
            }
            // Not ended, or ended with a record we could not read.
            _ => return,
        },
    };
    let mark = paths.exit_event_mark();
    let done = format!("done {key}");
    let pending = format!("pending {key}");
    let mut events: Vec<Event> = oom.into_iter().chain([ev]).collect();
    match fs::read_to_string(&mark) {
        Ok(m) if m == done => return,
        // Killed between the marker and the appends last time: the
        // journal says which of them happened.
        Ok(m) if m == pending => events.retain(|ev| !journaled(d, ev)),
        _ => {}
    }
    // Until-reboot writes: the marker only has to survive berthd, like the
    // journal's own page-cache appends; after a machine crash both are as
    // old as each other.
    if let Err(e) = atomic::write_until_reboot(&mark, pending.as_bytes()) {
        log::error!("container {id}: {e}");
    }
    for mut ev in events {
        if event::event_time(&ev).is_some_and(|t| t < d.journal.started) {
            ev.reconciled_at = Some(runtime_core::time::now_rfc3339());
        }
        write(d, ev);
    }
    if let Some(exit) = &record {
        oom_settled(&paths, exit);
    }
    if let Err(e) = atomic::write_until_reboot(&mark, done.as_bytes()) {
        log::error!("container {id}: {e}");
    }
}

/// True if an event like `ev` (kind, container, time, reason) is on disk.
fn journaled(d: &Daemon, ev: &Event) -> bool {
    journaled_where(d, |e| {
        e.kind == ev.kind
            && e.id == ev.id
            && e.time == ev.time
            && e.reason == ev.reason
            && e.oom_kill == ev.oom_kill
    })
}

/// True if an event on disk matches (a slow path: only after a berthd
/// died between a marker and an append).
fn journaled_where(d: &Daemon, matches: impl Fn(&Event) -> bool) -> bool {
    let files = files(&d.journal.dir, d.journal.limits.max_files);
    files
        .into_iter()
        .filter_map(|p| File::open(p).ok())
        .any(|f| {
            let mut evs = Vec::new();
            // A file that cannot be read to its end: what was read counts.
            let _ = read_lines(f, 0, &mut evs);
            evs.iter().any(&matches)
        })
}

// ---- the `events` stream ----

/// Serves one `events` request on its connection: the replay, then (when
/// following) every new event as it is journaled, until `until`, or the
/// client hangs up. Each item is a response with the request's id.
pub async fn serve(d: &Daemon, stream: &mut UnixStream, req: Request) {
    let id = req.id;
    let p = match serde_json::from_value::<EventsParams>(req.params) {
        Ok(p) => p,
        Err(e) => {
            let err = RpcError::new(
                ErrorCode::InvalidArgument,
                format!("bad params for events: {e}"),
            );
            let _ = send(stream, &Response::err(id, err)).await;
            return;
        }
    };
    let now = SystemTime::now();
    let bound = |s: &Option<String>| -> Result<Option<SystemTime>, RpcError> {
        s.as_deref()
            .map(|s| event::parse_time(s, now))
            .transpose()
            .map_err(|e| RpcError::new(ErrorCode::InvalidArgument, e.to_string()))
    };
    let (since, until) = match (bound(&p.since), bound(&p.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            let _ = send(stream, &Response::err(id, e)).await;
            return;
        }
    };
    let mut latest = d.journal.subscribe();
    // No start given: only what happens from now on (docker events).
    let mut cursor = match (p.after_seq, since) {
        (Some(s), _) => s,
        (None, Some(_)) => 0,
        (None, None) => d.journal.last_seq(),
    };
    let wanted = |e: &Event| {
        let t = event::event_time(e);
        p.filters.matches(e)
            && since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t < u))
    };
    if !push(d, stream, id, &mut cursor, &wanted).await {
        return;
    }
    if send_item(stream, id, &StreamItem::Caught(cursor))
        .await
        .is_err()
    {
        return;
    }
    let until_passed = until.is_some_and(|u| SystemTime::now() >= u);
    if !p.follow || until_passed {
        let _ = send_item(stream, id, &StreamItem::End).await;
        return;
    }
    let deadline = until.map(|u| {
        let left = u.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    loop {
        let mut probe = [0u8; 1];
        tokio::select! {
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = async { match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => {
                let _ = send_item(stream, id, &StreamItem::End).await;
                return;
            }
            // The client sends nothing more: a read returns only when it
            // hangs up (or misbehaves), and then we stop.
            _ = stream.read(&mut probe) => return,
        }
        if !push(d, stream, id, &mut cursor, &wanted).await {
            return;
        }
    }
}

/// Sends every wanted event after `cursor`; false if the client is gone.
async fn push(
    d: &Daemon,
    stream: &mut UnixStream,
    id: u64,
    cursor: &mut u64,
    wanted: &impl Fn(&Event) -> bool,
) -> bool {
    let evs = match d.journal.read_after(*cursor).await {
        Ok(evs) => evs,
        Err(e) => {
            // The client is told, rather than shown a replay with a hole.
            log::error!("event journal: {e}");
            let err = RpcError::new(ErrorCode::Internal, format!("event journal: {e}"));
            let _ = send(stream, &Response::err(id, err)).await;
            return false;
        }
    };
    for ev in evs {
        *cursor = ev.seq;
        if wanted(&ev) && send_item(stream, id, &StreamItem::Event(ev)).await.is_err() {
            return false;
        }
    }
    true
}

async fn send_item(stream: &mut UnixStream, id: u64, item: &StreamItem) -> std::io::Result<()> {
    let v: Value = serde_json::to_value(item).map_err(std::io::Error::other)?;
    send(stream, &Response::ok(id, v)).await
}

async fn send(stream: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let bytes = frame::encode_json(resp).map_err(std::io::Error::other)?;
    stream.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(n: usize) -> Event {
        let mut e = base(EventKind::Start, &format!("{n:016x}"), "c");
        e.reason = Some("x".repeat(50));
        e
    }

    #[tokio::test]
    async fn appends_rotates_within_bounds_and_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_size: 4096,
            max_files: 3,
        };
        let j = Journal::open(dir.path(), limits).unwrap();
        for n in 0..500 {
            j.append(ev(n)).unwrap();
        }
        let total: u64 = files(dir.path(), 10)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(total <= 3 * 4096, "journal is {total} bytes");
        assert_eq!(files(dir.path(), 10).len(), 3);
        // From memory.
        let tail = j.read_after(495).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [496, 497, 498, 499, 500]
        );
        // A new journal (berthd restarted) has no memory: from the files,
        // which hold the newest events only, in order, and it continues
        // the numbering.
        drop(j);
        let j = Journal::open(dir.path(), limits).unwrap();
        assert_eq!(j.last_seq(), 500);
        let all = j.read_after(0).await.unwrap();
        assert!(all.len() > 10 && all.len() < 500, "{}", all.len());
        assert_eq!(all.last().unwrap().seq, 500);
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let next = j.append(ev(0)).unwrap();
        assert_eq!(next.seq, 501);
        assert_eq!(j.read_after(499).await.unwrap().len(), 2);
    }

    fn seqs(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(|e| e.seq).collect()
    }

    /// The journal's files and the sequence numbers each holds.
    fn on_disk(dir: &Path) -> Vec<(String, Vec<u64>)> {
        files(dir, 10)
            .into_iter()
            .filter(|p| p.is_file())
            .map(|p| {
                let mut evs = Vec::new();
                read_lines(File::open(&p).unwrap(), 0, &mut evs).unwrap();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    seqs(&evs),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_rotation_that_fails_part_way_loses_no_event_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_size: 1024,
            max_files: 5,
        };
        let j = Journal::open(dir.path(), limits).unwrap();
        let mut n = 0;
        while files(dir.path(), 10).len() < 3 {
            n += 1;
            j.append(ev(n)).unwrap();
        }
        let before = on_disk(dir.path());
        // The new current file cannot be opened, three times running:
        // those appends fail, and nothing is written into the renamed file
        // or shifted again (which deleted the oldest file at each retry).
        FAIL_OPENS.with(|f| f.set(3));
        let mut failed = 0;
        for _ in 0..100 {
            n += 1;
            if j.append(ev(n)).is_err() {
                failed += 1;
            }
            if FAIL_OPENS.with(|f| f.get()) == 0 {
                break;
            }
        }
        assert!(failed >= 2, "the injected failure was not reached");
        let last = j.append(ev(n + 1)).unwrap().seq;
        let after = on_disk(dir.path());
        // The full files from before all still there, whole, one step older.
        for (i, (_, seqs)) in before[..before.len() - 1].iter().enumerate() {
            assert_eq!(&after[i].1, seqs, "{before:?} -> {after:?}");
        }
        // Every event that was acknowledged is on disk, in order.
        drop(j);
        let j = Journal::open(dir.path(), limits).unwrap();
        let all = seqs(&j.read_after(0).await.unwrap());
        assert_eq!(all, (1..=last).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_rotation_blocked_in_the_chain_keeps_appending_within_twice_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_size: 1024,
            max_files: 4,
        };
        let j = Journal::open(dir.path(), limits).unwrap();
        let mut n = 0;
        while files(dir.path(), 10).len() < 3 {
            n += 1;
            j.append(ev(n)).unwrap();
        }
        // `.3` is a directory with something in it: renaming `.2` onto
        // it fails, every time.
        fs::create_dir_all(dir.path().join("events.log.3/x")).unwrap();
        let before = on_disk(dir.path());
        let mut acked = 0;
        let err = loop {
            n += 1;
            match j.append(ev(n)) {
                Ok(_) => acked += 1,
                Err(e) => break e.to_string(),
            }
        };
        assert!(acked > 0, "no event kept while rotation failed");
        assert!(err.contains("events.log.2"), "{err}");
        // Past its bound (the appends went on after the failed rotation),
        // and not past twice that.
        let size = fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
        assert!(size > 1024 && size <= 2 * 1024, "{size}");
        let after = on_disk(dir.path());
        assert_eq!(before[..2], after[..2], "older files untouched");
        // Once the obstacle is gone, rotation resumes and nothing is lost.
        fs::remove_dir_all(dir.path().join("events.log.3")).unwrap();
        let last = j.append(ev(0)).unwrap().seq;
        let all = seqs(
            &Journal::open(dir.path(), limits)
                .unwrap()
                .read_after(0)
                .await
                .unwrap(),
        );
        assert_eq!(all, (1..=last).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_journal_file_that_cannot_be_read_is_an_error_not_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_size: 1024,
            max_files: 3,
        };
        let j = Journal::open(dir.path(), limits).unwrap();
        for n in 0..40 {
            j.append(ev(n)).unwrap();
        }
        drop(j);
        // A directory where the oldest file is: opening works, reading
        // fails (EISDIR).
        let oldest = dir.path().join("events.log.2");
        fs::remove_file(&oldest).unwrap();
        fs::create_dir(&oldest).unwrap();
        let j = Journal::open(dir.path(), limits).unwrap();
        let e = j.read_after(0).await.unwrap_err().to_string();
        assert!(e.contains("events.log.2"), "{e}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        j.append(ev(1)).unwrap();
        j.append(ev(2)).unwrap();
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(b"{\"seq\":3,\"ti").unwrap();
        let j = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        assert_eq!(j.last_seq(), 2);
        j.append(ev(3)).unwrap();
        drop(j);
        let j = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        assert_eq!(j.last_seq(), 3);
    }
}
