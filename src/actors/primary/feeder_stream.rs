//! The streaming half of a feeder: once the spare's position is settled, send committed
//! records from the log within the window, take acknowledgements, keep the link alive, and
//! publish the spare's progress. Bounds are in `feeder`'s module doc.

use std::time::Instant;

use crate::actors::messages::{LinkState, SpareProgress};
use crate::actors::primary::feeder::{Link, LinkIo, MAX_TRACKED_RECORD_TIMES};
use crate::core::feeder::Window;
use crate::error::{Error, Result};
use crate::log::Record;
use crate::net::handshake::SpareReport;
use crate::wire::codec::MAX_BATCH_BYTES;
use crate::wire::{Envelope, Message};

/// Longest "why held" text kept from a spare's Ack (it is shown in status as sent).
const MAX_HELD_TEXT_CHARS: usize = 64;

impl Link {
    pub(super) async fn stream(
        &mut self,
        io: &mut LinkIo,
        start: u64,
        report: &SpareReport,
    ) -> Result<()> {
        tracing::info!(spare = %self.spare.name, from_lsn = start, "streaming to spare");
        let mut window = Window::new(self.spare.window, start);
        let spare_lsn = report.durable.lsn;
        self.report(
            LinkState::Streaming,
            (spare_lsn, spare_lsn, report.applied_lsn),
            Some(io.heard.last()),
            &window,
            None,
        );
        loop {
            self.fill_window(io, &mut window).await?;
            tokio::select! {
                changed = self.committed.changed() => if changed.is_err() { return Ok(()) },
                frame = io.frames.recv() => {
                    let env = frame.ok_or_else(|| Error::Unavailable("connection closed".into()))??;
                    self.on_frame(env, &mut window, io.heard.last())?;
                }
                _ = io.keepalive.tick() => {
                    if io.heard.silent_for() > self.silence() {
                        return Err(Error::Unavailable(format!("spare silent for {:?}", io.heard.silent_for())));
                    }
                    let last_lsn = self.committed.borrow().lsn;
                    self.send(io, Message::KeepAlive { last_lsn }).await?;
                }
            }
        }
    }

    /// Sends committed records while the window has room.
    async fn fill_window(&mut self, io: &mut LinkIo, window: &mut Window) -> Result<()> {
        loop {
            // The spare's answers between batches: its acks open the window, and a queue left
            // full (a long rate-capped fill) would stop the reader and look like a dead spare.
            while let Ok(frame) = io.frames.try_recv() {
                self.on_frame(frame?, window, io.heard.last())?;
            }
            let committed = self.committed.borrow().lsn;
            if window.room() == 0 || window.next_lsn() > committed {
                return Ok(());
            }
            let max = (window.room() as usize).min(MAX_BATCH_BYTES);
            let records = self.read(window.next_lsn(), committed, max).await?;
            // The records a seed pinned are read: the log may move on.
            self.prim.pins.remove(&self.spare.name);
            let mut bytes = Vec::with_capacity(records.iter().map(Record::encoded_len).sum());
            for r in &records {
                r.encode_into(&mut bytes);
                if self.times.len() < MAX_TRACKED_RECORD_TIMES {
                    self.times.push_back((r.lsn, r.time_ms));
                }
            }
            let (first, last) = (records[0].lsn, records[records.len() - 1].lsn);
            let size = bytes.len() as u64;
            let count = records.len() as u32;
            let message = if self.spare.link == crate::config::Link::Wan {
                // Batches of SQL rows compress well; the spare checks the size it announces.
                Message::RecordsLz4 {
                    count,
                    raw_len: bytes.len() as u32,
                    bytes: lz4_flex::block::compress(&bytes),
                }
            } else {
                Message::Records { count, bytes }
            };
            self.send(io, message).await?;
            window.on_sent(first, last, size);
            // The oldest unapplied record may have just been sent: lag in seconds needs it
            // even if the spare never answers again.
            if let Some(p) = &self.progress {
                let (positions, last_ack) = ((p.received, p.flushed, p.applied), p.last_ack);
                self.report(LinkState::Streaming, positions, last_ack, window, None);
            }
        }
    }

    fn on_frame(&mut self, env: Envelope, window: &mut Window, now: Instant) -> Result<()> {
        let positions = match env.message {
            Message::Ack {
                received,
                flushed,
                applied,
                oldest_unapplied_ms,
                held,
                ..
            } => {
                self.spare_oldest_ms = (oldest_unapplied_ms > 0).then_some(oldest_unapplied_ms);
                self.held =
                    (!held.is_empty()).then(|| held.chars().take(MAX_HELD_TEXT_CHARS).collect());
                if !window.on_flushed(flushed) || applied > flushed || flushed > received {
                    return Err(Error::InvalidData(format!("spare acknowledged impossible positions (received {received}, flushed {flushed}, applied {applied})")));
                }
                if self.speed_seed_after.is_some_and(|lsn| flushed >= lsn) {
                    self.speed_seed_after = None;
                }
                while self.times.front().is_some_and(|&(lsn, _)| lsn <= applied) {
                    self.times.pop_front();
                }
                self.prim
                    .spare_applied
                    .insert(self.spare.name.clone(), applied);
                if let Some(sync) = self.prim.sync() {
                    let committed = self.committed.borrow().lsn;
                    if sync.flushed(&self.spare.name, flushed, committed) {
                        self.data.events.record(
                            "commit_rule_rejoined",
                            Some(&self.spare.name),
                            "caught up and rejoined the commit rule",
                        );
                    }
                }
                (received, flushed, applied)
            }
            // The spare answered: its positions are unchanged, its last-ack age resets.
            Message::KeepAlive { .. } => match &self.progress {
                Some(p) => (p.received, p.flushed, p.applied),
                None => return Ok(()),
            },
            Message::Refuse { reason } => {
                return Err(Error::Unavailable(format!("spare refused: {reason}")))
            }
            other => {
                return Err(Error::InvalidData(format!(
                    "unexpected {} from spare while streaming",
                    other.name()
                )))
            }
        };
        self.report(LinkState::Streaming, positions, Some(now), window, None);
        Ok(())
    }

    /// Publishes this spare's progress to the primary actor (dropped if its mailbox is full).
    pub(super) fn report(
        &mut self,
        state: LinkState,
        (received, flushed, applied): (u64, u64, u64),
        last_ack: Option<Instant>,
        window: &Window,
        seed: Option<(u64, u64)>,
    ) {
        let p = SpareProgress {
            spare: self.spare.name.clone(),
            state,
            received,
            flushed,
            applied,
            // The older of what the spare says it holds back and what was sent since the
            // link started: both are records it has not applied.
            oldest_unapplied_time_ms: self
                .times
                .front()
                .map(|&(_, t)| t)
                .into_iter()
                .chain(self.spare_oldest_ms)
                .min(),
            held: self.held.clone(),
            last_ack,
            in_flight_bytes: window.in_flight_bytes(),
            seed,
            protocol: self.protocol,
        };
        let _ = self.primary.try_send(p.clone());
        self.progress = Some(p);
    }
}
