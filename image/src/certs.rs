//! Extra CA certificates per registry, laid out as Docker's
//! `/etc/docker/certs.d`: `<data-root>/certs.d/<host[:port]>/*.crt`, PEM.
//! A registry with a private CA is then spoken to over verified TLS by
//! `pull` and `login`, instead of plain HTTP.

use std::path::Path;

use crate::{Error, Result};

/// The PEM files for `registry` (host[:port]), in name order; none when
/// the directory does not exist.
pub fn for_registry(data_root: &Path, registry: &str) -> Result<Vec<Vec<u8>>> {
    // The name becomes a path component: a plain host[:port] only.
    if registry.is_empty() || registry.contains('/') || registry.starts_with('.') {
        return Ok(Vec::new());
    }
    let dir = data_root.join("certs.d").join(registry);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| Error::io("read", p, e)))
        .collect()
}
