//! An organization's audit stream on a key-value store that has an atomic increment and no usable
//! compare-and-swap: how the adapter keeps the `audit` contract on Spin.
//!
//! The contract (`wit/audit.wit`): `append` stores a record only if it links to the stream's head
//! (`seq` = head + 1 and `prev` = the head's hash, or `seq` 1 and 64 zeros), checked and written
//! as one step, and answers `conflict` (writing nothing) otherwise. A file or a SQL table does
//! this under one lock. Spin's key-value store has no lock and no conditional write that holds on
//! every backend (its compare-and-swap is unreliable on Redis), so this module builds the step out
//! of the one atomic operation it does have, `increment`, which exactly one caller sees return 1.
//!
//! # Keys (see [`crate::mapping`])
//!
//! | key | kind | holds |
//! |---|---|---|
//! | `audit:<org>:<seq>` | value | the record's line, byte for byte; written once |
//! | `audit-claim:<org>:<seq>:<epoch>` | counter | who owns position `seq` (the caller that saw 1) |
//! | `audit-newest:<org>` | value | the newest record's `seq`, in decimal: where `head` starts looking |
//! | `audit-len:<org>` | counter | how many records were appended, as adapters before `audit-newest` counted them |
//! | `audit-stall:<org>` | value | `{"seq", "epoch", "since_ms"}`: a claimed position seen unwritten |
//! | `audit-void:<org>:<seq>` | value | `1`: a position reserved ahead that its reserver gave up |
//!
//! # Append
//!
//! ```text
//!   link?  record seq-1 exists and its line's hash = prev   (or seq = 1 and prev = 64 zeros)
//!     |  no --------------------------------------------------------------> conflict
//!     v
//!   reserved?  this writer reserved seq (below) ------------------------------> write
//!     v
//!   claim  audit-claim:<org>:<seq>:<epoch> reads 0 (not read by a writer that lost before),
//!          and increment(it) == 1 ?
//!     |  no: (lost 8 to 23 races in a row: reserve seq+1, below)
//!     |      record seq exists, or appears within 31 ms? - yes -> conflict (after a pause of
//!     |      0-4 ms if this writer had not lost before)
//!     |      otherwise its owner is writing it, or died after claiming:
//!     |      seq marked void? - yes: epoch 1, claim again (a writer holding a reservation
//!     |                              leaves the claim to others, and waits once more)
//!     |      (give up a reservation of seq+1: mark it void; if the claim was left, claim now)
//!     |      mark it stalled (since now); stalled for STALL_TIMEOUT? - no --> conflict
//!     |                                                 yes: epoch + 1, claim again
//!     v  yes
//!   write  audit:<org>:<seq> = line, audit-newest:<org> = seq   (one set_many, which on Spin
//!          also holds the unit's values, see `unit`; only within CLAIM_BUDGET of claiming; else
//!          unavailable)
//! ```
//!
//! Why this is the contract's atomic step: a record is written only by the caller that owns its
//! position, and the owner checked, before writing, that the record before it exists with the
//! hash it links to (before claiming, except a reservation, claimed ahead: see "Reserving ahead").
//! Records are written once and never change, so that check still holds when it writes; and a
//! record is written only right after an existing record, so the stream has no gaps and "record
//! `seq` exists" means "the head is at least `seq`". Two writers racing for one position
//! both pass the link check, but only one sees its claim return 1: the other gets `conflict`, as
//! from a locked sink. Nothing is written before the claim is won, so a conflict writes nothing.
//!
//! # Head
//!
//! `audit-newest` is written with its record in one `set_many` (one transaction on Spin's SQLite
//! store, one `MSET` on Redis: the two stores the adapter supports, README "Run on Spin"), so it
//! never names a record that is not there (a retry after a failure leaves it alone once a later
//! record has moved it on). Records are written in order, so it is the head, or a lower
//! bound of it while an adapter of an older version runs beside this one. Those adapters counted
//! records in `audit-len` after writing them instead (an increment, which on Spin's SQLite store
//! cost one more transaction, one more sync to disk, per record), so a store without
//! `audit-newest` starts from its count. `head` reads where to start, `n`, and requires record `n`
//! to exist. It steps forward while record `n + 1` exists only where a later record can be: when
//! `n` is a count, or when this instance has seen a record past `n` (a writer that lost its
//! position to an older adapter's record read that record, and its relink steps past it: one
//! conflict per record an older adapter wrote, never a loop). Beside adapters of this version the
//! step costs a read per append and finds nothing, so it is not taken. The hash is read from the
//! newest record's line (its `hash` field; `append` refuses a line whose `prev` and `hash` fields
//! differ from the entry's, so the two can never disagree).
//!
//! Both keys are also what `mfa-step audit verify --spin-kv` holds a trail to: a trail that ends
//! before either was truncated.
//!
//! # Reserving ahead
//!
//! Writers that lost a position all relink once its record is there, and the next position goes
//! to whichever claims first: at random, when the store runs calls side by side (Redis), so that
//! with 16 writers on one organization some lost 32 races in a row and their calls failed closed
//! ("the stream stayed busy", a 503 every few thousand appends). A writer that has lost
//! [`RESERVE_FROM_LOSSES`] races in a row therefore claims position `seq + 1` as soon as it loses
//! `seq`, before record `seq` is written (epoch 0, the same claim counter, so again exactly one
//! writer owns it: the reserver, or one that claimed it first). When record `seq` comes, it
//! relinks to `seq + 1` and writes there without claiming. It checks the link first, as any
//! owner, and writes within [`CLAIM_BUDGET`] of the reservation; since others start timing a
//! stall of `seq + 1` only once record `seq` exists, after the reservation, takeover keeps its
//! margin.
//!
//! A reservation is given up, marked `audit-void`, when record `seq` does not come within the
//! owner's wait (31 ms), when the writer's next attempt is at another position or too late to
//! write (that attempt answers `conflict`: the writer relinks), and when its call fails before
//! appending again (the component's `head` or `append` fails). Writers that find a void position
//! claimed and unwritten take it in epoch 1 after the 31 ms wait, not after [`STALL_TIMEOUT`]; a
//! writer holding a reservation leaves such a position to the others and keeps its reservation
//! (giving it up there made the next position void too), and claims it itself if none did.
//! Writers past [`RESERVE_UNTIL_LOSSES`] do not reserve: the component relinks at most 32 times,
//! and a call that gives up leaves nothing to give a reservation up. Measured on Redis
//! (`BENCHMARKS.md`): no writer lost more than 12 to 14 races in a row, and no 503, where up to 11
//! calls a 15 s run had failed (2 or more in most runs).
//!
//! # Residual risks
//!
//! - **A writer that dies between its claim and its write** (the instance is killed, the store
//!   fails on the write) leaves a position claimed but empty, and no later record can skip it
//!   without leaving a gap. Every append to that organization then answers `conflict` (the
//!   component fails the operation closed: "the stream stayed busy") until the position is taken
//!   over: the first writer to find it empty records when it did (`audit-stall`), and once
//!   [`STALL_TIMEOUT`] has passed a writer claims the position again in the next *epoch* (a fresh
//!   claim counter, so again exactly one writer wins) and writes its own record there. The dead
//!   writer's record was never acknowledged, so nothing acknowledged is lost. **An organization's
//!   audited operations fail for up to [`STALL_TIMEOUT`] after such a crash.** A writer that dies
//!   holding a reservation (or whose store fails as it would give one up) leaves the same: its
//!   position is taken over [`STALL_TIMEOUT`] after its record-before is written. Adapters older
//!   than reservations do not read `audit-void`: beside this one, they wait for a void position
//!   as for a stalled one, until a writer of this version takes it.
//! - **Takeover relies on time.** An owner gives up without writing if more than [`CLAIM_BUDGET`]
//!   has passed since it claimed (monotonic clock), and a position is taken over only after
//!   [`STALL_TIMEOUT`] (wall clock, compared between instances). Two records at one position (a
//!   broken chain, which the verifier reports) are possible only if a write is delayed inside the
//!   store's client or network by more than `STALL_TIMEOUT - CLAIM_BUDGET` (3 s) or the instances'
//!   wall clocks differ by about as much.
//! - **Retrying the same entry is not idempotent**: a claim counter cannot say who holds it, so a
//!   writer cannot tell its own earlier claim from another's. The component never retries an entry
//!   (after `unavailable` it fails the operation, and a new attempt builds a new record), so this
//!   costs nothing but the takeover wait above.
//! - **A write that fails but was applied** (the store answers an error after storing) leaves a
//!   record of an operation the component then undoes, as with any sink that fails after storing.
//! - **The store's own guarantees** are assumed: single-key reads see the latest completed write
//!   (Spin's SQLite store; a single Redis, not a replica that lags), and an acknowledged `set` is
//!   durable (Redis needs `appendfsync always`). Spin 3.0 and 3.1 put a per-instance write-behind
//!   cache in front of the store, which breaks both; Spin 3.2 removed it and this adapter targets
//!   Spin 4.
//! - **Records deleted from the store** are the verifier's to find, except the newest: `head`
//!   refuses to answer if the record `audit-newest` names is missing. When pruning exported
//!   records, keep each organization's newest one.
//! - **Claims deleted from the store** would let a position be claimed twice: a record written
//!   past `audit-newest` (by an adapter of an older version) is found through its claim, which is
//!   how a writer learns of it without looking past the mark on every append. Never prune
//!   `audit-claim:` keys, or restore records without their claims.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mapping;

