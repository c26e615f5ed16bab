//! Where `serve` finds its secrets and settings. The two secrets (`hmac_key`, `api_key`) come from
//! the environment (`MFA_STEP_HMAC_KEY`, `MFA_STEP_API_KEY`) or from files in the data directory,
//! which are created on first run with 32 random bytes and mode 0600. Other settings come from
//! `MFA_STEP_<NAME>` variables (e.g. `MFA_STEP_CODE_TTL_SECONDS`); the component checks their bounds.
//! The hosted prompt's key (`prompt_key`) comes from `MFA_STEP_PROMPT_KEY` only, and without it the
//! prompt is off, except under `serve --demo`, which also reads or creates `<data-dir>/prompt.key`
//! and points the prompt at the demo identity provider ([`DemoPrompt`]).
//! Secrets are never logged: the log names the file, not its contents.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context as _, Result};
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

use crate::host::Config;

/// Settings the component knows (see `wit/config.wit`), other than the secrets.
pub const SETTINGS: [&str; 13] = [
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
    "id_case",
    "prompt_client_id",
    "prompt_return_urls",
];
// Not `client_ip_header`: serve always passes the peer's address in the component's default
// header, which it overwrites on every request; naming another would trust one a client sends.

/// The environment variable holding the hosted prompt's shared key.
pub const PROMPT_KEY_ENV: &str = "MFA_STEP_PROMPT_KEY";
/// The demo identity provider's client id (`iss` of its requests, `aud` of the results).
pub const DEMO_CLIENT_ID: &str = "demo-idp";

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

/// The hosted prompt as `serve --demo` sets it up for the demo identity provider: the shared key,
/// the client id [`DEMO_CLIENT_ID`] and the return URLs on the address `serve` listens on.
pub struct DemoPrompt {
    /// The shared key, hex (as the component reads it).
    pub key_hex: Zeroizing<String>,
    /// Where the component may send browsers back: `http://127.0.0.1:<port>/demo/return`,
    /// `http://localhost:<port>/demo/return`, and the listen address's own when it is another
    /// loopback address the component accepts.
    pub return_urls: Vec<String>,
}

impl std::fmt::Debug for DemoPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoPrompt")
            .field("key_hex", &"<redacted>")
            .field("return_urls", &self.return_urls)
            .finish()
    }
}

impl DemoPrompt {
    /// Reads the prompt key from `MFA_STEP_PROMPT_KEY`, else `<data_dir>/prompt.key` (created like
    /// the other keys), and derives the return URLs from `listen`.
    ///
    /// # Errors
    /// The key cannot be read or created, or is not at least 32 bytes of hex.
    pub fn new(data_dir: &Path, listen: SocketAddr) -> Result<Self> {
        let key_hex = secret(PROMPT_KEY_ENV, data_dir, "prompt.key")?;
        if mfa_step_core::HmacKey::from_hex(&key_hex).is_err() {
            anyhow::bail!(
                "the prompt key ({PROMPT_KEY_ENV} or {}) must be at least 32 bytes in hex",
                data_dir.join("prompt.key").display()
            );
        }
        let port = listen.port();
        let mut return_urls = vec![
            format!("http://127.0.0.1:{port}/demo/return"),
            format!("http://localhost:{port}/demo/return"),
        ];
        let ip = listen.ip();
        if ip.is_loopback() && ip != IpAddr::V4(Ipv4Addr::LOCALHOST) {
            // Added only if the component's own rule for return URLs accepts it (today it takes
            // http:// for localhost and 127.0.0.1 only): one URL it refuses would turn the prompt off.
            let extra = format!("http://{listen}/demo/return");
            let mut candidate = return_urls.clone();
            candidate.push(extra.clone());
            let list = candidate.join(",");
            let accepted =
                mfa_step_core::web::prompt::PromptConfig::from_lookup(|name| match name {
                    "prompt_key" => Some(key_hex.as_str().to_owned()),
                    "prompt_client_id" => Some(DEMO_CLIENT_ID.to_owned()),
                    "prompt_return_urls" => Some(list.clone()),
                    _ => None,
                });
            if matches!(accepted, Ok(Some(_))) {
                return_urls = candidate;
            } else {
                tracing::warn!(
                    url = %extra,
                    "the hosted prompt accepts no http:// return URL on this address; browse the demo at 127.0.0.1 or localhost"
                );
            }
        }
        Ok(Self {
            key_hex,
            return_urls,
        })
    }
}

/// The component's config for `serve`: the two secrets plus any `MFA_STEP_<NAME>` settings, the
/// prompt key from `MFA_STEP_PROMPT_KEY`, and with `demo` the demo identity provider's prompt
/// settings (which take precedence over the environment's, so that the demo works as printed).
///
/// # Errors
/// A secret cannot be read or created.
pub fn component_config(data_dir: &Path, demo: Option<&DemoPrompt>) -> Result<Config> {
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
    match demo {
        Some(demo) => {
            pairs.retain(|(name, _)| name != "prompt_client_id" && name != "prompt_return_urls");
            pairs.push(("prompt_key".to_owned(), demo.key_hex.as_str().to_owned()));
            pairs.push(("prompt_client_id".to_owned(), DEMO_CLIENT_ID.to_owned()));
            pairs.push(("prompt_return_urls".to_owned(), demo.return_urls.join(",")));
        }
        None => {
            if let Ok(value) = std::env::var(PROMPT_KEY_ENV)
                && !value.trim().is_empty()
            {
                let value = Zeroizing::new(value);
                pairs.push(("prompt_key".to_owned(), value.trim().to_owned()));
            }
        }
    }
    Ok(Config::new(pairs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn accepted_by_the_component(prompt: &DemoPrompt) -> bool {
        let urls = prompt.return_urls.join(",");
        matches!(
            mfa_step_core::web::prompt::PromptConfig::from_lookup(|name| match name {
                "prompt_key" => Some(prompt.key_hex.as_str().to_owned()),
                "prompt_client_id" => Some(DEMO_CLIENT_ID.to_owned()),
                "prompt_return_urls" => Some(urls.clone()),
                _ => None,
            }),
            Ok(Some(_))
        )
    }

    #[test]
    fn the_demo_prompt_returns_to_the_listen_port_on_loopback_names() {
        let dir = tempfile::tempdir().unwrap();
        for listen in ["127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080"] {
            let prompt = DemoPrompt::new(dir.path(), listen.parse().unwrap()).unwrap();
            assert_eq!(
                prompt.return_urls[..2],
                [
                    "http://127.0.0.1:8080/demo/return",
                    "http://localhost:8080/demo/return"
                ],
                "{listen}"
            );
            // Whatever is added, the component must accept the list, or the prompt would be off.
            assert!(accepted_by_the_component(&prompt), "{listen}");
            assert!(!format!("{prompt:?}").contains(prompt.key_hex.as_str()));
        }
        // The key file is made once and kept.
        let first = std::fs::read_to_string(dir.path().join("prompt.key")).unwrap();
        let again = DemoPrompt::new(dir.path(), "127.0.0.1:9090".parse().unwrap()).unwrap();
        assert_eq!(again.key_hex.as_str(), first.trim());
        assert_eq!(again.return_urls.len(), 2);
    }
}
