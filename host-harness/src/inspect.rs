//! `mfa-step inspect`: what a host must supply and what it gets. Lists the component's imports and
//! exports per world, with its size, and names any import that is neither the WIT package's own
//! (`mfa-step:plugin/…`) nor WASI (`wasi:…`): a component with such an import could not be loaded by
//! the hosts this project promises to support.

use std::fmt;

use wasmtime::component::Component;
use wasmtime::{Engine, Result};

use crate::runtime::{HTTP_WASM, PLUGIN_WASM, World};

/// One world's imports and exports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The world.
    pub world: World,
    /// Size of the component in bytes.
    pub size: usize,
    /// Imported instance names, sorted.
    pub imports: Vec<String>,
    /// Exported instance names, sorted.
    pub exports: Vec<String>,
}

impl Report {
    /// Imports that are neither the package's own nor WASI.
    #[must_use]
    pub fn foreign_imports(&self) -> Vec<&str> {
        self.imports
            .iter()
            .map(String::as_str)
            .filter(|i| !i.starts_with("mfa-step:plugin/") && !i.starts_with("wasi:"))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.world {
            World::Plugin => "plugin",
            World::HttpApp => "http-app",
        };
        writeln!(f, "world {name}: {} bytes", self.size)?;
        writeln!(f, "  imports:")?;
        for i in &self.imports {
            writeln!(f, "    {i}")?;
        }
        writeln!(f, "  exports:")?;
        for e in &self.exports {
            writeln!(f, "    {e}")?;
        }
        let foreign = self.foreign_imports();
        if foreign.is_empty() {
            writeln!(
                f,
                "  only the mfa-step:plugin package and WASI are imported"
            )
        } else {
            writeln!(f, "  FOREIGN IMPORTS: {}", foreign.join(", "))
        }
    }
}

/// Inspects the embedded component for `world`.
///
/// # Errors
/// The component does not compile.
pub fn inspect(world: World) -> Result<Report> {
    let bytes = match world {
        World::Plugin => PLUGIN_WASM,
        World::HttpApp => HTTP_WASM,
    };
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
    imports.sort();
    exports.sort();
    Ok(Report {
        world,
        size: bytes.len(),
        imports,
        exports,
    })
}
