//! Finds the email languages: every `i18n/<tag>.json` is embedded, so adding a language is adding one
//! file (the core's tests check that each file has every message and placeholder).
//!
//! Each file becomes Rust code that builds its `email::i18n::Messages` (`messages_of`), rather than
//! JSON parsed at run time: serde's visitors for the three message types were ~35 KB of the plugin
//! component, which must stay under 400 KiB (BENCHMARKS.md, "Component size"). A key the structs
//! lack, or a struct field a file lacks, fails the build.
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
        "/// Every embedded language: (tag, JSON messages), for the tests that check them.\n#[cfg(test)]\npub(crate) const LANGUAGES: &[(&str, &str)] = &[\n",
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
    let _ = writeln!(
        out,
        "/// Every embedded language's tag, sorted.\npub(crate) const TAGS: &[&str] = &{:?};",
        tags.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>()
    );
    out.push_str(
        "/// The messages of `tag` (English for any other).\n#[allow(clippy::too_many_lines, reason = \"generated\")]\npub(crate) fn messages_of(tag: &str) -> Messages {\n    match tag {\n",
    );
    let mut english = None;
    for (tag, path) in &tags {
        let text = std::fs::read_to_string(path).expect("read a language file");
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let built = literal("Messages", &json, tag);
        if tag == "en" {
            english = Some(built);
        } else {
            let _ = writeln!(out, "        {tag:?} => {built},");
        }
    }
    let english = english.expect("i18n/en.json exists");
    let _ = writeln!(out, "        _ => {english},\n    }}\n}}");
    let dest =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("languages.rs");
    std::fs::write(dest, out).expect("write languages.rs");
}

/// A struct literal of `name` from a JSON object: string values as `String`s, object values as the
/// nested message struct their key names.
fn literal(name: &str, value: &serde_json::Value, tag: &str) -> String {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{tag}: {name} is not an object"));
    let mut out = format!("{name} {{ ");
    for (key, value) in object {
        let field = match value {
            serde_json::Value::String(text) => format!("{text:?}.to_owned()"),
            serde_json::Value::Object(_) => {
                let nested = match key.as_str() {
                    "explain" => "Explain",
                    "page" => "PageText",
                    other => panic!("{tag}: no message struct for {other:?}"),
                };
                literal(nested, value, tag)
            }
            _ => panic!("{tag}: {key} is neither text nor a group of messages"),
        };
        let _ = write!(out, "{key}: {field}, ");
    }
    out.push('}');
    out
}
