//! `lanyard token …`: mint, verify, view, prove, check-proof.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use lanyard_token::claims::{Claims, CHAIN_ISSUER_PREFIX, ORG_ISSUER_PREFIX, PURPOSE_WORKLOAD};
use lanyard_token::{
    jws, pop, token_text, Anchor, ChainIssuer, KeyPair, LeafRequest, PublicKey, Verifier,
};
use serde_json::json;

use crate::org::parse_duration;
use crate::{clock, files};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a leaf token with a chain issuer credential.
    Mint(MintArgs),
    /// Verify a token with the org public key; exit 1 if invalid.
    Verify(VerifyArgs),
    /// Show a token's claims without verifying it.
    View(ViewArgs),
    /// Sign a nonce with a seed (proof of possession); prints the signature.
    Prove(ProveArgs),
    /// Check a proof of possession against a token's public key; exit 1 if invalid.
    CheckProof(CheckProofArgs),
    /// Revoke one token (by jti) in a signed deny list.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// The chain issuer token (chain.jwt).
    #[arg(long)]
    pub issuer_jwt: PathBuf,
    /// The chain issuer seed (chain.seed).
    #[arg(long)]
    pub issuer_seed: PathBuf,
    /// SPIFFE ID or urn: name of the workload.
    #[arg(long)]
    pub subject: String,
    /// Token lifetime (90s, 10m, 1h, 30d); refused if beyond the issuer's expiry.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub validity: u64,
    /// Audience (repeatable).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Network membership (repeatable).
    #[arg(long = "network")]
    pub networks: Vec<String>,
    /// The holder's public key, hex; the holder keeps its seed.
    #[arg(long, conflicts_with = "seed_out")]
    pub public_key: Option<String>,
    /// Generate the holder's seed and write it here (default: <out>.seed).
    #[arg(long)]
    pub seed_out: Option<PathBuf>,
    /// Token purpose.
    #[arg(long, default_value = PURPOSE_WORKLOAD)]
    pub purpose: String,
    /// Where to write the token.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The org issuer's public key file.
    #[arg(long)]
    pub org_public: PathBuf,
    /// Apply exactly Choria v0.0.4's rules (for tokens Choria minted).
    #[arg(long)]
    pub choria: bool,
    /// Require this audience.
    #[arg(long)]
    pub audience: Option<String>,
    /// Accept only tokens in this network (repeatable: the access list).
    #[arg(long = "network")]
    pub networks: Vec<String>,
    /// Print the verified claims as JSON.
    #[arg(long)]
    pub json: bool,
    /// Refuse tokens named in this signed deny list.
    #[arg(long)]
    pub deny_list: Option<PathBuf>,
    /// The token file.
    pub token_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The org issuer's seed file (the deny list is signed with it).
    #[arg(long, requires = "deny_list")]
    pub org_seed: Option<PathBuf>,
    /// The token's jti.
    #[arg(long)]
    pub jti: String,
    /// The deny list to create or extend (offline, with --org-seed).
    #[arg(long, requires = "org_seed")]
    pub deny_list: Option<PathBuf>,
    /// Revoke at the upstream issuer instead (it signs and pushes the list).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// The token file.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The holder's seed file.
    #[arg(long)]
    pub seed: PathBuf,
    /// File holding the nonce; its exact bytes are signed.
    #[arg(long)]
    pub nonce_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckProofArgs {
    /// The holder's token.
    #[arg(long)]
    pub token: PathBuf,
    /// File holding the nonce; its exact bytes were signed.
    #[arg(long)]
    pub nonce_file: PathBuf,
    /// The signature, unpadded base64url. It may start with '-' (one signature
    /// in 64 does), which must not be read as an option.
    #[arg(long, allow_hyphen_values = true)]
    pub signature: String,
    /// Also verify the token itself against this org public key.
    #[arg(long)]
    pub org_public: Option<PathBuf>,
}

pub fn run(cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Mint(a) => mint(&a).map(|_| ExitCode::SUCCESS),
        TokenCommand::Verify(a) => verify(&a),
        TokenCommand::View(a) => view(&a).map(|()| ExitCode::SUCCESS),
        TokenCommand::Prove(a) => prove(&a).map(|()| ExitCode::SUCCESS),
        TokenCommand::CheckProof(a) => check_proof(&a),
        TokenCommand::Revoke(a) => {
            lanyard_token::Ksuid::parse(&a.jti).context("--jti must be a token's jti (a KSUID)")?;
            crate::admin::need_one(a.org_seed.is_some(), a.admin_socket.is_some())?;
            if let Some(socket) = &a.admin_socket {
                return crate::admin::revoke(
                    socket,
                    lanyard_proto::issuer::revoke_request::What::Jti(a.jti.clone()),
                )
                .map(|()| ExitCode::SUCCESS);
            }
            let (Some(seed), Some(list)) = (&a.org_seed, &a.deny_list) else {
                anyhow::bail!("--org-seed needs --deny-list");
            };
            crate::org::extend_deny_list(seed, list, |d| {
                d.jtis.insert(a.jti.clone());
            })
            .map(|()| ExitCode::SUCCESS)
        }
    }
}

