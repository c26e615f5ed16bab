//! The core's layers, checked. `core/README.md` declares them once, in its layer table; this test
//! reads that table, then every file under `core/src`, and fails if any reference leaves its
//! top-level module for one that is not in a lower layer: an arrow up, an arrow sideways within a
//! layer, or a name taken through the crate root's re-exports (which would hide the arrow). Each
//! failure names the file, the line and the arrow.
//!
//! What counts as a reference: `crate::<module>`, every module named in `use crate::{…}` (nested
//! groups too), and a `super::` chain long enough to reach the crate root. Comments, strings and
//! character literals are blanked out first, so a path in a doc comment or a message is not an
//! arrow. The checker itself is tested on a small made-up crate with arrows that must be refused.
//! The map in `lib.rs`'s crate doc is checked against the same table, so neither doc can drift.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, bottom first: each the top-level modules it holds.
type Layers = Vec<Vec<String>>;

/// Reads the layer table of the README: rows `| <number> | `a`, `b` | … |`, numbered 0 (bottom)
/// upwards with no gaps.
fn layers_from_readme(readme: &str) -> Layers {
    let mut rows: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| 3 | `devices` | … |` splits into ["", "3", "`devices`", "…", ""].
        let (Some(number), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else {
            continue;
        };
        let names: Vec<String> = modules
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(!names.is_empty(), "layer {number} names no module: {line}");
        assert!(
            rows.insert(number, names).is_none(),
            "layer {number} is declared twice"
        );
    }
    assert!(!rows.is_empty(), "the README has no layer table");
    let numbers: Vec<usize> = rows.keys().copied().collect();
    assert_eq!(
        numbers,
        (0..rows.len()).collect::<Vec<_>>(),
        "layers are numbered 0, 1, 2, … with no gaps"
    );
    rows.into_values().collect()
}

/// The same text with comments, string literals and character literals replaced by spaces
/// (newlines kept, so line numbers stay right).
fn blank_out(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r'))) && !prev.is_some_and(ident) && {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            chars.get(start + hashes) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            let body = start + hashes + 1;
            let mut end = body;
            while end < chars.len() {
                if chars[end] == '"' && chars[end + 1..].iter().take(hashes).all(|&h| h == '#') {
                    break;
                }
                end += 1;
            }
            let stop = (end + 1 + hashes).min(chars.len());
            out.extend(chars[i..stop].iter().map(|&ch| blank(ch)));
            i = stop;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{7f}' (the escaped character is at i + 2).
            let mut end = i + 3;
            while end < chars.len() && chars[end] != '\'' {
                end += 1;
            }
            out.extend(chars[i..=end.min(chars.len() - 1)].iter().map(|_| ' '));
            i = end + 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A plain character literal, e.g. '{' (a lifetime has no closing quote).
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The module path of a file under `src/`: `kernel/ports.rs` is `[kernel, ports]`, `web/mod.rs`
/// is `[web]`, `lib.rs` is the root `[]`.
fn module_path(file: &str) -> Vec<String> {
    let trimmed = file.strip_suffix(".rs").unwrap_or(file);
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] {
        parts.pop();
    }
    parts
}

/// One reference that leaves its top-level module: the line, and the top-level name it reaches.
struct Reference {
    line: usize,
    target: String,
}

/// Every reference to a crate-root name in `src` (already blanked out), for a file at `depth`.
fn references(src: &str, depth: usize) -> Vec<Reference> {
    let chars: Vec<char> = src.chars().collect();
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let line_of = |at: usize| chars[..at].iter().filter(|&&c| c == '\n').count() + 1;
    let skip_ws = |mut at: usize| {
        while at < chars.len() && chars[at].is_whitespace() {
            at += 1;
        }
        at
    };
    let word_at = |at: usize| -> (String, usize) {
        let mut end = at;
        while end < chars.len() && ident_char(chars[end]) {
            end += 1;
        }
        (chars[at..end].iter().collect(), end)
    };
    let path_sep = |at: usize| {
        let at = skip_ws(at);
        (chars.get(at) == Some(&':') && chars.get(at + 1) == Some(&':')).then(|| skip_ws(at + 2))
    };
    // The first name of each item of a `{ … }` group starting at `at`, nested groups included.
    let group = |at: usize| -> Vec<(usize, String)> {
        let mut found = Vec::new();
        let mut level = 0;
        let mut expecting = true;
        let mut i = at;
        while i < chars.len() {
            let c = chars[i];
            if c == '{' {
                level += 1;
                expecting = level == 1;
            } else if c == '}' {
                level -= 1;
                if level == 0 {
                    break;
                }
            } else if c == ',' && level == 1 {
                expecting = true;
            } else if expecting && ident_char(c) {
                let (name, end) = word_at(i);
                if name != "self" {
                    found.push((i, name));
                }
                expecting = false;
                i = end;
                continue;
            }
            i += 1;
        }
        found
    };

    let mut out = Vec::new();
    let mut braces = 0usize;
    // The brace depth at which each enclosing inline `mod name { … }` opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            braces += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            if inline.last() == Some(&braces) {
                inline.pop();
            }
            braces = braces.saturating_sub(1);
            i += 1;
            continue;
        }
        let starts_word = ident_char(c) && (i == 0 || !ident_char(chars[i - 1]));
        // `$crate` is a macro's path, and `x::crate` is not a path root.
        let after_path = i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':';
        if !starts_word || after_path || (i > 0 && chars[i - 1] == '$') {
            i += 1;
            continue;
        }
        let (word, end) = word_at(i);
        let mut root_at = None;
        match word.as_str() {
            "mod" => {
                let name_at = skip_ws(end);
                let (_, name_end) = word_at(name_at);
                if chars.get(skip_ws(name_end)) == Some(&'{') {
                    inline.push(braces + 1);
                }
            }
            "crate" => root_at = path_sep(end),
            "super" => {
                let mut supers = 1;
                let mut at = end;
                while let Some(next) = path_sep(at) {
                    let (w, e) = word_at(next);
                    if w == "super" {
                        supers += 1;
                        at = e;
                    } else {
                        // Only a chain that climbs out of the whole file reaches the crate root.
                        if supers >= depth + inline.len() {
                            root_at = Some(next);
                        }
                        break;
                    }
                }
                i = at;
            }
            _ => {}
        }
        if let Some(at) = root_at {
            if chars.get(at) == Some(&'{') {
                out.extend(group(at).into_iter().map(|(pos, target)| Reference {
                    line: line_of(pos),
                    target,
                }));
            } else {
                let (target, _) = word_at(at);
                if !target.is_empty() {
                    out.push(Reference {
                        line: line_of(at),
                        target,
                    });
                }
            }
        }
        i = i.max(end);
    }
    out
}

/// The modules `lib.rs` declares.
fn declared_modules(lib: &str) -> Vec<String> {
    blank_out(lib)
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let rest = l.strip_prefix("pub ").unwrap_or(l).strip_prefix("mod ")?;
            rest.strip_suffix(';').map(|name| name.trim().to_owned())
        })
        .collect()
}

/// Checks `files` (path under `src/`, text) against `layers`. Every problem, one line each:
/// `file:line: from → to: why`.
fn check(layers: &Layers, files: &[(String, String)]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(n, mods)| mods.iter().map(move |m| (m.as_str(), n)))
        .collect();
    let mut problems = Vec::new();
    let lib = files.iter().find(|(path, _)| path == "lib.rs");
    let declared = lib
        .map(|(_, src)| declared_modules(src))
        .unwrap_or_default();
    for module in &declared {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!(
                "lib.rs: `{module}` is in no layer: add it to the README's layer table"
            ));
        }
    }
    for module in layer_of.keys() {
        if !declared.iter().any(|d| d == module) {
            problems.push(format!(
                "README: layer table lists `{module}`, which lib.rs does not declare"
            ));
        }
    }
    for (path, src) in files {
        let module = module_path(path);
        let Some(top) = module.first() else {
            continue; // the crate root re-exports; it is above every layer
        };
        if src.contains("#[path") {
            problems.push(format!(
                "{path}: `#[path]` attributes hide which module a file is; name files by module"
            ));
        }
        let Some(&from) = layer_of.get(top.as_str()) else {
            problems.push(format!("{path}: `{top}` is in no layer"));
            continue;
        };
        for r in references(&blank_out(src), module.len()) {
            if r.target == *top {
                continue;
            }
            let line = r.line;
            let Some(&to) = layer_of.get(r.target.as_str()) else {
                problems.push(format!(
                    "{path}:{line}: {top} → crate::{}: not a top-level module; name it by its module path, not the crate root's re-export, so the arrow shows",
                    r.target
                ));
                continue;
            };
            if to > from {
                problems.push(format!(
                    "{path}:{line}: {top} (layer {from}) → {} (layer {to}): an arrow up",
                    r.target
                ));
            } else if to == from {
                problems.push(format!(
                    "{path}:{line}: {top} → {} (both layer {from}): an arrow sideways",
                    r.target
                ));
            }
        }
    }
    problems
}

