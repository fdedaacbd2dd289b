//! The issuer store's conformance suite, run against both backends: SQLite in a
//! temp dir and a real private PostgreSQL server.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_issuer::store::postgres::PostgresStore;
use lanyard_issuer::store::sqlite::SqliteStore;
use lanyard_issuer::store::{AgentRecord, AgentStatus, Denial, NewEntry, Store, StoreError};
use lanyard_tests::postgres::PgServer;

const NOW: u64 = 1_700_000_000;

fn new_entry(subject: &str) -> NewEntry {
    NewEntry {
        subject: subject.to_owned(),
        selectors: vec!["unix:uid:1000".into(), "unix:path:/usr/bin/app".into()],
        node_selectors: vec!["join_token:name:edge-1".into()],
        ttl_secs: 3600,
        audiences: vec!["mqtt".into()],
        networks: vec![],
    }
}

fn agent(id: &str, status: AgentStatus) -> AgentRecord {
    AgentRecord {
        id: id.to_owned(),
        selectors: vec!["join_token:name:edge-1".into()],
        status,
        attested_at: NOW,
        credential_jti: format!("jti-{id}"),
        credential_exp: NOW + 3600,
    }
}

/// Asserts that the revision grew by exactly one since `before`, and returns it.
async fn bumped(store: &dyn Store, before: i64, what: &str) -> i64 {
    let now = store.revision().await.unwrap();
    assert_eq!(now, before + 1, "{what} must bump the revision once");
    now
}

