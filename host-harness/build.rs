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
                "wasm32-wasip2",
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
        let built = target_dir.join("wasm32-wasip2/guest/mfa_step_guest.wasm");
        std::fs::copy(&built, out.join(file)).expect("copy the built component");
    }
    for path in ["guest", "core", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
}
