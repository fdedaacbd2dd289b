//! Unit tests for the `unix` attestor, run against this test process, child
//! processes of copied binaries and a fake `/etc`.

use super::*;

fn me() -> ProcessRef {
    ProcessRef {
        pid: std::process::id() as i32,
        uid: 4242,
        gid: 4343,
        groups: None,
    }
}

#[test]
fn attests_this_process() {
    let a = UnixAttestor::default();
    let sel: Vec<String> = a
        .attest(&me())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(sel.contains(&"unix:uid:4242".to_owned()), "{sel:?}");
    assert!(sel.contains(&"unix:gid:4343".to_owned()));
    let exe = std::env::current_exe().unwrap();
    assert!(
        sel.contains(&format!("unix:path:{}", exe.display())),
        "{sel:?}"
    );
    let bytes = std::fs::read(&exe).unwrap();
    let want = lanyard_token::hex::encode(&Sha256::digest(&bytes));
    assert!(sel.contains(&format!("unix:sha256:{want}")));
}

#[test]
fn concurrent_callers_share_one_read_of_a_binary() {
    let a = std::sync::Arc::new(UnixAttestor::default());
    let p = me();
    let all: Vec<_> = (0..16)
        .map(|_| {
            let (a, p) = (a.clone(), p.clone());
            std::thread::spawn(move || a.attest(&p).unwrap())
        })
        .collect();
    let first = all
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect::<Vec<_>>();
    assert!(first.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        a.hash_reads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "16 concurrent attestations of one binary read it once"
    );
}