/// The `prev` of an organization's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long after claiming a position its owner may still write the record; past this it gives up
/// (`unavailable`) and leaves the position to be taken over. One second is hundreds of times what
/// the claim's and the write's round trips take on Spin's SQLite store or on a Redis nearby, even
/// under load; an owner slower than that fails its call closed.
pub const CLAIM_BUDGET: Duration = Duration::from_secs(1);

/// How long a claimed position must be seen unwritten before another writer takes it over. Must
/// exceed [`CLAIM_BUDGET`] by more than any delay of a write inside the store's client or network
/// plus any difference between the instances' wall clocks: 4 s leaves 3 s for both, and blocks an
/// organization whose writer died holding a position for at most 5 s, which `tests/spin` measures
/// with two `spin up` sharing a Redis (twice that if a writer that reserved the next position
/// died too, or the store failed as it would mark the reservation void: "Residual risks").
pub const STALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Attempts at writing the record once the position is owned (each within [`CLAIM_BUDGET`]).
const WRITE_ATTEMPTS: usize = 3;

/// Claims tried by one append: the first epoch, the epoch a stall was last seen in, the next one.
const CLAIM_STEPS: usize = 4;

/// How long a writer that lost a position waits for the owner's record, in steps (31 ms in all),
/// before it looks for a stall. The owner is almost always between its claim and its write, a
/// round trip away: relinking at once would read the same head, lose the same position again
/// and spend store round trips the owner needs (Spin's SQLite store runs one at a time). Seeing
/// the record, the writer relinks after it; with 16 writers on one organization, this turned
/// 0.2 % of appends failing after 32 lost races ("stayed busy") into none (`BENCHMARKS.md`).
pub const OWNER_WAITS_MS: [u64; 5] = [1, 2, 4, 8, 16];

/// Races lost in a row from which a writer that loses a position claims the one after it at once,
/// before the owner's record is there ("Reserving ahead" in the module docs).
pub const RESERVE_FROM_LOSSES: u32 = 8;

/// Races lost in a row from which a writer no longer reserves: the component relinks at most 32
/// times (`wit/audit.wit`), and a writer whose call gives up would leave its reserved position
/// claimed and unwritten, stalling its organization.
pub const RESERVE_UNTIL_LOSSES: u32 = 24;

/// The key-value operations the stream needs. Errors are messages that never hold a value.
pub trait Kv {
    /// The value at `key`, if any.
    ///
    /// # Errors
    /// The store could not be read.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;

    /// Whether a value is stored at `key`.
    ///
    /// # Errors
    /// The store could not be read.
    fn exists(&self, key: &str) -> Result<bool, String>;

    /// Stores `value` at `key`.
    ///
    /// # Errors
    /// The store could not be written.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;

    /// Stores every pair of `writes`, as one atomic write where the store has one, else one by
    /// one in their order. The stream writes its records with this, and only them (a record and
    /// `audit-newest`, or the record alone), so a store may write other changes with them.
    ///
    /// # Errors
    /// The store could not be written; on a store without an atomic batch, a prefix of `writes`
    /// may be stored.
    fn set_many(&self, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
        writes
            .iter()
            .try_for_each(|(key, value)| self.set(key, value))
    }

    /// Atomically adds `delta` to the counter at `key` (absent = 0) and returns the new value.
    ///
    /// # Errors
    /// The store could not be written.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String>;

    /// The newest position of `org`'s stream at which this instance has read or written a record,
    /// if any. Records are never changed or taken back, so it is a lower bound of the head; past
    /// `audit-newest`, it shows records an adapter of an older version wrote (see [`head`]).
    fn newest_seen(&self, org: &str) -> Option<u64>;

    /// The counter at `key` (absent = 0), read without writing ([`mapping::decode_counter`]).
    ///
    /// # Errors
    /// The store could not be read, or `key` holds something else than a counter.
    fn counter(&self, key: &str) -> Result<i64, String> {
        self.get(key)?.map_or(Ok(0), |bytes| {
            mapping::decode_counter(&bytes).ok_or_else(|| {
                format!("{key} holds no counter: the store was changed outside the adapter")
            })
        })
    }
}

/// The clocks the stream needs: time is a parameter, so that tests step it.
pub trait Clock {
    /// Wall-clock time in Unix milliseconds: compared between instances, so only used with a
    /// margin ([`STALL_TIMEOUT`]).
    fn unix_millis(&self) -> u64;

    /// A monotonic reading, to time this instance's own steps ([`CLAIM_BUDGET`]).
    fn monotonic(&self) -> Duration;

    /// Waits `pause` (a few milliseconds: a writer that lost a position waits for its owner's
    /// record, see [`OWNER_WAITS_MS`]).
    fn pause(&self, pause: Duration);
}

/// The record to append, as the component sends it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The organization whose stream it joins.
    pub org_id: &'a str,
    /// Its position.
    pub seq: u64,
    /// The hash of the record it follows.
    pub prev: &'a str,
    /// Its own hash.
    pub hash: &'a str,
    /// Its line, stored byte for byte.
    pub line: &'a str,
    /// How many races for a position its writer lost since it last appended a record (0 on a
    /// first attempt): the writers that have waited longest relink first.
    pub lost: u32,
}

/// The newest record of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its position.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// A position a writer claimed ahead of the record it follows (see "Reserving ahead"): its
/// claim, taken with an increment that returned 1, is the writer's until it writes the record
/// there, within [`CLAIM_BUDGET`] of `claimed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    org_id: String,
    seq: u64,
    claimed_at: Duration,
}

/// Why a record was not appended (the WIT's `audit-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The record does not link to the head, or another writer holds its position: nothing was
    /// written; read the head again and relink.
    Conflict,
    /// The record was refused or could not be stored.
    Unavailable(String),
}

impl From<String> for AppendError {
    fn from(message: String) -> Self {
        Self::Unavailable(message)
    }
}

/// The chain fields of a stored line.
#[derive(Deserialize)]
struct Link {
    prev: String,
    hash: String,
}

fn link_of(line: &[u8]) -> Option<Link> {
    serde_json::from_slice(line).ok()
}

/// A claimed position seen unwritten: since when (wall clock), and in which epoch.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stall {
    seq: u64,
    epoch: u32,
    since_ms: u64,
}

/// The hash of stored record `seq`, read from its line.
fn stored_hash(org: &str, seq: u64, line: &[u8]) -> Result<String, String> {
    link_of(line).map(|l| l.hash).ok_or_else(|| {
        format!(
            "audit record {seq} of organization {org:?} has no readable hash: the store was \
             changed outside the adapter"
        )
    })
}

/// The head of `org`'s stream, or `None` before its first record.
///
/// # Errors
/// The store could not be read, or it was changed outside the adapter (the count is negative, the
/// record it names is missing, or a record has no readable hash).
pub fn head(kv: &impl Kv, org: &str) -> Result<Option<Head>, String> {
    let (counted, marked) = start(kv, org)?;
    let mut head = None;
    if counted > 0 {
        let line = kv.get(&mapping::audit_key(org, counted))?.ok_or_else(|| {
            format!(
                "audit record {counted} of organization {org:?} is missing although it was \
                 stored: the store was changed outside the adapter (when pruning exported \
                 records, keep each organization's newest one)"
            )
        })?;
        head = Some(Head {
            seq: counted,
            hash: stored_hash(org, counted, &line)?,
        });
    }
    // Records after it: written by an adapter of an older version, which counted them after
    // writing them, or in a store whose `audit-newest` an older adapter left behind. Beside
    // adapters of this version `audit-newest` is the head, so the next record is looked for only
    // when it is not there (the start is a count), or when this instance has seen a record past
    // it: an append that lost its position to an older adapter's record saw that record, and its
    // relink steps past it. Looking always cost every append a read, and every writer that lost a
    // race one more each time it relinked.
    let past_mark = kv.newest_seen(org).is_some_and(|seen| seen > counted);
    if marked && !past_mark {
        return Ok(head);
    }
    let mut seq = counted;
    while let Some(next) = seq.checked_add(1) {
        let Some(line) = kv.get(&mapping::audit_key(org, next))? else {
            break;
        };
        head = Some(Head {
            seq: next,
            hash: stored_hash(org, next, &line)?,
        });
        seq = next;
    }
    Ok(head)
}

/// Where `head` starts, and whether from `audit-newest`: the record it names, else (a store
/// written by an adapter of an older version) the count in `audit-len`; 0 before the first record.
fn start(kv: &impl Kv, org: &str) -> Result<(u64, bool), String> {
    let changed = |what: String| {
        format!("{what} of organization {org:?}: the store was changed outside the adapter")
    };
    if let Some(newest) = read_newest(kv, org)? {
        return newest
            .filter(|&seq| seq > 0)
            .map(|seq| (seq, true))
            .ok_or_else(|| changed("the newest audit record's position is unreadable".to_owned()));
    }
    let counted = kv.counter(&mapping::audit_len_key(org))?;
    u64::try_from(counted)
        .map(|seq| (seq, false))
        .map_err(|_| changed(format!("the audit record count is negative ({counted})")))
}

/// `org`'s `audit-newest`: `None` when absent, `Some(None)` when it does not parse.
fn read_newest(kv: &impl Kv, org: &str) -> Result<Option<Option<u64>>, String> {
    Ok(kv
        .get(&mapping::audit_newest_key(org))?
        .map(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<u64>().ok()))
}

