//! The seeding half of a feeder (DESIGN.md §5): find where a diverged spare forked, take (or
//! reuse) a snapshot, stream it in checksummed chunks within the window, resuming at the
//! spare's last durable offset after a cut, and wait for the spare to install it.
//!
//! While a spare is seeding, the primary pins its log after the snapshot's LSN (the spare
//! continues from there) and keeps the snapshot file; both are released once the spare
//! streams from the log again.

use std::time::{Duration, Instant};

use crate::actors::messages::LinkState;
use crate::actors::primary::feeder::{Link, LinkIo};
use crate::core::feeder::Window;
use crate::core::position;
use crate::error::{Error, Result};
use crate::net::handshake::SpareReport;
use crate::store::snapshot::{SnapshotInfo, Snapshots, SEED_CHUNK_BYTES};
use crate::wire::message::SeedResume;
use crate::wire::Message;

/// How long the spare may take to verify and install a snapshot before it answers.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

impl Link {
    /// Asks a diverged spare for its chain at a few LSNs; returns the last LSN both
    /// histories share (everything after it on the spare goes to quarantine).
    pub(super) async fn find_fork(&mut self, io: &mut LinkIo, reason: &str) -> Result<u64> {
        tracing::warn!(spare = %self.spare.name, %reason, "spare diverged: finding where, to quarantine its divergent records");
        self.send(
            io,
            Message::Diverged {
                reason: reason.to_string(),
            },
        )
        .await?;
        let env = self.recv(io, self.silence()).await?;
        let Message::Probes { points } = env.message else {
            return Err(Error::InvalidData(format!(
                "spare answered Diverged with {}",
                env.message.name()
            )));
        };
        let base = *self.data.base.lock().expect("base lock");
        let durable = self.committed.borrow().lsn;
        let mut ours = Vec::new();
        for &(lsn, _, _) in points.iter().take(64) {
            let mine = if lsn == base.lsn {
                Some((base.epoch, base.chain))
            } else if lsn > base.lsn && lsn <= durable {
                self.read(lsn, lsn, 0)
                    .await
                    .ok()
                    .map(|r| (r[0].epoch, r[0].chain))
            } else {
                None
            };
            ours.push((lsn, mine));
        }
        let common = position::common_point(&points, |lsn| {
            ours.iter().find(|(l, _)| *l == lsn).and_then(|(_, m)| *m)
        });
        tracing::info!(spare = %self.spare.name, common, "histories agree up to this LSN");
        Ok(common)
    }

    /// The snapshot to send: the one the spare was receiving if we still have it and our
    /// log still continues from it, else a new one (taken on the blocking pool).
    /// `not_before`: the LSN the resumed snapshot may not be behind.
    async fn snapshot_for(
        &mut self,
        io: &mut LinkIo,
        resume: Option<SeedResume>,
        not_before: Option<u64>,
    ) -> Result<SnapshotInfo> {
        let snapshots = Snapshots::new(&self.data.node.data_dir);
        if let Some(r) = resume {
            if let Some(info) = snapshots.find(&r.id)? {
                if crate::core::position::may_resume_snapshot(
                    info.position.lsn,
                    self.data.oldest_lsn(),
                    not_before,
                ) {
                    self.prim
                        .seeding
                        .insert(self.spare.name.clone(), info.id.clone());
                    return Ok(info);
                }
            }
        }
        // Keep what follows the snapshot before taking it: it will end at or after this LSN.
        let before = self.committed.borrow().lsn.saturating_sub(1);
        self.prim.pins.insert(self.spare.name.clone(), before);
        let db = self.data.node.data_dir.join(crate::store::DB_FILE);
        let log_dir = self.data.log_dir();
        // Reserved before the files exist: another spare's finished seed prunes every
        // snapshot not listed in `seeding`, and must not take this one while it is written.
        let id = Snapshots::new_id();
        self.prim
            .seeding
            .insert(self.spare.name.clone(), id.clone());
        let task = tokio::task::spawn_blocking(move || snapshots.create(&db, &log_dir, &id));
        let info = self.alive_until(io, task).await??;
        self.prim
            .pins
            .insert(self.spare.name.clone(), info.position.lsn.saturating_sub(1));
        self.prim
            .seeding
            .insert(self.spare.name.clone(), info.id.clone());
        Ok(info)
    }

    /// Seeds the spare; returns its position once it installed the snapshot.
    /// `optional`: only to save time (the spare may refuse it while held back).
    pub(super) async fn seed(
        &mut self,
        io: &mut LinkIo,
        report: &SpareReport,
        quarantine_after: Option<u64>,
        reason: String,
        optional: bool,
    ) -> Result<SpareReport> {
        // A spare whose history agrees with ours is never moved back: a partial seed it
        // holds is resumed only if that snapshot is not behind its log. A diverged one
        // (`quarantine_after`) is seeded at any point: its own records are quarantined.
        let not_before = quarantine_after.is_none().then_some(report.durable.lsn);
        let snap = self
            .snapshot_for(io, report.seed.clone(), not_before)
            .await?;
        tracing::info!(spare = %self.spare.name, %reason, lsn = snap.position.lsn, bytes = snap.size, "seeding spare from a snapshot");
        self.data.events.record(
            "seed_started",
            Some(&self.spare.name),
            &format!(
                "seeding {} ({} bytes at LSN {}): {reason}",
                self.spare.name, snap.size, snap.position.lsn
            ),
        );
        self.send(
            io,
            Message::SeedStart {
                snapshot: snap.clone(),
                reason,
                optional,
            },
        )
        .await?;
        self.send_snapshot(io, &snap).await?;
        self.install(io, quarantine_after, optional).await
    }

