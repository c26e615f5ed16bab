//! The console's audit viewer, served by the host. The WIT contract gives the component no way to
//! read the trail back, so the component decides everything (session, organization, filter, the
//! record of the view, every word) and answers with the canonical query in
//! [`QUERY_HEADER`]; here the host, which can read its own audit sink, fills in what the query asks:
//!
//! ```text
//! component answer ── QUERY_HEADER? ──no──▶ unchanged
//!        │ yes: header removed (it never reaches the client), AuditQuery::from_header
//!        ▼
//!   page: sink.newest_matching(org, dates, action, limit) ─┐ any read fails ──▶ 503: the
//!   export, or a user/outcome filter: sink.lines_matching  │  page says "try again", an
//!   sink.checkpoint(org)                                   │  export is not a file
//!   sink.lines_after(org, checkpoint, cap)                ─┘
//!        │
//!   rows: AuditQuery::matches on each line (user, outcome, and every other field again)
//!   chain check from the checkpoint's record on, with the core's Verifier, at most
//!   VERIFY_CAP records per view
//!        │  verified ──▶ sink.advance_checkpoint(org, last verified)   broken ──▶ unchanged
//!        ▼
//!   page: AuditQuery::fragment spliced between the markers │ export: body = csv / jsonl
//! ```
//!
//! The checkpoint makes a view cost the records written since the last one, not the whole
//! trail: the chain before it was verified then, and the record at the checkpoint must still
//! carry the hash it had (so a rewrite of it shows). A stream with more unverified records than
//! [`VERIFY_CAP`] (the first view of a large trail) is verified in steps, one per view, each
//! moving the checkpoint on; the page says how many records are left. The rows are read with
//! the filter's dates and action in the query (an index in SQLite and Postgres), so a narrow
//! filter reads a narrow slice; a page without a user or outcome filter reads only its newest
//! rows and has the others counted. A user or outcome filter is checked on every line of the
//! range, and an export holds every match, so those read the whole range. `mfa-step audit
//! verify` remains the tool that checks everything, seals and truncation against the store's
//! counts included.

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

/// The most records one view verifies: a view's chain check costs at most this many reads and
/// hash checks (a few hundred milliseconds), however long the unverified stretch.
pub const VERIFY_CAP: usize = 50_000;

/// The most records of a view's dates and action that one view or export reads: a page filtered
/// by user or outcome applies its filter to the newest of them (and says so), an export of more is
/// refused (narrow the dates, or `mfa-step audit export`). About 60 MB of lines at most.
pub const MAX_READ: usize = 100_000;

/// The trail as the viewer reads it: the sink serve writes to, and the seal key when the host
/// has one (then seals are checked too).
#[derive(Clone)]
pub struct AuditView {
    sink: Arc<dyn HostAuditSink>,
    seal: Option<SealKey>,
    /// The most records one view verifies ([`VERIFY_CAP`]; smaller in tests).
    cap: usize,
    /// The most records of a view's dates and action one view reads ([`MAX_READ`]; smaller in
    /// tests).
    read_max: usize,
}

