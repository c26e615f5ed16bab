//! The console's audit viewer, served by the host. The WIT contract gives the component no way to
//! read the trail back, so the component decides everything (session, organization, filter, the
//! record of the view, every word) and answers with the canonical query in
//! [`QUERY_HEADER`]; here the host, which can read its own audit sink, fills in what the query asks:
//!
//! ```text
//! component answer ── QUERY_HEADER? ──no──▶ unchanged
//!        │ yes: header removed (it never reaches the client), AuditQuery::from_header
//!        ▼
//!   sink.stream_lines(org)  ──fails──▶ 503: the page says "try again", an export is not a file
//!        │
//!   chain check from sink.checkpoint(org): records after it only, with the core's Verifier
//!        │  verified ──▶ sink.advance_checkpoint(org, head)     broken ──▶ checkpoint unchanged
//!        ▼
//!   page: AuditQuery::fragment spliced between the markers │ export: body = csv / jsonl
//! ```
//!
//! The checkpoint makes a view cost the records written since the last one, not the whole
//! trail: the chain before it was verified then, and the record at the checkpoint must still
//! carry the hash it had (so a rewrite of it shows). `mfa-step audit verify` remains the tool
//! that checks everything, seals and truncation against the store's counts included.

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use hyper::http::response::Parts;
use mfa_step_core::audit::chain::{Record, SealKey};
use mfa_step_core::audit::verify::Verifier;
use mfa_step_core::kernel::ports::Head;
use mfa_step_core::web::console::audit::{AuditQuery, ChainStatus, QUERY_HEADER, View, splice};

use crate::backends::HostAuditSink;

/// The trail as the viewer reads it: the sink serve writes to, and the seal key when the host
/// has one (then seals are checked too).
#[derive(Clone)]
pub struct AuditView {
    sink: Arc<dyn HostAuditSink>,
    seal: Option<SealKey>,
}

impl AuditView {
    /// A viewer over `sink`, checking seals with the key derived from `hmac_key` (hex) if given.
    #[must_use]
    pub fn new(sink: Arc<dyn HostAuditSink>, hmac_key: Option<&str>) -> Self {
        let seal = hmac_key
            .and_then(|hex| mfa_step_core::HmacKey::from_hex(hex).ok())
            .map(|key| SealKey::derive(&key));
        Self { sink, seal }
    }

    /// The component's answer, completed if it asks for the trail: the query header is always
    /// removed; a page gets its rows and chain status, an export its body. An answer without the
    /// header is returned as it is.
    pub async fn complete(&self, mut parts: Parts, body: Bytes) -> (Parts, Bytes) {
        let Some(value) = parts.headers.remove(QUERY_HEADER) else {
            return (parts, body);
        };
        // Any second copy goes too: nothing of the query reaches the client.
        while parts.headers.remove(QUERY_HEADER).is_some() {}
        let query = match value.to_str().map(AuditQuery::from_header) {
            Ok(Ok(query)) => query,
            _ => {
                tracing::error!("the component's audit query header is malformed");
                return bare(parts, StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        if parts.status != StatusCode::OK {
            return (parts, body);
        }
        let view = self.clone();
        let org = query.org.clone();
        let read = tokio::task::spawn_blocking(move || view.read(&org)).await;
        let read = match read {
            // A sink that is not read back: the component's fallback stays, as on any host.
            Ok(Ok(None)) => return (parts, body),
            Ok(Ok(Some(read))) => Some(read),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the audit trail could not be read for the console");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the audit trail for the console failed");
                None
            }
        };
        match query.view {
            View::Page => {
                let (status, fragment) = match &read {
                    Some(read) => (
                        StatusCode::OK,
                        query.fragment(&read.matching(&query), &read.chain),
                    ),
                    None => (StatusCode::SERVICE_UNAVAILABLE, query.unavailable()),
                };
                let page = String::from_utf8_lossy(&body);
                let Some(page) = splice(&page, &fragment) else {
                    tracing::error!("the component's audit page has no place for the records");
                    return bare(parts, StatusCode::INTERNAL_SERVER_ERROR);
                };
                parts.status = status;
                with_body(parts, Bytes::from(page))
            }
            View::Csv | View::Jsonl => match &read {
                Some(read) => {
                    let export = query.export(&read.matching(&query)).unwrap_or_default();
                    with_body(parts, Bytes::from(export))
                }
                None => {
                    // Not a file: the browser shows the sentence instead of saving a partial one.
                    parts.status = StatusCode::SERVICE_UNAVAILABLE;
                    parts.headers.remove(header::CONTENT_DISPOSITION);
                    parts.headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    parts
                        .headers
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    with_body(parts, Bytes::from(query.export_unavailable()))
                }
            },
        }
    }

    /// The organization's stream and its chain's status, the checkpoint moved on when verified.
    fn read(&self, org: &str) -> anyhow::Result<Option<Read>> {
        let Some(lines) = self
            .sink
            .stream_lines(org)
            .map_err(|e| anyhow::anyhow!(e.0))?
        else {
            return Ok(None);
        };
        let checkpoint = self
            .sink
            .checkpoint(org)
            .map_err(|e| anyhow::anyhow!(e.0))?;
        let (chain, head) = check_chain(org, &lines, checkpoint, self.seal.clone());
        if let Some(head) = head {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            // The records were verified and are shown as such; a checkpoint that could not be
            // kept only costs the next view more work.
            if let Err(e) = self.sink.advance_checkpoint(org, &head, at) {
                tracing::warn!(error = %e.0, "the audit checkpoint could not be moved on");
            }
        }
        Ok(Some(Read { lines, chain }))
    }
}

/// What was read.
struct Read {
    lines: Vec<String>,
    chain: ChainStatus,
}

impl Read {
    fn matching(&self, query: &AuditQuery) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| query.matches(l))
            .cloned()
            .collect()
    }
}