/// Appends `entry` if it links to the head of its stream (see the module docs for how).
///
/// # Errors
/// [`AppendError::Conflict`] when the record does not link to the head or another writer holds
/// its position (nothing written); [`AppendError::Unavailable`] when the line is refused (empty,
/// more than one line, or its `prev`/`hash` fields differ from the entry's) or the store fails.
pub fn append(kv: &impl Kv, clock: &impl Clock, entry: &Entry<'_>) -> Result<(), AppendError> {
    // A caller that keeps nothing between its attempts gives up what this one reserved.
    let mut reserved = None;
    let appended = append_reserving(kv, clock, entry, &mut reserved);
    abandon(kv, &mut reserved)?;
    appended
}

/// [`append`] by a writer that keeps what it reserved between its attempts (`reserved`): a writer
/// far behind in the race reserves the position after the one it lost, and writes its next attempt
/// there ("Reserving ahead" in the module docs).
///
/// # Errors
/// As [`append`].
pub fn append_reserving(
    kv: &impl Kv,
    clock: &impl Clock,
    entry: &Entry<'_>,
    reserved: &mut Option<Reservation>,
) -> Result<(), AppendError> {
    check_line(entry)?;
    // A reservation for another position (the writer relinked elsewhere): given up, so that
    // nobody waits for it. One for this position stays in `reserved` until it is written, so
    // that a call failing before then still gives it up (the component's `abandon_reserved`).
    if let Some(stale) = reserved.take_if(|r| r.org_id != entry.org_id || r.seq != entry.seq) {
        give_up(kv, &stale)?;
    }
    if !links(kv, entry)? {
        return Err(AppendError::Conflict);
    }
    let key = mapping::audit_key(entry.org_id, entry.seq);
    if let Some(mine) = reserved.take() {
        if clock.monotonic().saturating_sub(mine.claimed_at) >= CLAIM_BUDGET {
            // Too late to write: nothing was sent, so the position is given up at once (taken in
            // its next epoch, by this writer's relink or another's) rather than left to stall.
            give_up(kv, &mine)?;
            return Err(AppendError::Conflict);
        }
        return write(kv, clock, entry, &key, mine.claimed_at);
    }
    let (epoch, claimed_at) = claim(kv, clock, entry, reserved)?;
    // Past the first epoch the stalled owner may, after all, have written within its budget.
    if epoch > 0 && kv.exists(&key)? {
        return Err(AppendError::Conflict);
    }
    write(kv, clock, entry, &key, claimed_at)
}

/// Refuses a line that would break the stream: empty, not one line, or chain fields that differ
/// from the entry's (then `head` would read a hash the chain does not have).
fn check_line(entry: &Entry<'_>) -> Result<(), AppendError> {
    let refuse = |why: &str| {
        Err(AppendError::Unavailable(format!(
            "refused audit record: {why}"
        )))
    };
    if entry.line.is_empty() {
        return refuse("its line is empty");
    }
    if entry.line.contains(['\r', '\n']) {
        return refuse("its line contains a line break; it must be one line of JSON");
    }
    match link_of(entry.line.as_bytes()) {
        None => refuse("its line is not a JSON object with string `prev` and `hash` fields"),
        Some(link) if link.prev != entry.prev || link.hash != entry.hash => {
            refuse("the `prev` or `hash` in its line differs from the entry's")
        }
        Some(_) => Ok(()),
    }
}

/// Whether `entry` links to the record before its position (which then is the head, unless
/// another writer already filled the position: the claim finds that out).
fn links(kv: &impl Kv, entry: &Entry<'_>) -> Result<bool, String> {
    match entry.seq {
        0 => Ok(false),
        1 => Ok(entry.prev == GENESIS),
        seq => {
            let before = seq - 1;
            match kv.get(&mapping::audit_key(entry.org_id, before))? {
                None => Ok(false),
                Some(line) => Ok(stored_hash(entry.org_id, before, &line)? == entry.prev),
            }
        }
    }
}

