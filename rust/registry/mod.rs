//! The model registry: a content-addressed artifact store ([`store`]) and an SQLite index
//! ([`index`]) under one root directory.
//!
//! Registering copies the artifact into staging while hashing it, then in one write
//! transaction moves it to its content address and inserts the version row: the row commits
//! only after its artifact is in place, and a process killed at any point leaves either no row
//! (and at most a stray staged file or unreferenced artifact, both removed by [`Registry::gc`])
//! or a complete version.

pub mod index;
pub mod refs;
pub mod store;

use crate::error::{CoreError, CoreResult};
use crate::hashing::{Algorithm, FileEntry};
use index::{AliasEvent, Db, Index, ModelRow, NewVersion, Resolved, VersionRow};
use refs::{main_file_of, validate_label, validate_name, Reference};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use store::{Kind, Store};

/// Actions recorded in the alias audit log by [`Registry::set_alias`] (deleting records
/// `delete`). `promote`, `force` and `rollback` are for the promotion workflow.
pub const ALIAS_ACTIONS: &[&str] = &["set", "promote", "force", "rollback"];

/// The action recorded for a compare-and-swap move refused because the alias had moved: the
/// event's `previous_version` is where the alias really was, `new_version` the version asked
/// for, and the alias itself stays where it was.
pub const REFUSED_ACTION: &str = "refused";

/// What a caller of [`Registry::set_alias`] expects an alias to point at before it moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No check: the alias moves wherever it points now.
    Any,
    /// The alias must not exist yet.
    Absent,
    /// The alias must point at this version.
    Version(i64),
}

impl Expect {
    fn holds(self, current: Option<i64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        }
    }
}

fn describe_target(v: Option<i64>) -> String {
    v.map_or_else(|| "unset".to_string(), |v| format!("version {v}"))
}

/// What to register; JSON fields are text holding a JSON object (signature: its JSON form).
pub struct RegisterRequest {
    pub name: String,
    pub path: PathBuf,
    pub format: String,
    pub signature: Option<String>,
    pub metadata: Option<String>,
    pub metrics: Vec<(String, f64)>,
    pub tags: Vec<(String, String)>,
    pub variant: Option<String>,
    pub parent: Option<String>,
    pub source: Option<String>,
    pub description: Option<String>,
    pub algorithm: Algorithm,
}

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<PathBuf>,
    pub bytes_freed: u64,
}

/// How `list_versions` orders its result.
enum Order {
    Version(bool),
    Created(bool),
    Metric(String, bool),
}

fn parse_order(text: Option<&str>) -> CoreResult<Order> {
    let Some(text) = text else {
        return Ok(Order::Version(false));
    };
    let (desc, key) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match key {
        "version" => Ok(Order::Version(desc)),
        "created_at" => Ok(Order::Created(desc)),
        _ => match key.strip_prefix("metrics.") {
            Some(m) if !m.is_empty() => Ok(Order::Metric(m.to_string(), desc)),
            _ => Err(CoreError::invalid(format!(
                "unknown order_by {text:?}: expected version, created_at or metrics.NAME, \
                 optionally prefixed by '-' for descending"
            ))),
        },
    }
}

/// Parse text that must hold a JSON object; `what` names it in the error.
fn json_object(what: &str, text: &str) -> CoreResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CoreError::invalid(format!("{what} must be a JSON object"))),
        Err(e) => Err(CoreError::invalid(format!("{what} is not valid JSON: {e}"))),
    }
}

fn metrics_json(existing: &str, new: &[(String, f64)]) -> CoreResult<String> {
    let mut m = json_object("stored metrics", existing)?;
    for (k, v) in new {
        validate_label("metric name", k)?;
        let n = serde_json::Number::from_f64(*v).ok_or_else(|| {
            CoreError::invalid(format!("metric {k:?} must be a finite number, got {v}"))
        })?;
        m.insert(k.clone(), Value::Number(n));
    }
    Ok(Value::Object(m).to_string())
}

