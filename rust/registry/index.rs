//! The registry index: an SQLite database in WAL mode (`<root>/index.db`).
//!
//! Schema migrations are numbered by `PRAGMA user_version`; [`MIGRATIONS`]`[i]` takes the schema
//! from version `i` to `i + 1`, each applied in its own write transaction so that processes
//! opening the registry at once migrate it exactly once. The database enforces what the
//! registry promises: versions are unique per model, a version's artifact, signature, metadata
//! and lineage cannot be updated, and the alias audit log is append-only (triggers).
//!
//! Concurrency: every write runs in a `BEGIN IMMEDIATE` transaction (one writer at a time
//! across processes, others wait up to [`BUSY_TIMEOUT`]); readers never block in WAL mode.
//! `synchronous=NORMAL`: a crash of the process never loses a committed transaction; a power
//! loss may lose the last ones, never consistency (blobs are flushed before their row commits).

use super::refs::{Reference, Selector};
use crate::error::{CoreError, CoreResult};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior, MAIN_DB};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a writer waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Schema migrations, in order; see the module docs.
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE models (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    tags         TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE versions (
    id          INTEGER PRIMARY KEY,
    model_id    INTEGER NOT NULL REFERENCES models(id),
    version     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'directory')),
    format      TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    signature   TEXT,
    metadata    TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    tags        TEXT NOT NULL,
    variant     TEXT,
    parent      TEXT,
    source      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    archived    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (model_id, version)
);
CREATE INDEX versions_by_artifact ON versions (kind, digest);
CREATE TRIGGER versions_are_immutable
BEFORE UPDATE OF model_id, version, digest, kind, format, manifest, size_bytes, created_at,
                 signature, metadata, variant, parent, source ON versions
BEGIN SELECT RAISE(ABORT, 'a registered version is immutable'); END;
CREATE TRIGGER versions_are_never_deleted BEFORE DELETE ON versions
BEGIN SELECT RAISE(ABORT, 'registered versions are never deleted'); END;
CREATE TABLE aliases (
    model_id INTEGER NOT NULL REFERENCES models(id),
    alias    TEXT NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (model_id, alias)
) WITHOUT ROWID;
CREATE INDEX aliases_by_version ON aliases (model_id, version);
CREATE TABLE alias_events (
    id               INTEGER PRIMARY KEY,
    model_id         INTEGER NOT NULL REFERENCES models(id),
    time             TEXT NOT NULL,
    alias            TEXT NOT NULL,
    action           TEXT NOT NULL,
    previous_version INTEGER,
    new_version      INTEGER,
    actor            TEXT NOT NULL,
    reason           TEXT
);
CREATE INDEX alias_events_by_model ON alias_events (model_id, id);
CREATE TRIGGER alias_events_no_update BEFORE UPDATE ON alias_events
BEGIN SELECT RAISE(ABORT, 'the alias audit log is append-only'); END;
CREATE TRIGGER alias_events_no_delete BEFORE DELETE ON alias_events
BEGIN SELECT RAISE(ABORT, 'the alias audit log is append-only'); END;
"#];

/// One version as stored; JSON fields are left as text for the caller to decode.
#[derive(Clone, Debug)]
pub struct VersionRow {
    pub name: String,
    pub version: i64,
    pub digest: String,
    pub kind: String,
    pub format: String,
    pub manifest: String,
    pub size_bytes: i64,
    pub created_at: String,
    pub signature: Option<String>,
    pub metadata: String,
    pub metrics: String,
    pub tags: String,
    pub variant: Option<String>,
    pub parent: Option<String>,
    pub source: String,
    pub description: String,
    pub archived: bool,
    pub aliases: Vec<String>,
}

/// A registered model with summary figures.
#[derive(Clone, Debug)]
pub struct ModelRow {
    pub name: String,
    pub description: String,
    pub tags: String,
    pub created_at: String,
    /// Latest version that is not archived.
    pub latest_version: Option<i64>,
    pub version_count: i64,
    pub aliases: Vec<(String, i64)>,
}

/// One alias move from the audit log.
#[derive(Clone, Debug)]
pub struct AliasEvent {
    pub time: String,
    pub model: String,
    pub alias: String,
    pub action: String,
    pub previous_version: Option<i64>,
    pub new_version: Option<i64>,
    pub actor: String,
    pub reason: Option<String>,
}

