//! Finds the email languages: every `i18n/<tag>.json` is embedded, so adding a language is adding one
//! file (the core's tests check that each file has every message and placeholder).
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a build script reports failure by panicking"
)]

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("i18n");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut tags: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("core/i18n exists")
        .map(|e| e.expect("read core/i18n").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_stem()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned(),
                p,
            )
        })
        .collect();
    tags.sort();
    let mut out = String::from(
        "/// Every embedded language: (tag, JSON messages).\npub(crate) const LANGUAGES: &[(&str, &str)] = &[\n",
    );
    for (tag, path) in &tags {
        assert!(
            tag.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "language file names are lower-case tags: {tag}"
        );
        let _ = writeln!(
            out,
            "    ({tag:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("languages.rs");
    std::fs::write(dest, out).expect("write languages.rs");
}
