//! `mfa-step inspect`: what a host must supply and what it gets. Lists each embedded component's
//! imports and exports, with its size, and checks its imports against its WIT world, resolved from
//! `wit/` by the build script (build.rs, `world_imports`):
//!
//! - every import must be one the world declares: a component importing anything more (as std's
//!   wasip2 runtime made it import `wasi:cli` and `wasi:io`) cannot be linked by a host that
//!   supplies exactly the world;
//! - every import the world requires (its own imports and what they `use`) must be imported, or the
//!   world and the build disagree. Interfaces that only the world's exports' types pull in
//!   (`wasi:io/poll` under `wasi:http/incoming-handler`) may be absent: a component imports an
//!   interface only if it uses it.
//!
//! Both differences are printed, and [`Report::matches_world`] is false when either is not empty.

use std::fmt;

use wasmtime::component::Component;
use wasmtime::{Engine, Result};

use crate::runtime::{CONFORMANCE_WASM, HTTP_WASM, PLUGIN_WASM};

// `EXPECTED_IMPORTS`: each embedded file's world imports, written by build.rs from `wit/`.
include!(concat!(env!("OUT_DIR"), "/expected_imports.rs"));

/// A component the harness embeds (`mfa-step component <name>` writes it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Embedded {
    /// The `plugin` world: function exports only, what an identity provider loads.
    Plugin,
    /// The `http-app` world: `plugin` plus the REST API as a `wasi:http` export.
    HttpApp,
    /// The `conformance` world: the host conformance kit (`wit/conformance.wit`), for host authors.
    Conformance,
}

impl Embedded {
    /// Every embedded component, in the order `inspect` lists them.
    pub const ALL: [Self; 3] = [Self::Plugin, Self::HttpApp, Self::Conformance];

    /// The WIT world it implements.
    #[must_use]
    pub fn world(self) -> &'static str {
        match self {
            Self::Plugin => "plugin",
            Self::HttpApp => "http-app",
            Self::Conformance => "conformance",
        }
    }

    /// The component's bytes.
    #[must_use]
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::Plugin => PLUGIN_WASM,
            Self::HttpApp => HTTP_WASM,
            Self::Conformance => CONFORMANCE_WASM,
        }
    }

    /// The file build.rs wrote it to (the key of its expected imports).
    fn file(self) -> &'static str {
        match self {
            Self::Plugin => "mfa_step_plugin.wasm",
            Self::HttpApp => "mfa_step_http.wasm",
            Self::Conformance => "mfa_step_conformance.wasm",
        }
    }

    /// The import names its world requires, then those it allows besides, each sorted. Both empty
    /// if build.rs listed no world for it, which makes `inspect` fail rather than pass unchecked.
    #[must_use]
    pub fn world_imports(self) -> (&'static [&'static str], &'static [&'static str]) {
        EXPECTED_IMPORTS
            .iter()
            .find(|(file, _, _)| *file == self.file())
            .map_or((&[], &[]), |(_, required, optional)| (required, optional))
    }
}

/// One component's imports and exports, and its world's.
#[derive(Debug, Clone)]
pub struct Report {
    /// The world's name.
    pub world: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// Imported instance names, sorted.
    pub imports: Vec<String>,
    /// Exported instance names, sorted.
    pub exports: Vec<String>,
    /// The imports the world requires, sorted.
    pub required: Vec<String>,
    /// The imports the world allows but does not require, sorted.
    pub optional: Vec<String>,
}

impl Report {
    /// Imports of the component that its world does not declare.
    #[must_use]
    pub fn unexpected_imports(&self) -> Vec<&str> {
        self.imports
            .iter()
            .filter(|i| !self.required.contains(i) && !self.optional.contains(i))
            .map(String::as_str)
            .collect()
    }

    /// Imports the world requires that the component does not import.
    #[must_use]
    pub fn missing_imports(&self) -> Vec<&str> {
        self.required
            .iter()
            .filter(|i| !self.imports.contains(i))
            .map(String::as_str)
            .collect()
    }

