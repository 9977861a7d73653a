//! Hashing of single files and in-memory buffers.

use super::{Algorithm, Hasher};
use crate::error::{CoreError, CoreResult};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Files at least this large are memory-mapped; smaller ones are read through one buffer,
/// which is cheaper than setting up and tearing down a mapping.
const MMAP_MIN_BYTES: u64 = 1 << 20;
const READ_BUFFER_BYTES: usize = 1 << 16;

/// Digest of an in-memory buffer.
pub fn digest_bytes(data: &[u8], alg: Algorithm) -> String {
    let mut hasher = Hasher::new(alg);
    hasher.update(data);
    hasher.finish()
}

/// Digest of the regular file at `path` (symbolic links to regular files are followed).
///
/// Errors: `NotFound` for a missing path, `InvalidArgument` for a directory or special file,
/// `Io` for a file that cannot be read.
pub fn digest_file(path: &Path, alg: Algorithm) -> CoreResult<String> {
    let meta = std::fs::metadata(path).map_err(|e| CoreError::io(path, e))?;
    if meta.is_dir() {
        return Err(CoreError::invalid(format!(
            "{} is a directory: use digest_tree to hash a directory",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(CoreError::invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    digest_open_file(&mut file, meta.len(), alg).map_err(|e| CoreError::io(path, e))
}

/// Digest of an open file whose length is `len`: memory-mapped when large, read otherwise.
///
/// BLAKE3 runs on one thread here: on the 2-core machines this was measured on, its rayon mode
/// was slower than one thread (see benchmarks/bench_hashing.py), and trees hash their files in
/// parallel instead.
pub fn digest_open_file(file: &mut File, len: u64, alg: Algorithm) -> std::io::Result<String> {
    let mut hasher = Hasher::new(alg);
    if len >= MMAP_MIN_BYTES {
        // SAFETY: the mapping is read-only and dropped before returning. A concurrent writer
        // truncating the file could fault the read; artifacts are hashed before they are
        // handed to anyone, and the registry hashes its own private temporary copies.
        let map = unsafe { memmap2::Mmap::map(&*file)? };
        #[cfg(unix)]
        map.advise(memmap2::Advice::Sequential)?;
        hasher.update(&map);
    } else {
        let mut buf = vec![0u8; READ_BUFFER_BYTES.min(len as usize + 1).max(1)];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(
            digest_bytes(b"", Algorithm::Sha256),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            digest_bytes(b"abc", Algorithm::Sha256),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn blake3_known_vector_of_empty_input() {
        assert_eq!(
            digest_bytes(b"", Algorithm::Blake3),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn file_and_bytes_agree_across_the_mmap_threshold() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0usize,
            1,
            65_537,
            MMAP_MIN_BYTES as usize,
            MMAP_MIN_BYTES as usize + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            File::create(&path).unwrap().write_all(&data).unwrap();
            for alg in Algorithm::ALL {
                assert_eq!(digest_file(&path, alg).unwrap(), digest_bytes(&data, alg));
            }
        }
    }

    #[test]
    fn refuses_missing_paths_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            digest_file(&missing, Algorithm::Blake3),
            Err(CoreError::NotFound(_))
        ));
        let err = digest_file(dir.path(), Algorithm::Blake3).unwrap_err();
        assert!(matches!(err, CoreError::InvalidArgument(_)));
        assert!(err.to_string().contains("is a directory"));
    }
}