/// The shared suite: everything the trait promises, on a fresh store.
async fn conformance(store: Arc<dyn Store>) {
    let s = &*store;
    let mut rev = s.revision().await.unwrap();
    assert_eq!(rev, 0, "a fresh store is at revision 0");

    // Join tokens: single use, expiry, unknown.
    s.create_join_token("h1", "edge-1", NOW + 60).await.unwrap();
    rev = bumped(s, rev, "create_join_token").await;
    assert!(matches!(
        s.create_join_token("h1", "other", NOW + 60).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.revision().await.unwrap(),
        rev,
        "a failed write leaves the revision"
    );
    let redeems = (0..20).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.redeem_join_token("h1", NOW).await.unwrap() })
    });
    let got: Vec<Option<String>> = futures_util::future::join_all(redeems)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<&String> = got.iter().flatten().collect();
    assert_eq!(
        winners,
        [&"edge-1".to_owned()],
        "exactly one of 20 concurrent redeems wins"
    );
    rev = bumped(s, rev, "a successful redeem").await;
    assert_eq!(s.redeem_join_token("h1", NOW).await.unwrap(), None, "used");
    s.create_join_token("h2", "edge-2", NOW + 60).await.unwrap();
    rev = bumped(s, rev, "create_join_token").await;
    assert_eq!(
        s.redeem_join_token("h2", NOW + 60).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        s.redeem_join_token("h2", NOW + 61).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        s.redeem_join_token("nope", NOW).await.unwrap(),
        None,
        "unknown"
    );
    assert_eq!(
        s.revision().await.unwrap(),
        rev,
        "refused redeems change nothing"
    );
    assert_eq!(
        s.redeem_join_token("h2", NOW + 59)
            .await
            .unwrap()
            .as_deref(),
        Some("edge-2"),
        "an expired refusal did not use the token"
    );
    rev = bumped(s, rev, "a successful redeem").await;

    // Devices.
    let key = "ab".repeat(32);
    s.allow_device("dev-1", &key).await.unwrap();
    rev = bumped(s, rev, "allow_device").await;
    assert!(matches!(
        s.allow_device("dev-1", &"cd".repeat(32)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.device_key("dev-1").await.unwrap(),
        Some(key),
        "the first key stays"
    );
    assert_eq!(s.device_key("dev-2").await.unwrap(), None);
    assert_eq!(s.revision().await.unwrap(), rev);

    // Entries, tombstones and sync by revision.
    let since = rev;
    let a = s
        .create_entry(&new_entry("spiffe://example.org/a"))
        .await
        .unwrap();
    rev = bumped(s, rev, "create_entry").await;
    assert_eq!(a.revision, rev);
    assert!(!a.deleted);
    assert_eq!(a.id.len(), 32);
    assert!(a.id.bytes().all(|b| b.is_ascii_hexdigit()));
    let b = s
        .create_entry(&new_entry("spiffe://example.org/b"))
        .await
        .unwrap();
    rev = bumped(s, rev, "create_entry").await;
    assert_ne!(a.id, b.id);
    assert_eq!(
        s.entry(&a.id).await.unwrap().as_ref(),
        Some(&a),
        "round trip"
    );
    assert_eq!(
        s.entries_since(since).await.unwrap(),
        [a.clone(), b.clone()],
        "oldest first"
    );
    assert!(s.delete_entry(&a.id).await.unwrap());
    rev = bumped(s, rev, "delete_entry").await;
    assert!(!s.delete_entry(&a.id).await.unwrap(), "already deleted");
    assert!(!s.delete_entry("unknown").await.unwrap());
    assert_eq!(
        s.revision().await.unwrap(),
        rev,
        "no-op deletes change nothing"
    );
    assert_eq!(
        s.entry(&a.id).await.unwrap(),
        None,
        "entry() is live entries only"
    );
    let tomb = s.entries_since(since).await.unwrap();
    assert_eq!(tomb.len(), 2);
    assert_eq!(tomb[0], b);
    assert_eq!(
        (tomb[1].id.as_str(), tomb[1].deleted),
        (a.id.as_str(), true)
    );
    assert_eq!(
        tomb[1].revision, rev,
        "the tombstone has the delete's revision"
    );
    assert_eq!(s.entries_since(rev).await.unwrap(), []);
    assert_eq!(s.entries_since(rev - 1).await.unwrap(), [tomb[1].clone()]);

    // Agents.
    let ag = "spiffe://example.org/lanyard/agent/join_token/edge-1";
    s.upsert_agent(&agent(ag, AgentStatus::Active))
        .await
        .unwrap();
    rev = bumped(s, rev, "upsert_agent").await;
    let mut again = agent(ag, AgentStatus::Active);
    again.credential_jti = "jti-2".into();
    again.attested_at = NOW + 10;
    s.upsert_agent(&again).await.unwrap();
    rev = bumped(s, rev, "upsert_agent (replace)").await;
    assert_eq!(s.agent(ag).await.unwrap(), Some(again.clone()));
    let other = agent(
        "spiffe://example.org/lanyard/agent/join_token/a-first",
        AgentStatus::Suspended,
    );
    s.upsert_agent(&other).await.unwrap();
    rev = bumped(s, rev, "upsert_agent").await;
    assert_eq!(
        s.agents().await.unwrap(),
        [other.clone(), again.clone()],
        "by id"
    );
    assert!(s
        .set_agent_status(ag, AgentStatus::Suspended)
        .await
        .unwrap());
    rev = bumped(s, rev, "set_agent_status").await;
    // A renewal or re-attestation racing the suspension does not lift it.
    let mut renewed = again.clone();
    renewed.credential_jti = "jti-3".into();
    s.upsert_agent(&renewed).await.unwrap();
    rev = bumped(s, rev, "upsert_agent (renewal while suspended)").await;
    let held = s.agent(ag).await.unwrap().unwrap();
    assert_eq!(held.status, AgentStatus::Suspended);
    assert_eq!(held.credential_jti, "jti-3");
    assert!(s.set_agent_status(ag, AgentStatus::Active).await.unwrap());
    rev = bumped(s, rev, "set_agent_status").await;
    assert!(!s
        .set_agent_status("unknown", AgentStatus::Active)
        .await
        .unwrap());
    assert!(s.set_agent_status(ag, AgentStatus::Revoked).await.unwrap());
    rev = bumped(s, rev, "revoke").await;
    assert!(matches!(
        s.set_agent_status(ag, AgentStatus::Active).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.set_agent_status(ag, AgentStatus::Suspended).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.upsert_agent(&agent(ag, AgentStatus::Active)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        s.set_agent_status(ag, AgentStatus::Revoked).await.unwrap(),
        "revoking twice is a no-op"
    );
    assert_eq!(
        s.agent(ag).await.unwrap().unwrap().status,
        AgentStatus::Revoked
    );
    assert_eq!(s.agent("unknown").await.unwrap(), None);
    assert_eq!(
        s.revision().await.unwrap(),
        rev,
        "refused changes change nothing"
    );

    // Denials.
    let d1 = Denial::Jti("jti-x".into());
    let d2 = Denial::Chain("chain-y".into());
    let r1 = s.deny(&d1).await.unwrap();
    rev = bumped(s, rev, "deny").await;
    assert_eq!(r1, rev);
    let r2 = s.deny(&d2).await.unwrap();
    rev = bumped(s, rev, "deny").await;
    assert_eq!(r2, rev);
    assert_eq!(
        s.deny(&d1).await.unwrap(),
        rev,
        "idempotent: the current revision"
    );
    assert_eq!(s.revision().await.unwrap(), rev);
    // The same value under the other kind is another denial.
    let d3 = Denial::Chain("jti-x".into());
    s.deny(&d3).await.unwrap();
    rev = bumped(s, rev, "deny").await;
    assert_eq!(
        s.denials().await.unwrap(),
        [d1, d2, d3],
        "insertion order, no duplicates"
    );

    // Published JWT keys.
    s.publish_jwt_key("k2", r#"{"kid":"k2"}"#, NOW + 100)
        .await
        .unwrap();
    rev = bumped(s, rev, "publish_jwt_key").await;
    s.publish_jwt_key("k1", r#"{"kid":"k1"}"#, NOW + 10)
        .await
        .unwrap();
    rev = bumped(s, rev, "publish_jwt_key").await;
    s.publish_jwt_key("k0", r#"{"kid":"k0"}"#, NOW)
        .await
        .unwrap();
    rev = bumped(s, rev, "publish_jwt_key").await;
    let keys = |v: Vec<(String, String)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(s.jwt_keys(NOW).await.unwrap()),
        ["k1", "k2"],
        "by kid, not expired"
    );
    assert_eq!(keys(s.jwt_keys(NOW + 10).await.unwrap()), ["k2"]);
    // Re-publishing extends a key.
    s.publish_jwt_key("k1", r#"{"kid":"k1","v":2}"#, NOW + 200)
        .await
        .unwrap();
    rev = bumped(s, rev, "publish_jwt_key (replace)").await;
    assert_eq!(
        s.jwt_keys(NOW + 150).await.unwrap(),
        [("k1".to_owned(), r#"{"kid":"k1","v":2}"#.to_owned())]
    );

    // Values out of the BIGINT range are refused, not wrapped.
    assert!(matches!(
        s.create_join_token("h3", "x", u64::MAX).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.revision().await.unwrap(), rev);
}

#[tokio::test]
async fn sqlite() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing/sub/issuer.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    conformance(store.clone()).await;
    let rev = store.revision().await.unwrap();
    let entries = store.entries_since(0).await.unwrap();
    drop(store);

    for f in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{f}", path.display()));
        if p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", p.display());
        }
    }

    // Durable: a reopened file holds everything, and the URL form opens it too.
    let store = lanyard_issuer::store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.revision().await.unwrap(), rev);
    assert_eq!(store.entries_since(0).await.unwrap(), entries);
    assert_eq!(store.denials().await.unwrap().len(), 3);
    assert_eq!(
        store.device_key("dev-1").await.unwrap(),
        Some("ab".repeat(32))
    );
    assert_eq!(
        store.redeem_join_token("h1", NOW).await.unwrap(),
        None,
        "still used"
    );

    // A file created loose is tightened at open.
    let loose = dir.path().join("loose.db");
    std::fs::write(&loose, b"").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    SqliteStore::open(&loose).await.unwrap();
    let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn postgres() {
    let pg = PgServer::start();
    let store = lanyard_issuer::store::open(&pg.url()).await.unwrap();
    conformance(store).await;
}

#[tokio::test]
async fn unknown_store_url_is_invalid() {
    assert!(matches!(
        lanyard_issuer::store::open("mysql://x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        lanyard_issuer::store::open("postgres://user@host:notaport/db").await,
        Err(StoreError::Invalid(_))
    ));
}

/// Several replicas start at once against one database (the migrations queue
/// behind an advisory lock) and share state: one token, many redeemers across
/// replicas, exactly one winner.
#[tokio::test]
async fn postgres_replicas_share_one_database() {
    let pg = PgServer::start();
    let url = pg.url();
    let replicas: Vec<PostgresStore> =
        futures_util::future::join_all((0..4).map(|_| PostgresStore::connect(&url)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let replicas: Vec<Arc<dyn Store>> = replicas
        .into_iter()
        .map(|r| Arc::new(r) as Arc<dyn Store>)
        .collect();
    assert_eq!(replicas[0].revision().await.unwrap(), 0);

    replicas[0]
        .create_join_token("h", "edge", NOW + 60)
        .await
        .unwrap();
    let redeems = (0..20).map(|i| {
        let r = Arc::clone(&replicas[i % replicas.len()]);
        tokio::spawn(async move { r.redeem_join_token("h", NOW).await.unwrap() })
    });
    let winners = futures_util::future::join_all(redeems)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(winners, 1);

    // Concurrent writers on different replicas get distinct revisions, all visible everywhere.
    let creates = (0..12).map(|i| {
        let r = Arc::clone(&replicas[i % replicas.len()]);
        tokio::spawn(async move {
            r.create_entry(&new_entry(&format!("spiffe://x/{i}")))
                .await
                .unwrap()
        })
    });
    let mut revs: Vec<i64> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.unwrap().revision)
        .collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 12);
    for r in &replicas {
        assert_eq!(r.revision().await.unwrap(), 2 + 12);
        assert_eq!(r.entries_since(0).await.unwrap().len(), 12);
    }
}

/// Retries `f` until it succeeds or `deadline` passes.
async fn eventually<T, F, Fut>(what: &str, deadline: Instant, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what} still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn postgres_restart_under_a_live_store() {
    let mut pg = PgServer::start();
    let store = lanyard_issuer::store::open(&pg.url()).await.unwrap();
    let before = store
        .create_entry(&new_entry("spiffe://x/before"))
        .await
        .unwrap();

    // While the server is down, calls fail (Unavailable), promptly, without hanging.
    pg.stop();
    let started = Instant::now();
    match store.revision().await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("with the server down: {other:?}"),
    }
    match store.create_entry(&new_entry("spiffe://x/down")).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("with the server down: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rev = eventually("revision() after the restart", deadline, || {
        store.revision()
    })
    .await;
    assert_eq!(
        rev, before.revision,
        "the write before the restart is durable"
    );
    let e = new_entry("spiffe://x/after");
    let after = eventually("create_entry after the restart", deadline, || {
        store.create_entry(&e)
    })
    .await;
    assert_eq!(after.revision, before.revision + 1, "nothing applied twice");
    let all = eventually("entries_since after the restart", deadline, || {
        store.entries_since(0)
    })
    .await;
    assert_eq!(all, [before, after]);
}
