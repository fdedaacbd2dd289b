//! Revoking a token and a chain with a signed deny list.

use super::{invalid, lanyard, ok, Tmp};

#[test]
fn revoke_token_and_chain_with_a_signed_deny_list() {
    let t = Tmp::new("revoke");
    ok(&["org", "init", "--out", &t.p("org")]);
    ok(&[
        "org",
        "delegate",
        "--org-seed",
        &t.p("org/org.seed"),
        "--out",
        &t.p("chain"),
        "--validity",
        "1d",
    ]);
    let mint = |name: &str| {
        ok(&[
            "token",
            "mint",
            "--issuer-jwt",
            &t.p("chain/chain.jwt"),
            "--issuer-seed",
            &t.p("chain/chain.seed"),
            "--subject",
            &format!("spiffe://example.org/{name}"),
            "--out",
            &t.p(&format!("{name}.jwt")),
        ]);
        let v: serde_json::Value = serde_json::from_str(&ok(&[
            "token",
            "view",
            "--json",
            &t.p(&format!("{name}.jwt")),
        ]))
        .unwrap();
        v["claims"]["jti"].as_str().unwrap().to_owned()
    };
    let a = mint("a");
    mint("b");
    let org = t.p("org/org.public");
    let deny = t.p("deny.jwt");
    ok(&[
        "token",
        "revoke",
        "--org-seed",
        &t.p("org/org.seed"),
        "--jti",
        &a,
        "--deny-list",
        &deny,
    ]);
    let err = invalid(&[
        "token",
        "verify",
        "--org-public",
        &org,
        "--deny-list",
        &deny,
        &t.p("a.jwt"),
    ]);
    assert!(err.contains("revoked"), "{err}");
    ok(&[
        "token",
        "verify",
        "--org-public",
        &org,
        "--deny-list",
        &deny,
        &t.p("b.jwt"),
    ]);
    // Without the list the same token still verifies: the list is what revokes.
    ok(&["token", "verify", "--org-public", &org, &t.p("a.jwt")]);

    // Revoking the chain issuer revokes b too; the list keeps a's entry (serial 2).
    let chain: serde_json::Value =
        serde_json::from_str(&ok(&["token", "view", "--json", &t.p("chain/chain.jwt")])).unwrap();
    let out = ok(&[
        "org",
        "revoke-chain",
        "--org-seed",
        &t.p("org/org.seed"),
        "--id",
        chain["claims"]["jti"].as_str().unwrap(),
        "--deny-list",
        &deny,
    ]);
    assert!(
        out.contains("serial 2: 1 chain issuer(s), 1 token(s)"),
        "{out}"
    );
    let err = invalid(&[
        "token",
        "verify",
        "--org-public",
        &org,
        "--deny-list",
        &deny,
        &t.p("b.jwt"),
    ]);
    assert!(err.contains("revoked: chain issuer"), "{err}");

    // A deny list signed by another org is refused, not ignored.
    let other = Tmp::new("revoke-other");
    ok(&["org", "init", "--out", &other.p("o")]);
    let out = lanyard(&[
        "token",
        "verify",
        "--org-public",
        &other.p("o/org.public"),
        "--deny-list",
        &deny,
        &t.p("b.jwt"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed by the org"));
    // A jti must be a KSUID.
    assert_eq!(
        lanyard(&[
            "token",
            "revoke",
            "--org-seed",
            &t.p("org/org.seed"),
            "--jti",
            "nope",
            "--deny-list",
            &deny
        ])
        .status
        .code(),
        Some(2)
    );
}