/// The fields of a version being registered.
pub struct NewVersion<'a> {
    pub digest: &'a str,
    pub kind: &'a str,
    pub format: &'a str,
    pub manifest: &'a str,
    pub size_bytes: u64,
    pub signature: Option<&'a str>,
    pub metadata: &'a str,
    pub metrics: &'a str,
    pub tags: &'a str,
    pub variant: Option<&'a str>,
    pub parent: Option<&'a str>,
    pub source: &'a str,
    pub description: &'a str,
}

/// The current time as UTC ISO-8601 with microseconds, e.g. `2025-01-31T09:05:07.123456Z`
/// (fixed width, so text order is time order).
pub fn now_iso() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

const VERSION_COLUMNS: &str = "m.name, v.version, v.digest, v.kind, v.format, v.manifest, \
     v.size_bytes, v.created_at, v.signature, v.metadata, v.metrics, v.tags, v.variant, \
     v.parent, v.source, v.description, v.archived";

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        name: r.get(0)?,
        version: r.get(1)?,
        digest: r.get(2)?,
        kind: r.get(3)?,
        format: r.get(4)?,
        manifest: r.get(5)?,
        size_bytes: r.get(6)?,
        created_at: r.get(7)?,
        signature: r.get(8)?,
        metadata: r.get(9)?,
        metrics: r.get(10)?,
        tags: r.get(11)?,
        variant: r.get(12)?,
        parent: r.get(13)?,
        source: r.get(14)?,
        description: r.get(15)?,
        archived: r.get(16)?,
        aliases: Vec::new(),
    })
}

/// (model name, version, kind, digest, manifest JSON) of one version.
pub type ArtifactRef = (String, i64, String, String, String);

fn row_with_aliases(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    let mut row = version_row(r)?;
    let aliases: Option<String> = r.get(17)?;
    if let Some(a) = aliases {
        // Alias names cannot contain ',' (see refs::validate_name).
        row.aliases = a.split(',').map(str::to_string).collect();
        row.aliases.sort_unstable();
    }
    Ok(row)
}

/// Queries over one connection or transaction; `path` names the database in errors.
pub struct Db<'a> {
    pub conn: &'a Connection,
    path: &'a Path,
}

/// A resolved reference: the model's row id, its name and a version number.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub model_id: i64,
    pub name: String,
    pub version: i64,
}

/// Map an SQLite error on the database at `path` to the core error kinds: busy after the
/// timeout is `Unavailable`, a violated constraint (e.g. an immutable field) is `Conflict`.
fn sql_error(path: &Path, e: rusqlite::Error) -> CoreError {
    {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) {
                return CoreError::Unavailable(format!(
                    "{}: another process held the registry index for over {}s",
                    path.display(),
                    BUSY_TIMEOUT.as_secs()
                ));
            }
            if f.code == rusqlite::ErrorCode::ConstraintViolation {
                let text = msg.clone().unwrap_or_else(|| e.to_string());
                return CoreError::Conflict(format!("{}: {text}", path.display()));
            }
        }
        CoreError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        }
    }
}

