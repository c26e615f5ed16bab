//! The audit hash chain: how records are linked, sealed and verified.
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

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::HmacKey;

/// The `prev` of an organization's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SEAL_LABEL: &[u8] = b"mfa-step/audit-seal/v1";

/// The newest record of a stream: where the next one links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

impl Head {
    /// The `(seq, prev)` of the record that follows `head` (the first record when there is none).
    #[must_use]
    pub fn next(head: Option<&Self>) -> (u64, String) {
        head.map_or_else(
            || (1, GENESIS.to_owned()),
            |h| (h.seq.saturating_add(1), h.hash.clone()),
        )
    }
}

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

    fn matches(&self, hash: &str, seal: &str) -> bool {
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
    crate::secret::hmac_sha256(key, &[data])
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
    fn canonical(&self) -> String {
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
    fn prefix(line: &str) -> &str {
        // A JSON string cannot hold an unescaped quote, so this text can only be the field itself.
        line.rfind(",\"hash\":\"").map_or(line, |at| &line[..at])
    }
}

/// Why a log fails verification.
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

/// The first problem found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// Organization, when the record was readable enough to tell.
    pub org: Option<String>,
    /// The record's `seq`, when readable.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.org, self.seq) {
            (Some(org), Some(seq)) => write!(f, "org {org}, seq {seq}: {}", self.problem),
            (Some(org), None) => write!(f, "org {org}: {}", self.problem),
            _ => write!(f, "{}", self.problem),
        }
    }
}

/// Checks a log record by record, in stored order. Streams of several organizations may be
/// interleaved; each is checked on its own.
#[derive(Debug, Default)]
pub struct Verifier {
    seal: Option<SealKey>,
    heads: BTreeMap<String, Head>,
    records: u64,
}

impl Verifier {
    /// A verifier that checks seals when given the key.
    #[must_use]
    pub fn new(seal: Option<SealKey>) -> Self {
        Self {
            seal,
            heads: BTreeMap::new(),
            records: 0,
        }
    }

    /// Starts `org`'s stream after `head` instead of at its beginning (for a log whose earlier
    /// records were archived; the head comes from the archive or an earlier `audit head`).
    pub fn resume(&mut self, org: &str, head: Head) {
        self.heads.insert(org.to_owned(), head);
    }

    /// Checks the next stored line and returns the record.
    ///
    /// # Errors
    /// The first problem with it; the verifier's state is unchanged.
    pub fn check(&mut self, line: &str) -> Result<Record, Break> {
        let record = Record::parse(line).map_err(|problem| Break {
            org: None,
            seq: None,
            problem,
        })?;
        let fail = |problem| Break {
            org: Some(record.org.clone()),
            seq: Some(record.seq),
            problem,
        };
        if record.canonical() != line {
            return Err(fail(Problem::NotCanonical));
        }
        let hash = hex::encode(Sha256::digest(Record::prefix(line).as_bytes()));
        if hash != record.hash {
            return Err(fail(Problem::HashMismatch));
        }
        if let Some(key) = &self.seal {
            match &record.seal {
                None => return Err(fail(Problem::Unsealed)),
                Some(seal) if !key.matches(&record.hash, seal) => {
                    return Err(fail(Problem::SealMismatch));
                }
                Some(_) => {}
            }
        }
        let (expected, prev) = Head::next(self.heads.get(&record.org));
        if record.seq > expected {
            return Err(fail(Problem::Gap { expected }));
        }
        if record.seq < expected {
            return Err(fail(Problem::Backwards { expected }));
        }
        if record.prev != prev {
            return Err(fail(Problem::BrokenLink));
        }
        self.heads.insert(
            record.org.clone(),
            Head {
                seq: record.seq,
                hash: record.hash.clone(),
            },
        );
        self.records += 1;
        Ok(record)
    }