/// The modules named in the first ```` ```text ```` block of the crate doc (`lib.rs`), in order of
/// first appearance: the crate doc's map must list the layers as the README does, top first.
fn crate_doc_order(lib: &str, known: &[String]) -> Vec<String> {
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .collect();
    let mut order = Vec::new();
    let mut in_block = false;
    for line in doc {
        let line = line.trim();
        if line.starts_with("```") {
            if in_block {
                break;
            }
            in_block = line == "```text";
            continue;
        }
        if !in_block {
            continue;
        }
        for word in line.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if known.iter().any(|k| k == word) && !order.iter().any(|o| o == word) {
                order.push(word.to_owned());
            }
        }
    }
    order
}

/// Every `.rs` file under `dir`, as (path relative to `root`, text), sorted.
fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, std::fs::read_to_string(&path).expect("read")));
        }
    }
    out.sort();
}

#[test]
fn every_arrow_in_the_core_points_down() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("core/README.md");
    let layers = layers_from_readme(&readme);
    let src = crate_dir.join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    assert!(files.len() > 30, "found the sources: {}", files.len());
    // The scan finds the arrows that are there, or an empty result would prove nothing.
    let seen: usize = files
        .iter()
        .map(|(path, text)| references(&blank_out(text), module_path(path).len()).len())
        .sum();
    assert!(seen > 100, "references found: {seen}");
    let problems = check(&layers, &files);
    assert!(
        problems.is_empty(),
        "arrows against the layers of core/README.md (paths under core/src/):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_crate_docs_map_lists_the_layers_as_the_readme_does() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("core/README.md");
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).expect("core/src/lib.rs");
    let top_first: Vec<String> = layers_from_readme(&readme)
        .into_iter()
        .rev()
        .flatten()
        .collect();
    assert_eq!(
        crate_doc_order(&lib, &top_first),
        top_first,
        "the map in lib.rs's crate doc and the README's layer table disagree"
    );
    let swapped = lib.replacen("//!  web ", "//!  xyz ", 1);
    assert_ne!(
        crate_doc_order(&swapped, &top_first),
        top_first,
        "the comparison sees a module missing from the map"
    );
}