    /// Sends the snapshot's bytes the spare does not hold yet, at most a window ahead of its
    /// acknowledgements.
    async fn send_snapshot(&mut self, io: &mut LinkIo, snap: &SnapshotInfo) -> Result<()> {
        let mut acked = self.seed_ack(io, 0, snap.size).await?;
        if acked > 0 {
            tracing::info!(spare = %self.spare.name, offset = acked, "resuming the seed where the spare stopped");
        }
        let mut sent = acked;
        let window = self.spare.window;
        while acked < snap.size {
            while sent < snap.size && sent - acked < window {
                let chunk = self.chunk(&snap.id, sent).await?;
                let len = chunk.len() as u64;
                self.send(
                    io,
                    Message::SeedChunk {
                        offset: sent,
                        crc: crc32c::crc32c(&chunk),
                        bytes: chunk,
                    },
                )
                .await?;
                sent += len;
            }
            acked = self.seed_ack(io, acked, sent).await?;
            self.report_seed(acked, snap.size);
        }
        Ok(())
    }

    /// Tells the spare the whole snapshot was sent, waits for its new position, then lets
    /// the log and the snapshots it no longer needs go.
    async fn install(
        &mut self,
        io: &mut LinkIo,
        quarantine_after: Option<u64>,
        optional: bool,
    ) -> Result<SpareReport> {
        self.send(
            io,
            Message::SeedEnd {
                quarantine_after,
                optional,
            },
        )
        .await?;
        let env = self.recv(io, INSTALL_TIMEOUT).await?;
        let Message::Position {
            durable,
            applied_lsn,
            seed,
            broken,
            holding,
        } = env.message
        else {
            return Err(Error::InvalidData(format!(
                "spare answered SeedEnd with {}",
                env.message.name()
            )));
        };
        tracing::info!(spare = %self.spare.name, lsn = durable.lsn, "spare installed the snapshot");
        self.data.events.record(
            "seed_finished",
            Some(&self.spare.name),
            &format!(
                "{} installed the snapshot at LSN {}",
                self.spare.name, durable.lsn
            ),
        );
        self.prim.pins.remove(&self.spare.name);
        self.forget_seed()?;
        Ok(SpareReport {
            durable,
            applied_lsn,
            seed,
            broken,
            holding,
            protocol: io.protocol,
        })
    }

    /// Forgets the snapshot reserved for this spare, and deletes every snapshot no seed
    /// reserves any more.
    pub(super) fn forget_seed(&self) -> Result<()> {
        if self.prim.seeding.remove(&self.spare.name).is_none() {
            return Ok(());
        }
        let keep: Vec<String> = self
            .prim
            .seeding
            .iter()
            .map(|e| e.value().clone())
            .collect();
        Snapshots::new(&self.data.node.data_dir).prune(&keep)
    }

    /// Awaits `task`, sending keep-alives meanwhile: taking a snapshot of a large database
    /// takes longer than the spare waits in silence (a 1 GiB seed never started before).
    async fn alive_until<T>(&self, io: &mut LinkIo, task: tokio::task::JoinHandle<T>) -> Result<T> {
        tokio::pin!(task);
        loop {
            tokio::select! {
                done = &mut task => {
                    return done.map_err(|e| Error::Unavailable(format!("snapshot task failed: {e}")))
                }
                _ = io.keepalive.tick() => {
                    let last_lsn = self.committed.borrow().lsn;
                    self.send(io, Message::KeepAlive { last_lsn }).await?;
                }
            }
        }
    }

    /// Waits for a `SeedAck` between `low` and `high`.
    async fn seed_ack(&self, io: &mut LinkIo, low: u64, high: u64) -> Result<u64> {
        let env = self.recv(io, self.silence()).await?;
        match env.message {
            Message::SeedAck { offset } if (low..=high).contains(&offset) => Ok(offset),
            other => Err(Error::InvalidData(format!(
                "expected a seed acknowledgement between {low} and {high}, got {other:?}"
            ))),
        }
    }

    async fn chunk(&self, id: &str, offset: u64) -> Result<Vec<u8>> {
        let snapshots = Snapshots::new(&self.data.node.data_dir);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || snapshots.read_chunk(&id, offset, SEED_CHUNK_BYTES))
            .await
            .map_err(|e| Error::Unavailable(format!("snapshot read failed: {e}")))?
    }

    fn report_seed(&mut self, offset: u64, size: u64) {
        let window = Window::new(self.spare.window, 1);
        let p = self
            .progress
            .as_ref()
            .map_or((0, 0, 0), |p| (p.received, p.flushed, p.applied));
        self.report(
            LinkState::Seeding,
            p,
            Some(Instant::now()),
            &window,
            Some((offset, size)),
        );
    }
}
