//! Finding 10: the data and socket directories and the cache file the agent trusts.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::X509svidRequest;
use lanyard_tests::{entry, lanyard_bin, rt, Deployment};

use super::ATTACKER;

// ---------------------------------------------------------------------------
// Finding 10: files the agent trusts.

#[test]
fn the_agent_refuses_a_data_dir_or_socket_dir_others_control() {
    let d = Deployment::new("sec-dirs", &entry("root", &["unix:uid:0"]));
    let cfg = d.dir.join("agent.toml");
    let run = |mutate: &dyn Fn()| {
        let _ = std::fs::remove_dir_all(d.dir.join("data"));
        let _ = std::fs::remove_dir_all(d.dir.join("run"));
        mutate();
        let mut c = Command::new(lanyard_bin())
            .args(["agent", "--config", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (Some(status), err);
            }
            if std::os::unix::net::UnixStream::connect(d.socket()).is_ok()
                || Instant::now() > deadline
            {
                let _ = c.kill();
                let _ = c.wait();
                return (None, String::new());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let data = d.dir.join("data");
    let run_dir = d.dir.join("run");
    for (what, mutate, key) in [
        (
            "data_dir owned by the attacker",
            Box::new(|| {
                std::fs::create_dir_all(&data).unwrap();
                std::os::unix::fs::chown(&data, Some(ATTACKER), Some(ATTACKER)).unwrap();
            }) as Box<dyn Fn()>,
            "data_dir",
        ),
        (
            "data_dir writable by all",
            Box::new(|| {
                std::fs::create_dir_all(&data).unwrap();
                std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
            }),
            "data_dir",
        ),
        (
            "socket directory owned by the attacker",
            Box::new(|| {
                std::fs::create_dir_all(&run_dir).unwrap();
                std::os::unix::fs::chown(&run_dir, Some(ATTACKER), Some(ATTACKER)).unwrap();
            }),
            "socket_path",
        ),
        (
            "socket directory writable by group",
            Box::new(|| {
                std::fs::create_dir_all(&run_dir).unwrap();
                std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o775)).unwrap();
            }),
            "socket_path",
        ),
    ] {
        let (status, err) = run(&*mutate);
        let status = status.unwrap_or_else(|| panic!("{what}: the agent started"));
        assert!(!status.success(), "{what}");
        assert!(
            err.contains(key) && err.contains("allow_insecure_dirs"),
            "{what}: {err}"
        );
    }
    // The operator's explicit override.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("allow_insecure_dirs = true\n{text}")).unwrap();
    let (status, _) = run(&|| {
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    });
    assert!(
        status.is_none(),
        "allow_insecure_dirs = true starts the agent"
    );
}

/// Runs `openssl args…`, failing the test if it fails.
fn openssl(args: &[&str]) -> Vec<u8> {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn a_planted_x509_svid_in_the_cache_file_is_never_served() {
    let d = Deployment::new("sec-plant", &entry("me", &["unix:uid:0"]));
    let agent = d.start();
    // A real SVID gets cached and persisted.
    let first = x509_leaf(&d.socket());
    assert!(agent.terminate().success());
    let cache = d.dir.join("data/cache.json");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(text.contains("\"x509_svid\""), "{text}");
    let real: serde_json::Value = serde_json::from_str(&text).unwrap();
    let real_entry = real["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[1]["value"]["type"] == "x509_svid")
        .unwrap()[1]["value"]
        .clone();
    let real_chain: Vec<String> = serde_json::from_value(real_entry["chain"].clone()).unwrap();

    // The attacker's material: an ed25519 CA of its own, a P-256 key, and
    // leaves for the same name.
    let f = |n: &str| d.dir.join(n).display().to_string();
    std::fs::write(
        d.dir.join("ext"),
        "subjectAltName=URI:spiffe://example.org/me\n",
    )
    .unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &f("ca.key")]);
    openssl(&[
        "req",
        "-x509",
        "-key",
        &f("ca.key"),
        "-subj",
        "/CN=attacker-ca",
        "-days",
        "1",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-out",
        &f("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &f("leaf.key"),
        "-subj",
        "/CN=me",
        "-out",
        &f("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &f("leaf.csr"),
        "-CA",
        &f("ca.pem"),
        "-CAkey",
        &f("ca.key"),
        "-days",
        "1",
        "-extfile",
        &f("ext"),
        "-out",
        &f("leaf.pem"),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-key",
        &f("leaf.key"),
        "-subj",
        "/CN=me",
        "-days",
        "1",
        "-addext",
        "subjectAltName=URI:spiffe://example.org/me",
        "-out",
        &f("self.pem"),
    ]);
    let der = |pem: &str| base64_std(&openssl(&["x509", "-in", &f(pem), "-outform", "DER"]));
    let key = base64_std(&openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &f("leaf.key"),
        "-outform",
        "DER",
    ]));

    // Each forgery, and the check that stops it.
    let forgeries = [
        (
            "its own CA",
            vec![der("leaf.pem"), der("ca.pem")],
            "not certified by the org",
        ),
        (
            "the real CA, a self-signed leaf",
            vec![der("self.pem"), real_chain[1].clone()],
            "not signed by the CA",
        ),
        (
            "the real chain, the attacker's key",
            real_chain.clone(),
            "private key does not match",
        ),
        (
            "a lone self-signed leaf",
            vec![der("self.pem")],
            "leaf + CA",
        ),
    ];
    for (what, chain, reason) in forgeries {
        let mut v = real.clone();
        for e in v["entries"].as_array_mut().unwrap() {
            if e[1]["value"]["type"] == "x509_svid" {
                e[1]["value"]["chain"] = serde_json::json!(chain.clone());
                e[1]["value"]["key"] = serde_json::json!(key.clone());
            }
        }
        std::fs::write(&cache, serde_json::to_string(&v).unwrap()).unwrap();
        let agent = d.start();
        let served = x509_leaf(&d.socket());
        assert_ne!(
            base64_std(&served),
            chain[0],
            "{what}: the planted certificate was served"
        );
        assert_ne!(served, first, "{what}: a fresh SVID is minted");
        let log = agent.log();
        assert!(
            log.contains("does not verify") && log.contains(reason),
            "{what}: {log}"
        );
        assert!(agent.terminate().success());
    }
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The DER of the X.509-SVID leaf the agent serves this process.
fn x509_leaf(socket: &Path) -> Vec<u8> {
    rt().block_on(async {
        let ch = connect(socket).await.unwrap();
        let mut s = SpiffeWorkloadApiClient::new(ch)
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let m = s.message().await.unwrap().unwrap();
        let chain = &m.svids[0].x509_svid;
        // The first certificate of the concatenated DER chain: a SEQUENCE with
        // a two-byte long-form length.
        assert_eq!(&chain[..2], &[0x30, 0x82]);
        let len = 4 + usize::from(u16::from_be_bytes([chain[2], chain[3]]));
        chain[..len].to_vec()
    })
}
