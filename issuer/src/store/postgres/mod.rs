//! The shared store: PostgreSQL, which several issuer replicas use at once.
//!
//! The connection is plain (`NoTls`): the database is expected on loopback or a
//! Unix socket. TLS to PostgreSQL is future work.
//!
//! A small fixed pool of connections, each opened on demand. Every mutation
//! runs in one transaction that first bumps `meta.revision`; that row lock
//! serializes writers across replicas, so revisions commit in order (a reader
//! never sees revision `n + 1` before `n`) and no two writers deadlock.
//!
//! A restart of PostgreSQL is survived: a connection found closed is replaced
//! before use; a read that fails because the connection closed under it is
//! retried once on a new connection; a write that fails that way is reported as
//! [`StoreError::Unavailable`], since it may or may not have committed, and it is
//! never applied twice.

mod queries;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Config, NoTls, Row, Transaction};

use super::{
    from_json, parse_status, to_u64, AgentRecord, EntryRecord, StoreError, MIGRATIONS,
    SCHEMA_VERSION,
};

/// Connections per store.
const POOL_SIZE: usize = 4;

/// How long connecting may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock that queues concurrent migrations ("lanyard" + 1).
const MIGRATION_LOCK: i64 = 0x6c61_6e79_6172_6401;

/// The PostgreSQL store.
pub struct PostgresStore {
    config: Config,
    /// `user@host:port/db`, for messages (never the password).
    name: String,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.name)
            .field("pool", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// Whether a failed call may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Repeating it is harmless.
    Read,
    /// Its outcome is unknown if the connection breaks.
    Write,
}

/// What an operation fails with.
#[derive(Debug)]
enum OpError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// An operation's result.
type Op<T> = Result<T, OpError>;

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`, a libpq-style URL)
    /// and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("lanyard-issuer");
        }
        let name = describe(&config);
        let store = Self {
            config,
            name,
            slots: (0..POOL_SIZE).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs the migrations, queued behind any other replica's.
    async fn migrate(&self) -> Result<(), StoreError> {
        let name = self.name.clone();
        self.run(Kind::Read, move |c| {
            let name = name.clone();
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                    .await?;
                tx.batch_execute(MIGRATIONS).await?;
                let row = tx
                    .query_one("SELECT schema_version FROM meta WHERE id = 1", &[])
                    .await?;
                let version: i64 = col(&row, 0)?;
                if version > SCHEMA_VERSION {
                    return Err(StoreError::Invalid(format!(
                        "{name}: schema version {version} is newer than this issuer's {SCHEMA_VERSION}"
                    ))
                    .into());
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    /// Opens one connection and spawns its task.
    async fn connect_one(&self) -> Result<Client, StoreError> {
        let (client, connection) =
            self.config.connect(NoTls).await.map_err(|e| {
                StoreError::Unavailable(format!("connecting to {}: {e}", self.name))
            })?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(database = %name, error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// A free pool slot, or the next one in turn.
    async fn checkout(&self) -> MutexGuard<'_, Option<Client>> {
        for s in &self.slots {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().await
    }

    /// Runs `f` on a pooled connection, replacing a closed one first. A read
    /// whose connection breaks is retried once; a write is not (its outcome is
    /// unknown).
    async fn run<T, F>(&self, kind: Kind, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'c> Fn(&'c mut Client) -> BoxFuture<'c, Op<T>> + Send + Sync,
    {
        let mut slot = self.checkout().await;
        let mut retried = false;
        loop {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = None;
                *slot = Some(self.connect_one().await?);
            }
            let Some(client) = slot.as_mut() else {
                return Err(StoreError::Unavailable(format!(
                    "no connection to {}",
                    self.name
                )));
            };
            let e = match f(client).await {
                Ok(v) => return Ok(v),
                Err(OpError::Store(e)) => return Err(e),
                Err(OpError::Pg(e)) => e,
            };
            if !(client.is_closed() || is_connection_error(&e)) {
                return Err(map_error(e));
            }
            *slot = None;
            match kind {
                Kind::Read if !retried => {
                    tracing::info!(database = %self.name, error = %e, "PostgreSQL connection lost; reconnecting");
                    retried = true;
                }
                Kind::Read => {
                    return Err(StoreError::Unavailable(format!("{}: {e}", self.name)));
                }
                Kind::Write => {
                    return Err(StoreError::Unavailable(format!(
                        "{}: connection lost during a write, which may or may not have been applied: {e}",
                        self.name
                    )));
                }
            }
        }
    }
}

/// `user@host:port/db` from a config.
fn describe(c: &Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or("")
    )
}

/// Whether an error means the connection is gone (or the server is going away).
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        // Class 08: connection exception; 57P0x: admin/crash shutdown, starting up.
        let c = code.code();
        return c.starts_with("08") || c.starts_with("57P");
    }
    // No SQLSTATE: an I/O error on the socket (or a protocol error, which
    // also leaves the connection unusable).
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// Maps an error that did not break the connection.
fn map_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
        Some(c) if c.code().starts_with("22") => StoreError::Invalid(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Column `i`, with a type mismatch reported as invalid data.
fn col<'r, T: FromSql<'r>>(row: &'r Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Invalid(format!("column {i}: {e}")))
}

/// Bumps the revision (taking the row lock that serializes writers).
async fn bump(tx: &Transaction<'_>) -> Op<i64> {
    let row = tx
        .query_one(
            "UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision",
            &[],
        )
        .await?;
    Ok(col(&row, 0)?)
}

/// The columns `entry_from_row` reads, in order.
const ENTRY_COLUMNS: &str =
    "id, subject, selectors, node_selectors, ttl_secs, audiences, networks, revision, deleted";

/// An `entries` row (selected with `ENTRY_COLUMNS`).
fn entry_from_row(r: &Row) -> Result<EntryRecord, StoreError> {
    Ok(EntryRecord {
        id: col(r, 0)?,
        subject: col(r, 1)?,
        selectors: from_json("selectors", col(r, 2)?)?,
        node_selectors: from_json("node_selectors", col(r, 3)?)?,
        ttl_secs: to_u64("ttl_secs", col(r, 4)?)?,
        audiences: from_json("audiences", col(r, 5)?)?,
        networks: from_json("networks", col(r, 6)?)?,
        revision: col(r, 7)?,
        deleted: col::<i32>(r, 8)? != 0,
    })
}

/// The columns `agent_from_row` reads, in order.
const AGENT_COLUMNS: &str = "id, selectors, status, attested_at, credential_jti, credential_exp";

/// An `agents` row (selected with `AGENT_COLUMNS`).
fn agent_from_row(r: &Row) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: col(r, 0)?,
        selectors: from_json("agent selectors", col(r, 1)?)?,
        status: parse_status(col(r, 2)?)?,
        attested_at: to_u64("attested_at", col(r, 3)?)?,
        credential_jti: col(r, 4)?,
        credential_exp: to_u64("credential_exp", col(r, 5)?)?,
    })
}
