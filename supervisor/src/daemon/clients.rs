//! Bookkeeping of API connections: who is idle (so the longest-idle can
//! make room when fds or slots run out) and the accept loop's backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

struct State {
    /// Since when the client has been waiting for a request; None: busy.
    idle_since: Option<Instant>,
    /// It has sent a request (a real CLI sends its hello with the connect,
    /// so one that has not is the cheapest to give up).
    greeted: bool,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next: u64,
    live: HashMap<u64, State>,
}

/// The open API connections.
#[derive(Clone, Default)]
pub struct Clients {
    table: Arc<Mutex<Table>>,
}

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Only bookkeeping lives here; a panic elsewhere leaves it usable.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl Clients {
    /// Connections open now.
    pub fn len(&self) -> usize {
        lock(&self.table).live.len()
    }

    /// A slot for a new connection; it leaves the table when dropped.
    pub fn register(&self) -> Slot {
        let mut t = lock(&self.table);
        let id = t.next;
        t.next += 1;
        let close = Arc::new(Notify::new());
        t.live.insert(
            id,
            State {
                idle_since: Some(Instant::now()),
                greeted: false,
                close: close.clone(),
            },
        );
        Slot {
            id,
            close,
            table: self.table.clone(),
        }
    }

    /// Closes up to `n` idle clients, longest idle first: those that have
    /// sent nothing for `silent`, and those between requests for `idle`.
    /// True if any was closed.
    pub fn evict_idle(&self, n: usize, silent: Duration, idle: Duration) -> bool {
        let mut t = lock(&self.table);
        let now = Instant::now();
        let mut candidates: Vec<(Instant, u64)> = t
            .live
            .iter()
            .filter_map(|(id, s)| {
                let since = s.idle_since?;
                let min = if s.greeted { idle } else { silent };
                (now.duration_since(since) >= min).then_some((since, *id))
            })
            .collect();
        candidates.sort();
        let victims: Vec<u64> = candidates.into_iter().take(n).map(|(_, id)| id).collect();
        for id in &victims {
            if let Some(s) = t.live.remove(id) {
                // notify_one keeps a permit, so a client not yet waiting
                // still sees it at its next wait.
                s.close.notify_one();
            }
        }
        !victims.is_empty()
    }
}

/// One connection's entry in the table.
pub struct Slot {
    id: u64,
    close: Arc<Notify>,
    table: Arc<Mutex<Table>>,
}

impl Slot {
    /// Waiting for the client's next request: may be closed to make room.
    pub fn idle(&self) {
        if let Some(s) = lock(&self.table).live.get_mut(&self.id) {
            s.idle_since.get_or_insert_with(Instant::now);
        }
    }

    /// Serving a request: never closed for room.
    pub fn busy(&self) {
        if let Some(s) = lock(&self.table).live.get_mut(&self.id) {
            s.idle_since = None;
            s.greeted = true;
        }
    }

    /// Resolves when berthd needs this connection's fd back.
    pub async fn closed(&self) {
        self.close.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).live.remove(&self.id);
    }
}

/// The accept loop's pause after a failed accept, and its logging: one
/// line per episode, not one per attempt.
pub struct Backoff {
    delay: Duration,
    episode_logged: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Duration::ZERO,
            episode_logged: false,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept succeeded: the episode is over.
    pub fn reset(&mut self) {
        if self.episode_logged {
            log::info!("accepting API clients again");
        }
        *self = Backoff::default();
    }

    fn grow(&mut self) {
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
    }

    /// accept failed for lack of file descriptors.
    pub fn out_of_fds(&mut self, e: &std::io::Error, open: usize, freed: bool) {
        self.grow();
        if !self.episode_logged {
            log::warn!(
                "accept: {e}; {open} API connections open{}; backing off (raise berthd's open-file limit: see README)",
                if freed { ", closed the longest-idle ones" } else { "" }
            );
            self.episode_logged = true;
        }
    }

    /// accept failed otherwise (ECONNABORTED and the like).
    pub fn other(&mut self, e: &std::io::Error) {
        self.grow();
        if !self.episode_logged {
            log::warn!("accept: {e}; backing off");
            self.episode_logged = true;
        }
    }

    /// How long to wait before the next accept.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_longest_idle_and_never_busy_ones() {
        let c = Clients::default();
        let a = c.register();
        let b = c.register();
        let busy = c.register();
        busy.busy();
        std::thread::sleep(Duration::from_millis(5));
        b.idle();
        assert_eq!(c.len(), 3);
        assert!(c.evict_idle(1, Duration::ZERO, Duration::ZERO));
        assert_eq!(c.len(), 2);
        // `a` was registered first, so it has been idle longest.
        assert!(!lock(&c.table).live.contains_key(&a.id));
        assert!(c.evict_idle(5, Duration::ZERO, Duration::ZERO));
        assert_eq!(c.len(), 1, "the busy client stays");
        assert!(!c.evict_idle(5, Duration::ZERO, Duration::ZERO));
        drop(busy);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_silent_client_goes_before_one_between_requests() {
        let c = Clients::default();
        let silent = c.register();
        let talked = c.register();
        talked.busy();
        talked.idle();
        assert!(c.evict_idle(5, Duration::ZERO, Duration::from_secs(60)));
        assert_eq!(c.len(), 1);
        assert!(!lock(&c.table).live.contains_key(&silent.id));
        assert!(lock(&c.table).live.contains_key(&talked.id));
    }

    #[test]
    fn backoff_doubles_up_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        b.out_of_fds(&e, 0, false);
        assert_eq!(b.delay(), Duration::from_millis(10));
        for _ in 0..20 {
            b.out_of_fds(&e, 0, false);
        }
        assert_eq!(b.delay(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.delay(), Duration::ZERO);
    }
}
