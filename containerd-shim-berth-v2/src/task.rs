//! The task operations, in berth's terms (the ttrpc glue is `service`).

use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runtime_core::runc::CreateOpts;

use crate::error::{Error, Result};
use crate::mount;
use crate::paths;
use crate::publish::{self, topic};
use crate::runc;
use crate::shim::{read_pid, Exit, Phase, Proc, Shim, State};
use crate::stdio::{self, Paths};

/// A process's state as containerd asks for it.
pub struct ProcState {
    pub pid: u32,
    pub phase: Phase,
    pub exit: Option<Exit>,
    pub paths: Paths,
}

/// What the init's creation needs.
pub struct CreateParams {
    pub id: String,
    pub bundle: String,
    pub rootfs: Vec<mount::Mount>,
    pub paths: Paths,
}

fn proc_of<'a>(st: &'a mut State, exec_id: &str) -> Result<&'a mut Proc> {
    st.procs.get_mut(exec_id).ok_or_else(|| {
        if exec_id.is_empty() {
            Error::NotFound("task not created".into())
        } else {
            Error::NotFound(format!("exec {exec_id:?} not found"))
        }
    })
}

impl Shim {
    fn check_task(&self, id: &str) -> Result<()> {
        if id != self.id {
            return Err(Error::NotFound(format!(
                "task {id:?} not found (this shim serves {:?})",
                self.id
            )));
        }
        Ok(())
    }

    /// Opens stdio (or a console socket) and runs `cmd` (runc create or
    /// exec) with it; returns the new process's PID once registered.
    fn spawn_process(
        &self,
        exec_id: &str,
        mut cmd: std::process::Command,
        console: Option<&UnixListener>,
        op: &str,
        pid_file: &std::path::Path,
    ) -> Result<i32> {
        let paths = self
            .lock()
            .procs
            .get(exec_id)
            .map(|p| p.paths.clone())
            .unwrap_or_default();
        let mut opened = None;
        if console.is_none() {
            let o = stdio::open(&paths).map_err(Error::InvalidArgument)?;
            let [i, out, err] = o.child.each_ref().map(|fd| fd.try_clone());
            cmd.stdin(Stdio::from(i.map_err(|e| Error::io("dup stdin", e))?))
                .stdout(Stdio::from(out.map_err(|e| Error::io("dup stdout", e))?))
                .stderr(Stdio::from(err.map_err(|e| Error::io("dup stderr", e))?));
            opened = Some(o);
        }
        let _spawning = self.spawning();
        // `cmd` (and our copies of the child's ends) goes with the run.
        self.run_ok(cmd, op, None)?;
        let pid = read_pid(pid_file)?;
        let mut pty = None;
        if let Some(listener) = console {
            let master =
                stdio::receive_pty(listener).map_err(|e| Error::io("receive the pty", e))?;
            let (done, hold) =
                stdio::start_pty_copies(&master, &paths).map_err(Error::InvalidArgument)?;
            pty = Some((master, done, hold));
        }
        let mut st = self.lock();
        if let Some(p) = st.procs.get_mut(exec_id) {
            if let Some(o) = opened {
                p.held = o.held;
                p.stdin_hold = o.stdin_hold;
            }
            if let Some((master, done, hold)) = pty {
                p.console = Some(master);
                p.output_done = Some(done);
                p.stdin_hold = hold;
            }
        }
        self.register(&mut st, exec_id, pid);
        Ok(pid)
    }

