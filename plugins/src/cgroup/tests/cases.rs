//! Real-world `/proc/PID/cgroup` files and what each must parse to: a long table of
//! data, kept out of the tests that run it.

use crate::cgroup::Runtime;

/// One real-world cgroup file and what it must parse to.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) text: &'static str,
    pub(super) id: Option<&'static str>,
    pub(super) pod: Option<&'static str>,
    pub(super) runtime: Option<Runtime>,
    pub(super) unit: Option<&'static str>,
}

pub(super) const CASES: &[Case] = &[
    Case {
        name: "docker, cgroup v1 (hybrid), cgroupfs driver",
        text: "\
12:perf_event:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
11:hugetlb:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
10:pids:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
9:devices:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
8:memory:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
7:cpu,cpuacct:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
6:freezer:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
5:net_cls,net_prio:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
4:rdma:/
3:blkio:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
2:cpuset:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
1:name=systemd:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
0::/system.slice/containerd.service
",
        id: Some("00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "docker, cgroup v1, systemd driver (CentOS 7)",
        text: "\
11:cpuset:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
10:devices:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
9:hugetlb:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
8:blkio:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
7:net_prio,net_cls:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
6:perf_event:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
5:memory:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
4:pids:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
3:cpuacct,cpu:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
2:freezer:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
1:name=systemd:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
",
        id: Some("fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "docker, cgroup v2, systemd driver",
        text: "0::/system.slice/docker-f378696bcfeb4336d887b249a2ff4355341fd5097388ffe8470866a7564997cc.scope\n",
        id: Some("f378696bcfeb4336d887b249a2ff4355341fd5097388ffe8470866a7564997cc"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "docker-in-docker, cgroupfs: the inner container",
        text: "0::/docker/abde15ba63dd23e3ce2854b1698542661cbd83e99078c8304a1ba8671269ab84/docker/8b6530b2da16b512aaee496a997a79f8198f1c6a074739bf815893fef20c541e\n",
        id: Some("8b6530b2da16b512aaee496a997a79f8198f1c6a074739bf815893fef20c541e"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "kubernetes, cgroup v1, cgroupfs driver, burstable",
        text: "\
12:hugetlb:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
11:memory:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
10:cpu,cpuacct:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
9:freezer:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
8:net_cls,net_prio:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
7:perf_event:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
6:blkio:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
5:pids:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
4:devices:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
3:cpuset:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
2:rdma:/
1:name=systemd:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
0::/
",
        id: Some("d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba"),
        pod: Some("cf3f6293-0883-4080-a53f-3ae526af0d93"),
        runtime: None,
        unit: None,
    },
    Case {
        name: "kubernetes, cgroup v1, cgroupfs driver, guaranteed",
        text: "4:pids:/kubepods/pod8c591483-617b-4195-963d-b3169d767f57/a391b89b20509c5096830afc0437fc6d49a14b20eb380b3aeb590dc82e5b5889\n1:name=systemd:/kubepods/pod8c591483-617b-4195-963d-b3169d767f57/a391b89b20509c5096830afc0437fc6d49a14b20eb380b3aeb590dc82e5b5889\n",
        id: Some("a391b89b20509c5096830afc0437fc6d49a14b20eb380b3aeb590dc82e5b5889"),
        pod: Some("8c591483-617b-4195-963d-b3169d767f57"),
        runtime: None,
        unit: None,
    },
    Case {
        name: "kubernetes, cgroup v2, systemd driver, containerd",
        text: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-9048ab2eb51744058f0536db7f716e1a09170d58997dd38e063563873825da00.scope\n",
        id: Some("9048ab2eb51744058f0536db7f716e1a09170d58997dd38e063563873825da00"),
        pod: Some("8b9dd266-60dd-4433-8e5e-3bdcc7697bee"),
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "kubernetes, cgroup v2, systemd driver, guaranteed pod",
        text: "0::/kubepods.slice/kubepods-pod5805546d_637a_4421_afe7_4ca7edbffc99.slice/cri-containerd-476f00d81c362aae68996b886a7b2023e3d3c5c2382edc46e438d2090abbfc15.scope\n",
        id: Some("476f00d81c362aae68996b886a7b2023e3d3c5c2382edc46e438d2090abbfc15"),
        pod: Some("5805546d-637a-4421-afe7-4ca7edbffc99"),
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "kubernetes, cgroup v1, systemd driver, dockershim",
        text: "\
11:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1eea9d90_af39_488d_9c44_3171eadc1718.slice/docker-26dbc6f166858421e8f8d98b4095ea1ad50ae3b9c0c77128be7581288664d675.scope
1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1eea9d90_af39_488d_9c44_3171eadc1718.slice/docker-26dbc6f166858421e8f8d98b4095ea1ad50ae3b9c0c77128be7581288664d675.scope
",
        id: Some("26dbc6f166858421e8f8d98b4095ea1ad50ae3b9c0c77128be7581288664d675"),
        pod: Some("1eea9d90-af39-488d-9c44-3171eadc1718"),
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "kubelet systemd driver, containerd cgroupfs (slice:prefix:id leaf)",
        text: "0::/system.slice/containerd.service/kubepods-burstable-pod2299b863_527e_46a0_b1a3_a8fe6591f3bb.slice:cri-containerd:0e0065d1e04ebb6670e8bda93cfaa990e297977ab90a881cf60699c157f306b5\n",
        id: Some("0e0065d1e04ebb6670e8bda93cfaa990e297977ab90a881cf60699c157f306b5"),
        pod: Some("2299b863-527e-46a0-b1a3-a8fe6591f3bb"),
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "CRI-O, cgroup v2",
        text: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podf7be8995_c0bf_4c68_a077_5eafc9b43c8f.slice/crio-3be863a8e166244c7df6466ee1e31a134b4bf60d6c85b5ad27792a77160fdb8c.scope\n",
        id: Some("3be863a8e166244c7df6466ee1e31a134b4bf60d6c85b5ad27792a77160fdb8c"),
        pod: Some("f7be8995-c0bf-4c68-a077-5eafc9b43c8f"),
        runtime: Some(Runtime::CriO),
        unit: None,
    },
    Case {
        name: "CRI-O, cgroup v2, crun's container sub-cgroup",
        text: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podf7be8995_c0bf_4c68_a077_5eafc9b43c8f.slice/crio-dd1091166cb32cca867f1f7dd7383ea673fe74fdb024d5c5977d485b27f97d79.scope/container\n",
        id: Some("dd1091166cb32cca867f1f7dd7383ea673fe74fdb024d5c5977d485b27f97d79"),
        pod: Some("f7be8995-c0bf-4c68-a077-5eafc9b43c8f"),
        runtime: Some(Runtime::CriO),
        unit: None,
    },
    Case {
        name: "CRI-O conmon: the pod, but not a container",
        text: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podf7be8995_c0bf_4c68_a077_5eafc9b43c8f.slice/crio-conmon-3be863a8e166244c7df6466ee1e31a134b4bf60d6c85b5ad27792a77160fdb8c.scope\n",
        id: None,
        pod: Some("f7be8995-c0bf-4c68-a077-5eafc9b43c8f"),
        runtime: None,
        unit: None,
    },
    Case {
        name: "CRI-O, cgroup v1, cgroupfs driver",
        text: "\
10:memory:/kubepods/besteffort/pod892875e5-5177-426a-b0bb-9d76048eb5b5/crio-53a7974b5ca6076ab370cd6839b1ab290e579e33e5ae8c3187cb521874322276
1:name=systemd:/kubepods/besteffort/pod892875e5-5177-426a-b0bb-9d76048eb5b5/crio-53a7974b5ca6076ab370cd6839b1ab290e579e33e5ae8c3187cb521874322276
",
        id: Some("53a7974b5ca6076ab370cd6839b1ab290e579e33e5ae8c3187cb521874322276"),
        pod: Some("892875e5-5177-426a-b0bb-9d76048eb5b5"),
        runtime: Some(Runtime::CriO),
        unit: None,
    },
    Case {
        name: "podman rootful, cgroup v2",
        text: "0::/machine.slice/libpod-505c03bf02b9e7ce9c3e39b346e3f49be16f62891b3ba98aeedde0e4d20793b4.scope/container\n",
        id: Some("505c03bf02b9e7ce9c3e39b346e3f49be16f62891b3ba98aeedde0e4d20793b4"),
        pod: None,
        runtime: Some(Runtime::Podman),
        unit: None,
    },
    Case {
        name: "podman rootful, cgroup v1, cgroupfs manager",
        text: "7:memory:/libpod_parent/libpod-7165ba5ca6f58618fd73eca699a5dc81446f41dc711ac5d0731b1bf805cbaf63\n1:name=systemd:/libpod_parent/libpod-7165ba5ca6f58618fd73eca699a5dc81446f41dc711ac5d0731b1bf805cbaf63\n",
        id: Some("7165ba5ca6f58618fd73eca699a5dc81446f41dc711ac5d0731b1bf805cbaf63"),
        pod: None,
        runtime: Some(Runtime::Podman),
        unit: None,
    },
    Case {
        // Named by the user in their own delegated subtree: not believed.
        name: "podman rootless, cgroup v2",
        text: "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-0eb77701f5b8e7b7d9eb434bdd7777e1999217cb9c5cfeaa5fca746f813033ee.scope/container\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("user@1000.service"),
    },
    Case {
        name: "podman conmon",
        text: "0::/machine.slice/libpod-conmon-505c03bf02b9e7ce9c3e39b346e3f49be16f62891b3ba98aeedde0e4d20793b4.scope\n",
        id: None,
        pod: None,
        runtime: None,
        unit: None,
    },
    Case {
        name: "kind, cgroup v1: the pod's container inside the node container",
        text: "\
12:pids:/docker/c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/b47410b5e22be681951805c7e1e3c2128dae9267ea078605475cb23bab0a1464
1:name=systemd:/docker/c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/b47410b5e22be681951805c7e1e3c2128dae9267ea078605475cb23bab0a1464
0::/
",
        id: Some("b47410b5e22be681951805c7e1e3c2128dae9267ea078605475cb23bab0a1464"),
        pod: Some("1eea9d90-af39-488d-9c44-3171eadc1718"),
        runtime: None,
        unit: None,
    },
    Case {
        name: "kind, cgroup v2, host cgroup namespace",
        text: "0::/system.slice/docker-c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1eea9d90_af39_488d_9c44_3171eadc1718.slice/cri-containerd-a9368847e25405f4987469069d914b9b8d0b5df15c332e69987a8eae3d8178cd.scope\n",
        id: Some("a9368847e25405f4987469069d914b9b8d0b5df15c332e69987a8eae3d8178cd"),
        pod: Some("1eea9d90-af39-488d-9c44-3171eadc1718"),
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "kind node's own processes: the node container, not a pod",
        text: "0::/docker/c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718\n",
        id: Some("c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "namespace-relative: CRI-O sibling",
        text: "0::/../crio-2f421ac4640cd021faf68b700e3007022e4f999dcecd5c7ed0b1d88cfd9a83cc.scope\n",
        id: Some("2f421ac4640cd021faf68b700e3007022e4f999dcecd5c7ed0b1d88cfd9a83cc"),
        pod: None,
        runtime: Some(Runtime::CriO),
        unit: None,
    },
    Case {
        name: "namespace-relative: bare id",
        text: "0::/../../395928619ee04aebc5e33bfeafdf36d8bebf73b2f48216d46e34b091100a4a85\n",
        id: Some("395928619ee04aebc5e33bfeafdf36d8bebf73b2f48216d46e34b091100a4a85"),
        pod: None,
        runtime: None,
        unit: None,
    },
    Case {
        name: "namespace-relative: another pod's container",
        text: "0::/../../kubepods-besteffort-pod2299b863_527e_46a0_b1a3_a8fe6591f3bb.slice/cri-containerd-2c3dd5fecdd800ed55c3eca87d9d17301d02c7adc6137e036bdcabb2cf66585f.scope\n",
        id: Some("2c3dd5fecdd800ed55c3eca87d9d17301d02c7adc6137e036bdcabb2cf66585f"),
        pod: Some("2299b863-527e-46a0-b1a3-a8fe6591f3bb"),
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "containerd without CRI (ctr), namespace default",
        text: "0::/default/d189a8fbe0a47e25455842b4dc43b510c7fc2dc9a84cad222bdc3000dcdc6215\n",
        id: Some("d189a8fbe0a47e25455842b4dc43b510c7fc2dc9a84cad222bdc3000dcdc6215"),
        pod: None,
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "containerd without CRI, cgroup v1, namespace k8s.io",
        text: "5:pids:/k8s.io/ae3d42e156d8ce88e01376a5dd066d3c3a8ddfa3aebc32d6f11ddd2e783eaa74\n1:name=systemd:/k8s.io/ae3d42e156d8ce88e01376a5dd066d3c3a8ddfa3aebc32d6f11ddd2e783eaa74\n",
        id: Some("ae3d42e156d8ce88e01376a5dd066d3c3a8ddfa3aebc32d6f11ddd2e783eaa74"),
        pod: None,
        runtime: Some(Runtime::Containerd),
        unit: None,
    },
    Case {
        name: "host: login session",
        text: "0::/user.slice/user-0.slice/session-3.scope\n",
        id: None,
        pod: None,
        runtime: None,
        unit: None,
    },
    Case {
        name: "host: systemd itself",
        text: "0::/init.scope\n",
        id: None,
        pod: None,
        runtime: None,
        unit: None,
    },
    Case {
        name: "host: a system service, cgroup v2",
        text: "0::/system.slice/nginx.service\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("nginx.service"),
    },
    Case {
        name: "host: a templated service in a sub-slice",
        text: "0::/system.slice/system-getty.slice/getty@tty1.service\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("getty@tty1.service"),
    },
    Case {
        name: "host: a system service, cgroup v1 (name=systemd wins)",
        text: "\
11:devices:/system.slice/sshd.service
10:memory:/system.slice/sshd.service
9:cpuset:/
8:pids:/system.slice/sshd.service
7:cpu,cpuacct:/system.slice/sshd.service
6:blkio:/system.slice/sshd.service
5:freezer:/
4:net_cls,net_prio:/
3:hugetlb:/
2:perf_event:/
1:name=systemd:/system.slice/sshd.service
0::/
",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("sshd.service"),
    },
    Case {
        name: "host: a service's delegated sub-cgroup",
        text: "0::/system.slice/containerd.service/kubepods-besteffort.slice\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("containerd.service"),
    },
    Case {
        name: "host: the user manager itself",
        text: "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("user@1000.service"),
    },
    Case {
        name: "host: a user unit is the user manager's, not a system nginx.service",
        text: "0::/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("user@1000.service"),
    },
    Case {
        name: "host: a service seen from another cgroup namespace",
        text: "0::/../../system.slice/chronyd.service\n",
        id: None,
        pod: None,
        runtime: None,
        unit: Some("chronyd.service"),
    },
    Case {
        name: "a systemd service inside a container is the container",
        text: "0::/system.slice/docker-b3c705634f9c3c4774d1f08c6d0c12fd45bc01bef5795069998d6a17a83b8123.scope/system.slice/nginx.service\n",
        id: Some("b3c705634f9c3c4774d1f08c6d0c12fd45bc01bef5795069998d6a17a83b8123"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "a zombie whose cgroup was removed",
        text: "0::/system.slice/docker-b90e571cd69bc5b90d52c39e122d8fd9405866bccaef33c76763b0c1095407c0.scope (deleted)\n",
        id: Some("b90e571cd69bc5b90d52c39e122d8fd9405866bccaef33c76763b0c1095407c0"),
        pod: None,
        runtime: Some(Runtime::Docker),
        unit: None,
    },
    Case {
        name: "look-alikes are not ids: short, uppercase, 65 chars",
        text: "\
4:memory:/process_api/3435bb37162b39ffd0f40f22998bdb3e
3:pids:/docker/00C17D83D9E2CCE991FE7AB71719554CD3CC103A08675F5BF170342650BCDF60
2:cpu:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf600
1:name=systemd:/user.slice/podnot-a-uid
0::/
",
        id: None,
        pod: None,
        runtime: None,
        unit: None,
    },
];
