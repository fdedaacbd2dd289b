//! The issuer's durable state behind one trait: SQLite embedded (default) and
//! PostgreSQL (several replicas share one). Both run the same migrations
//! (`migrations.sql`), and every mutation is committed before it is acknowledged.
//!
//! One `revision` counter grows on every mutation (entries, agents, denials,
//! published keys). Replicas poll it to learn about each other's writes; agents
//! sync entries by it.

use futures_util::future::BoxFuture;

pub mod postgres;
pub mod sqlite;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database is unreachable or failed the operation; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation conflicts with existing state (a duplicate name, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store URL or a stored value is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// A registration entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Issuer-assigned id.
    pub id: String,
    /// SPIFFE ID or `urn:` name (may be a template, filled by the agent).
    pub subject: String,
    /// Workload selectors: all must be among the caller's.
    pub selectors: Vec<String>,
    /// Node selectors: all must be among the agent's.
    pub node_selectors: Vec<String>,
    /// Credential lifetime.
    pub ttl_secs: u64,
    /// Audiences of the seed + JWT credential.
    pub audiences: Vec<String>,
    /// Networks.
    pub networks: Vec<String>,
    /// The revision of its last change.
    pub revision: i64,
    /// A tombstone: the entry was deleted at `revision`.
    pub deleted: bool,
}

/// What `create_entry` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// See [`EntryRecord`].
    pub subject: String,
    /// See [`EntryRecord`].
    pub selectors: Vec<String>,
    /// See [`EntryRecord`].
    pub node_selectors: Vec<String>,
    /// See [`EntryRecord`].
    pub ttl_secs: u64,
    /// See [`EntryRecord`].
    pub audiences: Vec<String>,
    /// See [`EntryRecord`].
    pub networks: Vec<String>,
}

impl NewEntry {
    /// The record it becomes under `id` (its revision is set when it is stored).
    pub fn record(&self, id: String) -> EntryRecord {
        EntryRecord {
            id,
            subject: self.subject.clone(),
            selectors: self.selectors.clone(),
            node_selectors: self.node_selectors.clone(),
            ttl_secs: self.ttl_secs,
            audiences: self.audiences.clone(),
            networks: self.networks.clone(),
            revision: 0,
            deleted: false,
        }
    }
}

/// An agent's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentStatus {
    /// May open sessions.
    Active,
    /// Refused until resumed (reversible).
    Suspended,
    /// Refused forever; the node must attest again under a new id.
    Revoked,
}

impl AgentStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        }
    }
    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// An attested agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// `spiffe://<td>/lanyard/agent/<attestor>/<name>`.
    pub id: String,
    /// Its node selectors, from node attestation.
    pub selectors: Vec<String>,
    /// Standing.
    pub status: AgentStatus,
    /// When it (last) attested.
    pub attested_at: u64,
    /// The jti of its current agent credential.
    pub credential_jti: String,
    /// When that credential expires.
    pub credential_exp: u64,
}

/// One revoked thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A token, by `jti`.
    Jti(String),
    /// A chain issuer, by the `jti` of its chain issuer token.
    Chain(String),
}