    fn console_listener(
        &self,
        exec_id: &str,
        terminal: bool,
    ) -> Result<Option<(UnixListener, std::path::PathBuf)>> {
        if !terminal {
            return Ok(None);
        }
        let path = paths::console_socket(&self.socket, exec_id);
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)
            .map_err(|e| Error::io(format!("bind console socket {}", path.display()), e))?;
        Ok(Some((l, path)))
    }

    pub fn create(&self, p: CreateParams) -> Result<u32> {
        self.check_task(&p.id)?;
        {
            let mut st = self.lock();
            if st.created {
                return Err(Error::AlreadyExists(format!(
                    "task {} already created",
                    p.id
                )));
            }
            st.created = true;
            st.procs.insert(String::new(), Proc::new(p.paths.clone()));
        }
        let result = self.create_init(&p);
        if result.is_err() {
            let mut st = self.lock();
            st.created = false;
            st.procs.remove("");
            if st.mounted {
                st.mounted = false;
                drop(st);
                mount::unmount_rootfs(&self.bundle);
            }
        }
        let pid = result?;
        let mut ev = publish::TaskCreate::new();
        ev.container_id = self.id.clone();
        ev.bundle = p.bundle;
        ev.pid = pid as u32;
        let mut io = publish::TaskIO::new();
        io.stdin = p.paths.stdin;
        io.stdout = p.paths.stdout;
        io.stderr = p.paths.stderr;
        io.terminal = p.paths.terminal;
        ev.io = Some(io).into();
        self.publisher.publish(topic::CREATE, &ev);
        Ok(pid as u32)
    }

    fn create_init(&self, p: &CreateParams) -> Result<i32> {
        if !p.rootfs.is_empty() {
            mount::mount_rootfs(&self.bundle, &p.rootfs)?;
            self.lock().mounted = true;
        }
        let console = self.console_listener("", p.paths.terminal)?;
        let opts = CreateOpts {
            start: false,
            pid_file: Some(self.bundle.init_pid()),
            console_socket: console.as_ref().map(|(_, path)| path.clone()),
        };
        let cmd = self.runc.create(&self.id, &self.bundle.dir, &opts);
        let r = self.spawn_process(
            "",
            cmd,
            console.as_ref().map(|(l, _)| l),
            "create",
            &self.bundle.init_pid(),
        );
        if let Some((_, path)) = console {
            let _ = std::fs::remove_file(path);
        }
        r
    }

    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        self.check_task(id)?;
        if exec_id.is_empty() {
            return self.start_init();
        }
        let terminal = {
            let mut st = self.lock();
            let p = proc_of(&mut st, exec_id)?;
            if p.phase != Phase::Created || p.pid != 0 {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id:?} was already started"
                )));
            }
            p.paths.terminal
        };
        let console = self.console_listener(exec_id, terminal)?;
        let pid_file = self.bundle.dir.join(format!("exec.{exec_id}.pid"));
        let cmd = runc::exec(
            &self.runc,
            &self.id,
            &self.bundle.exec_spec(exec_id),
            &pid_file,
            console.as_ref().map(|(_, p)| p.as_path()),
        );
        let r = self.spawn_process(
            exec_id,
            cmd,
            console.as_ref().map(|(l, _)| l),
            "exec",
            &pid_file,
        );
        if let Some((_, path)) = console {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(&pid_file);
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                // A failed exec is gone: containerd deletes it next.
                let mut st = self.lock();
                if let Some(p) = st.procs.get_mut(exec_id) {
                    p.phase = Phase::Stopped;
                    p.exit = Some(Exit {
                        status: 255,
                        at: SystemTime::now(),
                    });
                }
                return Err(e);
            }
        };
        {
            let mut st = self.lock();
            if let Some(p) = st.procs.get_mut(exec_id) {
                if p.phase == Phase::Created && !p.reaped {
                    p.phase = Phase::Running;
                }
            }
        }
        let mut ev = publish::TaskExecStarted::new();
        ev.container_id = self.id.clone();
        ev.exec_id = exec_id.to_string();
        ev.pid = pid as u32;
        self.publisher.publish(topic::EXEC_STARTED, &ev);
        Ok(pid as u32)
    }

    fn start_init(&self) -> Result<u32> {
        let pid = {
            let mut st = self.lock();
            let p = proc_of(&mut st, "")?;
            if p.phase != Phase::Created || p.reaped {
                return Err(Error::FailedPrecondition("task was already started".into()));
            }
            p.pid
        };
        {
            let _spawning = self.spawning();
            self.run_ok(self.runc.start(&self.id), "start", None)?;
        }
        let watch = crate::oom::Oom::watch(pid, &self.runc.root.join(&self.id).join("state.json"));
        {
            let mut st = self.lock();
            if let Some(p) = st.procs.get_mut("") {
                if p.phase == Phase::Created && !p.reaped {
                    p.phase = Phase::Running;
                }
            }
            st.oom = watch;
        }
        let mut ev = publish::TaskStart::new();
        ev.container_id = self.id.clone();
        ev.pid = pid as u32;
        self.publisher.publish(topic::START, &ev);
        Ok(pid as u32)
    }

    pub fn exec(&self, id: &str, exec_id: &str, paths: Paths, spec: &[u8]) -> Result<()> {
        self.check_task(id)?;
        paths::check_id("exec id", exec_id).map_err(Error::InvalidArgument)?;
        {
            let mut st = self.lock();
            let init = proc_of(&mut st, "")?;
            if init.phase == Phase::Stopped || init.reaped {
                return Err(Error::FailedPrecondition(
                    "cannot exec in a stopped container".into(),
                ));
            }
            if st.procs.contains_key(exec_id) {
                return Err(Error::AlreadyExists(format!(
                    "exec {exec_id:?} already exists"
                )));
            }
            runtime_core::atomic::write_until_reboot(&self.bundle.exec_spec(exec_id), spec)?;
            st.procs.insert(exec_id.to_string(), Proc::new(paths));
        }
        let mut ev = publish::TaskExecAdded::new();
        ev.container_id = self.id.clone();
        ev.exec_id = exec_id.to_string();
        self.publisher.publish(topic::EXEC_ADDED, &ev);
        Ok(())
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcState> {
        self.check_task(id)?;
        let mut st = self.lock();
        if exec_id.is_empty() && st.deleted {
            return Err(Error::NotFound(format!("task {id} was deleted")));
        }
        let p = proc_of(&mut st, exec_id)?;
        Ok(ProcState {
            pid: p.pid as u32,
            phase: p.phase,
            exit: p.exit,
            paths: p.paths.clone(),
        })
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        self.check_task(id)?;
        let via_runtime = {
            let mut st = self.lock();
            let p = proc_of(&mut st, exec_id)?;
            if p.reaped || p.phase == Phase::Stopped {
                if !(exec_id.is_empty() && all) {
                    return Err(Error::NotFound("process already finished".into()));
                }
                true
            } else if exec_id.is_empty() && (all || p.phase == Phase::Created) {
                true
            } else if p.pid == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id:?} was not started"
                )));
            } else {
                // Not reaped, and reaping needs this lock: the PID is still ours.
                let sig = Signal::try_from(signal as i32)
                    .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
                kill(Pid::from_raw(p.pid), sig)
                    .map_err(|e| Error::io(format!("kill {}", p.pid), e.into()))?;
                false
            }
        };
        if via_runtime {
            let _spawning = self.spawning();
            self.run_ok(runc::kill(&self.runc, &self.id, signal, all), "kill", None)?;
        }
        Ok(())
    }

    /// The exit of a process once it is recorded; None while it runs
    /// (the serving loop parks the Wait until then).
    pub fn try_wait(&self, id: &str, exec_id: &str) -> Result<Option<Exit>> {
        self.check_task(id)?;
        let mut st = self.lock();
        Ok(proc_of(&mut st, exec_id)?.exit)
    }

    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit)> {
        self.check_task(id)?;
        if !exec_id.is_empty() {
            let mut st = self.lock();
            let p = proc_of(&mut st, exec_id)?;
            let exit = match (p.exit, p.pid) {
                (Some(e), _) => e,
                (None, 0) => Exit {
                    status: 0,
                    at: SystemTime::now(),
                },
                (None, _) => {
                    return Err(Error::FailedPrecondition(format!(
                        "exec {exec_id:?} is still running"
                    )))
                }
            };
            let pid = p.pid as u32;
            st.procs.remove(exec_id);
            let _ = std::fs::remove_file(self.bundle.exec_spec(exec_id));
            let _ = std::fs::remove_file(self.bundle.exit_record(exec_id));
            return Ok((pid, exit));
        }
        let (phase, reaped) = {
            let mut st = self.lock();
            if st.deleted {
                return Err(Error::NotFound(format!("task {id} was deleted")));
            }
            let p = proc_of(&mut st, "")?;
            (p.phase, p.reaped)
        };
        match phase {
            Phase::Created if !reaped => {
                // Never started: runc kills the init waiting in its fifo.
                let _spawning = self.spawning();
                self.run_ok(self.runc.delete(&self.id, true), "delete", None)?;
            }
            Phase::Running | Phase::Paused if !reaped => {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} is still running: kill it first"
                )));
            }
            _ => {}
        }
        // The exit is recorded right after the reap, on this thread: do
        // it now. An init that runc has just killed may take a moment to
        // become our zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let exit = loop {
            crate::monitor::settle(self);
            if let Some(e) = proc_of(&mut self.lock(), "")?.exit {
                break e;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} has not exited yet"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let state_dir = self.runc.root.join(&self.id);
        if state_dir.exists() {
            // runc's delete of a stopped container, without runc when its
            // work is only rmdirs (`stopped`); else runc itself.
            let done = crate::stopped::Plan::of(&self.bundle.dir.join("config.json"), &state_dir)
                .and_then(|plan| plan.run());
            if let Err(why) = done {
                log::debug!("task {id}: runc delete: {why}");
                let _spawning = self.spawning();
                self.run_ok(self.runc.delete(&self.id, false), "delete", None)?;
            }
        }
        let (pid, unmount) = {
            let mut st = self.lock();
            st.deleted = true;
            let unmount = std::mem::take(&mut st.mounted);
            (st.procs.get("").map_or(0, |p| p.pid as u32), unmount)
        };
        if unmount {
            mount::unmount_rootfs(&self.bundle);
        }
        let mut ev = publish::TaskDelete::new();
        ev.container_id = self.id.clone();
        ev.id = self.id.clone();
        ev.pid = pid;
        ev.exit_status = exit.status;
        ev.exited_at = Some(publish::to_timestamp(exit.at)).into();
        self.publisher.publish(topic::DELETE, &ev);
        Ok((pid, exit))
    }

    pub fn pause(&self, id: &str, pause: bool) -> Result<()> {
        self.check_task(id)?;
        {
            let mut st = self.lock();
            let p = proc_of(&mut st, "")?;
            if p.reaped || p.phase == Phase::Stopped {
                return Err(Error::FailedPrecondition("task has stopped".into()));
            }
        }
        {
            let _spawning = self.spawning();
            let op = if pause { "pause" } else { "resume" };
            self.run_ok(runc::pause(&self.runc, &self.id, pause), op, None)?;
        }
        {
            let mut st = self.lock();
            if let Some(p) = st.procs.get_mut("") {
                if !p.reaped && p.phase != Phase::Stopped {
                    p.phase = if pause { Phase::Paused } else { Phase::Running };
                }
            }
        }
        if pause {
            let mut ev = publish::TaskPaused::new();
            ev.container_id = self.id.clone();
            self.publisher.publish(topic::PAUSED, &ev);
        } else {
            let mut ev = publish::TaskResumed::new();
            ev.container_id = self.id.clone();
            self.publisher.publish(topic::RESUMED, &ev);
        }
        Ok(())
    }

    /// The container's PIDs, with the exec id of those that are execs.
    pub fn pids(&self, id: &str) -> Result<Vec<(u32, Option<String>)>> {
        self.check_task(id)?;
        let out = {
            let _spawning = self.spawning();
            self.run_ok(runc::ps(&self.runc, &self.id), "ps", None)?
        };
        let pids: Vec<i64> = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Runtime(format!("runc ps: unreadable answer: {e}")))?;
        let st = self.lock();
        Ok(pids
            .into_iter()
            .map(|pid| {
                let exec = st
                    .procs
                    .iter()
                    .find(|(k, p)| !k.is_empty() && i64::from(p.pid) == pid)
                    .map(|(k, _)| k.clone());
                (pid as u32, exec)
            })
            .collect())
    }

    /// `runc events --stats`' JSON.
    pub fn stats(&self, id: &str) -> Result<serde_json::Value> {
        self.check_task(id)?;
        let out = {
            let _spawning = self.spawning();
            self.run_ok(runc::stats(&self.runc, &self.id), "events --stats", None)?
        };
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Runtime(format!("runc events --stats: unreadable answer: {e}")))
    }

    pub fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        self.check_task(id)?;
        let _spawning = self.spawning();
        self.run_ok(
            runc::update(&self.runc, &self.id),
            "update",
            Some(resources),
        )?;
        Ok(())
    }

    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        self.check_task(id)?;
        let mut st = self.lock();
        let p = proc_of(&mut st, exec_id)?;
        if stdin {
            p.stdin_hold = None;
        }
        Ok(())
    }

    pub fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        self.check_task(id)?;
        let mut st = self.lock();
        let p = proc_of(&mut st, exec_id)?;
        match &p.console {
            Some(m) => stdio::resize(m, width, height).map_err(|e| Error::io("resize the pty", e)),
            None => Err(Error::FailedPrecondition(
                "the process has no terminal".into(),
            )),
        }
    }

    pub fn init_pid(&self) -> u32 {
        self.lock().procs.get("").map_or(0, |p| p.pid as u32)
    }

    /// Shutdown: the shim exits once its task is gone (or when told `now`).
    pub fn shutdown(&self, now: bool) -> bool {
        let mut st = self.lock();
        let live = st.created && !st.deleted;
        if live && !now {
            return false;
        }
        st.shutdown = true;
        true
    }
}
