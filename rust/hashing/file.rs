//! Hashing of single files and in-memory buffers.
//!
//! Files are read, never memory-mapped: a mapped file that another process truncates faults
//! the reader with SIGBUS and kills it, and servekit hashes files users can still write (in
//! `servekit hash`, `registry verify` and serving processes). A file that changes while it is
//! read (its size, modification or change time moves, or it ends early or late) gives
//! [`CoreError::Integrity`], not a digest of a mixture of two contents.

use super::{Algorithm, Hasher};
use crate::error::{CoreError, CoreResult};
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// One read buffer per file: large enough that hashing, not system calls, dominates; small
/// enough to stay in the CPU cache between the read and the hash.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Digest of an in-memory buffer.
pub fn digest_bytes(data: &[u8], alg: Algorithm) -> String {
    let mut hasher = Hasher::new(alg);
    hasher.update(data);
    hasher.finish()
}

/// Digest of the regular file at `path` (symbolic links to regular files are followed).
///
/// Errors: `NotFound` for a missing path, `InvalidArgument` for a directory or special file,
/// `Integrity` for a file that changed while it was read, `Io` for one that cannot be read.
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
    digest_open_file(&mut file, path, alg)
}

/// What identifies one state of a file's contents: a writer changes at least one of these.
#[derive(PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

fn changed(path: &Path) -> CoreError {
    CoreError::Integrity(format!(
        "{} changed while it was being hashed: hash it again once nothing writes to it",
        path.display()
    ))
}

/// Digest of an open regular file, read to its end; `path` names it in errors.
///
/// The file's size and times are taken before and after reading; if they differ, or the read
/// ends before or after the size taken first, the result is `Integrity`. BLAKE3 runs on one
/// thread here: on the 2-core machines this was measured on, its rayon mode was slower than
/// one thread (see benchmarks/bench_hashing.py), and trees hash their files in parallel instead.
pub fn digest_open_file(file: &mut File, path: &Path, alg: Algorithm) -> CoreResult<String> {
    let before = Stamp::of(&file.metadata().map_err(|e| CoreError::io(path, e))?);
    digest_stamped(file, path, before, alg)
}

fn digest_stamped(
    file: &mut File,
    path: &Path,
    before: Stamp,
    alg: Algorithm,
) -> CoreResult<String> {
    let io = |e| CoreError::io(path, e);
    let mut hasher = Hasher::new(alg);
    // One byte more than the expected size (capped) so that growth shows up as a longer read.
    let expected = usize::try_from(before.len).unwrap_or(usize::MAX);
    let cap = READ_BUFFER_BYTES.min(expected.saturating_add(1));
    let mut buf = vec![0u8; cap.max(1)];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        total += n as u64;
        if total > before.len {
            return Err(changed(path));
        }
        hasher.update(&buf[..n]);
    }
    let after = Stamp::of(&file.metadata().map_err(io)?);
    if total != before.len || after != before {
        return Err(changed(path));
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
    fn file_and_bytes_agree_across_the_read_buffer_size() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 65_537, READ_BUFFER_BYTES, READ_BUFFER_BYTES + 7] {
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

    #[test]
    fn a_file_truncated_while_hashed_gives_a_digest_of_one_state_or_integrity() {
        // The short state is a prefix of the long one, so a read of the full length can only
        // see the long state's bytes. `fs::write` truncates to zero first, so the empty file
        // is a third state a reader may see: any other digest is a wrong one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("racy");
        let long: Vec<u8> = (0..3 * READ_BUFFER_BYTES)
            .map(|i| (i % 251) as u8)
            .collect();
        let short = long[..READ_BUFFER_BYTES / 2].to_vec();
        std::fs::write(&path, &long).unwrap();
        let good = [
            digest_bytes(&long, Algorithm::Blake3),
            digest_bytes(&short, Algorithm::Blake3),
            digest_bytes(b"", Algorithm::Blake3),
        ];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Rewrite in place (truncate, then write): readers keep the same inode.
                    std::fs::write(&path, if i.is_multiple_of(2) { &short } else { &long })
                        .unwrap();
                    i += 1;
                }
            })
        };
        for _ in 0..200 {
            match digest_file(&path, Algorithm::Blake3) {
                Ok(d) => assert!(good.contains(&d), "digest of no state of the file: {d}"),
                Err(CoreError::Integrity(msg)) => assert!(msg.contains("changed while"), "{msg}"),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn a_file_that_grew_after_its_size_was_taken_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grows");
        std::fs::write(&path, b"abc").unwrap();
        let mut file = File::open(&path).unwrap();
        let before = Stamp::of(&file.metadata().unwrap());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"def")
            .unwrap();
        let err = digest_stamped(&mut file, &path, before, Algorithm::Sha256).unwrap_err();
        assert!(matches!(err, CoreError::Integrity(_)), "{err}");
    }
}
