//! Fixtures for tests and benchmarks (feature `testing`): a complete standalone
//! deployment written with the library, no CLI needed.

use std::path::Path;

use lanyard_token::{delegate, DelegateRequest, KeyPair};

use crate::config::{Config, ConfigError};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The effective uid of this process.
pub fn my_uid() -> u32 {
    crate::peer::current_uid()
}

/// Writes an org, a chain issuer (1 day) and its certificates into `dir`, plus
/// `agent.toml` with `entries_toml` appended; returns the parsed config.
pub fn standalone(dir: &Path, entries_toml: &str) -> Result<Config, Box<dyn std::error::Error>> {
    delegated(dir, entries_toml, &[])
}

/// [`standalone`] with a chain that has `roles` (`["issuer"]` for files an
/// issuer can run from).
pub fn delegated(
    dir: &Path,
    entries_toml: &str,
    roles: &[&str],
) -> Result<Config, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let org = KeyPair::generate()?;
    let chain = KeyPair::generate()?;
    let req = DelegateRequest {
        name: "fixture".into(),
        validity_secs: 86_400,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    };
    let jwt = delegate(&org, &chain.public(), &req, now())?;
    let (org_crt, chain_crt) =
        crate::svid::delegate_certs(&org, &chain.public(), &[], now(), now() + 86_400)?;
    std::fs::write(dir.join("org.public"), org.public().to_hex())?;
    std::fs::write(dir.join("chain.jwt"), jwt)?;
    // Private, as `lanyard org delegate` writes it: the agent warns about a
    // seed others can read, and that warning was noise in every bench run.
    crate::fsutil::write_atomic(
        &dir.join("chain.seed"),
        chain.seed_text().as_bytes(),
        0o600,
        crate::fsutil::Replace::Yes,
    )?;
    std::fs::write(dir.join("chain.crt"), chain_crt)?;
    std::fs::write(dir.join("org.crt"), org_crt)?;
    let text = format!(
        "trust_domain = \"example.org\"\nsocket_path = \"agent.sock\"\ndata_dir = \"data\"\nhealth_addr = \"off\"\n\
         [authority]\nchain_jwt = \"chain.jwt\"\nchain_seed = \"chain.seed\"\norg_public = \"org.public\"\n{entries_toml}"
    );
    std::fs::write(dir.join("agent.toml"), &text)?;
    Config::parse(&text, dir, |_| None).map_err(|e: ConfigError| e.into())
}
