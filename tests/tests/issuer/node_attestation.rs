//! Node attestation by device key and by Kubernetes projected service account token.

use std::time::Duration;

use lanyard_agent::upstream::{attest_node, Evidence};
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_tests::{my_uid, rt, wait_for, Fleet};
use lanyard_token::KeyPair;

use super::{connected, credentials, jwt_svid, org};

#[test]
fn device_key_node_renews_its_credential_and_reattests_after_a_lapse() {
    let uid = my_uid();
    let f = Fleet::new("fleet-device");
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "agent_ttl = \"6s\"\n",
    );
    let _issuer = f.start_issuer("issuer1");
    // The gateway's device key, made on the device.
    let d = f.dir.0.display().to_string();
    let keygen = lanyard_tests::lanyard(&["node", "keygen", "--out", &format!("{d}/device")]);
    assert!(keygen.status.success());
    assert!(
        String::from_utf8_lossy(&keygen.stdout).contains("device.seed"),
        "{}",
        String::from_utf8_lossy(&keygen.stdout)
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(format!("{d}/device/device.seed"))
                .unwrap()
                .permissions()
        ) & 0o777,
        0o600
    );
    // Never a second key over the first.
    assert!(
        !lanyard_tests::lanyard(&["node", "keygen", "--out", &format!("{d}/device")])
            .status
            .success()
    );
    f.admin_cmd(
        "issuer1",
        &[
            "node",
            "allow",
            "--public-key",
            &format!("{d}/device/device.public"),
            "--name",
            "gw7",
        ],
    );
    let health = f.agent_config_with(
        "gw7",
        &addr,
        &format!("device_seed = \"{d}/device/device.seed\"\ndevice_name = \"gw7\""),
    );
    let agent = f.start_agent("gw7");
    let sock = f.agent_socket("gw7");
    wait_for(10, "agent connected", || connected(&health));
    assert!(jwt_svid(&sock, "a").is_err(), "no entry yet");
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/gw",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "device:name:gw7",
        ],
    );
    wait_for(5, "the entry", || jwt_svid(&sock, "a").ok());
    let agents: serde_json::Value =
        serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).unwrap();
    assert_eq!(
        agents[0]["id"],
        "spiffe://example.org/lanyard/agent/device/gw7"
    );
    assert_eq!(
        agents[0]["selectors"],
        serde_json::json!(["device:name:gw7"])
    );

    // Renewal at half-life, with a new key: the persisted credential changes and
    // the agent keeps serving.
    let jwt_path = f.dir.join(&format!(
        "gw7/data/{}",
        lanyard_agent::upstream::AGENT_CREDENTIAL_FILE
    ));
    let first = std::fs::read_to_string(&jwt_path).unwrap();
    wait_for(10, "agent credential renewal", || {
        (std::fs::read_to_string(&jwt_path).ok()? != first).then_some(())
    });
    assert!(
        jwt_svid(&sock, "b").is_ok(),
        "signing after renewal: {}",
        agent.log()
    );

    // A lapse: the agent is down longer than its credential lives. At restart
    // it proves the device key again and carries on.
    agent.kill9();
    std::thread::sleep(Duration::from_secs(7));
    let agent = f.start_agent("gw7");
    wait_for(15, "agent reconnected after the lapse", || {
        connected(&health)
    });
    assert!(
        agent.log().contains("node attested to the issuer"),
        "no re-attestation: {}",
        agent.log()
    );
    assert!(jwt_svid(&sock, "c").is_ok(), "signing after re-attestation");

    // A template entry: one entry, the subject filled from each caller's selectors
    // by the agent, and recognised (within the node's scope) by the issuer.
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://{trust_domain}/gw/{unix:user}",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "device:name:gw7",
        ],
    );
    let user = if uid == 0 {
        "root".to_owned()
    } else {
        format!("{uid}")
    };
    let want = format!("spiffe://example.org/gw/{user}");
    wait_for(5, "the templated identity", || {
        credentials(&sock)
            .iter()
            .any(|c| c.subject == want)
            .then_some(())
    });

    // Revoking the agent credential's jti voids its sessions; a device node
    // proves its key again and carries on with a new credential.
    let before: serde_json::Value =
        serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).unwrap();
    let old_jti = before[0]["credential_jti"].as_str().unwrap().to_owned();
    f.admin_cmd("issuer1", &["token", "revoke", "--jti", &old_jti]);
    wait_for(15, "a new agent credential after the revocation", || {
        let now: serde_json::Value =
            serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).ok()?;
        (now[0]["credential_jti"].as_str()? != old_jti).then_some(())
    });
    wait_for(15, "signing after re-attestation", || {
        jwt_svid(&sock, "r").ok()
    });

    // Suspension is refused at once and reversible.
    let id = "spiffe://example.org/lanyard/agent/device/gw7";
    f.admin_cmd("issuer1", &["agent", "suspend", id]);
    wait_for(5, "suspended agent refused", || {
        jwt_svid(&sock, "d").is_err().then_some(())
    });
    f.admin_cmd("issuer1", &["agent", "resume", id]);
    wait_for(70, "resumed agent served", || jwt_svid(&sock, "e").ok());
}

