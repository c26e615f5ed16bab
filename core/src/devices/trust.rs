//! The engine's trusted-device flows: recognising a remembered browser at `begin`, remembering one
//! after a successful `verify`, and the owner's and admin's management calls. The rules themselves
//! (fingerprint, network, expiry, token matching) live in [`crate::devices`].
//!
//! It guarantees that a replayed (rotated-away) token revokes its device, with its record or not at
//! all, so a retry catches the replay again; that concurrent logins with one token agree on a single
//! rotation; that a user keeps at most [`devices::MAX_DEVICES`]; and that one user's device id
//! never reaches another's (a foreign id is refused exactly like an unknown one). A
//! [`DeviceCheck`] may carry a fresh `Set-Cookie` (a live token): its `Debug` never shows it.
//! Trust is judged with the limits of the engine it runs on: the login step hands it the
//! organization's policy of today (see [`crate::devices`]); a device that policy ends is revoked.
//!
//! ## A revoke is never undone by a concurrent write-back
//!
//! Three flows load a device and write it back: a trusted login's rotation (`check_device`), a
//! renewal after a verify (`trust_device`), and the undo of a rotation whose record failed
//! (`unrotate`). The store has no compare-and-swap, so a revoke can land between the load and the
//! write, and the write would bring the device back. Instead of preventing that write, the store
//! keeps a per-device revocation counter (`keys::device_epoch`, atomic `increment`) and every
//! device record carries the counter's value it was written under (`epoch`):
//!
//! - **revoke** (owner, revoke-all, `credential-changed`, `reset-user`, the device limit, a
//!   replayed token, today's policy) = `B`: increment the counter, then `D`: delete the record
//!   with its audit record. If the audit record is refused, the record is put back and the
//!   counter moved back by the same 1 (the revoke did not take effect; a retry revokes it).
//! - **a record counts** only while its `epoch` equals the counter (`E`, read after the load `L`).
//! - **a write-back** `W` copies the `epoch` of the record it loaded, then `C`: reads the counter
//!   again; if it moved, it deletes what it wrote and the device is not trusted.
//!
//! Every interleaving of a revoke (`B` before `D`) with a write-back (`L`, `E`, `W`, `C` in order):
//!
//! | revoke lands | the write-back sees | ends with |
//! |---|---|---|
//! | `B`, `D` before `L` | no record | absent: a code is asked |
//! | `B` before `L`, `D` after | `E` ≠ epoch | not trusted, nothing written; `D` deletes |
//! | `B` between `L` and `E` | `E` ≠ epoch | same |
//! | `B` between `E` and `W`, `D` before `W` | `W` puts the record back, `C` ≠ epoch | `C` deletes it; had that delete failed, the record's epoch is behind the counter for good, so it never counts |
//! | `B` between `E` and `W`, `D` after `W` | `C` ≠ epoch | `D` deleted the written record; not trusted |
//! | `B` between `W` and `C` | `C` ≠ epoch | deleted by `C` and by `D`; not trusted |
//! | `B` after `C` | nothing | the login finished before the revoke began and was let through; `D` deletes the rotated record, so its new cookie is dead |
//!
//! So after both finish no record of the device counts, and the racing login is let through only
//! if it completed before the revoke started. The counter only moves forward except for a revoke
//! giving back its own step when its audit record is refused; a device id is random and never
//! reused, and a new device starts at the counter of a never-revoked id (0), so no write can
//! produce a record whose epoch catches up with a revoke. The one outcome of a refused audit
//! record racing a write-back is that the device disappears without a `device_revoked` record
//! (`C` saw the step before it was given back): a code is asked, nothing is granted.
//! The counters are never deleted, only forgotten once they expire: a revocation's counter is kept
//! 30 days and 2 hours past the revoke, longer than any record a write-back could put back then
//! (a record is kept at most an hour past its trust, which ends at most 30 days after its write),
//! so a counter is never forgotten while a record it outdates is remembered.

use std::net::IpAddr;

use rand_core::CryptoRng;

use crate::audit::{Action, Event, Outcome};
use crate::devices::{self, Change, StoredDevice, TokenMatch};
use crate::engine::record::{EventExt, Who};
use crate::engine::{Engine, Stored};
use crate::kernel::authority::may_administer;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{Actor, CredentialChange, DeviceInfo, LoginContext};
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys, random};

