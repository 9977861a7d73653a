//! Content hashing of model artifacts: single files, in-memory buffers and whole directory trees.
//!
//! Digests are written `"<algorithm>:<lowercase hex>"` (e.g. `blake3:af13...`), the form the
//! registry uses for its content-addressed blob names and edge bundles use in their manifests.

mod file;
mod tree;

pub use file::{digest_bytes, digest_file, digest_open_file};
pub(crate) use tree::walk;
pub use tree::{digest_tree, manifest_digest, verify_tree, FileEntry, TreeDigest, VerifyReport};

use crate::error::{CoreError, CoreResult};
use std::fmt;
use std::str::FromStr;

/// A supported hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Blake3,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Blake3, Algorithm::Sha256];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Blake3 => "blake3",
            Algorithm::Sha256 => "sha256",
        }
    }

    /// The algorithm a `"<algorithm>:<hex>"` digest was made with.
    pub fn of_digest(digest: &str) -> CoreResult<Algorithm> {
        let (name, hex) = digest.split_once(':').ok_or_else(|| {
            CoreError::invalid(format!(
                "malformed digest {digest:?}: expected '<algorithm>:<hex>'"
            ))
        })?;
        let alg: Algorithm = name.parse()?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(CoreError::invalid(format!(
                "malformed digest {digest:?}: expected 64 lowercase hex digits after '{name}:'"
            )));
        }
        Ok(alg)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = CoreError;

    fn from_str(s: &str) -> CoreResult<Self> {
        match s {
            "blake3" => Ok(Algorithm::Blake3),
            "sha256" => Ok(Algorithm::Sha256),
            other => Err(CoreError::invalid(format!(
                "unknown hash algorithm '{other}': expected one of 'blake3', 'sha256'"
            ))),
        }
    }
}

/// An incremental hasher for either algorithm.
pub enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            Algorithm::Sha256 => Hasher::Sha256(<sha2::Sha256 as sha2::Digest>::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Sha256(h) => sha2::Digest::update(h, data),
        }
    }

    /// The digest in `"<algorithm>:<hex>"` form.
    pub fn finish(self) -> String {
        match self {
            Hasher::Blake3(h) => format!("blake3:{}", h.finalize().to_hex()),
            Hasher::Sha256(h) => format!("sha256:{}", to_hex(&sha2::Digest::finalize(h))),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_algorithms_and_refuses_unknown() {
        assert_eq!("blake3".parse::<Algorithm>().unwrap(), Algorithm::Blake3);
        assert_eq!("sha256".parse::<Algorithm>().unwrap(), Algorithm::Sha256);
        let err = "md5".parse::<Algorithm>().unwrap_err().to_string();
        assert!(err.contains("'md5'"), "{err}");
    }

    #[test]
    fn reads_the_algorithm_of_a_digest() {
        let d = digest_bytes(b"abc", Algorithm::Sha256);
        assert_eq!(Algorithm::of_digest(&d).unwrap(), Algorithm::Sha256);
        assert!(Algorithm::of_digest("sha256:abc").is_err());
        assert!(Algorithm::of_digest("nothing").is_err());
    }
}
