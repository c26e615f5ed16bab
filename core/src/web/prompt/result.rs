//! The result (mfa-step → browser → `return_to?result=<jwt>`): the outcome, signed with the shared
//! key, bound to the request's nonce, valid for [`RESULT_LIFETIME`] seconds and carrying a fresh
//! `jti` so the IdP can accept it once.

use rand_core::CryptoRng;
use serde::Serialize;

use super::{AUDIENCE, PromptConfig, PromptOutcome, PromptRequest, RESULT_LIFETIME, Verdict};
use crate::engine::Engine;
#[cfg(doc)]
use crate::kernel::error::Error; // named by the `# Errors` docs
use crate::kernel::error::Result;
use crate::kernel::random;
use crate::kernel::time::Timestamp;

#[derive(Serialize)]
struct ResultClaims<'a> {
    iss: &'static str,
    aud: &'a str,
    sub: &'a str,
    org: &'a str,
    outcome: PromptOutcome,
    via: &'a str,
    amr: &'a [String],
    auth_time: i64,
    nonce: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

impl Engine<'_> {
    /// The URL that returns the browser to the IdP with the signed outcome.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] if the claims cannot be serialized (never, for these types).
    pub fn prompt_result<R: CryptoRng + ?Sized>(
        &self,
        config: &PromptConfig,
        request: &PromptRequest,
        verdict: &Verdict,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<String> {
        let token = config.sign(&ResultClaims {
            iss: AUDIENCE,
            aud: &config.client_id,
            sub: request
                .as_sent
                .as_ref()
                .map_or(&request.user_id, |(sub, _)| sub),
            org: request
                .as_sent
                .as_ref()
                .map_or(&request.org_id, |(_, org)| org),
            outcome: verdict.outcome,
            via: &verdict.via,
            amr: &verdict.amr,
            auth_time: now.0,
            nonce: &request.nonce,
            jti: random::new_id(rng),
            iat: now.0,
            exp: now.0 + RESULT_LIFETIME,
        })?;
        let separator = if request.return_to.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{separator}result={token}", request.return_to))
    }
}