impl AuditView {
    /// A viewer over `sink`, checking seals with the key derived from `hmac_key` (hex) if given.
    #[must_use]
    pub fn new(sink: Arc<dyn HostAuditSink>, hmac_key: Option<&str>) -> Self {
        let seal = hmac_key
            .and_then(|hex| mfa_step_core::HmacKey::from_hex(hex).ok())
            .map(|key| SealKey::derive(&key));
        Self {
            sink,
            seal,
            cap: VERIFY_CAP,
            read_max: MAX_READ,
        }
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
        let asked = query.clone();
        let read = tokio::task::spawn_blocking(move || view.read(&asked)).await;
        let mut read = match read {
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
                        format!(
                            "{}{}",
                            read.limited
                                .map(|all| query.scan_limited(self.read_max, all))
                                .unwrap_or_default(),
                            query.fragment_newest(&read.newest, read.total, &read.chain)
                        ),
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
            View::Csv | View::Jsonl => match &mut read {
                // Not a file: a partial export would look whole to an auditor.
                Some(read) if read.limited.is_some() => {
                    parts.status = StatusCode::PAYLOAD_TOO_LARGE;
                    parts.headers.remove(header::CONTENT_DISPOSITION);
                    parts.headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    with_body(parts, Bytes::from(query.export_too_large(self.read_max)))
                }
                Some(read) => {
                    // Every match, in stream order.
                    read.newest.reverse();
                    let export = query.export(&read.newest).unwrap_or_default();
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

    /// The records `query` keeps, newest first, and the chain's status, the checkpoint moved
    /// on when verified. `None`: the sink is not read back.
    fn read(&self, query: &AuditQuery) -> anyhow::Result<Option<Read>> {
        let fail = |e: mfa_step_core::kernel::ports::PortError| anyhow::anyhow!(e.0);
        let (org, filter) = (&query.org, &query.filter);
        let (from, to) = filter.seconds();
        let action = filter.action.as_deref();
        let mut limited = None;
        // The sink narrows by dates and action; the user and the outcome are checked only here,
        // on every line, so a page filtered by them reads every line in the range. Without them
        // a page reads its newest rows and has the rest counted.
        let read = if query.view == View::Page && filter.user.is_none() && filter.outcome.is_none()
        {
            self.sink
                .newest_matching(org, from, to, action, query.limit)
                .map_err(fail)?
                .map(|(lines, total)| (lines, Some(usize::try_from(total).unwrap_or(usize::MAX))))
        } else {
            // Counted once filtered; at most MAX_READ records of the range are read (a page then
            // says so, an export is refused), so a view never holds a whole trail in memory.
            self.sink
                .newest_matching(org, from, to, action, self.read_max)
                .map_err(fail)?
                .map(|(lines, in_range)| {
                    limited = (in_range > self.read_max as u64).then_some(in_range);
                    (lines, None)
                })
        };
        let Some((mut newest, total)) = read else {
            return Ok(None);
        };
        // Every field checked again on what the sink returned (a line that is not a record is
        // not shown: the chain check reports it).
        newest.retain(|line| query.matches(line));
        let total = total.unwrap_or(newest.len());
        let chain = self.verify(org)?;
        // The chain check covers the records from the checkpoint on; a record shown or exported
        // from before it is checked against its own hash and seal here, so that no status says
        // "verified" over a line rewritten since its stretch was verified.
        let chain = match self.first_altered(org, &newest) {
            Some(seq) => ChainStatus::Broken { seq: Some(seq) },
            None => chain,
        };
        Ok(Some(Read {
            newest,
            total,
            chain,
            limited,
        }))
    }

    /// The lowest `seq` among `lines` whose record does not match its own hash or seal (or does
    /// not parse as a record of `org`).
    fn first_altered(&self, org: &str, lines: &[String]) -> Option<u64> {
        lines
            .iter()
            .filter_map(|line| {
                let Ok(record) = Record::parse(line) else {
                    return Some(0);
                };
                let mut alone = Verifier::new(self.seal.clone());
                alone.resume(
                    org,
                    Head {
                        seq: record.seq.saturating_sub(1),
                        hash: record.prev.clone(),
                    },
                );
                alone.check(line).is_err().then_some(record.seq)
            })
            .min()
    }

    /// Verifies `org`'s chain from its checkpoint on, at most [`AuditView::cap`] records, and
    /// moves the checkpoint to the last one verified.
    fn verify(&self, org: &str) -> anyhow::Result<ChainStatus> {
        let fail = |e: mfa_step_core::kernel::ports::PortError| anyhow::anyhow!(e.0);
        let checkpoint = self.sink.checkpoint(org).map_err(fail)?;
        let since = checkpoint.as_ref().map_or(0, |c| c.seq);
        // The checkpoint's own record comes first (its hash is checked again), then the cap.
        let limit = self.cap + usize::from(since > 0);
        let Some(lines) = self.sink.lines_after(org, since, limit).map_err(fail)? else {
            return Ok(ChainStatus::NotVerified);
        };
        let (mut chain, head) = check_chain(org, &lines, checkpoint, self.seal.clone());
        if lines.len() >= limit
            && let ChainStatus::Verified {
                through,
                checked,
                since,
            } = chain
        {
            // The batch was full: the records after it wait for the next view.
            let newest = self.sink.head(org).map_err(fail)?.map_or(0, |h| h.seq);
            if newest > through {
                chain = ChainStatus::Partial {
                    through,
                    checked,
                    since,
                    remaining: newest - through,
                };
            }
        }
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
        Ok(chain)
    }
}

/// What was read.
struct Read {
    /// The records the query keeps, newest first: all of them, or a page's newest.
    newest: Vec<String>,
    /// How many it keeps in all.
    total: usize,
    /// The chain's status.
    chain: ChainStatus,
    /// How many records the dates and action held when more than the viewer reads
    /// ([`MAX_READ`]): only the newest of them were read.
    limited: Option<u64>,
}

/// Checks `org`'s stream (`lines`, in `seq` order: from the checkpoint's record on, or the
/// whole stream; records before the checkpoint are skipped) after `checkpoint` with the core's
/// [`Verifier`]: the record at the checkpoint must be there and still carry its hash, and every
/// later one must verify. Returns the status, and the new checkpoint when everything verified.
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
    let mut vouched = since == 0;
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
            vouched = true;
            continue;
        }
        if !vouched {
            // The record the checkpoint vouched for is gone, later ones still there.
            return (ChainStatus::Broken { seq: Some(since) }, None);
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
    if !vouched {
        // The stream ends before the record the checkpoint vouched for: its tail was removed,
        // from just after the last record read (when any before the checkpoint was) or from
        // the checkpoint on.
        let seq = if (1..since).contains(&last) {
            last + 1
        } else {
            since
        };
        return (ChainStatus::Broken { seq: Some(seq) }, None);
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

    #[test]
    fn a_checkpoint_whose_record_is_gone_is_a_break_there() {
        let lines = stream("acme", 5, None);
        // Record 3 deleted; the checkpoint vouched for it, and 4 still links to it.
        let gap: Vec<String> = [&lines[..2], &lines[3..]].concat();
        assert_eq!(
            check_chain("acme", &gap[2..], Some(head_at(&lines, 3)), None),
            (ChainStatus::Broken { seq: Some(3) }, None)
        );
        // Everything from the checkpoint on is gone.
        assert_eq!(
            check_chain("acme", &[], Some(head_at(&lines, 3)), None),
            (ChainStatus::Broken { seq: Some(3) }, None)
        );
    }

    /// A SQLite sink that notes what the viewer asks of it.
    struct Counting {
        inner: crate::backends::SqliteAuditSink,
        /// Each `lines_after`: the `seq` asked from, the limit, how many lines came back.
        after: std::sync::Mutex<Vec<(u64, usize, usize)>>,
        /// How many lines each read of rows returned.
        rows: std::sync::Mutex<Vec<usize>>,
    }

    impl Counting {
        fn open(dir: &std::path::Path) -> Arc<Self> {
            Arc::new(Self {
                inner: crate::backends::SqliteAuditSink::open(dir.join("audit.sqlite")).unwrap(),
                after: std::sync::Mutex::default(),
                rows: std::sync::Mutex::default(),
            })
        }

        fn last_read(&self) -> (u64, usize, usize) {
            *self.after.lock().unwrap().last().unwrap()
        }

        /// Rewrites record `seq` of `org` in the table, its hash column kept.
        fn tamper(&self, org: &str, seq: u64) {
            let conn = rusqlite::Connection::open(self.inner.path()).unwrap();
            let changed = conn
                .execute(
                    "UPDATE audit_log SET line = replace(line, '\"actor\":\"u1\"', \
                     '\"actor\":\"u2\"') WHERE org = ?1 AND seq = ?2",
                    rusqlite::params![org, i64::try_from(seq).unwrap()],
                )
                .unwrap();
            assert_eq!(changed, 1);
        }
    }

    impl mfa_step_core::kernel::ports::AuditSink for Counting {
        fn head(&self, org: &str) -> mfa_step_core::kernel::ports::PortResult<Option<Head>> {
            self.inner.head(org)
        }
        fn append(
            &self,
            entry: &mfa_step_core::kernel::ports::AuditEntry,
        ) -> Result<(), mfa_step_core::kernel::ports::AppendError> {
            self.inner.append(entry)
        }
    }

    impl HostAuditSink for Counting {
        fn lines_after(
            &self,
            org: &str,
            from_seq: u64,
            limit: usize,
        ) -> mfa_step_core::kernel::ports::PortResult<Option<Vec<String>>> {
            let lines = self.inner.lines_after(org, from_seq, limit)?;
            let n = lines.as_ref().map_or(0, Vec::len);
            self.after.lock().unwrap().push((from_seq, limit, n));
            Ok(lines)
        }
        fn lines_matching(
            &self,
            org: &str,
            from_at: Option<i64>,
            to_at: Option<i64>,
            action: Option<&str>,
        ) -> mfa_step_core::kernel::ports::PortResult<Option<Vec<String>>> {
            let lines = self.inner.lines_matching(org, from_at, to_at, action)?;
            let n = lines.as_ref().map_or(0, Vec::len);
            self.rows.lock().unwrap().push(n);
            Ok(lines)
        }
        fn newest_matching(
            &self,
            org: &str,
            from_at: Option<i64>,
            to_at: Option<i64>,
            action: Option<&str>,
            limit: usize,
        ) -> mfa_step_core::kernel::ports::PortResult<Option<(Vec<String>, u64)>> {
            let read = self
                .inner
                .newest_matching(org, from_at, to_at, action, limit)?;
            let n = read.as_ref().map_or(0, |(lines, _)| lines.len());
            self.rows.lock().unwrap().push(n);
            Ok(read)
        }
        fn checkpoint(&self, org: &str) -> mfa_step_core::kernel::ports::PortResult<Option<Head>> {
            self.inner.checkpoint(org)
        }
        fn advance_checkpoint(
            &self,
            org: &str,
            head: &Head,
            at: i64,
        ) -> mfa_step_core::kernel::ports::PortResult<()> {
            self.inner.advance_checkpoint(org, head, at)
        }
    }

    fn viewer(sink: &Arc<Counting>, cap: usize) -> AuditView {
        AuditView {
            sink: sink.clone(),
            seal: None,
            cap,
            read_max: MAX_READ,
        }
    }

    fn page(org: &str, filter: mfa_step_core::web::console::audit::Filter) -> AuditQuery {
        AuditQuery {
            org: org.to_owned(),
            filter,
            lang: "en",
            limit: 100,
            view: View::Page,
        }
    }

    fn chain_of(view: &AuditView, org: &str) -> ChainStatus {
        view.read(&page(org, Default::default()))
            .unwrap()
            .unwrap()
            .chain
    }

    fn checkpoint_seq(sink: &Counting, org: &str) -> Option<u64> {
        sink.checkpoint(org).unwrap().map(|h| h.seq)
    }

    #[test]
    fn a_view_after_a_checkpoint_reads_and_checks_only_the_records_from_it_on() {
        use crate::backends::audit::tests::append;
        let dir = tempfile::tempdir().unwrap();
        let sink = Counting::open(dir.path());
        for i in 0..10 {
            append(sink.as_ref(), "acme", &format!("r{i}"));
        }
        append(sink.as_ref(), "globex", "other");
        let view = viewer(&sink, VERIFY_CAP);
        assert_eq!(
            chain_of(&view, "acme"),
            ChainStatus::Verified {
                through: 10,
                checked: 10,
                since: 0
            }
        );
        assert_eq!(sink.last_read(), (0, VERIFY_CAP, 10));
        assert_eq!(checkpoint_seq(&sink, "acme"), Some(10));

        // A record before the checkpoint is rewritten: the chain check does not read it (it was
        // verified when the checkpoint was made); the whole-trail check still finds it.
        sink.tamper("acme", 3);
        append(sink.as_ref(), "acme", "r10");
        append(sink.as_ref(), "acme", "r11");
        assert_eq!(
            view.verify("acme").unwrap(),
            ChainStatus::Verified {
                through: 12,
                checked: 2,
                since: 10
            }
        );
        assert_eq!(
            sink.last_read(),
            (10, VERIFY_CAP + 1, 3),
            "the checkpoint's record and the two after it, nothing before"
        );
        // A page that shows it checks each row it shows against its own hash: no "verified"
        // over a rewritten row.
        assert_eq!(
            chain_of(&view, "acme"),
            ChainStatus::Broken { seq: Some(3) }
        );
        let whole = sink
            .inner
            .lines_after("acme", 0, usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(
            check_chain("acme", &whole, None, None),
            (ChainStatus::Broken { seq: Some(3) }, None)
        );

        // The record at the checkpoint, or one after it, rewritten: the chain check finds it
        // broken there and keeps the checkpoint (a page would say 3, its first broken row).
        append(sink.as_ref(), "acme", "r12");
        sink.tamper("acme", 13);
        for _ in 0..2 {
            assert_eq!(
                view.verify("acme").unwrap(),
                ChainStatus::Broken { seq: Some(13) }
            );
            assert_eq!(checkpoint_seq(&sink, "acme"), Some(12));
        }
        sink.tamper("acme", 12);
        assert_eq!(
            view.verify("acme").unwrap(),
            ChainStatus::Broken { seq: Some(12) }
        );
        assert_eq!(checkpoint_seq(&sink, "acme"), Some(12));
        // The other organization's stream was never read for acme's views.
        assert_eq!(checkpoint_seq(&sink, "globex"), None);
    }

    #[test]
    fn a_long_unverified_stretch_is_verified_in_capped_steps_each_moving_the_checkpoint() {
        use crate::backends::audit::tests::append;
        let dir = tempfile::tempdir().unwrap();
        let sink = Counting::open(dir.path());
        for i in 0..10 {
            append(sink.as_ref(), "acme", &format!("r{i}"));
        }
        let view = viewer(&sink, 4);
        let steps = [
            (
                ChainStatus::Partial {
                    through: 4,
                    checked: 4,
                    since: 0,
                    remaining: 6,
                },
                (0, 4, 4),
            ),
            (
                ChainStatus::Partial {
                    through: 8,
                    checked: 4,
                    since: 4,
                    remaining: 2,
                },
                (4, 5, 5),
            ),
            (
                ChainStatus::Verified {
                    through: 10,
                    checked: 2,
                    since: 8,
                },
                (8, 5, 3),
            ),
            (
                ChainStatus::Verified {
                    through: 10,
                    checked: 0,
                    since: 10,
                },
                (10, 5, 1),
            ),
        ];
        for (expected, read) in steps {
            assert_eq!(chain_of(&view, "acme"), expected);
            assert_eq!(sink.last_read(), read);
        }
        assert_eq!(checkpoint_seq(&sink, "acme"), Some(10));

        // A break inside the next step stops it there, the checkpoint where the last step left it.
        for i in 0..6 {
            append(sink.as_ref(), "acme", &format!("s{i}"));
        }
        assert!(matches!(
            chain_of(&view, "acme"),
            ChainStatus::Partial { through: 14, .. }
        ));
        sink.tamper("acme", 15);
        assert_eq!(
            chain_of(&view, "acme"),
            ChainStatus::Broken { seq: Some(15) }
        );
        assert_eq!(checkpoint_seq(&sink, "acme"), Some(14));
    }

    #[test]
    fn the_rows_are_the_records_the_whole_filter_keeps_and_the_page_counts_them_all() {
        use crate::backends::audit::tests::append_at;
        use mfa_step_core::audit::Action;
        use mfa_step_core::web::console::audit::Filter;
        let dir = tempfile::tempdir().unwrap();
        let sink = Counting::open(dir.path());
        // 2026-11-29, then three on 2026-11-30 (one of another action), then 2026-12-01.
        let day = 86_400;
        let t = 1_795_996_800;
        let records: Vec<String> = [
            (Action::CodeSent, t - 1),
            (Action::CodeSent, t),
            (Action::CodeVerified, t + 60),
            (Action::CodeSent, t + day - 1),
            (Action::CodeSent, t + day),
        ]
        .into_iter()
        .map(|(action, at)| append_at(sink.as_ref(), "acme", action, at).line)
        .collect();
        append_at(sink.as_ref(), "globex", Action::CodeSent, t);
        let view = viewer(&sink, VERIFY_CAP);
        let filter = Filter {
            action: Some("code_sent".to_owned()),
            from: Some("2026-11-30".to_owned()),
            to: Some("2026-11-30".to_owned()),
            ..Filter::default()
        };
        let mut query = page("acme", filter.clone());
        let read = view.read(&query).unwrap().unwrap();
        assert_eq!(read.newest, vec![records[3].clone(), records[1].clone()]);
        assert_eq!(read.total, 2);
        // A page of one row: the newest, and both counted.
        query.limit = 1;
        let read = view.read(&query).unwrap().unwrap();
        assert_eq!((read.newest.len(), read.total), (1, 2));
        assert_eq!(
            sink.rows.lock().unwrap().last(),
            Some(&1),
            "one line read, the rest counted"
        );
        let html = query.fragment_newest(&read.newest, read.total, &read.chain);
        assert!(html.contains("newest first: 1 of 2"), "{html}");
        assert!(html.contains("<th scope=\"row\">4</th>"), "{html}");
        // An export holds every match, whatever a page's limit.
        query.view = View::Jsonl;
        let read = view.read(&query).unwrap().unwrap();
        assert_eq!(read.newest, vec![records[3].clone(), records[1].clone()]);
        // User and outcome are checked here, on the lines the sink returned.
        let nobody = page(
            "acme",
            Filter {
                user: Some("u2".to_owned()),
                ..filter.clone()
            },
        );
        let read = view.read(&nobody).unwrap().unwrap();
        assert_eq!((read.newest.len(), read.total), (0, 0));
        let failures = page(
            "acme",
            Filter {
                outcome: Some("failure".to_owned()),
                ..Filter::default()
            },
        );
        assert!(view.read(&failures).unwrap().unwrap().newest.is_empty());
        // No filter: every record of acme, newest first.
        let read = view
            .read(&page("acme", Filter::default()))
            .unwrap()
            .unwrap();
        assert_eq!(
            read.newest,
            records.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert_eq!(read.total, 5);
        let mut first_two = page("acme", Filter::default());
        first_two.limit = 2;
        let read = view.read(&first_two).unwrap().unwrap();
        assert_eq!((read.newest.len(), read.total), (2, 5));
        assert_eq!(sink.rows.lock().unwrap().last(), Some(&2));
    }

    #[test]
    fn a_view_reads_at_most_its_limit_of_a_range_a_page_says_so_and_an_export_is_refused() {
        use crate::backends::audit::tests::append_at;
        use mfa_step_core::audit::Action;
        use mfa_step_core::web::console::audit::Filter;
        let dir = tempfile::tempdir().unwrap();
        let sink = Counting::open(dir.path());
        let t = 1_795_996_800;
        for i in 0..12 {
            append_at(sink.as_ref(), "acme", Action::CodeSent, t + i);
        }
        let mut view = viewer(&sink, VERIFY_CAP);
        view.read_max = 5;
        // Filtered by user: applied to the newest five of the twelve, and the page says so.
        let filter = Filter {
            user: Some("u1".to_owned()),
            ..Filter::default()
        };
        let query = page("acme", filter.clone());
        let read = view.read(&query).unwrap().unwrap();
        assert_eq!((read.newest.len(), read.limited), (5, Some(12)));
        assert_eq!(
            sink.rows.lock().unwrap().last(),
            Some(&5),
            "five lines read"
        );
        let note = query.scan_limited(5, 12);
        assert!(note.contains("newest 5 of the 12 records"), "{note}");
        // An export of more than that is no file.
        let export = AuditQuery {
            view: View::Csv,
            ..page("acme", Filter::default())
        };
        let read = view.read(&export).unwrap().unwrap();
        assert_eq!(read.limited, Some(12));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (parts, body) = rt.block_on(async {
            let (mut parts, _) = hyper::Response::new(()).into_parts();
            parts.headers.insert(
                QUERY_HEADER,
                HeaderValue::from_str(&export.header()).unwrap(),
            );
            parts.headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"audit.csv\""),
            );
            view.complete(parts, Bytes::new()).await
        });
        assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(parts.headers.get(header::CONTENT_DISPOSITION).is_none());
        assert!(parts.headers.get(QUERY_HEADER).is_none());
        assert!(String::from_utf8_lossy(&body).starts_with("More than 5 records match"));
        // Within the limit, the export is whole.
        view.read_max = 12;
        let read = view.read(&export).unwrap().unwrap();
        assert_eq!((read.newest.len(), read.limited), (12, None));
    }
}
