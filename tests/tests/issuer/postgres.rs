//! Two issuer replicas sharing a PostgreSQL store, and agents failing over.

use lanyard_tests::{http_get, my_uid, wait_for, Fleet};
use lanyard_token::Verifier;

use super::{connected, credentials, jwt_svid, org, python_fetch};

#[test]
fn postgres_two_replicas_share_the_store_and_agents_fail_over() {
    let uid = my_uid();
    let pg = lanyard_tests::postgres::PgServer::start();
    let f = Fleet::new("fleet-pg");
    let a_addr = f.issuer_config("replica-a", &pg.url());
    let b_addr = f.issuer_config("replica-b", &pg.url());
    let a = f.start_issuer("replica-a");
    let b = f.start_issuer("replica-b");
    // A join token made at A, redeemed by an agent that may reach either.
    let token = f.admin_cmd("replica-a", &["join-token", "create", "--name", "gw1"]);
    let health = f.agent_config("gw1", &format!("{a_addr},{b_addr}"), &token);
    let _agent = f.start_agent("gw1");
    let sock = f.agent_socket("gw1");
    wait_for(10, "agent connected", || connected(&health));
    assert!(jwt_svid(&sock, "one").is_err(), "no entry yet");
    f.admin_cmd(
        "replica-b",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/ha",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw1",
        ],
    );
    wait_for(5, "entry written at B to reach the agent through A", || {
        jwt_svid(&sock, "one").ok()
    });
    assert_eq!(
        python_fetch(&sock)["jwt_spiffe_id"],
        "spiffe://example.org/ha"
    );
    // Both replicas see one store.
    let la = f.admin_cmd("replica-a", &["entry", "list", "--json"]);
    let lb = f.admin_cmd("replica-b", &["entry", "list", "--json"]);
    assert_eq!(la, lb);

    // A dies: the agent fails over to B, gets new entries and new signatures.
    a.kill9();
    f.admin_cmd(
        "replica-b",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/after",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw1",
        ],
    );
    wait_for(20, "failover to B", || {
        let (code, body) = http_get(&health, "/readyz")?;
        (code == 200 && body.contains(&format!("connected to {b_addr}"))).then_some(())
    });
    wait_for(5, "the entry made after failover", || {
        credentials(&sock)
            .iter()
            .any(|c| c.subject == "spiffe://example.org/after")
            .then_some(())
    });
    // A new audience needs a signature now: B signs it, and the JWKS the agent
    // publishes (both replicas' keys) validates it.
    let fresh = jwt_svid(&sock, "two").unwrap();
    assert!(fresh.starts_with("spiffe://example.org/"), "{fresh}");

    // A comes back, and B's chain credential is revoked (at B itself): B stops
    // signing and reports not ready, the agent moves to A, drops everything B's
    // chain signed, and serves credentials from A's chain.
    let a = f.start_issuer("replica-a");
    let chain_jti = |name: &str| {
        let jwt = std::fs::read_to_string(f.dir.join(&format!("{name}/chain.jwt"))).unwrap();
        let c: lanyard_token::Claims =
            serde_json::from_slice(&lanyard_token::jws::parse(jwt.trim()).unwrap().payload)
                .unwrap();
        c.jti.unwrap()
    };
    let (a_jti, b_jti) = (chain_jti("replica-a"), chain_jti("replica-b"));
    f.admin_cmd("replica-b", &["org", "revoke-chain", "--id", &b_jti]);
    wait_for(10, "agent on A", || {
        let (code, body) = http_get(&health, "/readyz")?;
        (code == 200 && body.contains(&format!("connected to {a_addr}"))).then_some(())
    });
    wait_for(10, "credentials from A's chain only", || {
        let creds = credentials(&sock);
        (creds.len() == 2
            && creds.iter().all(|c| {
                let v = Verifier::new(org(&f)).verify(&c.jwt, lanyard_agent::api::now());
                v.is_ok_and(|v| {
                    v.claims()
                        .iss
                        .as_deref()
                        .is_some_and(|i| i.starts_with(&format!("C-{a_jti}.")))
                })
            }))
        .then_some(())
    });
    let b_health = std::fs::read_to_string(f.dir.join("replica-b.toml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("health_addr = \"")
                .map(|r| r.trim_end_matches('"').to_owned())
        })
        .unwrap();
    let (code, body) = http_get(&b_health, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("revoked"), "{body}");
    drop((a, b));
}
