//! Where `serve` finds its secrets and settings. The two secrets (`hmac_key`, `api_key`) come from
//! the environment (`MFA_STEP_HMAC_KEY`, `MFA_STEP_API_KEY`) or from files in the data directory,
//! which are created on first run with 32 random bytes and mode 0600. Other settings come from
//! `MFA_STEP_<NAME>` variables (e.g. `MFA_STEP_CODE_TTL_SECONDS`); the component checks their bounds.
//! Secrets are never logged: the log names the file, not its contents.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

use crate::host::Config;

/// Settings the component knows (see `wit/config.wit`), other than the secrets.
pub const SETTINGS: [&str; 10] = [
    "code_ttl_seconds",
    "code_digits",
    "sends_per_window",
    "send_window_seconds",
    "challenge_ttl_seconds",
    "trust_days",
    "allow_remember_device",
    "ipv4_change_prefix",
    "ipv6_change_prefix",
    "required_roles",
];

/// Reads a secret from `env`, else from `dir/file`, creating the file with a fresh random key.
///
/// # Errors
/// The file cannot be read or created, or the machine's CSPRNG failed.
pub fn secret(env: &str, dir: &Path, file: &str) -> Result<Zeroizing<String>> {
    if let Ok(value) = std::env::var(env)
        && !value.trim().is_empty()
    {
        return Ok(Zeroizing::new(value.trim().to_owned()));
    }
    let path = dir.join(file);
    if path.exists() {
        let value = Zeroizing::new(
            fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
        );
        return Ok(Zeroizing::new(value.trim().to_owned()));
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(bytes.as_mut())
        .map_err(|e| anyhow::anyhow!("the operating system's CSPRNG failed: {e}"))?;
    let value = Zeroizing::new(hex::encode(bytes.as_ref()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    f.sync_all()?;
    tracing::info!(file = %path.display(), "created a new random key (set {env} to use your own)");
    Ok(value)
}

/// The host key `serve` uses, for tools that read what it wrote (the audit seal key derives from
/// it). Unlike [`secret`], never creates one.
///
/// # Errors
/// Neither `MFA_STEP_HMAC_KEY` nor `<data_dir>/hmac.key` holds a valid key.
pub fn existing_hmac_key(data_dir: &Path) -> Result<mfa_step_core::HmacKey> {
    let path = data_dir.join("hmac.key");
    let value = match std::env::var("MFA_STEP_HMAC_KEY") {
        Ok(v) if !v.trim().is_empty() => Zeroizing::new(v),
        _ => Zeroizing::new(fs::read_to_string(&path).with_context(|| {
            format!(
                "read the key at {} (or set MFA_STEP_HMAC_KEY; or pass --no-seal to check the chain alone)",
                path.display()
            )
        })?),
    };
    mfa_step_core::HmacKey::from_hex(value.trim()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The component's config for `serve`: the two secrets plus any `MFA_STEP_<NAME>` settings.
///
/// # Errors
/// A secret cannot be read or created.
pub fn component_config(data_dir: &Path) -> Result<Config> {
    let hmac = secret("MFA_STEP_HMAC_KEY", data_dir, "hmac.key")?;
    let api = secret("MFA_STEP_API_KEY", data_dir, "api.key")?;
    let mut pairs: Vec<(String, String)> = vec![
        ("hmac_key".to_owned(), hmac.as_str().to_owned()),
        ("api_key".to_owned(), api.as_str().to_owned()),
    ];
    for name in SETTINGS {
        if let Ok(value) = std::env::var(format!("MFA_STEP_{}", name.to_uppercase())) {
            pairs.push((name.to_owned(), value));
        }
    }
    Ok(Config::new(pairs))
}
