//! Keeping berthd's view true: one watcher task per container holds a
//! `wait` long poll on its shim; on start-up every container on disk is
//! restored concurrently (up to `RESTORE_AT_ONCE` at a time), each with its
//! own timeout.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use runtime_core::exit::ExitRecord;
use runtime_core::meta::ContainerMeta;
use runtime_core::protocol::{shim_methods as m, ErrorCode, ShimStatus, WaitParams};
use runtime_core::{atomic, heap};

use super::registry::{Entry, Phase};
use super::{events, netsetup, reconcile, remove, restart, shim, Daemon};
use crate::rpc::{CallError, RpcClient, Sent};

/// Starts the watcher of one container.
pub fn spawn_watcher(d: &Arc<Daemon>, id: String) {
    let d = d.clone();
    tokio::spawn(async move { watch(d, id, false, None).await });
}

/// Containers adopted at once at start-up. Each adoption in flight holds a
/// connection, its requests and replies and the entry's update: with all
/// of 3,000 at once their peak stayed in berthd's RSS after the restore
/// (glibc keeps freed memory between live blocks). A hung shim holds its
/// place only until its connect or call times out.
const RESTORE_AT_ONCE: usize = 64;

/// Watches one container until it is gone. `restoring`: found on disk at
/// start-up, where a container still in the created state was left by a
/// `run` that berthd's death interrupted: nobody will start it, so it is
/// removed.
///
/// This future lives as long as its container, one per container, so its
/// size is berthd's memory per container. An async fn's future is as large
/// as its largest await plus whatever lives across it: everything but the
/// `wait` long poll runs in `adopt`, boxed, so it takes memory only while
/// it runs (a restart policy's whole start, a removal, the connect), and an
/// idle container costs the connection and its `wait` in flight. (With the
/// steps inline this was 10.5 kB per container: the exit path inlines a
/// start.)
async fn watch(d: Arc<Daemon>, id: String, mut restoring: bool, mut start_up: Option<StartUp>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // At start-up the first adoption waits its turn, and counts as
        // this container's part of the restore once done.
        let mut start_up = start_up.take();
        let permit = match &start_up {
            Some(s) => Box::pin(Arc::clone(&s.gate).acquire_owned()).await.ok(),
            None => None,
        };
        let sent = start_up.as_mut().and_then(|s| s.sent.take());
        let restore = start_up.as_ref().map(|s| (&*s.restore, s.restart_record));
        let step = Box::pin(adopt(&d, &id, restore, sent, &mut restoring, &mut backoff)).await;
        drop(permit);
        if let Some(s) = &start_up {
            s.restore.settled.fetch_add(1, Ordering::Relaxed);
        }
        drop(start_up);
        let (mut c, oom_kills) = match step {
            Step::Wait { client, oom_kills } => (client, oom_kills),
            Step::Again => continue,
            Step::Done => return,
        };
        // The `wait` sent with the `state` asked to hear of any OOM kill
        // of this run (the count was not known yet). When `state` counted
        // some already, that wait is answered at once: wait again, past them.
        let answer = match Box::pin(c.read_long_reply::<Option<ExitRecord>>(m::WAIT)).await {
            Ok(None) if oom_kills > 0 => {
                let wait = WaitParams {
                    oom_kills: Some(oom_kills),
                };
                Box::pin(c.long_call::<_, Option<ExitRecord>>(m::WAIT, &wait)).await
            }
            answer => answer,
        };
        let pause = match answer {
            // The exit, or a new OOM kill: loop to fetch the state.
            Ok(_) => false,
            Err(CallError::Remote(e)) => {
                log::warn!("container {id}: wait: {e}");
                true
            }
            // The connection broke: the shim died or is deleting itself.
            Err(CallError::Transport(_) | CallError::Untrusted(_)) => false,
        };
        if pause {
            Box::pin(tokio::time::sleep(Duration::from_millis(250))).await;
        }
    }
}

/// What `watch` does after one round of `adopt`.
enum Step {
    /// The shim answered and the container runs: its `wait` is in flight
    /// on this connection; `oom_kills` is what its `state` counted.
    Wait { client: RpcClient, oom_kills: u64 },
    /// Connect and ask again (a new shim, a retry).
    Again,
    /// Nothing more to watch.
    Done,
}

