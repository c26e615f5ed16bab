//! Audit sinks: [`MemoryAuditSink`] for tests and [`JsonlAuditSink`], an append-only JSON Lines file.
//!
//! [`JsonlAuditSink`] guarantees:
//! - The line is stored byte for byte, followed by `\n`, so a verifier recomputes the same hashes.
//! - `Ok` only after `sync_data`: an acknowledged record survives a crash or `SIGKILL` of the host.
//! - Each record goes out in one `write` on a file opened in append mode, so writers in several
//!   processes never interleave inside a line; a mutex orders the writers of one process.
//! - A record cut short (a short write, or a crash in the middle of one) never merges with the next:
//!   the next record then starts on a new line, and the torn fragment stays visible to a verifier.
//!
//! Both sinks refuse an empty line or one holding CR or LF, which would break the one-record-per-line
//! framing.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mfa_step_core::ports::{AuditEntry, AuditSink, PortError, PortResult};

use super::{BackendError, lock};

fn validate_line(entry: &AuditEntry) -> PortResult<()> {
    if entry.line.is_empty() {
        return Err(PortError(
            "refused audit record: its line is empty".to_owned(),
        ));
    }
    if entry.line.contains(['\r', '\n']) {
        return Err(PortError(
            "refused audit record: its line contains a line break; it must be one line of JSON"
                .to_owned(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// MemoryAuditSink

/// Keeps every accepted record in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    entries: Mutex<Vec<AuditEntry>>,
}

impl MemoryAuditSink {
    /// A sink with no records.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record accepted so far, in order.
    #[must_use]
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl AuditSink for MemoryAuditSink {
    fn append(&self, entry: &AuditEntry) -> PortResult<()> {
        validate_line(entry)?;
        lock(&self.entries, "the memory audit sink")?.push(entry.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// JsonlAuditSink

/// Appends each record's line to a JSON Lines file and syncs it before acknowledging.
pub struct JsonlAuditSink {
    path: PathBuf,
    state: Mutex<AppendState>,
}

struct AppendState {
    file: File,
    /// The file does not end with `\n` (a record was cut short): start the next one on a new line.
    torn: bool,
}

impl JsonlAuditSink {
    /// Opens (or creates) the file at `path` for appending, creating missing parent folders.
    ///
    /// # Errors
    /// A folder or the file cannot be created, opened or read.
    pub fn open(path: impl AsRef<Path>) -> super::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |action, path: &Path, source| BackendError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("create the folder", parent, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io("open the audit file", &path, e))?;
        let torn =
            ends_without_newline(&mut file).map_err(|e| io("read the audit file", &path, e))?;
        Ok(Self {
            path,
            state: Mutex::new(AppendState { file, torn }),
        })
    }

    /// The audit file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether a non-empty file's last byte is not `\n` (a crash cut its last record short).
fn ends_without_newline(file: &mut File) -> std::io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    // Reading moves the cursor only: in append mode every write still goes to the end.
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl fmt::Debug for JsonlAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlAuditSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditSink for JsonlAuditSink {
    fn append(&self, entry: &AuditEntry) -> PortResult<()> {
        validate_line(entry)?;
        let mut state = lock(&self.state, "the audit file")?;
        let mut record = Vec::with_capacity(entry.line.len() + 2);
        if state.torn {
            record.push(b'\n');
        }
        record.extend_from_slice(entry.line.as_bytes());
        record.push(b'\n');
        let fail = |what: &str, e: &dyn fmt::Display| {
            PortError(format!("audit file {}: {what}: {e}", self.path.display()))
        };
        // One write call: with O_APPEND the kernel places it at the end in one piece, so records
        // from other processes cannot land inside it.
        let written = loop {
            match state.file.write(&record) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        }
        .map_err(|e| fail("cannot append", &e))?;
        if written < record.len() {
            state.torn = true;
            return Err(fail(
                "short write",
                &format_args!(
                    "{written} of {} bytes; the record was not stored",
                    record.len()
                ),
            ));
        }
        state.torn = false;
        state
            .file
            .sync_data()
            .map_err(|e| fail("cannot sync to disk", &e))
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
    use std::sync::Arc;

    fn entry(seq: u64, line: &str) -> AuditEntry {
        AuditEntry {
            org_id: "acme".to_owned(),
            seq,
            at: 1_700_000_000 + i64::try_from(seq).unwrap(),
            action: "code_sent".to_owned(),
            line: line.to_owned(),
        }
    }

    #[test]
    fn jsonl_lines_are_appended_in_order_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit/acme.jsonl");
        let sink = JsonlAuditSink::open(&path).unwrap();
        sink.append(&entry(1, r#"{"seq":1,"action":"code_sent"}"#))
            .unwrap();
        sink.append(&entry(2, r#"{"seq":2,"note":"caf\u00e9 é ✓"}"#))
            .unwrap();
        sink.append(&entry(3, r#"{"seq":3}"#)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1,\"action\":\"code_sent\"}\n{\"seq\":2,\"note\":\"caf\\u00e9 é ✓\"}\n{\"seq\":3}\n"
        );
    }

    #[test]
    fn jsonl_reopen_continues_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        JsonlAuditSink::open(&path)
            .unwrap()
            .append(&entry(1, "{\"seq\":1}"))
            .unwrap();
        let sink = JsonlAuditSink::open(&path).unwrap();
        sink.append(&entry(2, "{\"seq\":2}")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
    }

    #[test]
    fn jsonl_a_torn_last_line_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"seq\":1}\n{\"se").unwrap();
        let sink = JsonlAuditSink::open(&path).unwrap();
        sink.append(&entry(2, "{\"seq\":2}")).unwrap();
        sink.append(&entry(3, "{\"seq\":3}")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"se\n{\"seq\":2}\n{\"seq\":3}\n"
        );
    }

    #[test]
    fn jsonl_concurrent_appends_keep_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let first = Arc::new(JsonlAuditSink::open(&path).unwrap());
        let second = Arc::new(JsonlAuditSink::open(&path).unwrap());
        let padding = "x".repeat(300);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let sink = Arc::clone(if t % 2 == 0 { &first } else { &second });
                let padding = padding.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let line = format!("{{\"thread\":{t},\"i\":{i},\"pad\":\"{padding}\"}}");
                        sink.append(&entry(i, &line)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let content = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = content.lines().collect();
        assert_eq!(lines.len(), 400);
        for t in 0..8u64 {
            let mine: Vec<_> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("{{\"thread\":{t},")))
                .collect();
            assert_eq!(mine.len(), 50);
            for (i, line) in mine.iter().enumerate() {
                assert_eq!(
                    **line,
                    format!("{{\"thread\":{t},\"i\":{i},\"pad\":\"{padding}\"}}"),
                    "whole, and in each writer's order"
                );
            }
        }
    }

    #[test]
    fn lines_that_would_break_the_framing_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let jsonl = JsonlAuditSink::open(&path).unwrap();
        let memory = MemoryAuditSink::new();
        for line in ["", "{}\n{}", "{}\r", "{}\n"] {
            assert!(jsonl.append(&entry(1, line)).is_err(), "{line:?}");
            assert!(memory.append(&entry(1, line)).is_err(), "{line:?}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(memory.entries().is_empty());
    }

    #[test]
    fn jsonl_open_fails_cleanly_where_no_file_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, b"").unwrap();
        let err = JsonlAuditSink::open(blocker.join("audit.jsonl")).unwrap_err();
        assert!(err.to_string().contains("not-a-folder"), "{err}");
    }

    #[test]
    fn memory_sink_keeps_entries_in_order() {
        let memory = MemoryAuditSink::new();
        memory.append(&entry(1, "{\"seq\":1}")).unwrap();
        memory.append(&entry(2, "{\"seq\":2}")).unwrap();
        assert_eq!(
            memory.entries(),
            [entry(1, "{\"seq\":1}"), entry(2, "{\"seq\":2}")]
        );
    }
}
