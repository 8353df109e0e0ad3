//! sha256 digests: parsing, and a reader that hashes and counts what
//! passes through it, so a blob is verified while it streams.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// A validated `sha256:<64 hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string. Only sha256 is accepted: the
    /// hex part becomes a file name, so it must be exactly 64 hex digits.
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::InvalidDigest(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidDigest(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }
    /// The digest of some bytes.
    pub fn of(data: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex(&Sha256::digest(data))))
    }
    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, as Docker shows IDs.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }
    /// Checks `data` against this digest (and `size` when known).
    pub fn verify(&self, what: &str, data: &[u8], size: Option<u64>) -> Result<()> {
        if let Some(size) = size {
            if size != data.len() as u64 {
                return Err(Error::SizeMismatch {
                    what: what.to_string(),
                    expected: size,
                    actual: data.len() as u64,
                });
            }
        }
        let actual = Digest::of(data);
        if &actual != self {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: self.0.clone(),
                actual: actual.0,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A reader that hashes and counts every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Reads the rest to EOF (a tar's trailing padding, gzip's trailer),
    /// then returns the digest and byte count of everything read.
    pub fn finish(&mut self) -> std::io::Result<(Digest, u64)> {
        std::io::copy(self, &mut std::io::sink())?;
        Ok((
            Digest(format!("sha256:{}", hex(&self.hasher.clone().finalize()))),
            self.count,
        ))
    }
    /// The wrapped reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<R> HashingReader<R> {
    /// The wrapped reader (what was hashed stays hashed).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        for bad in ["sha256:../../etc", "md5:abc", "sha256:E3B0", ""] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let err = d.verify("blob", b"x", None).unwrap_err().to_string();
        assert!(err.contains("digest mismatch for blob"), "{err}");
    }

    #[test]
    fn hashing_reader_counts_to_eof() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(d, Digest::of(b"hello world"));
    }
}
