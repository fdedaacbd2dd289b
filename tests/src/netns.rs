//! A network namespace joined to this one by a veth pair, for cutting the
//! network between processes: `10.201.N.1/30` on this side, `10.201.N.2/30`
//! inside. Both addresses exist only on this machine. Processes run inside
//! with `ip netns exec`. Dropping it deletes the namespace and the pair.
//! Needs root and iproute2 (`scripts/test-all.sh` installs it).

use std::process::Command;

/// A namespace and its veth pair.
#[derive(Debug)]
pub struct NetNs {
    /// The namespace's name.
    pub name: String,
    /// The veth end on this (the root) side.
    pub host_if: String,
    /// This side's address, e.g. `10.201.0.1`.
    pub host_addr: String,
    /// The address inside the namespace, e.g. `10.201.0.2`.
    pub ns_addr: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates the namespace and the pair on subnet `10.201.<subnet>.0/30`.
    pub fn new(subnet: u8) -> Self {
        let id = std::process::id() % 100_000;
        let name = format!("lanyard-{id}-{subnet}");
        let host_if = format!("lyh{id}x{subnet}");
        let ns_if = format!("lyn{id}x{subnet}");
        let me = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_addr: format!("10.201.{subnet}.1"),
            ns_addr: format!("10.201.{subnet}.2"),
        };
        me.remove();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", me.host_addr),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["-n", name.as_str()];
            a.extend_from_slice(args);
            ip(&a);
        };
        inside(&["addr", "add", &format!("{}/30", me.ns_addr), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        me
    }

    /// `ip netns exec NAME program`: add the program's arguments.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Cuts the link: this side of the pair goes down (both ends lose carrier).
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Restores the link.
    pub fn restore(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.remove();
    }
}