/// The issuer's state.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The current revision (0 for an empty store).
    fn revision(&self) -> BoxFuture<'_, Result<i64, StoreError>>;

    /// Records a join token by the SHA-256 hex of its text.
    fn create_join_token<'a>(
        &'a self,
        hash: &'a str,
        name: &'a str,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Marks the token used, atomically: of two concurrent redeemers exactly one
    /// gets `Some(name)`. `None` if unknown, used or expired at `now`.
    fn redeem_join_token<'a>(
        &'a self,
        hash: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Pins a device's ed25519 public key (hex) under `name`; `Conflict` if the name exists.
    fn allow_device<'a>(
        &'a self,
        name: &'a str,
        public_key_hex: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The public key pinned for `name`.
    fn device_key<'a>(&'a self, name: &'a str)
        -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Stores a new entry under a fresh id and revision.
    fn create_entry<'a>(
        &'a self,
        e: &'a NewEntry,
    ) -> BoxFuture<'a, Result<EntryRecord, StoreError>>;
    /// Tombstones an entry at a new revision; `false` if there was no live entry.
    fn delete_entry<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Every entry and tombstone changed after `revision`, oldest first.
    fn entries_since(&self, revision: i64) -> BoxFuture<'_, Result<Vec<EntryRecord>, StoreError>>;
    /// One live entry.
    fn entry<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<EntryRecord>, StoreError>>;

    /// Inserts or replaces an agent (re-attestation keeps the id). It never
    /// lifts a suspension: a renewal or re-attestation racing `agent suspend`
    /// keeps the agent suspended (only [`Store::set_agent_status`] resumes).
    fn upsert_agent<'a>(&'a self, a: &'a AgentRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    /// One agent.
    fn agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AgentRecord>, StoreError>>;
    /// Every agent, by id.
    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentRecord>, StoreError>>;
    /// Sets an agent's status. `Revoked` is final: it cannot be changed afterwards
    /// (`Conflict`). `false` if there is no such agent.
    fn set_agent_status<'a>(
        &'a self,
        id: &'a str,
        status: AgentStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Adds a denial (idempotent); returns the revision.
    fn deny<'a>(&'a self, d: &'a Denial) -> BoxFuture<'a, Result<i64, StoreError>>;
    /// Every denial, in insertion order.
    fn denials(&self) -> BoxFuture<'_, Result<Vec<Denial>, StoreError>>;

    /// Publishes a replica's JWT-SVID signing key (a JWK, JSON) until `expires_at`.
    fn publish_jwt_key<'a>(
        &'a self,
        kid: &'a str,
        jwk_json: &'a str,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Every published key not expired at `now`: `(kid, jwk_json)`, by kid.
    fn jwt_keys(&self, now: u64) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>>;
}

/// The schema both backends run at open (idempotent).
const MIGRATIONS: &str = include_str!("migrations.sql");

/// The schema version `MIGRATIONS` creates; a database with a newer one is refused.
const SCHEMA_VERSION: i64 = 1;

/// A `u64` as a `BIGINT`.
fn to_i64(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is out of range")))
}

/// A stored `BIGINT` as a `u64`.
fn to_u64(what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Invalid(format!("stored {what} {v} is negative")))
}

/// A list as its stored JSON array.
fn to_json(v: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(format!("encoding a list: {e}")))
}

/// A stored JSON array.
fn from_json(what: &str, s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Invalid(format!("stored {what}: {e}")))
}

/// A fresh entry id: 16 random bytes, hex.
fn new_entry_id() -> Result<String, StoreError> {
    use std::fmt::Write as _;
    let mut b = [0u8; 16];
    lanyard_token::keys::random_bytes(&mut b)
        .map_err(|e| StoreError::Unavailable(format!("entry id: {e}")))?;
    Ok(b.iter().fold(String::with_capacity(32), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    }))
}

/// A stored agent status.
fn parse_status(s: &str) -> Result<AgentStatus, StoreError> {
    AgentStatus::parse(s).ok_or_else(|| StoreError::Invalid(format!("stored agent status {s:?}")))
}

impl Denial {
    /// The stored `(kind, value)`.
    fn to_row(&self) -> (&'static str, &str) {
        match self {
            Self::Jti(v) => ("jti", v),
            Self::Chain(v) => ("chain", v),
        }
    }
    /// From the stored `(kind, value)`.
    fn from_row(kind: &str, value: String) -> Result<Self, StoreError> {
        match kind {
            "jti" => Ok(Self::Jti(value)),
            "chain" => Ok(Self::Chain(value)),
            _ => Err(StoreError::Invalid(format!("stored denial kind {kind:?}"))),
        }
    }
}

/// Opens the store a URL names: `sqlite:///abs/path.db`, `sqlite://rel/path.db`
/// or `postgres://user@host:port/db`. Runs the migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open(path.as_ref()).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::connect(url).await?,
        ))
    } else {
        Err(StoreError::Invalid(format!(
            "store {url:?}: expected sqlite:///path or postgres://…"
        )))
    }
}
