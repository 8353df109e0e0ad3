//! Restart policies, Docker's rules: `no`, `on-failure[:N]`, `always`,
//! `unless-stopped`; a delay of 100 ms before the first restart, doubling
//! up to 1 minute, back to 100 ms once a run lasted 10 s; a user's stop or
//! kill ends the policy until the user starts the container again.
//!
//! Everything the policy needs is in `restart.json` in the container's
//! directory, written durably at every step, so a berthd killed at any
//! moment resumes where it was: an exit is decided on once (the decision
//! names the exit it was about), a decided restart is done once (it names
//! the attempt number; a restored berthd that finds the container running
//! again only completes the bookkeeping), and the delay already served
//! counts (the due time is on disk).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use runtime_core::atomic;
use runtime_core::exit::ExitRecord;
use runtime_core::protocol::{ErrorCode, RpcError};

use super::{events, reconcile, start, Daemon};
use crate::policy::{PastExit, RestartInfo, RestartPolicy};

/// Exits kept for `inspect`.
const LAST_EXITS: usize = 5;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay.
const RESET_AFTER: Duration = Duration::from_secs(10);

/// A restart decided and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Not before this time (RFC 3339).
    pub due: String,
    /// The restart count once it is done.
    pub attempt: u32,
    /// The exit it answers.
    pub exit: String,
    /// Its `restart` event was (about to be) journaled: a retry after a
    /// berthd death looks in the journal before writing it again.
    #[serde(default)]
    pub announced: bool,
}

/// `restart.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartState {
    pub policy: RestartPolicy,
    /// Restarts done by the policy since the user last started it.
    pub count: u32,
    /// The last delay served, ms (0: none since the last reset).
    pub delay_ms: u64,
    /// A user stopped or killed it: no restart until the user starts it.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// The boot in which the user stopped it: an `always` container comes
    /// back after a reboot (Docker brings it back when its daemon starts;
    /// berthd restarts without a reboot leave it stopped, since they stop
    /// no container).
    #[serde(default)]
    pub stopped_boot: Option<String>,
    /// The exit already decided on.
    #[serde(default)]
    pub decided_exit: Option<String>,
    #[serde(default)]
    pub pending: Option<Pending>,
    #[serde(default)]
    pub last_exits: VecDeque<PastExit>,
}

/// What to do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Stay,
    /// Restart after this delay (also the new `delay_ms`).
    Restart(Duration),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The exit record's code.
    Code(i32),
    /// The shim died first: a failure.
    ShimDied,
    /// A reboot ended it (its runtime state is gone): not a failure, as
    /// for Docker, whose daemon brings back only `always` and
    /// `unless-stopped` containers when it starts.
    Reboot,
}

/// Docker's rule for one exit. `ran`: how long this run lasted; `boot`:
/// the current boot id.
pub fn decide(s: &RestartState, ended: Ended, ran: Duration, boot: &str) -> Decision {
    if s.stopped_by_user {
        let rebooted = s.stopped_boot.as_deref().is_some_and(|b| b != boot);
        if !(rebooted && s.policy == RestartPolicy::Always) {
            return Decision::Stay;
        }
    }
    let go = match s.policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max_retries } => {
            !matches!(ended, Ended::Code(0) | Ended::Reboot)
                && (max_retries == 0 || s.count < max_retries)
        }
    };
    if !go {
        return Decision::Stay;
    }
    let last = if ran >= RESET_AFTER {
        Duration::ZERO
    } else {
        Duration::from_millis(s.delay_ms)
    };
    let next = if last.is_zero() {
        FIRST_DELAY
    } else {
        (last * 2).min(MAX_DELAY)
    };
    Decision::Restart(next)
}

/// Why the policy state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("restart state of container {id}: {source}")]
    State {
        id: String,
        #[source]
        source: runtime_core::Error,
    },
}

/// The state on disk; before the first change, the policy from meta.json.
fn load(d: &Daemon, id: &str) -> RestartState {
    if let Ok(s) = atomic::read_json(&d.root.container(id).restart_state()) {
        return s;
    }
    let policy = d
        .registry
        .lock()
        .get(id)
        .and_then(|e| e.meta.restart_policy.as_deref()?.parse().ok())
        .unwrap_or_default();
    RestartState {
        policy,
        ..RestartState::default()
    }
}