/// Checks `org`'s stream (`lines`, in `seq` order) after `checkpoint` with the core's
/// [`Verifier`]: the record at the checkpoint must still carry its hash, and every later one
/// must verify. Returns the status, and the new checkpoint when everything verified.
#[must_use]
pub fn check_chain(
    org: &str,
    lines: &[String],
    checkpoint: Option<Head>,
    seal: Option<SealKey>,
) -> (ChainStatus, Option<Head>) {
    let mut verifier = Verifier::new(seal.clone());
    let since = checkpoint.as_ref().map_or(0, |c| c.seq);
    if let Some(c) = &checkpoint {
        verifier.resume(org, c.clone());
    }
    let mut checked = 0u64;
    let mut last = 0u64;
    for line in lines {
        let record = match Record::parse(line) {
            Ok(record) => record,
            Err(_) => return (ChainStatus::Broken { seq: None }, None),
        };
        last = record.seq;
        if record.seq < since {
            continue;
        }
        if since > 0 && record.seq == since {
            // The record the checkpoint vouched for: still its own hash (and seal), and still
            // the hash the checkpoint holds. Its link back was checked when the checkpoint was
            // made.
            let mut alone = Verifier::new(seal.clone());
            alone.resume(
                org,
                Head {
                    seq: since - 1,
                    hash: record.prev.clone(),
                },
            );
            let intact = alone.check(line).is_ok();
            if !intact || checkpoint.as_ref().is_some_and(|c| c.hash != record.hash) {
                return (ChainStatus::Broken { seq: Some(since) }, None);
            }
            continue;
        }
        match verifier.check(line) {
            Ok(_) => checked += 1,
            Err(b) => {
                return (
                    ChainStatus::Broken {
                        seq: b.seq.or(Some(record.seq)),
                    },
                    None,
                );
            }
        }
    }
    if last < since {
        // The stream ends before the record the checkpoint vouched for: its tail was removed.
        return (
            ChainStatus::Broken {
                seq: Some(last + 1),
            },
            None,
        );
    }
    let head = verifier.heads().get(org).cloned();
    let through = head.as_ref().map_or(since, |h| h.seq);
    (
        ChainStatus::Verified {
            through,
            checked,
            since,
        },
        head.filter(|h| h.seq > since),
    )
}

/// `parts` with `body`, its length said again.
fn with_body(mut parts: Parts, body: Bytes) -> (Parts, Bytes) {
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    (parts, body)
}

