use super::*;

const GOOD: &str = r#"
trust_domain = "example.org"
socket_path = "run/agent.sock"
data_dir = "/var/lib/lanyard"
[authority]
chain_jwt = "chain.jwt"
chain_seed = "chain.seed"
org_public = "org.public"
[[entries]]
subject = "spiffe://example.org/web"
selectors = ["unix:uid:1000", "unix:path:/usr/bin/web"]
ttl = "1h"
audiences = []
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/lanyard"), |_| None)
}

#[test]
fn contract_keys_parse() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.trust_domain, "example.org");
    assert_eq!(c.socket_path, Path::new("/etc/lanyard/run/agent.sock"));
    assert_eq!(c.data_dir, Path::new("/var/lib/lanyard"));
    let Source::Local(a) = &c.source else {
        panic!("standalone config")
    };
    assert_eq!(a.chain_crt, Path::new("/etc/lanyard/chain.crt"));
    assert_eq!(c.entries[0].ttl_secs, 3600);
    assert_eq!(c.entries[0].selectors.len(), 2);
}

#[test]
fn upstream_replaces_authority() {
    let up = GOOD.replace(
        "[authority]\nchain_jwt = \"chain.jwt\"\nchain_seed = \"chain.seed\"\norg_public = \"org.public\"",
        "[upstream]\naddress = \"127.0.0.1:8443\"\norg_public = \"org.public\"\njoin_token = \"lanyard-jt-x\"",
    );
    let c = parse(&up).unwrap();
    let Source::Upstream(u) = c.source else {
        panic!("upstream config")
    };
    assert_eq!(u.addresses, ["127.0.0.1:8443"]);
    assert_eq!(u.org_public, Path::new("/etc/lanyard/org.public"));
    assert_eq!(u.evidence, NodeEvidence::JoinToken("lanyard-jt-x".into()));
    let both = up.replace(
        "[upstream]",
        "[authority]\nchain_jwt = \"a\"\nchain_seed = \"b\"\norg_public = \"c\"\n[upstream]",
    );
    assert_eq!(parse(&both).unwrap_err().key, "upstream");
    let two = up.replace(
        "join_token = \"lanyard-jt-x\"",
        "join_token = \"t\"\npsat_token_file = \"p\"",
    );
    assert_eq!(parse(&two).unwrap_err().key, "upstream.join_token");
}

#[test]
fn k8s_host_and_node_come_from_the_downward_api() {
    let text = format!("{GOOD}[plugins.k8s]\nca_file = \"ca.pem\"\n");
    let k = Config::parse(&text, Path::new("/"), |v| match v {
        "LANYARD_K8S_KUBELET_HOST" => Some("10.0.0.7".into()),
        "LANYARD_K8S_NODE_NAME" => Some("node-7".into()),
        _ => None,
    })
    .unwrap()
    .k8s
    .unwrap();
    assert_eq!(k.kubelet_host, "10.0.0.7");
    assert_eq!(k.node_name.as_deref(), Some("node-7"));
}

#[test]
fn plugins_container_and_k8s() {
    let with = |extra: &str| parse(&format!("{GOOD}{extra}"));
    let c = with("[plugins.container]\ndocker_socket = \"/var/run/docker.sock\"\n[plugins.k8s]\nca_file = \"ca.pem\"\npod_wait = \"5s\"\n").unwrap();
    assert_eq!(
        c.docker_socket.as_deref(),
        Some(Path::new("/var/run/docker.sock"))
    );
    let k = c.k8s.unwrap();
    assert_eq!(k.ca_file.as_deref(), Some(Path::new("/etc/lanyard/ca.pem")));
    assert_eq!(k.pod_wait, std::time::Duration::from_secs(5));
    assert_eq!(k.kubelet_port, 10250);
    // Verification is on unless turned off by name.
    assert_eq!(
        with("[plugins.k8s]\n").unwrap_err().key,
        "plugins.k8s.ca_file"
    );
    assert!(with("[plugins.k8s]\ninsecure_skip_verify = true\n").is_ok());
    assert_eq!(
        with("[plugins.k8s]\nca_file = \"x\"\npod_wait = \"soon\"\n")
            .unwrap_err()
            .key,
        "plugins.k8s.pod_wait"
    );
}

#[test]
fn template_subjects() {
    let t = GOOD.replace(
        "spiffe://example.org/web",
        "spiffe://{trust_domain}/ns/{k8s:ns}/sa/{k8s:sa}",
    );
    assert_eq!(
        parse(&t).unwrap().entries[0].subject,
        "spiffe://example.org/ns/{k8s:ns}/sa/{k8s:sa}"
    );
    for bad in [
        "spiffe://{k8s:ns}/x",
        "spiffe://example.org/{ns}",
        "spiffe://example.org/{k8s:ns",
    ] {
        let e = parse(&GOOD.replace("spiffe://example.org/web", bad)).unwrap_err();
        assert_eq!(e.key, "entries[0].subject", "{bad}: {e}");
    }
}

