//! The shim's command line: one type for both ends. berthd builds it and
//! turns it into arguments (`to_args`); the shim parses them (`parse`), for
//! `start` and `serve` alike. It is an internal interface, so it is parsed
//! by hand to keep the shim small.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::meta::LogConfig;

/// glibc's tunables the shim runs with: no per-thread cache of freed
/// chunks (tcache). glibc keeps up to 7 freed chunks of each small size
/// there, out of `malloc_trim`'s reach, so every burst of work (100
/// execs) left ~40 kB of freed memory resident in each idle shim for
/// its whole life. A single-threaded process that mostly waits loses
/// nothing measurable without it. Tunables are read when a program
/// starts, so berthd sets them in the environment of `berth-shim start`
/// (whose fork is the shim); `tunables_env` keeps any the caller had.
pub const SHIM_GLIBC_TUNABLES: &str = "glibc.malloc.tcache_count=0";

/// The `GLIBC_TUNABLES` value for the shim: the caller's, plus ours.
pub fn tunables_env(inherited: Option<&str>) -> String {
    match inherited {
        Some(t) if !t.is_empty() => format!("{t}:{SHIM_GLIBC_TUNABLES}"),
        _ => SHIM_GLIBC_TUNABLES.to_string(),
    }
}

/// Everything the shim needs to run one container.
#[derive(Debug, Clone, Default)]
pub struct ShimConfig {
    pub id: String,
    /// The container's runtime directory (`<root>/containers/<id>`).
    pub state_dir: PathBuf,
    /// The container's data directory (`<data-root>/containers/<id>`):
    /// its log and exit record. `None`: the runtime directory (one root).
    pub data_dir: Option<PathBuf>,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runc_root: PathBuf,
    /// Give the container a stdin pipe (`-i`).
    pub stdin: bool,
    /// Give the container a pty (`-t`).
    pub tty: bool,
    pub log: LogConfig,
    /// Start the container at once (one `runc run --detach`).
    pub start: bool,
    /// Leave the output in the pipes until the first attach client (or a
    /// timeout), so an attaching `berth run` misses no byte.
    pub wait_attach: bool,
    /// Set by `start` for `serve`: where to report readiness.
    pub ready_fd: Option<i32>,
    /// The container's overlay, mounted by the shim in its own mount
    /// namespace before the runtime runs (JSON on the command line).
    pub overlay: Option<crate::rootfs::Overlay>,
}

