//! Group commit for SQLite: one writer thread per database commits concurrent callers' writes
//! together.
//!
//! With the WAL journal and `synchronous=FULL`, every commit syncs the log to disk. Committing each
//! write on its own made every `set`, `increment` and audit record wait for a sync of its own, one
//! after the other. Here a thread owns the database's one write connection. Callers hand it work
//! and wait; it takes all the work waiting (up to [`MAX_BATCH`] pieces), runs each piece in its own
//! savepoint inside one `IMMEDIATE` transaction, commits once, and only then answers the callers:
//! - a caller's `Ok` still means that its write is durable;
//! - a piece that fails is rolled back alone (its savepoint), and its caller gets its error;
//! - a commit that fails fails every piece of the batch, and none of them is applied;
//! - while one batch syncs, the next gathers: the more callers at once, the larger the batches and
//!   the smaller the share of a sync that each write costs.
//!
//! Other processes sharing the file still meet SQLite's own lock (with the busy timeout), so
//! several `serve` processes on one file stay correct. If the thread stops, every call fails
//! closed with an error that says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use mfa_step_core::kernel::ports::{PortError, PortResult};
use rusqlite::{Connection, TransactionBehavior};

use super::store::{PortFuture, sqlite_error};

/// The most pieces of work one transaction takes. A bound keeps one batch's commit short; under
/// any realistic load batches are far smaller (about one piece per request in flight).
pub(crate) const MAX_BATCH: usize = 256;

/// How many pieces of work may wait for the writer. Admission caps requests in flight (1024 by
/// default, each waiting on at most one write), so only work whose caller has gone (a dropped
/// request) during a stall can fill it; past it, a handed-over write fails at once.
const QUEUE: usize = 4 * MAX_BATCH;

/// One caller's piece of work, as the writer thread sees it.
trait Work: Send {
    /// Runs the piece inside its savepoint; `true` when it succeeded (the savepoint is kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's commit has succeeded or failed.
    fn answer(self: Box<Self>, committed: Result<(), &PortError>);
}

struct Call<T, F> {
    work: Option<F>,
    outcome: Option<PortResult<T>>,
    reply: Reply<T>,
}

/// Where a caller waits for its answer: a thread blocked on a channel, or a task awaiting one.
enum Reply<T> {
    Thread(mpsc::SyncSender<PortResult<T>>),
    Task(tokio::sync::oneshot::Sender<PortResult<T>>),
}

impl<T, F> Work for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> PortResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = match self.work.take() {
            Some(work) => work(conn),
            None => Err(PortError("the SQLite writer ran a piece twice".to_owned())),
        };
        let succeeded = outcome.is_ok();
        self.outcome = Some(outcome);
        succeeded
    }

    fn answer(self: Box<Self>, committed: Result<(), &PortError>) {
        let outcome = match (self.outcome, committed) {
            // The piece's own error says more than the commit's, and nothing of it was applied.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(e)) => Err(e.clone()),
            (None, Ok(())) => Err(PortError(
                "the SQLite writer could not run this piece of work (it panicked); nothing of it \
                 was applied"
                    .to_owned(),
            )),
        };
        // A caller that has gone (its thread ended, its request was dropped) needs no answer.
        match self.reply {
            Reply::Thread(reply) => {
                let _ = reply.send(outcome);
            }
            Reply::Task(reply) => {
                let _ = reply.send(outcome);
            }
        }
    }
}

/// How many transactions the writer committed and how many pieces they held: the ratio is the
/// average batch size.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    pieces: AtomicU64,
}

impl Stats {
    /// Transactions committed, and the pieces of work in them.
    pub(crate) fn read(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.pieces.load(Ordering::Relaxed),
        )
    }
}

/// The handle callers use: work goes to the thread through a channel, answers come back on one
/// channel per call.
pub(crate) struct Writer {
    jobs: Option<mpsc::SyncSender<Box<dyn Work>>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
    what: &'static str,
}

