//! One feeder per spare: dials it, authenticates, positions, then streams records from the
//! log files within its window (DESIGN.md §4).
//!
//! Bounds: the feeder never holds more than its window of unacknowledged bytes plus one batch
//! ([`MAX_BATCH_BYTES`]), and [`MAX_TRACKED_RECORD_TIMES`] commit times for lag. It reads from
//! the log, never from a queue fed by the write path, so a stalled spare costs the primary no
//! more than that, and never slows a commit.
//!
//! Failure handling: any error ends the link (logged at WARN, or ERROR for divergence, which
//! needs an operator); the actor redials after a backoff that doubles up to
//! [`RECONNECT_BACKOFF_MAX`] and resets once a handshake succeeds.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use tokio::io::AsyncRead;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::actors::node::DataShared;
use crate::actors::primary::{LinkState, PrimaryActor, SpareProgress};
use crate::actors::{
    CONNECT_TIMEOUT, LINK_FRAME_QUEUE, PEER_SILENCE_TIMEOUT, RECONNECT_BACKOFF_MAX,
    RECONNECT_BACKOFF_MIN,
};
use crate::config::NodeConfig;
use crate::core::feeder::Window;
use crate::core::position::{self, Resume};
use crate::error::{Error, Result};
use crate::log::{LogReader, Position, Record};
use crate::net::handshake;
use crate::wire::codec::MAX_BATCH_BYTES;
use crate::wire::{read_frame, write_frame, Envelope, Message};

/// Commit times kept for records sent and not yet applied, to compute lag in seconds.
pub const MAX_TRACKED_RECORD_TIMES: usize = 100_000;

pub struct Feeder {
    spare: NodeConfig,
    shared: Arc<DataShared>,
    committed: watch::Receiver<Position>,
    primary: Addr<PrimaryActor>,
    /// Pause before the next dial; grows while dials fail.
    backoff: Duration,
}

impl Feeder {
    pub fn new(
        spare: NodeConfig,
        shared: Arc<DataShared>,
        committed: watch::Receiver<Position>,
        primary: Addr<PrimaryActor>,
    ) -> Self {
        Feeder {
            spare,
            shared,
            committed,
            primary,
            backoff: RECONNECT_BACKOFF_MIN,
        }
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        let link = Link {
            spare: self.spare.clone(),
            shared: self.shared.clone(),
            committed: self.committed.clone(),
            primary: self.primary.clone(),
            reader: Some(LogReader::new(&self.shared.log_dir())),
            times: VecDeque::new(),
            progress: None,
        };
        ctx.spawn(
            link.run()
                .into_actor(self)
                .map(|outcome, act, ctx| act.on_link_end(outcome, ctx)),
        );
    }

    fn on_link_end(&mut self, outcome: LinkOutcome, ctx: &mut Context<Self>) {
        let spare = &self.spare.name;
        let state = match &outcome.result {
            Err(Error::Diverged(why)) => {
                tracing::error!(%spare, %why, "spare diverged from this primary's history; it must be re-seeded");
                LinkState::Diverged
            }
            Err(e) if outcome.connected => {
                tracing::warn!(%spare, cause = %e, "link to spare lost; redialling");
                LinkState::Disconnected
            }
            Err(e) => {
                tracing::debug!(%spare, cause = %e, "cannot reach spare yet");
                LinkState::Disconnected
            }
            Ok(()) => return,
        };
        let mut last = outcome.progress.unwrap_or_else(|| SpareProgress {
            spare: spare.clone(),
            state,
            received: 0,
            flushed: 0,
            applied: 0,
            oldest_unapplied_time_ms: None,
            last_ack: None,
            in_flight_bytes: 0,
        });
        last.state = state;
        last.in_flight_bytes = 0;
        let _ = self.primary.try_send(last);
        self.backoff = if outcome.connected {
            RECONNECT_BACKOFF_MIN
        } else {
            (self.backoff * 2).min(RECONNECT_BACKOFF_MAX)
        };
        ctx.run_later(self.backoff, |act, ctx| act.dial(ctx));
    }
}

