//! The content-addressed artifact store under a registry root.
//!
//! Layout:
//! - `blobs/<algorithm>/<hex>`: a single-file artifact.
//! - `trees/<algorithm>/<hex>/`: a directory artifact, its files under their original relative
//!   names; `<hex>` is the tree digest of its manifest (see `crate::hashing::manifest_digest`).
//! - `tmp/<id>.lock` and `tmp/<id>.data`: an artifact being staged by a live writer.
//!
//! Stored files are read-only. An artifact is staged by copying it into `tmp/` while hashing
//! it, then (inside the index's write transaction, so that `gc` cannot interleave) renamed to
//! its content address. A writer holds an exclusive advisory lock on its `.lock` file for as long
//! as its `.data` exists; `gc` removes only staging files whose lock it can take, i.e. those of
//! writers that died.

use crate::error::{CoreError, CoreResult};
use crate::hashing::{self, Algorithm, FileEntry, Hasher};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Whether an artifact is one file or a directory tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Directory => "directory",
        }
    }

    pub fn parse(name: &str) -> CoreResult<Kind> {
        match name {
            "file" => Ok(Kind::File),
            "directory" => Ok(Kind::Directory),
            other => Err(CoreError::Integrity(format!(
                "index records unknown artifact kind {other:?}"
            ))),
        }
    }
}

/// An artifact copied into `tmp/` and hashed, not yet at its content address. Dropping it
/// removes the staging files.
pub struct Staged {
    pub kind: Kind,
    pub digest: String,
    pub manifest: Vec<FileEntry>,
    pub size: u64,
    data: PathBuf,
    lock_path: PathBuf,
    // Held (locked) until drop; closing it releases the lock.
    _lock: File,
    synced: bool,
    placed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Data first, then the lock: a `.data` without its `.lock` is never live.
        if !self.placed {
            let _ = remove_any(&self.data);
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// A stored artifact found on disk.
pub struct OnDisk {
    pub kind: Kind,
    pub digest: String,
    pub path: PathBuf,
}

pub struct Store {
    root: PathBuf,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |e| CoreError::io(path, e)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn fsync_dir(path: &Path) -> CoreResult<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_at(path))
}

#[cfg(unix)]
fn make_read_only(file: &File, path: &Path) -> CoreResult<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(io_at(path))
}

#[cfg(not(unix))]
fn make_read_only(file: &File, path: &Path) -> CoreResult<()> {
    let mut perms = file.metadata().map_err(io_at(path))?.permissions();
    perms.set_readonly(true);
    file.set_permissions(perms).map_err(io_at(path))
}

/// Ask the kernel to start writing `len` bytes at `offset` back to disk now, without waiting,
/// so that the fsync before the artifact is placed finds most of it already written (it
/// overlaps disk writes with copying and hashing). Only a hint: errors surface at the fsync.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Copy `src` to the new file `dst` while hashing the bytes written; returns (digest, size).
/// The copy is made read-only and, when `sync`, flushed to disk.
fn copy_hashing(src: &Path, dst: &Path, alg: Algorithm, sync: bool) -> CoreResult<(String, u64)> {
    let mut input = File::open(src).map_err(io_at(src))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_at(dst))?;
    let mut hasher = Hasher::new(alg);
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CoreError::io(src, e)),
        };
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io_at(dst))?;
        start_writeback(&output, size, n as u64);
        size += n as u64;
    }
    make_read_only(&output, dst)?;
    if sync {
        output.sync_all().map_err(io_at(dst))?;
    }
    Ok((hasher.finish(), size))
}