fn read_stall(kv: &impl Kv, org: &str) -> Result<Option<Stall>, String> {
    // An unreadable marker is as good as none: the next observer writes a fresh one.
    Ok(kv
        .get(&mapping::audit_stall_key(org))?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Claims position `seq`: the epoch won and the monotonic time just before the winning claim.
fn claim(
    kv: &impl Kv,
    clock: &impl Clock,
    entry: &Entry<'_>,
    reserved: &mut Option<Reservation>,
) -> Result<(u32, Duration), AppendError> {
    let (org, seq) = (entry.org_id, entry.seq);
    let timeout = u64::try_from(STALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    let mut epoch = 0u32;
    for _ in 0..CLAIM_STEPS {
        // Read the time before claiming: the budget then covers the claim's own round trip.
        let started = clock.monotonic();
        let claim = mapping::audit_claim_key(org, seq, epoch);
        // A writer new to the race reads the claim before taking it: with many writers on one
        // organization most find the position taken, and a read costs them no write (on Spin's
        // SQLite store a write is a transaction and a sync to disk, on the one connection every
        // request waits for). A writer that lost before claims at once, a round trip ahead of the
        // new ones: on Redis, where calls run side by side, reading first for every writer
        // widened each race and left more writers losing 32 in a row ("stayed busy", 503s).
        // Exactly one writer still sees its increment return 1.
        // A writer that reserved the next position leaves this one to the others (it would
        // have to give its reservation up to write here) and waits for its record.
        let holding_next = reserved.is_some();
        if !holding_next
            && (entry.lost > 0 || kv.counter(&claim)? == 0)
            && kv.increment(&claim, 1)? == 1
        {
            return Ok((epoch, started));
        }
        if epoch == 0 && (RESERVE_FROM_LOSSES..RESERVE_UNTIL_LOSSES).contains(&entry.lost) {
            *reserved = reserve_next(kv, clock, org, seq)?;
        }
        if owner_wrote(kv, clock, org, seq)? {
            // Every writer that lost this position relinks now, and all but one lose the next.
            // One that lost for the first time pauses at random for up to 4 ms, so that the
            // writers that have lost before (and writers new to the race, which never paused)
            // relink ahead of it: the longest waits are cut, where a pause for every loser (the
            // way before) left some losing a dozen times in a row.
            if entry.lost == 0 {
                let jitter = u64::from(clock.monotonic().subsec_nanos() % 4_000);
                clock.pause(Duration::from_micros(jitter));
            }
            return Err(AppendError::Conflict);
        }
        // Held, not written: its owner is writing, or died. A position its reserver gave up is
        // taken in the next epoch at once: nobody writes the first one. A reservation of the
        // position after it is kept: this one is written as soon as a writer takes it.
        if epoch == 0 && kv.exists(&mapping::audit_void_key(org, seq))? {
            epoch = 1;
            continue;
        }
        // Otherwise a position reserved after it would wait as long: given up now, so that nobody
        // waits for it in turn. A writer that left this epoch's claim to others while it held
        // one claims now: it has not seen the claim, so it must not date a stall of it.
        if let Some(mine) = reserved.take() {
            give_up(kv, &mine)?;
            if holding_next {
                continue;
            }
        }
        // Read the time only now, after seeing the claim, so that a stall is never dated before
        // the claim it times.
        let now = clock.unix_millis();
        match read_stall(kv, org)? {
            Some(stall) if stall.seq == seq && stall.epoch > epoch => epoch = stall.epoch,
            Some(stall) if stall.seq == seq && stall.epoch == epoch => {
                if now.saturating_sub(stall.since_ms) < timeout {
                    return Err(AppendError::Conflict);
                }
                epoch = epoch.checked_add(1).ok_or(AppendError::Conflict)?;
            }
            _ => {
                let stall = Stall {
                    seq,
                    epoch,
                    since_ms: now,
                };
                let bytes = serde_json::to_vec(&stall).unwrap_or_default();
                kv.set(&mapping::audit_stall_key(org), &bytes)?;
                return Err(AppendError::Conflict);
            }
        }
    }
    Err(AppendError::Conflict)
}

/// Claims the position after `seq` (in its first epoch) for a writer that lost `seq`: the
/// reservation if the claim is this writer's, `None` if another writer claimed it first (reserving
/// it, or having relinked after record `seq`).
fn reserve_next(
    kv: &impl Kv,
    clock: &impl Clock,
    org: &str,
    seq: u64,
) -> Result<Option<Reservation>, String> {
    let Some(next) = seq.checked_add(1) else {
        return Ok(None);
    };
    let claimed_at = clock.monotonic();
    Ok(
        (kv.increment(&mapping::audit_claim_key(org, next, 0), 1)? == 1).then(|| Reservation {
            org_id: org.to_owned(),
            seq: next,
            claimed_at,
        }),
    )
}

/// Gives up the position in `reserved`, if any (marks it void): for a writer whose call fails
/// before it could write there.
///
/// # Errors
/// The store could not be written; the reservation is forgotten all the same (its writer never
/// writes there), and the position is then taken over as one whose owner died.
pub fn abandon(kv: &impl Kv, reserved: &mut Option<Reservation>) -> Result<(), String> {
    reserved.take().map_or(Ok(()), |mine| give_up(kv, &mine))
}

/// Gives up a reserved position: marks it void, so that the writers that find it claimed and
/// unwritten take it in the next epoch instead of waiting [`STALL_TIMEOUT`]. The reservation is
/// consumed: its writer never writes there.
fn give_up(kv: &impl Kv, reservation: &Reservation) -> Result<(), String> {
    kv.set(
        &mapping::audit_void_key(&reservation.org_id, reservation.seq),
        b"1",
    )
}

/// Whether the record at a position another writer holds is there, waiting for it a moment
/// ([`OWNER_WAITS_MS`]).
fn owner_wrote(kv: &impl Kv, clock: &impl Clock, org: &str, seq: u64) -> Result<bool, String> {
    // Read, not only looked for: the record is then seen ([`Kv::newest_seen`]), and the relink's
    // `head` finds its line without reading it again.
    let key = mapping::audit_key(org, seq);
    if kv.get(&key)?.is_some() {
        return Ok(true);
    }
    for ms in OWNER_WAITS_MS {
        clock.pause(Duration::from_millis(ms));
        if kv.get(&key)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the owned position and `audit-newest` with it, retrying a failed write while the claim
/// is fresh.
fn write(
    kv: &impl Kv,
    clock: &impl Clock,
    entry: &Entry<'_>,
    key: &str,
    claimed_at: Duration,
) -> Result<(), AppendError> {
    // The record first: on a store without an atomic batch, `audit-newest` never names a record
    // that is not there.
    let writes = [
        (key.to_owned(), entry.line.as_bytes().to_vec()),
        (
            mapping::audit_newest_key(entry.org_id),
            entry.seq.to_string().into_bytes(),
        ),
    ];
    let mut failure = String::new();
    for attempt in 0..WRITE_ATTEMPTS {
        if clock.monotonic().saturating_sub(claimed_at) >= CLAIM_BUDGET {
            return Err(AppendError::Unavailable(format!(
                "audit record {} of organization {:?} was not stored within {} s of claiming its \
                 position; other writers take the position over after {} s{}",
                entry.seq,
                entry.org_id,
                CLAIM_BUDGET.as_secs(),
                STALL_TIMEOUT.as_secs(),
                if failure.is_empty() {
                    String::new()
                } else {
                    format!(" (last failure: {failure})")
                }
            )));
        }
        // A failed write may have been applied (the store answered an error after storing), and
        // a later record appended after it since: a retry then leaves the mark where that
        // record put it, never moves it back.
        let moved_on = if attempt == 0 {
            Ok(false)
        } else {
            newest_at_least(kv, entry.org_id, entry.seq)
        };
        let written = match moved_on {
            Ok(false) => kv.set_many(&writes),
            Ok(true) => kv.set_many(&writes[..1]),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => return Ok(()),
            Err(e) => failure = e,
        }
    }
    Err(AppendError::Unavailable(failure))
}

/// Whether `org`'s `audit-newest` is at `seq` or past it (an unreadable one is not).
fn newest_at_least(kv: &impl Kv, org: &str, seq: u64) -> Result<bool, String> {
    Ok(read_newest(kv, org)?
        .flatten()
        .is_some_and(|newest| newest >= seq))
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
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// One write or increment, as a fault hook sees it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Set,
        Increment(i64),
    }

    type Hook = Box<dyn FnMut(Op, &str, &mut HashMap<String, Vec<u8>>) -> Option<String> + Send>;

    /// A store with one lock per operation (single keys are linearizable, as on Spin's stores),
    /// and a hook that runs before each write or increment: it can act as another writer at that
    /// very moment, or fail the operation.
    #[derive(Default)]
    struct Memory {
        data: Mutex<HashMap<String, Vec<u8>>>,
        hook: Mutex<Option<Hook>>,
        seen: Mutex<HashMap<String, u64>>,
    }

    impl Memory {
        fn with_hook(
            hook: impl FnMut(Op, &str, &mut HashMap<String, Vec<u8>>) -> Option<String> + Send + 'static,
        ) -> Self {
            Self {
                data: Mutex::default(),
                hook: Mutex::new(Some(Box::new(hook))),
                seen: Mutex::default(),
            }
        }

        fn before(
            &self,
            op: Op,
            key: &str,
            data: &mut HashMap<String, Vec<u8>>,
        ) -> Result<(), String> {
            match self
                .hook
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|h| h(op, key, data))
            {
                Some(failure) => Err(failure),
                None => Ok(()),
            }
        }

        fn value(&self, key: &str) -> Option<Vec<u8>> {
            self.data.lock().unwrap().get(key).cloned()
        }

        /// Notes a record read or written, as an instance's cache does (shared by every thread
        /// here: a record seen anywhere exists for good, so that is still a lower bound).
        fn saw(&self, key: &str) {
            if let Some((org, seq)) = mapping::audit_key_parts(key) {
                let mut seen = self.seen.lock().unwrap();
                let newest = seen.entry(org.to_owned()).or_default();
                *newest = (*newest).max(seq);
            }
        }

        fn keys(&self) -> Vec<String> {
            let mut keys: Vec<String> = self.data.lock().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        }
    }

    fn counter_add(data: &mut HashMap<String, Vec<u8>>, key: &str, delta: i64) -> i64 {
        let now = data
            .get(key)
            .map_or(0, |v| i64::from_le_bytes(v.as_slice().try_into().unwrap()))
            + delta;
        data.insert(key.to_owned(), now.to_le_bytes().to_vec());
        now
    }

    impl Kv for Memory {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            let value = self.value(key);
            if value.is_some() {
                self.saw(key);
            }
            Ok(value)
        }

        fn newest_seen(&self, org: &str) -> Option<u64> {
            self.seen.lock().unwrap().get(org).copied()
        }

        fn exists(&self, key: &str) -> Result<bool, String> {
            Ok(self.data.lock().unwrap().contains_key(key))
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            let mut data = self.data.lock().unwrap();
            self.before(Op::Set, key, &mut data)?;
            data.insert(key.to_owned(), value.to_vec());
            Ok(())
        }

        /// Atomic, as on Spin's SQLite store (one transaction) and Redis (`MSET`): the hook sees
        /// each key first, and one failure writes none of them.
        fn set_many(&self, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
            let mut data = self.data.lock().unwrap();
            for (key, _) in writes {
                self.before(Op::Set, key, &mut data)?;
            }
            for (key, value) in writes {
                data.insert(key.clone(), value.clone());
                self.saw(key);
            }
            Ok(())
        }

        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            let mut data = self.data.lock().unwrap();
            self.before(Op::Increment(delta), key, &mut data)?;
            Ok(counter_add(&mut data, key, delta))
        }
    }

    /// Both clocks, stepped by hand (shared, so that a hook can move them).
    #[derive(Clone, Default)]
    struct Hands {
        wall_ms: Arc<AtomicU64>,
        mono_ms: Arc<AtomicU64>,
    }

    impl Hands {
        fn advance(&self, by: Duration) {
            let ms = u64::try_from(by.as_millis()).unwrap();
            self.wall_ms.fetch_add(ms, Ordering::SeqCst);
            self.mono_ms.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for Hands {
        fn unix_millis(&self) -> u64 {
            1_700_000_000_000 + self.wall_ms.load(Ordering::SeqCst)
        }

        fn monotonic(&self) -> Duration {
            Duration::from_millis(self.mono_ms.load(Ordering::SeqCst))
        }

        fn pause(&self, _: Duration) {
            // Time moves only when a test says so: a pause lets the other threads run.
            std::thread::yield_now();
        }
    }

    /// A record the way the component builds one: the chain fields last. The hash is made up (the
    /// adapter never recomputes it); it only has to differ between records.
    struct Record {
        org: String,
        seq: u64,
        prev: String,
        hash: String,
        line: String,
    }

    impl Record {
        fn after(org: &str, head: Option<&Head>, note: &str) -> Self {
            let (seq, prev) = head.map_or((1, GENESIS.to_owned()), |h| (h.seq + 1, h.hash.clone()));
            let hash = format!("{:064x}", fxhash(&format!("{org}/{seq}/{prev}/{note}")));
            let line = format!(
                "{{\"v\":2,\"seq\":{seq},\"org\":\"{org}\",\"reason\":\"{note} caf\u{e9}\",\
                 \"prev\":\"{prev}\",\"hash\":\"{hash}\",\"seal\":null}}"
            );
            Self {
                org: org.to_owned(),
                seq,
                prev,
                hash,
                line,
            }
        }

        fn entry(&self) -> Entry<'_> {
            Entry {
                org_id: &self.org,
                seq: self.seq,
                prev: &self.prev,
                hash: &self.hash,
                line: &self.line,
                lost: 0,
            }
        }

        /// Its entry, from a writer that lost `lost` races in a row.
        fn entry_lost(&self, lost: u32) -> Entry<'_> {
            Entry {
                lost,
                ..self.entry()
            }
        }

        fn head(&self) -> Head {
            Head {
                seq: self.seq,
                hash: self.hash.clone(),
            }
        }
    }

    fn fxhash(s: &str) -> u128 {
        s.bytes()
            .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d_u128, |h, b| {
                (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
            })
    }

    /// Appends like the component: read the head, link, relink on conflict.
    fn append_linked(kv: &impl Kv, clock: &impl Clock, org: &str, note: &str) -> Record {
        for _ in 0..1000 {
            let record = Record::after(org, head(kv, org).unwrap().as_ref(), note);
            match append(kv, clock, &record.entry()) {
                Ok(()) => return record,
                Err(AppendError::Conflict) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        panic!("no progress");
    }

    /// Runs `work(kv, clock, thread)` in six threads at once; what each returned.
    fn in_six_threads<T: Send + 'static>(
        kv: &Arc<Memory>,
        clock: &Hands,
        work: impl Fn(&Memory, &Hands, usize) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let work = Arc::new(work);
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let (kv, clock, work) = (Arc::clone(kv), clock.clone(), Arc::clone(&work));
                std::thread::spawn(move || work(&kv, &clock, t))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// The stored stream of `org`, checked link by link: every record links to the one before.
    fn chain(kv: &Memory, org: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut prev = GENESIS.to_owned();
        for seq in 1.. {
            let Some(line) = kv.value(&mapping::audit_key(org, seq)) else {
                break;
            };
            let link = link_of(&line).unwrap();
            assert_eq!(link.prev, prev, "record {seq} of {org} does not link");
            prev = link.hash;
            lines.push(String::from_utf8(line).unwrap());
        }
        lines
    }

    #[test]
    fn records_are_stored_byte_for_byte_in_order_and_the_head_follows_them() {
        let kv = Memory::default();
        let clock = Hands::default();
        assert_eq!(head(&kv, "acme").unwrap(), None);
        let a1 = append_linked(&kv, &clock, "acme", "a1");
        let b1 = append_linked(&kv, &clock, "beta", "b1");
        let a2 = append_linked(&kv, &clock, "acme", "a2");
        assert_eq!((a1.seq, a2.seq, b1.seq), (1, 2, 1));
        assert_eq!(a1.prev, GENESIS);
        assert_eq!(a2.prev, a1.hash);
        assert_eq!(chain(&kv, "acme"), vec![a1.line.clone(), a2.line.clone()]);
        assert_eq!(chain(&kv, "beta"), vec![b1.line.clone()]);
        assert_eq!(head(&kv, "acme").unwrap(), Some(a2.head()));
        assert_eq!(head(&kv, "beta").unwrap(), Some(b1.head()));
    }

    #[test]
    fn an_entry_that_does_not_link_to_the_head_is_a_conflict_and_writes_nothing() {
        let kv = Memory::default();
        let clock = Hands::default();
        let first = append_linked(&kv, &clock, "acme", "one");
        let before = kv.keys();
        // Linked to nothing (seq 1 again); the right seq with a wrong prev; a seq ahead of the
        // head; seq 0; and the first record with a prev that is not 64 zeros.
        let again = Record::after("acme", None, "x");
        let forged = Record::after(
            "acme",
            Some(&Head {
                seq: 1,
                hash: "ab".repeat(32),
            }),
            "y",
        );
        let ahead = Record::after(
            "acme",
            Some(&Head {
                seq: 5,
                hash: first.hash.clone(),
            }),
            "z",
        );
        let mut zero = Record::after("acme", None, "w");
        zero.seq = 0;
        for record in [&again, &forged, &ahead, &zero] {
            assert_eq!(
                append(&kv, &clock, &record.entry()),
                Err(AppendError::Conflict)
            );
        }
        let other = Record::after("beta", Some(&first.head()), "v");
        assert_eq!(
            append(&kv, &clock, &other.entry()),
            Err(AppendError::Conflict)
        );
        assert_eq!(head(&kv, "acme").unwrap(), Some(first.head()));
        assert_eq!(chain(&kv, "acme"), vec![first.line]);
        // Each was refused before claiming a free position (the one at position 1 found it taken):
        // nothing was added, so position 2 stays free for the writer that links correctly.
        assert_eq!(kv.keys(), before);
    }

    #[test]
    fn of_two_writers_linked_to_the_same_head_only_one_is_stored() {
        // The second writer reads the head and links while the first is between its link check
        // and its claim: both pass the check, the claim decides.
        let clock = Hands::default();
        let rival = Record::after("acme", None, "rival");
        let rival_line = rival.line.clone();
        let mut fired = false;
        let kv = Memory::with_hook(move |op, key, data| {
            if !fired && op == Op::Increment(1) && key.starts_with("audit-claim:") {
                fired = true;
                // The rival claims and writes first.
                counter_add(data, key, 1);
                data.insert(
                    mapping::audit_key("acme", 1),
                    rival_line.as_bytes().to_vec(),
                );
            }
            None
        });
        let mine = Record::after("acme", None, "mine");
        assert_eq!(
            append(&kv, &clock, &mine.entry()),
            Err(AppendError::Conflict)
        );
        assert_eq!(chain(&kv, "acme"), vec![rival.line.clone()]);
        // It relinks after the rival's record and gets in.
        let relinked = append_linked(&kv, &clock, "acme", "mine");
        assert_eq!(relinked.prev, rival.hash);
        assert_eq!(chain(&kv, "acme").len(), 2);
    }

    #[test]
    fn writers_in_many_threads_never_fork_a_chain() {
        let kv = Arc::new(Memory::default());
        let clock = Hands::default();
        in_six_threads(&kv, &clock, |kv, clock, t| {
            for i in 0..25 {
                let org = if i % 3 == 0 { "beta" } else { "acme" };
                append_linked(kv, clock, org, &format!("t{t}-{i}"));
            }
        });
        assert_eq!(chain(&kv, "acme").len(), 96);
        assert_eq!(chain(&kv, "beta").len(), 54);
        assert_eq!(head(kv.as_ref(), "acme").unwrap().map(|h| h.seq), Some(96));
        assert_eq!(head(kv.as_ref(), "beta").unwrap().map(|h| h.seq), Some(54));
    }

    /// A store whose writes of `audit:acme:…` records fail while `down` is set: a writer that
    /// claimed a position and could not write it, as one that died there.
    fn failing_record_writes(down: Arc<Mutex<bool>>) -> Memory {
        Memory::with_hook(move |op, key, _| {
            (op == Op::Set && key.starts_with("audit:acme:") && *down.lock().unwrap())
                .then(|| "the store is down".to_owned())
        })
    }

    #[test]
    fn a_position_claimed_and_never_written_is_taken_over_after_the_stall_timeout() {
        let down = Arc::new(Mutex::new(false));
        let kv = failing_record_writes(Arc::clone(&down));
        let clock = Hands::default();
        let first = append_linked(&kv, &clock, "acme", "one");
        *down.lock().unwrap() = true;
        let lost = Record::after("acme", Some(&first.head()), "lost");
        assert_eq!(
            append(&kv, &clock, &lost.entry()),
            Err(AppendError::Unavailable("the store is down".to_owned()))
        );
        *down.lock().unwrap() = false;
        // Position 2 is claimed but empty: the head has not moved, and every writer that links
        // to it is turned away (the first one marks the stall) until the timeout.
        assert_eq!(head(&kv, "acme").unwrap(), Some(first.head()));
        let waiting = Record::after("acme", Some(&first.head()), "waiting");
        for _ in 0..3 {
            assert_eq!(
                append(&kv, &clock, &waiting.entry()),
                Err(AppendError::Conflict)
            );
            clock.advance(STALL_TIMEOUT / 4);
        }
        assert_eq!(
            append(&kv, &clock, &waiting.entry()),
            Err(AppendError::Conflict)
        );
        clock.advance(STALL_TIMEOUT / 4);
        // Now a writer takes position 2 over with its own record; the stream goes on.
        assert_eq!(append(&kv, &clock, &waiting.entry()), Ok(()));
        assert_eq!(head(&kv, "acme").unwrap(), Some(waiting.head()));
        let third = append_linked(&kv, &clock, "acme", "three");
        assert_eq!(third.seq, 3);
        assert_eq!(
            chain(&kv, "acme"),
            vec![first.line, waiting.line, third.line]
        );
    }

    #[test]
    fn a_takeover_that_dies_too_is_taken_over_in_the_next_epoch() {
        let down = Arc::new(Mutex::new(true));
        let kv = failing_record_writes(Arc::clone(&down));
        let clock = Hands::default();
        let first = Record::after("acme", None, "first");
        assert!(matches!(
            append(&kv, &clock, &first.entry()),
            Err(AppendError::Unavailable(_))
        ));
        let second = Record::after("acme", None, "second");
        assert_eq!(
            append(&kv, &clock, &second.entry()),
            Err(AppendError::Conflict)
        );
        clock.advance(STALL_TIMEOUT);
        // The takeover wins epoch 1, and its write fails as well.
        assert!(matches!(
            append(&kv, &clock, &second.entry()),
            Err(AppendError::Unavailable(_))
        ));
        *down.lock().unwrap() = false;
        let third = Record::after("acme", None, "third");
        assert_eq!(
            append(&kv, &clock, &third.entry()),
            Err(AppendError::Conflict)
        );
        clock.advance(STALL_TIMEOUT / 2);
        assert_eq!(
            append(&kv, &clock, &third.entry()),
            Err(AppendError::Conflict)
        );
        clock.advance(STALL_TIMEOUT / 2);
        assert_eq!(append(&kv, &clock, &third.entry()), Ok(()));
        assert_eq!(chain(&kv, "acme"), vec![third.line.clone()]);
        assert!(kv.value(&mapping::audit_claim_key("acme", 1, 2)).is_some());
    }

    #[test]
    fn an_owner_past_its_budget_gives_up_without_writing() {
        // The claim's answer comes back late (a stalled connection): by then a takeover may be
        // near, so the owner must not write.
        let clock = Hands::default();
        let hands = clock.clone();
        let kv = Memory::with_hook(move |op, key, _| {
            if op == Op::Increment(1) && key.starts_with("audit-claim:") {
                hands.advance(CLAIM_BUDGET);
            }
            None
        });
        let record = Record::after("acme", None, "slow");
        let outcome = append(&kv, &clock, &record.entry());
        assert!(
            matches!(&outcome, Err(AppendError::Unavailable(m)) if m.contains("within 1 s")),
            "{outcome:?}"
        );
        assert_eq!(kv.value(&mapping::audit_key("acme", 1)), None);
    }

    /// Hands, whose second pause lets the owner of position 1 write its record.
    struct OwnerWritesDuringTheWait<'a> {
        hands: Hands,
        kv: &'a Memory,
        owner_line: Vec<u8>,
        pauses: AtomicU64,
    }

    impl<'a> OwnerWritesDuringTheWait<'a> {
        fn new(kv: &'a Memory, owner: &Record) -> Self {
            Self {
                hands: Hands::default(),
                kv,
                owner_line: owner.line.as_bytes().to_vec(),
                pauses: AtomicU64::new(0),
            }
        }
    }

    /// Position 1 of acme claimed by an owner that writes its record during the others' wait:
    /// the owner's record, and the clock that writes it.
    fn owner_writing_position_1(kv: &Memory) -> (Record, OwnerWritesDuringTheWait<'_>) {
        let owner = Record::after("acme", None, "owner");
        let clock = OwnerWritesDuringTheWait::new(kv, &owner);
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        (owner, clock)
    }

    impl Clock for OwnerWritesDuringTheWait<'_> {
        fn unix_millis(&self) -> u64 {
            self.hands.unix_millis()
        }

        fn monotonic(&self) -> Duration {
            self.hands.monotonic()
        }

        fn pause(&self, _: Duration) {
            if self.pauses.fetch_add(1, Ordering::SeqCst) == 1 {
                self.kv
                    .data
                    .lock()
                    .unwrap()
                    .insert(mapping::audit_key("acme", 1), self.owner_line.clone());
            }
        }
    }

    #[test]
    fn a_writer_that_lost_a_position_waits_for_the_owners_record_and_marks_no_stall() {
        let kv = Memory::default();
        let owner = Record::after("acme", None, "owner");
        let clock = OwnerWritesDuringTheWait::new(&kv, &owner);
        // The owner has claimed position 1 and not written it yet.
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        let mine = Record::after("acme", None, "mine");
        assert_eq!(
            append(&kv, &clock, &mine.entry()),
            Err(AppendError::Conflict)
        );
        // Two waits for the record, then the pause that spreads the relinks.
        assert_eq!(clock.pauses.load(Ordering::SeqCst), 3, "it waited, briefly");
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 1, 0)).unwrap(),
            1,
            "it read the claim and did not take it (no write)"
        );
        assert_eq!(
            kv.value(&mapping::audit_stall_key("acme")),
            None,
            "no stall"
        );
        // It relinks after the owner's record.
        let relinked = append_linked(&kv, &clock.hands, "acme", "mine");
        assert_eq!((relinked.seq, relinked.prev), (2, owner.hash.clone()));
        assert_eq!(chain(&kv, "acme"), vec![owner.line, relinked.line]);
    }

    #[test]
    fn a_writer_that_lost_before_takes_its_turn_first_it_claims_at_once_and_relinks_unpaused() {
        let kv = Memory::default();
        let (owner, clock) = owner_writing_position_1(&kv);
        let mine = Record::after("acme", None, "mine");
        let veteran = mine.entry_lost(3);
        assert_eq!(append(&kv, &clock, &veteran), Err(AppendError::Conflict));
        assert_eq!(
            clock.pauses.load(Ordering::SeqCst),
            2,
            "the two waits for the owner's record, and no pause before relinking"
        );
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 1, 0)).unwrap(),
            2,
            "it took its claim without reading it first"
        );
        // Its relink wins the next position as any writer's would.
        let relinked = append_linked(&kv, &clock.hands, "acme", "mine");
        assert_eq!((relinked.seq, relinked.prev), (2, owner.hash.clone()));
    }

    /// Appends as the component does: relinking after each conflict, with the races lost so far
    /// (from `lost`) and the position reserved between attempts, which never outlives its record.
    fn append_as_component(kv: &impl Kv, clock: &impl Clock, org: &str, note: &str, mut lost: u32) {
        let mut reserved = None;
        for _ in 0..10_000 {
            let record = Record::after(org, head(kv, org).unwrap().as_ref(), note);
            match append_reserving(kv, clock, &record.entry_lost(lost), &mut reserved) {
                Ok(()) => {
                    assert_eq!(reserved, None, "a reservation outlived its record");
                    return;
                }
                Err(AppendError::Conflict) => {
                    lost += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        panic!("no progress");
    }

    #[test]
    fn a_writer_far_behind_reserves_the_next_position_and_its_relink_writes_there() {
        let kv = Memory::default();
        let owner = Record::after("acme", None, "owner");
        let clock = OwnerWritesDuringTheWait::new(&kv, &owner);
        // The owner has claimed position 1 and writes it while the others wait.
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        let mine = Record::after("acme", None, "mine");
        let behind = mine.entry_lost(RESERVE_FROM_LOSSES);
        let mut reserved = None;
        assert_eq!(
            append_reserving(&kv, &clock, &behind, &mut reserved),
            Err(AppendError::Conflict)
        );
        assert_eq!(
            reserved.as_ref().map(|r| (r.org_id.as_str(), r.seq)),
            Some(("acme", 2))
        );
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 2, 0)).unwrap(),
            1,
            "position 2 is claimed before the record it follows was there"
        );
        // Another writer that relinks after the owner's record finds the position taken...
        let rival = Record::after("acme", Some(&owner.head()), "rival");
        let veteran = rival.entry_lost(3);
        assert_eq!(
            append(&kv, &clock.hands, &veteran),
            Err(AppendError::Conflict)
        );
        assert_eq!(chain(&kv, "acme"), vec![owner.line.clone()]);
        // ...and the reserver's relink writes it without claiming again.
        let relinked = Record::after("acme", head(&kv, "acme").unwrap().as_ref(), "mine");
        assert_eq!(relinked.seq, 2);
        let entry = relinked.entry_lost(RESERVE_FROM_LOSSES + 1);
        assert_eq!(
            append_reserving(&kv, &clock.hands, &entry, &mut reserved),
            Ok(())
        );
        assert_eq!(reserved, None);
        assert_eq!(chain(&kv, "acme"), vec![owner.line, relinked.line]);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 2, 0)).unwrap(),
            2,
            "the reservation's claim and the rival's; none by the reserver's write"
        );
    }

    #[test]
    fn writers_8_to_23_races_behind_reserve_and_no_others() {
        for lost in [
            0,
            1,
            RESERVE_FROM_LOSSES - 1,
            RESERVE_FROM_LOSSES,
            RESERVE_UNTIL_LOSSES - 1,
        ]
        .into_iter()
        .chain([RESERVE_UNTIL_LOSSES, 31])
        {
            let kv = Memory::default();
            let (_, clock) = owner_writing_position_1(&kv);
            let mine = Record::after("acme", None, "mine");
            let mut reserved = None;
            let entry = Entry {
                lost,
                ..mine.entry()
            };
            assert_eq!(
                append_reserving(&kv, &clock, &entry, &mut reserved),
                Err(AppendError::Conflict)
            );
            let reserves = (8..24).contains(&lost);
            assert_eq!(
                reserved.map(|r| r.seq),
                reserves.then_some(2),
                "lost {lost}"
            );
            assert_eq!(
                kv.counter(&mapping::audit_claim_key("acme", 2, 0)).unwrap(),
                i64::from(reserves),
                "lost {lost}"
            );
        }
    }

    #[test]
    fn a_reservation_behind_an_owner_that_does_not_write_is_given_up_and_taken_at_once() {
        let kv = Memory::default();
        let clock = Hands::default();
        // The owner of position 1 claimed it and has not written it.
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        let mine = Record::after("acme", None, "mine");
        let behind = mine.entry_lost(RESERVE_FROM_LOSSES);
        let mut reserved = None;
        assert_eq!(
            append_reserving(&kv, &clock, &behind, &mut reserved),
            Err(AppendError::Conflict)
        );
        // Position 2 was reserved, then given up when the owner's record did not come: the
        // reserver never writes it, whatever it appends next.
        assert_eq!(reserved, None);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 2, 0)).unwrap(),
            1
        );
        assert_eq!(
            kv.value(&mapping::audit_void_key("acme", 2)).as_deref(),
            Some(&b"1"[..])
        );
        // The owner writes after all (within its budget). The next writer at position 2 finds it
        // claimed and unwritten, and takes it in the next epoch without waiting for a stall.
        let owner = Record::after("acme", None, "owner");
        kv.set(&mapping::audit_key("acme", 1), owner.line.as_bytes())
            .unwrap();
        let next = append_linked(&kv, &clock, "acme", "next");
        assert_eq!(next.seq, 2);
        assert_eq!(chain(&kv, "acme"), vec![owner.line, next.line]);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 2, 1)).unwrap(),
            1,
            "taken in epoch 1, with no time passed"
        );
    }

    #[test]
    fn a_reservation_is_given_up_by_a_failing_call_and_by_a_relink_elsewhere() {
        let kv = Memory::default();
        let clock = Hands::default();
        let mut reserved = Some(Reservation {
            org_id: "acme".to_owned(),
            seq: 5,
            claimed_at: Duration::ZERO,
        });
        abandon(&kv, &mut reserved).unwrap();
        assert_eq!(reserved, None);
        assert!(kv.value(&mapping::audit_void_key("acme", 5)).is_some());
        abandon(&kv, &mut reserved).unwrap();

        // A relink to another position than the reserved one gives the reservation up first.
        let mut reserved = Some(Reservation {
            org_id: "acme".to_owned(),
            seq: 7,
            claimed_at: Duration::ZERO,
        });
        let first = Record::after("acme", None, "first");
        assert_eq!(
            append_reserving(&kv, &clock, &first.entry(), &mut reserved),
            Ok(())
        );
        assert_eq!(reserved, None);
        assert!(kv.value(&mapping::audit_void_key("acme", 7)).is_some());
        assert_eq!(chain(&kv, "acme"), vec![first.line]);
    }

    #[test]
    fn a_reservation_past_its_budget_is_given_up_unwritten_and_the_relink_takes_it() {
        let kv = Memory::default();
        let clock = Hands::default();
        let first = append_linked(&kv, &clock, "acme", "first");
        kv.increment(&mapping::audit_claim_key("acme", 2, 0), 1)
            .unwrap();
        let mut reserved = Some(Reservation {
            org_id: "acme".to_owned(),
            seq: 2,
            claimed_at: clock.monotonic(),
        });
        clock.advance(CLAIM_BUDGET);
        let late = Record::after("acme", Some(&first.head()), "late");
        assert_eq!(
            append_reserving(&kv, &clock, &late.entry(), &mut reserved),
            Err(AppendError::Conflict)
        );
        assert_eq!(reserved, None);
        assert_eq!(chain(&kv, "acme"), vec![first.line.clone()]);
        assert!(
            kv.value(&mapping::audit_void_key("acme", 2)).is_some(),
            "given up at once: nothing was sent"
        );
        // The relink takes the position in its next epoch, with no stall to wait out.
        let relinked = append_linked(&kv, &clock, "acme", "late");
        assert_eq!(relinked.seq, 2);
        assert_eq!(chain(&kv, "acme"), vec![first.line, relinked.line]);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 2, 1)).unwrap(),
            1
        );
    }

    #[test]
    fn a_reserver_alone_at_a_void_position_takes_it_itself_and_dates_no_stall() {
        let kv = Memory::default();
        let clock = Hands::default();
        // Position 1 was reserved and given up, and nobody else is writing.
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        kv.set(&mapping::audit_void_key("acme", 1), b"1").unwrap();
        let mine = Record::after("acme", None, "mine");
        let mut reserved = None;
        // It loses epoch 0, reserves position 2, finds position 1 void and leaves its epoch 1 to
        // others; none takes it, so it gives position 2 up and claims position 1 itself.
        assert_eq!(
            append_reserving(
                &kv,
                &clock,
                &mine.entry_lost(RESERVE_FROM_LOSSES),
                &mut reserved
            ),
            Ok(())
        );
        assert_eq!(reserved, None);
        assert_eq!(chain(&kv, "acme"), vec![mine.line]);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 1, 1)).unwrap(),
            1
        );
        assert!(kv.value(&mapping::audit_void_key("acme", 2)).is_some());
        assert_eq!(
            kv.value(&mapping::audit_stall_key("acme")),
            None,
            "no stall dated for a claim it never saw"
        );
    }

    /// Hands whose pauses, from the `at`-th on, find position 1 written in epoch 1 by another
    /// writer (the one that took a void position).
    struct TakerWritesLater<'a> {
        inner: OwnerWritesDuringTheWait<'a>,
        at: u64,
    }

    impl Clock for TakerWritesLater<'_> {
        fn unix_millis(&self) -> u64 {
            self.inner.hands.unix_millis()
        }

        fn monotonic(&self) -> Duration {
            self.inner.hands.monotonic()
        }

        fn pause(&self, _: Duration) {
            if self.inner.pauses.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
                let mut data = self.inner.kv.data.lock().unwrap();
                counter_add(&mut data, &mapping::audit_claim_key("acme", 1, 1), 1);
                data.insert(mapping::audit_key("acme", 1), self.inner.owner_line.clone());
            }
        }
    }

    #[test]
    fn a_reserver_leaves_a_void_position_to_the_others_and_keeps_its_reservation() {
        let kv = Memory::default();
        // Position 1 was reserved and given up; the next one to take it writes it in epoch 1.
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        kv.set(&mapping::audit_void_key("acme", 1), b"1").unwrap();
        let taker = Record::after("acme", None, "taker");
        let pauses = u64::try_from(OWNER_WAITS_MS.len()).unwrap();
        let clock = TakerWritesLater {
            inner: OwnerWritesDuringTheWait::new(&kv, &taker),
            // During the second wait: after the first found nothing and the void sent it on.
            at: pauses + 2,
        };
        let mine = Record::after("acme", None, "mine");
        let behind = mine.entry_lost(RESERVE_FROM_LOSSES);
        let mut reserved = None;
        assert_eq!(
            append_reserving(&kv, &clock, &behind, &mut reserved),
            Err(AppendError::Conflict)
        );
        assert_eq!(reserved.as_ref().map(|r| r.seq), Some(2), "kept");
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 1, 1)).unwrap(),
            1,
            "only the taker's claim in epoch 1: the reserver left it"
        );
        assert_eq!(kv.value(&mapping::audit_void_key("acme", 2)), None);
        let relinked = Record::after("acme", Some(&taker.head()), "mine");
        let entry = relinked.entry_lost(RESERVE_FROM_LOSSES + 1);
        assert_eq!(
            append_reserving(&kv, &clock.inner.hands, &entry, &mut reserved),
            Ok(())
        );
        assert_eq!(chain(&kv, "acme"), vec![taker.line, relinked.line]);
    }

    #[test]
    fn a_reservation_is_used_only_by_its_organization_and_kept_while_the_link_is_missing() {
        let kv = Memory::default();
        let clock = Hands::default();
        let first = append_linked(&kv, &clock, "acme", "first");
        // Reserved in another organization: given up, and acme's position claimed as usual.
        let mut reserved = Some(Reservation {
            org_id: "beta".to_owned(),
            seq: 2,
            claimed_at: Duration::ZERO,
        });
        let second = Record::after("acme", Some(&first.head()), "second");
        assert_eq!(
            append_reserving(&kv, &clock, &second.entry(), &mut reserved),
            Ok(())
        );
        assert_eq!(reserved, None);
        assert!(kv.value(&mapping::audit_void_key("beta", 2)).is_some());
        assert_eq!(kv.value(&mapping::audit_void_key("acme", 2)), None);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 2, 0)).unwrap(),
            1
        );
        // Reserved elsewhere, and the entry does not link: given up all the same.
        let mut reserved = Some(Reservation {
            org_id: "beta".to_owned(),
            seq: 9,
            claimed_at: Duration::ZERO,
        });
        let unlinked = Record::after(
            "acme",
            Some(&Head {
                seq: 2,
                hash: "cd".repeat(32),
            }),
            "unlinked",
        );
        assert_eq!(
            append_reserving(&kv, &clock, &unlinked.entry(), &mut reserved),
            Err(AppendError::Conflict)
        );
        assert_eq!(reserved, None);
        assert!(kv.value(&mapping::audit_void_key("beta", 9)).is_some());
        // Reserved here, but the entry does not link (a wrong prev): nothing is written and the
        // reservation stays for the relink.
        kv.increment(&mapping::audit_claim_key("acme", 3, 0), 1)
            .unwrap();
        let mut reserved = Some(Reservation {
            org_id: "acme".to_owned(),
            seq: 3,
            claimed_at: Duration::ZERO,
        });
        let forged = Record::after(
            "acme",
            Some(&Head {
                seq: 2,
                hash: "ab".repeat(32),
            }),
            "forged",
        );
        assert_eq!(
            append_reserving(&kv, &clock, &forged.entry(), &mut reserved),
            Err(AppendError::Conflict)
        );
        assert_eq!(reserved.as_ref().map(|r| r.seq), Some(3));
        assert_eq!(chain(&kv, "acme").len(), 2);
        let third = Record::after("acme", Some(&second.head()), "third");
        assert_eq!(
            append_reserving(&kv, &clock, &third.entry(), &mut reserved),
            Ok(())
        );
        assert_eq!(reserved, None);
        assert_eq!(chain(&kv, "acme").len(), 3);
        assert_eq!(
            kv.counter(&mapping::audit_claim_key("acme", 3, 0)).unwrap(),
            1,
            "written at the reservation, not claimed again"
        );
    }

    #[test]
    fn append_without_a_place_to_keep_a_reservation_gives_it_up() {
        let kv = Memory::default();
        let (_, clock) = owner_writing_position_1(&kv);
        let mine = Record::after("acme", None, "mine");
        let behind = mine.entry_lost(RESERVE_FROM_LOSSES);
        assert_eq!(append(&kv, &clock, &behind), Err(AppendError::Conflict));
        assert!(kv.value(&mapping::audit_void_key("acme", 2)).is_some());
    }

    #[test]
    fn writers_far_behind_in_many_threads_reserve_and_never_fork_a_chain() {
        // Every writer starts each record as one far behind, and all six start each round
        // together, so that positions are reserved, written, and given up and taken over in the
        // next epoch when an owner is slow, all at once. How many depends on how the threads are
        // scheduled (0 to 93 records of 150 at a reserved position in runs so far; the tests
        // above show each step on its own): this one holds the chain whatever they do, and
        // `append_as_component` that no reservation outlives its record.
        let kv = Arc::new(Memory::default());
        let clock = Hands::default();
        let rounds = Arc::new(std::sync::Barrier::new(6));
        in_six_threads(&kv, &clock, move |kv, clock, t| {
            for i in 0..25 {
                rounds.wait();
                append_as_component(kv, clock, "acme", &format!("t{t}-{i}"), RESERVE_FROM_LOSSES);
            }
        });
        assert_eq!(chain(&kv, "acme").len(), 150);
        assert_eq!(head(kv.as_ref(), "acme").unwrap().map(|h| h.seq), Some(150));
    }

    #[test]
    fn a_failed_write_is_retried_while_the_claim_is_fresh() {
        let mut failures = 2;
        let kv = Memory::with_hook(move |op, key, _| {
            (op == Op::Set && key.starts_with("audit:") && failures > 0).then(|| {
                failures -= 1;
                "a blip".to_owned()
            })
        });
        let clock = Hands::default();
        let record = append_linked(&kv, &clock, "acme", "retried");
        assert_eq!(chain(&kv, "acme"), vec![record.line]);
    }

    #[test]
    fn a_takeover_yields_to_a_stalled_owner_that_wrote_after_all() {
        // Position 1 was claimed and seen stalled; the takeover wins epoch 1, and the first owner's
        // write lands just then (within its budget): the takeover must not write over it.
        let clock = Hands::default();
        let owner = Record::after("acme", None, "owner");
        let owner_line = owner.line.clone();
        let kv = Memory::with_hook(move |op, key, data| {
            if op == Op::Increment(1) && key == mapping::audit_claim_key("acme", 1, 1) {
                data.insert(
                    mapping::audit_key("acme", 1),
                    owner_line.as_bytes().to_vec(),
                );
            }
            None
        });
        kv.increment(&mapping::audit_claim_key("acme", 1, 0), 1)
            .unwrap();
        let taker = Record::after("acme", None, "taker");
        assert_eq!(
            append(&kv, &clock, &taker.entry()),
            Err(AppendError::Conflict)
        );
        clock.advance(STALL_TIMEOUT);
        assert_eq!(
            append(&kv, &clock, &taker.entry()),
            Err(AppendError::Conflict)
        );
        assert_eq!(chain(&kv, "acme"), vec![owner.line.clone()]);
        assert_eq!(head(&kv, "acme").unwrap(), Some(owner.head()));
    }

    #[test]
    fn a_record_is_written_with_its_newest_mark_and_no_count() {
        let kv = Memory::default();
        let clock = Hands::default();
        append_linked(&kv, &clock, "acme", "a1");
        let a2 = append_linked(&kv, &clock, "acme", "a2");
        assert_eq!(
            kv.value(&mapping::audit_newest_key("acme")).as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(
            kv.value(&mapping::audit_len_key("acme")),
            None,
            "no count is kept, and reading none wrote nothing"
        );
        assert_eq!(head(&kv, "acme").unwrap(), Some(a2.head()));
    }

    #[test]
    fn a_record_whose_newest_mark_fails_is_not_written_either() {
        let kv = Memory::with_hook(|op, key, _| {
            (op == Op::Set && key.starts_with(mapping::AUDIT_NEWEST_PREFIX))
                .then(|| "the mark failed".to_owned())
        });
        let clock = Hands::default();
        let entry = Record::after("acme", None, "a1");
        assert!(matches!(
            append(&kv, &clock, &entry.entry()),
            Err(AppendError::Unavailable(_))
        ));
        assert_eq!(kv.value(&mapping::audit_key("acme", 1)), None);
        assert_eq!(head(&kv, "acme").unwrap(), None);
    }

    #[test]
    fn a_retry_after_a_write_that_was_applied_never_moves_the_newest_mark_back() {
        let a1 = Record::after("acme", None, "a1");
        let a2 = Record::after("acme", Some(&a1.head()), "a2");
        let (l1, l2) = (a1.line.clone(), a2.line.clone());
        let mut failed = false;
        let kv = Memory::with_hook(move |op, key, data| {
            if op != Op::Set || key != mapping::audit_key("acme", 1) || failed {
                return None;
            }
            failed = true;
            // The store applies the batch, then answers an error (a dropped connection); another
            // writer appends record 2 before the retry.
            data.insert(key.to_owned(), l1.as_bytes().to_vec());
            data.insert(mapping::audit_key("acme", 2), l2.as_bytes().to_vec());
            data.insert(mapping::audit_newest_key("acme"), b"2".to_vec());
            Some("the connection dropped after the write".to_owned())
        });
        let clock = Hands::default();
        append(&kv, &clock, &a1.entry()).unwrap();
        assert_eq!(
            kv.value(&mapping::audit_newest_key("acme")).as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(head(&kv, "acme").unwrap(), Some(a2.head()));
        assert_eq!(chain(&kv, "acme"), vec![a1.line, a2.line]);
    }

    #[test]
    fn the_head_steps_past_records_an_older_adapter_wrote_and_counted_late() {
        // A store written by an adapter that counted records in `audit-len` after writing them:
        // the count is 1 (the second count was lost, or its writer is between write and count).
        let kv = Memory::default();
        let clock = Hands::default();
        let a1 = append_linked(&kv, &clock, "acme", "a1");
        let a2 = append_linked(&kv, &clock, "acme", "a2");
        {
            let mut data = kv.data.lock().unwrap();
            data.remove(&mapping::audit_newest_key("acme"));
            counter_add(&mut data, &mapping::audit_len_key("acme"), 1);
        }
        assert_eq!(head(&kv, "acme").unwrap(), Some(a2.head()));
        // Its next record, by this adapter, starts the mark; an older adapter's record after
        // that (written without moving it) is stepped past too.
        let a3 = append_linked(&kv, &clock, "acme", "a3");
        assert_eq!(
            kv.value(&mapping::audit_newest_key("acme")).as_deref(),
            Some(&b"3"[..])
        );
        let a4 = Record::after("acme", Some(&a3.head()), "a4");
        // The older adapter claims position 4 and writes it, without moving the mark.
        kv.increment(&mapping::audit_claim_key("acme", 4, 0), 1)
            .unwrap();
        kv.set(&mapping::audit_key("acme", 4), a4.line.as_bytes())
            .unwrap();
        // Unseen, record 4 is not looked for: the head stays at the mark.
        assert_eq!(head(&kv, "acme").unwrap(), Some(a3.head()));
        // An append linked there loses position 4 to it and sees it; its relink steps past.
        let stale = Record::after("acme", Some(&a3.head()), "a5");
        assert_eq!(
            append(&kv, &clock, &stale.entry()),
            Err(AppendError::Conflict)
        );
        assert_eq!(head(&kv, "acme").unwrap(), Some(a4.head()));
        let a5 = append_linked(&kv, &clock, "acme", "a5");
        assert_eq!((a5.seq, a5.prev.clone()), (5, a4.hash.clone()));
        assert_eq!(
            chain(&kv, "acme"),
            vec![a1.line, a2.line, a3.line, a4.line, a5.line]
        );
        // A mark that does not parse is a store changed by hand: refused, never read as 0.
        kv.set(&mapping::audit_newest_key("acme"), b"four").unwrap();
        let err = head(&kv, "acme").unwrap_err();
        assert!(err.contains("changed outside the adapter"), "{err}");
    }

    #[test]
    fn a_missing_newest_record_is_reported_not_skipped() {
        let kv = Memory::default();
        let clock = Hands::default();
        append_linked(&kv, &clock, "acme", "a1");
        append_linked(&kv, &clock, "acme", "a2");
        kv.data
            .lock()
            .unwrap()
            .remove(&mapping::audit_key("acme", 2));
        let err = head(&kv, "acme").unwrap_err();
        assert!(
            err.contains("record 2") && err.contains("keep each organization's newest"),
            "{err}"
        );
        // Older records may be pruned.
        let kv = Memory::default();
        append_linked(&kv, &clock, "acme", "a1");
        let a2 = append_linked(&kv, &clock, "acme", "a2");
        kv.data
            .lock()
            .unwrap()
            .remove(&mapping::audit_key("acme", 1));
        assert_eq!(head(&kv, "acme").unwrap(), Some(a2.head()));
        assert_eq!(append_linked(&kv, &clock, "acme", "a3").prev, a2.hash);
    }

    #[test]
    fn lines_that_would_break_the_stream_are_refused_and_nothing_is_claimed() {
        let kv = Memory::default();
        let clock = Hands::default();
        let good = Record::after("acme", None, "x");
        let other = Record::after("acme", None, "y");
        let lines = [
            String::new(),
            format!("{}\n", good.line),
            format!("{}\r", good.line),
            "not json".to_owned(),
            "{\"prev\":1,\"hash\":2}".to_owned(),
            other.line.clone(),
        ];
        for line in &lines {
            let entry = Entry {
                line,
                ..good.entry()
            };
            assert!(
                matches!(
                    append(&kv, &clock, &entry),
                    Err(AppendError::Unavailable(_))
                ),
                "{line:?}"
            );
        }
        assert!(kv.keys().is_empty(), "{:?}", kv.keys());
        assert_eq!(append(&kv, &clock, &good.entry()), Ok(()));
    }

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS.len(), 64);
        assert!(GENESIS.bytes().all(|b| b == b'0'));
        // 3 s between an owner's last moment to write and a takeover; at most 5 s blocked.
        assert!(CLAIM_BUDGET * 4 <= STALL_TIMEOUT);
        assert!(STALL_TIMEOUT < Duration::from_secs(5));
    }
}
