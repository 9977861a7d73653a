//! Bindings of [`crate::hashing`].

use super::enter;
use crate::error::CoreError;
use crate::hashing::{self, Algorithm, FileEntry};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use std::path::PathBuf;

type PyEntry = (String, u64, String);

fn algorithm(name: &str) -> PyResult<Algorithm> {
    Ok(name.parse::<Algorithm>()?)
}

/// Digest of a regular file, `"<algorithm>:<hex>"`.
#[pyfunction]
#[pyo3(signature = (path, algorithm="blake3"))]
fn digest_file(py: Python<'_>, path: PathBuf, algorithm: &str) -> PyResult<String> {
    let alg = self::algorithm(algorithm)?;
    enter(py, || hashing::digest_file(&path, alg))
}

/// Digest of a C-contiguous byte buffer, hashed in place without a copy.
#[pyfunction]
#[pyo3(signature = (data, algorithm="blake3"))]
fn digest_bytes(py: Python<'_>, data: PyBuffer<u8>, algorithm: &str) -> PyResult<String> {
    let alg = self::algorithm(algorithm)?;
    if !data.is_c_contiguous() {
        return Err(CoreError::invalid("digest_bytes needs a C-contiguous buffer").into());
    }
    // The exported buffer stays valid (and its owner cannot resize it) until `data` is dropped
    // at the end of this function, after the detached hash has finished.
    let addr = data.buf_ptr() as usize;
    let len = data.len_bytes();
    enter(py, move || {
        let bytes = if len == 0 {
            &[][..]
        } else {
            // SAFETY: `addr..addr+len` is the live, contiguous buffer exported above.
            unsafe { std::slice::from_raw_parts(addr as *const u8, len) }
        };
        Ok(hashing::digest_bytes(bytes, alg))
    })
}

fn to_py_entries(entries: Vec<FileEntry>) -> Vec<PyEntry> {
    entries
        .into_iter()
        .map(|e| (e.path, e.size, e.digest))
        .collect()
}

/// Digest of a directory tree and its manifest as `(path, size, digest)` tuples.
#[pyfunction]
#[pyo3(signature = (path, algorithm="blake3"))]
fn digest_tree(py: Python<'_>, path: PathBuf, algorithm: &str) -> PyResult<(String, Vec<PyEntry>)> {
    let alg = self::algorithm(algorithm)?;
    let tree = enter(py, || hashing::digest_tree(&path, alg))?;
    Ok((tree.digest, to_py_entries(tree.manifest)))
}

/// Compare a tree with a manifest: `(missing, unexpected, changed)` relative paths.
#[pyfunction]
fn verify_tree(
    py: Python<'_>,
    path: PathBuf,
    manifest: Vec<PyEntry>,
) -> PyResult<(Vec<String>, Vec<String>, Vec<String>)> {
    let manifest: Vec<FileEntry> = manifest
        .into_iter()
        .map(|(path, size, digest)| FileEntry { path, size, digest })
        .collect();
    let r = enter(py, || hashing::verify_tree(&path, &manifest))?;
    Ok((r.missing, r.unexpected, r.changed))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(digest_file, m)?)?;
    m.add_function(wrap_pyfunction!(digest_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(digest_tree, m)?)?;
    m.add_function(wrap_pyfunction!(verify_tree, m)?)?;
    Ok(())
}