/// What the browser's cookie amounts to at `begin`. `Trusted` may carry a rotated token in its
/// `Set-Cookie`: `Debug` shows whether there is one, never its value.
pub(crate) enum DeviceCheck {
    /// No cookie, a malformed one, or one of no device of this user.
    Absent,
    /// A trusted device vouches for the browser; `set_cookie` carries a rotated token, if rotated.
    /// `verified_at` is when the browser last passed a code.
    Trusted {
        device_id: String,
        expires_at: Timestamp,
        verified_at: Timestamp,
        set_cookie: Option<String>,
    },
    /// A device of this user, but something changed.
    Changed { device_id: String, change: Change },
    /// A rotated-away token: the device is revoked.
    Reused,
    /// The record the cookie names does not parse: no device (a code is asked), recorded.
    Unreadable { device_id: String },
}

impl std::fmt::Debug for DeviceCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => f.write_str("Absent"),
            Self::Trusted {
                device_id,
                expires_at,
                verified_at,
                set_cookie,
            } => f
                .debug_struct("Trusted")
                .field("device_id", device_id)
                .field("expires_at", expires_at)
                .field("verified_at", verified_at)
                .field("set_cookie", &set_cookie.as_ref().map(|_| "<redacted>"))
                .finish(),
            Self::Changed { device_id, change } => f
                .debug_struct("Changed")
                .field("device_id", device_id)
                .field("change", change)
                .finish(),
            Self::Reused => f.write_str("Reused"),
            Self::Unreadable { device_id } => f
                .debug_struct("Unreadable")
                .field("device_id", device_id)
                .finish(),
        }
    }
}

/// Settings that shape trust.
fn prefixes(engine: &Engine<'_>) -> (u8, u8) {
    (
        engine.settings.ipv4_change_prefix,
        engine.settings.ipv6_change_prefix,
    )
}

