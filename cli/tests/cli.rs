//! The `lanyard` CLI contract, exercised through the real binary.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lanyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = lanyard(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects exit 1 with exactly one line on stderr; returns that line.
fn invalid(args: &[&str]) -> String {
    let out = lanyard(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.lines().count(),
        1,
        "want one line on stderr, got {err:?}"
    );
    err
}

struct Tmp(PathBuf);
impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lanyard-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn p(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../token/tests/vectors/choria/chain")
}

#[test]
fn org_delegate_mint_view_verify() {
    let t = Tmp::new("flow");
    ok(&["org", "init", "--out", &t.p("org")]);
    assert_eq!(mode(&t.p("org/org.seed")), 0o600);
    let seed = std::fs::read_to_string(t.p("org/org.seed")).unwrap();
    assert!(seed.len() == 64 && !seed.ends_with('\n'));
    // Running init again must not destroy the org key.
    let again = lanyard(&["org", "init", "--out", &t.p("org")]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(t.p("org/org.seed")).unwrap(), seed);

    ok(&[
        "org",
        "delegate",
        "--org-seed",
        &t.p("org/org.seed"),
        "--out",
        &t.p("chain"),
        "--validity",
        "1d",
        "--name",
        "edge",
        "--subject-prefix",
        "spiffe://example.org/edge",
        "--network",
        "iot",
    ]);
    for f in [
        "chain.seed",
        "chain.public",
        "chain.jwt",
        "chain.crt",
        "org.crt",
        "org.public",
    ] {
        assert!(Path::new(&t.p(&format!("chain/{f}"))).exists(), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(t.p("chain/org.public")).unwrap(),
        std::fs::read_to_string(t.p("org/org.public")).unwrap(),
        "the org public key beside the chain files"
    );
    assert_eq!(mode(&t.p("chain/chain.seed")), 0o600);
    // A seed others may read still works, with a warning that names it.
    use std::os::unix::fs::PermissionsExt as _;
    let perm = |m| {
        std::fs::set_permissions(t.p("org/org.seed"), std::fs::Permissions::from_mode(m)).unwrap()
    };
    perm(0o644);
    let loose = lanyard(&[
        "org",
        "delegate",
        "--org-seed",
        &t.p("org/org.seed"),
        "--out",
        &t.p("loose"),
    ]);
    perm(0o600);
    let err = String::from_utf8_lossy(&loose.stderr);
    assert!(loose.status.success(), "{err}");
    assert!(
        err.contains("org.seed is readable by others (mode 0644)") && err.contains("chmod 600"),
        "{err}"
    );
    let quiet = lanyard(&[
        "org",
        "delegate",
        "--org-seed",
        &t.p("org/org.seed"),
        "--out",
        &t.p("quiet"),
    ]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("readable by others"));

    let mint = |subject: &str, extra: &[&str], out: &str| {
        let mut a = vec![
            "token",
            "mint",
            "--issuer-jwt",
            &*Box::leak(t.p("chain/chain.jwt").into_boxed_str()),
            "--issuer-seed",
            Box::leak(t.p("chain/chain.seed").into_boxed_str()),
            "--subject",
            subject,
            "--out",
            out,
        ];
        a.extend_from_slice(extra);
        lanyard(&a)
    };
    let out = t.p("gw.jwt");
    let m = mint(
        "spiffe://example.org/edge/gw1",
        &[
            "--network",
            "iot",
            "--audience",
            "mqtt",
            "--validity",
            "10m",
        ],
        &out,
    );
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    assert_eq!(mode(&format!("{out}.seed")), 0o600);

    // Outside the chain's constraints, or beyond its expiry: refused, nothing written.
    let refused = mint(
        "spiffe://example.org/core/db",
        &["--network", "iot"],
        &t.p("db.jwt"),
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("subject prefixes"));
    assert!(!Path::new(&t.p("db.jwt")).exists() && !Path::new(&t.p("db.jwt.seed")).exists());
    let too_long = mint(
        "spiffe://example.org/edge/gw2",
        &["--network", "iot", "--validity", "2d"],
        &t.p("gw2.jwt"),
    );
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("beyond the chain issuer's expiry"));

    let org = t.p("org/org.public");
    let v = ok(&[
        "token",
        "verify",
        "--org-public",
        &org,
        "--audience",
        "mqtt",
        "--network",
        "iot",
        &out,
    ]);
    assert!(v.starts_with("valid: spiffe://example.org/edge/gw1"), "{v}");
    ok(&["token", "verify", "--choria", "--org-public", &org, &out]);
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "token",
        "verify",
        "--json",
        "--org-public",
        &org,
        &out,
    ]))
    .unwrap();
    assert_eq!(json["claims"]["sub"], "spiffe://example.org/edge/gw1");
    assert_eq!(json["anchor"]["kind"], "chain");
    assert!(invalid(&[
        "token",
        "verify",
        "--org-public",
        &org,
        "--audience",
        "http",
        &out
    ])
    .contains("audience"));
    assert!(invalid(&[
        "token",
        "verify",
        "--org-public",
        &org,
        "--network",
        "dc",
        &out
    ])
    .contains("network"));
    let other = Tmp::new("other-org");
    ok(&["org", "init", "--out", &other.p("o")]);
    assert!(invalid(&[
        "token",
        "verify",
        "--org-public",
        &other.p("o/org.public"),
        &out
    ])
    .contains("chain not signed by org"));

    let view = ok(&["token", "view", &out]);
    for want in [
        "subject: spiffe://example.org/edge/gw1",
        "purpose: lanyard_workload",
        "public key: ",
        "expires: ",
        "trust chain",
    ] {
        assert!(view.contains(want), "view lacks {want:?}:\n{view}");
    }
    assert!(!view.contains("EXPIRED"));
    let vj: serde_json::Value =
        serde_json::from_str(&ok(&["token", "view", "--json", &out])).unwrap();
    assert_eq!(vj["expired"], false);
    // `token view T | head -0`: a reader that is gone before the first line.
    // The write fails with EPIPE (Rust ignores SIGPIPE); that ends the command
    // quietly, never with a panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let piped = Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["token", "view", &out])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(
        piped.status.success() && !err.contains("panicked"),
        "{:?} {err}",
        piped.status
    );

    // Proof of possession, with the holder's seed and with another seed.
    std::fs::write(t.p("nonce"), "n-0123456789").unwrap();
    let sig = ok(&[
        "token",
        "prove",
        "--seed",
        &format!("{out}.seed"),
        "--nonce-file",
        &t.p("nonce"),
    ]);
    let sig = sig.trim();
    ok(&[
        "token",
        "check-proof",
        "--token",
        &out,
        "--nonce-file",
        &t.p("nonce"),
        "--signature",
        sig,
    ]);
    ok(&[
        "token",
        "check-proof",
        "--token",
        &out,
        "--nonce-file",
        &t.p("nonce"),
        "--signature",
        sig,
        "--org-public",
        &org,
    ]);
    let wrong = ok(&[
        "token",
        "prove",
        "--seed",
        &t.p("chain/chain.seed"),
        "--nonce-file",
        &t.p("nonce"),
    ]);
    invalid(&[
        "token",
        "check-proof",
        "--token",
        &out,
        "--nonce-file",
        &t.p("nonce"),
        "--signature",
        wrong.trim(),
    ]);
    // One signature in 64 starts with '-' (base64url): it is a value, not an
    // option (a flaky end-to-end test found this): a wrong one is invalid (1),
    // never a usage error (2).
    invalid(&[
        "token",
        "check-proof",
        "--token",
        &out,
        "--nonce-file",
        &t.p("nonce"),
        "--signature",
        &format!("-C{}", &wrong.trim()[2..]),
    ]);

    // A holder-supplied public key: no seed is written.
    let holder = Tmp::new("holder");
    ok(&["org", "init", "--out", &holder.p("h")]);
    let pk = std::fs::read_to_string(holder.p("h/org.public")).unwrap();
    let m = mint(
        "spiffe://example.org/edge/gw3",
        &["--network", "iot", "--public-key", &pk],
        &t.p("gw3.jwt"),
    );
    assert!(m.status.success());
    assert!(!Path::new(&t.p("gw3.jwt.seed")).exists());
}

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

