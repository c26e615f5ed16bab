//! The second factor, page by page: `GET /prompt/step` decides and sends the email, the code page
//! takes the code (`POST /prompt/verify`), asks for it again (`/prompt/resend`) or gives up
//! (`/prompt/cancel`), and a passed or refused step returns to the IdP with a signed result.
//!
//! Every decision is the login step's ([`crate::login`]); these handlers only turn its answers into
//! pages. A locked user is remembered in the session, so its way back is `denied`; a throttled one
//! is told when, with `Retry-After`. A device cookie the login rotated always reaches the browser,
//! even when what follows fails, or its next visit would be taken for a replay.

use rand_core::CryptoRng;

use super::session::{Passed, Session, session_cookie};
use super::ui::{CodeView, fill, with_retry_after};
use super::{Ctx, WebResponse, field};
use crate::email::i18n;
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{Decision, Purpose};
use crate::web::prompt::{PromptOutcome, PromptPurpose, Verdict};

impl Engine<'_> {
    /// `GET /prompt/step`: decide, send the email if a code is needed, show the page.
    pub(super) fn step<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_some() {
            return Ok(WebResponse::redirect("/prompt/devices"));
        }
        if s.denied {
            return Ok(self.locked_page(c, s, None));
        }
        if let Some(challenge) = &s.challenge
            && c.now <= challenge.expires_at
        {
            return self.code_page(c, s, 200, None, None);
        }
        let login = c.login(s);
        match self.begin(&login, c.now, rng)? {
            Decision::Allow(allowed) => {
                let via = match allowed.why.rule.as_str() {
                    "device:trusted" => "trusted-device",
                    "enrollment:grace" => "grace",
                    _ => "not-required",
                };
                let passed = Passed {
                    via: via.to_owned(),
                    amr: allowed.amr,
                };
                self.passed(c, s, passed, allowed.set_cookie, rng)
            }
            Decision::Deny(denied) => {
                s.denied = true;
                self.put_session(&c.key, s)?;
                Ok(self.locked_page(c, s, Some(&denied.why.message)))
            }
            Decision::Challenge(challenge) => {
                match self.send_code(&login, &challenge.challenge_id, c.now, rng) {
                    Ok(_) => {
                        s.challenge = Some(challenge);
                        self.put_session(&c.key, s)?;
                        self.code_page(c, s, 200, None, None)
                    }
                    Err(Error::Throttled { retry_after }) => {
                        let until = c.now.plus(i64::from(retry_after));
                        let body = c.ui.when(&c.ui.t.throttled_body, c.now, until);
                        let page = c.ui.status(
                            429,
                            "throttled",
                            &c.ui.t.throttled_heading,
                            &body,
                            Some(&s.csrf),
                            true,
                        );
                        Ok(with_retry_after(page, retry_after))
                    }
                    Err(Error::Locked) => self.lock_out(c, s),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The second factor is done: back to the IdP, or on to the devices page.
    pub(super) fn passed<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        passed: Passed,
        device_cookie: Option<String>,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let next = match s.request.purpose {
            PromptPurpose::Devices => {
                s.challenge = None;
                s.passed = Some(passed);
                self.put_session(&c.key, s)
                    .map(|()| WebResponse::redirect("/prompt/devices"))
            }
            PromptPurpose::Login => self.finish(c, s, PromptOutcome::Success, &passed, rng),
        };
        // The device's token may have been rotated already: whatever happens next, this browser
        // must get its new cookie, or its next visit would present a retired token and be taken
        // for a thief. A failure here lets nobody through; it is the "try again" page.
        Ok(next
            .unwrap_or_else(|_| c.ui.unavailable())
            .with_cookie(device_cookie))
    }

    /// Ends the session and sends the browser back with the signed outcome.
    pub(super) fn finish<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &Session,
        outcome: PromptOutcome,
        passed: &Passed,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let verdict = Verdict {
            outcome,
            via: passed.via.clone(),
            amr: passed.amr.clone(),
        };
        let url = self.prompt_result(c.config, &s.request, &verdict, c.now, rng)?;
        self.store.delete(&c.key).map_err(Error::store)?;
        Ok(WebResponse::redirect(&url).with_cookie(Some(session_cookie("", 0))))
    }

    /// The user is locked: the session remembers it (its way back is `denied`), and says so.
    pub(super) fn lock_out(&self, c: &Ctx<'_>, s: &mut Session) -> Result<WebResponse> {
        s.denied = true;
        self.put_session(&c.key, s)?;
        Ok(self.locked_page(c, s, None))
    }

    pub(super) fn locked_page(&self, c: &Ctx<'_>, s: &Session, why: Option<&str>) -> WebResponse {
        let body = why.map_or_else(|| i18n::messages(c.ui.lang).explain.locked, str::to_owned);
        c.ui.status(
            423,
            "locked",
            &c.ui.t.locked_heading,
            &body,
            Some(&s.csrf),
            false,
        )
    }

    /// The code page (or the enrollment page: the same form, another heading).
    pub(super) fn code_page(
        &self,
        c: &Ctx<'_>,
        s: &Session,
        status: u16,
        error: Option<String>,
        notice: Option<String>,
    ) -> Result<WebResponse> {
        let Some(challenge) = &s.challenge else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        let t = &c.ui.t;
        let policy = self.org_policy(&s.request.org_id)?;
        let settings = self.scoped(&policy).settings;
        let digits = settings.code_digits;
        let digits_text = digits.to_string();
        let user = self.status_of(&s.request.org_id, &s.request.user_id, c.now)?;
        let resend_wait = (user.sends_left == 0)
            .then_some(user.next_send_at)
            .flatten()
            .map(|at| c.ui.when(&t.resend_wait, c.now, at));
        let heading = match challenge.purpose {
            Purpose::Login => t.code_heading.clone(),
            Purpose::Enrollment | Purpose::EmailChange => t.enroll_heading.clone(),
        };
        let view = CodeView {
            heading: heading.clone(),
            sent_to: fill(
                &t.sent_to,
                &[("digits", &digits_text), ("email", &challenge.masked_email)],
            ),
            why_label: t.why_label.clone(),
            why: challenge.why.message.clone(),
            label: t.code_label.clone(),
            hint: fill(&t.code_hint, &[("digits", &digits_text)]),
            digits,
            error,
            notice,
            csrf: s.csrf.clone(),
            remember: settings
                .allow_remember_device
                .then(|| fill(&t.remember, &[("days", &settings.trust_days.to_string())])),
            remember_hint: t.remember_hint.clone(),
            verify: t.verify.clone(),
            resend: t.resend.clone(),
            resend_wait,
            cancel: t.cancel.clone(),
        };
        // An error is in the title too: it is the first thing a screen reader says.
        let title = match &view.error {
            Some(_) => format!("{}: {heading}", t.error_title),
            None => heading,
        };
        Ok(c.ui.page(status, &title, |p| p.code = Some(view)))
    }

    /// `POST /prompt/verify`.
    pub(super) fn verify_form<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let Some(challenge) = s.challenge.clone() else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        // People paste codes with spaces, non-breaking spaces or dashes in them (WCAG 3.3.8).
        let code: String = field(c.req.form, "code")
            .unwrap_or_default()
            .chars()
            .filter(|ch| !ch.is_whitespace() && *ch != '-')
            .collect();
        let remember = field(c.req.form, "remember").is_some_and(|v| v == "on");
        let login = c.login(s);
        let t = &c.ui.t;
        let org = self.branding_of(&s.request.org_id)?.display_name;
        match self.verify(&login, &challenge.challenge_id, &code, remember, c.now, rng) {
            Ok(verified) => {
                let passed = Passed {
                    via: "code".to_owned(),
                    amr: verified.amr,
                };
                self.passed(c, s, passed, verified.set_cookie, rng)
            }
            Err(Error::Rejected) => {
                let error = fill(&t.wrong_code, &[("org", &org)]);
                self.code_page(c, s, 200, Some(error), None)
            }
            Err(Error::InvalidInput { field: "code", .. }) => {
                let digits = self
                    .scoped(&self.org_policy(&s.request.org_id)?)
                    .settings
                    .code_digits
                    .to_string();
                let error = fill(&t.bad_format, &[("digits", &digits)]);
                self.code_page(c, s, 200, Some(error), None)
            }
            Err(Error::Throttled { retry_after }) => {
                let until = c.now.plus(i64::from(retry_after));
                let error = fill(&t.slow_down, &[("until", &c.ui.clock(until))]);
                Ok(with_retry_after(
                    self.code_page(c, s, 429, Some(error), None)?,
                    retry_after,
                ))
            }
            Err(Error::Locked) => self.lock_out(c, s),
            Err(e) => Err(e),
        }
    }

    /// `POST /prompt/resend`: the same code again while it lives, a new one after.
    pub(super) fn resend<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let Some(challenge) = s.challenge.clone() else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        let login = c.login(s);
        let t = &c.ui.t;
        match self.send_code(&login, &challenge.challenge_id, c.now, rng) {
            Ok(sent) => {
                let notice = if sent.resent {
                    t.resent_same.clone()
                } else {
                    t.sent_new.clone()
                };
                self.code_page(c, s, 200, None, Some(notice))
            }
            Err(Error::Throttled { retry_after }) => {
                let until = c.now.plus(i64::from(retry_after));
                let notice = c.ui.when(&t.resend_wait, c.now, until);
                // The page's own line under the button says when, unless the window is not spent.
                let status = self.status_of(&s.request.org_id, &s.request.user_id, c.now)?;
                let notice = (status.sends_left > 0).then_some(notice);
                Ok(with_retry_after(
                    self.code_page(c, s, 429, None, notice)?,
                    retry_after,
                ))
            }
            Err(Error::Locked) => self.lock_out(c, s),
            Err(Error::Rejected) => {
                // The challenge lapsed: start the step again.
                s.challenge = None;
                self.put_session(&c.key, s)?;
                Ok(WebResponse::redirect("/prompt/step"))
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /prompt/cancel`: back to the IdP, `denied` for a locked user, else `cancelled`.
    pub(super) fn cancel<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let (outcome, via) = if s.denied {
            (PromptOutcome::Denied, "locked")
        } else {
            (PromptOutcome::Cancelled, "cancelled")
        };
        let passed = Passed {
            via: via.to_owned(),
            amr: Vec::new(),
        };
        self.finish(c, s, outcome, &passed, rng)
    }
}