impl Engine<'_> {
    /// Recognises the browser's device at `begin`, judged with this engine's limits (the
    /// organization's policy of today). Writes only to rotate a token (with its audit record
    /// written by the caller), or to revoke a device (a replayed token; a device today's policy
    /// ends), each with its record.
    pub(crate) fn check_device<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        who: &Who<'_>,
        ip: IpAddr,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<DeviceCheck> {
        let Some(presented) = ctx.device.cookie.as_deref().and_then(devices::parse_cookie) else {
            return Ok(DeviceCheck::Absent);
        };
        let key = keys::device(who.org, who.user, &presented.device_id);
        // Absent is the restrictive answer for a device (a code is asked), so an unreadable record
        // is no device; the caller records it.
        let mut device = match self.load_stored::<StoredDevice>(&key)? {
            Stored::Absent => return Ok(DeviceCheck::Absent),
            Stored::Unreadable => {
                return Ok(DeviceCheck::Unreadable {
                    device_id: presented.device_id.clone(),
                });
            }
            Stored::Value(device) => device,
        };
        let mac = devices::token_mac(self.key, &presented.token);
        let matched = device.match_token(&mac, now);
        match matched {
            TokenMatch::Unknown => return Ok(DeviceCheck::Absent),
            TokenMatch::Reused => {
                // Revoked with its record or not at all, so that a retry catches the replay again.
                let event = who
                    .event(Action::DeviceTokenReuse, Outcome::Denied)
                    .reason("rotated-token-presented");
                self.revoke_at(who, &device.id, event.device(&device.id), now, rng)?;
                return Ok(DeviceCheck::Reused);
            }
            TokenMatch::Current | TokenMatch::Grace => {}
        }
        // `E`: a record whose epoch is behind its counter was revoked (a write-back raced it).
        if self.epoch_of(who, &device.id)? != device.epoch {
            return Ok(DeviceCheck::Absent);
        }
        let (v4, v6) = prefixes(self);
        let fp = devices::fingerprint(&ctx.device.traits);
        let until = match device.judge(&self.settings, &fp, &devices::network(ip, v4, v6), now) {
            Ok(until) => until,
            Err(change) => {
                if let Some(reason) = change.revokes() {
                    // Today's policy ends this trust for good: revoked, with the policy as reason.
                    let event = who
                        .event(Action::DeviceRevoked, Outcome::Success)
                        .reason(reason);
                    self.revoke_at(who, &device.id, event.device(&device.id), now, rng)?;
                }
                return Ok(DeviceCheck::Changed {
                    device_id: device.id,
                    change,
                });
            }
        };
        if matched == TokenMatch::Grace {
            // A parallel tab that raced the rotation: let it in, the other tab holds the new token.
            return Ok(DeviceCheck::Trusted {
                verified_at: device.verified_at(),
                device_id: device.id,
                expires_at: until,
                set_cookie: None,
            });
        }
        // One rotation per generation: concurrent logins with the same token agree on one winner.
        let rotation = keys::device_rotation(&device.id, device.generation);
        if self
            .store
            .increment(&rotation, 1, keys::guard_until(until))
            .map_err(Error::store)?
            != 1
        {
            return Ok(DeviceCheck::Trusted {
                verified_at: device.verified_at(),
                device_id: device.id,
                expires_at: until,
                set_cookie: None,
            });
        }
        let token = devices::new_token(rng);
        device.rotate(devices::token_mac(self.key, &token), now);
        device.last_used_at = now;
        // A shorter trust under today's policy is written down: the cookie and the list agree.
        device.expires_at = until;
        if !self.write_back(who, &key, &device)? {
            return Ok(DeviceCheck::Absent);
        }
        let max_age = i64::from(now.seconds_until(until));
        Ok(DeviceCheck::Trusted {
            set_cookie: Some(devices::set_cookie(&device.id, &token, max_age)),
            verified_at: device.verified_at(),
            device_id: device.id,
            expires_at: until,
        })
    }

    /// The device's revocation counter (`keys::device_epoch`). A counter that cannot be a record's
    /// epoch (negative) matches none.
    fn epoch_of(&self, who: &Who<'_>, device_id: &str) -> Result<u64> {
        let key = keys::device_epoch(who.org, who.user, device_id);
        let n = self.store.increment(&key, 0, None).map_err(Error::store)?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// `W` then `C`: writes a loaded device back, then reads its revocation counter again. If a
    /// revoke moved it since the load, takes the write back (best effort: the record's epoch is
    /// behind the counter for good, so it never counts anyway) and answers `false`.
    fn write_back(&self, who: &Who<'_>, key: &str, device: &StoredDevice) -> Result<bool> {
        self.put(key, device, keys::keep_until(device.expires_at))?;
        // `C` must come after `W` is visible to a revoke: a host holding the unit of work would
        // otherwise write `W` after `C`, and after the revoke's `D`.
        self.commit()?;
        if self.epoch_of(who, &device.id)? == device.epoch {
            return Ok(true);
        }
        let _ = self.store.delete(key);
        Ok(false)
    }

    /// `B` then `D`: revokes the device `device_id` of `who` with `event` as its record. See the
    /// module doc; a refused record puts the device back and gives the counter's step back.
    fn revoke_at<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        device_id: &str,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        // The counter outlives any record a write-back could still put back with the old epoch
        // (such a record is kept at most `MAX_TRUST_SECONDS` past its write), and a record put back
        // by the undo below is kept as long as any device could be.
        let latest = now.plus(devices::MAX_TRUST_SECONDS);
        let epoch = keys::device_epoch(who.org, who.user, device_id);
        self.store
            .increment(&epoch, 1, keys::guard_until(latest))
            .map_err(Error::store)?;
        let key = keys::device(who.org, who.user, device_id);
        self.delete_recorded((&key, keys::keep_until(latest)), event, now, rng)
            .inspect_err(|_| {
                let _ = self.store.increment(&epoch, -1, None);
            })
    }

    /// Undoes a rotation whose audit record could not be written, so that the browser's current
    /// cookie (which never received the new token) keeps working. A write-back like any other:
    /// a revoke that landed meanwhile stays.
    pub(crate) fn unrotate(&self, who: &Who<'_>, device_id: &str) {
        let key = keys::device(who.org, who.user, device_id);
        if let Ok(Some(mut device)) = self.load_json::<StoredDevice>(&key)
            && !device.retired.is_empty()
        {
            let previous = device.retired.remove(0);
            device.token_mac = previous.mac;
            let _ = self.write_back(who, &key, &device);
        }
    }

    /// Remembers the browser after a successful verify: renews the device its cookie names (if it is
    /// this user's), or creates one, dropping the oldest beyond [`devices::MAX_DEVICES`]. Returns the
    /// device id and the `Set-Cookie` value, or `None` when remembering is switched off.
    ///
    /// # Errors
    /// Store or audit failures; the caller then reports the login without a remembered device.
    pub(crate) fn trust_device<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        who: &Who<'_>,
        ip: IpAddr,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Option<(String, String)>> {
        if !self.settings.allow_remember_device || self.settings.trust_days == 0 {
            return Ok(None);
        }
        let (v4, v6) = prefixes(self);
        let fp = devices::fingerprint(&ctx.device.traits);
        let expires_at = now.plus(i64::from(self.settings.trust_days) * 86_400);
        let token = devices::new_token(rng);
        let mac = devices::token_mac(self.key, &token);

        // Renew the device the browser already holds, if its token is this user's current one and
        // it was not revoked (an unreadable record is no device: a new one is made).
        let renewed = match ctx.device.cookie.as_deref().and_then(devices::parse_cookie) {
            Some(p) => match self.load_stored::<StoredDevice>(&keys::device(
                who.org,
                who.user,
                &p.device_id,
            ))? {
                Stored::Value(d)
                    if matches!(
                        d.match_token(&devices::token_mac(self.key, &p.token), now),
                        TokenMatch::Current | TokenMatch::Grace
                    ) && self.epoch_of(who, &d.id)? == d.epoch =>
                {
                    Some(d)
                }
                _ => None,
            },
            None => None,
        };
        let device = match renewed {
            Some(mut d) => {
                d.rotate(mac, now);
                d.fingerprint = fp.hash;
                d.label = fp.label;
                d.last_used_at = now;
                d.last_network = devices::network(ip, v4, v6);
                d.expires_at = expires_at;
                d.verified_at = Some(now);
                d
            }
            None => StoredDevice {
                v: 1,
                id: random::new_id(rng),
                token_mac: mac,
                generation: 0,
                retired: Vec::new(),
                fingerprint: fp.hash,
                label: fp.label,
                first_trusted_at: now,
                last_used_at: now,
                last_network: devices::network(ip, v4, v6),
                expires_at,
                verified_at: Some(now),
                // A fresh random id: never revoked, so its counter is 0.
                epoch: 0,
            },
        };

        // Make room: the user keeps at most MAX_DEVICES, the oldest go first.
        let mut others: Vec<StoredDevice> = self
            .devices_of(who.org, who.user)?
            .into_iter()
            .filter(|d| d.id != device.id)
            .collect();
        others.sort_by_key(|d| (d.first_trusted_at, d.id.clone()));
        let excess = (others.len() + 1).saturating_sub(devices::MAX_DEVICES);
        for old in others.iter().take(excess) {
            self.revoke_stored(who, who.user, &old.id, "device-limit", now, rng)?;
        }

        let event = who
            .event(Action::DeviceTrusted, Outcome::Success)
            .reason(&format!("trusted-until:{}", expires_at.rfc3339()));
        let key = keys::device(who.org, who.user, &device.id);
        let keep = keys::keep_until(device.expires_at);
        self.put_recorded(&key, (&device, keep), event.device(&device.id), now, rng)?;
        // `C` for a renewal: a revoke that landed since the load stays, and says so in the trail.
        if self.epoch_of(who, &device.id)? != device.epoch {
            let event = who
                .event(Action::DeviceRevoked, Outcome::Success)
                .reason("revoked-while-renewed");
            let _ = self.delete_recorded((&key, keep), event.device(&device.id), now, rng);
            return Ok(None);
        }
        let max_age = i64::from(now.seconds_until(expires_at));
        Ok(Some((
            device.id.clone(),
            devices::set_cookie(&device.id, &token, max_age),
        )))
    }

    /// Every stored device of a user (expired and revoked ones included; unreadable ones skipped).
    fn devices_of(&self, org: &str, user: &str) -> Result<Vec<StoredDevice>> {
        let mut out = Vec::new();
        for key in self
            .store
            .list_keys(&keys::devices_of(org, user))
            .map_err(Error::store)?
        {
            if let Stored::Value(device) = self.load_stored::<StoredDevice>(&key)? {
                out.push(device);
            }
        }
        Ok(out)
    }

    /// Revokes one of `who`'s devices; `actor` is who did it (the user, or an admin), for the record.
    pub(crate) fn revoke_stored<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        actor: &str,
        device_id: &str,
        reason: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let mut event = who
            .event(Action::DeviceRevoked, Outcome::Success)
            .reason(reason);
        actor.clone_into(&mut event.actor);
        self.revoke_at(who, device_id, event.device(device_id), now, rng)
    }

    /// The actor's own trusted devices that count under this engine's limits today (the caller
    /// scopes it to the organization's policy), newest first, each with the end of its trust today.
    pub(crate) fn devices_trusted(&self, actor: &Actor, now: Timestamp) -> Result<Vec<DeviceInfo>> {
        let who = actor_who(actor);
        let mut list = Vec::new();
        for d in self.devices_of(&actor.org_id, &actor.user_id)? {
            let Some(until) = d.trusted_until(&self.settings).filter(|u| now <= *u) else {
                continue;
            };
            if self.epoch_of(&who, &d.id)? != d.epoch {
                continue;
            }
            list.push(DeviceInfo {
                device_id: d.id,
                label: d.label,
                first_trusted_at: d.first_trusted_at,
                last_used_at: d.last_used_at,
                last_network: d.last_network,
                expires_at: until,
            });
        }
        list.sort_by(|a, b| {
            b.first_trusted_at
                .cmp(&a.first_trusted_at)
                .then_with(|| a.device_id.cmp(&b.device_id))
        });
        Ok(list)
    }

    /// Revokes one of the actor's own devices. A device id that is not the actor's is refused
    /// exactly like an unknown one.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for an unknown or foreign device; [`Error::Store`]; [`Error::Audit`].
    pub fn revoke_device<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        device_id: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        input::actor(actor)?;
        input::id("device_id", device_id)?;
        let who = actor_who(actor);
        // Present is enough (readable or not): an owner may always remove their own record.
        if self
            .store
            .get(&keys::device(who.org, who.user, device_id))
            .map_err(Error::store)?
            .is_none()
        {
            return Err(Error::Forbidden("no such device among yours"));
        }
        self.revoke_stored(&who, who.user, device_id, "revoked-by-owner", now, rng)
    }

    /// Revokes all of the actor's own devices; returns how many.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Audit`] (devices revoked before the failure stay revoked).
    pub fn revoke_all_devices<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<u32> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        input::actor(actor)?;
        let who = actor_who(actor);
        self.revoke_all_of(&who, who.user, "revoked-all-by-owner", now, rng)
    }

    /// Revokes every device of `who`; `actor` is who did it, for the records.
    pub(crate) fn revoke_all_of<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        actor: &str,
        reason: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<u32> {
        // Every record under the user's prefix, readable or not: an unreadable one trusts nothing,
        // but "all" leaves none behind.
        let mut count = 0u32;
        for key in self
            .store
            .list_keys(&keys::devices_of(who.org, who.user))
            .map_err(Error::store)?
        {
            let Some(device_id) = key.strip_prefix(&keys::devices_of(who.org, who.user)) else {
                continue;
            };
            if self.store.get(&key).map_err(Error::store)?.is_none() {
                continue; // revoked meanwhile
            }
            self.revoke_stored(who, actor, device_id, reason, now, rng)?;
            count += 1;
        }
        Ok(count)
    }

    /// The IdP reports a password change or an MFA reset: every trusted device of the user goes.
    /// Allowed for the user themself, an `org-admin` of the same organization and a
    /// `platform-admin`; anyone else is refused (and the refusal is recorded).
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`]; [`Error::Store`]; [`Error::Audit`].
    pub fn credential_changed<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org_id: &str,
        user_id: &str,
        change: CredentialChange,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<u32> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org_id = self.canonical_id(org_id);
        let org_id = org_id.as_ref();
        let user_id = self.canonical_id(user_id);
        let user_id = user_id.as_ref();
        input::actor(actor)?;
        input::id("org_id", org_id)?;
        input::id("user_id", user_id)?;
        // The user themself, or whoever may administer the org (an org-admin of it, a platform-admin).
        let allowed =
            (actor.org_id == org_id && actor.user_id == user_id) || may_administer(actor, org_id);
        let reason = match change {
            CredentialChange::PasswordChanged => "password-changed",
            CredentialChange::MfaReset => "mfa-reset",
        };
        if !allowed {
            // Recorded in the actor's organization: the target org's stream is not theirs to write.
            let event = Event {
                org: actor.org_id.clone(),
                actor: actor.user_id.clone(),
                subject: user_id.to_owned(),
                action: Action::AccessDenied,
                outcome: Outcome::Denied,
                reason: Some(format!("credential-change:{reason}:not-authorized")),
                ip: (!actor.ip.is_empty()).then(|| actor.ip.clone()),
                user_agent: (!actor.user_agent.is_empty()).then(|| actor.user_agent.clone()),
                device_id: None,
                challenge_id: None,
            };
            self.record(event, now, rng)?;
            return Err(Error::Forbidden(
                "only the user or an org-admin of the same organization",
            ));
        }
        let who = Who {
            org: org_id,
            user: user_id,
            ip: actor.ip.clone(),
            user_agent: &actor.user_agent,
        };
        let revoked = self.revoke_all_of(&who, &actor.user_id, reason, now, rng)?;
        // A session holding a step-up token from before the change loses it too: moving the MFA
        // address now needs a code verified after it. Best effort: the grant lapses in 5 minutes.
        let _ = self.store.delete(&keys::step_up(org_id, user_id));
        Ok(revoked)
    }
}

fn actor_who(actor: &Actor) -> Who<'_> {
    Who {
        org: &actor.org_id,
        user: &actor.user_id,
        ip: actor.ip.clone(),
        user_agent: &actor.user_agent,
    }
}
