//! Image references as Docker spells them: `[domain[:port]/]path[:tag][@digest]`,
//! normalized (`busybox` is `docker.io/library/busybox:latest`).

use crate::digest::Digest;
use crate::{Error, Result};

/// Docker Hub's canonical domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed, normalized reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, ...
    pub domain: String,
    /// `library/busybox`, `team/app`, ...
    pub path: String,
    /// Defaults to `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn bad(name: &str, reason: &'static str) -> Error {
    Error::InvalidReference {
        name: name.chars().take(256).collect(),
        reason,
    }
}

/// One path component: lowercase letters and digits, separated by `.`,
/// `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parses a user's image name.
    pub fn parse(name: &str) -> Result<Reference> {
        if name.is_empty() {
            return Err(bad(name, "empty"));
        }
        if name.len() > 512 {
            return Err(bad(name, "longer than 512 characters"));
        }
        let (rest, digest) = match name.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad(name, "the digest is not sha256:<64 hex>"))?),
            ),
            None => (name, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    name,
                    "the tag may hold only letters, digits, '_', '.' and '-' (up to 128)",
                ));
            }
        }
        let (domain, path) = match repo.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), repo.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(bad(name, "the registry host is not a valid host[:port]"));
        }
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(bad(
                name,
                "the repository may hold only lowercase letters, digits and separators ('.', '_', '-', '/')",
            ));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, the repository as stored.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as Docker shows it (`busybox`, `team/app`,
    /// `127.0.0.1:5000/app`).
    pub fn familiar_repository(&self) -> String {
        familiar(&self.repository())
    }
}

/// Shortens a stored repository the way Docker shows it.
pub fn familiar(repository: &str) -> String {
    match repository.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
        None => repository.to_string(),
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_repository(), "busybox");
        let r = Reference::parse("127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.path, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(r.to_string(), "localhost/app:latest");
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("app@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(d));
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "",
            "Busybox",
            "bus box",
            "app:",
            "app:-x",
            "../etc",
            "a//b",
            "app@sha256:zz",
            "host:99999999/app",
            "app:tag/x",
        ] {
            let e = Reference::parse(n);
            assert!(e.is_err(), "{n:?} parsed as {e:?}");
        }
        let err = Reference::parse("UPPER").unwrap_err().to_string();
        assert!(err.contains("invalid image name \"UPPER\""), "{err}");
    }
}