fn save(d: &Daemon, id: &str, s: &RestartState) -> Result<(), RestartError> {
    atomic::write_json(&d.root.container(id).restart_state(), s).map_err(|source| {
        RestartError::State {
            id: id.to_string(),
            source,
        }
    })
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Checks a create's policy (it goes into meta.json, written durably with
/// the container): a known policy, and not with `--rm` (as Docker).
pub fn check_create(p: &crate::api::CreateParams) -> Result<(), String> {
    let Some(s) = &p.restart else {
        return Ok(());
    };
    let policy: RestartPolicy = s
        .parse()
        .map_err(|e: crate::policy::PolicyError| e.to_string())?;
    if p.auto_remove && policy != RestartPolicy::No {
        return Err(format!(
            "--restart {policy} and --rm cannot be used together: a removed container cannot be restarted"
        ));
    }
    Ok(())
}

/// A user's stop or kill: no restart until the user starts it again.
/// Written before the signal is sent, so the exit it causes finds it.
pub fn user_stopped(d: &Daemon, id: &str) {
    let mut s = load(d, id);
    if s.policy == RestartPolicy::No || s.stopped_by_user {
        return;
    }
    s.stopped_by_user = true;
    s.stopped_boot = Some(boot_id());
    s.pending = None;
    if let Err(e) = save(d, id, &s) {
        log::error!("{e}");
    }
}

/// Waits (up to 30 s) while the container is being created or run again
/// by the policy, so a user's stop that races a restart stops the
/// restarted container instead of failing on a half-made one.
pub async fn wait_not_starting(d: &Daemon, id: &str) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Some(mut changes) = d.registry.subscribe(id) else {
            return;
        };
        if !d
            .registry
            .get(id)
            .is_some_and(|e| matches!(e.phase, super::registry::Phase::Creating))
        {
            return;
        }
        if tokio::time::timeout_at(give_up, changes.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A user's start: the policy applies again, from a count of zero
/// (Docker resets its restart manager on start).
pub fn user_started(d: &Daemon, id: &str) {
    let mut s = load(d, id);
    if s.policy == RestartPolicy::No && s == RestartState::default() {
        return;
    }
    s.stopped_by_user = false;
    s.stopped_boot = None;
    s.count = 0;
    s.delay_ms = 0;
    s.pending = None;
    if let Err(e) = save(d, id, &s) {
        log::error!("{e}");
    }
}

/// `update --restart`: a new policy; the count and history stay.
pub fn set_policy(d: &Daemon, id: &str, policy: RestartPolicy) -> Result<(), RpcError> {
    let mut s = load(d, id);
    s.policy = policy;
    save(d, id, &s).map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

/// The policy's state for `inspect`.
pub fn info(d: &Daemon, id: &str) -> RestartInfo {
    let s = load(d, id);
    RestartInfo {
        policy: s.policy.to_string(),
        count: s.count,
        delay_ms: s.delay_ms,
        stopped_by_user: s.stopped_by_user,
        restarting_at: s.pending.as_ref().map(|p| p.due.clone()),
        oom_killed: s.last_exits.back().is_some_and(|e| e.oom_killed),
        last_exits: s.last_exits.into_iter().collect(),
    }
}

/// berthd adopted a running container: a restart that was under way
/// when berthd died has happened; complete its bookkeeping.
pub fn adopted(d: &Daemon, id: &str) {
    let mut s = load(d, id);
    if let Some(p) = s.pending.take() {
        s.count = p.attempt;
        if let Err(e) = save(d, id, &s) {
            log::error!("{e}");
        }
    }
}

fn exit_key(exit: Option<&ExitRecord>, reason: Option<&str>) -> Option<String> {
    match (exit, reason) {
        (Some(e), _) => Some(format!("{}@{}", e.pid, e.finished_at)),
        (None, Some(r)) => Some(format!("lost@{r}")),
        (None, None) => None,
    }
}

/// The container has exited (seen live or found at a restart): decide
/// once, and restart after the delay when the policy says so. Runs in the
/// container's watcher task, which has nothing else to do meanwhile; true
/// when the container runs again under a new shim, which that task then
/// watches.
pub async fn exited(d: &Arc<Daemon>, id: &str) -> bool {
    let Some(entry) = d.registry.get(id) else {
        return false;
    };
    if entry.removing {
        return false;
    }
    let Some((exit, reason)) = entry.finished() else {
        return false;
    };
    let Some(key) = exit_key(exit, reason) else {
        return false;
    };
    let mut s = load(d, id);
    if s.policy == RestartPolicy::No && s.pending.is_none() {
        return false;
    }
    let boot = boot_id();
    // An `always` container the user stopped before a reboot: the reboot
    // is a new reason to look at the same exit again.
    let rebooted = s.policy == RestartPolicy::Always
        && s.stopped_by_user
        && s.pending.is_none()
        && s.stopped_boot.as_deref().is_some_and(|b| b != boot);
    if rebooted || s.decided_exit.as_deref() != Some(key.as_str()) {
        let started = entry.info(&d.root).started_at;
        let finished = exit.map(|e| e.finished_at.clone());
        let ran = match (started, finished) {
            (Some(a), Some(b)) => humantime::parse_rfc3339(&b)
                .ok()
                .zip(humantime::parse_rfc3339(&a).ok())
                .and_then(|(b, a)| b.duration_since(a).ok())
                .unwrap_or_default(),
            _ => Duration::ZERO,
        };
        if rebooted {
            s.stopped_by_user = false;
            s.stopped_boot = None;
        }
        // A restart was under way for an earlier exit and this is a new
        // one: that attempt ran (berthd died before counting it).
        if let Some(p) = s.pending.take().filter(|p| p.exit != key) {
            s.count = s.count.max(p.attempt);
        }
        if s.decided_exit.as_deref() != Some(key.as_str()) {
            s.last_exits.push_back(PastExit {
                exit_code: exit.map(|e| e.exit_code),
                signal: exit.and_then(|e| e.signal),
                finished_at: exit
                    .map_or_else(runtime_core::time::now_rfc3339, |e| e.finished_at.clone()),
                oom_killed: exit.is_some_and(|e| e.oom_killed),
                reason: reason.map(str::to_string),
            });
            while s.last_exits.len() > LAST_EXITS {
                s.last_exits.pop_front();
            }
        }
        s.decided_exit = Some(key.clone());
        let ended = match exit {
            Some(e) => Ended::Code(e.exit_code),
            None if reconcile::lost_record(&d.root.container(id)).is_some_and(|l| l.rebooted()) => {
                Ended::Reboot
            }
            None => Ended::ShimDied,
        };
        s.pending = match decide(&s, ended, ran, &boot) {
            Decision::Stay => None,
            Decision::Restart(delay) => {
                s.delay_ms = delay.as_millis() as u64;
                // From the exit's own time: time berthd was down counts.
                let from = exit
                    .and_then(|e| humantime::parse_rfc3339(&e.finished_at).ok())
                    .unwrap_or_else(SystemTime::now);
                Some(Pending {
                    due: runtime_core::time::format_rfc3339(from + delay),
                    attempt: s.count + 1,
                    exit: key.clone(),
                    announced: false,
                })
            }
        };
        if let Err(e) = save(d, id, &s) {
            log::error!("{e}; not restarting");
            return false;
        }
    }
    let Some(mut pending) = s.pending.clone().filter(|p| p.exit == key) else {
        return false;
    };
    let due = humantime::parse_rfc3339(&pending.due).unwrap_or_else(|_| SystemTime::now());
    if let Ok(left) = due.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    // The user may have stopped, started, updated or removed it meanwhile.
    let now = load(d, id);
    if now.pending.as_ref() != Some(&pending) || d.registry.get(id).is_none_or(|e| e.removing) {
        return false;
    }
    log::info!(
        "container {id}: restart {} by policy {} after {} ms",
        pending.attempt,
        now.policy,
        now.delay_ms
    );
    let retry = pending.announced;
    // What the event says: the policy, and the exit it answers.
    let why = match now.last_exits.back() {
        Some(PastExit {
            exit_code: Some(c), ..
        }) => format!("exit code {c}"),
        Some(PastExit {
            reason: Some(r), ..
        }) => r.clone(),
        _ => "an exit".to_string(),
    };
    let why = format!("restart policy {}: {why}", now.policy);
    if !retry {
        let mut s = now;
        pending.announced = true;
        s.pending = Some(pending.clone());
        if let Err(e) = save(d, id, &s) {
            log::error!("{e}; not restarting");
            return false;
        }
    }
    events::restarting(d, id, pending.attempt, retry, why);
    match start::start(d, id, false).await {
        Ok(started) => {
            // It ran again: that counts even if a user's stop came in
            // meanwhile (and dropped the pending record).
            let mut s = load(d, id);
            if s.pending.as_ref() == Some(&pending) {
                s.pending = None;
            }
            s.count = s.count.max(pending.attempt);
            if let Err(e) = save(d, id, &s) {
                log::error!("{e}");
            }
            started == start::Started::NewShim
        }
        Err(e) => {
            // Docker gives up on a restart the runtime refuses; so do we,
            // and say why in the log and in inspect's last exits.
            log::error!("container {id}: restart by policy failed: {e}");
            let mut s = load(d, id);
            s.pending = None;
            if let Err(e) = save(d, id, &s) {
                log::error!("{e}");
            }
            false
        }
    }
}

/// The `RestartError` as the API's.
impl From<RestartError> for RpcError {
    fn from(e: RestartError) -> Self {
        RpcError::new(ErrorCode::Internal, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(policy: RestartPolicy, count: u32, delay_ms: u64) -> RestartState {
        RestartState {
            policy,
            count,
            delay_ms,
            ..RestartState::default()
        }
    }

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn dockers_rules_per_policy() {
        let r = |p, code| decide(&state(p, 0, 0), code, SHORT, "b");
        assert_eq!(r(RestartPolicy::No, Ended::Code(1)), Decision::Stay);
        assert_eq!(
            r(RestartPolicy::Always, Ended::Code(0)),
            Decision::Restart(FIRST_DELAY)
        );
        assert_eq!(
            r(RestartPolicy::UnlessStopped, Ended::Code(0)),
            Decision::Restart(FIRST_DELAY)
        );
        let of = RestartPolicy::OnFailure { max_retries: 3 };
        assert_eq!(r(of, Ended::Code(0)), Decision::Stay);
        assert_eq!(r(of, Ended::Code(1)), Decision::Restart(FIRST_DELAY));
        assert_eq!(
            r(of, Ended::ShimDied),
            Decision::Restart(FIRST_DELAY),
            "shim died: a failure"
        );
        assert_eq!(
            r(of, Ended::Reboot),
            Decision::Stay,
            "a reboot is no failure"
        );
        assert_eq!(r(RestartPolicy::No, Ended::Reboot), Decision::Stay);
        for p in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            assert_eq!(r(p, Ended::Reboot), Decision::Restart(FIRST_DELAY), "{p}");
        }
        assert_eq!(
            decide(&state(of, 2, 100), Ended::Code(1), SHORT, "b"),
            Decision::Restart(Duration::from_millis(200))
        );
        assert_eq!(
            decide(&state(of, 3, 100), Ended::Code(1), SHORT, "b"),
            Decision::Stay
        );
        let unlimited = RestartPolicy::OnFailure { max_retries: 0 };
        assert_eq!(
            decide(&state(unlimited, 1000, 100), Ended::Code(1), SHORT, "b"),
            Decision::Restart(Duration::from_millis(200))
        );
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_ten_seconds() {
        let mut delays = Vec::new();
        let mut s = state(RestartPolicy::Always, 0, 0);
        for _ in 0..12 {
            let Decision::Restart(d) = decide(&s, Ended::Code(1), SHORT, "b") else {
                panic!("always restarts");
            };
            delays.push(d.as_millis() as u64);
            s.delay_ms = d.as_millis() as u64;
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]
        );
        assert_eq!(
            decide(&s, Ended::Code(1), RESET_AFTER, "b"),
            Decision::Restart(FIRST_DELAY)
        );
    }

    #[test]
    fn a_user_stop_holds_except_always_after_a_reboot() {
        for p in [
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max_retries: 0 },
        ] {
            let mut s = state(p, 0, 0);
            s.stopped_by_user = true;
            s.stopped_boot = Some("boot-1".into());
            assert_eq!(
                decide(&s, Ended::Code(1), SHORT, "boot-1"),
                Decision::Stay,
                "{p}"
            );
            let after_reboot = decide(&s, Ended::Code(1), SHORT, "boot-2");
            if p == RestartPolicy::Always {
                assert_eq!(after_reboot, Decision::Restart(FIRST_DELAY));
            } else {
                assert_eq!(after_reboot, Decision::Stay, "{p}");
            }
        }
    }
}
