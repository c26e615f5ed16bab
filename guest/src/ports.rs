//! The core's ports over the host's imports: a direct mapping, no decisions.

use mfa_step_core::kernel::ports::Head;
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Mailer, OutgoingMail, PortError, PortResult, RefusalNote,
    Store,
};
use rand_core::{CryptoRng, RngCore};

use crate::bindings::mfa_step::plugin::{audit, mailer, store};
use crate::bindings::wasi::random::random;

/// The `store` import.
pub(crate) struct WitStore;

fn store_err(e: store::StoreError) -> PortError {
    PortError(match e {
        store::StoreError::Unavailable(m) => format!("store unavailable: {m}"),
        store::StoreError::Invalid(m) => format!("store refused the request: {m}"),
    })
}

impl Store for WitStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        store::get(key).map_err(store_err)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        store::set(key, value, expires_at).map_err(store_err)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        store::delete(key).map_err(store_err)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        store::increment(key, delta, expires_at).map_err(store_err)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        store::list_keys(prefix).map_err(store_err)
    }
    fn commit(&self) -> PortResult<()> {
        store::commit().map_err(store_err)
    }
}

/// The `mailer` import.
pub(crate) struct WitMailer;

impl Mailer for WitMailer {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        let message = mailer::Message {
            to: mail.to.clone(),
            sender_name: mail.sender_name.clone(),
            subject: mail.subject.clone(),
            html: mail.html.clone(),
            text: mail.text.clone(),
        };
        mailer::send(&message).map_err(|e| {
            PortError(match e {
                mailer::MailError::Unavailable(m) => format!("mail service unavailable: {m}"),
                mailer::MailError::RejectedRecipient(m) => format!("recipient refused: {m}"),
            })
        })
    }
}

/// The `audit` import.
pub(crate) struct WitAudit;

impl AuditSink for WitAudit {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        match audit::head(org) {
            Ok(head) => Ok(head.map(|h| Head {
                seq: h.seq,
                hash: h.hash,
            })),
            Err(audit::AuditError::Unavailable(m)) => {
                Err(PortError(format!("audit sink unavailable: {m}")))
            }
            Err(audit::AuditError::Conflict) => Err(PortError(
                "audit sink answered `conflict` to a read".to_owned(),
            )),
        }
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        let wit_entry = audit::Entry {
            org_id: entry.org_id.clone(),
            seq: entry.seq,
            at: entry.at,
            action: entry.action.clone(),
            prev: entry.prev.clone(),
            hash: entry.hash.clone(),
            line: entry.line.clone(),
        };
        audit::append(&wit_entry).map_err(|e| match e {
            audit::AuditError::Conflict => AppendError::Conflict,
            audit::AuditError::Unavailable(m) => {
                AppendError::Unavailable(format!("audit sink unavailable: {m}"))
            }
        })
    }
    fn note_refusal(&self, note: &RefusalNote) {
        audit::note_refusal(&audit::RefusalNote {
            rule: note.rule.clone(),
            claimed_org: note.claimed_org.clone(),
            ip: note.ip.clone(),
            user_agent: note.user_agent.clone(),
        });
    }
}

/// The host's CSPRNG through `wasi:random/random`, whose `get-random-u64` cannot fail.
pub(crate) struct WasiRng;

impl RngCore for WasiRng {
    fn next_u32(&mut self) -> u32 {
        (random::get_random_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        random::get_random_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = random::get_random_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

impl CryptoRng for WasiRng {}
