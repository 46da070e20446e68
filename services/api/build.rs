//! The vendored Scalar bundle behind `/api/docs` (`assets/scalar/`, see its `update.sh`):
//! checked against its pinned SHA-512 so a changed or truncated file fails the build rather
//! than ship, and gzipped once here so the api serves it compressed without per-request CPU.
//! Also utoipa's global config: the typed ids (`domain::ids`) are documented as `Uuid`.

use std::io::Write;
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha512};

const BUNDLE: &str = "assets/scalar/standalone.js";
const PINNED_DIGEST: &str = "assets/scalar/standalone.js.sha512";
const VERSION: &str = "assets/scalar/VERSION";

/// The id newtypes' names (`shared/domain/src/id_type_names.rs`, which the domain crate
/// includes too).
const ID_TYPE_NAMES: &[&str] = &include!("../../shared/domain/src/id_type_names.rs");

fn main() -> Result<(), String> {
    utoipa_aliases();
    for input in [BUNDLE, PINNED_DIGEST, VERSION] {
        println!("cargo::rerun-if-changed={input}");
    }
    let bundle = std::fs::read(BUNDLE).map_err(|error| format!("cannot read {BUNDLE}: {error}"))?;
    let pinned = std::fs::read_to_string(PINNED_DIGEST)
        .map_err(|error| format!("cannot read {PINNED_DIGEST}: {error}"))?;
    // `sha512sum` output: `<hex>  standalone.js`.
    let pinned = pinned.split_whitespace().next().unwrap_or_default();
    let actual: String = Sha512::digest(&bundle)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    if actual != pinned {
        return Err(format!(
            "{BUNDLE} does not match {PINNED_DIGEST} (sha512 {actual}, pinned {pinned}): \
             re-vendor it with assets/scalar/update.sh"
        ));
    }
    let version = std::fs::read_to_string(VERSION)
        .map_err(|error| format!("cannot read {VERSION}: {error}"))?;
    let version = version.trim();
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(format!(
            "{VERSION} must hold a version like 1.76.4, not {version:?}"
        ));
    }
    println!("cargo::rustc-env=SCALAR_VERSION={version}");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let mut encoder = GzEncoder::new(Vec::with_capacity(bundle.len() / 3), Compression::best());
    encoder
        .write_all(&bundle)
        .and_then(|()| encoder.finish())
        .and_then(|gzipped| std::fs::write(out_dir.join("scalar-standalone.js.gz"), gzipped))
        .map_err(|error| format!("cannot gzip {BUNDLE}: {error}"))
}

/// utoipa's derives look a field's type up by its last path segment: each id newtype is an
/// alias of `uuid::Uuid`, `EpochMillis` one of `i64` and `DateInput` one of `String` (its
/// fields say `format = Date`), so OpenAPI inlines
/// `{type: string, format: uuid}` and `{type: integer, format: int64}` as it did for the
/// plain uuids and timestamps (the published document does not change).
fn utoipa_aliases() {
    println!("cargo::rerun-if-changed=../../shared/domain/src/id_type_names.rs");
    ID_TYPE_NAMES
        .iter()
        .fold(utoipa_config::Config::new(), |config, name| {
            config.alias_for(name, "uuid::Uuid")
        })
        .alias_for("EpochMillis", "i64")
        .alias_for("DateInput", "String")
        .write_to_file();
}