/// Kubernetes PSAT node attestation. No API server can run here, so a stand-in
/// token issuer (`lanyard_plugins::node::psat_testing`) signs real-shaped
/// projected tokens and publishes the JWKS the issuer is configured with.
#[test]
fn k8s_psat_node_attestation_scopes_entries_by_node_name() {
    let uid = my_uid();
    let f = Fleet::new("fleet-psat");
    let cluster = lanyard_plugins::node::psat_testing::FakeCluster::new().unwrap();
    std::fs::write(f.dir.join("jwks.json"), cluster.jwks_json()).unwrap();
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "[node_attestors.k8s_psat]\ncluster = \"prod\"\naudience = \"lanyard\"\nallowed = [\"lanyard:lanyard-agent\"]\njwks_file = \"jwks.json\"\n",
    );
    let _issuer = f.start_issuer("issuer1");
    let now = lanyard_agent::api::now();
    std::fs::write(
        f.dir.join("psat.token"),
        cluster.token("lanyard", "lanyard-agent", "node-1", "lanyard", now),
    )
    .unwrap();
    let health = f.agent_config_with("n1", &addr, "psat_token_file = \"psat.token\"");
    let _agent = f.start_agent("n1");
    let sock = f.agent_socket("n1");
    wait_for(10, "agent connected", || connected(&health));
    assert!(jwt_svid(&sock, "a").is_err(), "no entry yet");
    for node in ["node-1", "node-2"] {
        f.admin_cmd(
            "issuer1",
            &[
                "entry",
                "create",
                "--subject",
                &format!("spiffe://example.org/{node}"),
                "--selector",
                &format!("unix:uid:{uid}"),
                "--node-selector",
                "k8s_psat:cluster:prod",
                "--node-selector",
                &format!("k8s_psat:agent_node_name:{node}"),
            ],
        );
    }
    let got = wait_for(5, "the node-1 entry", || jwt_svid(&sock, "a").ok());
    assert!(got.starts_with("spiffe://example.org/node-1 "), "{got}");
    let creds = credentials(&sock);
    assert_eq!(
        creds.len(),
        1,
        "only node-1's entry reaches node-1: {creds:?}"
    );
    let agents: serde_json::Value =
        serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).unwrap();
    assert_eq!(
        agents[0]["id"],
        "spiffe://example.org/lanyard/agent/k8s_psat/prod/node-1"
    );

    // A service account outside the allow-list, a wrong audience: refused.
    rt().block_on(async {
        let tls = lanyard_agent::tls::client_config(&org(&f)).unwrap();
        let mut c = NodeClient::new(lanyard_agent::tls::channel(&addr, tls).await.unwrap());
        for token in [
            cluster.token("default", "default", "node-3", "lanyard", now),
            cluster.token("lanyard", "lanyard-agent", "node-3", "other", now),
        ] {
            let key = KeyPair::generate().unwrap();
            let e = attest_node(&mut c, &key, Evidence::K8sPsat(token))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        }
    });
}
