//! Hashing of directory trees into a digest plus a per-file manifest.
//!
//! The tree digest is the digest (same algorithm) of a canonical encoding of the manifest,
//! entries sorted by path bytes, each written as
//! `u64-le(len(path)) path u64-le(size) u64-le(len(digest)) digest`.
//! It therefore depends only on relative paths and file contents: not on listing order,
//! modification times or where the tree lives. Empty directories hold no files and do not
//! appear in the manifest. Symbolic links and special files are refused, since a manifest that
//! followed or skipped them would not describe what a reader of the tree gets.

use super::{digest_open_file, Algorithm, Hasher};
use crate::error::{CoreError, CoreResult};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One regular file of a tree: path relative to the root (POSIX separators), size, digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub digest: String,
}

/// The digest of a tree and its manifest, sorted by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDigest {
    pub digest: String,
    pub manifest: Vec<FileEntry>,
}

/// How a tree differs from a manifest. Paths are relative, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    pub changed: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.changed.is_empty()
    }
}

pub(crate) struct Found {
    pub(crate) rel: String,
    pub(crate) abs: PathBuf,
    pub(crate) size: u64,
}

/// Every regular file under `root`, refusing links and special files.
pub(crate) fn walk(root: &Path) -> CoreResult<Vec<Found>> {
    let meta = std::fs::metadata(root).map_err(|e| CoreError::io(root, e))?;
    if !meta.is_dir() {
        return Err(CoreError::invalid(format!(
            "{} is not a directory: use digest_file to hash a single file",
            root.display()
        )));
    }
    let mut found = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| CoreError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| CoreError::io(&dir, e))?;
            let abs = entry.path();
            let name = entry.file_name().into_string().map_err(|_| {
                CoreError::invalid(format!("{}: file name is not valid UTF-8", abs.display()))
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ft = entry.file_type().map_err(|e| CoreError::io(&abs, e))?;
            if ft.is_symlink() {
                return Err(CoreError::invalid(format!(
                    "{}: symbolic links are not allowed in a model tree",
                    abs.display()
                )));
            } else if ft.is_dir() {
                pending.push((abs, rel));
            } else if ft.is_file() {
                let size = entry.metadata().map_err(|e| CoreError::io(&abs, e))?.len();
                found.push(Found { rel, abs, size });
            } else {
                return Err(CoreError::invalid(format!(
                    "{}: special files (devices, sockets, pipes) are not allowed in a model tree",
                    abs.display()
                )));
            }
        }
    }
    found.sort_unstable_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(found)
}

fn hash_found(f: &Found, alg: Algorithm) -> CoreResult<String> {
    let mut file = File::open(&f.abs).map_err(|e| CoreError::io(&f.abs, e))?;
    digest_open_file(&mut file, &f.abs, alg)
}

/// The tree digest of a manifest already sorted by path (see the module docs for the encoding).
pub fn manifest_digest(manifest: &[FileEntry], alg: Algorithm) -> String {
    let mut hasher = Hasher::new(alg);
    for e in manifest {
        hasher.update(&(e.path.len() as u64).to_le_bytes());
        hasher.update(e.path.as_bytes());
        hasher.update(&e.size.to_le_bytes());
        hasher.update(&(e.digest.len() as u64).to_le_bytes());
        hasher.update(e.digest.as_bytes());
    }
    hasher.finish()
}

/// Digest and manifest of the directory at `root`; files are hashed in parallel.
pub fn digest_tree(root: &Path, alg: Algorithm) -> CoreResult<TreeDigest> {
    let found = walk(root)?;
    let manifest = found
        .par_iter()
        .map(|f| {
            Ok(FileEntry {
                path: f.rel.clone(),
                size: f.size,
                digest: hash_found(f, alg)?,
            })
        })
        .collect::<CoreResult<Vec<_>>>()?;
    Ok(TreeDigest {
        digest: manifest_digest(&manifest, alg),
        manifest,
    })
}

