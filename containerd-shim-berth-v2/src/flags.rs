//! The command line containerd gives a runtime v2 shim, parsed as Go's
//! `flag` package reads it: `-name value`, `-name=value`, `--name`, boolean
//! flags alone, then the verb (`start`, `delete`).

/// What containerd passes to `start` and `delete`.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub namespace: String,
    /// containerd's gRPC address.
    pub address: String,
    pub publish_binary: String,
    pub id: String,
    pub bundle: Option<String>,
    pub debug: bool,
    pub version: bool,
    pub verb: Option<String>,
}

/// A flag this shim does not know, or one missing its value.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: {0}")]
    Unknown(String),
    #[error("flag needs an argument: {0}")]
    MissingValue(String),
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Flags, FlagError> {
        let mut f = Flags::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(stripped) = arg.strip_prefix('-') else {
                f.verb = Some(arg.clone());
                break;
            };
            let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (stripped, None),
            };
            match name {
                "debug" => f.debug = inline.as_deref() != Some("false"),
                "v" | "version" => f.version = true,
                "namespace" | "address" | "publish-binary" | "id" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or_else(|| FlagError::MissingValue(format!("-{name}")))?,
                    };
                    match name {
                        "namespace" => f.namespace = value,
                        "address" => f.address = value,
                        "publish-binary" => f.publish_binary = value,
                        "id" => f.id = value,
                        "bundle" => f.bundle = Some(value),
                        _ => {}
                    }
                }
                other => return Err(FlagError::Unknown(format!("-{other}"))),
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_containerds_start_line() {
        let f = Flags::parse(&args(
            "-namespace default -address /run/c.sock -publish-binary /usr/bin/containerd -id c1 -debug start",
        ))
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/c.sock");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.verb.as_deref(), Some("start"));
        let f = Flags::parse(&args("--id=x -bundle=/b delete")).unwrap();
        assert_eq!((f.id.as_str(), f.bundle.as_deref()), ("x", Some("/b")));
    }

    #[test]
    fn unknown_and_missing_values_are_named() {
        let e = Flags::parse(&args("-nope start")).unwrap_err().to_string();
        assert_eq!(e, "flag provided but not defined: -nope");
        let e = Flags::parse(&args("-id")).unwrap_err().to_string();
        assert_eq!(e, "flag needs an argument: -id");
    }
}
