//! End-to-end: the real `lanyard agent` binary, the real Rust `spiffe` client,
//! openssl for X.509 chain checks, and `setpriv` for another uid.
#![allow(clippy::unwrap_used, clippy::panic)]

mod commands;
mod credentials;
mod lifecycle;
mod workload_api;

pub(crate) fn entries(uid: u32) -> String {
    format!(
        "[[entries]]\nsubject = \"spiffe://example.org/e2e\"\nselectors = [\"unix:uid:{uid}\"]\nttl = \"1h\"\naudiences = [\"mqtt\"]\n\
         [[entries]]\nsubject = \"spiffe://example.org/nobody\"\nselectors = [\"unix:uid:{uid}\", \"unix:path:/nonexistent\"]\n"
    )
}

pub(crate) fn pem(der: &[u8]) -> String {
    lanyard_agent::pem::encode("CERTIFICATE", der)
}