#[test]
fn env_overrides() {
    let c = Config::parse(GOOD, Path::new("/"), |k| {
        (k == "LANYARD_SOCKET_PATH").then(|| "/tmp/x.sock".into())
    })
    .unwrap();
    assert_eq!(c.socket_path, Path::new("/tmp/x.sock"));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            GOOD.replace("ttl = \"1h\"", "ttl = \"1 hour\""),
            "entries[0].ttl",
        ),
        (GOOD.replace("unix:uid:1000", "uid"), "entries[0].selectors"),
        // Selectors no attestor derives would never match: refused.
        (
            GOOD.replace("unix:uid:1000", "unixx:uid:0"),
            "entries[0].selectors",
        ),
        (
            GOOD.replace("unix:uid:1000", "unix:uid"),
            "entries[0].selectors",
        ),
        // A TOML syntax error names the key, the line and the column.
        ("socket_path = \n".to_owned(), "socket_path"),
        // The same entry twice.
        (
            {
                let block = GOOD[GOOD.find("[[entries]]").unwrap()..].to_owned();
                format!("{GOOD}{block}")
            },
            "entries[1]",
        ),
        (
            GOOD.replace("spiffe://example.org/web", "spiffe://other.org/web"),
            "entries[0].subject",
        ),
        (
            GOOD.replace(
                "trust_domain = \"example.org\"",
                "trust_domain = \"Example.org\"",
            ),
            "trust_domain",
        ),
        (GOOD.replace("data_dir", "datadir"), "datadir"),
        (
            GOOD.replace("[authority]", "[authority]\nextra = 1"),
            "extra",
        ),
        (
            GOOD.replace(
                "selectors = [\"unix:uid:1000\", \"unix:path:/usr/bin/web\"]",
                "selectors = []",
            ),
            "entries[0].selectors",
        ),
        ("trust_domain = 1".to_owned(), "trust_domain"),
    ];
    for (text, key) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().contains(key), "{e}");
        if key == "socket_path" {
            assert!(e.to_string().contains("(line 1, column 15)"), "{e}");
        }
    }
}

#[test]
fn connection_limits() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.connections, crate::server::ConnLimits::default());
    let text = format!(
        "{GOOD}[connections]\nmax_total = 100\nmax_per_process = 8\nfirst_byte_timeout = \"3s\"\n"
    );
    let l = parse(&text).unwrap().connections;
    assert_eq!((l.max_total, l.max_per_process), (100, 8));
    assert_eq!(l.idle_timeout, std::time::Duration::from_secs(3));
    assert_eq!(l.reserve, 25, "the default reserve is at most a quarter");
    let l = parse(&format!(
        "{GOOD}[connections]\nidle_timeout = \"4s\"\nreserve = 10\nreserve_per_uid = 2\nmax_streams_per_connection = 8\nmax_streams_per_uid = 9\n"
    ))
    .unwrap()
    .connections;
    assert_eq!(
        (
            l.idle_timeout.as_secs(),
            l.reserve,
            l.reserve_per_uid,
            l.max_streams_per_connection,
            l.max_streams_per_uid
        ),
        (4, 10, 2, 8, 9)
    );
    // A small total also caps the per-process default.
    let l = parse(&format!("{GOOD}[connections]\nmax_total = 10\n"))
        .unwrap()
        .connections;
    assert_eq!(l.max_per_process, 10);
    for (bad, key) in [
        ("max_total = 0", "connections.max_total"),
        ("max_per_process = 0", "connections.max_per_process"),
        ("max_per_uid = 0", "connections.max_per_uid"),
        (
            "max_total = 4\nmax_per_process = 5",
            "connections.max_per_process",
        ),
        (
            "first_byte_timeout = \"0s\"",
            "connections.first_byte_timeout",
        ),
        (
            "first_byte_timeout = \"soon\"",
            "connections.first_byte_timeout",
        ),
        ("idle_timeout = \"0s\"", "connections.idle_timeout"),
        (
            "idle_timeout = \"1s\"\nfirst_byte_timeout = \"1s\"",
            "connections.first_byte_timeout",
        ),
        ("max_total = 8\nreserve = 8", "connections.reserve"),
        ("max_streams_per_uid = 0", "connections.max_streams_per_uid"),
        (
            "max_streams_per_connection = 0",
            "connections.max_streams_per_connection",
        ),
    ] {
        let e = parse(&format!("{GOOD}[connections]\n{bad}\n")).unwrap_err();
        assert_eq!(e.key, key, "{bad}: {e}");
    }
}