/// Connects to the container's shim (or takes the connection the start-up
/// reader made, `sent`) and brings the entry up to date with its state,
/// handling an exit, a gone or silent shim and, at start-up, a container a
/// `run` left created.
async fn adopt(
    d: &Arc<Daemon>,
    id: &str,
    restore: Option<(&Restore, bool)>,
    sent: Option<Sent>,
    restoring: &mut bool,
    backoff: &mut Duration,
) -> Step {
    if d.registry.lock().get(id).is_none_or(|e| e.removing) {
        return Step::Done;
    }
    // Made here, not held by `watch`: two paths per container for as
    // long as it runs would be ~180 bytes of berthd's memory each.
    let paths = &d.root.container(id);
    let answer = match sent {
        Some(sent) => shim::state_wait_sent(paths, sent).await,
        None => shim::connect_state_wait(paths).await,
    };
    let (c, state) = match answer {
        Ok(answer) => answer,
        Err(CallError::Remote(e)) if e.code == ErrorCode::VersionMismatch => {
            // Never kill what we cannot speak to: leave it, say why.
            let reason = format!("cannot adopt this container's shim: {e}; it keeps running, manage it with the berthd that started it");
            log::warn!("container {id}: {reason}");
            d.registry.set_phase(
                id,
                Phase::Unknown {
                    reason,
                    retrying: false,
                },
            );
            return Step::Done;
        }
        Err(e) => {
            if let Some(pid) = shim::live_shim_pid(paths) {
                let reason = format!("shim (pid {pid}) is alive but not answering: {e}");
                log::warn!("container {id}: {reason}; retrying in {backoff:?}");
                d.registry.set_phase(
                    id,
                    Phase::Unknown {
                        reason,
                        retrying: true,
                    },
                );
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(5));
                return Step::Again;
            }
            if reconcile::shim_gone(d, id).await && on_exit(d, id).await {
                // Ran again by its policy: a new shim, not one restored.
                *restoring = false;
                return Step::Again;
            }
            return Step::Done;
        }
    };
    *backoff = Duration::from_millis(100);
    if *restoring
        && state.status == ShimStatus::Created
        && d.registry.get(id).is_some_and(|e| !e.meta.start_later)
    {
        log::warn!(
            "container {id} was created but never started before berthd stopped; removing it"
        );
        d.registry.set_phase(id, Phase::Live(state));
        if let Err(e) = remove::remove(d, id, true).await {
            log::error!("removing never-started container {id}: {e}");
        }
        return Step::Done;
    }
    if *restoring && state.status == ShimStatus::Running {
        events::restored(d, id, &state);
        let restart_record = match restore {
            // Once every container is adopted.
            Some((r, record)) => {
                r.execs_on_disk_later(id);
                record
            }
            // Adopted after its first try at start-up failed.
            None => {
                events::restored_execs_on_disk(d, id, paths);
                true
            }
        };
        // Only a container with a restart-policy record can have had a
        // restart under way (nothing writes one before the API is served,
        // and this container's own exits are handled after this).
        if restart_record {
            restart::adopted(d, id);
        }
    }
    *restoring = false;
    events::oom_seen(d, id, &state);
    let oom_kills = state.oom_kills;
    let exited = state.exit.is_some();
    d.registry.set_phase(id, Phase::Live(state));
    if exited {
        return if on_exit(d, id).await {
            Step::Again
        } else {
            Step::Done
        };
    }
    Step::Wait {
        client: c,
        oom_kills,
    }
}

/// After an exit: the event, the restart policy, `--rm`. True when the
/// policy ran the container again under a new shim, to be watched next.
async fn on_exit(d: &Arc<Daemon>, id: &str) -> bool {
    events::exited(d, id);
    // In its own task: a restart policy's decision is not held up by it
    // (a restart waits for it on the container's network lock).
    tokio::spawn(netsetup::release_on_exit(d.clone(), id.to_string()));
    if restart::exited(d, id).await {
        return true;
    }
    let auto_remove = d
        .registry
        .get(id)
        .is_some_and(|e| e.meta.auto_remove && !e.removing && e.finished().is_some());
    if auto_remove {
        if let Err(e) = remove::remove(d, id, false).await {
            log::debug!("auto-remove {id}: {e}");
        }
    }
    false
}

/// A watcher's share of the start-up restore.
struct StartUp {
    /// Where its first adoption waits its turn.
    gate: Arc<Semaphore>,
    restore: Arc<Restore>,
    /// Its shim's connection, the first requests sent by the start-up
    /// reader (`read_metas`), when that worked.
    sent: Option<Sent>,
    /// Whether the reader found a restart-policy record on disk.
    restart_record: bool,
}

