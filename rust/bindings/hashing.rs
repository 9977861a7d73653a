//! Bindings of [`crate::hashing`].

use super::enter;
use crate::error::CoreError;
use crate::hashing::{self, Algorithm, FileEntry};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
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

/// Digest of a C-contiguous byte buffer.
///
/// `bytes` is immutable, so it is hashed in place with the interpreter released. Any other
/// buffer (bytearray, memoryview, numpy array...) may be written by another thread as soon as
/// the interpreter is released, so it is copied first, while the interpreter is held, and the
/// copy is hashed: the digest is always that of one state of the buffer.
#[pyfunction]
#[pyo3(signature = (data, algorithm="blake3"))]
fn digest_bytes(py: Python<'_>, data: &Bound<'_, PyAny>, algorithm: &str) -> PyResult<String> {
    let alg = self::algorithm(algorithm)?;
    if let Ok(immutable) = data.cast::<PyBytes>() {
        let bytes: &[u8] = immutable.as_bytes();
        // `bytes` objects never change after creation and `data` keeps this one alive.
        return enter(py, || Ok(hashing::digest_bytes(bytes, alg)));
    }
    let buffer = PyBuffer::<u8>::get(data)?;
    if !buffer.is_c_contiguous() {
        return Err(CoreError::invalid("digest_bytes needs a C-contiguous buffer").into());
    }
    let copy = buffer.to_vec(py)?;
    drop(buffer);
    enter(py, move || Ok(hashing::digest_bytes(&copy, alg)))
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
