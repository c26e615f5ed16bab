//! `spin.toml`, checked the way Spin reads it, against the two components it names.
//!
//! This suite needs no Spin: it does what `spin up` does before it serves a request, with the
//! library Spin does it with (`tests/spin` runs the app on a real Spin):
//! - parses the manifest, allowing only the manifest-v2 fields Spin documents (a misspelt field
//!   fails here instead of being ignored);
//! - resolves the variables each component uses against the application's `[variables]`, and
//!   checks that every setting `wit/config.wit` names can be set;
//! - loads the component and its dependency from the paths the manifest names;
//! - composes them as Spin 4 does (with `wac-graph`: every import of the dependency's package is
//!   matched by name, type-checked against the adapter's export of that name and wired to it),
//!   validates the result, and checks that it imports only what Spin provides (WASI and Spin's own
//!   interfaces).
//!
//! The components are built by `spin/build.sh` (which `spin build` and `.ci/run` run). A missing
//! component fails the test and names that command. Not covered: Spin's environment-isolation
//! wrapper (it only re-plumbs `wasi:cli/environment`), its deny adapters (not applied: the adapter
//! inherits the component's permissions), and serving requests (`tests/spin`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use wac_graph::types::{Package, SubtypeChecker};
use wac_graph::{CompositionGraph, EncodeOptions};

/// The one dependency key: the whole `mfa-step:plugin` package, at the WIT's version.
const DEPENDENCY: &str = "mfa-step:plugin@0.2.0";
/// What the adapter must export, and the component import, from that package.
const PLUGIN_INTERFACES: [&str; 5] = [
    "mfa-step:plugin/audit@0.2.0",
    "mfa-step:plugin/config@0.2.0",
    "mfa-step:plugin/mailer@0.2.0",
    "mfa-step:plugin/store@0.2.0",
    "mfa-step:plugin/types@0.2.0",
];
/// Spin's APIs the adapter maps onto (name prefixes); each must be imported, else the mapping is
/// not the documented one.
const SPIN_APIS: [&str; 5] = [
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:http/outgoing-handler@0.2.",
];
/// What the `http-only` world (wit/worlds.wit) imports from WASI besides what its one export
/// brings: the clock and the CSPRNG, as the `plugin` world.
const WORLD_WASI_IMPORTS: [&str; 2] = ["wasi:clocks/wall-clock@0.2.", "wasi:random/random@0.2."];
/// Variables the adapter reads for itself (see spin-adapter/src/component.rs).
const ADAPTER_VARIABLES: [&str; 4] = ["mail_api_url", "mail_api_token", "siem_url", "siem_token"];
/// Secrets: each must be `secret = true` at the top level.
const SECRETS: [&str; 5] = [
    "hmac_key",
    "api_key",
    "mail_api_token",
    "siem_token",
    "prompt_key",
];

// The manifest, as far as this app uses it. Every struct denies unknown fields, so that only the
// fields of Spin's manifest reference (version 2) get through. `inherit_configuration` on a
// dependency is left out on purpose: Spin 4 refuses it next to `dependencies_inherit_configuration`.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    spin_manifest_version: u32,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    trigger: Triggers,
    component: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "parsed to check the manifest's shape")]
struct Application {
    name: String,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "parsed to check the manifest's shape")]
struct Variable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Triggers {
    http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpTrigger {
    route: String,
    component: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "parsed to check the manifest's shape")]
struct Component {
    description: Option<String>,
    source: String,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    dependencies_inherit_configuration: Option<bool>,
    #[serde(default)]
    dependencies: BTreeMap<String, Dependency>,
    build: Option<Build>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dependency {
    path: String,
    export: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "parsed to check the manifest's shape")]
struct Build {
    command: String,
    workdir: Option<String>,
    #[serde(default)]
    watch: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("spin.toml")).expect("read spin.toml");
        toml::from_str(&text).unwrap_or_else(|e| panic!("spin.toml does not parse: {e}"))
    })
}

