//! Checking a stored log against the chain ([`super::chain`]), record by record, in stored order.
//!
//! A [`Verifier`] reports the first break it finds, and where: a line that is not a record or not in
//! canonical form, a hash that does not cover its line, a seal that is missing or not the key's, a
//! link to the wrong previous record, a gap, a step back, and (against the count the store keeps) a
//! removed tail. It keeps only each stream's head, so a log of any length is checked in one pass and
//! constant memory per organization; it never repairs or skips a record.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::audit::chain::{Problem, Record, SealKey};
use crate::kernel::ports::Head;

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
    use crate::audit::chain::seal_line;
    use crate::audit::{Action, Event, Outcome};
    use crate::kernel::secret::HmacKey;
    use crate::kernel::time::Timestamp;

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
}
