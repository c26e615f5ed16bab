//! Loading and running the component. One [`Runtime`] compiles the component once, links it once
//! (`InstancePre`, pooling allocator) and then gives every call a fresh `Store` and instance, so that
//! no state survives in the instance between requests: all state lives in the host's store.
//!
//! Compiling the component with cranelift takes about a second in a release build (much longer in
//! a debug one), so the compiled code is kept in wasmtime's own compilation cache, keyed by the
//! component's bytes, the engine's settings and wasmtime's version: every start after the first is
//! a cache hit (a few milliseconds), for `serve`, the CLI, the tests and the benchmarks alike. The
//! cache lives in `$MFA_STEP_COMPILE_CACHE`, else `$XDG_CACHE_HOME/mfa-step`, else
//! `~/.cache/mfa-step`, in a folder only its owner may open (whoever can write compiled code there
//! can run it in this process); `MFA_STEP_COMPILE_CACHE=off` turns it off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::error::Context as _;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime::{Result, bail, format_err};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::bindings::mfa_step::plugin::{audit, config, mailer, store, types};
use crate::bindings::{Plugin, PluginPre};
use crate::host::{Backends, HostState};

/// The component built for the `plugin` world (function exports only, no wasi:http).
pub const PLUGIN_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mfa_step_plugin.wasm"));
/// The component built for the `http-app` world (function exports plus the REST API).
pub const HTTP_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mfa_step_http.wasm"));
/// The host conformance kit (world `conformance`, `wit/conformance.wit`; run by
/// [`crate::conformance`]).
pub const CONFORMANCE_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mfa_step_conformance.wasm"));

/// Which world a runtime loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `plugin`: what an IdP host loads; linked without wasi:http to prove it needs none.
    Plugin,
    /// `http-app`: what `serve` and Spin run.
    HttpApp,
}

/// A compiled, linked component, ready to instantiate per call.
pub struct Runtime {
    engine: Engine,
    plugin: PluginPre<HostState>,
    proxy: Option<ProxyPre<HostState>>,
}

/// The environment variable naming the compilation cache's folder, or `off`.
pub const COMPILE_CACHE_ENV: &str = "MFA_STEP_COMPILE_CACHE";

/// Where the compilation cache lives, or `None` when it is turned off or no home folder is known.
#[must_use]
pub fn compile_cache_dir() -> Option<PathBuf> {
    match std::env::var_os(COMPILE_CACHE_ENV) {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
            .map(|base| base.join("mfa-step")),
    }
}

/// Opens the compilation cache in `dir`, creating the folder with mode 0700. A cache that cannot be
/// opened is skipped with a warning: it only saves time.
fn compile_cache(dir: &Path) -> Option<Cache> {
    let opened = std::path::absolute(dir)
        .map_err(anyhow::Error::from)
        .and_then(|dir| {
            private_dir(&dir)?;
            let mut config = CacheConfig::new();
            config.with_directory(&dir);
            Cache::new(config).map_err(|e| anyhow::anyhow!("{e:#}"))
        });
    match opened {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "the compilation cache is off: it cannot be opened");
            None
        }
    }
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is open to others (mode {:o}); chmod 700 it",
            dir.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// How many component instances live at once (the pooling allocator's slots): a request past it
/// fails to instantiate.
pub const INSTANCE_CAPACITY: u32 = 256;

/// How much of each instance's memory is reset in place rather than unmapped, when its slot is
/// given back.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine configuration: async (wasi:http needs it), the pooling allocator sized for a small
/// server, the compilation cache, and nothing else beyond defaults.
pub(crate) fn engine() -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(INSTANCE_CAPACITY)
        .total_memories(INSTANCE_CAPACITY)
        .total_tables(2 * INSTANCE_CAPACITY)
        .max_memory_size(64 << 20)
        .total_stacks(INSTANCE_CAPACITY)
        // A request's instance dirties a few hundred KiB of its memory. Resetting a slot with
        // `madvise` unmapped those pages, which cost a TLB shootdown on the other cores and page
        // faults on the next use (about a fifth of a loaded server's CPU, BENCHMARKS.md); with
        // PAGEMAP_SCAN (Linux 6.7+) only the dirty pages are copied back from the image and the
        // slot stays mapped. Elsewhere the low KEEP_RESIDENT bytes are reset with memset.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .cache(compile_cache_dir().as_deref().and_then(compile_cache));
    Engine::new(&config)
}

/// Links the component's own interfaces: `store`, `mailer`, `audit`, `config` (and `types`, empty).
pub(crate) fn add_mfa_step_imports(linker: &mut Linker<HostState>) -> Result<()> {
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    mailer::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    audit::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

impl Runtime {
    /// Compiles and links the component for `world`.
    ///
    /// # Errors
    /// The engine cannot be built, or the component does not compile or link (a component whose
    /// imports are not the WIT package's own plus WASI fails here).
    pub fn new(world: World) -> Result<Self> {
        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        add_mfa_step_imports(&mut linker)?;
        match world {
            World::Plugin => {
                let component =
                    Component::new(&engine, PLUGIN_WASM).context("compile the plugin component")?;
                let pre = linker
                    .instantiate_pre(&component)
                    .context("link the plugin component")?;
                Ok(Self {
                    plugin: PluginPre::new(pre)?,
                    proxy: None,
                    engine,
                })
            }
            World::HttpApp => {
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
                let component =
                    Component::new(&engine, HTTP_WASM).context("compile the http-app component")?;
                let pre: InstancePre<HostState> = linker
                    .instantiate_pre(&component)
                    .context("link the http-app component")?;
                Ok(Self {
                    plugin: PluginPre::new(pre.clone())?,
                    proxy: Some(ProxyPre::new(pre)?),
                    engine,
                })
            }
        }
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A fresh instance over `backends`, for calling the function exports.
    ///
    /// # Errors
    /// Instantiation failed (out of pooled slots, or a trap in start-up).
    pub async fn instantiate(&self, backends: &Backends) -> Result<(Store<HostState>, Plugin)> {
        let mut store = Store::new(&self.engine, HostState::new(backends.clone()));
        let plugin = self.plugin.instantiate_async(&mut store).await?;
        Ok((store, plugin))
    }

    /// Serves one HTTP request with a fresh instance of the `http-app` component.
    ///
    /// # Errors
    /// This runtime was built for the `plugin` world, or the component trapped or never answered.
    pub async fn handle<B>(
        self: &Arc<Self>,
        backends: &Backends,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Some(proxy) = self.proxy.clone() else {
            bail!("this runtime loads the plugin world, which has no HTTP export");
        };
        let mut store = Store::new(&self.engine, HostState::new(backends.clone()));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let task = tokio::task::spawn(async move {
            let instance = proxy.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(format_err!(
                "the component answered with an HTTP error: {e:?}"
            )),
            Err(_) => {
                let cause = match task.await {
                    Ok(Ok(())) => format_err!("the component returned without answering"),
                    Ok(Err(e)) => e,
                    Err(e) => e.into(),
                };
                Err(cause.context("the component did not answer the request"))
            }
        }
    }
}
