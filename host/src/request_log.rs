//! The request log: one JSON line per request on stdout, buffered in memory
//! and written by a thread of its own every 50 ms.
//!
//! A `println!` per request took the stdout lock (a futex whenever two worker
//! threads logged at once) and made a `write` call in the request's path.
//! Here a request appends to a buffer under a lock held for a copy; a line
//! reaches stdout at most 50 ms later, and [`flush`] writes what is left when
//! the server stops. A host killed with SIGKILL loses the last 50 ms of lines.

use std::io::Write;
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

/// How often the buffer goes to stdout.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Above this, the buffer goes to stdout without waiting for the thread (a
/// stdout that cannot keep up slows requests rather than growing memory).
const MAX_BUFFERED: usize = 1 << 20;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static WRITER: Once = Once::new();

/// Appends `line` and a newline to the log.
pub(crate) fn line(line: std::fmt::Arguments<'_>) {
    WRITER.call_once(|| {
        let started = std::thread::Builder::new()
            .name("request-log".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            });
        if let Err(e) = started {
            eprintln!("coupon-host: cannot start the request log's writer ({e}); lines are written as they come");
        }
    });
    let mut buffer = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
    // Writing to a Vec cannot fail.
    let _ = buffer.write_fmt(line);
    buffer.push(b'\n');
    if buffer.len() > MAX_BUFFERED {
        let full = std::mem::take(&mut *buffer);
        drop(buffer);
        write_out(&full);
    }
}

/// Writes every buffered line to stdout now.
pub(crate) fn flush() {
    let pending = std::mem::take(&mut *BUFFER.lock().unwrap_or_else(PoisonError::into_inner));
    if !pending.is_empty() {
        write_out(&pending);
    }
}

fn write_out(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (a reader gone) must not stop the server.
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
}