#[test]
fn malformed_files_get_one_clear_line() {
    let t = Tmp::new("bad");
    ok(&["org", "init", "--out", &t.p("o")]);
    let org = t.p("o/org.public");
    let cases: [(&str, &[u8], &str); 5] = [
        ("empty", b"", "empty"),
        ("garbage", b"not a token", "3 dot-separated segments"),
        ("base64", b"@@.@@.@@", "base64url"),
        ("none", b"eyJhbGciOiJub25lIn0.e30.", "unsupported algorithm"),
        ("binary", &[0xff, 0xfe, 0x00], "UTF-8"),
    ];
    for (name, bytes, want) in cases {
        std::fs::write(t.p(name), bytes).unwrap();
        let out = lanyard(&["token", "verify", "--org-public", &org, &t.p(name)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(1 | 2)), "{name}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    // Durations.
    let out = lanyard(&[
        "org",
        "delegate",
        "--org-seed",
        &t.p("o/org.seed"),
        "--out",
        &t.p("c"),
        "--validity",
        "1y",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("90s, 10m, 1h30m or 30d"));
    assert!(!Path::new(&t.p("c")).exists());
}

#[test]
fn demo_runs_end_to_end() {
    let t = Tmp::new("demo");
    let out = ok(&["demo", "--dir", &t.p("d")]);
    for step in 1..=7 {
        assert!(
            out.contains(&format!("== step {step}:")),
            "missing step {step}"
        );
    }
    assert!(out.contains("demo complete"));
    assert!(
        !out.contains(&std::fs::read_to_string(t.p("d/org/org.seed")).unwrap()),
        "demo printed a seed"
    );
}

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

/// `--version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let v = ok(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "the tests run in a git checkout");
    let head = String::from_utf8(head.stdout).unwrap();
    assert!(
        v.starts_with("lanyard ") && v.contains(&format!("(commit {})", head.trim())),
        "{v}"
    );
}
