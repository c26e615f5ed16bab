//! Builds the guest component for both worlds into `OUT_DIR`, the way wasmtime's
//! `crates/test-programs/artifacts/build.rs` builds its test programs: a nested `cargo build` with its
//! own target directory (sharing ours would deadlock on the cargo lock held by the outer build).
#![allow(
    clippy::panic,
    clippy::expect_used,
    reason = "a build script reports failure by panicking"
)]

use std::env;
use std::path::PathBuf;
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";

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

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("host-harness sits in the workspace root")
        .to_path_buf();
    let target_dir = out.join("guest-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    require_target(GUEST_TARGET);

    for (features, file) in [
        (None, "mfa_step_plugin.wasm"),
        (Some("http"), "mfa_step_http.wasm"),
    ] {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                "mfa-step-guest",
                "--target",
                GUEST_TARGET,
                "--profile",
                "guest",
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        if let Some(features) = features {
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
            "building the guest component ({file}) failed"
        );
        let built = target_dir
            .join(GUEST_TARGET)
            .join("guest/mfa_step_guest.wasm");
        std::fs::copy(&built, out.join(file)).expect("copy the built component");
    }
    for path in ["guest", "core", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
}
