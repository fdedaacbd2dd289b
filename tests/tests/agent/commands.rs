//! The `lanyard attest` and `lanyard dev` commands.

use std::process::{Command, Stdio};

use lanyard_tests::{lanyard, my_uid, Deployment};

use super::entries;

#[test]
fn attest_explains_matches_and_misses() {
    let d = Deployment::new("attest", &entries(my_uid()));
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = lanyard(&[
        "attest",
        "--pid",
        &sleeper.id().to_string(),
        "--config",
        d.dir.join("agent.toml").to_str().unwrap(),
        "--json",
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sel: Vec<&str> = v["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        sel.contains(&format!("unix:uid:{}", my_uid()).as_str()),
        "{sel:?}"
    );
    assert!(
        sel.iter()
            .any(|s| s.starts_with("unix:path:") && s.ends_with("/sleep")),
        "{sel:?}"
    );
    assert!(sel.iter().any(|s| s.starts_with("unix:sha256:")), "{sel:?}");
    assert_eq!(v["entries"][0]["subject"], "spiffe://example.org/e2e");
    assert_eq!(v["entries"][0]["matches"], true);
    assert_eq!(v["entries"][1]["matches"], false);
    assert_eq!(
        v["entries"][1]["missing_selectors"],
        serde_json::json!(["unix:path:/nonexistent"])
    );
}

#[test]
fn dev_runs_a_working_deployment_until_interrupted() {
    let dir = lanyard_tests::TempDir::new("dev");
    let mut dev = Command::new(lanyard_tests::lanyard_bin())
        .args(["dev", "--dir", dir.0.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.join("agent.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "lanyard dev did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // What `lanyard dev` printed, up to its `fetch` line, which must work as
    // printed: run by a shell with no `lanyard` on PATH.
    use std::io::BufRead as _;
    let mut stdout = std::io::BufReader::new(dev.stdout.take().unwrap());
    let mut printed = String::new();
    let fetch_line = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{printed}");
        printed.push_str(&line);
        if line.contains(" fetch --socket ") {
            break line.trim().to_owned();
        }
    };
    let out = Command::new("sh")
        .args(["-c", &fetch_line])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{fetch_line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lanyard(&[
        "token",
        "verify",
        "--org-public",
        dir.join("org/org.public").to_str().unwrap(),
        dir.join("creds/credential.jwt").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&v.stdout)
        .contains(&format!("spiffe://example.org/dev/uid/{}", my_uid())));
    Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status()
        .unwrap();
    let status = dev.wait().unwrap();
    assert!(status.success(), "{status}");
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    assert!(
        printed.contains("export SPIFFE_ENDPOINT_SOCKET=unix://"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("config:   {}", dir.join("agent.toml").display())),
        "{printed}"
    );
    assert!(!socket.exists(), "socket left behind after shutdown");
}
