//! The committed contract package (`clients/contract`) is what `cargo xtask contract` makes of
//! the api's Rust types today (`UPDATE_SNAPSHOTS=1` rewrites it), and it compiles: `tsc` over
//! the package, and over `tests/orpc-client`, whose `contract-types.test.ts` proves with
//! `@ts-expect-error` that a wrong field name, type or enum value fails the build.
//!
//! Needs `npm ci --prefix tests/orpc-client` (its postinstall links
//! `clients/contract/node_modules` to those packages).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use test_support::orpc_client::OrpcClientScripts;

fn package() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/contract")
}

#[test]
fn the_committed_contract_is_generated_from_the_rust_types() {
    let generated = xtask::contract::generate().unwrap();
    let update = std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1");
    let mut drifted = Vec::new();
    for (path, text) in &generated {
        let committed_path = package().join(path);
        if update {
            std::fs::create_dir_all(committed_path.parent().unwrap()).unwrap();
            std::fs::write(&committed_path, text).unwrap();
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        if &committed != text {
            drifted.push(path.clone());
        }
    }
    assert!(
        drifted.is_empty(),
        "clients/contract/{drifted:?} differ from what `cargo xtask contract` generates; review \
         the change and run `cargo xtask contract` (or this test with UPDATE_SNAPSHOTS=1)"
    );
    // Every procedure the api mounts is in the contract.
    let contract = generated
        .iter()
        .find(|(path, _)| path == "src/contract.ts")
        .map(|(_, text)| text.clone())
        .unwrap();
    for procedure in api::rpc_procedures() {
        let method = procedure.name.rsplit('.').next().unwrap();
        assert!(
            contract.contains(&format!("{method}: oc.route(")),
            "{} is missing from the contract",
            procedure.name
        );
    }
}

#[tokio::test]
async fn the_package_and_its_type_tests_compile() {
    let scripts = OrpcClientScripts::locate();
    assert!(
        package().join("node_modules/zod").exists(),
        "clients/contract/node_modules is not linked: run `npm ci --prefix tests/orpc-client`"
    );
    let tsconfig = package().join("tsconfig.json");
    let built = scripts
        .run(
            "tsc",
            &[
                "-p",
                tsconfig.to_str().unwrap(),
                "--noEmit",
                "--pretty",
                "false",
            ],
            &[],
        )
        .await;
    assert!(!built.contains("error TS"), "{built}");
    // `contract-types.test.ts`: its `@ts-expect-error` lines must each be an error.
    let typecheck = scripts.type_check().await;
    assert!(!typecheck.contains("error TS"), "{typecheck}");
}