/// A bare answer with `status` (the host does not make up a page for a component bug).
fn bare(mut parts: Parts, status: StatusCode) -> (Parts, Bytes) {
    parts.status = status;
    parts.headers.remove(header::CONTENT_DISPOSITION);
    parts.headers.remove(header::CONTENT_TYPE);
    with_body(parts, Bytes::new())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use mfa_step_core::Timestamp;
    use mfa_step_core::audit::{Action, Event, Outcome};
    use mfa_step_core::kernel::ports::GENESIS;

    /// `n` linked records of `org`, sealed with `seal` when given.
    fn stream(org: &str, n: u64, seal: Option<&SealKey>) -> Vec<String> {
        stream_of(org, "u1", n, seal)
    }

    /// `n` linked records of `org` with `actor` acting.
    fn stream_of(org: &str, actor: &str, n: u64, seal: Option<&SealKey>) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let event = Event {
                    org: org.to_owned(),
                    actor: actor.to_owned(),
                    subject: "u1".to_owned(),
                    action: Action::CodeSent,
                    outcome: Outcome::Success,
                    reason: None,
                    ip: None,
                    user_agent: None,
                    device_id: None,
                    challenge_id: None,
                };
                let (line, hash) =
                    event.seal(&format!("e{seq}"), seq, Timestamp(seq as i64), &prev, seal);
                prev = hash;
                line
            })
            .collect()
    }

    fn head_at(lines: &[String], seq: u64) -> Head {
        let r = Record::parse(&lines[usize::try_from(seq).unwrap() - 1]).unwrap();
        Head {
            seq: r.seq,
            hash: r.hash,
        }
    }

    #[test]
    fn a_whole_stream_verifies_from_its_start_and_then_from_its_checkpoint() {
        let lines = stream("acme", 5, None);
        let (status, head) = check_chain("acme", &lines, None, None);
        assert_eq!(
            status,
            ChainStatus::Verified {
                through: 5,
                checked: 5,
                since: 0
            }
        );
        assert_eq!(head, Some(head_at(&lines, 5)));
        // From the checkpoint at 3: only 4 and 5 are checked; 1 and 2 are not even looked at.
        let mut edited = lines.clone();
        edited[0] = edited[0].replace("\"u1\"", "\"u2\"");
        let (status, head) = check_chain("acme", &edited, Some(head_at(&lines, 3)), None);
        assert_eq!(
            status,
            ChainStatus::Verified {
                through: 5,
                checked: 2,
                since: 3
            }
        );
        assert_eq!(head, Some(head_at(&lines, 5)));
        // Nothing new: verified through the checkpoint, and no new checkpoint to write.
        let (status, head) = check_chain("acme", &lines, Some(head_at(&lines, 5)), None);
        assert_eq!(
            status,
            ChainStatus::Verified {
                through: 5,
                checked: 0,
                since: 5
            }
        );
        assert_eq!(head, None);
    }

    #[test]
    fn a_break_after_the_checkpoint_a_rewritten_checkpoint_or_a_cut_tail_is_broken() {
        let lines = stream("acme", 5, None);
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("\"u1\"", "\"u2\"");
        assert_eq!(
            check_chain("acme", &edited, Some(head_at(&lines, 2)), None),
            (ChainStatus::Broken { seq: Some(4) }, None)
        );
        // The record the checkpoint vouched for no longer carries its hash.
        let other = stream_of("acme", "u9", 5, None);
        assert_eq!(
            check_chain("acme", &other, Some(head_at(&lines, 3)), None),
            (ChainStatus::Broken { seq: Some(3) }, None)
        );
        // The record at the checkpoint was edited, its hash field kept.
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("\"u1\"", "\"u2\"");
        assert_eq!(
            check_chain("acme", &edited, Some(head_at(&lines, 3)), None),
            (ChainStatus::Broken { seq: Some(3) }, None)
        );
        // The stream ends before the checkpoint.
        assert_eq!(
            check_chain("acme", &lines[..2], Some(head_at(&lines, 4)), None),
            (ChainStatus::Broken { seq: Some(3) }, None)
        );
        // A deleted record.
        let gap: Vec<String> = [&lines[..2], &lines[3..]].concat();
        assert_eq!(
            check_chain("acme", &gap, None, None),
            (ChainStatus::Broken { seq: Some(4) }, None)
        );
        // A line that is not a record.
        let mut torn = lines.clone();
        torn[1] = "{\"org\":\"acme\",".to_owned();
        assert_eq!(
            check_chain("acme", &torn, None, None),
            (ChainStatus::Broken { seq: None }, None)
        );
    }

    fn key() -> SealKey {
        SealKey::derive(&mfa_step_core::HmacKey::from_bytes(&[7; 32]).unwrap())
    }

    #[test]
    fn seals_are_checked_when_the_host_has_the_key() {
        let sealed = stream("acme", 3, Some(&key()));
        assert!(matches!(
            check_chain("acme", &sealed, None, Some(key())).0,
            ChainStatus::Verified { through: 3, .. }
        ));
        // Unsealed records where seals are checked: broken at the first.
        let plain = stream("acme", 3, None);
        assert_eq!(
            check_chain("acme", &plain, None, Some(key())),
            (ChainStatus::Broken { seq: Some(1) }, None)
        );
    }
}
