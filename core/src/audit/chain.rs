//! The audit hash chain: how records are linked and sealed, and how a stored line reads back as a
//! [`Record`]. Checking a whole log against the chain is [`super::verify`]'s.
//!
//! Each organization has its own stream. A record is one line of canonical JSON (see
//! [`crate::audit`]) that ends in three chain fields:
//!
//! ```text
//! {"v":2, … ,"challenge_id":…,"prev":"<P>","hash":"<H>","seal":"<S>"}
//! prefix = the line up to and including "prev":"<P>"  (everything before ,"hash")
//! H      = hex SHA-256(prefix)
//! S      = hex HMAC-SHA256(seal key, H)     seal key = HMAC-SHA256(host key, "mfa-step/audit-seal/v1")
//! P      = H of the previous record of the same organization, or 64 zeros for its first record
//! seq    = 1 for an organization's first record, then +1 per record, with no gaps
//! ```
//!
//! What each part protects against:
//!
//! | change to the log | the chain (anyone can check) | the seal (key holders check) |
//! |---|---|---|
//! | edit a field of a record | its hash no longer matches | — |
//! | edit a record and recompute its hash | the next record's `prev` no longer matches | its seal no longer matches |
//! | delete a record | `seq` jumps | — |
//! | insert a record in the middle | `seq` repeats or `prev` breaks | — |
//! | reorder records | `seq` goes back | — |
//! | rewrite the whole tail, hashes recomputed | **not detected** | every rewritten seal fails |
//! | truncate the tail | only against an anchor: the store's record count | same |
//!
//! So the plain chain catches every edit that does not rewrite everything after it; the seal also
//! catches a store administrator who rewrites the tail, because recomputing a seal needs the key,
//! which lives with the host's configuration, not in the store or the log. Truncation leaves a valid
//! prefix, so it is caught by comparing the last `seq` with the count the store keeps per
//! organization (`audit verify --data-dir` does) or with a head exported earlier (`audit head`).
//!
//! Position in the stream is decided by the sink, not by the component: the component reads the
//! stream's head, links its record to it and asks the sink to append *if the head is still that one*.
//! The sink does the check and the write under one lock (a unique key, a file lock), so two writers
//! racing for the same position never both win: the loser is told `conflict`, reads the new head and
//! links again. Numbers are therefore never reserved and never skipped, and a missing `seq` always
//! means a deleted record.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::kernel::secret::HmacKey;

const SEAL_LABEL: &[u8] = b"mfa-step/audit-seal/v1";

/// The key that seals records, derived from the host's key so that it never needs storing apart.
#[derive(Clone)]
pub struct SealKey(Zeroizing<Vec<u8>>);

impl SealKey {
    /// Derives the seal key from the host key.
    #[must_use]
    pub fn derive(key: &HmacKey) -> Self {
        Self(Zeroizing::new(mac(key.as_bytes(), SEAL_LABEL)))
    }

    /// The seal of a record hash (hex).
    #[must_use]
    pub fn seal(&self, hash: &str) -> String {
        hex::encode(mac(&self.0, hash.as_bytes()))
    }

    pub(super) fn matches(&self, hash: &str, seal: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.seal(hash);
        expected.as_bytes().ct_eq(seal.as_bytes()).into()
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    crate::kernel::secret::hmac_sha256(key, &[data])
}

/// Completes a record: `prefix` is its canonical JSON up to and including its `prev` field, without
/// the closing brace. Returns the whole line and its hash.
#[must_use]
pub fn seal_line(prefix: &str, seal: Option<&SealKey>) -> (String, String) {
    let hash = hex::encode(Sha256::digest(prefix.as_bytes()));
    let seal = seal.map_or_else(|| "null".to_owned(), |k| format!("\"{}\"", k.seal(&hash)));
    (
        format!("{prefix},\"hash\":\"{hash}\",\"seal\":{seal}}}"),
        hash,
    )
}

/// A record as read back from a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Schema version.
    pub v: u8,
    /// Event id.
    pub id: String,
    /// Position in the organization's stream.
    pub seq: u64,
    /// UTC time, RFC 3339.
    pub at: String,
    /// Organization.
    pub org: String,
    /// Who acted.
    pub actor: String,
    /// About whom.
    pub subject: String,
    /// What happened.
    pub action: String,
    /// How it ended.
    pub outcome: String,
    /// Why.
    pub reason: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Device involved.
    pub device_id: Option<String>,
    /// Challenge involved.
    pub challenge_id: Option<String>,
    /// Hash of the previous record of the organization.
    pub prev: String,
    /// This record's hash.
    pub hash: String,
    /// This record's seal, if sealed.
    pub seal: Option<String>,
}

