//! The embedded store: one SQLite file (WAL, `synchronous=FULL`), mode 0600.
//!
//! One connection behind a mutex; every call runs on the blocking pool. Every
//! mutation runs in one `BEGIN IMMEDIATE` transaction that also bumps
//! `meta.revision`, and is committed (and, with `synchronous=FULL`, on disk)
//! before the call returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use rusqlite::{params, Connection, OptionalExtension as _, Transaction, TransactionBehavior};

use super::{
    from_json, new_entry_id, parse_status, to_i64, to_json, to_u64, AgentRecord, AgentStatus,
    Denial, EntryRecord, NewEntry, Store, StoreError, MIGRATIONS, SCHEMA_VERSION,
};

/// How long a writer waits for another process's lock (the CLI, a backup).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `path`,
    /// makes it mode 0600 and runs the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&p))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no open transaction behind
            // (rusqlite rolls back on drop), so the connection is still usable.
            let mut conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task: {e}")))?
    }

    /// Runs `f` in a write transaction after bumping the revision, which `f`
    /// receives. `f` returns the result and whether to commit; without a commit
    /// nothing, not even the bump, is kept.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> Result<(T, bool), StoreError> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let revision: i64 = tx
                .query_row(
                    "UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision",
                    [],
                    |r| r.get(0),
                )
                .map_err(err)?;
            let (v, commit) = f(&tx, revision)?;
            if commit {
                tx.commit().map_err(err)?;
            }
            Ok(v)
        })
        .await
    }
}

/// Creates, opens and configures the database; runs the migrations.
fn open_blocking(path: &Path) -> Result<Connection, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    // Create the file 0600 before SQLite does, so that it is never readable by others;
    // the WAL and shared-memory files inherit the database file's mode.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("creating", e))?;
    let conn = Connection::open(path).map_err(err)?;
    // An existing file may have been created looser.
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(path, private.clone()).map_err(|e| io("chmod 0600", e))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        if Path::new(&side).exists() {
            std::fs::set_permissions(&side, private.clone()).map_err(|e| io("chmod 0600", e))?;
        }
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{}: journal_mode is {mode}, WAL is required",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(err)?;
    let mut conn = conn;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch(MIGRATIONS).map_err(err)?;
    let version: i64 = tx
        .query_row("SELECT schema_version FROM meta WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "{}: schema version {version} is newer than this issuer's {SCHEMA_VERSION}",
            path.display()
        )));
    }
    tx.commit().map_err(err)?;
    Ok(conn)
}

/// Maps a SQLite error: constraint violations are conflicts, the rest is unavailability.
fn err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(e.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Invalid(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The columns `entry_from_row` reads, in order.
const ENTRY_COLUMNS: &str =
    "id, subject, selectors, node_selectors, ttl_secs, audiences, networks, revision, deleted";

/// An `entries` row (selected with `ENTRY_COLUMNS`).
fn entry_from_row(r: &rusqlite::Row<'_>) -> Result<EntryRecord, StoreError> {
    let text = |i: usize| r.get::<_, String>(i).map_err(err);
    Ok(EntryRecord {
        id: text(0)?,
        subject: text(1)?,
        selectors: from_json("selectors", &text(2)?)?,
        node_selectors: from_json("node_selectors", &text(3)?)?,
        ttl_secs: to_u64("ttl_secs", r.get(4).map_err(err)?)?,
        audiences: from_json("audiences", &text(5)?)?,
        networks: from_json("networks", &text(6)?)?,
        revision: r.get(7).map_err(err)?,
        deleted: r.get::<_, i64>(8).map_err(err)? != 0,
    })
}

/// The columns `agent_from_row` reads, in order.
const AGENT_COLUMNS: &str = "id, selectors, status, attested_at, credential_jti, credential_exp";

/// An `agents` row (selected with `AGENT_COLUMNS`).
fn agent_from_row(r: &rusqlite::Row<'_>) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: r.get(0).map_err(err)?,
        selectors: from_json("agent selectors", &r.get::<_, String>(1).map_err(err)?)?,
        status: parse_status(&r.get::<_, String>(2).map_err(err)?)?,
        attested_at: to_u64("attested_at", r.get(3).map_err(err)?)?,
        credential_jti: r.get(4).map_err(err)?,
        credential_exp: to_u64("credential_exp", r.get(5).map_err(err)?)?,
    })
}