/// Compare the tree at `root` with `manifest`: files missing, unexpected, or changed (size or
/// digest). Each expected file is hashed with the algorithm of its own recorded digest.
pub fn verify_tree(root: &Path, manifest: &[FileEntry]) -> CoreResult<VerifyReport> {
    let mut expected: BTreeMap<&str, &FileEntry> = BTreeMap::new();
    for e in manifest {
        Algorithm::of_digest(&e.digest)?;
        if expected.insert(e.path.as_str(), e).is_some() {
            return Err(CoreError::invalid(format!(
                "manifest lists {:?} twice",
                e.path
            )));
        }
    }
    let found = walk(root)?;
    let mut report = VerifyReport::default();
    let mut to_hash = Vec::new();
    for f in &found {
        match expected.remove(f.rel.as_str()) {
            None => report.unexpected.push(f.rel.clone()),
            Some(e) if e.size != f.size => report.changed.push(f.rel.clone()),
            Some(e) => to_hash.push((f, e)),
        }
    }
    report.missing = expected.keys().map(|p| p.to_string()).collect();
    let changed = to_hash
        .par_iter()
        .map(|(f, e)| {
            let alg = Algorithm::of_digest(&e.digest)?;
            Ok((hash_found(f, alg)? != e.digest).then(|| f.rel.clone()))
        })
        .collect::<CoreResult<Vec<_>>>()?;
    report.changed.extend(changed.into_iter().flatten());
    report.changed.sort_unstable();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn sample(root: &Path, order: &[&str]) {
        for rel in order {
            write(root, rel, rel.as_bytes());
        }
    }

    #[test]
    fn digest_ignores_creation_order_and_location() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path(), &["x.onnx", "sub/y.json", "sub/deeper/z"]);
        sample(b.path(), &["sub/deeper/z", "x.onnx", "sub/y.json"]);
        let da = digest_tree(a.path(), Algorithm::Blake3).unwrap();
        let db = digest_tree(b.path(), Algorithm::Blake3).unwrap();
        assert_eq!(da, db);
        let paths: Vec<_> = da.manifest.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["sub/deeper/z", "sub/y.json", "x.onnx"]);
    }

    #[test]
    fn digest_changes_with_content_names_and_empty_files() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path(), &["a", "b/c"]);
        let base = digest_tree(d.path(), Algorithm::Sha256).unwrap().digest;
        write(d.path(), "empty", b"");
        let with_empty = digest_tree(d.path(), Algorithm::Sha256).unwrap().digest;
        assert_ne!(base, with_empty);
        fs::remove_file(d.path().join("empty")).unwrap();
        assert_eq!(
            digest_tree(d.path(), Algorithm::Sha256).unwrap().digest,
            base
        );
        fs::rename(d.path().join("a"), d.path().join("a2")).unwrap();
        assert_ne!(
            digest_tree(d.path(), Algorithm::Sha256).unwrap().digest,
            base
        );
    }

    #[test]
    fn refuses_symlinks_and_files() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path(), &["a"]);
        assert!(matches!(
            digest_tree(&d.path().join("a"), Algorithm::Blake3),
            Err(CoreError::InvalidArgument(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.path().join("a"), d.path().join("link")).unwrap();
            let err = digest_tree(d.path(), Algorithm::Blake3)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("link") && err.contains("symbolic link"),
                "{err}"
            );
        }
    }

    #[test]
    fn verify_reports_missing_unexpected_and_changed() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path(), &["keep", "gone", "edit"]);
        let t = digest_tree(d.path(), Algorithm::Blake3).unwrap();
        assert!(verify_tree(d.path(), &t.manifest).unwrap().is_ok());
        fs::remove_file(d.path().join("gone")).unwrap();
        write(d.path(), "edit", b"tide");
        write(d.path(), "new", b"");
        let r = verify_tree(d.path(), &t.manifest).unwrap();
        assert_eq!(r.missing, ["gone"]);
        assert_eq!(r.unexpected, ["new"]);
        assert_eq!(r.changed, ["edit"]);
    }
}