impl Record {
    /// Parses a line without checking it.
    ///
    /// # Errors
    /// The line is not a record of this schema.
    pub fn parse(line: &str) -> Result<Self, Problem> {
        serde_json::from_str(line).map_err(|e| Problem::Unreadable(e.to_string()))
    }

    /// The record's canonical JSON up to and including `prev`, without the closing brace: what
    /// its hash covers.
    #[must_use]
    pub fn prefix_json(&self) -> String {
        #[derive(Serialize)]
        struct Prefix<'a> {
            v: u8,
            id: &'a str,
            seq: u64,
            at: &'a str,
            org: &'a str,
            actor: &'a str,
            subject: &'a str,
            action: &'a str,
            outcome: &'a str,
            reason: Option<&'a str>,
            ip: Option<&'a str>,
            user_agent: Option<&'a str>,
            device_id: Option<&'a str>,
            challenge_id: Option<&'a str>,
            prev: &'a str,
        }
        let prefix = Prefix {
            v: self.v,
            id: &self.id,
            seq: self.seq,
            at: &self.at,
            org: &self.org,
            actor: &self.actor,
            subject: &self.subject,
            action: &self.action,
            outcome: &self.outcome,
            reason: self.reason.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            device_id: self.device_id.as_deref(),
            challenge_id: self.challenge_id.as_deref(),
            prev: &self.prev,
        };
        // A struct of strings and integers always serializes; it ends in the `}` dropped here.
        let mut json = serde_json::to_string(&prefix).unwrap_or_default();
        json.pop();
        json
    }

    /// The canonical line this record must have been: what a verifier compares the stored bytes to.
    pub(super) fn canonical(&self) -> String {
        let seal = self
            .seal
            .as_ref()
            .map_or_else(|| "null".to_owned(), |s| format!("\"{s}\""));
        format!(
            "{},\"hash\":\"{}\",\"seal\":{seal}}}",
            self.prefix_json(),
            self.hash
        )
    }

    /// The bytes the hash covers: the line before `,"hash"`.
    pub(super) fn prefix(line: &str) -> &str {
        // A JSON string cannot hold an unescaped quote, so this text can only be the field itself.
        line.rfind(",\"hash\":\"").map_or(line, |at| &line[..at])
    }
}

/// Why a record, or a log, fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a record of this schema.
    Unreadable(String),
    /// The bytes are not the canonical form of the record they parse to (edited by hand).
    NotCanonical,
    /// The record's contents do not match its hash.
    HashMismatch,
    /// The record's seal is not the key's seal of its hash.
    SealMismatch,
    /// A record is unsealed where seals are checked.
    Unsealed,
    /// The record has the expected `seq` but does not link to the record before it.
    BrokenLink,
    /// Records are missing before this one.
    Gap {
        /// The `seq` the stream expected.
        expected: u64,
    },
    /// The `seq` went back or repeated.
    Backwards {
        /// The `seq` the stream expected.
        expected: u64,
    },
    /// The log ends before the count the store kept.
    Truncated {
        /// The last `seq` in the log.
        last: u64,
        /// How many records the store counted.
        counted: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(why) => write!(f, "not a readable record ({why})"),
            Self::NotCanonical => f.write_str(
                "not in canonical form: the line was rewritten after it was written",
            ),
            Self::HashMismatch => f.write_str(
                "its contents do not match its hash: the record was edited",
            ),
            Self::SealMismatch => f.write_str(
                "its seal does not match: the record was rewritten by someone without the key",
            ),
            Self::Unsealed => f.write_str("it has no seal, but seals are being checked"),
            Self::BrokenLink => f.write_str(
                "it does not link to the record before it: a record before it was replaced or inserted",
            ),
            Self::Gap { expected } => write!(
                f,
                "expected seq {expected}: the records between are missing (deleted or moved)"
            ),
            Self::Backwards { expected } => write!(
                f,
                "expected seq {expected}: the sequence goes back (a record was inserted, duplicated or moved)"
            ),
            Self::Truncated { last, counted } => write!(
                f,
                "the log ends at seq {last} but the store counted {counted} records: the tail was removed"
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::derive(&HmacKey::from_bytes(&[7u8; 32]).expect("key"))
    }

    #[test]
    fn keys_never_show() {
        assert_eq!(format!("{:?}", key()), "SealKey(<redacted>)");
    }
}