impl Actor for Feeder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.dial(ctx);
    }
}

struct LinkOutcome {
    /// Whether the handshake succeeded (resets the backoff).
    connected: bool,
    result: Result<()>,
    /// Last progress reported, kept while disconnected.
    progress: Option<SpareProgress>,
}

/// One connection's worth of feeding.
struct Link {
    spare: NodeConfig,
    shared: Arc<DataShared>,
    committed: watch::Receiver<Position>,
    primary: Addr<PrimaryActor>,
    /// Taken while a blocking read runs on the blocking pool.
    reader: Option<LogReader>,
    /// (LSN, commit time) of records sent and not applied, oldest first, for lag.
    times: VecDeque<(u64, u64)>,
    progress: Option<SpareProgress>,
}

/// Ends the socket-reading task with the link.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames off the socket into a bounded channel, so the link's select loop never
/// cancels a half-read frame.
pub async fn read_frames<R: AsyncRead + Unpin>(mut rd: R, tx: mpsc::Sender<Result<Envelope>>) {
    loop {
        let frame = read_frame(&mut rd).await;
        let failed = frame.is_err();
        if tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}

impl Link {
    async fn run(mut self) -> LinkOutcome {
        let mut connected = false;
        let result = self.run_inner(&mut connected).await;
        LinkOutcome {
            connected,
            result,
            progress: self.progress,
        }
    }

    fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Relaxed)
    }

    async fn run_inner(&mut self, connected: &mut bool) -> Result<()> {
        let addr = self.spare.peer_advertise.clone();
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| Error::Unavailable(format!("connecting to {addr} timed out")))?
            .map_err(Error::io(format!(
                "connect to spare {} at {addr}",
                self.spare.name
            )))?;
        stream
            .set_nodelay(true)
            .map_err(Error::io("set TCP_NODELAY"))?;
        let (spare_pos, spare_applied) = handshake::as_primary(
            &mut stream,
            &self.shared.identity,
            &self.spare.name,
            self.epoch(),
        )
        .await?;
        *connected = true;
        let start = self.resume_point(spare_pos).await;
        let start = match start {
            Ok(lsn) => lsn,
            Err(e) => {
                let refuse = self.shared.identity.envelope(
                    self.epoch(),
                    Message::Refuse {
                        reason: e.to_string(),
                    },
                );
                let _ = write_frame(&mut stream, &refuse).await;
                return Err(e);
            }
        };
        tracing::info!(spare = %self.spare.name, from_lsn = start, "streaming to spare");
        self.stream(stream, start, spare_pos.lsn, spare_applied)
            .await
    }

    async fn resume_point(&mut self, spare: Position) -> Result<u64> {
        let committed = *self.committed.borrow();
        let ours = if (1..=committed.lsn).contains(&spare.lsn) {
            let rec = self.read(spare.lsn, spare.lsn, 0).await?.remove(0);
            Some((rec.epoch, rec.chain))
        } else {
            None
        };
        match position::decide(spare, committed, ours) {
            Resume::From(lsn) => Ok(lsn),
            Resume::Diverged(why) => Err(Error::Diverged(why)),
        }
    }

    /// Reads records [from, up_to] (bounded by `max_bytes`) on the blocking pool.
    async fn read(&mut self, from: u64, up_to: u64, max_bytes: usize) -> Result<Vec<Record>> {
        let mut reader = self.reader.take().expect("one read at a time");
        let (reader, result) = tokio::task::spawn_blocking(move || {
            let r = reader.read(from, up_to, max_bytes);
            (reader, r)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("log read task failed: {e}")))?;
        self.reader = Some(reader);
        result
    }

    async fn stream(
        &mut self,
        stream: TcpStream,
        start: u64,
        spare_lsn: u64,
        spare_applied: u64,
    ) -> Result<()> {
        let (rd, mut wr) = stream.into_split();
        let (tx, mut frames) = mpsc::channel(LINK_FRAME_QUEUE);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(rd, tx)));
        let mut window = Window::new(self.spare.window, start);
        let mut keepalive = tokio::time::interval(self.shared.config.cluster.heartbeat);
        let mut last_heard = Instant::now();
        self.report(
            LinkState::Streaming,
            spare_lsn,
            spare_lsn,
            spare_applied,
            Some(last_heard),
            &window,
        );
        loop {
            self.fill_window(&mut wr, &mut window).await?;
            tokio::select! {
                changed = self.committed.changed() => if changed.is_err() { return Ok(()) },
                frame = frames.recv() => {
                    let env = frame.ok_or_else(|| Error::Unavailable("connection closed".into()))??;
                    last_heard = Instant::now();
                    self.on_frame(env, &mut window, last_heard)?;
                }
                _ = keepalive.tick() => {
                    if last_heard.elapsed() > PEER_SILENCE_TIMEOUT {
                        return Err(Error::Unavailable(format!("spare silent for {:?}", last_heard.elapsed())));
                    }
                    let last_lsn = self.committed.borrow().lsn;
                    write_frame(&mut wr, &self.shared.identity.envelope(self.epoch(), Message::KeepAlive { last_lsn })).await?;
                }
            }
        }
    }

    /// Sends committed records while the window has room.
    async fn fill_window(&mut self, wr: &mut OwnedWriteHalf, window: &mut Window) -> Result<()> {
        loop {
            let committed = self.committed.borrow().lsn;
            if window.room() == 0 || window.next_lsn() > committed {
                return Ok(());
            }
            let max = (window.room() as usize).min(MAX_BATCH_BYTES);
            let records = self.read(window.next_lsn(), committed, max).await?;
            let mut bytes = Vec::with_capacity(records.iter().map(Record::encoded_len).sum());
            for r in &records {
                r.encode_into(&mut bytes);
                if self.times.len() < MAX_TRACKED_RECORD_TIMES {
                    self.times.push_back((r.lsn, r.time_ms));
                }
            }
            let (first, last) = (records[0].lsn, records[records.len() - 1].lsn);
            let size = bytes.len() as u64;
            let msg = Message::Records {
                count: records.len() as u32,
                bytes,
            };
            write_frame(wr, &self.shared.identity.envelope(self.epoch(), msg)).await?;
            window.on_sent(first, last, size);
        }
    }

    fn on_frame(&mut self, env: Envelope, window: &mut Window, now: Instant) -> Result<()> {
        match env.message {
            Message::Ack {
                received,
                flushed,
                applied,
                ..
            } => {
                if !window.on_flushed(flushed) || applied > flushed || flushed > received {
                    return Err(Error::InvalidData(format!("spare acknowledged impossible positions (received {received}, flushed {flushed}, applied {applied})")));
                }
                while self.times.front().is_some_and(|&(lsn, _)| lsn <= applied) {
                    self.times.pop_front();
                }
                self.report(
                    LinkState::Streaming,
                    received,
                    flushed,
                    applied,
                    Some(now),
                    window,
                );
                Ok(())
            }
            Message::KeepAlive { .. } => {
                // The spare answered: its positions are unchanged, its last-ack age resets.
                if let Some(p) = &self.progress {
                    let (received, flushed, applied) = (p.received, p.flushed, p.applied);
                    self.report(
                        LinkState::Streaming,
                        received,
                        flushed,
                        applied,
                        Some(now),
                        window,
                    );
                }
                Ok(())
            }
            Message::Refuse { reason } => {
                Err(Error::Unavailable(format!("spare refused: {reason}")))
            }
            other => Err(Error::InvalidData(format!(
                "unexpected {} from spare while streaming",
                other.name()
            ))),
        }
    }

    fn report(
        &mut self,
        state: LinkState,
        received: u64,
        flushed: u64,
        applied: u64,
        last_ack: Option<Instant>,
        window: &Window,
    ) {
        let p = SpareProgress {
            spare: self.spare.name.clone(),
            state,
            received,
            flushed,
            applied,
            oldest_unapplied_time_ms: self.times.front().map(|&(_, t)| t),
            last_ack,
            in_flight_bytes: window.in_flight_bytes(),
        };
        let _ = self.primary.try_send(p.clone());
        self.progress = Some(p);
    }
}
