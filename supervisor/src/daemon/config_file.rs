//! `/etc/berth/berthd.toml`: berthd's settings in a file, as Docker's
//! daemon.json. Flags (and their environment variables) override it; it
//! overrides the built-in defaults.
//!
//! ```toml
//! root = "/run/berth"
//! data-root = "/var/lib/berth"
//! runtime = "runc"
//!
//! [log]            # defaults for containers run without --log-max-*
//! max-size = "10m"
//! max-files = 5
//!
//! [network]        # the default bridge network
//! bridge = "berth0"
//! subnet = "10.88.0.0/16"
//! cni-path = "/usr/lib/cni"
//! ```
//!
//! Every key is checked before berthd touches anything: an unknown key or
//! a bad value is one line naming the file and the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// Where berthd looks when `--config` is not given; a missing file there
/// is no error (every setting has a default).
pub const DEFAULT_PATH: &str = "/etc/berth/berthd.toml";

/// The settings the file may hold; `None` where it says nothing.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    #[serde(default, deserialize_with = "absolute")]
    pub root: Option<PathBuf>,
    #[serde(default, deserialize_with = "absolute")]
    pub data_root: Option<PathBuf>,
    #[serde(default, deserialize_with = "runtime")]
    pub runtime: Option<PathBuf>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub network: NetworkSection,
}

/// Log defaults for containers that do not set their own.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogSection {
    #[serde(default, deserialize_with = "log_size")]
    pub max_size: Option<u64>,
    #[serde(default, deserialize_with = "log_files")]
    pub max_files: Option<u32>,
}

/// The default bridge network (`--bridge`, `--bridge-subnet`, `--cni-path`).
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkSection {
    #[serde(default, deserialize_with = "bridge")]
    pub bridge: Option<String>,
    #[serde(default, deserialize_with = "subnet")]
    pub subnet: Option<String>,
    #[serde(default, deserialize_with = "absolute")]
    pub cni_path: Option<PathBuf>,
}

/// Why the file could not be used; its text is the one line berthd prints.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

/// Reads the file. `explicit` is whether the operator named it
/// (`--config`): only then is a missing file an error.
pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileConfig::default())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(&text).map_err(|(line, message)| ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Parses the file's text: on error the line (when known) and one line
/// saying which key was wrong and why.
fn parse(text: &str) -> Result<FileConfig, (Option<usize>, String)> {
    let line_of = |e: &toml::de::Error| {
        e.span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| (line_of(&e), one_line(e.message())))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let line = line_of(e.inner());
        let key = e.path().to_string();
        let message = one_line(e.inner().message());
        // "." is the document itself (nothing narrower to name).
        if key == "." {
            (line, message)
        } else {
            (line, format!("{key}: {message}"))
        }
    })
}

/// toml's messages may span lines; berthd's error is one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if !p.is_absolute() {
        return Err(serde::de::Error::custom(format!(
            "{} is not an absolute path",
            p.display()
        )));
    }
    Ok(Some(p))
}

/// A name looked up in PATH, or an absolute path (a relative one would
/// depend on berthd's working directory).
fn runtime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.as_os_str().is_empty() || (p.components().count() > 1 && !p.is_absolute()) {
        return Err(serde::de::Error::custom(format!(
            "{:?}: a name looked up in PATH, or an absolute path",
            p.display()
        )));
    }
    Ok(Some(p))
}

/// `"10m"`, `"1.5g"` or a number of bytes, checked as `--log-max-size`.
fn log_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    let text = match Size::deserialize(d)? {
        Size::Bytes(n) => n.to_string(),
        Size::Text(t) => t,
    };
    crate::cli::parse_log_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn log_files<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u64::deserialize(d)?;
    crate::cli::parse_log_files(&n.to_string())
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn bridge<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let bridge = String::deserialize(d)?;
    let check = runtime_core::net::NetConfig {
        bridge: bridge.clone(),
        ..default_net()
    };
    check.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(bridge))
}

fn subnet<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let subnet = String::deserialize(d)?;
    let check = runtime_core::net::NetConfig {
        subnet: subnet.clone(),
        ..default_net()
    };
    check.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(subnet))
}

fn default_net() -> runtime_core::net::NetConfig {
    runtime_core::net::NetConfig {
        bridge: runtime_core::net::DEFAULT_BRIDGE.into(),
        subnet: runtime_core::net::DEFAULT_SUBNET.into(),
        cni_bin: runtime_core::net::DEFAULT_CNI_BIN.into(),
        dir: PathBuf::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
root = "/run/b"
data-root = "/var/lib/b"
runtime = "crun"
[log]
max-size = "1.5m"
max-files = 3
[network]
bridge = "b0"
subnet = "10.42.7.0/24"
cni-path = "/opt/cni/bin"
"#,
        )
        .unwrap();
        assert_eq!(c.root.as_deref(), Some(Path::new("/run/b")));
        assert_eq!(c.data_root.as_deref(), Some(Path::new("/var/lib/b")));
        assert_eq!(c.runtime.as_deref(), Some(Path::new("crun")));
        assert_eq!(c.log.max_size, Some(1_572_864));
        assert_eq!(c.log.max_files, Some(3));
        assert_eq!(c.network.bridge.as_deref(), Some("b0"));
        assert_eq!(c.network.subnet.as_deref(), Some("10.42.7.0/24"));
        assert_eq!(
            c.network.cni_path.as_deref(),
            Some(Path::new("/opt/cni/bin"))
        );
        assert_eq!(parse("").unwrap(), FileConfig::default());
        assert_eq!(
            parse("[log]\nmax-size = 0\n").unwrap().log.max_size,
            Some(0)
        );
    }

    fn error(text: &str) -> (Option<usize>, String) {
        parse(text).unwrap_err()
    }

    #[test]
    fn bad_keys_and_values_are_named_on_one_line() {
        let (line, msg) = error("root = \"/r\"\nrot = \"/x\"\n");
        assert_eq!(line, Some(2));
        assert!(msg.starts_with("rot: unknown field `rot`"), "{msg}");
        let (line, msg) = error("[log]\nmax-files = 5\nmax-sise = \"1m\"\n");
        assert_eq!(line, Some(3));
        assert!(msg.starts_with("log.max-sise: unknown field"), "{msg}");
        let (line, msg) = error("\n[log]\nmax-size = \"17179869184g\"\n");
        assert_eq!(line, Some(3));
        assert!(msg.starts_with("log.max-size: "), "{msg}");
        let (_, msg) = error("[log]\nmax-files = 0\n");
        assert!(msg.starts_with("log.max-files: "), "{msg}");
        let (_, msg) = error("[log]\nmax-files = \"five\"\n");
        assert!(msg.starts_with("log.max-files: "), "{msg}");
        let (_, msg) = error("root = \"run/berth\"\n");
        assert!(
            msg.starts_with("root: run/berth is not an absolute path"),
            "{msg}"
        );
        let (_, msg) = error("runtime = \"bin/runc\"\n");
        assert!(msg.starts_with("runtime: "), "{msg}");
        let (_, msg) = error("[network]\nsubnet = \"10.42.0.0/31\"\n");
        assert!(msg.starts_with("network.subnet: "), "{msg}");
        let (_, msg) = error("[network]\nbridge = \"a-name-far-too-long\"\n");
        assert!(msg.starts_with("network.bridge: "), "{msg}");
        let (line, msg) = error("root = \n");
        assert_eq!(line, Some(1));
        assert!(!msg.contains('\n'), "{msg}");
        for (_, msg) in [error("[log]\nmax-files = \"five\"\n"), error("x = [\n")] {
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