fn app_component() -> &'static Component {
    manifest()
        .component
        .get("mfa-step")
        .expect("spin.toml defines [component.mfa-step]")
}

/// A built component named by the manifest, relative to it. Missing = not built: a failure.
fn artifact(relative: &str) -> Vec<u8> {
    let path = root().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): build it with `bash spin/build.sh` (what `spin build` runs)",
            path.display()
        )
    })
}

fn guest_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| artifact(&app_component().source))
}

fn adapter_path() -> &'static str {
    &app_component()
        .dependencies
        .get(DEPENDENCY)
        .unwrap_or_else(|| panic!("spin.toml maps {DEPENDENCY}"))
        .path
}

fn adapter_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| artifact(adapter_path()))
}

/// A component's import and export names, read the way wac-graph (and so Spin) reads them.
struct Names {
    imports: BTreeSet<String>,
    exports: BTreeSet<String>,
}

fn names(name: &str, bytes: &[u8]) -> Names {
    let mut graph = CompositionGraph::new();
    let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
        .unwrap_or_else(|e| panic!("{name} is not a component: {e:#}"));
    let world = &graph.types()[package.ty()];
    Names {
        imports: world.imports.keys().cloned().collect(),
        exports: world.exports.keys().cloned().collect(),
    }
}

/// Spin's rule for a dependency key (`ns:pkg[/iface][@version]`) matching an import name:
/// same package, same interface if the key names one, same version if the key has one.
fn dependency_matches(key: &str, import: &str) -> bool {
    let (key_name, key_version) = match key.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (key, None),
    };
    let (key_package, key_interface) = match key_name.split_once('/') {
        Some((package, interface)) => (package, Some(interface)),
        None => (key_name, None),
    };
    let Some((import_package, rest)) = import.split_once('/') else {
        return false;
    };
    let (import_interface, import_version) = match rest.split_once('@') {
        Some((interface, version)) => (interface, Some(version)),
        None => (rest, None),
    };
    import_package == key_package
        && key_interface.is_none_or(|i| i == import_interface)
        && key_version.is_none_or(|v| Some(v) == import_version)
}

