//! Builds the guest components into `OUT_DIR`, the way wasmtime's
//! `crates/test-programs/artifacts/build.rs` builds its test programs: a nested `cargo build` with its
//! own target directory (sharing ours would deadlock on the cargo lock held by the outer build).
//!
//! The guest is compiled for `wasm32-unknown-unknown`, not `wasm32-wasip2`: std's wasip2 runtime
//! imports `wasi:io` and ten `wasi:cli` interfaces that the WIT worlds do not declare, so a host
//! supplying exactly the world could not link it. On `wasm32-unknown-unknown` the core module imports
//! only what its WIT bindings use, and `wit-component` turns it into the component (as
//! `wasm-tools component new` does), validating it on the way.
//!
//! It also reads the WIT worlds in `wit/` and writes each world's import names to
//! `OUT_DIR/expected_imports.rs`, so that `mfa-step inspect` compares the built component with what
//! the contract declares (`src/inspect.rs`).
#![allow(
    clippy::panic,
    clippy::expect_used,
    reason = "a build script reports failure by panicking"
)]

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// One component the build script builds and embeds.
struct Build {
    /// The crate to build (a `cdylib` with wit-bindgen's bindings).
    package: &'static str,
    /// Its cargo features, if any.
    features: Option<&'static str>,
    /// The WIT folder (relative to the workspace root) and the world the component implements.
    world: (&'static str, &'static str),
    /// The file it is written to in `OUT_DIR` (`include_bytes!`'d by `src/runtime.rs`).
    file: &'static str,
    /// Built for size (profile `guest-small`, LLVM's inliner off) rather than speed (profile
    /// `guest`): the components other hosts load, where the host's own calls dominate a login's
    /// cost and the download and instantiation weigh more. `serve`'s component is built for speed.
    small: bool,
}

/// Every component embedded in the harness: one line each.
const BUILDS: &[Build] = &[
    Build {
        package: "mfa-step-guest",
        features: None,
        world: ("wit", "plugin"),
        file: "mfa_step_plugin.wasm",
        small: true,
    },
    Build {
        package: "mfa-step-guest",
        features: Some("http"),
        world: ("wit", "http-app"),
        file: "mfa_step_http.wasm",
        small: false,
    },
    Build {
        package: "mfa-step-conformance",
        features: None,
        world: ("wit", "conformance"),
        file: "mfa_step_conformance.wasm",
        small: true,
    },
];

/// Stops with the command that fixes it when the compiler has no standard library for `target`.
///
/// Without it the nested build fails deep in its output with "can't find crate for `core`". The
/// nested cargo compiles with the `RUSTC` cargo gives this script (it inherits the variable), and
/// every toolchain, rustup's or a distribution's, keeps a target's standard library in
/// `<sysroot>/lib/rustlib/<target>/lib`, where `rustup target add` puts it. If the sysroot cannot
/// be asked for, the nested build is left to report what is wrong.
fn require_target(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(&rustc).args(["--print", "sysroot"]).output() else {
        return;
    };
    if !output.status.success() {
        return;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let std_dir = sysroot.join("lib").join("rustlib").join(target).join("lib");
    if !std_dir.is_dir() {
        panic!(
            "\n\nThe `{target}` target is not installed for the Rust toolchain in {}.\n\
             host-harness embeds the guest component, which is built for `{target}`. Install it with:\n\n    \
             rustup target add {target}\n\n\
             (run it in this repository, so that it applies to the toolchain rust-toolchain.toml pins)\n",
            sysroot.display()
        );
    }
}

/// Builds `build`'s core module with a nested cargo and returns its bytes.
fn build_core_module(build: &Build, root: &Path, target_dir: &Path) -> Vec<u8> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile = if build.small { "guest-small" } else { "guest" };
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            build.package,
            "--target",
            GUEST_TARGET,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    if build.small {
        // With LLVM's inliner off the engine is no longer copied into each export, and the plugin
        // is 14 KB smaller (it must stay under 400 KiB, BENCHMARKS.md). Each profile has its own
        // output folder, so the two kinds of build never invalidate each other.
        cmd.args([
            "--config",
            "target.wasm32-unknown-unknown.rustflags = [\"-Cllvm-args=-inline-threshold=0\"]",
        ]);
    }
    if let Some(features) = build.features {
        cmd.args(["--features", features]);
    }
    // The outer build's settings (clippy as a wrapper, host-only flags) must not leak into the guest.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the guest");
    assert!(
        status.success(),
        "building the guest component ({}) failed",
        build.file
    );
    let built = target_dir
        .join(GUEST_TARGET)
        .join(profile)
        .join(format!("{}.wasm", build.package.replace('-', "_")));
    std::fs::read(&built).unwrap_or_else(|e| panic!("read {}: {e}", built.display()))
}