    /// After the last line: compares each stream's end with the count the store kept.
    ///
    /// # Errors
    /// The first organization whose log ends short of its count.
    pub fn finish(&self, counted: &BTreeMap<String, u64>) -> Result<(), Break> {
        for (org, &count) in counted {
            let last = self.heads.get(org).map_or(0, |h| h.seq);
            if last < count {
                return Err(Break {
                    org: Some(org.clone()),
                    seq: None,
                    problem: Problem::Truncated {
                        last,
                        counted: count,
                    },
                });
            }
        }
        Ok(())
    }

    /// The head of every stream seen.
    #[must_use]
    pub fn heads(&self) -> &BTreeMap<String, Head> {
        &self.heads
    }

    /// Records checked so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;
    use crate::audit::{Action, Event, Outcome};
    use crate::time::Timestamp;

    fn key() -> SealKey {
        SealKey::derive(&HmacKey::from_bytes(&[7u8; 32]).expect("key"))
    }

    fn event(org: &str, ua: &str) -> Event {
        Event {
            org: org.into(),
            actor: "u1".into(),
            subject: "u1".into(),
            action: Action::CodeSent,
            outcome: Outcome::Success,
            reason: Some("role:provider".into()),
            ip: Some("203.0.113.9".into()),
            user_agent: Some(ua.into()),
            device_id: None,
            challenge_id: Some("c1".into()),
        }
    }

    /// A log of `n` records for `acme`, with records of `beta` interleaved, sealed with [`key`].
    fn log(n: u64) -> Vec<String> {
        let key = key();
        let mut heads: BTreeMap<String, Head> = BTreeMap::new();
        let mut lines = Vec::new();
        for i in 0..n {
            for org in ["acme", "beta"] {
                if org == "beta" && i % 2 == 1 {
                    continue;
                }
                let (seq, prev) = Head::next(heads.get(org));
                // A user agent with quotes and the chain field's own name must not confuse anything.
                let ua = format!(r#"agent {i} ,"hash":" \ "#);
                let (line, hash) = event(org, &ua).seal(
                    &format!("id{i}"),
                    seq,
                    Timestamp(i64::try_from(i).unwrap_or(0)),
                    &prev,
                    Some(&key),
                );
                heads.insert(org.to_owned(), Head { seq, hash });
                lines.push(line);
            }
        }
        lines
    }

    fn verify(lines: &[String], seal: Option<SealKey>) -> Result<Verifier, (usize, Break)> {
        let mut v = Verifier::new(seal);
        for (i, line) in lines.iter().enumerate() {
            v.check(line).map_err(|b| (i, b))?;
        }
        Ok(v)
    }

    #[test]
    fn an_untouched_log_verifies_with_and_without_the_key() {
        let lines = log(10);
        let v = verify(&lines, Some(key())).expect("sealed log verifies");
        assert_eq!(v.records(), 15);
        assert_eq!(v.heads()["acme"].seq, 10);
        assert_eq!(v.heads()["beta"].seq, 5);
        assert!(verify(&lines, None).is_ok());
        let counted = BTreeMap::from([("acme".to_owned(), 10), ("beta".to_owned(), 5)]);
        assert_eq!(v.finish(&counted), Ok(()));
    }

    #[test]
    fn an_edited_field_breaks_its_hash() {
        let mut lines = log(6);
        lines[3] = lines[3].replace("203.0.113.9", "198.51.100.1");
        let (at, b) = verify(&lines, None).expect_err("edit detected");
        assert_eq!((at, b.problem), (3, Problem::HashMismatch));
    }

    #[test]
    fn a_rewritten_line_is_not_canonical() {
        let mut lines = log(3);
        lines[1] = lines[1].replacen(",", ", ", 1);
        let (at, b) = verify(&lines, None).expect_err("rewrite detected");
        assert_eq!((at, b.problem), (1, Problem::NotCanonical));
    }

    #[test]
    fn an_edit_with_its_hash_recomputed_breaks_the_next_link_and_the_seal() {
        let mut lines = log(6);
        let mut r = Record::parse(&lines[3]).expect("record");
        r.ip = Some("198.51.100.1".into());
        let (line, _) = seal_line(&r.prefix_json(), None);
        lines[3] = line;
        let (at, b) = verify(&lines, None).expect_err("next link detects it");
        assert_eq!(b.problem, Problem::BrokenLink);
        assert!(at > 3);
        let (at, b) = verify(&lines, Some(key())).expect_err("seal detects it");
        assert_eq!((at, b.problem), (3, Problem::Unsealed));
        // Forging a seal with another key fails too.
        let other = SealKey::derive(&HmacKey::from_bytes(&[8u8; 32]).expect("key"));
        lines[3] = seal_line(&r.prefix_json(), Some(&other)).0;
        let (at, b) = verify(&lines, Some(key())).expect_err("seal detects it");
        assert_eq!((at, b.problem), (3, Problem::SealMismatch));
    }

    #[test]
    fn a_rewritten_tail_passes_the_chain_but_not_the_seal() {
        let lines = log(4);
        // Re-chain everything from record 2 on with recomputed hashes and no key.
        let mut heads: BTreeMap<String, Head> = BTreeMap::new();
        let mut forged = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let mut r = Record::parse(line).expect("record");
            if i >= 2 {
                r.reason = Some("forged".into());
                r.prev = Head::next(heads.get(&r.org)).1;
                let (l, h) = seal_line(&r.prefix_json(), None);
                heads.insert(
                    r.org.clone(),
                    Head {
                        seq: r.seq,
                        hash: h,
                    },
                );
                forged.push(l);
            } else {
                heads.insert(
                    r.org.clone(),
                    Head {
                        seq: r.seq,
                        hash: r.hash.clone(),
                    },
                );
                forged.push(line.clone());
            }
        }
        assert!(
            verify(&forged, None).is_ok(),
            "the plain chain cannot see a full rewrite"
        );
        let (at, b) = verify(&forged, Some(key())).expect_err("the seal sees it");
        assert_eq!((at, b.problem), (2, Problem::Unsealed));
    }

