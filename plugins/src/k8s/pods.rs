//! Finding a process's container in the kubelet's pod list, and its image. Pure
//! lookups over parsed pods, kept apart from fetching and from selector policy.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The pod with uid `pod_uid` and its container whose runtime id is `id`, among
/// regular, init and ephemeral containers.
pub(super) fn find<'a>(
    pods: &'a [Pod],
    pod_uid: &str,
    id: &str,
) -> Option<(&'a Pod, &'a ContainerStatus)> {
    let pod = pods
        .iter()
        .find(|p| p.metadata.uid.as_deref() == Some(pod_uid))?;
    let status = pod.status.as_ref()?;
    let all = [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ];
    let found = all.into_iter().flatten().flatten().find(|c| {
        // `containerd://<id>`, `cri-o://<id>`, `docker://<id>`: the id is what
        // the kernel's cgroup path carries.
        c.container_id
            .as_deref()
            .and_then(|cid| cid.split_once("://"))
            .is_some_and(|(_, cid)| cid == id)
    })?;
    Some((pod, found))
}

/// The image the status reports, or the spec's when the status has none yet.
pub(super) fn container_image<'a>(pod: &'a Pod, status: &'a ContainerStatus) -> Option<&'a str> {
    if !status.image.is_empty() {
        return Some(&status.image);
    }
    let spec = pod.spec.as_ref()?;
    let name = status.name.as_str();
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.image.as_deref())
        .or_else(|| {
            spec.init_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .and_then(|c| c.image.as_deref())
        })
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .and_then(|c| c.image.as_deref())
        })
}
