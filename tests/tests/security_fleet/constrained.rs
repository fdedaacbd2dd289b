//! A constrained chain signing X.509 outside its grant.

use lanyard_tests::{rt, Fleet};

use super::{chain, chain_key, delegate, now};

/// `openssl verify` of `leaf` against the org root with `chain.crt` as the
/// untrusted intermediate (as README documents): (ok, output).
fn openssl_verify(dir: &std::path::Path, chain: &str, leaf: &[u8]) -> (bool, String) {
    let leaf_pem = dir.join("leaf.pem");
    std::fs::write(&leaf_pem, lanyard_agent::pem::encode("CERTIFICATE", leaf)).unwrap();
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join(format!("{chain}/org.crt")))
        .arg("-untrusted")
        .arg(dir.join(format!("{chain}/chain.crt")))
        .arg(&leaf_pem)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Finding 3: a chain delegated for `spiffe://example.org/web` carries name
/// constraints, so an X.509-SVID its stolen seed signs for another trust domain
/// fails `openssl verify`; and lanyard's own signers refuse any name outside
/// the prefix, path included (X.509 constraints cannot name a path; README,
/// "Trust anchors").
#[test]
fn attacker_a_constrained_chain_cannot_sign_x509_outside_its_grant() {
    let f = Fleet::new("sec-fleet-x509");
    delegate(&f, "web", &["--subject-prefix", "spiffe://example.org/web"]);
    delegate(&f, "free", &[]);
    let sign = |name: &str, id: &str| {
        let c = chain(&f, name);
        let key = chain_key(&f, name);
        let pem = std::fs::read_to_string(f.dir.join(&format!("{name}/chain.crt"))).unwrap();
        let der = lanyard_agent::pem::decode_certs(&pem).remove(0);
        let signer =
            lanyard_agent::svid::X509Signer::new(&key, der, now() - 60, c.expires_at()).unwrap();
        signer.sign(id, now(), 600).unwrap().chain.remove(0)
    };
    let (ok, why) = openssl_verify(
        &f.dir.0,
        "web",
        &sign("web", "spiffe://example.org/web/api"),
    );
    assert!(ok, "{why}");
    let (ok, why) = openssl_verify(&f.dir.0, "web", &sign("web", "spiffe://evil.org/admin"));
    assert!(
        !ok,
        "a constrained chain's SVID for another trust domain verified"
    );
    assert!(why.contains("permitted subtree violation"), "{why}");
    // An unconstrained chain still signs anything in any trust domain.
    let (ok, why) = openssl_verify(&f.dir.0, "free", &sign("free", "spiffe://evil.org/admin"));
    assert!(ok, "{why}");

    // lanyard's own signing path refuses the path outside the prefix.
    let d = f.dir.0.display().to_string();
    let config = format!(
        "[authority]\nchain_jwt = \"{d}/web/chain.jwt\"\nchain_seed = \"{d}/web/chain.seed\"\norg_public = \"{d}/org/org.public\"\n"
    );
    let files = lanyard_agent::config::Config::parse(
        &format!("trust_domain = \"example.org\"\nsocket_path = \"{d}/s.sock\"\ndata_dir = \"{d}/data\"\n{config}"),
        &f.dir.0,
        |_| None,
    )
    .unwrap();
    let lanyard_agent::config::Source::Local(files) = files.source else {
        panic!("not a standalone config")
    };
    let authority =
        lanyard_agent::authority::LocalAuthority::load(&files, "example.org", now()).unwrap();
    use lanyard_agent::authority::Authority as _;
    rt().block_on(async {
        authority
            .x509_svid("spiffe://example.org/web/api", 600, now())
            .await
            .unwrap();
        for id in [
            "spiffe://example.org/admin",
            "spiffe://example.org/web/../admin",
        ] {
            assert!(authority.x509_svid(id, 600, now()).await.is_err(), "{id}");
            assert!(
                authority
                    .jwt_svid(id, &["aud".into()], 600, now())
                    .await
                    .is_err(),
                "{id}"
            );
        }
    });
}
