//! Bindings of [`crate::registry`]: one `RegistryCore` object per open registry, wrapped by
//! `servekit.registry.Registry`. Rows cross as tuples with JSON fields left as text; the Python
//! layer decodes them.

use super::enter;
use crate::error::CoreError;
use crate::hashing::Algorithm;
use crate::registry::index::{AliasEvent, ModelRow, VersionRow};
use crate::registry::refs::FORMATS;
use crate::registry::{Expect, RegisterRequest, Registry, ALIAS_ACTIONS, REFUSED_ACTION};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

type Tags = Vec<(String, Option<String>)>;

fn version_tuple<'py>(py: Python<'py>, r: VersionRow) -> PyResult<Bound<'py, PyTuple>> {
    let items: [Bound<'py, PyAny>; 18] = [
        r.name.into_pyobject(py)?.into_any(),
        r.version.into_pyobject(py)?.into_any(),
        r.digest.into_pyobject(py)?.into_any(),
        r.kind.into_pyobject(py)?.into_any(),
        r.format.into_pyobject(py)?.into_any(),
        r.manifest.into_pyobject(py)?.into_any(),
        r.size_bytes.into_pyobject(py)?.into_any(),
        r.created_at.into_pyobject(py)?.into_any(),
        r.signature.into_pyobject(py)?.into_any(),
        r.metadata.into_pyobject(py)?.into_any(),
        r.metrics.into_pyobject(py)?.into_any(),
        r.tags.into_pyobject(py)?.into_any(),
        r.variant.into_pyobject(py)?.into_any(),
        r.parent.into_pyobject(py)?.into_any(),
        r.source.into_pyobject(py)?.into_any(),
        r.description.into_pyobject(py)?.into_any(),
        pyo3::types::PyBool::new(py, r.archived)
            .to_owned()
            .into_any(),
        r.aliases.into_pyobject(py)?.into_any(),
    ];
    PyTuple::new(py, items)
}

type ModelTuple = (
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    Vec<(String, i64)>,
);

fn model_tuple(m: ModelRow) -> ModelTuple {
    (
        m.name,
        m.description,
        m.tags,
        m.created_at,
        m.latest_version,
        m.version_count,
        m.aliases,
    )
}

type EventTuple = (
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
);

fn event_tuple(e: AliasEvent) -> EventTuple {
    (
        e.time,
        e.model,
        e.alias,
        e.action,
        e.previous_version,
        e.new_version,
        e.actor,
        e.reason,
    )
}

/// An open registry: artifact store plus index. Thread-safe; calls are serialised.
#[pyclass(module = "servekit._core", name = "RegistryCore", frozen)]
pub struct RegistryCore {
    inner: Mutex<Registry>,
    root: PathBuf,
}

impl RegistryCore {
    fn lock(&self) -> Result<MutexGuard<'_, Registry>, CoreError> {
        self.inner.lock().map_err(|_| {
            CoreError::Unavailable("the registry handle was poisoned by a panic".into())
        })
    }
}

#[pymethods]
impl RegistryCore {
    #[new]
    fn new(py: Python<'_>, root: PathBuf) -> PyResult<Self> {
        let registry = enter(py, || Registry::open(&root))?;
        Ok(RegistryCore {
            inner: Mutex::new(registry),
            root,
        })
    }

