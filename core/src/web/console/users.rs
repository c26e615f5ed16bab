//! The console's users screen (to be written).

use rand_core::CryptoRng;

use super::super::hosted::{WebRequest, WebResponse};
use crate::engine::Engine;
use crate::kernel::error::Result;
use crate::kernel::time::Timestamp;

impl Engine<'_> {
    pub(super) fn users_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        Ok(screen.message(404, "not-found", &screen.look.t.title, &screen.look.t.not_found))
    }
    pub(super) fn user_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        Ok(screen.message(404, "not-found", &screen.look.t.title, &screen.look.t.not_found))
    }
    pub(super) fn user_post<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        Ok(screen.message(404, "not-found", &screen.look.t.title, &screen.look.t.not_found))
    }
}
