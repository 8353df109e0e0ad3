//! Deleting a stopped container's runc state without running runc.
//!
//! At a task's Delete the init has exited and been reaped; what `runc
//! delete` does then (runc 1.1, libcontainer's `destroy` for a stopped
//! container) is: kill what is left in the cgroup when the container has
//! no PID namespace of its own, remove its cgroup directories, remove its
//! Intel RDT group, remove its state directory, run the poststop hooks.
//! For the common container (its own PID namespace, whose init's death
//! killed every process in it; no poststop hooks; no RDT) that is a few
//! rmdirs and one directory tree, done here in well under a millisecond
//! where running runc for it took 7-12 ms of `ctr run --rm`'s time on this
//! machine (Go's start-up, then the same work). Anything else, or any
//! step here that does not go as expected (a cgroup still busy or with
//! children), is left to `runc delete`, so runc's own handling still
//! covers every case it covers: this only skips runc where its work is
//! known and small.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why runc must do the delete itself (logged, never shown to a user).
#[derive(Debug, thiserror::Error)]
pub enum Fallback {
    #[error("read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("parse {0}: {1}")]
    Parse(PathBuf, serde_json::Error),
    #[error("the spec has {0}, which runc's delete handles")]
    Spec(&'static str),
    #[error("runc's state has {0}, which runc's delete handles")]
    State(&'static str),
    #[error("remove {0}: {1}")]
    Remove(PathBuf, std::io::Error),
}

/// What the spec and runc's state say about a stopped container, and
/// whether its delete may skip runc (see the module's doc).
pub struct Plan {
    /// The cgroup directories runc made for the container (one per v1
    /// controller, v2's unified one): leaves, each removed with rmdir.
    cgroups: Vec<PathBuf>,
    /// runc's state directory for the container.
    state_dir: PathBuf,
}

fn read_json(path: &Path) -> Result<Value, Fallback> {
    let text = std::fs::read(path).map_err(|e| Fallback::Read(path.to_path_buf(), e))?;
    serde_json::from_slice(&text).map_err(|e| Fallback::Parse(path.to_path_buf(), e))
}

impl Plan {
    /// From the bundle's `config.json` and runc's `state.json` (in
    /// `state_dir`): a plan when runc's delete would do nothing more than
    /// remove the cgroups and the state directory.
    pub fn of(config_json: &Path, state_dir: &Path) -> Result<Plan, Fallback> {
        let spec = read_json(config_json)?;
        let has = |v: Option<&Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if has(spec.pointer("/hooks/poststop")) {
            return Err(Fallback::Spec("poststop hooks"));
        }
        if has(spec.pointer("/linux/intelRdt")) {
            return Err(Fallback::Spec("an Intel RDT group"));
        }
        // Its own PID namespace (none joined by path): the init's death
        // has killed everything in it, so there is nothing to kill.
        let own_pidns = spec
            .pointer("/linux/namespaces")
            .and_then(Value::as_array)
            .is_some_and(|ns| {
                ns.iter().any(|n| {
                    n.get("type").and_then(Value::as_str) == Some("pid")
                        && n.get("path")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                })
            });
        if !own_pidns {
            return Err(Fallback::Spec("no PID namespace of its own"));
        }
        let state = read_json(&state_dir.join("state.json"))?;
        if state
            .pointer("/config/cgroups/systemd")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Err(Fallback::State("a systemd cgroup"));
        }
        if state
            .get("intel_rdt_path")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty())
        {
            return Err(Fallback::State("an Intel RDT group"));
        }
        let mut cgroups: Vec<PathBuf> = state
            .get("cgroup_paths")
            .and_then(Value::as_object)
            .ok_or(Fallback::State("no cgroup_paths"))?
            .values()
            .filter_map(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        // Controllers mounted together share one directory.
        cgroups.sort();
        cgroups.dedup();
        Ok(Plan {
            cgroups,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// Removes the cgroups, then the state directory. A cgroup that is
    /// still busy (a process not yet gone) or has children stops it
    /// before the state goes, so `runc delete` can finish the job with
    /// runc's retries and recursive removal.
    pub fn run(&self) -> Result<(), Fallback> {
        for dir in &self.cgroups {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Fallback::Remove(dir.clone(), e)),
            }
        }
        std::fs::remove_dir_all(&self.state_dir)
            .map_err(|e| Fallback::Remove(self.state_dir.clone(), e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use std::fs;

    struct Case {
        _dir: tempfile::TempDir,
        config: PathBuf,
        state: PathBuf,
        cgroups: Vec<PathBuf>,
    }

    fn case(spec: Value) -> Case {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("config.json");
        fs::write(&config, spec.to_string()).unwrap();
        let state = d.path().join("runc/t");
        fs::create_dir_all(&state).unwrap();
        let cg = |n: &str| d.path().join("cg").join(n).join("t");
        let cgroups = vec![cg("memory"), cg("cpu,cpuacct"), cg("unified")];
        for c in &cgroups {
            fs::create_dir_all(c).unwrap();
        }
        let st = json!({"id": "t", "cgroup_paths": {
            "memory": cgroups[0], "cpu": cgroups[1], "cpuacct": cgroups[1], "": cgroups[2]
        }});
        fs::write(state.join("state.json"), st.to_string()).unwrap();
        Case {
            _dir: d,
            config,
            state,
            cgroups,
        }
    }

    fn own_pidns() -> Value {
        json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}})
    }

    #[test]
    fn a_plain_container_is_deleted_without_runc() {
        let c = case(own_pidns());
        Plan::of(&c.config, &c.state).unwrap().run().unwrap();
        assert!(!c.state.exists(), "runc's state removed");
        for cg in &c.cgroups {
            assert!(!cg.exists(), "{} removed", cg.display());
        }
    }

    #[test]
    fn what_runc_does_more_is_left_to_runc() {
        let shared_pid =
            json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}});
        let no_pid = json!({"linux": {"namespaces": [{"type": "mount"}]}});
        let mut hooks = own_pidns();
        hooks["hooks"] = json!({"poststop": [{"path": "/bin/true"}]});
        let mut rdt = own_pidns();
        rdt["linux"]["intelRdt"] = json!({"closID": "x"});
        for spec in [shared_pid, no_pid, hooks, rdt] {
            let c = case(spec.clone());
            assert!(Plan::of(&c.config, &c.state).is_err(), "{spec}");
            assert!(c.state.exists(), "nothing removed for {spec}");
        }
        // Empty hooks are no hooks.
        let mut empty = own_pidns();
        empty["hooks"] = json!({"poststop": []});
        let c = case(empty);
        assert!(Plan::of(&c.config, &c.state).is_ok());
    }

    #[test]
    fn a_cgroup_with_children_keeps_runc_state_for_runc() {
        let c = case(own_pidns());
        fs::create_dir(c.cgroups[0].join("child")).unwrap();
        let e = Plan::of(&c.config, &c.state).unwrap().run().err().unwrap();
        assert!(matches!(e, Fallback::Remove(..)), "{e}");
        assert!(
            c.state.join("state.json").exists(),
            "runc delete can still run"
        );
    }
}