    #[getter]
    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (name, path, format, signature, metadata, metrics, tags, variant, parent, source, description, algorithm))]
    fn register<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: PathBuf,
        format: String,
        signature: Option<String>,
        metadata: Option<String>,
        metrics: Vec<(String, f64)>,
        tags: Vec<(String, String)>,
        variant: Option<String>,
        parent: Option<String>,
        source: Option<String>,
        description: Option<String>,
        algorithm: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let algorithm: Algorithm = algorithm.parse()?;
        let req = RegisterRequest {
            name,
            path,
            format,
            signature,
            metadata,
            metrics,
            tags,
            variant,
            parent,
            source,
            description,
            algorithm,
        };
        let row = enter(py, || self.lock()?.register(req))?;
        version_tuple(py, row)
    }

    fn get<'py>(&self, py: Python<'py>, reference: String) -> PyResult<Bound<'py, PyTuple>> {
        let row = enter(py, || self.lock()?.get(&reference))?;
        version_tuple(py, row)
    }

    fn list_models(&self, py: Python<'_>) -> PyResult<Vec<ModelTuple>> {
        let rows = enter(py, || self.lock()?.list_models())?;
        Ok(rows.into_iter().map(model_tuple).collect())
    }

    fn list_versions<'py>(
        &self,
        py: Python<'py>,
        name: String,
        tags: Vec<(String, String)>,
        variant: Option<String>,
        order_by: Option<String>,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let rows = enter(py, || {
            self.lock()?
                .list_versions(&name, &tags, variant.as_deref(), order_by.as_deref())
        })?;
        rows.into_iter().map(|r| version_tuple(py, r)).collect()
    }

    /// `check_expect` false: no compare-and-swap; true: `expect` is the version the alias must
    /// point at now, None that it must not exist.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (reference, alias, actor, reason, action, check_expect=false, expect=None))]
    fn set_alias(
        &self,
        py: Python<'_>,
        reference: String,
        alias: String,
        actor: String,
        reason: Option<String>,
        action: String,
        check_expect: bool,
        expect: Option<i64>,
    ) -> PyResult<EventTuple> {
        let expect = match (check_expect, expect) {
            (false, _) => Expect::Any,
            (true, None) => Expect::Absent,
            (true, Some(v)) => Expect::Version(v),
        };
        let e = enter(py, || {
            self.lock()?.set_alias(
                &reference,
                &alias,
                &actor,
                reason.as_deref(),
                &action,
                expect,
            )
        })?;
        Ok(event_tuple(e))
    }

    fn record_refusal(
        &self,
        py: Python<'_>,
        reference: String,
        alias: String,
        actor: String,
        reason: String,
    ) -> PyResult<EventTuple> {
        let e = enter(py, || {
            self.lock()?
                .record_refusal(&reference, &alias, &actor, &reason)
        })?;
        Ok(event_tuple(e))
    }

    fn delete_alias(
        &self,
        py: Python<'_>,
        name: String,
        alias: String,
        actor: String,
        reason: Option<String>,
    ) -> PyResult<EventTuple> {
        let e = enter(py, || {
            self.lock()?
                .delete_alias(&name, &alias, &actor, reason.as_deref())
        })?;
        Ok(event_tuple(e))
    }

    fn set_tags<'py>(
        &self,
        py: Python<'py>,
        reference: String,
        tags: Tags,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let row = enter(py, || self.lock()?.set_tags(&reference, &tags))?;
        version_tuple(py, row)
    }

    fn log_metrics<'py>(
        &self,
        py: Python<'py>,
        reference: String,
        metrics: Vec<(String, f64)>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let row = enter(py, || self.lock()?.log_metrics(&reference, &metrics))?;
        version_tuple(py, row)
    }

    fn set_description<'py>(
        &self,
        py: Python<'py>,
        reference: String,
        description: String,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let row = enter(py, || {
            self.lock()?.set_description(&reference, &description)
        })?;
        version_tuple(py, row)
    }

    fn update_model(
        &self,
        py: Python<'_>,
        name: String,
        description: Option<String>,
        tags: Tags,
    ) -> PyResult<ModelTuple> {
        let m = enter(py, || {
            self.lock()?
                .update_model(&name, description.as_deref(), &tags)
        })?;
        Ok(model_tuple(m))
    }

    fn archive<'py>(&self, py: Python<'py>, reference: String) -> PyResult<Bound<'py, PyTuple>> {
        let row = enter(py, || self.lock()?.archive(&reference))?;
        version_tuple(py, row)
    }

    fn history(&self, py: Python<'_>, name: String) -> PyResult<Vec<EventTuple>> {
        let events = enter(py, || self.lock()?.history(&name))?;
        Ok(events.into_iter().map(event_tuple).collect())
    }

    fn lineage<'py>(
        &self,
        py: Python<'py>,
        reference: String,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let rows = enter(py, || self.lock()?.lineage(&reference))?;
        rows.into_iter().map(|r| version_tuple(py, r)).collect()
    }

    fn verify(&self, py: Python<'_>, reference: Option<String>) -> PyResult<Vec<String>> {
        enter(py, || self.lock()?.verify(reference.as_deref()))
    }

    fn artifact_path(&self, py: Python<'_>, reference: String, verify: bool) -> PyResult<PathBuf> {
        enter(py, || Ok(self.lock()?.artifact_path(&reference, verify)?.1))
    }

    fn model_file(&self, py: Python<'_>, reference: String, verify: bool) -> PyResult<PathBuf> {
        enter(py, || self.lock()?.model_file(&reference, verify))
    }

    /// `(removed paths, bytes freed)`.
    fn gc(&self, py: Python<'_>) -> PyResult<(Vec<PathBuf>, u64)> {
        let r = enter(py, || self.lock()?.gc())?;
        Ok((r.removed, r.bytes_freed))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RegistryCore>()?;
    let formats: Vec<&str> = FORMATS.iter().map(|(n, _)| *n).collect();
    m.add("REGISTRY_FORMATS", formats)?;
    m.add("REGISTRY_ALIAS_ACTIONS", ALIAS_ACTIONS.to_vec())?;
    m.add("REGISTRY_REFUSED_ACTION", REFUSED_ACTION)?;
    Ok(())
}