/// Mints and writes the token; returns the holder seed's path if one was made.
pub fn mint(a: &MintArgs) -> Result<Option<PathBuf>> {
    let issuer = ChainIssuer::new(
        &files::read_text(&a.issuer_jwt)?,
        files::read_seed(&a.issuer_seed)?,
    )
    .with_context(|| format!("cannot use {} as a chain issuer", a.issuer_jwt.display()))?;
    let (holder, new_seed) = match &a.public_key {
        Some(hex) => (
            PublicKey::from_hex(hex.trim(), false).context("--public-key")?,
            None,
        ),
        None => {
            let seed = a
                .seed_out
                .clone()
                .unwrap_or_else(|| with_suffix(&a.out, ".seed"));
            let key = KeyPair::generate()?;
            (key.public(), Some((seed, key)))
        }
    };
    let mut req = LeafRequest::workload(a.subject.clone(), holder, a.validity);
    req.purpose = a.purpose.clone();
    req.audiences = a.audiences.clone();
    req.networks = a.networks.clone();
    let token = issuer.mint(&req, clock::now()?).context("cannot mint")?;
    // Seed first: a token whose seed failed to write would be useless.
    if let Some((path, key)) = &new_seed {
        files::write(path, key.seed_text().as_bytes(), files::Kind::Secret)?;
    }
    files::write(&a.out, token.as_bytes(), files::Kind::Public)?;
    println!("minted {} for {}", a.out.display(), a.subject);
    if let Some((path, _)) = &new_seed {
        println!("holder seed {} (0600)", path.display());
    }
    Ok(new_seed.map(|(p, _)| p))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn invalid(why: impl std::fmt::Display) -> ExitCode {
    eprintln!("invalid: {why}");
    ExitCode::from(1)
}

pub fn verify(a: &VerifyArgs) -> Result<ExitCode> {
    let org = files::read_public(&a.org_public)?;
    let text = files::read_text(&a.token_file)?;
    let mut v = if a.choria {
        Verifier::choria(org)
    } else {
        Verifier::new(org)
    };
    if let Some(aud) = &a.audience {
        v = v.with_audience(aud.clone());
    }
    v = v.with_networks(a.networks.clone());
    if let Some(path) = &a.deny_list {
        let list = lanyard_token::deny::parse(&files::read_text(path)?, &org, clock::now()?)
            .with_context(|| format!("deny list {}", path.display()))?;
        v = v.with_deny_list(list);
    }
    let ok = match v.verify(token_text(&text), clock::now()?) {
        Ok(ok) => ok,
        Err(e) => return Ok(invalid(e)),
    };
    let anchor = match ok.anchor() {
        Anchor::Org => json!({"kind": "org"}),
        Anchor::Chain { jti, public_key } => {
            json!({"kind": "chain", "jti": jti, "public_key": public_key.to_hex()})
        }
        _ => json!({"kind": "unknown"}),
    };
    if a.json {
        let out = json!({"valid": true, "rules": if a.choria {"choria"} else {"lanyard"},
            "expires_at": ok.expires_at(), "anchor": anchor, "claims": ok.claims()});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let c = ok.claims();
        println!(
            "valid: {} (purpose {}), expires {}",
            c.display_subject().unwrap_or("-"),
            c.purpose,
            ok.expires_at()
                .map_or_else(|| "never".to_owned(), clock::rfc3339)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn unverified_claims(text: &str) -> Result<(serde_json::Value, Claims)> {
    let parts = jws::parse(token_text(text)).context("not a lanyard/Choria token")?;
    let header = parts
        .signing_input
        .split('.')
        .next()
        .and_then(jws::b64url_decode)
        .unwrap_or_default();
    let header: serde_json::Value = serde_json::from_slice(&header).context("header")?;
    let claims: Claims = serde_json::from_slice(&parts.payload).context("claims")?;
    Ok((header, claims))
}

pub fn view(a: &ViewArgs) -> Result<()> {
    let (header, c) = unverified_claims(&files::read_text(&a.file)?)?;
    let now = clock::now()?;
    let expiry = c.effective_expiry();
    let expired = expiry.is_some_and(|e| now >= e);
    if a.json {
        let out = json!({"verified": false, "header": header, "claims": c,
            "effective_expiry": expiry, "expired": expired, "trust_chain": trust_chain(&c)});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let row = |k: &str, v: &str| {
        let sep = if k.is_empty() { "  " } else { ": " };
        println!("{k:>18}{sep}{v}");
    };
    println!(
        "token {} (not verified: use `lanyard token verify`)",
        a.file.display()
    );
    row("subject", c.display_subject().unwrap_or("-"));
    row("purpose", &c.purpose);
    row("public key", c.public_key.as_deref().unwrap_or("-"));
    let exp = match expiry {
        None => "never".to_owned(),
        Some(e) if expired => {
            let mark = if std::io::stdout().is_terminal() {
                "\x1b[31mEXPIRED\x1b[0m"
            } else {
                "EXPIRED"
            };
            format!("{} {mark}", clock::rfc3339(e))
        }
        Some(e) => clock::rfc3339(e),
    };
    row("expires", &exp);
    if let Some(iat) = c.iat {
        row("issued", &clock::rfc3339(iat));
    }
    row("id", c.jti.as_deref().unwrap_or("-"));
    if !c.aud.is_empty() {
        row("audiences", &c.aud.join(", "));
    }
    if !c.networks.is_empty() {
        row("networks", &c.networks.join(", "));
    }
    for (k, v) in &c.attrs {
        row(&format!("attr {k}"), &v.to_string());
    }
    for (i, link) in trust_chain(&c).iter().enumerate() {
        row(if i == 0 { "trust chain" } else { "" }, link);
    }
    if let Some(g) = &c.lanyard_chain {
        let k = &g.constraints;
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "any".to_owned()
            } else {
                v.join(", ")
            }
        };
        row("chain expiry", &clock::rfc3339(g.exp));
        row(
            "chain may sign",
            &format!(
                "subjects {}; purposes {}; networks {}",
                list(&k.subject_prefixes),
                list(&k.purposes),
                list(&k.networks)
            ),
        );
    }
    Ok(())
}

fn trust_chain(c: &Claims) -> Vec<String> {
    let iss = c.iss.as_deref().unwrap_or_default();
    if let Some(org) = iss.strip_prefix(ORG_ISSUER_PREFIX) {
        vec![format!("org {org}"), "└─ this chain issuer".to_owned()]
    } else if let Some(chain) = iss.strip_prefix(CHAIN_ISSUER_PREFIX) {
        let (jti, public) = chain.split_once('.').unwrap_or((chain, "?"));
        vec![
            "org (signature in tcs; the org key is not named in a leaf)".to_owned(),
            format!("└─ chain issuer {jti} key {public}"),
            "   └─ this token".to_owned(),
        ]
    } else {
        vec![format!("signed directly by the issuer key (iss {iss:?})")]
    }
}

fn read_nonce(path: &Path) -> Result<Vec<u8>> {
    let nonce = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if nonce.is_empty() || nonce.len() > pop::MAX_NONCE_LEN || !nonce.is_ascii() {
        bail!(
            "{}: a nonce is 1..={} ASCII bytes",
            path.display(),
            pop::MAX_NONCE_LEN
        );
    }
    Ok(nonce)
}

pub fn prove(a: &ProveArgs) -> Result<()> {
    let sig = pop::prove(&files::read_seed(&a.seed)?, &read_nonce(&a.nonce_file)?)?;
    println!("{sig}");
    Ok(())
}

pub fn check_proof(a: &CheckProofArgs) -> Result<ExitCode> {
    let text = files::read_text(&a.token)?;
    let nonce = read_nonce(&a.nonce_file)?;
    let holder = if let Some(org) = &a.org_public {
        match Verifier::new(files::read_public(org)?).verify(token_text(&text), clock::now()?) {
            Ok(t) => t.holder(),
            Err(e) => return Ok(invalid(format!("token: {e}"))),
        }
    } else {
        let (_, c) = match unverified_claims(&text) {
            Ok(x) => x,
            Err(e) => return Ok(invalid(format!("{e:#}"))),
        };
        match c
            .public_key
            .as_deref()
            .map(|k| PublicKey::from_hex(k, false))
        {
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => return Ok(invalid(format!("token public_key: {e}"))),
            None => None,
        }
    };
    let Some(holder) = holder else {
        return Ok(invalid("token has no public_key"));
    };
    match pop::check(&holder, &nonce, &a.signature) {
        Ok(()) => {
            let note = if a.org_public.is_some() {
                ""
            } else {
                " (token itself not verified; pass --org-public)"
            };
            println!("proof valid: signed by the holder of {}{note}", holder);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(invalid(e)),
    }
}