impl Writer {
    /// Starts the thread that owns `conn`, the database's write connection. `what` names the
    /// database in errors and in the thread's name.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub(crate) fn spawn(conn: Connection, what: &'static str) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Box<dyn Work>>(QUEUE);
        let stats = Arc::new(Stats::default());
        let thread = std::thread::Builder::new()
            .name(format!("{what} writer"))
            .spawn({
                let stats = Arc::clone(&stats);
                move || serve(conn, &queue, &stats)
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
            what,
        })
    }

    /// The writer of the database at `path` in this process: the one already running (`conn` is
    /// then closed), or a new one that owns `conn`. A store and an audit table in one file, or two
    /// handles on one file, so share one writer: their writes commit together instead of two
    /// writers taking turns at SQLite's lock through its busy timeout, where one that commits back
    /// to back can starve the other.
    ///
    /// # Errors
    /// The path cannot be resolved, or the thread cannot be started.
    pub(crate) fn shared(
        path: &std::path::Path,
        conn: Connection,
        what: &'static str,
    ) -> std::io::Result<Arc<Self>> {
        static WRITERS: std::sync::LazyLock<
            std::sync::Mutex<
                std::collections::HashMap<std::path::PathBuf, std::sync::Weak<Writer>>,
            >,
        > = std::sync::LazyLock::new(Default::default);
        let key = std::fs::canonicalize(path)?;
        let mut writers = WRITERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writers.retain(|_, writer| writer.strong_count() > 0);
        if let Some(writer) = writers.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(writer);
        }
        let writer = Arc::new(Self::spawn(conn, what)?);
        writers.insert(key, Arc::downgrade(&writer));
        Ok(writer)
    }

    /// Runs `work` in the next batch and returns its outcome once the batch is committed (durable)
    /// or has failed. Blocks the calling thread.
    ///
    /// # Errors
    /// What `work` returned, the commit's failure, or the writer having stopped.
    pub(crate) fn run<T, F>(&self, work: F) -> PortResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<T> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(work, Reply::Thread(reply))?;
        answer.recv().map_err(|_| self.stopped())?
    }

    /// Like [`Writer::run`] for async callers: hands `work` over at once and returns a future of
    /// its outcome, so that no thread waits for the commit but the writer's own. The work is done
    /// (and committed) even if the future is dropped.
    pub(crate) fn submit<T, F>(&self, work: F) -> PortFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Err(e) = self.send(work, Reply::Task(reply)) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let stopped = self.stopped();
        Box::pin(async move { answer.await.unwrap_or(Err(stopped)) })
    }

    fn send<T, F>(&self, work: F, reply: Reply<T>) -> PortResult<()>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> PortResult<T> + Send + 'static,
    {
        let blocking = matches!(reply, Reply::Thread(_));
        let call = Box::new(Call {
            work: Some(work),
            outcome: None,
            reply,
        });
        let jobs = self.jobs.as_ref().ok_or_else(|| self.stopped())?;
        if blocking {
            // A thread that may block waits for room.
            return jobs.send(call).map_err(|_| self.stopped());
        }
        // A task must not block its executor thread: a full queue (the database stalled while
        // work kept coming) is an error, and the request fails closed.
        jobs.try_send(call).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => PortError(format!(
                "{}: {QUEUE} writes are already waiting for the database; try again",
                self.what
            )),
            mpsc::TrySendError::Disconnected(_) => self.stopped(),
        })
    }

    fn stopped(&self) -> PortError {
        PortError(format!(
            "{}: its writer thread has stopped; restart the host",
            self.what
        ))
    }

    /// The writer's counts so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        self.stats.read()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered what is queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: a batch per turn, until every handle is gone.
fn serve(mut conn: Connection, queue: &mpsc::Receiver<Box<dyn Work>>, stats: &Stats) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let committed = run_batch(&mut conn, &mut batch);
        if committed.is_ok() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .pieces
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        for work in batch {
            work.answer(committed.as_ref().map(|_| ()));
        }
    }
}

