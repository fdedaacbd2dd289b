//! The tokens: forged, foreign and revoked chains; tampered and unsigned JWT-SVIDs.

use std::path::Path;
use std::process::Command;

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::ValidateJwtsvidRequest;
use lanyard_tests::{entry, lanyard, my_uid, rt, Deployment};

use super::{jwt_svid, mint};

/// `lanyard token verify` of `token` against `org`: (ok, stderr).
fn verify(org: &Path, token: &Path, deny: Option<&Path>) -> (bool, String) {
    let mut args = vec![
        "token".to_owned(),
        "verify".into(),
        "--org-public".into(),
        org.display().to_string(),
    ];
    if let Some(d) = deny {
        args.extend(["--deny-list".into(), d.display().to_string()]);
    }
    args.push(token.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lanyard(&refs);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrites a JWT's claims with `edit` (a Python expression over `c`), keeping
/// the original signature: what a forger without the key can do.
fn forge(token: &Path, edit: &str, out: &Path) {
    let prog = format!(
        "import base64,json,sys\n\
         h,p,s=open(sys.argv[1]).read().strip().split('.')\n\
         c=json.loads(base64.urlsafe_b64decode(p+'='*(-len(p)%4)))\n\
         {edit}\n\
         p=base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip('=')\n\
         open(sys.argv[2],'w').write('.'.join([h,p,s]))"
    );
    let st = Command::new("python3")
        .args(["-c", &prog])
        .arg(token)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn forged_foreign_and_revoked_chains_are_refused() {
    let dir = lanyard_tests::TempDir::new("sec-chain");
    let d = dir.0.display().to_string();
    for org in ["org", "rogue"] {
        assert!(lanyard(&["org", "init", "--out", &format!("{d}/{org}")])
            .status
            .success());
    }
    for (org, chain) in [("org", "chain"), ("org", "chain2"), ("rogue", "rchain")] {
        assert!(lanyard(&[
            "org",
            "delegate",
            "--org-seed",
            &format!("{d}/{org}/org.seed"),
            "--out",
            &format!("{d}/{chain}"),
        ])
        .status
        .success());
    }
    let org = dir.join("org/org.public");
    mint(&dir.0, "chain", "good.jwt");
    mint(&dir.0, "chain2", "other.jwt");
    mint(&dir.0, "rchain", "foreign.jwt");
    assert!(verify(&org, &dir.join("good.jwt"), None).0);

    // Another org's chain: refused under this org's key.
    let (ok, why) = verify(&org, &dir.join("foreign.jwt"), None);
    assert!(!ok, "a token from another org's chain verified");
    assert!(!why.is_empty());

    // A forged chain: the rogue chain token rewritten to name this org's key as
    // its issuer, signature kept. The leaf minted from it must not verify.
    let org_hex = std::fs::read_to_string(&org).unwrap().trim().to_owned();
    forge(
        &dir.join("rchain/chain.jwt"),
        &format!("c['issuer']='I-{org_hex}'"),
        &dir.join("rchain/forged.jwt"),
    );
    std::fs::rename(dir.join("rchain/forged.jwt"), dir.join("rchain/chain.jwt")).unwrap();
    let o = lanyard(&[
        "token",
        "mint",
        "--issuer-jwt",
        &format!("{d}/rchain/chain.jwt"),
        "--issuer-seed",
        &format!("{d}/rchain/chain.seed"),
        "--subject",
        "spiffe://example.org/w",
        "--out",
        &format!("{d}/forged.jwt"),
    ]);
    if o.status.success() {
        assert!(
            !verify(&org, &dir.join("forged.jwt"), None).0,
            "forged chain verified"
        );
    }
    // A leaf whose claims were widened after signing.
    forge(
        &dir.join("good.jwt"),
        "c['sub']='spiffe://example.org/admin'",
        &dir.join("widened.jwt"),
    );
    assert!(!verify(&org, &dir.join("widened.jwt"), None).0);
    // An unsigned token (alg none) with the good token's claims.
    let good = std::fs::read_to_string(dir.join("good.jwt")).unwrap();
    let parts: Vec<&str> = good.trim().split('.').collect();
    std::fs::write(
        dir.join("none.jwt"),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]),
    )
    .unwrap();
    assert!(!verify(&org, &dir.join("none.jwt"), None).0);

    // A revoked chain: every token it minted is refused with the deny list,
    // while another chain of the same org is untouched.
    let chain_jti = lanyard(&["token", "view", &format!("{d}/chain/chain.jwt")]);
    let view = String::from_utf8_lossy(&chain_jti.stdout).into_owned();
    let id = view
        .lines()
        .find_map(|l| l.trim().strip_prefix("id: "))
        .unwrap()
        .trim()
        .to_owned();
    let deny = dir.join("deny.jwt");
    assert!(lanyard(&[
        "org",
        "revoke-chain",
        "--org-seed",
        &format!("{d}/org/org.seed"),
        "--id",
        &id,
        "--deny-list",
        deny.to_str().unwrap(),
    ])
    .status
    .success());
    let (ok, why) = verify(&org, &dir.join("good.jwt"), Some(&deny));
    assert!(!ok, "a token from a revoked chain verified");
    assert!(why.contains("revoked"), "{why}");
    assert!(verify(&org, &dir.join("other.jwt"), Some(&deny)).0);
    // A deny list signed by another org is an error, not an empty list.
    let rogue_deny = dir.join("rogue-deny.jwt");
    assert!(lanyard(&[
        "org",
        "revoke-chain",
        "--org-seed",
        &format!("{d}/rogue/org.seed"),
        "--id",
        &id,
        "--deny-list",
        rogue_deny.to_str().unwrap(),
    ])
    .status
    .success());
    assert!(!verify(&org, &dir.join("other.jwt"), Some(&rogue_deny)).0);
}

#[test]
fn jwt_svid_validation_refuses_tampered_foreign_and_unsigned_tokens() {
    let d = Deployment::new(
        "sec-jwt",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let _agent = d.start();
    let other = Deployment::new(
        "sec-jwt-other",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let _other_agent = other.start();
    let good = jwt_svid(&d.socket(), "").unwrap();
    let foreign = jwt_svid(&other.socket(), "").unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = parts[2].to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    let tampered = format!("{}.{}.{sig}", parts[0], parts[1]);
    let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
    rt().block_on(async {
        let mut c = SpiffeWorkloadApiClient::new(connect(&d.socket()).await.unwrap());
        let validate = |svid: String| ValidateJwtsvidRequest {
            audience: "security".into(),
            svid,
        };
        c.validate_jwtsvid(with_header(validate(good.clone())))
            .await
            .unwrap();
        for (what, t) in [
            ("tampered signature", tampered),
            ("another org's agent", foreign),
            ("alg none", unsigned),
            ("garbage", "not.a.jwt".into()),
        ] {
            let e = c
                .validate_jwtsvid(with_header(validate(t)))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
        }
        let e = c
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: "someone-else".into(),
                svid: good.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "wrong audience");
    });
}