impl ShimConfig {
    /// Parses `--flag value` pairs; every error names the flag.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut c = ShimConfig {
            runtime: "runc".into(),
            log: LogConfig::default(),
            ..Default::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--id" => c.id = value()?,
                "--state-dir" => c.state_dir = value()?.into(),
                "--data-dir" => c.data_dir = Some(value()?.into()),
                "--bundle" => c.bundle = value()?.into(),
                "--runtime" => c.runtime = value()?.into(),
                "--runc-root" => c.runc_root = value()?.into(),
                "--stdin" => c.stdin = true,
                "--tty" => c.tty = true,
                "--start" => c.start = true,
                "--wait-attach" => c.wait_attach = true,
                "--log-max-size" => {
                    c.log.max_size = value()?
                        .parse()
                        .map_err(|e| format!("--log-max-size: {e}"))?
                }
                "--log-max-files" => {
                    c.log.max_files = value()?
                        .parse()
                        .map_err(|e| format!("--log-max-files: {e}"))?
                }
                "--overlay" => {
                    c.overlay = Some(
                        serde_json::from_str(&value()?).map_err(|e| format!("--overlay: {e}"))?,
                    )
                }
                "--ready-fd" => {
                    c.ready_fd = Some(value()?.parse().map_err(|e| format!("--ready-fd: {e}"))?)
                }
                other => return Err(format!("unknown flag {other:?}")),
            }
        }
        crate::id::validate("id", &c.id).map_err(|e| e.to_string())?;
        if let Some(p) = c.data_dir.as_ref().filter(|p| !p.is_absolute()) {
            return Err(format!("--data-dir must be an absolute path, got {p:?}"));
        }
        for (name, p) in [
            ("--state-dir", &c.state_dir),
            ("--bundle", &c.bundle),
            ("--runc-root", &c.runc_root),
        ] {
            if !p.is_absolute() {
                return Err(format!("{name} must be an absolute path, got {p:?}"));
            }
        }
        Ok(c)
    }

    /// The container's paths as the shim sees them.
    pub fn paths(&self) -> crate::layout::ContainerPaths {
        crate::layout::ContainerPaths::from_dirs(
            &self.state_dir,
            self.data_dir.as_ref().unwrap_or(&self.state_dir),
        )
    }

    /// The arguments that `parse` reads back into this configuration.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut pair = |flag: &str, value: OsString| {
            a.push(flag.into());
            a.push(value);
        };
        pair("--id", self.id.clone().into());
        pair("--state-dir", self.state_dir.clone().into());
        if let Some(d) = &self.data_dir {
            pair("--data-dir", d.clone().into());
        }
        pair("--bundle", self.bundle.clone().into());
        pair("--runtime", self.runtime.clone().into());
        pair("--runc-root", self.runc_root.clone().into());
        pair("--log-max-size", self.log.max_size.to_string().into());
        pair("--log-max-files", self.log.max_files.to_string().into());
        if let Some(fd) = self.ready_fd {
            pair("--ready-fd", fd.to_string().into());
        }
        if let Some(o) = &self.overlay {
            // Only a path that is not UTF-8 fails here; the shim then
            // refuses the value, naming the flag, rather than run the
            // container without its rootfs.
            let json = serde_json::to_string(o).unwrap_or_else(|e| format!("unencodable: {e}"));
            pair("--overlay", json.into());
        }
        for (on, flag) in [
            (self.stdin, "--stdin"),
            (self.tty, "--tty"),
            (self.start, "--start"),
            (self.wait_attach, "--wait-attach"),
        ] {
            if on {
                a.push(flag.into());
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_all_flags() {
        let c = ShimConfig::parse(&args(
            "--id c1 --state-dir /s --bundle /b --runc-root /r --runtime /bin/true --stdin --log-max-size 5 --log-max-files 2",
        ))
        .unwrap();
        assert_eq!(c.id, "c1");
        assert!(c.stdin && !c.tty);
        assert_eq!(
            c.log,
            LogConfig {
                max_size: 5,
                max_files: 2
            }
        );
    }

    #[test]
    fn what_berthd_writes_the_shim_reads_back() {
        let c = ShimConfig {
            id: "c1".into(),
            state_dir: "/s/c1".into(),
            data_dir: Some("/d/c1".into()),
            bundle: "/s/c1/bundle".into(),
            runtime: "/usr/sbin/runc".into(),
            runc_root: "/r".into(),
            stdin: true,
            tty: false,
            log: LogConfig {
                max_size: 4096,
                max_files: 3,
            },
            start: true,
            wait_attach: true,
            ready_fd: Some(7),
            overlay: Some(crate::rootfs::Overlay {
                lower: crate::rootfs::Lower {
                    base: Some("/images/l".into()),
                    dirs: vec!["AB".into(), "CD".into()],
                },
                upper: "/s/c1/upper".into(),
                work: "/s/c1/work".into(),
                target: "/s/c1/bundle/rootfs".into(),
            }),
        };
        let args: Vec<String> = c
            .to_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let back = ShimConfig::parse(&args).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
    }

    #[test]
    fn errors_name_the_flag() {
        let e = ShimConfig::parse(&args("--id")).unwrap_err();
        assert!(e.contains("--id needs a value"), "{e}");
        let e = ShimConfig::parse(&args("--id ../x --state-dir /s --bundle /b --runc-root /r"))
            .unwrap_err();
        assert!(e.contains("../x"), "{e}");
        let e = ShimConfig::parse(&args("--id a --state-dir rel --bundle /b --runc-root /r"))
            .unwrap_err();
        assert!(e.contains("--state-dir"), "{e}");
        let e = ShimConfig::parse(&args("--bogus")).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
    }
}