/// `wasm` without its top-level custom sections called `name`.
///
/// wit-component always adds a `component-name` section (5 KB of debug names for the component's
/// own items), even with `debug_names(false)`; the core module's names are stripped by the `guest`
/// profile already, and the plugin must stay under 400 KiB.
fn without_custom_section(wasm: &[u8], name: &str) -> Vec<u8> {
    fn leb(bytes: &[u8], at: &mut usize) -> usize {
        let (mut value, mut shift) = (0, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                return value;
            }
        }
    }
    let mut out = wasm[..8].to_vec();
    let mut at = 8;
    while at < wasm.len() {
        let start = at;
        let id = wasm[at];
        at += 1;
        let size = leb(wasm, &mut at);
        let end = at + size;
        let drop = id == 0 && {
            let len = leb(wasm, &mut at);
            &wasm[at..at + len] == name.as_bytes()
        };
        if !drop {
            out.extend_from_slice(&wasm[start..end]);
        }
        at = end;
    }
    out
}

/// The import names of `world` in the WIT folder `dir`, as a component implementing it shows them
/// (`wasi:clocks/wall-clock@0.2.12`), in two sorted lists: those it must import, and those it may.
///
/// wit-parser elaborates a world when it resolves the package: its imports are those written in
/// it plus every interface their `use`s and its exports' `use`s pull in. A component imports an
/// interface only if it uses something of it, so the interfaces that only the exports' types pull
/// in (wasi:http/types and wasi:io under `wasi:http/incoming-handler`) may be left out; the others
/// (the world's own imports and what they use) must all be imported.
fn world_imports(dir: &Path, world: &str) -> (Vec<String>, Vec<String>) {
    use std::collections::BTreeSet;
    use wit_parser::{InterfaceId, WorldItem};

    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(dir)
        .unwrap_or_else(|e| panic!("parse the WIT in {}: {e:#}", dir.display()));
    let id = resolve
        .select_world(&[package], Some(world))
        .unwrap_or_else(|e| panic!("find world `{world}` in {}: {e:#}", dir.display()));
    let world = &resolve.worlds[id];
    let closure = |roots: Vec<InterfaceId>| {
        let mut seen = BTreeSet::new();
        let mut todo = roots;
        while let Some(next) = todo.pop() {
            for dep in resolve.interface_direct_deps(next) {
                if seen.insert(dep) {
                    todo.push(dep);
                }
            }
        }
        seen
    };
    let interface = |item: &WorldItem| match item {
        WorldItem::Interface { id, .. } => Some(*id),
        _ => None,
    };
    let of_exports = closure(world.exports.values().filter_map(interface).collect());
    let own: Vec<InterfaceId> = world
        .imports
        .values()
        .filter_map(interface)
        .filter(|i| !of_exports.contains(i))
        .collect();
    let used_by_own = closure(own.clone());
    let (mut required, mut optional) = (Vec::new(), Vec::new());
    for (key, item) in &world.imports {
        let name = resolve.name_world_key(key);
        match interface(item) {
            Some(i) if !own.contains(&i) && !used_by_own.contains(&i) => optional.push(name),
            _ => required.push(name),
        }
    }
    required.sort();
    optional.sort();
    (required, optional)
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("host-harness sits in the workspace root")
        .to_path_buf();
    let target_dir = out.join("guest-target");
    require_target(GUEST_TARGET);

    let mut expected = String::from(
        "/// Each embedded component's file, the import names its WIT world requires, and those it\n\
         /// allows (interfaces only the world's exports use), sorted.\n\
         pub(crate) const EXPECTED_IMPORTS: &[(&str, &[&str], &[&str])] = &[\n",
    );
    for build in BUILDS {
        let module = build_core_module(build, &root, &target_dir);
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).debug_names(false).encode())
            .unwrap_or_else(|e| {
                panic!(
                    "make a component of {} ({}): {e:#}",
                    build.package, build.file
                )
            });
        let component = without_custom_section(&component, "component-name");
        std::fs::write(out.join(build.file), component).expect("write the component");

        let (dir, world) = build.world;
        let (required, optional) = world_imports(&root.join(dir), world);
        writeln!(
            expected,
            "    ({:?}, &{required:?}, &{optional:?}),",
            build.file
        )
        .expect("write to a String");
    }
    expected.push_str("];\n");
    std::fs::write(out.join("expected_imports.rs"), expected).expect("write expected_imports.rs");

    // Cargo.toml: the `guest` profile the components are built with.
    for path in [
        "guest",
        "conformance",
        "core",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
}
