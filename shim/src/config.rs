//! The shim's command line, shared by `start` and `serve`. It is an
//! internal interface spoken by berthd, so it is parsed by hand to keep the
//! shim small.

use std::path::PathBuf;

use runtime_core::meta::LogConfig;

/// Everything the shim needs to run one container.
#[derive(Debug, Clone, Default)]
pub struct ShimConfig {
    pub id: String,
    /// The container's state directory (`<root>/containers/<id>`).
    pub state_dir: PathBuf,
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
                "--ready-fd" => {
                    c.ready_fd = Some(value()?.parse().map_err(|e| format!("--ready-fd: {e}"))?)
                }
                other => return Err(format!("unknown flag {other:?}")),
            }
        }
        runtime_core::id::validate("id", &c.id).map_err(|e| e.to_string())?;
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