impl Store {
    /// The store under `root`, creating its directories.
    pub fn open(root: &Path) -> CoreResult<Store> {
        for sub in ["blobs", "trees", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the artifact `digest` of `kind` lives (whether or not it is there).
    pub fn path_of(&self, kind: Kind, digest: &str) -> CoreResult<PathBuf> {
        let alg = Algorithm::of_digest(digest)?;
        let hex = &digest[alg.name().len() + 1..];
        let top = match kind {
            Kind::File => "blobs",
            Kind::Directory => "trees",
        };
        Ok(self.root.join(top).join(alg.name()).join(hex))
    }

    /// Create and lock a fresh `tmp/<id>.lock`; returns (lock file, lock path, data path).
    fn new_staging(&self) -> CoreResult<(File, PathBuf, PathBuf)> {
        let tmp = self.tmp();
        fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
            let id = format!("{}-{nanos:x}-{n}", std::process::id());
            let lock_path = tmp.join(format!("{id}.lock"));
            let lock = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CoreError::io(&lock_path, e)),
            };
            lock.lock().map_err(io_at(&lock_path))?;
            // A `gc` may have taken the lock between create and lock and removed the file;
            // then this lock guards nothing and a new name is needed.
            if same_file(&lock, &lock_path) {
                return Ok((lock, lock_path, tmp.join(format!("{id}.data"))));
            }
        }
    }

    /// Copy the file or directory at `src` into staging while hashing it with `alg`.
    /// Errors: `NotFound` for a missing path, `InvalidArgument` for special files or links
    /// inside a tree, `Io` for read or write failures.
    pub fn stage(&self, src: &Path, alg: Algorithm) -> CoreResult<Staged> {
        let meta = fs::metadata(src).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                CoreError::not_found(format!("artifact path {} does not exist", src.display()))
            }
            _ => CoreError::io(src, e),
        })?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(CoreError::invalid(format!(
                "artifact path {} is neither a regular file nor a directory",
                src.display()
            )));
        }
        let (lock, lock_path, data) = self.new_staging()?;
        let mut staged = Staged {
            kind: Kind::File,
            digest: String::new(),
            manifest: Vec::new(),
            size: 0,
            data,
            lock_path,
            _lock: lock,
            synced: false,
            placed: false,
        };
        if meta.is_file() {
            let (digest, size) = copy_hashing(src, &staged.data, alg, false)?;
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "artifact".to_string());
            staged.manifest = vec![FileEntry {
                path: name,
                size,
                digest: digest.clone(),
            }];
            staged.digest = digest;
            staged.size = size;
        } else {
            staged.kind = Kind::Directory;
            let found = hashing::walk(src)?;
            fs::create_dir(&staged.data).map_err(io_at(&staged.data))?;
            for f in &found {
                let dst = staged.data.join(&f.rel);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).map_err(io_at(parent))?;
                }
                let (digest, size) = copy_hashing(&f.abs, &dst, alg, false)?;
                staged.size += size;
                staged.manifest.push(FileEntry {
                    path: f.rel.clone(),
                    size,
                    digest,
                });
            }
            staged.digest = hashing::manifest_digest(&staged.manifest, alg);
        }
        Ok(staged)
    }

    /// Flush a staged artifact's files and directories to disk (before it is renamed, so that
    /// a crash can never leave a content address naming partial content).
    pub fn sync(&self, staged: &mut Staged) -> CoreResult<()> {
        if staged.synced {
            return Ok(());
        }
        match staged.kind {
            Kind::File => {
                File::open(&staged.data)
                    .and_then(|f| f.sync_all())
                    .map_err(io_at(&staged.data))?;
            }
            Kind::Directory => {
                let mut dirs = vec![staged.data.clone()];
                for e in &staged.manifest {
                    let p = staged.data.join(&e.path);
                    File::open(&p)
                        .and_then(|f| f.sync_all())
                        .map_err(io_at(&p))?;
                    if let Some(parent) = p.parent() {
                        if !dirs.iter().any(|d| d == parent) {
                            dirs.push(parent.to_path_buf());
                        }
                    }
                }
                for d in dirs {
                    fsync_dir(&d)?;
                }
            }
        }
        staged.synced = true;
        Ok(())
    }

    /// Whether the artifact is already at its content address.
    pub fn exists(&self, kind: Kind, digest: &str) -> CoreResult<bool> {
        Ok(self.path_of(kind, digest)?.exists())
    }

    /// Move a staged artifact to its content address, or drop it when identical content is
    /// already there. Must run inside the index's write transaction (see the module docs).
    pub fn place(&self, staged: &mut Staged) -> CoreResult<()> {
        let dst = self.path_of(staged.kind, &staged.digest)?;
        if dst.exists() {
            return Ok(());
        }
        self.sync(staged)?;
        let parent = dst
            .parent()
            .ok_or_else(|| CoreError::invalid("content address has no parent directory"))?;
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        match fs::rename(&staged.data, &dst) {
            Ok(()) => {}
            // A directory rename onto an existing non-empty directory fails: same content.
            Err(_) if dst.exists() => return Ok(()),
            Err(e) => return Err(CoreError::io(&dst, e)),
        }
        staged.placed = true;
        fsync_dir(parent)
    }

    /// Problems of the stored artifact compared with its record; empty when intact.
    pub fn check(
        &self,
        kind: Kind,
        digest: &str,
        manifest: &[FileEntry],
    ) -> CoreResult<Vec<String>> {
        let path = self.path_of(kind, digest)?;
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(vec![format!("artifact {} is missing", path.display())]);
            }
            Err(e) => return Err(CoreError::io(&path, e)),
        };
        match kind {
            Kind::File => {
                if !meta.is_file() {
                    return Ok(vec![format!("{} is not a regular file", path.display())]);
                }
                let alg = Algorithm::of_digest(digest)?;
                let actual = hashing::digest_file(&path, alg)?;
                Ok(if actual == digest {
                    Vec::new()
                } else {
                    vec![format!("{} has digest {actual}", path.display())]
                })
            }
            Kind::Directory => {
                if !meta.is_dir() {
                    return Ok(vec![format!("{} is not a directory", path.display())]);
                }
                let r = match hashing::verify_tree(&path, manifest) {
                    Ok(r) => r,
                    // A link or special file planted inside the tree.
                    Err(CoreError::InvalidArgument(msg)) => return Ok(vec![msg]),
                    Err(e) => return Err(e),
                };
                let dir = path.display();
                Ok(r.missing
                    .iter()
                    .map(|p| format!("{dir}/{p} is missing"))
                    .chain(
                        r.unexpected
                            .iter()
                            .map(|p| format!("{dir}/{p} is unexpected")),
                    )
                    .chain(r.changed.iter().map(|p| format!("{dir}/{p} changed")))
                    .collect())
            }
        }
    }

    /// Every artifact at a content address.
    pub fn list(&self) -> CoreResult<Vec<OnDisk>> {
        let mut out = Vec::new();
        for (top, kind) in [("blobs", Kind::File), ("trees", Kind::Directory)] {
            for alg in Algorithm::ALL {
                let dir = self.root.join(top).join(alg.name());
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(CoreError::io(&dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_at(&dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    out.push(OnDisk {
                        kind,
                        digest: format!("{}:{name}", alg.name()),
                        path: entry.path(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Remove staging files left by writers that died; returns the paths removed.
    pub fn remove_stale_staging(&self) -> CoreResult<Vec<PathBuf>> {
        let tmp = self.tmp();
        let entries = match fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CoreError::io(&tmp, e)),
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            names.push(
                entry
                    .map_err(io_at(&tmp))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let mut removed = Vec::new();
        for name in &names {
            let Some(id) = name.strip_suffix(".lock") else {
                continue;
            };
            let lock_path = tmp.join(name);
            let Ok(lock) = OpenOptions::new().write(true).open(&lock_path) else {
                continue;
            };
            if lock.try_lock().is_err() {
                continue; // a live writer holds it
            }
            let data = tmp.join(format!("{id}.data"));
            if fs::symlink_metadata(&data).is_ok() {
                remove_any(&data).map_err(io_at(&data))?;
                removed.push(data);
            }
            fs::remove_file(&lock_path).map_err(io_at(&lock_path))?;
            removed.push(lock_path);
        }
        // Staging data whose lock is gone belongs to no live writer (a writer creates its lock
        // first and removes it last).
        for name in &names {
            if let Some(id) = name.strip_suffix(".data") {
                let data = tmp.join(name);
                if !tmp.join(format!("{id}.lock")).exists() && fs::symlink_metadata(&data).is_ok() {
                    remove_any(&data).map_err(io_at(&data))?;
                    removed.push(data);
                }
            } else if !name.ends_with(".lock") {
                let other = tmp.join(name);
                remove_any(&other).map_err(io_at(&other))?;
                removed.push(other);
            }
        }
        Ok(removed)
    }

    /// Remove a stored artifact; returns the bytes freed.
    pub fn remove(&self, item: &OnDisk) -> CoreResult<u64> {
        let bytes = disk_usage(&item.path);
        remove_any(&item.path).map_err(io_at(&item.path))?;
        Ok(bytes)
    }
}

fn disk_usage(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .map(|it| it.flatten().map(|e| disk_usage(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) -> PathBuf {
        let src = root.join("model");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("model.onnx"), b"graph").unwrap();
        fs::write(src.join("model.onnx.data"), vec![7u8; 3 << 20]).unwrap();
        fs::write(src.join("sub/profile.json"), b"{}").unwrap();
        src
    }

    #[test]
    fn stages_and_places_files_and_trees_with_matching_digests() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("reg")).unwrap();
        let src = tree(d.path());
        let mut s = store.stage(&src, Algorithm::Blake3).unwrap();
        assert_eq!(s.kind, Kind::Directory);
        assert_eq!(
            s.digest,
            hashing::digest_tree(&src, Algorithm::Blake3)
                .unwrap()
                .digest
        );
        store.place(&mut s).unwrap();
        let placed = store.path_of(Kind::Directory, &s.digest).unwrap();
        assert_eq!(fs::read(placed.join("model.onnx")).unwrap(), b"graph");
        assert!(store
            .check(Kind::Directory, &s.digest, &s.manifest)
            .unwrap()
            .is_empty());
        drop(s);

        let file = src.join("model.onnx.data");
        let mut f = store.stage(&file, Algorithm::Sha256).unwrap();
        assert_eq!(
            f.digest,
            hashing::digest_file(&file, Algorithm::Sha256).unwrap()
        );
        store.place(&mut f).unwrap();
        let blob = store.path_of(Kind::File, &f.digest).unwrap();
        assert!(fs::metadata(&blob).unwrap().permissions().readonly());
        drop(f);
        // Nothing is left in staging once artifacts are placed or dropped.
        assert_eq!(fs::read_dir(d.path().join("reg/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn identical_content_is_stored_once_and_drop_cleans_staging() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("reg")).unwrap();
        let src = tree(d.path());
        for _ in 0..2 {
            let mut s = store.stage(&src, Algorithm::Blake3).unwrap();
            store.place(&mut s).unwrap();
        }
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(d.path().join("reg/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn check_reports_tampering_and_missing_artifacts() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("reg")).unwrap();
        let src = tree(d.path());
        let mut s = store.stage(&src, Algorithm::Blake3).unwrap();
        store.place(&mut s).unwrap();
        let placed = store.path_of(Kind::Directory, &s.digest).unwrap();
        let victim = placed.join("sub/profile.json");
        fs::remove_file(&victim).unwrap();
        fs::write(&victim, b"{\"x\":1}").unwrap();
        let problems = store
            .check(Kind::Directory, &s.digest, &s.manifest)
            .unwrap();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].ends_with("sub/profile.json changed"),
            "{problems:?}"
        );
        fs::remove_dir_all(&placed).unwrap();
        let problems = store
            .check(Kind::Directory, &s.digest, &s.manifest)
            .unwrap();
        assert!(problems[0].contains("is missing"), "{problems:?}");
    }

    #[test]
    fn stale_staging_is_removed_but_live_staging_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("reg")).unwrap();
        let src = tree(d.path());
        let live = store.stage(&src, Algorithm::Blake3).unwrap();
        // A dead writer: files without a held lock.
        let tmp = d.path().join("reg/tmp");
        fs::write(tmp.join("dead.lock"), b"").unwrap();
        fs::write(tmp.join("dead.data"), b"partial").unwrap();
        fs::write(tmp.join("orphan.data"), b"partial").unwrap();
        let removed = store.remove_stale_staging().unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(live.data.exists() && live.lock_path.exists());
        drop(live);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
