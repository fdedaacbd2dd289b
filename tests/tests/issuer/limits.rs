//! The issuer's limits and input validation, driven through its gRPC API.

use lanyard_proto::issuer as pb;
use lanyard_tests::{rt, Fleet};
use lanyard_token::KeyPair;

use super::{join, org, with_session};

fn sign_req(subject: &str, key: &str) -> pb::SignCredentialRequest {
    pb::SignCredentialRequest {
        subject: subject.into(),
        public_key: key.into(),
        ttl_secs: 60,
        ..pb::SignCredentialRequest::default()
    }
}

#[test]
fn limits_answer_resource_exhausted_and_malformed_input_invalid_argument() {
    let f = Fleet::new("fleet-limits");
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "[limits]\nsign_per_sec = 2\nsign_burst = 10\nattest_per_sec = 1\nattest_burst = 40\n",
    );
    let _issuer = f.start_issuer("issuer1");
    let t1 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n1"]);
    let t2 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n2"]);
    for n in ["n1", "n2"] {
        f.admin_cmd(
            "issuer1",
            &[
                "entry",
                "create",
                "--subject",
                &format!("spiffe://example.org/{n}"),
                "--selector",
                "unix:uid:1",
                "--node-selector",
                &format!("join:name:{n}"),
            ],
        );
    }
    let org = org(&f);
    let holder = KeyPair::generate().unwrap().public().to_hex();
    rt().block_on(async {
        let (mut a, sa) = join(&addr, &org, &t1).await;
        let (mut b, sb) = join(&addr, &org, &t2).await;

        // Malformed input: InvalidArgument.
        let bad_key = a
            .sign_credential(with_session(&sa, sign_req("spiffe://example.org/n1", "zz")))
            .await
            .unwrap_err();
        assert_eq!(bad_key.code(), tonic::Code::InvalidArgument, "{bad_key:?}");
        let bad_point = a
            .sign_x509_svid(with_session(
                &sa,
                pb::SignX509SvidRequest {
                    spiffe_id: "spiffe://example.org/n1".into(),
                    public_key: vec![4; 10],
                    ttl_secs: 60,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            bad_point.code(),
            tonic::Code::InvalidArgument,
            "{bad_point:?}"
        );

        // An oversized request: ResourceExhausted, and the issuer carries on.
        let huge = a
            .sign_credential(with_session(
                &sa,
                sign_req(
                    &format!("spiffe://example.org/{}", "x".repeat(100_000)),
                    &holder,
                ),
            ))
            .await
            .unwrap_err();
        assert_eq!(huge.code(), tonic::Code::ResourceExhausted, "{huge:?}");

        // Agent n1 floods signing: past its burst it gets ResourceExhausted ...
        let mut exhausted = 0;
        for _ in 0..40 {
            match a
                .sign_credential(with_session(
                    &sa,
                    sign_req("spiffe://example.org/n1", &holder),
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::ResourceExhausted => exhausted += 1,
                Err(s) => panic!("unexpected {s:?}"),
            }
        }
        assert!(
            exhausted >= 25,
            "only {exhausted} of 40 refused over a burst of 10"
        );
        // ... while agent n2's budget is its own.
        b.sign_credential(with_session(
            &sb,
            sign_req("spiffe://example.org/n2", &holder),
        ))
        .await
        .unwrap();

        // Unauthenticated attestations from one address: limited too.
        let mut refused = 0;
        for _ in 0..60 {
            let junk = pb::AttestRequest {
                nonce: vec![0; 32],
                agent_public_key: String::new(),
                nonce_signature: vec![],
                evidence: None,
            };
            if let Err(s) = a.attest(junk).await {
                if s.code() == tonic::Code::ResourceExhausted {
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0,
            "60 attestations over a burst of 40 were all served"
        );
        // GetNonce has no per-address budget (issuing a nonce stores nothing),
        // so a flood from an agent's address cannot keep it from its session.
        for _ in 0..60 {
            a.get_nonce(pb::GetNonceRequest {}).await.unwrap();
        }
    });
}
