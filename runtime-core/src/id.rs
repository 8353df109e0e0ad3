//! Container IDs and names.
//!
//! An ID or name becomes a directory name and a runc container ID, so it must
//! never contain a path separator, never be `.`/`..`, and stay short. Socket
//! paths do not depend on its length (see `sockpath`), but 64 characters is
//! what runc, Docker and Kubernetes users expect as a ceiling.

use crate::{Error, Result};

/// Longest ID or name accepted.
pub const MAX_LEN: usize = 64;

/// Checks a user-chosen name or ID: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn validate(what: &'static str, value: &str) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidId {
            what,
            value: value.chars().take(80).collect(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("must not be empty");
    }
    if value.len() > MAX_LEN {
        return fail("longer than 64 characters");
    }
    let mut chars = value.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return fail("must start with a letter or digit");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return fail("may contain only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// A fresh random ID: 16 hex digits from the kernel's CSPRNG.
pub fn generate() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["web", "a", "Web-1.2_x", &"a".repeat(64), "0abc"] {
            validate("name", ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let cases = [
            ("", "must not be empty"),
            ("../x", "must start with a letter or digit"),
            (".hidden", "must start with a letter or digit"),
            ("a/b", "may contain only"),
            ("a b", "may contain only"),
            ("ä", "must start with"),
        ];
        for (bad, why) in cases {
            let err = validate("name", bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = "x".repeat(300);
        let err = validate("name", &long).unwrap_err().to_string();
        assert!(err.contains("longer than 64"), "{err}");
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 16);
        validate("id", &a).unwrap();
        assert_ne!(a, b);
    }
}
