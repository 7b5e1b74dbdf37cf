//! A feeder's window (DESIGN.md §4 "Window"): at most `window_bytes` of records sent and not
//! yet flushed by the spare. The feeder reads the log only while there is room, so a slow or
//! stalled spare costs the primary at most one window of buffered bytes plus one batch.

use std::collections::VecDeque;

/// Sent-but-unacknowledged accounting for one spare.
#[derive(Debug)]
pub struct Window {
    window_bytes: u64,
    /// Next LSN to send.
    next_lsn: u64,
    /// (last LSN of a batch, its bytes), oldest first.
    in_flight: VecDeque<(u64, u64)>,
    in_flight_bytes: u64,
}

impl Window {
    /// A window that starts sending at `next_lsn`.
    pub fn new(window_bytes: u64, next_lsn: u64) -> Self {
        assert!(
            window_bytes > 0 && next_lsn > 0,
            "window and LSN start above zero"
        );
        Window {
            window_bytes,
            next_lsn,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// Bytes that may be sent now (0 when the window is full).
    pub fn room(&self) -> u64 {
        self.window_bytes.saturating_sub(self.in_flight_bytes)
    }

    /// Records a batch sent: `last_lsn` ends it, `bytes` is its size.
    pub fn on_sent(&mut self, first_lsn: u64, last_lsn: u64, bytes: u64) {
        assert_eq!(
            first_lsn, self.next_lsn,
            "batches are sent in order without gaps"
        );
        assert!(last_lsn >= first_lsn, "a batch holds at least one record");
        self.in_flight.push_back((last_lsn, bytes));
        self.in_flight_bytes += bytes;
        self.next_lsn = last_lsn + 1;
    }

    /// The spare flushed up to `flushed`: frees the batches it covers. An ack beyond what
    /// was sent is a protocol error, reported as false.
    pub fn on_flushed(&mut self, flushed: u64) -> bool {
        if flushed >= self.next_lsn {
            return false;
        }
        while let Some(&(last, bytes)) = self.in_flight.front() {
            if last > flushed {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_bytes -= bytes;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_and_frees_on_flush() {
        let mut w = Window::new(100, 1);
        assert_eq!(w.room(), 100);
        w.on_sent(1, 5, 60);
        w.on_sent(6, 9, 50);
        assert_eq!(w.room(), 0, "over-full by at most one batch, then no room");
        assert!(w.on_flushed(4));
        assert_eq!(
            w.in_flight_bytes(),
            110,
            "a partly flushed batch stays in flight"
        );
        assert!(w.on_flushed(5));
        assert_eq!(w.room(), 50);
        assert!(w.on_flushed(9));
        assert_eq!(w.room(), 100);
        assert_eq!(w.next_lsn(), 10);
    }

    #[test]
    fn ack_beyond_what_was_sent_is_refused() {
        let mut w = Window::new(100, 1);
        w.on_sent(1, 3, 10);
        assert!(!w.on_flushed(4));
        assert_eq!(w.in_flight_bytes(), 10);
    }
}
