//! The trusted-browser pages of a `devices` session: after the second factor, the user sees their
//! trusted browsers (`GET /prompt/devices`), revokes one or all, and returns (`POST /prompt/done`).
//!
//! Each page first checks that the session passed the second factor; until then it sends the
//! browser to the step. Revoking the browser's own device also clears its cookie, and a device id
//! that is not the user's is refused by the engine exactly like an unknown one.

use rand_core::CryptoRng;

use super::session::{Notice, Session, clear_device_cookie};
use super::ui::{DeviceRow, DevicesView, fill};
use super::{Ctx, WebResponse, field};
use crate::devices;
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::web::prompt::PromptOutcome;

impl Engine<'_> {
    /// `GET /prompt/devices`: the user's trusted browsers, after the second factor.
    pub(super) fn devices_page<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        _rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_none() {
            return Ok(WebResponse::redirect("/prompt/step"));
        }
        let t = &c.ui.t;
        let current = c
            .device_cookie()
            .and_then(devices::parse_cookie)
            .map(|p| p.device_id);
        let rows = self
            .list_devices(&c.actor(s), c.now)?
            .into_iter()
            .map(|d| DeviceRow {
                current: current.as_deref() == Some(d.device_id.as_str()),
                until: fill(&t.device_until, &[("until", &d.expires_at.date())]),
                used: fill(
                    &t.device_used,
                    &[
                        ("when", &d.last_used_at.date()),
                        ("network", &d.last_network),
                    ],
                ),
                revoke_label: fill(
                    &t.revoke_label,
                    &[("label", &d.label), ("until", &d.expires_at.date())],
                ),
                id: d.device_id,
                label: d.label,
            })
            .collect();
        let notice = s.notice.take();
        if notice.is_some() {
            self.put_session(&c.key, s)?;
        }
        let view = DevicesView {
            heading: t.devices_heading.clone(),
            intro: t.devices_intro.clone(),
            none: t.devices_none.clone(),
            notice: notice.map(|Notice::Revoked| t.revoked.clone()),
            csrf: s.csrf.clone(),
            rows,
            current_label: t.device_current.clone(),
            revoke: t.revoke.clone(),
            revoke_all: t.revoke_all.clone(),
            done: t.done.clone(),
        };
        Ok(c.ui.page(200, &t.devices_heading, |p| p.devices = Some(view)))
    }

    /// `POST /prompt/devices/revoke`.
    pub(super) fn revoke<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_none() {
            return Ok(WebResponse::redirect("/prompt/step"));
        }
        let device_id = field(c.req.form, "device_id").unwrap_or_default();
        match self.revoke_device(&c.actor(s), &device_id, c.now, rng) {
            Ok(()) => {
                s.notice = Some(Notice::Revoked);
                self.put_session(&c.key, s)?;
            }
            // Already gone, or never this user's: the list shows what is left.
            Err(Error::Forbidden(_) | Error::InvalidInput { .. }) => {}
            Err(e) => return Err(e),
        }
        let this_browser = c
            .device_cookie()
            .and_then(devices::parse_cookie)
            .is_some_and(|p| p.device_id == device_id.to_ascii_lowercase());
        Ok(WebResponse::redirect("/prompt/devices")
            .with_cookie(this_browser.then(clear_device_cookie)))
    }

    /// `POST /prompt/devices/revoke-all`.
    pub(super) fn revoke_all<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_none() {
            return Ok(WebResponse::redirect("/prompt/step"));
        }
        self.revoke_all_devices(&c.actor(s), c.now, rng)?;
        s.notice = Some(Notice::Revoked);
        self.put_session(&c.key, s)?;
        Ok(WebResponse::redirect("/prompt/devices").with_cookie(Some(clear_device_cookie())))
    }

    /// `POST /prompt/done`: back to the IdP after managing devices.
    pub(super) fn done<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let Some(passed) = s.passed.clone() else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        self.finish(c, s, PromptOutcome::Success, &passed, rng)
    }
}
