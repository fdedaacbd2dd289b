//! Unit tests for the cgroup parser; the table of real-world files is in
//! [`cases`], apart from the tests that check it.

mod cases;

use super::path::is_container_id;
use super::*;
use cases::CASES;

#[test]
fn table() {
    for case in CASES {
        let info = parse_cgroup(case.text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let got = (
            info.container_id.as_deref(),
            info.pod_uid.as_deref(),
            info.runtime,
            info.systemd_unit.as_deref(),
        );
        assert_eq!(
            got,
            (case.id, case.pod, case.runtime, case.unit),
            "{}",
            case.name
        );
        // Every id comes with where it was found.
        assert_eq!(
            info.claims.is_empty(),
            info.container_id.is_none() && info.pod_uid.is_none(),
            "{}",
            case.name
        );
    }
}

#[test]
fn distinct_ids_per_case() {
    // Each case expects its own id, so a case cannot pass because the parser
    // kept something over from another.
    let mut seen = std::collections::HashSet::new();
    for case in CASES {
        if let Some(id) = case.id {
            assert!(is_container_id(id), "{}", case.name);
            assert!(seen.insert(id), "{} reuses {id}", case.name);
        }
    }
}

#[test]
fn conflicts() {
    let two_containers = "\
5:pids:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
4:memory:/docker/fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be
";
    assert!(matches!(
        parse_cgroup(two_containers),
        Err(CgroupError::Conflict {
            what: "container",
            ..
        })
    ));
    let v1_vs_v2 = "\
1:name=systemd:/system.slice/docker-00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60.scope
0::/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
";
    assert!(matches!(
        parse_cgroup(v1_vs_v2),
        Err(CgroupError::Conflict {
            what: "container",
            ..
        })
    ));
    let two_pods = "\
2:pids:/kubepods/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
1:name=systemd:/kubepods/pod8c591483-617b-4195-963d-b3169d767f57/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
";
    assert!(matches!(
        parse_cgroup(two_pods),
        Err(CgroupError::Conflict { what: "pod", .. })
    ));
    let two_runtimes = "\
2:pids:/docker/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
1:name=systemd:/default/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
";
    assert!(matches!(
        parse_cgroup(two_runtimes),
        Err(CgroupError::Conflict {
            what: "runtime",
            ..
        })
    ));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for text in [
        "hello",
        "12:pids",
        "x:pids:/",
        "0::relative/path",
        "-1::/",
        "0::/ok\nnonsense\n",
        "\u{0}\u{1}\u{2}",
        "0::/a\u{7}b",
        "::::",
        "🦀:🦀:/🦀",
    ] {
        assert!(
            matches!(parse_cgroup(text), Err(CgroupError::Malformed { .. })),
            "{text:?}"
        );
    }
    assert_eq!(parse_cgroup(""), Err(CgroupError::Empty));
    assert_eq!(parse_cgroup("\n\n"), Err(CgroupError::Empty));
    let err = parse_cgroup("0::/ok\nnonsense\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn odd_but_valid_paths_do_not_panic() {
    for text in [
        "0::/",
        "0::/..",
        "0::/../../..",
        "0::/a:b:c",
        "0::/kubepods-pod.slice",
        "0::/x.slice:docker:zz",
        "0::/docker-.scope",
        "0::/pod",
        "0::/.service",
        "0:://///",
    ] {
        let info = parse_cgroup(text).unwrap();
        assert_eq!(info.container_id, None, "{text}");
    }
}

#[test]
fn this_process() {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    parse_cgroup(&text).unwrap();
}

#[test]
fn runtime_names() {
    assert_eq!(Runtime::Docker.as_str(), "docker");
    assert_eq!(Runtime::Containerd.as_str(), "containerd");
    assert_eq!(Runtime::CriO.as_str(), "cri-o");
    assert_eq!(Runtime::Podman.to_string(), "podman");
}

/// The review's attack: a user makes a pod's and a container's cgroup names
/// inside `user@1001.service` and moves into it.
#[test]
fn names_in_a_users_delegated_subtree_are_dropped() {
    let id = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
    for path in [
        format!("/user.slice/user-1001.slice/user@1001.service/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-{id}.scope"),
        format!("/user.slice/user-1001.slice/user@1001.service/app.slice/docker-{id}.scope"),
        format!("/user.slice/user-1001.slice/user@1001.service/docker/{id}"),
        "/user.slice/user-1001.slice/user@1001.service/kubepods/pod8b9dd266-60dd-4433-8e5e-3bdcc7697bee".to_owned(),
        // The agent in its own cgroup namespace sees the same names after `..`.
        format!("/../../user@1001.service/x/docker-{id}.scope"),
    ] {
        for text in [format!("0::{path}\n"), format!("3:memory:/\n1:name=systemd:{path}\n0::/\n")] {
            let info = parse_cgroup(&text).unwrap();
            assert_eq!(info.container_id, None, "{text}");
            assert_eq!(info.pod_uid, None, "{text}");
            assert_eq!(info.runtime, None, "{text}");
            assert!(info.claims.is_empty(), "{text}");
            assert!(matches!(info.distrust, Some(Distrust::Delegated { .. })), "{text}");
        }
    }
    // A container runtime's own subtree, or a service named like a user's,
    // is not a user's delegation.
    for text in [
        format!("0::/system.slice/docker-{id}.scope\n"),
        format!("0::/system.slice/user@.service/docker-{id}.scope\n"),
        format!("0::/system.slice/xuser@1001.service/docker-{id}.scope\n"),
    ] {
        let info = parse_cgroup(&text).unwrap();
        assert_eq!(info.container_id.as_deref(), Some(id), "{text}");
        assert_eq!(info.distrust, None, "{text}");
    }
    // A user@ segment *below* the container (a systemd inside the container)
    // is the container's own business.
    let info = parse_cgroup(&format!(
        "0::/system.slice/docker-{id}.scope/user.slice/user@1000.service/app.slice\n"
    ))
    .unwrap();
    assert_eq!(info.container_id.as_deref(), Some(id));
}

#[test]
fn claims_name_the_directory_of_the_innermost_id() {
    let id = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
    let info = parse_cgroup(&format!(
        "4:memory:/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/{id}/sub\n1:name=systemd:/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718\n0::/../x/docker-{id}.scope (deleted)\n"
    ))
    .unwrap();
    let dirs: Vec<(u32, &str, &str)> = info
        .claims
        .iter()
        .map(|c| (c.hierarchy, c.controllers.as_str(), c.dir.as_str()))
        .collect();
    assert_eq!(
        dirs,
        [
            (
                4,
                "memory",
                format!("/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/{id}")
                    .as_str()
            ),
            (
                1,
                "name=systemd",
                "/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718"
            ),
            (0, "", format!("/../x/docker-{id}.scope").as_str()),
        ]
    );
    assert_eq!(cut_after("//a//b/c", 1), "//a//b");
    assert_eq!(cut_after("/a", 0), "/a");
}