impl Db<'_> {
    pub fn err(&self, e: rusqlite::Error) -> CoreError {
        sql_error(self.path, e)
    }

    pub fn model_id(&self, name: &str) -> CoreResult<i64> {
        self.conn
            .prepare_cached("SELECT id FROM models WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))?
            .ok_or_else(|| CoreError::not_found(format!("unknown model {name:?}")))
    }

    /// The model id and version a reference points at; `NotFound` naming what is missing.
    pub fn resolve(&self, r: &Reference) -> CoreResult<Resolved> {
        let model_id = self.model_id(&r.name)?;
        let name = &r.name;
        let version: Option<i64> = match &r.selector {
            Selector::Version(v) => self
                .conn
                .prepare_cached("SELECT 1 FROM versions WHERE model_id = ?1 AND version = ?2")
                .and_then(|mut s| s.exists(params![model_id, v]))
                .map_err(|e| self.err(e))?
                .then_some(*v)
                .ok_or_else(|| CoreError::not_found(format!("model {name:?} has no version {v}")))
                .map(Some)?,
            Selector::Alias(alias) => Some(
                self.conn
                    .prepare_cached(
                        "SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![model_id, alias], |r| r.get(0))
                            .optional()
                    })
                    .map_err(|e| self.err(e))?
                    .ok_or_else(|| {
                        CoreError::not_found(format!("model {name:?} has no alias {alias:?}"))
                    })?,
            ),
            Selector::Latest => self
                .conn
                .prepare_cached(
                    "SELECT version FROM versions WHERE model_id = ?1 AND archived = 0 \
                     ORDER BY version DESC LIMIT 1",
                )
                .and_then(|mut s| s.query_row([model_id], |r| r.get(0)).optional())
                .map_err(|e| self.err(e))?,
        };
        let version = version.ok_or_else(|| {
            CoreError::not_found(format!(
                "model {name:?} has no version that is not archived"
            ))
        })?;
        Ok(Resolved {
            model_id,
            name: r.name.clone(),
            version,
        })
    }

    /// The full row of a resolved version, with the aliases pointing at it.
    pub fn version(&self, at: &Resolved) -> CoreResult<VersionRow> {
        self.get(&Reference {
            name: at.name.clone(),
            selector: Selector::Version(at.version),
        })
    }

    /// The row a reference points at, in one query (lookups are the hot path of serving);
    /// `NotFound` naming what is missing.
    pub fn get(&self, r: &Reference) -> CoreResult<VersionRow> {
        const ALIASES: &str = "(SELECT group_concat(a.alias, ',') FROM aliases a \
             WHERE a.model_id = v.model_id AND a.version = v.version)";
        let found = match &r.selector {
            Selector::Version(version) => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}, {ALIASES} FROM models m \
                     JOIN versions v ON v.model_id = m.id WHERE m.name = ?1 AND v.version = ?2"
                );
                self.conn.prepare_cached(&sql).and_then(|mut s| {
                    s.query_row(params![r.name, version], row_with_aliases)
                        .optional()
                })
            }
            Selector::Alias(alias) => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}, {ALIASES} FROM models m \
                     JOIN aliases al ON al.model_id = m.id \
                     JOIN versions v ON v.model_id = m.id AND v.version = al.version \
                     WHERE m.name = ?1 AND al.alias = ?2"
                );
                self.conn.prepare_cached(&sql).and_then(|mut s| {
                    s.query_row(params![r.name, alias], row_with_aliases)
                        .optional()
                })
            }
            Selector::Latest => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}, {ALIASES} FROM models m \
                     JOIN versions v ON v.model_id = m.id WHERE m.name = ?1 AND v.archived = 0 \
                     ORDER BY v.version DESC LIMIT 1"
                );
                self.conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| s.query_row(params![r.name], row_with_aliases).optional())
            }
        };
        match found.map_err(|e| self.err(e))? {
            Some(row) => Ok(row),
            // Nothing matched: resolving step by step names the missing part.
            None => {
                let at = self.resolve(r)?;
                Err(CoreError::not_found(format!(
                    "{}:{} is not in the index",
                    at.name, at.version
                )))
            }
        }
    }

    /// Every version of a model (optionally of one variant), oldest first, with aliases.
    pub fn versions_of(&self, model_id: i64, variant: Option<&str>) -> CoreResult<Vec<VersionRow>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v JOIN models m ON m.id = v.model_id \
             WHERE v.model_id = ?1 AND (?2 IS NULL OR v.variant = ?2) ORDER BY v.version"
        );
        let mut rows = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params![model_id, variant], version_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        let mut by_version: HashMap<i64, Vec<String>> = HashMap::new();
        self.conn
            .prepare_cached("SELECT version, alias FROM aliases WHERE model_id = ?1 ORDER BY alias")
            .and_then(|mut s| {
                for pair in s.query_map([model_id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                    let (v, a): (i64, String) = pair?;
                    by_version.entry(v).or_default().push(a);
                }
                Ok(())
            })
            .map_err(|e| self.err(e))?;
        for row in &mut rows {
            if let Some(a) = by_version.remove(&row.version) {
                row.aliases = a;
            }
        }
        Ok(rows)
    }

    /// Every (name, version, kind, digest, manifest) in the index, ordered by name and version.
    pub fn artifacts(&self) -> CoreResult<Vec<ArtifactRef>> {
        self.conn
            .prepare_cached(
                "SELECT m.name, v.version, v.kind, v.digest, v.manifest \
                 FROM versions v JOIN models m ON m.id = v.model_id ORDER BY m.name, v.version",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    pub fn models(&self) -> CoreResult<Vec<ModelRow>> {
        let mut aliases: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
        self.conn
            .prepare_cached("SELECT model_id, alias, version FROM aliases ORDER BY alias")
            .and_then(|mut s| {
                for t in s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
                    let (id, alias, v): (i64, String, i64) = t?;
                    aliases.entry(id).or_default().push((alias, v));
                }
                Ok(())
            })
            .map_err(|e| self.err(e))?;
        self.conn
            .prepare_cached(
                "SELECT m.id, m.name, m.description, m.tags, m.created_at, \
                   (SELECT max(version) FROM versions WHERE model_id = m.id AND archived = 0), \
                   (SELECT count(*) FROM versions WHERE model_id = m.id) \
                 FROM models m ORDER BY m.name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    let id: i64 = r.get(0)?;
                    Ok(ModelRow {
                        name: r.get(1)?,
                        description: r.get(2)?,
                        tags: r.get(3)?,
                        created_at: r.get(4)?,
                        latest_version: r.get(5)?,
                        version_count: r.get(6)?,
                        aliases: aliases.remove(&id).unwrap_or_default(),
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    pub fn history(&self, model_id: i64) -> CoreResult<Vec<AliasEvent>> {
        self.conn
            .prepare_cached(
                "SELECT e.time, m.name, e.alias, e.action, e.previous_version, e.new_version, \
                   e.actor, e.reason \
                 FROM alias_events e JOIN models m ON m.id = e.model_id \
                 WHERE e.model_id = ?1 ORDER BY e.id",
            )
            .and_then(|mut s| {
                s.query_map([model_id], |r| {
                    Ok(AliasEvent {
                        time: r.get(0)?,
                        model: r.get(1)?,
                        alias: r.get(2)?,
                        action: r.get(3)?,
                        previous_version: r.get(4)?,
                        new_version: r.get(5)?,
                        actor: r.get(6)?,
                        reason: r.get(7)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The version an alias points at now, if any.
    pub fn alias_target(&self, model_id: i64, alias: &str) -> CoreResult<Option<i64>> {
        self.conn
            .prepare_cached("SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2")
            .and_then(|mut s| {
                s.query_row(params![model_id, alias], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Record an alias move (`new_version` None deletes the alias) and its audit event.
    #[allow(clippy::too_many_arguments)]
    pub fn move_alias(
        &self,
        model_id: i64,
        alias: &str,
        action: &str,
        previous: Option<i64>,
        new_version: Option<i64>,
        actor: &str,
        reason: Option<&str>,
    ) -> CoreResult<()> {
        let changed = match new_version {
            Some(v) => self
                .conn
                .prepare_cached(
                    "INSERT INTO aliases (model_id, alias, version) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version",
                )
                .and_then(|mut s| s.execute(params![model_id, alias, v])),
            None => self
                .conn
                .prepare_cached("DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2")
                .and_then(|mut s| s.execute(params![model_id, alias])),
        };
        changed.map_err(|e| self.err(e))?;
        self.record_event(
            model_id,
            alias,
            action,
            previous,
            new_version,
            actor,
            reason,
        )
    }

    /// Append one event to the alias audit log (the alias itself is not touched: a refused
    /// attempt, or the move that [`Self::move_alias`] made).
    #[allow(clippy::too_many_arguments)]
    pub fn record_event(
        &self,
        model_id: i64,
        alias: &str,
        action: &str,
        previous: Option<i64>,
        new_version: Option<i64>,
        actor: &str,
        reason: Option<&str>,
    ) -> CoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO alias_events \
                   (model_id, time, alias, action, previous_version, new_version, actor, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    model_id,
                    now_iso(),
                    alias,
                    action,
                    previous,
                    new_version,
                    actor,
                    reason
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Insert a new version of `name` (creating the model) and return its number. Call inside
    /// a write transaction: the next number is read and bumped under the write lock.
    pub fn insert_version(&self, name: &str, v: &NewVersion<'_>) -> CoreResult<i64> {
        let now = now_iso();
        self.conn
            .prepare_cached(
                "INSERT INTO models (name, created_at) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![name, now]))
            .map_err(|e| self.err(e))?;
        let (model_id, version): (i64, i64) = self
            .conn
            .prepare_cached("SELECT id, next_version FROM models WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(|e| self.err(e))?;
        self.conn
            .prepare_cached(
                "INSERT INTO versions (model_id, version, digest, kind, format, manifest, \
                   size_bytes, created_at, signature, metadata, metrics, tags, variant, parent, \
                   source, description) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    model_id,
                    version,
                    v.digest,
                    v.kind,
                    v.format,
                    v.manifest,
                    v.size_bytes as i64,
                    now,
                    v.signature,
                    v.metadata,
                    v.metrics,
                    v.tags,
                    v.variant,
                    v.parent,
                    v.source,
                    v.description
                ])
            })
            .map_err(|e| self.err(e))?;
        self.conn
            .prepare_cached("UPDATE models SET next_version = ?1 WHERE id = ?2")
            .and_then(|mut s| s.execute(params![version + 1, model_id]))
            .map_err(|e| self.err(e))?;
        Ok(version)
    }

    /// Set one mutable column (`tags`, `metrics`, `description`, `archived`) of a version.
    pub fn update_version(
        &self,
        at: &Resolved,
        column: &str,
        value: &dyn rusqlite::ToSql,
    ) -> CoreResult<()> {
        let sql = match column {
            "tags" => "UPDATE versions SET tags = ?1 WHERE model_id = ?2 AND version = ?3",
            "metrics" => "UPDATE versions SET metrics = ?1 WHERE model_id = ?2 AND version = ?3",
            "description" => {
                "UPDATE versions SET description = ?1 WHERE model_id = ?2 AND version = ?3"
            }
            "archived" => "UPDATE versions SET archived = ?1 WHERE model_id = ?2 AND version = ?3",
            other => {
                return Err(CoreError::invalid(format!(
                    "version field {other:?} cannot be changed"
                )))
            }
        };
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params![value, at.model_id, at.version]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Set a model's tags (JSON text) and/or description.
    pub fn update_model(
        &self,
        model_id: i64,
        tags: Option<&str>,
        description: Option<&str>,
    ) -> CoreResult<()> {
        self.conn
            .prepare_cached(
                "UPDATE models SET tags = coalesce(?1, tags), \
                   description = coalesce(?2, description) WHERE id = ?3",
            )
            .and_then(|mut s| s.execute(params![tags, description, model_id]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The current tags (JSON text) of a model.
    pub fn model_tags(&self, model_id: i64) -> CoreResult<String> {
        self.conn
            .prepare_cached("SELECT tags FROM models WHERE id = ?1")
            .and_then(|mut s| s.query_row([model_id], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// Every (kind, digest) referenced by some version.
    pub fn referenced(&self) -> CoreResult<Vec<(String, String)>> {
        self.conn
            .prepare_cached("SELECT DISTINCT kind, digest FROM versions")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.err(e))
    }
}

/// The index database of one registry, opened and migrated.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Open (creating and migrating as needed) the index at `path`.
    /// `Conflict` when the database was written by a newer servekit with an unknown schema.
    ///
    /// An index this process may not write (a registry baked read-only into a container image,
    /// a read-only mount) is opened as an immutable snapshot instead: SQLite could not create
    /// the WAL's `-shm` file next to it, and nothing can write it anyway. A snapshot does not
    /// see later writes by other processes, and must already be at this servekit's schema.
    pub fn open(path: &Path) -> CoreResult<Index> {
        let conn = Connection::open(path).map_err(|e| sql_error(path, e))?;
        if path.is_file() && conn.is_readonly(MAIN_DB).map_err(|e| sql_error(path, e))? {
            drop(conn);
            return Index::open_snapshot(path);
        }
        let mut index = Index {
            conn,
            path: path.to_path_buf(),
        };
        index.configure()?;
        index.migrate()?;
        Ok(index)
    }

    fn open_snapshot(path: &Path) -> CoreResult<Index> {
        let mut uri = String::from("file:");
        for c in path.to_string_lossy().chars() {
            match c {
                '%' => uri.push_str("%25"),
                '?' => uri.push_str("%3f"),
                '#' => uri.push_str("%23"),
                c => uri.push(c),
            }
        }
        uri.push_str("?immutable=1");
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&uri, flags).map_err(|e| sql_error(path, e))?;
        let index = Index {
            conn,
            path: path.to_path_buf(),
        };
        let (current, known) = (index.schema_version()?, MIGRATIONS.len() as i64);
        if current != known {
            return Err(CoreError::Conflict(format!(
                "{}: the read-only index is at schema version {current}, this servekit needs \
                 {known}; open the registry once where it is writable",
                path.display()
            )));
        }
        Ok(index)
    }

    fn configure(&mut self) -> CoreResult<()> {
        let db = Db {
            conn: &self.conn,
            path: &self.path,
        };
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db.err(e))?;
        self.conn.set_prepared_statement_cache_capacity(64);
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| db.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!(
                    "the file system refused WAL mode (journal_mode is {mode})"
                )),
            });
        }
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| db.err(e))
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> CoreResult<i64> {
        self.db()
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.db().err(e))
    }

    fn migrate(&mut self) -> CoreResult<()> {
        let known = MIGRATIONS.len() as i64;
        loop {
            let current = self.schema_version()?;
            if current == known {
                return Ok(());
            }
            if current > known {
                return Err(CoreError::Conflict(format!(
                    "{}: index schema version {current} is newer than this servekit supports \
                     ({known}); upgrade servekit",
                    self.path.display()
                )));
            }
            self.write(|db| {
                // Another process may have migrated while this one waited for the lock.
                let now: i64 = db
                    .conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .map_err(|e| db.err(e))?;
                if now == current {
                    db.conn
                        .execute_batch(MIGRATIONS[current as usize])
                        .and_then(|_| {
                            db.conn
                                .execute_batch(&format!("PRAGMA user_version = {}", current + 1))
                        })
                        .map_err(|e| db.err(e))?;
                }
                Ok(())
            })?;
        }
    }

    /// Queries outside any explicit transaction (each statement reads one snapshot).
    pub fn db(&self) -> Db<'_> {
        Db {
            conn: &self.conn,
            path: &self.path,
        }
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction, committed when it returns Ok.
    pub fn write<T>(&mut self, f: impl FnOnce(&Db<'_>) -> CoreResult<T>) -> CoreResult<T> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error(&path, e))?;
        let db = Db {
            conn: &tx,
            path: &path,
        };
        let out = f(&db)?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_is_fixed_width_utc() {
        let t = now_iso();
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() > "2024-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_snapshot_reads_and_refuses_writes_without_wal_files() {
        // Root may write any file, so the read-only detection itself is checked where a
        // non-root user opens a read-only registry (the container test); this checks the
        // snapshot it falls back to.
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("dir?#%").join("index.db");
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        drop(Index::open(&path).unwrap());
        let mut index = Index::open_snapshot(&path).unwrap();
        assert!(index.conn.is_readonly(MAIN_DB).unwrap());
        assert_eq!(index.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let written = index.write(|db| {
            db.conn
                .execute_batch("CREATE TABLE t (x)")
                .map_err(|e| db.err(e))
        });
        assert!(written.is_err());
        assert!(!path.with_file_name("index.db-shm").exists());
        assert!(!path.with_file_name("index.db-wal").exists());
    }

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("index.db");
        let index = Index::open(&path).unwrap();
        assert_eq!(index.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(index);
        // Reopening does not migrate again (the tables would already exist).
        let index = Index::open(&path).unwrap();
        index
            .db()
            .conn
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        drop(index);
        let err = Index::open(&path).err().unwrap();
        assert!(matches!(err, CoreError::Conflict(_)));
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn the_database_refuses_edits_to_versions_and_the_audit_log() {
        let d = tempfile::tempdir().unwrap();
        let mut index = Index::open(&d.path().join("index.db")).unwrap();
        let nv = NewVersion {
            digest: "blake3:00",
            kind: "file",
            format: "onnx",
            manifest: "[]",
            size_bytes: 0,
            signature: None,
            metadata: "{}",
            metrics: "{}",
            tags: "{}",
            variant: None,
            parent: None,
            source: "{}",
            description: "",
        };
        let v = index.write(|db| db.insert_version("m", &nv)).unwrap();
        assert_eq!(v, 1);
        assert_eq!(index.write(|db| db.insert_version("m", &nv)).unwrap(), 2);
        index
            .write(|db| db.move_alias(1, "prod", "set", None, Some(1), "me", None))
            .unwrap();
        let conn = &index.db().conn;
        for sql in [
            "UPDATE versions SET digest = 'x'",
            "DELETE FROM versions",
            "UPDATE alias_events SET actor = 'x'",
            "DELETE FROM alias_events",
        ] {
            let err = conn.execute(sql, []).unwrap_err().to_string();
            assert!(
                err.contains("immutable") || err.contains("never") || err.contains("append-only"),
                "{sql}: {err}"
            );
        }
        conn.execute("UPDATE versions SET metrics = '{\"a\":1}'", [])
            .unwrap();
    }
}