    #[test]
    fn deleting_inserting_and_reordering_are_detected() {
        let lines = log(6);
        let acme: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(r#""org":"acme""#))
            .collect();

        let mut deleted = lines.clone();
        deleted.remove(acme[2]);
        let (_, b) = verify(&deleted, None).expect_err("delete detected");
        assert_eq!(b.problem, Problem::Gap { expected: 3 });

        let mut inserted = lines.clone();
        inserted.insert(acme[4], lines[acme[1]].clone());
        let (_, b) = verify(&inserted, None).expect_err("insert detected");
        assert_eq!(b.problem, Problem::Backwards { expected: 5 });

        let mut reordered = lines.clone();
        reordered.swap(acme[2], acme[3]);
        let (_, b) = verify(&reordered, None).expect_err("reorder detected");
        assert_eq!(b.problem, Problem::Gap { expected: 3 });
    }

    #[test]
    fn truncation_is_detected_against_the_stores_count() {
        let mut lines = log(6);
        lines.truncate(lines.len() - 2);
        let v = verify(&lines, Some(key())).expect("a prefix is a valid chain");
        let counted = BTreeMap::from([("acme".to_owned(), 6)]);
        let b = v.finish(&counted).expect_err("truncation detected");
        assert_eq!(
            b.problem,
            Problem::Truncated {
                last: 5,
                counted: 6
            }
        );
        assert!(b.to_string().contains("the tail was removed"), "{b}");
    }

    #[test]
    fn a_resumed_stream_checks_from_its_known_head() {
        let lines = log(4);
        let mut v = Verifier::new(Some(key()));
        for line in &lines[..3] {
            v.check(line).expect("ok");
        }
        let heads = v.heads().clone();
        let mut resumed = Verifier::new(Some(key()));
        for (org, head) in heads {
            resumed.resume(&org, head);
        }
        for line in &lines[3..] {
            resumed.check(line).expect("continues");
        }
        // Without the earlier heads, the later part does not start at seq 1.
        let (_, b) = verify(&lines[3..], None).expect_err("starts mid-stream");
        assert!(matches!(b.problem, Problem::Gap { .. }), "{b}");
    }

    #[test]
    fn keys_never_show() {
        assert_eq!(format!("{:?}", key()), "SealKey(<redacted>)");
    }
}
