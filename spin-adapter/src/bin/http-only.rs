//! `http-only GUEST OUT`: writes to OUT a component that holds GUEST unchanged, imports everything
//! GUEST imports, and exports only GUEST's `wasi:http/incoming-handler`.
//!
//! Why Spin needs this: when Spin composes a component with a dependency, it re-exports every export
//! of the component. The `http-app` guest also exports `login-step`, `devices` and `admin`, whose
//! functions use records from `mfa-step:plugin/types`; once the dependency satisfies the `types`
//! import, those records are neither imported nor exported by the composition, and the component
//! model refuses such an export ("instance not valid to be used as export"). Spin's HTTP trigger
//! calls only the handler, so the component Spin runs exports only the handler; the function
//! exports stay with the `plugin` world and `serve`. `spin-adapter/tests/spin_app.rs` composes both
//! shapes the way Spin does and shows the difference.
//!
//! Built only with the `http-only` feature (native; `spin/build.sh` runs it).

use std::process::ExitCode;

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// The export name prefix of every `wasi:http` 0.2 handler, as Spin's HTTP trigger looks it up.
const HANDLER_PREFIX: &str = "wasi:http/incoming-handler@0.2.";

fn http_only(guest: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let package = Package::from_bytes("mfa-step", None, guest, graph.types_mut())
        .map_err(|e| format!("not a component: {e:#}"))?;
    let handler = graph.types()[package.ty()]
        .exports
        .keys()
        .find(|name| name.starts_with(HANDLER_PREFIX))
        .cloned()
        .ok_or_else(|| format!("the component exports no {HANDLER_PREFIX}*"))?;
    let id = graph
        .register_package(package)
        .map_err(|e| format!("{e:#}"))?;
    // Every import left unsatisfied becomes an import of the result, under the same name.
    let instance = graph.instantiate(id);
    let export = graph
        .alias_instance_export(instance, &handler)
        .map_err(|e| format!("{e:#}"))?;
    graph
        .export(export, handler)
        .map_err(|e| format!("{e:#}"))?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| format!("{e:?}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [guest, out] = args.as_slice() else {
        eprintln!("usage: http-only GUEST.wasm OUT.wasm");
        return ExitCode::from(2);
    };
    let result = std::fs::read(guest)
        .map_err(|e| format!("read {guest}: {e}"))
        .and_then(http_only)
        .and_then(|bytes| std::fs::write(out, bytes).map_err(|e| format!("write {out}: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-only: {e}");
            ExitCode::FAILURE
        }
    }
}
