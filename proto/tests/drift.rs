//! Generated code must match the `.proto` files: regenerate into a temp dir and
//! compare. Run with `LANYARD_REGEN=1` to rewrite the checked-in files.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

#[test]
fn generated_code_matches_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("lanyard-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let protos: Vec<&str> = lanyard_proto::SOURCES.iter().map(|(p, _)| *p).collect();
    let fds = protox::compile(&protos, [root]).unwrap();
    tonic_prost_build::configure()
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(&out)
        .compile_fds(fds)
        .unwrap();
    let regen = std::env::var_os("LANYARD_REGEN").is_some();
    for (proto, generated) in lanyard_proto::SOURCES {
        let name = Path::new(generated).file_name().unwrap();
        let fresh = std::fs::read_to_string(out.join(name)).unwrap();
        let checked_in = root.join(generated);
        if regen {
            std::fs::write(&checked_in, &fresh).unwrap();
            continue;
        }
        let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
        assert!(
            current == fresh,
            "{generated} is out of date with {proto}; run `LANYARD_REGEN=1 cargo test -p lanyard-proto --test drift`"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn spiffe_paths_have_no_package() {
    let code = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gen/_.rs"))
        .unwrap();
    for rpc in [
        "FetchX509SVID",
        "FetchX509Bundles",
        "FetchJWTSVID",
        "FetchJWTBundles",
        "ValidateJWTSVID",
    ] {
        assert!(
            code.contains(&format!("\"/SpiffeWorkloadAPI/{rpc}\"")),
            "{rpc}"
        );
    }
}