/// The start-up restore as a whole. Each watcher holds it through its
/// first adoption, so it is dropped when every container found on disk
/// has been adopted, settled or found not answering.
struct Restore {
    d: Arc<Daemon>,
    began: Instant,
    containers: usize,
    /// Containers whose first adoption has run its course (fewer than
    /// found when berthd stopped during the restore).
    settled: AtomicUsize,
    /// Adopted running containers whose exec records on disk are still
    /// to be read (see `events::restored_execs_on_disk`).
    execs_on_disk: Mutex<Vec<String>>,
}

impl Restore {
    fn execs_on_disk_later(&self, id: &str) {
        lock(&self.execs_on_disk).push(id.to_string());
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        log::info!(
            "restored {} containers in {:?} ({} found on disk)",
            self.settled.load(Ordering::Relaxed),
            self.began.elapsed(),
            self.containers
        );
        let ids = std::mem::take(&mut *lock(&self.execs_on_disk));
        let d = Arc::clone(&self.d);
        let catch_up = async move {
            // Read on a blocking thread: one directory per container (a
            // sixth of berthd's work in a restart at 3,000, often from the
            // disk), and nearly all of them hold no exec record. Only
            // what is found comes back to be acted on here.
            let reader = Arc::clone(&d);
            let found = match tokio::task::spawn_blocking(move || {
                events::execs_on_disk(&reader, ids)
            })
            .await
            {
                Ok(found) => found,
                Err(e) => {
                    log::error!("reading the restored containers' exec records: {e}");
                    Vec::new()
                }
            };
            for (id, execs) in found {
                // The API was served meanwhile: a container removed since
                // has nothing left to journal or follow.
                if d.registry.lock().get(&id).is_none_or(|e| e.removing) {
                    continue;
                }
                events::restored_execs(&d, &id, &execs);
            }
            // The adoptions' connections, requests, replies and updates
            // were freed in between the entries that stay: without a trim
            // glibc keeps those pages (~1.8 MiB of berthd's RSS at 3,000).
            heap::trim();
        };
        // Dropped by a watcher task, so within the runtime; not when the
        // runtime itself is being torn down with watchers still restoring.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(catch_up);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads every container on disk (under either root) as "restoring" and
/// reconciles each in its own task, so one hung shim never holds up the
/// rest or the API. Returns once every container is in the table (the API
/// is served after that, so no listing ever misses one).
///
/// The meta.json files are read and parsed on blocking threads, which
/// also connect to each shim and send its first requests
/// (`shim::send_state_wait`), handed over in batches. At 3,000 containers
/// reading them all took 35-100 ms of berthd's one async thread before
/// the first shim was even connected to, and the connects were a fifth of
/// its work in the adoptions: now the first adoptions run while the rest
/// are read, and the answers are waiting when their turn comes.
pub async fn restore_all(d: &Arc<Daemon>) {
    let gate = Arc::new(Semaphore::new(RESTORE_AT_ONCE));
    let ids = d.root.container_ids();
    let restore = Arc::new(Restore {
        d: Arc::clone(d),
        began: Instant::now(),
        containers: ids.len(),
        settled: AtomicUsize::new(0),
        execs_on_disk: Mutex::new(Vec::new()),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // One reader per CPU (up to 4): on this 2-core VM one reader was the
    // restart's bottleneck (its connects each wake a shim), two were not.
    let readers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut shares = vec![Vec::new(); readers];
    for (n, id) in ids.into_iter().enumerate() {
        shares[n % readers].push(id);
    }
    for share in shares {
        let reader = Arc::clone(d);
        let tx2 = tx.clone();
        // Its own thread, not the blocking pool's: the reader gives its
        // thread a working directory of its own (`Here`), which must not
        // outlive it in a thread that later runs other work.
        let kept = share.clone();
        let spawned = std::thread::Builder::new()
            .name("berthd-restore".into())
            .spawn(move || read_metas(&reader, share, Here::enter(&reader.root), &tx2));
        if let Err(e) = spawned {
            // Read here then, before serving (the batches wait in the
            // channel). Not on the blocking pool: a reader stuck in a
            // read there would hold up berthd's exit for good.
            log::warn!("start-up reader thread: {e}; reading on berthd's own thread");
            read_metas(d, kept, None, &tx);
        }
    }
    drop(tx);
    while let Some(batch) = rx.recv().await {
        for (id, found) in batch {
            let (meta, sent, restart_record) = match found {
                OnDisk::Defined(meta, sent, record) => (*meta, sent, record),
                OnDisk::Undefined => {
                    // No meta.json: berthd died before the container was
                    // made (or while removing it, after its definition went).
                    log::warn!(
                        "removing half-made container directory {}",
                        d.root.container(&id).dir().display()
                    );
                    let d2 = d.clone();
                    tokio::spawn(async move { reconcile::discard(&d2, &id).await });
                    continue;
                }
                OnDisk::Unreadable(why) => {
                    // Never removed for it: out of fds, an I/O error or a
                    // damaged file says nothing about the container, whose
                    // shim may be running. Left as it is, unlisted.
                    log::error!("container {id} left alone, not listed: {why}");
                    continue;
                }
            };
            d.registry
                .lock()
                .insert(id.clone(), Box::new(Entry::new(meta, Phase::Restoring)));
            let d2 = d.clone();
            let start_up = StartUp {
                gate: Arc::clone(&gate),
                restore: Arc::clone(&restore),
                sent,
                restart_record,
            };
            tokio::spawn(async move { watch(d2, id, true, Some(start_up)).await });
        }
    }
}

/// Containers whose meta.json is handed over at once: one wake-up of
/// berthd's thread per batch, not per container.
const METAS_AT_ONCE: usize = 32;

/// A container found on disk, by id.
type Found = (String, OnDisk);

/// What the start-up readers found of one container.
enum OnDisk {
    /// Its definition; if that worked, its shim's connection with the
    /// first requests sent (a connection that failed is made again by the
    /// adoption, which says why); whether it has a restart-policy record.
    Defined(Box<ContainerMeta>, Option<Sent>, bool),
    /// No meta.json: a half-made container.
    Undefined,
    /// meta.json could not be read or parsed (why).
    Unreadable(String),
}

/// Reads the containers' meta.json and sends each shim its first
/// requests (see `restore_all`), by paths relative to `here` when the
/// thread has one. A closed channel (berthd shutting down) ends it.
fn read_metas(
    d: &Daemon,
    ids: Vec<String>,
    here: Option<Here>,
    tx: &tokio::sync::mpsc::UnboundedSender<Vec<Found>>,
) {
    // One lookup for them all: with two roots, no walk of each whole path.
    let lookup = d.root.lookup();
    let near = |p: PathBuf| match &here {
        Some(h) => h.near(p),
        None => p,
    };
    let mut batch = Vec::with_capacity(METAS_AT_ONCE);
    for id in ids {
        let paths = lookup.container(&id);
        let found = match atomic::read_json::<ContainerMeta>(&near(paths.meta())) {
            Ok(meta) => OnDisk::Defined(
                Box::new(meta),
                shim::send_state_wait(&near(paths.shim_sock())).ok(),
                // Looked for here, not by the adoption on berthd's one
                // thread: nearly no container has one, and a name that
                // is not there costs ext4 a scan of the directory
                // (a sixth of that thread's work in a restart at 3,000).
                // A stat that fails for another reason than absence
                // says "maybe": looking costs the adoption one read.
                near(paths.restart_state()).try_exists().unwrap_or(true),
            ),
            Err(runtime_core::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                OnDisk::Undefined
            }
            // Named by its whole path in the log, not the reader's
            // relative one.
            Err(runtime_core::Error::Io { op, source, .. }) => {
                OnDisk::Unreadable(format!("{op} {}: {source}", paths.meta().display()))
            }
            Err(e) => OnDisk::Unreadable(e.to_string()),
        };
        batch.push((id, found));
        if batch.len() == METAS_AT_ONCE {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(METAS_AT_ONCE));
            if tx.send(full).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
}

/// A start-up reader thread's own working directory, the containers'
/// runtime directory: it opens and connects to `<id>/...` instead of
/// walking the whole path each time (the walk was about a third of each
/// connect to a shim). The thread first stops sharing its working
/// directory with the rest of berthd (`unshare(CLONE_FS)`), so nothing
/// else sees the change; the thread ends with the reading.
struct Here {
    dir: PathBuf,
}

impl Here {
    /// None (and absolute paths) when the directory cannot be entered.
    fn enter(root: &runtime_core::layout::Root) -> Option<Here> {
        let dir = root.containers();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).ok()?;
        nix::unistd::chdir(&dir).ok()?;
        Some(Here { dir })
    }

    /// `path` relative to this directory when it is under it.
    fn near(&self, path: PathBuf) -> PathBuf {
        match path.strip_prefix(&self.dir) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => path,
        }
    }
}
