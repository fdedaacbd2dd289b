//! The Choria test vectors through the CLI.

use super::{invalid, lanyard, ok, vectors};

#[test]
fn choria_vectors_through_the_cli() {
    let dir = vectors();
    let expected = std::fs::read_to_string(dir.join("EXPECTED_tokens_v0.0.4.txt")).unwrap();
    let mut checked = 0;
    for line in expected.lines().filter(|l| l.contains(".jwt ")) {
        let mut it = line.split_whitespace();
        let (file, key) = (it.next().unwrap(), it.next().unwrap());
        let verdict: Vec<&str> = it.collect();
        let key_file = dir.join(if key == "org" {
            "org_issuer.public"
        } else {
            "unrelated.public"
        });
        let out = lanyard(&[
            "token",
            "verify",
            "--choria",
            "--org-public",
            key_file.to_str().unwrap(),
            dir.join(file).to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if verdict[0] == "OK" {
            assert!(out.status.success(), "{file} {key}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{file} {key}");
            let reference = verdict.join(" ");
            let want = if reference.contains("ed25519: verification error") {
                "bad signature"
            } else if reference.contains("not signed by org issuer") {
                "chain not signed by org"
            } else if reference.contains("invalid chain signature") {
                "invalid chain signature"
            } else if reference.contains("expired") {
                "expired"
            } else {
                panic!("unknown reference {reference}")
            };
            assert!(
                stderr.contains(want),
                "{file} {key}: reference {reference:?}, ours {stderr:?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 22);
    // Under lanyard rules the same valid Choria token is refused with a pointer to --choria.
    let err = invalid(&[
        "token",
        "verify",
        "--org-public",
        dir.join("org_issuer.public").to_str().unwrap(),
        dir.join("client.jwt").to_str().unwrap(),
    ]);
    assert!(err.contains("--choria"), "{err}");
    // Choria's expired marker in view.
    let view = ok(&[
        "token",
        "view",
        dir.join("client_expired.jwt").to_str().unwrap(),
    ]);
    assert!(
        view.contains("EXPIRED") && view.contains("subject: up=expired"),
        "{view}"
    );
    // Choria's own nonce vector.
    let sig = std::fs::read_to_string(dir.join("nonce.sig")).unwrap();
    ok(&[
        "token",
        "check-proof",
        "--token",
        dir.join("client.jwt").to_str().unwrap(),
        "--nonce-file",
        dir.join("nonce.txt").to_str().unwrap(),
        "--signature",
        sig.trim(),
    ]);
}
