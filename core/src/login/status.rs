//! `status`: where a user stands (enrolled, locked, the live challenge, the emails left), read
//! without changing anything. Administration and the hosted pages read the same state through
//! [`Engine::status_of`], so all three agree.

use crate::engine::Engine;
use crate::engine::record::Who;
#[cfg(doc)]
use crate::kernel::error::Error; // named by the `# Errors` docs
use crate::kernel::error::Result;
use crate::kernel::model::{LoginContext, UserStatus};
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};

impl Engine<'_> {
    /// The user's MFA state.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]; [`Error::Store`].
    pub fn status(&self, ctx: &LoginContext, now: Timestamp) -> Result<UserStatus> {
        let ctx = self.canonical_context(ctx);
        let ctx = ctx.as_ref();
        input::login_context(ctx)?;
        self.status_of(&ctx.org_id, &ctx.user_id, now)
    }

    /// The MFA state of `user` in `org` (validated identifiers).
    pub(crate) fn status_of(&self, org: &str, user: &str, now: Timestamp) -> Result<UserStatus> {
        let who = Who {
            org,
            user,
            ip: String::new(),
            user_agent: "",
        };
        let state = self.guess_state(&who, now)?;
        let challenge = self
            .load_challenge(&keys::challenge(who.org, who.user))?
            .filter(|c| now <= c.expires_at);
        let window = self.settings.send_window_seconds;
        let sent = self
            .store
            .increment(&keys::sends(who.org, who.user), 0, None)
            .map_err(crate::kernel::error::Error::store)?;
        let room = self.send_room(who.org, who.user, sent)?;
        Ok(UserStatus {
            enrolled: self.enrollment_of(who.org, who.user)?.is_some(),
            locked: state.locked(),
            consecutive_failures: u32::try_from(state.failures.max(0)).unwrap_or(u32::MAX),
            verify_blocked_until: state.wait_until(now),
            active_challenge: challenge.as_ref().map(|c| c.id.clone()),
            code_expires_at: challenge
                .as_ref()
                .and_then(|c| c.code.as_ref())
                .map(|c| c.expires_at)
                .filter(|t| now <= *t),
            sends_left: room.left(window, now),
            next_send_at: room.full_until(window, now),
        })
    }
}
