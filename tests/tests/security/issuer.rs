//! The issuer: a replayed attestation nonce, one join token used by many nodes at once.

use lanyard_agent::upstream::{attest_node, Evidence};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_tests::{rt, Fleet};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{KeyPair, PublicKey};

/// A nonce from `GetNonce`, signed for attestation by a fresh key.
async fn signed_nonce(
    c: &mut NodeClient<tonic::transport::Channel>,
) -> (KeyPair, Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let nonce = c
        .get_nonce(pb::GetNonceRequest {})
        .await
        .unwrap()
        .into_inner()
        .nonce;
    let sig = key
        .sign(&issuer_proof_message(IssuerProof::Attest, &nonce))
        .to_vec();
    (key, nonce, sig)
}

#[test]
fn issuer_refuses_a_replayed_nonce_and_admits_one_node_per_join_token() {
    let f = Fleet::new("sec-issuer");
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "[limits]\nattest_per_sec = 100\nattest_burst = 200\n",
    );
    let _issuer = f.start_issuer("issuer1");
    let org =
        PublicKey::from_file_text(&std::fs::read_to_string(f.dir.join("org/org.public")).unwrap())
            .unwrap();
    let t1 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n1"]);
    let t2 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n2"]);
    let shared = f.admin_cmd("issuer1", &["join-token", "create", "--name", "shared"]);
    rt().block_on(async {
        let tls = lanyard_agent::tls::client_config(&org).unwrap();
        let ch = lanyard_agent::tls::channel(&addr, tls).await.unwrap();
        let mut c = NodeClient::new(ch.clone());

        // A nonce is single use: the same signed attestation replayed with
        // another valid join token is refused, though the token stays unspent.
        let (key, nonce, sig) = signed_nonce(&mut c).await;
        let req = |token: &str| pb::AttestRequest {
            nonce: nonce.clone(),
            agent_public_key: key.public().to_hex(),
            nonce_signature: sig.clone(),
            evidence: Some(pb::attest_request::Evidence::JoinToken(token.into())),
        };
        c.attest(req(&t1)).await.unwrap();
        let e = c.attest(req(&t2)).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::PermissionDenied,
            "replayed nonce: {e:?}"
        );
        // A nonce signed by one key cannot be used for another.
        let (_, nonce, sig) = signed_nonce(&mut c).await;
        let e = c
            .attest(pb::AttestRequest {
                nonce,
                agent_public_key: KeyPair::generate().unwrap().public().to_hex(),
                nonce_signature: sig,
                evidence: Some(pb::attest_request::Evidence::JoinToken(t2.clone())),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // t2 was never spent by the refused calls.
        attest_node(
            &mut c,
            &KeyPair::generate().unwrap(),
            Evidence::JoinToken(t2.clone()),
        )
        .await
        .unwrap();

        // Sixteen nodes race one join token: exactly one is admitted.
        let mut racers = Vec::new();
        for _ in 0..16 {
            let (ch, token) = (ch.clone(), shared.clone());
            racers.push(tokio::spawn(async move {
                let mut c = NodeClient::new(ch);
                attest_node(
                    &mut c,
                    &KeyPair::generate().unwrap(),
                    Evidence::JoinToken(token),
                )
                .await
                .map_err(|s| s.code())
            }));
        }
        let mut won = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(_) => won += 1,
                Err(code) => assert_eq!(code, tonic::Code::PermissionDenied),
            }
        }
        assert_eq!(won, 1, "one join token admitted {won} nodes");
    });
}
