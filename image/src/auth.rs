//! Registry credentials (`berth login`): `<data-root>/auth.json`, mode
//! 0600, written atomically. One entry per registry host.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Credential>,
}

/// A user name and password for one registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

fn path(data_root: &Path) -> PathBuf {
    data_root.join("auth.json")
}

fn read(data_root: &Path) -> Result<AuthFile> {
    let p = path(data_root);
    match std::fs::read(&p) {
        Ok(data) => crate::model::parse_json(&p.display().to_string(), &data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(Error::io("read", &p, e)),
    }
}

/// The stored credential for `registry` (host[:port]).
pub fn lookup(data_root: &Path, registry: &str) -> Result<Option<Credential>> {
    Ok(read(data_root)?.auths.remove(registry))
}

/// Stores (or with `None` removes) the credential for `registry`.
pub fn store(data_root: &Path, registry: &str, cred: Option<Credential>) -> Result<()> {
    std::fs::create_dir_all(data_root).map_err(|e| Error::io("create", data_root, e))?;
    let mut file = read(data_root)?;
    match cred {
        Some(c) => {
            file.auths.insert(registry.to_string(), c);
        }
        None => {
            file.auths.remove(registry);
        }
    }
    let p = path(data_root);
    let data = serde_json::to_vec_pretty(&file).map_err(|e| Error::Other(e.to_string()))?;
    // Staged with 0600 from the start: the secret is never readable by others.
    let tmp = p.with_extension("json.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
    }
    std::fs::rename(&tmp, &p).map_err(|e| Error::io("rename", &tmp, e))?;
    runtime_core::atomic::sync_dir(data_root).map_err(|e| Error::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credential {
            username: "u".into(),
            password: "p".into(),
        };
        store(dir.path(), "127.0.0.1:5000", Some(c.clone())).unwrap();
        let mode = std::fs::metadata(dir.path().join("auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(lookup(dir.path(), "127.0.0.1:5000").unwrap(), Some(c));
        store(dir.path(), "127.0.0.1:5000", None).unwrap();
        assert_eq!(lookup(dir.path(), "127.0.0.1:5000").unwrap(), None);
    }
}