#[test]
fn the_checker_refuses_arrows_up_sideways_and_through_the_root() {
    let layers: Layers = vec![
        vec!["base".to_owned()],
        vec!["left".to_owned(), "right".to_owned()],
        vec!["top".to_owned()],
    ];
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let files = vec![
        file(
            "lib.rs",
            "pub mod base;\npub mod left;\npub mod right;\npub mod top;\npub mod stray;\npub use top::Thing;\n",
        ),
        // Up, through a path in an expression.
        file(
            "base/mod.rs",
            "mod inner;\nfn f() {\n    crate::top::Thing::new();\n}\n",
        ),
        // Up, through a `super` chain that climbs out of `base/inner.rs`, inside an inline module.
        file(
            "base/inner.rs",
            "mod tests {\n    use super::*;\n    use super::super::super::left::X;\n}\n",
        ),
        // Sideways, inside a nested group; `base` in the same group is fine.
        file(
            "left.rs",
            "use crate::{\n    base::A,\n    right::{B, C},\n};\n",
        ),
        // Through the root's re-export; the paths in comments and strings are not arrows.
        file(
            "right.rs",
            "// crate::top::Thing\nconst S: &str = \"crate::top\";\nconst R: &str = r#\"crate::{top}\"#;\nconst C: char = '{';\nconst Q: [char; 2] = ['\\'', '}'];\nfn f<'a>(x: &'a str) -> &'a str { x }\nuse crate::Thing;\n",
        ),
        // All down: fine.
        file(
            "top.rs",
            "use crate::{base, left::{X, Y}};\nuse super::right::Z;\npub(super) fn g() {}\n",
        ),
    ];
    let problems = check(&layers, &files);
    assert_eq!(
        problems,
        [
            "lib.rs: `stray` is in no layer: add it to the README's layer table",
            "base/mod.rs:3: base (layer 0) → top (layer 2): an arrow up",
            "base/inner.rs:3: base (layer 0) → left (layer 1): an arrow up",
            "left.rs:3: left → right (both layer 1): an arrow sideways",
            "right.rs:7: right → crate::Thing: not a top-level module; name it by its module path, not the crate root's re-export, so the arrow shows",
        ],
        "{problems:#?}"
    );
}

#[test]
fn the_layer_table_is_read_from_the_readme() {
    let readme = "text\n\n| layer | modules | concern |\n|---|---|---|\n| 1 | `b`, `c` | x |\n| 0 | `a` | y |\n";
    assert_eq!(
        layers_from_readme(readme),
        vec![vec!["a".to_owned()], vec!["b".to_owned(), "c".to_owned()]]
    );
}