/// Collects the rows of `sql` through `map`.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(err)?;
    let mut rows = stmt.query(params).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        out.push(map(r)?);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn revision(&self) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.call(|c| {
            c.query_row("SELECT revision FROM meta WHERE id = 1", [], |r| r.get(0))
                .map_err(err)
        })
        .boxed()
    }

    fn create_join_token<'a>(
        &'a self,
        hash: &'a str,
        name: &'a str,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (hash, name) = (hash.to_owned(), name.to_owned());
        async move {
            let expires_at = to_i64("expires_at", expires_at)?;
            self.write(move |tx, _| {
                tx.execute(
                    "INSERT INTO join_tokens (hash, name, expires_at) VALUES (?1, ?2, ?3)",
                    params![hash, name, expires_at],
                )
                .map_err(err)?;
                Ok(((), true))
            })
            .await
        }
        .boxed()
    }

    fn redeem_join_token<'a>(
        &'a self,
        hash: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let hash = hash.to_owned();
        async move {
            let now = to_i64("now", now)?;
            self.write(move |tx, _| {
                let name: Option<String> = tx
                    .query_row(
                        "UPDATE join_tokens SET used_at = ?1 \
                         WHERE hash = ?2 AND used_at IS NULL AND expires_at > ?1 RETURNING name",
                        params![now, hash],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                let found = name.is_some();
                Ok((name, found))
            })
            .await
        }
        .boxed()
    }

    fn allow_device<'a>(
        &'a self,
        name: &'a str,
        public_key_hex: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (name, key) = (name.to_owned(), public_key_hex.to_owned());
        self.write(move |tx, _| {
            tx.execute(
                "INSERT INTO devices (name, public_key) VALUES (?1, ?2)",
                params![name, key],
            )
            .map_err(|e| match err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("device {name:?} is already allowed"))
                }
                other => other,
            })?;
            Ok(((), true))
        })
        .boxed()
    }

    fn device_key<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let name = name.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT public_key FROM devices WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)
        })
        .boxed()
    }

    fn create_entry<'a>(
        &'a self,
        e: &'a NewEntry,
    ) -> BoxFuture<'a, Result<EntryRecord, StoreError>> {
        async move {
            let mut rec = e.record(new_entry_id()?);
            let ttl = to_i64("ttl_secs", e.ttl_secs)?;
            let (sel, node, aud, net) = (
                to_json(&e.selectors)?,
                to_json(&e.node_selectors)?,
                to_json(&e.audiences)?,
                to_json(&e.networks)?,
            );
            let id = rec.id.clone();
            let subject = rec.subject.clone();
            rec.revision = self
                .write(move |tx, revision| {
                    tx.execute(
                        "INSERT INTO entries (id, subject, selectors, node_selectors, ttl_secs, \
                         audiences, networks, revision, deleted) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
                        params![id, subject, sel, node, ttl, aud, net, revision],
                    )
                    .map_err(err)?;
                    Ok((revision, true))
                })
                .await?;
            Ok(rec)
        }
        .boxed()
    }

    fn delete_entry<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let id = id.to_owned();
        self.write(move |tx, revision| {
            let n = tx
                .execute(
                    "UPDATE entries SET deleted = 1, revision = ?1 WHERE id = ?2 AND deleted = 0",
                    params![revision, id],
                )
                .map_err(err)?;
            Ok((n == 1, n == 1))
        })
        .boxed()
    }

    fn entries_since(&self, revision: i64) -> BoxFuture<'_, Result<Vec<EntryRecord>, StoreError>> {
        self.call(move |c| {
            query_all(
                c,
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries WHERE revision > ?1 ORDER BY revision"
                ),
                params![revision],
                entry_from_row,
            )
        })
        .boxed()
    }

    fn entry<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<EntryRecord>, StoreError>> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(query_all(
                c,
                &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?1 AND deleted = 0"),
                params![id],
                entry_from_row,
            )?
            .pop())
        })
        .boxed()
    }

    fn upsert_agent<'a>(&'a self, a: &'a AgentRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        let a = a.clone();
        async move {
            let sel = to_json(&a.selectors)?;
            let attested_at = to_i64("attested_at", a.attested_at)?;
            let exp = to_i64("credential_exp", a.credential_exp)?;
            self.write(move |tx, _| {
                let current: Option<String> = tx
                    .query_row(
                        "SELECT status FROM agents WHERE id = ?1",
                        params![a.id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                if current.as_deref() == Some(AgentStatus::Revoked.as_str()) {
                    return Err(StoreError::Conflict(format!(
                        "agent {} is revoked; it must attest under a new id",
                        a.id
                    )));
                }
                tx.execute(
                    "INSERT INTO agents (id, selectors, status, attested_at, credential_jti, \
                     credential_exp) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (id) DO UPDATE SET selectors = excluded.selectors, \
                     status = CASE WHEN agents.status = 'suspended' THEN agents.status ELSE excluded.status END, \
                     attested_at = excluded.attested_at, \
                     credential_jti = excluded.credential_jti, \
                     credential_exp = excluded.credential_exp",
                    params![
                        a.id,
                        sel,
                        a.status.as_str(),
                        attested_at,
                        a.credential_jti,
                        exp
                    ],
                )
                .map_err(err)?;
                Ok(((), true))
            })
            .await
        }
        .boxed()
    }

    fn agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AgentRecord>, StoreError>> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(query_all(
                c,
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
                params![id],
                agent_from_row,
            )?
            .pop())
        })
        .boxed()
    }

    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentRecord>, StoreError>> {
        self.call(|c| {
            query_all(
                c,
                &format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id"),
                [],
                agent_from_row,
            )
        })
        .boxed()
    }

    fn set_agent_status<'a>(
        &'a self,
        id: &'a str,
        status: AgentStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let id = id.to_owned();
        self.write(move |tx, _| {
            let current: Option<String> = tx
                .query_row(
                    "SELECT status FROM agents WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            let Some(current) = current else {
                return Ok((false, false));
            };
            match parse_status(&current)? {
                // Revoking twice changes nothing.
                AgentStatus::Revoked if status == AgentStatus::Revoked => Ok((true, false)),
                AgentStatus::Revoked => Err(StoreError::Conflict(format!(
                    "agent {id} is revoked; revocation is final"
                ))),
                _ => {
                    tx.execute(
                        "UPDATE agents SET status = ?1 WHERE id = ?2",
                        params![status.as_str(), id],
                    )
                    .map_err(err)?;
                    Ok((true, true))
                }
            }
        })
        .boxed()
    }

    fn deny<'a>(&'a self, d: &'a Denial) -> BoxFuture<'a, Result<i64, StoreError>> {
        let (kind, value) = d.to_row();
        let value = value.to_owned();
        self.write(move |tx, revision| {
            let n = tx
                .execute(
                    "INSERT INTO denials (seq, kind, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (kind, value) DO NOTHING",
                    params![revision, kind, value],
                )
                .map_err(err)?;
            if n == 1 {
                Ok((revision, true))
            } else {
                // Already denied: keep the revision as it was (we hold the write lock).
                Ok((revision - 1, false))
            }
        })
        .boxed()
    }

    fn denials(&self) -> BoxFuture<'_, Result<Vec<Denial>, StoreError>> {
        self.call(|c| {
            query_all(c, "SELECT kind, value FROM denials ORDER BY seq", [], |r| {
                let kind: String = r.get(0).map_err(err)?;
                Denial::from_row(&kind, r.get(1).map_err(err)?)
            })
        })
        .boxed()
    }

    fn publish_jwt_key<'a>(
        &'a self,
        kid: &'a str,
        jwk_json: &'a str,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (kid, jwk) = (kid.to_owned(), jwk_json.to_owned());
        async move {
            let expires_at = to_i64("expires_at", expires_at)?;
            self.write(move |tx, _| {
                tx.execute(
                    "INSERT INTO jwt_keys (kid, jwk, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (kid) DO UPDATE SET jwk = excluded.jwk, \
                     expires_at = excluded.expires_at",
                    params![kid, jwk, expires_at],
                )
                .map_err(err)?;
                Ok(((), true))
            })
            .await
        }
        .boxed()
    }

    fn jwt_keys(&self, now: u64) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        async move {
            let now = to_i64("now", now)?;
            self.call(move |c| {
                query_all(
                    c,
                    "SELECT kid, jwk FROM jwt_keys WHERE expires_at > ?1 ORDER BY kid",
                    params![now],
                    |r| Ok((r.get(0).map_err(err)?, r.get(1).map_err(err)?)),
                )
            })
            .await
        }
        .boxed()
    }
}
