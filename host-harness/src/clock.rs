//! Clocks for the component's `wasi:clocks` imports. The component reads the time only through them,
//! so a test can set the time, step it across an expiry, and see exactly what a user would.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// A clock a test sets and advances. Clones share the same time. Monotonic time follows wall time
/// (never backwards: stepping back is refused).
#[derive(Debug, Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    /// A clock reading `unix_seconds`.
    #[must_use]
    pub fn at(unix_seconds: i64) -> Self {
        Self(Arc::new(AtomicI64::new(unix_seconds)))
    }

    /// The current reading, Unix seconds.
    #[must_use]
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `seconds` (negative values are ignored: time does not go back).
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds.max(0), Ordering::SeqCst);
    }

    /// Sets the clock to `unix_seconds` if that is not earlier than now.
    pub fn set(&self, unix_seconds: i64) {
        self.0.fetch_max(unix_seconds, Ordering::SeqCst);
    }
}

impl HostWallClock for TestClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(u64::try_from(TestClock::now(self)).unwrap_or(0))
    }
}

impl HostMonotonicClock for TestClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        u64::try_from(TestClock::now(self))
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
    }
}

/// For browser suites that must step across hours of wrong-code delays against a running
/// `serve --demo`: a [`TestClock`] that reads the system clock plus the whole, non-negative number
/// of seconds written in `file` (none, unreadable or negative: 0), kept up to date by a thread
/// every 100 ms. It never goes back: lowering the offset holds the time where it was. Time is then
/// not real; every change of the offset is logged as a warning.
#[must_use]
pub fn offset_by_file(file: std::path::PathBuf) -> TestClock {
    let offset_in = move || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .unwrap_or(0)
            .max(0)
    };
    let mut offset = offset_in();
    let clock = TestClock::at(Clock::System.now().saturating_add(offset));
    let kept = clock.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = offset_in();
            if now != offset {
                tracing::warn!(
                    offset_seconds = now,
                    "TEST CLOCK: the component's time moved"
                );
                offset = now;
            }
            kept.set(Clock::System.now().saturating_add(offset));
        }
    });
    clock
}

/// Which clock the component sees.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The machine's clock.
    System,
    /// A test clock.
    Test(TestClock),
}

impl Clock {
    /// Now, in Unix seconds, as the component will see it.
    #[must_use]
    pub fn now(&self) -> i64 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Self::Test(t) => t.now(),
        }
    }
}
