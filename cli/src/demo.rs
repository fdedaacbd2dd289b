//! `lanyard demo`: the whole chain in a temporary directory, printing each step
//! as the command an operator would type, and each file it wrote.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};

use crate::org::{self, DelegateArgs, InitArgs};
use crate::tokens::{self, MintArgs, VerifyArgs, ViewArgs};

fn step(n: u32, what: &str, cmd: &str) {
    println!("\n== step {n}: {what}\n$ {cmd}");
}

fn show(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    let text = std::fs::read_to_string(path)?;
    // Seeds are secrets: show that they exist and their shape, never the value.
    let shown = if path.extension().is_some_and(|e| e == "seed") {
        format!("<secret: {} hex characters>", text.len())
    } else {
        text
    };
    println!("  {} (mode {mode:o}): {shown}", path.display());
    Ok(())
}

pub fn run(dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let d = std::env::temp_dir().join(format!(
                "lanyard-demo-{}-{}",
                std::process::id(),
                crate::clock::now()?
            ));
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
    };
    println!("lanyard demo in {}", dir.display());
    let (org_dir, chain_dir, wl) = (dir.join("org"), dir.join("chain"), dir.join("web.jwt"));

    step(
        1,
        "create the org issuer (kept offline)",
        &format!("lanyard org init --out {}", org_dir.display()),
    );
    org::init(&InitArgs {
        out: org_dir.clone(),
    })?;
    show(&org_dir.join("org.seed"))?;
    show(&org_dir.join("org.public"))?;

    step(2, "delegate a chain issuer, limited to spiffe://example.org/ns/prod and network prod",
        &format!("lanyard org delegate --org-seed {} --out {} --validity 30d --name demo-issuer --subject-prefix spiffe://example.org/ns/prod --network prod",
            org_dir.join("org.seed").display(), chain_dir.display()));
    org::delegate_cmd(&DelegateArgs {
        org_seed: org_dir.join("org.seed"),
        out: chain_dir.clone(),
        validity: 30 * 86_400,
        name: "demo-issuer".into(),
        subject_prefixes: vec!["spiffe://example.org/ns/prod".into()],
        networks: vec!["prod".into()],
        purposes: vec![],
        roles: vec![],
        no_x509_name_constraints: false,
    })?;
    for f in ["chain.seed", "chain.public", "chain.jwt"] {
        show(&chain_dir.join(f))?;
    }

    step(3, "mint a workload token; the holder's seed is written next to it",
        &format!("lanyard token mint --issuer-jwt {0}/chain.jwt --issuer-seed {0}/chain.seed --subject spiffe://example.org/ns/prod/web --audience billing --network prod --validity 1h --out {1}",
            chain_dir.display(), wl.display()));
    let seed = tokens::mint(&MintArgs {
        issuer_jwt: chain_dir.join("chain.jwt"),
        issuer_seed: chain_dir.join("chain.seed"),
        subject: "spiffe://example.org/ns/prod/web".into(),
        validity: 3600,
        audiences: vec!["billing".into()],
        networks: vec!["prod".into()],
        public_key: None,
        seed_out: None,
        purpose: lanyard_token::claims::PURPOSE_WORKLOAD.into(),
        out: wl.clone(),
    })?
    .context("mint made no seed")?;
    show(&wl)?;
    show(&seed)?;

    step(
        4,
        "view it",
        &format!("lanyard token view {}", wl.display()),
    );
    tokens::view(&ViewArgs {
        json: false,
        file: wl.clone(),
    })?;

    step(
        5,
        "verify it with nothing but the org public key",
        &format!(
            "lanyard token verify --org-public {} --audience billing --network prod {}",
            org_dir.join("org.public").display(),
            wl.display()
        ),
    );
    let verify = |choria: bool, networks: Vec<String>| {
        tokens::verify(&VerifyArgs {
            org_public: org_dir.join("org.public"),
            choria,
            audience: Some("billing".into()),
            networks,
            json: false,
            deny_list: None,
            token_file: wl.clone(),
        })
    };
    if verify(false, vec!["prod".into()])? != ExitCode::SUCCESS {
        bail!("the demo token did not verify");
    }

    step(
        6,
        "a Choria verifier accepts it too",
        &format!(
            "lanyard token verify --choria --org-public {} {}",
            org_dir.join("org.public").display(),
            wl.display()
        ),
    );
    if verify(true, vec![])? != ExitCode::SUCCESS {
        bail!("the demo token did not verify under Choria rules");
    }

    step(
        7,
        "a verifier on another network refuses it (expected: invalid)",
        &format!(
            "lanyard token verify --org-public {} --network dev {}",
            org_dir.join("org.public").display(),
            wl.display()
        ),
    );
    if verify(false, vec!["dev".into()])? == ExitCode::SUCCESS {
        bail!("a verifier for network dev accepted a prod token");
    }
    println!("\ndemo complete: files are in {}", dir.display());
    Ok(())
}