/// Runs every piece in its own savepoint within one transaction, then commits.
fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn Work>]) -> PortResult<()> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error("begin", &e))?;
    let savepoint_failed = |e: rusqlite::Error| sqlite_error("savepoint", &e);
    for work in batch.iter_mut() {
        let mut savepoint = tx.savepoint().map_err(savepoint_failed)?;
        // A piece that panics fails alone (its caller gets an error), and the thread goes on.
        let succeeded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run(&savepoint)))
                .unwrap_or(false);
        if !succeeded {
            savepoint.rollback().map_err(savepoint_failed)?;
        }
        // After a rollback this releases an empty savepoint.
        savepoint.commit().map_err(savepoint_failed)?;
    }
    tx.commit().map_err(|e| sqlite_error("commit", &e))
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
    use std::sync::Barrier;

    fn writer(dir: &tempfile::TempDir) -> (Writer, std::path::PathBuf) {
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL) STRICT;",
        )
        .unwrap();
        (Writer::spawn(conn, "test database").unwrap(), path)
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_failing_piece_is_rolled_back_alone_and_its_neighbours_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let writer = Arc::new(writer);
        // 24 threads at once, so that pieces share batches; every third one inserts then fails.
        let barrier = Arc::new(Barrier::new(24));
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let (writer, barrier) = (Arc::clone(&writer), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    writer.run(move |conn| {
                        conn.execute("INSERT INTO t VALUES (?1, 1)", [format!("k{i}")])
                            .map_err(|e| sqlite_error("insert", &e))?;
                        if i % 3 == 0 {
                            return Err(PortError(format!("piece {i} refused")));
                        }
                        Ok(i)
                    })
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (i, outcome) in outcomes.iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(outcome, &Err(PortError(format!("piece {i} refused"))));
            } else {
                assert_eq!(outcome, &Ok(i));
            }
        }
        assert_eq!(
            count(&path),
            16,
            "only the 16 pieces that succeeded are stored"
        );
        let (commits, pieces) = writer.stats();
        assert_eq!(pieces, 24);
        assert!(commits <= 24);
    }

    #[test]
    fn concurrent_writers_share_commits_and_every_acknowledged_write_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let writer = Arc::new(writer);
        let (threads, each) = (16, 40);
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (writer, barrier) = (Arc::clone(&writer), Arc::clone(&barrier));
                let reader = Connection::open(&path).unwrap();
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..each {
                        let key = format!("{t}:{i}");
                        let written = key.clone();
                        writer
                            .run(move |conn| {
                                conn.execute("INSERT INTO t VALUES (?1, 1)", [written])
                                    .map(drop)
                                    .map_err(|e| sqlite_error("insert", &e))
                            })
                            .unwrap();
                        // Acknowledged means committed: another connection sees it at once.
                        let seen: i64 = reader
                            .query_row("SELECT COUNT(*) FROM t WHERE k = ?1", [key], |row| {
                                row.get(0)
                            })
                            .unwrap();
                        assert_eq!(seen, 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(count(&path), (threads * each) as i64);
        let (commits, pieces) = writer.stats();
        assert_eq!(pieces, (threads * each) as u64);
        assert!(
            commits < pieces,
            "{threads} writers at once should share commits: {commits} commits for {pieces} writes"
        );
    }

    #[test]
    fn a_full_queue_fails_a_handed_over_write_at_once_and_blocks_no_task() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let writer = Arc::new(writer);
        let (started, has_started) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let stalled = {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                writer.run(move |_| {
                    started.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
            })
        };
        has_started.recv().unwrap();
        let insert = |i: usize| {
            move |conn: &Connection| {
                conn.execute("INSERT INTO t VALUES (?1, 1)", [format!("k{i}")])
                    .map(drop)
                    .map_err(|e| sqlite_error("insert", &e))
            }
        };
        // The writer is stalled inside a piece: QUEUE more fit, the next is refused at once.
        let waiting: Vec<_> = (0..QUEUE).map(|i| writer.submit(insert(i))).collect();
        let refused = ready_now(writer.submit(insert(QUEUE)));
        assert!(refused.unwrap_err().0.contains("already waiting"));
        release.send(()).unwrap();
        stalled.join().unwrap().unwrap();
        drop(waiting);
        // The queued work is done even though no one awaited it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count(&path) < QUEUE as i64 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(count(&path), QUEUE as i64);
    }

    /// The outcome of a future that is ready at once (a refusal), without a runtime.
    fn ready_now<T>(mut future: PortFuture<T>) -> PortResult<T> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(outcome) => outcome,
            std::task::Poll::Pending => panic!("a refusal is ready at once"),
        }
    }

    #[test]
    fn a_piece_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        let outcome: PortResult<()> = writer.run(|conn| {
            conn.execute("INSERT INTO t VALUES ('p', 1)", [])
                .map_err(|e| sqlite_error("insert", &e))?;
            panic!("a bug in a piece of work");
        });
        assert!(outcome.unwrap_err().0.contains("panicked"));
        writer
            .run(|conn| {
                conn.execute("INSERT INTO t VALUES ('q', 1)", [])
                    .map(drop)
                    .map_err(|e| sqlite_error("insert", &e))
            })
            .unwrap();
        assert_eq!(
            count(&path),
            1,
            "the panicking piece's insert was rolled back"
        );
    }

    #[test]
    fn a_failed_commit_fails_the_whole_batch_and_a_stopped_writer_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, path) = writer(&dir);
        // A piece that ends the transaction itself makes the savepoint release, and so the
        // batch, fail: its caller gets an error and nothing of the batch is applied.
        let outcome = writer.run(|conn| {
            conn.execute("INSERT INTO t VALUES ('a', 1)", [])
                .map_err(|e| sqlite_error("insert", &e))?;
            conn.execute_batch("ROLLBACK")
                .map_err(|e| sqlite_error("rollback", &e))
        });
        assert!(outcome.is_err(), "{outcome:?}");
        assert_eq!(count(&path), 0);
        // The writer goes on with the next batch.
        writer
            .run(|conn| {
                conn.execute("INSERT INTO t VALUES ('b', 1)", [])
                    .map(drop)
                    .map_err(|e| sqlite_error("insert", &e))
            })
            .unwrap();
        assert_eq!(count(&path), 1);
    }
}