#[test]
fn hash_only_when_an_entry_wants_it() {
    let a = UnixAttestor::default();
    let sel = a.attest_wanted(&me(), &Wanted::default()).unwrap();
    assert!(sel.iter().all(|s| !s.as_str().starts_with("unix:sha256:")));
    assert!(sel.iter().all(|s| !s.as_str().starts_with("unix:path:")));
    assert_eq!(a.hash_reads.load(std::sync::atomic::Ordering::Relaxed), 0);
    let mut w = Wanted::default();
    w.add_selector(&Selector::parse("unix:sha256:0123").unwrap());
    let sel = a.attest_wanted(&me(), &w).unwrap();
    assert!(sel.iter().any(|s| s.as_str().starts_with("unix:sha256:")));
    assert_eq!(a.hash_reads.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn size_cap_drops_only_the_hash() {
    let a = UnixAttestor::new(16);
    let sel = a.attest(&me()).unwrap();
    assert!(sel.iter().all(|s| !s.as_str().starts_with("unix:sha256:")));
    assert!(sel.iter().any(|s| s.as_str().starts_with("unix:path:")));
}

#[test]
fn names_from_etc() {
    let dir = std::env::temp_dir().join(format!("lanyard-unix-etc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("passwd"),
        "root:x:0:0::/root:/bin/sh\nweb:x:4242:4343::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("group"), "web:x:4343:\n").unwrap();
    let a = UnixAttestor::default().with_roots("/proc", &dir);
    let sel: Vec<String> = a
        .attest(&me())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(sel.contains(&"unix:user:web".to_owned()));
    assert!(sel.contains(&"unix:group:web".to_owned()));
    // A changed file is read again, once NAMES_RECHECK has passed.
    std::fs::write(dir.join("passwd"), "webserver:x:4242:4343::/:/bin/false\n").unwrap();
    std::thread::sleep(NAMES_RECHECK + std::time::Duration::from_millis(50));
    let sel: Vec<String> = a
        .attest(&me())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(sel.contains(&"unix:user:webserver".to_owned()), "{sel:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gone_process_is_an_error() {
    let a = UnixAttestor::default();
    let err = a
        .attest(&ProcessRef {
            pid: i32::MAX,
            uid: 0,
            gid: 0,
            groups: None,
        })
        .unwrap_err();
    assert!(matches!(err, AttestError::ProcessGone(_)), "{err}");
}

/// What an entry naming the binary by path and by hash wants.
fn sha256_wanted() -> Wanted {
    let mut w = Wanted::default();
    w.add_selector(&Selector::parse("unix:sha256:0123").unwrap());
    w.add_selector(&Selector::parse("unix:path:/x").unwrap());
    w
}

fn selectors_of(a: &UnixAttestor, pid: u32) -> Vec<String> {
    let p = ProcessRef {
        pid: pid as i32,
        uid: 0,
        gid: 0,
        groups: None,
    };
    a.attest_wanted(&p, &sha256_wanted())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The review's attack on the hash cache: hash a file once, rewrite it with
/// other bytes of the same size, set its mtime back. The old hash must not
/// be served.
#[test]
fn a_rewritten_binary_with_its_mtime_reset_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tool");
    let original = std::fs::read("/bin/sleep").unwrap();
    std::fs::write(&bin, &original).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mtime = std::fs::metadata(&bin).unwrap().modified().unwrap();
    // Older than a second: its hash is kept (see exe_sha256), which is
    // what the attack needs.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let a = UnixAttestor::default();
    let run = |a: &UnixAttestor| {
        let mut c = std::process::Command::new(&bin).arg("30").spawn().unwrap();
        let sel = selectors_of(a, c.id());
        c.kill().unwrap();
        c.wait().unwrap();
        sel
    };
    let hash = |bytes: &[u8]| {
        format!(
            "unix:sha256:{}",
            lanyard_token::hex::encode(&Sha256::digest(bytes))
        )
    };
    assert!(run(&a).contains(&hash(&original)));
    assert!(run(&a).contains(&hash(&original)));
    assert_eq!(
        a.hash_reads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the hash was kept"
    );
    // Same size, other bytes (a letter of the usage text), same mtime.
    let mut changed = original.clone();
    let at = changed.windows(5).position(|w| w == b"Usage").unwrap();
    changed[at] = b'u';
    std::fs::write(&bin, &changed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&bin)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&bin).unwrap().modified().unwrap(), mtime);
    let sel = run(&a);
    assert!(sel.contains(&hash(&changed)), "{sel:?}");
    assert!(!sel.contains(&hash(&original)), "{sel:?}");
}

/// The review's bind-mount attack: in a user and mount namespace of its
/// own, a process can make any path name its binary. Such a process gets
/// no path or hash, unless the config allows it.
#[test]
fn a_process_in_its_own_mount_namespace_gets_no_path_or_hash() {
    let Ok(mut c) = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sleep", "30"])
        .spawn()
    else {
        panic!("unshare(1) is needed (util-linux)");
    };
    // Wait until unshare has exec'd sleep in its new namespaces.
    let own = namespaces(Path::new("/proc/self"));
    let dir = PathBuf::from(format!("/proc/{}", c.id()));
    for _ in 0..200 {
        if namespaces(&dir) != own
            && std::fs::read_link(dir.join("exe")).is_ok_and(|p| p.ends_with("sleep"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let sel = selectors_of(&UnixAttestor::default(), c.id());
    assert!(sel.iter().any(|s| s.starts_with("unix:uid:")), "{sel:?}");
    assert!(
        !sel.iter()
            .any(|s| s.starts_with("unix:path:") || s.starts_with("unix:sha256:")),
        "{sel:?}"
    );
    let sel = selectors_of(
        &UnixAttestor::default().with_foreign_namespaces(true),
        c.id(),
    );
    assert!(sel.iter().any(|s| s.starts_with("unix:path:")), "{sel:?}");
    assert!(sel.iter().any(|s| s.starts_with("unix:sha256:")), "{sel:?}");
    c.kill().unwrap();
    c.wait().unwrap();
    // This process shares the agent's (the test's) namespaces: it does.
    let sel = selectors_of(&UnixAttestor::default(), std::process::id());
    assert!(sel.iter().any(|s| s.starts_with("unix:path:")), "{sel:?}");
}

/// A path is a selector only when it names the file that runs: here the
/// file at the path is replaced while the process runs the old one.
#[test]
fn a_path_that_names_another_file_than_the_one_running_is_no_selector() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tool");
    std::fs::copy("/bin/sleep", &bin).unwrap();
    let mut c = std::process::Command::new(&bin).arg("30").spawn().unwrap();
    let a = UnixAttestor::default();
    let mut w = Wanted::default();
    w.add_selector(&Selector::parse("unix:path:/x").unwrap());
    let p = ProcessRef {
        pid: c.id() as i32,
        uid: 0,
        gid: 0,
        groups: None,
    };
    let has_path = |a: &UnixAttestor| {
        a.attest_wanted(&p, &w)
            .unwrap()
            .iter()
            .any(|s| s.as_str() == format!("unix:path:{}", bin.display()))
    };
    assert!(has_path(&a));
    // Another file renamed over the path: the name now means other bytes.
    let other = dir.path().join("other");
    std::fs::copy("/bin/sleep", &other).unwrap();
    std::fs::rename(&other, &bin).unwrap();
    assert!(!has_path(&a));
    c.kill().unwrap();
    c.wait().unwrap();
}
