//! At rest: the agent's files are private and no seed reaches its log.

use lanyard_tests::{entry, lanyard, my_uid, Deployment};

#[test]
fn the_agents_files_are_private_and_no_seed_is_logged() {
    let d = Deployment::new(
        "sec-files",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let agent = d.start();
    let out = d.dir.join("out");
    let o = lanyard(&[
        "fetch",
        "--socket",
        d.socket().to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    // The cache is written within a second of a mint.
    let cache = lanyard_tests::wait_for(10, "the credential cache", || {
        std::fs::read_dir(d.dir.join("data"))
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("cache"))
            .map(|e| e.path())
    });
    use std::os::unix::fs::MetadataExt as _;
    for entry in std::fs::read_dir(d.dir.join("data")).unwrap() {
        let p = entry.unwrap().path();
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", p.display());
    }
    assert!(cache.exists());
    // Every seed the workload received is absent from the agent's log.
    let log = agent.log();
    let mut seeds = 0;
    for f in std::fs::read_dir(&out).unwrap() {
        let p = f.unwrap().path();
        let name = p.to_string_lossy();
        if name.ends_with(".seed") || name.ends_with(".key") {
            let secret = std::fs::read_to_string(&p).unwrap();
            let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
            for line in secret
                .lines()
                .filter(|l| l.len() >= 32 && !l.starts_with("-----"))
            {
                assert!(
                    !log.contains(line.trim()),
                    "a secret from {} is in the log",
                    p.display()
                );
            }
            seeds += 1;
        }
    }
    assert!(
        seeds >= 2,
        "expected a seed and an X.509 key in {}",
        out.display()
    );
}
