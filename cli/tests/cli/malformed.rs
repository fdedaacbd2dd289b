//! Malformed input files, each reported in one clear line.

use std::path::Path;

use super::{lanyard, ok, Tmp};

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