fn tags_json(existing: &str, new: &[(String, Option<String>)]) -> CoreResult<String> {
    let mut m = json_object("stored tags", existing)?;
    for (k, v) in new {
        validate_label("tag name", k)?;
        match v {
            Some(v) => {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            None => {
                m.remove(k);
            }
        }
    }
    Ok(Value::Object(m).to_string())
}

fn manifest_json(manifest: &[FileEntry]) -> String {
    Value::Array(
        manifest
            .iter()
            .map(|e| serde_json::json!({"path": e.path, "size": e.size, "digest": e.digest}))
            .collect(),
    )
    .to_string()
}

fn manifest_from_json(text: &str) -> CoreResult<Vec<FileEntry>> {
    let bad = || CoreError::Integrity(format!("index holds a malformed manifest: {text}"));
    let items: Vec<Value> = serde_json::from_str(text).map_err(|_| bad())?;
    items
        .into_iter()
        .map(|e| {
            Ok(FileEntry {
                path: e["path"].as_str().ok_or_else(bad)?.to_string(),
                size: e["size"].as_u64().ok_or_else(bad)?,
                digest: e["digest"].as_str().ok_or_else(bad)?.to_string(),
            })
        })
        .collect()
}

pub struct Registry {
    root: PathBuf,
    store: Store,
    index: Index,
}

impl Registry {
    /// Open (creating as needed) the registry rooted at `root`.
    pub fn open(root: &Path) -> CoreResult<Registry> {
        std::fs::create_dir_all(root).map_err(|e| CoreError::io(root, e))?;
        let store = Store::open(root)?;
        let index = Index::open(&root.join("index.db"))?;
        Ok(Registry {
            root: root.to_path_buf(),
            store,
            index,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, reference: &str) -> CoreResult<Resolved> {
        self.index.db().resolve(&Reference::parse(reference)?)
    }

    /// Register the artifact at `req.path` as the next version of `req.name`.
    pub fn register(&mut self, req: RegisterRequest) -> CoreResult<VersionRow> {
        validate_name("model name", &req.name)?;
        let main_file = main_file_of(&req.format)?;
        if let Some(v) = &req.variant {
            validate_label("variant", v)?;
        }
        for (k, _) in &req.tags {
            validate_label("tag name", k)?;
        }
        let metadata = json_object("metadata", req.metadata.as_deref().unwrap_or("{}"))?;
        let source = json_object("source", req.source.as_deref().unwrap_or("{}"))?;
        if let Some(sig) = &req.signature {
            json_object("signature", sig)?;
        }
        let metrics = metrics_json("{}", &req.metrics)?;
        let tags: Map<String, Value> = req
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let parent = match &req.parent {
            None => None,
            Some(p) => {
                let r = self.resolve(p).map_err(|e| match e {
                    CoreError::NotFound(msg) => {
                        CoreError::not_found(format!("parent {p:?} not found: {msg}"))
                    }
                    other => other,
                })?;
                Some(format!("{}:{}", r.name, r.version))
            }
        };

        let mut staged = self.store.stage(&req.path, req.algorithm)?;
        if staged.kind == Kind::Directory {
            if let Some(main) = main_file {
                if !staged.manifest.iter().any(|e| e.path == main) {
                    return Err(CoreError::invalid(format!(
                        "{}: a directory artifact of format {:?} must contain {main}",
                        req.path.display(),
                        req.format
                    )));
                }
            }
        }
        // Flush outside the write lock when the content is (probably) new; `place` flushes
        // under the lock in the rare case it vanished meanwhile.
        if !self.store.exists(staged.kind, &staged.digest)? {
            self.store.sync(&mut staged)?;
        }
        let manifest = manifest_json(&staged.manifest);
        let metadata = Value::Object(metadata).to_string();
        let source = Value::Object(source).to_string();
        let tags = Value::Object(tags).to_string();
        let digest = staged.digest.clone();
        let new = NewVersion {
            digest: &digest,
            kind: staged.kind.name(),
            format: &req.format,
            manifest: &manifest,
            size_bytes: staged.size,
            signature: req.signature.as_deref(),
            metadata: &metadata,
            metrics: &metrics,
            tags: &tags,
            variant: req.variant.as_deref(),
            parent: parent.as_deref(),
            source: &source,
            description: req.description.as_deref().unwrap_or(""),
        };
        let store = &self.store;
        let name = &req.name;
        let (model_id, version) = self.index.write(|db| {
            store.place(&mut staged)?;
            let version = db.insert_version(name, &new)?;
            Ok((db.model_id(name)?, version))
        })?;
        drop(staged);
        self.index.db().version(&Resolved {
            model_id,
            name: req.name.clone(),
            version,
        })
    }

    /// The version a reference points at.
    pub fn get(&self, reference: &str) -> CoreResult<VersionRow> {
        self.index.db().get(&Reference::parse(reference)?)
    }

    pub fn list_models(&self) -> CoreResult<Vec<ModelRow>> {
        self.index.db().models()
    }

    /// Versions of `name` having every tag in `tags` (and the variant, if given), ordered by
    /// `order_by` (`version`, `created_at`, `metrics.NAME`, each optionally prefixed by `-`;
    /// versions without the metric come last).
    pub fn list_versions(
        &self,
        name: &str,
        tags: &[(String, String)],
        variant: Option<&str>,
        order_by: Option<&str>,
    ) -> CoreResult<Vec<VersionRow>> {
        validate_name("model name", name)?;
        let order = parse_order(order_by)?;
        let db = self.index.db();
        let mut rows = db.versions_of(db.model_id(name)?, variant)?;
        if !tags.is_empty() {
            let mut kept = Vec::with_capacity(rows.len());
            for row in rows {
                let t = json_object("stored tags", &row.tags)?;
                if tags
                    .iter()
                    .all(|(k, v)| t.get(k).and_then(Value::as_str) == Some(v.as_str()))
                {
                    kept.push(row);
                }
            }
            rows = kept;
        }
        match order {
            Order::Version(desc) => {
                if desc {
                    rows.reverse();
                }
            }
            Order::Created(desc) => {
                rows.sort_by(|a, b| {
                    a.created_at
                        .cmp(&b.created_at)
                        .then(a.version.cmp(&b.version))
                });
                if desc {
                    rows.reverse();
                }
            }
            Order::Metric(metric, desc) => {
                let mut keyed = Vec::with_capacity(rows.len());
                for row in rows {
                    let v = json_object("stored metrics", &row.metrics)?
                        .get(&metric)
                        .and_then(Value::as_f64);
                    keyed.push((v, row));
                }
                keyed.sort_by(|(a, ra), (b, rb)| match (a, b) {
                    (Some(x), Some(y)) => {
                        let o = x.total_cmp(y);
                        (if desc { o.reverse() } else { o }).then(ra.version.cmp(&rb.version))
                    }
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => ra.version.cmp(&rb.version),
                });
                rows = keyed.into_iter().map(|(_, r)| r).collect();
            }
        }
        Ok(rows)
    }

    /// Point `alias` at the version `reference` resolves to, recording the move.
    ///
    /// With an expectation other than [`Expect::Any`] this is a compare-and-swap: the alias's
    /// current target is read and compared inside the same write transaction that moves it, so
    /// of several writers expecting the same target exactly one moves it. A writer whose
    /// expectation no longer holds gets `Precondition` and its attempt is still recorded in
    /// the audit log (action [`REFUSED_ACTION`]).
    /// `Conflict` for an archived version; `InvalidArgument` for a bad alias or action.
    pub fn set_alias(
        &mut self,
        reference: &str,
        alias: &str,
        actor: &str,
        reason: Option<&str>,
        action: &str,
        expect: Expect,
    ) -> CoreResult<AliasEvent> {
        validate_name("alias", alias)?;
        if !ALIAS_ACTIONS.contains(&action) {
            return Err(CoreError::invalid(format!(
                "unknown alias action {action:?}: expected one of {}",
                ALIAS_ACTIONS.join(", ")
            )));
        }
        let r = Reference::parse(reference)?;
        // A refusal is committed (its audit event must survive), so it leaves the transaction
        // as a value and becomes an error only after the commit.
        let outcome = self.index.write(|db| {
            let at = db.resolve(&r)?;
            if db.version(&at)?.archived {
                return Err(CoreError::Conflict(format!(
                    "{}:{} is archived: an alias cannot point at it",
                    at.name, at.version
                )));
            }
            let previous = db.alias_target(at.model_id, alias)?;
            if !expect.holds(previous) {
                let expected = match expect {
                    Expect::Version(v) => Some(v),
                    _ => None,
                };
                let why = format!(
                    "{}@{alias} moved: expected {}, found {}",
                    at.name,
                    describe_target(expected),
                    describe_target(previous)
                );
                let recorded = match reason {
                    Some(r) => format!("{why} ({action}: {r})"),
                    None => format!("{why} ({action})"),
                };
                db.record_event(
                    at.model_id,
                    alias,
                    REFUSED_ACTION,
                    previous,
                    Some(at.version),
                    actor,
                    Some(&recorded),
                )?;
                return Ok(Err(why));
            }
            db.move_alias(
                at.model_id,
                alias,
                action,
                previous,
                Some(at.version),
                actor,
                reason,
            )?;
            last_event(db, at.model_id).map(Ok)
        })?;
        outcome.map_err(|why| {
            CoreError::Precondition(format!(
                "{why}: nothing changed; re-read it and decide again"
            ))
        })
    }

    /// Record that moving `alias` to the version `reference` resolves to was refused (action
    /// [`REFUSED_ACTION`]), leaving the alias where it is: the event's previous and new versions are
    /// both its current target (`None` when it points nowhere). The reason says why.
    pub fn record_refusal(
        &mut self,
        reference: &str,
        alias: &str,
        actor: &str,
        reason: &str,
    ) -> CoreResult<AliasEvent> {
        validate_name("alias", alias)?;
        let r = Reference::parse(reference)?;
        self.index.write(|db| {
            let at = db.resolve(&r)?;
            let current = db.alias_target(at.model_id, alias)?;
            db.record_event(
                at.model_id,
                alias,
                REFUSED_ACTION,
                current,
                current,
                actor,
                Some(reason),
            )?;
            last_event(db, at.model_id)
        })
    }

    /// Remove `alias` from model `name`, recording the deletion.
    pub fn delete_alias(
        &mut self,
        name: &str,
        alias: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> CoreResult<AliasEvent> {
        validate_name("model name", name)?;
        validate_name("alias", alias)?;
        self.index.write(|db| {
            let model_id = db.model_id(name)?;
            let previous = db.alias_target(model_id, alias)?.ok_or_else(|| {
                CoreError::not_found(format!("model {name:?} has no alias {alias:?}"))
            })?;
            db.move_alias(
                model_id,
                alias,
                "delete",
                Some(previous),
                None,
                actor,
                reason,
            )?;
            last_event(db, model_id)
        })
    }

    /// Merge `tags` into the version's tags (a `None` value removes the tag).
    pub fn set_tags(
        &mut self,
        reference: &str,
        tags: &[(String, Option<String>)],
    ) -> CoreResult<VersionRow> {
        let r = Reference::parse(reference)?;
        self.index.write(|db| {
            let at = db.resolve(&r)?;
            let merged = tags_json(&db.version(&at)?.tags, tags)?;
            db.update_version(&at, "tags", &merged)?;
            db.version(&at)
        })
    }

    /// Merge `metrics` into the version's metrics (finite numbers only).
    pub fn log_metrics(
        &mut self,
        reference: &str,
        metrics: &[(String, f64)],
    ) -> CoreResult<VersionRow> {
        let r = Reference::parse(reference)?;
        self.index.write(|db| {
            let at = db.resolve(&r)?;
            let merged = metrics_json(&db.version(&at)?.metrics, metrics)?;
            db.update_version(&at, "metrics", &merged)?;
            db.version(&at)
        })
    }

    pub fn set_description(
        &mut self,
        reference: &str,
        description: &str,
    ) -> CoreResult<VersionRow> {
        let r = Reference::parse(reference)?;
        self.index.write(|db| {
            let at = db.resolve(&r)?;
            db.update_version(&at, "description", &description)?;
            db.version(&at)
        })
    }

    /// Update a registered model's description and/or merge its tags.
    pub fn update_model(
        &mut self,
        name: &str,
        description: Option<&str>,
        tags: &[(String, Option<String>)],
    ) -> CoreResult<ModelRow> {
        validate_name("model name", name)?;
        self.index.write(|db| {
            let id = db.model_id(name)?;
            let merged = tags_json(&db.model_tags(id)?, tags)?;
            db.update_model(id, Some(&merged), description)
        })?;
        self.list_models()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| CoreError::not_found(format!("unknown model {name:?}")))
    }

    /// Mark a version archived: `name` alone no longer resolves to it and no alias may point at
    /// it. `Conflict` while aliases point at it.
    pub fn archive(&mut self, reference: &str) -> CoreResult<VersionRow> {
        let r = Reference::parse(reference)?;
        self.index.write(|db| {
            let at = db.resolve(&r)?;
            let row = db.version(&at)?;
            if !row.aliases.is_empty() {
                return Err(CoreError::Conflict(format!(
                    "{}:{} cannot be archived while aliases point at it: {}",
                    at.name,
                    at.version,
                    row.aliases.join(", ")
                )));
            }
            db.update_version(&at, "archived", &true)?;
            db.version(&at)
        })
    }

    pub fn history(&self, name: &str) -> CoreResult<Vec<AliasEvent>> {
        validate_name("model name", name)?;
        let db = self.index.db();
        db.history(db.model_id(name)?)
    }

    /// The version `reference` resolves to, then its parent, grandparent, ... (oldest last).
    pub fn lineage(&self, reference: &str) -> CoreResult<Vec<VersionRow>> {
        let mut chain = vec![self.get(reference)?];
        let mut seen = HashSet::new();
        while let Some(parent) = chain.last().and_then(|r| r.parent.clone()) {
            if !seen.insert(parent.clone()) {
                break;
            }
            chain.push(self.get(&parent)?);
        }
        Ok(chain)
    }

    fn check_row(&self, kind: &str, digest: &str, manifest: &str) -> CoreResult<Vec<String>> {
        self.store
            .check(Kind::parse(kind)?, digest, &manifest_from_json(manifest)?)
    }

    /// The stored artifact of a version (a file, or a directory with its original file names),
    /// re-hashed first when `verify`. `Integrity` naming model, version and expected digest when
    /// it is missing or does not match.
    pub fn artifact_path(
        &self,
        reference: &str,
        verify: bool,
    ) -> CoreResult<(VersionRow, PathBuf)> {
        let row = self.get(reference)?;
        let path = self.store.path_of(Kind::parse(&row.kind)?, &row.digest)?;
        if verify {
            let problems = self.check_row(&row.kind, &row.digest, &row.manifest)?;
            if !problems.is_empty() {
                return Err(CoreError::Integrity(format!(
                    "{}:{}: stored artifact does not match its expected digest {}: {}",
                    row.name,
                    row.version,
                    row.digest,
                    problems.join("; ")
                )));
            }
        } else if !path.exists() {
            return Err(CoreError::Integrity(format!(
                "{}:{}: stored artifact {} (expected digest {}) is missing",
                row.name,
                row.version,
                path.display(),
                row.digest
            )));
        }
        Ok((row, path))
    }

    /// The main model file of a version: the artifact itself for a file, else the file its
    /// format names (`model.onnx`, `model.pt`, `model.ort`), else the only file of the tree.
    pub fn model_file(&self, reference: &str, verify: bool) -> CoreResult<PathBuf> {
        let (row, path) = self.artifact_path(reference, verify)?;
        if row.kind == Kind::File.name() {
            return Ok(path);
        }
        let manifest = manifest_from_json(&row.manifest)?;
        let chosen = match main_file_of(&row.format)? {
            Some(main) => manifest.iter().find(|e| e.path == main),
            None if manifest.len() == 1 => manifest.first(),
            None => None,
        };
        chosen.map(|e| path.join(&e.path)).ok_or_else(|| {
            CoreError::invalid(format!(
                "{}:{}: format {:?} names no main file among {} files; use artifact_path",
                row.name,
                row.version,
                row.format,
                manifest.len()
            ))
        })
    }

    /// Problems of one version, or of every version when `reference` is None: one line each,
    /// `NAME:VERSION: problem (expected DIGEST)`. Empty when everything is intact. Versions that
    /// share an artifact have it checked once.
    pub fn verify(&self, reference: Option<&str>) -> CoreResult<Vec<String>> {
        let items = match reference {
            Some(r) => {
                let row = self.get(r)?;
                vec![(row.name, row.version, row.kind, row.digest, row.manifest)]
            }
            None => self.index.db().artifacts()?,
        };
        let mut checked: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut lines = Vec::new();
        for (name, version, kind, digest, manifest) in items {
            let key = (kind.clone(), digest.clone());
            if !checked.contains_key(&key) {
                let problems = self.check_row(&kind, &digest, &manifest)?;
                checked.insert(key.clone(), problems);
            }
            for p in &checked[&key] {
                lines.push(format!("{name}:{version}: {p} (expected {digest})"));
            }
        }
        Ok(lines)
    }

    /// Remove staging files of dead writers and artifacts no version references.
    pub fn gc(&mut self) -> CoreResult<GcReport> {
        let mut report = GcReport {
            removed: self.store.remove_stale_staging()?,
            bytes_freed: 0,
        };
        let store = &self.store;
        let (removed, freed) = self.index.write(|db| {
            // Under the write lock: no register can place an artifact meanwhile.
            let referenced: HashSet<(String, String)> = db.referenced()?.into_iter().collect();
            let mut removed = Vec::new();
            let mut freed = 0;
            for item in store.list()? {
                if !referenced.contains(&(item.kind.name().to_string(), item.digest.clone())) {
                    freed += store.remove(&item)?;
                    removed.push(item.path);
                }
            }
            Ok((removed, freed))
        })?;
        report.removed.extend(removed);
        report.bytes_freed = freed;
        Ok(report)
    }
}

fn last_event(db: &Db<'_>, model_id: i64) -> CoreResult<AliasEvent> {
    db.history(model_id)?
        .pop()
        .ok_or_else(|| CoreError::not_found("the alias event just recorded is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, path: &Path) -> RegisterRequest {
        RegisterRequest {
            name: name.into(),
            path: path.into(),
            format: "onnx".into(),
            signature: None,
            metadata: None,
            metrics: vec![("accuracy".into(), 0.9)],
            tags: vec![],
            variant: None,
            parent: None,
            source: None,
            description: None,
            algorithm: Algorithm::Blake3,
        }
    }

    #[test]
    fn registers_resolves_aliases_and_lineage() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.onnx");
        std::fs::write(&f, b"fp32").unwrap();
        let mut reg = Registry::open(&d.path().join("reg")).unwrap();
        let v1 = reg.register(request("digits", &f)).unwrap();
        assert_eq!((v1.version, v1.kind.as_str()), (1, "file"));
        std::fs::write(&f, b"int8").unwrap();
        let mut req = request("digits", &f);
        req.parent = Some("digits".into());
        req.variant = Some("int8-dynamic".into());
        let v2 = reg.register(req).unwrap();
        assert_eq!(v2.parent.as_deref(), Some("digits:1"));
        reg.set_alias(
            "digits:1",
            "production",
            "me",
            Some("first"),
            "set",
            Expect::Absent,
        )
        .unwrap();
        let e = reg
            .set_alias(
                "digits:2",
                "production",
                "me",
                None,
                "promote",
                Expect::Version(1),
            )
            .unwrap();
        assert_eq!((e.previous_version, e.new_version), (Some(1), Some(2)));
        assert_eq!(reg.get("digits@production").unwrap().version, 2);
        let chain: Vec<i64> = reg
            .lineage("digits@production")
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(chain, [2, 1]);
        assert!(reg.verify(None).unwrap().is_empty());
        let err = reg.archive("digits:2").unwrap_err();
        assert!(matches!(err, CoreError::Conflict(_)), "{err}");
        reg.archive("digits:1").unwrap();
        assert_eq!(reg.history("digits").unwrap().len(), 2);
        // A stale expectation is refused, recorded, and moves nothing.
        let err = reg
            .set_alias("digits:2", "production", "me", None, "set", Expect::Absent)
            .unwrap_err();
        assert!(matches!(err, CoreError::Precondition(_)), "{err}");
        assert!(
            err.to_string().contains("expected unset, found version 2"),
            "{err}"
        );
        let history = reg.history("digits").unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[2].action, REFUSED_ACTION);
        assert_eq!(reg.get("digits@production").unwrap().version, 2);
    }

    #[test]
    fn a_refusal_is_recorded_and_leaves_the_alias() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.onnx");
        std::fs::write(&f, b"a").unwrap();
        let mut reg = Registry::open(&d.path().join("reg")).unwrap();
        reg.register(request("m", &f)).unwrap();
        std::fs::write(&f, b"b").unwrap();
        reg.register(request("m", &f)).unwrap();
        reg.set_alias("m:1", "production", "me", None, "set", Expect::Any)
            .unwrap();
        let e = reg
            .record_refusal("m:2", "production", "ci", "live.requests 3 < 1000")
            .unwrap();
        assert_eq!(e.action, REFUSED_ACTION);
        assert_eq!((e.previous_version, e.new_version), (Some(1), Some(1)));
        assert_eq!(reg.get("m@production").unwrap().version, 1);
        assert_eq!(reg.history("m").unwrap().len(), 2);
        assert!(reg.record_refusal("m:9", "production", "ci", "x").is_err());
    }

    #[test]
    fn list_versions_orders_by_metrics_with_missing_last() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.onnx");
        std::fs::write(&f, b"x").unwrap();
        let mut reg = Registry::open(&d.path().join("reg")).unwrap();
        for acc in [Some(0.5), None, Some(0.9)] {
            let mut req = request("m", &f);
            req.metrics = acc.map(|a| vec![("acc".into(), a)]).unwrap_or_default();
            reg.register(req).unwrap();
        }
        let order = |o| -> Vec<i64> {
            reg.list_versions("m", &[], None, Some(o))
                .unwrap()
                .iter()
                .map(|r| r.version)
                .collect()
        };
        assert_eq!(order("-metrics.acc"), [3, 1, 2]);
        assert_eq!(order("metrics.acc"), [1, 3, 2]);
        assert_eq!(order("-version"), [3, 2, 1]);
        assert!(reg.list_versions("m", &[], None, Some("size")).is_err());
    }
}
