//! Builds the engine for one call: the key and limits from the `config` import, the time from
//! `wasi:clocks/wall-clock`, randomness from `wasi:random`. Shared by the function exports and the
//! HTTP API, so that both take exactly the same path into the core.

use mfa_step_core::{Engine, Error, HmacKey, Result, Settings, Timestamp};

use crate::bindings::mfa_step::plugin::config;
use crate::bindings::wasi::clocks::wall_clock;
use crate::ports::{WasiRng, WitAudit, WitMailer, WitStore};

/// The current time, from the host's wall clock (a test clock under the test harness).
pub(crate) fn now() -> Timestamp {
    Timestamp(i64::try_from(wall_clock::now().seconds).unwrap_or(i64::MAX))
}

/// A setting from the host.
pub(crate) fn setting(name: &str) -> Option<String> {
    config::get(name)
}

/// Runs `f` with an engine over the host's imports, the current time and the host's CSPRNG, then
/// ends the call's unit of work (`store.commit`) before its answer is given.
pub(crate) fn with_engine<T>(
    f: impl FnOnce(&Engine<'_>, Timestamp, &mut WasiRng) -> Result<T>,
) -> Result<T> {
    let key = HmacKey::from_hex(&setting("hmac_key").ok_or_else(|| {
        Error::Misconfigured(
            "hmac_key is not set: the host must provide a key of at least 32 bytes in hex"
                .to_owned(),
        )
    })?)?;
    let settings = Settings::from_lookup(setting)?;
    let engine = Engine {
        store: &WitStore,
        mailer: &WitMailer,
        audit: &WitAudit,
        settings,
        key: &key,
    };
    let result = f(&engine, now(), &mut WasiRng);
    engine.end_call(result)
}