    /// Whether the component imports all that its world requires and nothing it does not declare.
    #[must_use]
    pub fn matches_world(&self) -> bool {
        !self.required.is_empty()
            && self.unexpected_imports().is_empty()
            && self.missing_imports().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "world {}: {} bytes", self.world, self.size)?;
        writeln!(f, "  imports:")?;
        for i in &self.imports {
            writeln!(f, "    {i}")?;
        }
        writeln!(f, "  exports:")?;
        for e in &self.exports {
            writeln!(f, "    {e}")?;
        }
        if self.matches_world() {
            let unused: Vec<&str> = self
                .optional
                .iter()
                .filter(|i| !self.imports.contains(i))
                .map(String::as_str)
                .collect();
            writeln!(
                f,
                "  the imports are the world's: all {} it requires, nothing it does not declare",
                self.required.len()
            )?;
            if !unused.is_empty() {
                writeln!(
                    f,
                    "  not imported, used only by the exports' types: {}",
                    unused.join(", ")
                )?;
            }
            return Ok(());
        }
        if self.required.is_empty() {
            writeln!(f, "  NO WORLD KNOWN FOR THIS COMPONENT (build.rs)")?;
        }
        let unexpected = self.unexpected_imports();
        if !unexpected.is_empty() {
            writeln!(
                f,
                "  IMPORTED BUT NOT IN THE WORLD: {}",
                unexpected.join(", ")
            )?;
        }
        let missing = self.missing_imports();
        if !missing.is_empty() {
            writeln!(
                f,
                "  REQUIRED BY THE WORLD BUT NOT IMPORTED: {}",
                missing.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Inspects the embedded `component` against its world.
///
/// # Errors
/// The component does not compile.
pub fn inspect(component: Embedded) -> Result<Report> {
    let (required, optional) = component.world_imports();
    report(component.world(), component.bytes(), required, optional)
}

/// Inspects the component `bytes` against the import names the world `world` requires and those it
/// allows besides.
///
/// # Errors
/// The component does not compile.
pub fn report(world: &str, bytes: &[u8], required: &[&str], optional: &[&str]) -> Result<Report> {
    let engine = Engine::default();
    let component = Component::new(&engine, bytes)?;
    let ty = component.component_type();
    let mut imports: Vec<String> = ty
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let sorted = |names: &[&str]| {
        let mut names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
        names.sort();
        names
    };
    imports.sort();
    exports.sort();
    Ok(Report {
        world: world.to_owned(),
        size: bytes.len(),
        imports,
        exports,
        required: sorted(required),
        optional: sorted(optional),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_components_import_what_their_worlds_require() {
        for component in Embedded::ALL {
            let report = inspect(component).unwrap();
            assert!(report.matches_world(), "{report}");
            assert!(report.to_string().contains("the imports are the world's"));
        }
        // The plugin world requires its own six imports; http-app adds only what its export uses.
        let (required, _) = Embedded::Plugin.world_imports();
        assert_eq!(required.len(), 6, "{required:?}");
        assert_eq!(Embedded::HttpApp.world_imports().0, required);
    }

    #[test]
    fn an_import_outside_the_world_fails() {
        // The http-app component against the plugin world: it imports wasi:http and wasi:io, which
        // the plugin world does not declare.
        let (required, optional) = Embedded::Plugin.world_imports();
        let report = report("plugin", Embedded::HttpApp.bytes(), required, optional).unwrap();
        assert!(!report.matches_world());
        let unexpected = report.unexpected_imports();
        assert!(
            unexpected.iter().any(|i| i.starts_with("wasi:http/types@")),
            "{report}"
        );
        assert!(
            unexpected.iter().any(|i| i.starts_with("wasi:io/streams@")),
            "{report}"
        );
        assert!(report.missing_imports().is_empty(), "{report}");
        let text = report.to_string();
        assert!(text.contains("IMPORTED BUT NOT IN THE WORLD: "), "{text}");
        assert!(!text.contains("the imports are the world's"), "{text}");
    }

    #[test]
    fn a_required_import_the_component_lacks_fails() {
        // A world that also requires wasi:cli/environment, which the plugin does not import (the
        // wasip2 build did).
        let (required, optional) = Embedded::Plugin.world_imports();
        let mut more = required.to_vec();
        more.push("wasi:cli/environment@0.2.6");
        let report = report("plugin+", Embedded::Plugin.bytes(), &more, optional).unwrap();
        assert!(!report.matches_world());
        assert!(report.unexpected_imports().is_empty(), "{report}");
        assert_eq!(report.missing_imports(), ["wasi:cli/environment@0.2.6"]);
        assert!(
            report
                .to_string()
                .contains("REQUIRED BY THE WORLD BUT NOT IMPORTED: wasi:cli/environment@0.2.6"),
            "{report}"
        );
        // And no world at all is a failure, not a pass.
        let unknown = super::report("none", Embedded::Plugin.bytes(), &[], &[]).unwrap();
        assert!(!unknown.matches_world());
        assert!(unknown.to_string().contains("NO WORLD KNOWN"), "{unknown}");
    }
}
