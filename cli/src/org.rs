//! `lanyard org init` and `lanyard org delegate`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use lanyard_token::claims::Constraints;
use lanyard_token::deny::Denied;
use lanyard_token::duration;
use lanyard_token::{delegate, DelegateRequest, KeyPair};

use crate::{clock, files};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create the org issuer key: DIR/org.seed (0600) and DIR/org.public.
    Init(InitArgs),
    /// Revoke a chain issuer (and every leaf it minted) in a signed deny list.
    RevokeChain(RevokeChainArgs),
    /// Delegate a chain issuer: DIR/chain.seed, DIR/chain.public, DIR/chain.jwt,
    /// plus DIR/chain.crt, DIR/org.crt (its X.509 CA and the org root) and
    /// DIR/org.public.
    Delegate(DelegateArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write the key pair to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DelegateArgs {
    /// The org issuer's seed file.
    #[arg(long)]
    pub org_seed: PathBuf,
    /// Directory to write the chain issuer to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// How long the chain issuer may sign (90s, 10m, 1h, 30d).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub validity: u64,
    /// A name for the chain issuer (Choria's callerid).
    #[arg(long, default_value = "lanyard_chain_issuer")]
    pub name: String,
    /// Only subjects equal to or below this prefix may be signed (repeatable).
    #[arg(long = "subject-prefix")]
    pub subject_prefixes: Vec<String>,
    /// Only these networks may be granted (repeatable).
    #[arg(long = "network")]
    pub networks: Vec<String>,
    /// Only these purposes may be signed (repeatable), e.g. lanyard_workload.
    #[arg(long = "purpose")]
    pub purposes: Vec<String>,
    /// What the chain may act as (repeatable). `issuer`: serve the Node API,
    /// sign agent credentials and deny lists. Without it the chain signs
    /// workload credentials only (a standalone host).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Leave the X.509 name constraints out of chain.crt. rustls (webpki
    /// 0.103.12 and later) refuses every certificate below a URI name
    /// constraint, so a fleet whose workloads verify SVIDs with rustls needs
    /// this; lanyard's signers still hold the chain to its prefixes.
    #[arg(long)]
    pub no_x509_name_constraints: bool,
}

#[derive(Debug, Args)]
pub struct RevokeChainArgs {
    /// The org issuer's seed file (the deny list is signed with it).
    #[arg(long, requires = "deny_list")]
    pub org_seed: Option<PathBuf>,
    /// The chain issuer's id: the `jti` of its chain.jwt.
    #[arg(long)]
    pub id: String,
    /// The deny list to create or extend (offline, with --org-seed).
    #[arg(long, requires = "org_seed")]
    pub deny_list: Option<PathBuf>,
    /// Revoke at the upstream issuer instead (it signs and pushes the list).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
}

/// Adds to the deny list at `path` (created if missing) and re-signs it with a
/// higher serial. An existing list must verify with the same org key.
pub fn extend_deny_list(
    org_seed: &std::path::Path,
    path: &std::path::Path,
    add: impl FnOnce(&mut Denied),
) -> Result<()> {
    let org = files::read_seed(org_seed)?;
    let (mut denied, serial) = if path.exists() {
        let held =
            lanyard_token::deny::parse(&files::read_text(path)?, &org.public(), clock::now()?)
                .with_context(|| format!("{} is not a deny list of this org", path.display()))?;
        (held.denied().clone(), held.serial())
    } else {
        (Denied::default(), 0)
    };
    add(&mut denied);
    let text = lanyard_token::deny::sign(&org, &denied, serial + 1, clock::now()?)?;
    files::write(path, text.as_bytes(), files::Kind::Public)?;
    println!(
        "deny list {} serial {}: {} chain issuer(s), {} token(s)",
        path.display(),
        serial + 1,
        denied.chains.len(),
        denied.jtis.len()
    );
    Ok(())
}

pub fn parse_duration(s: &str) -> Result<u64, String> {
    duration::parse_secs(s).map_err(|e| e.to_string())
}

pub fn run(cmd: OrgCommand) -> Result<()> {
    match cmd {
        OrgCommand::Init(a) => init(&a),
        OrgCommand::Delegate(a) => delegate_cmd(&a),
        OrgCommand::RevokeChain(a) => {
            lanyard_token::Ksuid::parse(&a.id)
                .context("--id must be a chain issuer's jti (a KSUID)")?;
            crate::admin::need_one(a.org_seed.is_some(), a.admin_socket.is_some())?;
            if let Some(socket) = &a.admin_socket {
                return crate::admin::revoke(
                    socket,
                    lanyard_proto::issuer::revoke_request::What::ChainId(a.id.clone()),
                );
            }
            let (Some(seed), Some(list)) = (&a.org_seed, &a.deny_list) else {
                anyhow::bail!("--org-seed needs --deny-list");
            };
            extend_deny_list(seed, list, |d| {
                d.chains.insert(a.id.clone());
            })
        }
    }
}

pub fn init(a: &InitArgs) -> Result<()> {
    let key = KeyPair::generate()?;
    let (seed, public) = files::write_key_pair(&a.out, "org", &key)?;
    println!("org public key {}", key.public());
    println!(
        "wrote {} (keep it offline) and {}",
        seed.display(),
        public.display()
    );
    Ok(())
}

/// The prefixes `chain.crt` is name-constrained to: none for an issuer chain,
/// whose TLS leaf agents verify with rustls (which refuses any chain with a
/// URI name constraint), nor when the operator opts out.
fn x509_constrained_prefixes(a: &DelegateArgs) -> Vec<String> {
    let issuer = a
        .roles
        .iter()
        .any(|r| r == lanyard_token::claims::ROLE_ISSUER);
    if issuer || a.no_x509_name_constraints {
        Vec::new()
    } else {
        a.subject_prefixes.clone()
    }
}

pub fn delegate_cmd(a: &DelegateArgs) -> Result<()> {
    let org = files::read_seed(&a.org_seed)?;
    let chain = KeyPair::generate()?;
    let req = DelegateRequest {
        name: a.name.clone(),
        validity_secs: a.validity,
        constraints: Constraints {
            subject_prefixes: a.subject_prefixes.clone(),
            purposes: a.purposes.clone(),
            networks: a.networks.clone(),
        },
        roles: a.roles.clone(),
    };
    // Sign before writing anything, so a refused request leaves no stray seed.
    let now = clock::now()?;
    let token = delegate(&org, &chain.public(), &req, now).context("cannot delegate")?;
    // X.509 anchored on the same org key: its root, and a CA certificate for the chain key.
    let (org_crt, chain_crt) = lanyard_agent::svid::delegate_certs(
        &org,
        &chain.public(),
        &x509_constrained_prefixes(a),
        now,
        now + a.validity,
    )
    .context("cannot make the chain issuer's certificates")?;
    let (seed, public) = files::write_key_pair(&a.out, "chain", &chain)?;
    let jwt = a.out.join("chain.jwt");
    files::write(&jwt, token.as_bytes(), files::Kind::Public)?;
    files::write(
        &a.out.join("chain.crt"),
        chain_crt.as_bytes(),
        files::Kind::Public,
    )?;
    files::write(
        &a.out.join("org.crt"),
        org_crt.as_bytes(),
        files::Kind::Public,
    )?;
    // The org public key too, so that an issuer's or agent's config can name
    // every anchor file beside the chain files (`org_public = "org.public"`).
    files::write(
        &a.out.join("org.public"),
        org.public().to_hex().as_bytes(),
        files::Kind::Public,
    )?;
    println!(
        "chain issuer {} valid for {}",
        chain.public(),
        duration::format_secs(a.validity)
    );
    println!(
        "wrote {}, {}, {}, chain.crt (its X.509 CA), org.crt (the org root) and org.public",
        seed.display(),
        public.display(),
        jwt.display()
    );
    Ok(())
}