/// The `{{ name }}` expressions in a manifest value.
fn template_names(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed {{{{ in {value:?}"));
        found.push(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    found
}

/// Spin's variable names: lower-case ASCII letters, digits and underscores, from a letter.
fn is_spin_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Spin provides these: WASI, and its own `fermyon:spin/*` and `spin:*` packages.
fn spin_provides(import: &str) -> bool {
    import.starts_with("wasi:")
        || import.starts_with("fermyon:spin/")
        || import.starts_with("spin:")
}

#[test]
fn the_manifest_is_version_2_and_routes_every_path_to_the_mfa_step_component() {
    let m = manifest();
    assert_eq!(m.spin_manifest_version, 2);
    assert_eq!(m.application.name, "mfa-step");
    assert_eq!(m.trigger.http.len(), 1, "one HTTP trigger");
    let trigger = &m.trigger.http[0];
    assert_eq!(
        trigger.route, "/...",
        "the REST API and /healthz all go to the component"
    );
    assert_eq!(trigger.component, "mfa-step");
    for t in &m.trigger.http {
        assert!(
            m.component.contains_key(&t.component),
            "the trigger for {} names an undefined component {}",
            t.route,
            t.component
        );
    }
}

#[test]
fn the_component_uses_the_default_store_and_lends_its_permissions_to_the_adapter() {
    let c = app_component();
    assert_eq!(c.key_value_stores, ["default"]);
    assert_eq!(
        c.dependencies_inherit_configuration,
        Some(true),
        "without it Spin gives the adapter no store, no network and no variables"
    );
    let keys: Vec<&String> = c.dependencies.keys().collect();
    assert_eq!(
        keys,
        [DEPENDENCY],
        "one package-level key: Spin refuses two keys of one package mapped to one file"
    );
    assert_eq!(
        c.dependencies[DEPENDENCY].export, None,
        "each import is satisfied by the export of the same name"
    );
}

#[test]
fn every_variable_a_component_uses_is_declared_and_every_declared_one_is_used() {
    let m = manifest();
    let declared: BTreeSet<&String> = m.variables.keys().collect();
    let mut used = BTreeSet::new();
    for (id, c) in &m.component {
        for value in c.variables.values().chain(&c.allowed_outbound_hosts) {
            for name in template_names(value) {
                assert!(
                    m.variables.contains_key(&name),
                    "component {id} uses {{{{ {name} }}}}, which [variables] does not declare"
                );
                used.insert(name);
            }
        }
    }
    let used: BTreeSet<&String> = used.iter().collect();
    assert_eq!(declared, used, "declared but unused variables");
    for (name, v) in &m.variables {
        assert!(
            is_spin_variable_name(name),
            "{name} is not a Spin variable name"
        );
        // Spin's rule: a variable has a default, or is required; not both, not neither.
        assert!(
            v.default.is_some() != v.required,
            "{name} needs either a default or required = true"
        );
    }
}

#[test]
fn secrets_are_secret_and_those_without_a_safe_default_are_required() {
    let vars = &manifest().variables;
    for name in SECRETS {
        assert!(vars[name].secret, "{name} must be secret = true");
    }
    for name in ["hmac_key", "api_key", "mail_api_token", "mail_api_origin"] {
        assert!(vars[name].required, "{name} must be required = true");
    }
    for (name, v) in vars {
        if name.contains("key") || name.contains("token") {
            assert!(
                v.secret,
                "{name} looks like a secret but is not secret = true"
            );
        }
    }
}

/// The settings `wit/config.wit` documents: its backticked snake_case names (`hmac_key`,
/// `code_ttl_seconds`, ...). The WIT is the contract; Spin must be able to set each of them.
fn documented_settings() -> BTreeSet<String> {
    let wit = std::fs::read_to_string(root().join("wit/config.wit")).expect("read wit/config.wit");
    wit.split('`')
        .skip(1)
        .step_by(2)
        .filter(|token| {
            token.contains('_')
                && is_spin_variable_name(token)
                && !token.starts_with('_')
                && !token.ends_with('_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_of_the_component_and_the_adapter_reaches_it_as_a_variable() {
    let c = app_component();
    let settings = documented_settings();
    for name in ["hmac_key", "api_key", "code_ttl_seconds", "required_roles"] {
        assert!(
            settings.contains(name),
            "wit/config.wit no longer documents {name}?"
        );
    }
    let expected: BTreeSet<String> = settings
        .iter()
        .cloned()
        .chain(ADAPTER_VARIABLES.map(str::to_owned))
        .collect();
    let mapped: BTreeSet<String> = c.variables.keys().cloned().collect();
    assert_eq!(mapped, expected, "[component.mfa-step.variables]");
    // Optional settings default to "" (the adapter's "not set"), never to a copy of the
    // component's own default, which must stay in one place.
    for name in settings.iter().filter(|n| !SECRETS.contains(&n.as_str())) {
        assert_eq!(
            template_names(&c.variables[name]),
            std::slice::from_ref(name),
            "{name} maps straight to its application variable"
        );
        assert_eq!(
            manifest().variables[name].default.as_deref(),
            Some(""),
            "{name} defaults to \"\", the component's \"not set\""
        );
    }
}

#[test]
fn the_mail_api_is_the_only_allowed_host_and_the_send_url_is_built_on_it() {
    let c = app_component();
    // Spin refuses a path in allowed_outbound_hosts, so the host is the origin alone and the
    // send URL is that origin plus a path: the two cannot disagree.
    assert_eq!(c.allowed_outbound_hosts, ["{{ mail_api_origin }}"]);
    assert_eq!(
        c.variables["mail_api_url"],
        "{{ mail_api_origin }}{{ mail_api_path }}"
    );
}

#[test]
fn spin_build_runs_the_build_script_which_writes_both_paths() {
    let c = app_component();
    let build = c.build.as_ref().expect("[component.mfa-step.build]");
    assert_eq!(build.command, "bash spin/build.sh");
    assert_eq!(build.workdir, None, "runs from the manifest's directory");
    let script = std::fs::read_to_string(root().join("spin/build.sh")).expect("spin/build.sh");
    for path in [c.source.as_str(), adapter_path()] {
        assert!(
            script.contains(path),
            "spin/build.sh does not produce {path}"
        );
    }
}

#[test]
fn the_source_and_the_dependency_exist_after_the_build() {
    assert!(!guest_bytes().is_empty());
    assert!(!adapter_bytes().is_empty());
}

#[test]
fn the_source_is_the_http_only_world_exporting_only_its_handler() {
    // Built for the `http-only` world (spin/build.sh): the handler Spin's HTTP trigger calls is the
    // one export, so the composition re-exports nothing that uses the package's types.
    let source = names("mfa-step", guest_bytes());
    assert_eq!(source.exports.len(), 1, "one export: {:?}", source.exports);
    assert!(
        source
            .exports
            .iter()
            .all(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
        "{:?}",
        source.exports
    );
    // Its imports: the package's interfaces, the world's clock and CSPRNG, and WASI's own
    // plumbing (streams, HTTP types, the environment a Rust std build asks for).
    for world_import in WORLD_WASI_IMPORTS {
        assert!(
            source.imports.iter().any(|i| i.starts_with(world_import)),
            "no {world_import}*: {:?}",
            source.imports
        );
    }
    for import in &source.imports {
        assert!(
            import.starts_with("mfa-step:plugin/") || import.starts_with("wasi:"),
            "the component imports {import}"
        );
    }
}

#[test]
fn the_adapter_exports_exactly_the_plugin_interfaces_the_component_imports_from_the_package() {
    let guest = names("mfa-step", guest_bytes());
    let adapter = names(DEPENDENCY, adapter_bytes());
    let expected: BTreeSet<String> = PLUGIN_INTERFACES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(adapter.exports, expected, "the adapter's exports");
    let matched: BTreeSet<String> = guest
        .imports
        .iter()
        .filter(|i| dependency_matches(DEPENDENCY, i))
        .cloned()
        .collect();
    // The `http-only` component imports the four interfaces with functions; `types` reaches it
    // through them. The adapter exports `types` as well, which its other exports use.
    let with_functions: BTreeSet<String> = expected
        .iter()
        .filter(|i| !i.starts_with("mfa-step:plugin/types@"))
        .cloned()
        .collect();
    assert_eq!(
        matched, with_functions,
        "the component's imports that the dependency key matches"
    );
    // Everything else the component imports, Spin provides.
    for import in guest.imports.difference(&matched) {
        assert!(spin_provides(import), "Spin does not provide {import}");
    }
}

#[test]
fn the_adapter_imports_only_what_spin_provides_and_uses_the_documented_apis() {
    let adapter = names(DEPENDENCY, adapter_bytes());
    for import in &adapter.imports {
        assert!(
            spin_provides(import),
            "the adapter imports {import}, which Spin does not provide"
        );
    }
    for api in SPIN_APIS {
        assert!(
            adapter.imports.iter().any(|i| i.starts_with(api)),
            "the adapter does not import {api}"
        );
    }
    assert!(
        !adapter.imports.iter().any(|i| i.starts_with("mfa-step:")),
        "the adapter must not need the package it provides"
    );
}

/// What spin-compose does for a component with dependencies: register both, match the
/// component's imports to the dependency key, check each export's type against the import it
/// satisfies, wire them, re-export every export of the component, and encode (which validates).
fn compose_like_spin(main_bytes: &[u8], dep_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let main = Package::from_bytes("mfa-step", None, main_bytes.to_vec(), graph.types_mut())
        .map_err(|e| format!("the component: {e:#}"))?;
    let main_world = main.ty();
    let main_package = graph.register_package(main).map_err(|e| format!("{e:#}"))?;
    let main_instance = graph.instantiate(main_package);
    let dep = Package::from_bytes(
        "mfa-step:plugin",
        None,
        dep_bytes.to_vec(),
        graph.types_mut(),
    )
    .map_err(|e| format!("the adapter: {e:#}"))?;
    let dep_world = dep.ty();
    let dep_package = graph.register_package(dep).map_err(|e| format!("{e:#}"))?;
    let dep_instance = graph.instantiate(dep_package);

    let imports: Vec<String> = graph.types()[main_world]
        .imports
        .keys()
        .filter(|i| dependency_matches(DEPENDENCY, i))
        .cloned()
        .collect();
    if imports.is_empty() {
        return Err(format!("{DEPENDENCY} matches no import of the component"));
    }
    let mut cache = HashSet::new();
    for import in &imports {
        let export_ty = *graph.types()[dep_world]
            .exports
            .get(import)
            .ok_or_else(|| format!("the adapter does not export {import}"))?;
        let import_ty = graph.types()[main_world].imports[import];
        SubtypeChecker::new(&mut cache)
            .is_subtype(export_ty, graph.types(), import_ty, graph.types())
            .map_err(|e| format!("the adapter's {import} does not satisfy the import: {e:#}"))?;
        let export = graph
            .alias_instance_export(dep_instance, import)
            .map_err(|e| format!("{e:#}"))?;
        graph
            .set_instantiation_argument(main_instance, import, export)
            .map_err(|e| format!("{import}: {e:#}"))?;
    }
    let exports: Vec<String> = graph.types()[main_world].exports.keys().cloned().collect();
    for name in exports {
        let export = graph
            .alias_instance_export(main_instance, &name)
            .map_err(|e| format!("{e:#}"))?;
        graph.export(export, name).map_err(|e| format!("{e:#}"))?;
    }
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn spin_composes_the_source_with_the_adapter_into_an_app_spin_can_run() {
    let composed = compose_like_spin(guest_bytes(), adapter_bytes())
        .unwrap_or_else(|e| panic!("Spin could not compose the app: {e}"));
    // Nothing of the package is left to import, everything else is Spin's, and the handler the
    // HTTP trigger calls comes through.
    let composed = names("mfa-step-composed", &composed);
    for import in &composed.imports {
        assert!(
            spin_provides(import),
            "the composed app still imports {import}, which Spin does not provide"
        );
    }
    assert_eq!(composed.exports, names("mfa-step", guest_bytes()).exports);
}

#[test]
fn the_dependency_rule_matches_as_spin_documents_it() {
    // A package key matches every interface of the package, an interface key that interface only,
    // and a version, when the key has one, must be equal.
    assert!(dependency_matches(
        DEPENDENCY,
        "mfa-step:plugin/store@0.2.0"
    ));
    assert!(dependency_matches(
        "mfa-step:plugin",
        "mfa-step:plugin/types@0.2.0"
    ));
    assert!(dependency_matches(
        "mfa-step:plugin/store",
        "mfa-step:plugin/store@0.2.0"
    ));
    assert!(!dependency_matches(
        "mfa-step:plugin/store",
        "mfa-step:plugin/mailer@0.2.0"
    ));
    assert!(!dependency_matches(
        DEPENDENCY,
        "mfa-step:plugin/store@0.1.0"
    ));
    assert!(!dependency_matches(DEPENDENCY, "mfa-step:plugin/store"));
    assert!(!dependency_matches(DEPENDENCY, "wasi:http/types@0.2.12"));
}
