//! One feeder per spare: dials it, authenticates, positions, then streams records from the
//! log files within its window, or seeds the spare from a snapshot first when the log no
//! longer holds what it needs (DESIGN.md §4, §5). Streaming is in `feeder_stream`, seeding in
//! `feeder_seed`.
//!
//! Bounds: a feeder holds at most its window of unacknowledged bytes plus one batch
//! ([`MAX_BATCH_BYTES`](crate::wire::codec::MAX_BATCH_BYTES)) or one seed chunk, and [`MAX_TRACKED_RECORD_TIMES`] commit times
//! (16 bytes each) for lag: with the default 8 MiB window, under 11 MiB per spare however
//! long the spare stalls. It reads from the log files, never from a queue fed by the write
//! path, so a stalled spare never slows a commit.
//!
//! Failure handling: any error ends the link (logged at WARN, or ERROR for divergence, which
//! needs an operator); the actor redials after a backoff that doubles up to
//! [`RECONNECT_BACKOFF_MAX`] and resets once a handshake succeeds. A socket write that
//! cannot complete within the silence timeout (a stalled spare) ends the link too.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::net::stream::PeerStream;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message as ActixMessage,
    Recipient, WrapFuture,
};
use tokio::io::AsyncRead;
type OwnedWriteHalf = tokio::io::WriteHalf<PeerStream>;
use tokio::sync::{mpsc, watch};

use crate::actors::messages::{LinkState, SpareProgress};
use crate::actors::shared::{DataShared, PrimaryShared};
use crate::actors::{
    CONNECT_TIMEOUT, LINK_FRAME_QUEUE, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN,
};
use crate::config::NodeConfig;
use crate::core::position::{self, PrimaryLog, Resume};
use crate::error::{Error, Result};
use crate::log::{LogReader, Position, Record};
use crate::net::handshake::{self, SpareReport};
use crate::wire::{read_frame, write_frame, Envelope, Message};

/// Commit times kept for records sent and not yet applied, to compute lag in seconds.
pub const MAX_TRACKED_RECORD_TIMES: usize = 100_000;

/// Stops the feeder (its spare left the configuration, or its settings changed).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct StopFeeder;

pub struct Feeder {
    spare: NodeConfig,
    data: Arc<DataShared>,
    primary_shared: Arc<PrimaryShared>,
    committed: watch::Receiver<Position>,
    primary: Recipient<SpareProgress>,
    /// Pause before the next dial; grows while dials fail.
    backoff: Duration,
    /// The spare's last known progress, carried across links so that a spare that cannot be
    /// reached keeps its real position (and its lag keeps growing).
    last_progress: Option<SpareProgress>,
    /// Held while the feeder runs: the primary's incarnation stops once its feeders did.
    _running: Option<crate::actors::stop::Running>,
    /// No seed only to save time until the spare flushed this LSN (the primary's log end
    /// when the last seed started, then when it ended): no seed after seed across redials.
    speed_seed_after: Option<u64>,
}

impl Feeder {
    pub fn new(
        spare: NodeConfig,
        data: Arc<DataShared>,
        primary_shared: Arc<PrimaryShared>,
        committed: watch::Receiver<Position>,
        primary: Recipient<SpareProgress>,
    ) -> Self {
        Feeder {
            spare,
            data,
            primary_shared,
            committed,
            primary,
            backoff: RECONNECT_BACKOFF_MIN,
            last_progress: None,
            _running: None,
            speed_seed_after: None,
        }
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        let link = Link {
            spare: self.spare.clone(),
            data: self.data.clone(),
            prim: self.primary_shared.clone(),
            committed: self.committed.clone(),
            primary: self.primary.clone(),
            reader: Some(LogReader::new(&self.data.log_dir())),
            times: VecDeque::new(),
            spare_oldest_ms: None,
            held: None,
            progress: self.last_progress.clone(),
            protocol: None,
            speed_seed_after: self.speed_seed_after,
            bucket: self.spare.max_rate.map(|r| {
                std::sync::Mutex::new(crate::core::rate::TokenBucket::new(
                    r,
                    crate::clock::wall_ms(),
                ))
            }),
        };
        ctx.spawn(
            link.run()
                .into_actor(self)
                .map(|outcome, act, ctx| act.on_link_end(outcome, ctx)),
        );
    }

    fn on_link_end(&mut self, outcome: LinkOutcome, ctx: &mut Context<Self>) {
        let spare = &self.spare.name;
        self.speed_seed_after = outcome.speed_seed_after;
        let state = match &outcome.result {
            Err(Error::Diverged(why)) => {
                tracing::error!(%spare, %why, "spare diverged from this primary's history");
                self.data.events.record("spare_diverged", Some(spare), why);
                LinkState::Diverged
            }
            Err(e) if outcome.connected => {
                tracing::warn!(%spare, cause = %e, "link to spare lost; redialling");
                // It may come back as a newer release (a rolling upgrade restarts it): the
                // redial announces this node's newest version again, not the one it spoke.
                crate::wire::version::forget(&self.data.identity.name, spare);
                self.data
                    .events
                    .record("spare_disconnected", Some(spare), &e.to_string());
                LinkState::Disconnected
            }
            Err(e) => {
                tracing::debug!(%spare, cause = %e, "cannot reach spare yet");
                LinkState::Disconnected
            }
            Ok(()) => return,
        };
        let mut last = outcome
            .progress
            .unwrap_or_else(|| SpareProgress::new(spare, state));
        last.state = state;
        last.in_flight_bytes = 0;
        last.seed = None;
        // Known again at the next handshake (the spare may come back as another release).
        last.protocol = None;
        self.last_progress = Some(last.clone());
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

    /// Dials at once; stops with the primary's incarnation (the link's future, and its
    /// socket, are dropped with the actor).
    fn started(&mut self, ctx: &mut Context<Self>) {
        self._running = crate::actors::stop::bind(&self.data.stop, ctx);
        self.dial(ctx);
    }
}

impl Handler<StopFeeder> for Feeder {
    type Result = ();

    /// Ends the link (its socket closes when the link's future is dropped) and the actor.
    fn handle(&mut self, _: StopFeeder, ctx: &mut Context<Self>) {
        tracing::info!(spare = %self.spare.name, "feeder stopped");
        ctx.stop();
    }
}

pub(crate) struct LinkOutcome {
    /// Whether the handshake succeeded (resets the backoff).
    connected: bool,
    result: Result<()>,
    /// Last progress reported, kept while disconnected.
    progress: Option<SpareProgress>,
    speed_seed_after: Option<u64>,
}

/// One connection's worth of feeding.
pub(crate) struct Link {
    pub(super) spare: NodeConfig,
    pub(super) data: Arc<DataShared>,
    pub(super) prim: Arc<PrimaryShared>,
    pub(super) committed: watch::Receiver<Position>,
    pub(super) primary: Recipient<SpareProgress>,
    /// Taken while a blocking read runs on the blocking pool.
    pub(super) reader: Option<LogReader>,
    /// (LSN, commit time) of records sent and not applied, oldest first, for lag.
    pub(super) times: VecDeque<(u64, u64)>,
    /// From the spare's last Ack: the commit time of the oldest record it holds unapplied
    /// (when it holds records back), and why it holds them.
    pub(super) spare_oldest_ms: Option<u64>,
    pub(super) held: Option<String>,
    pub(super) progress: Option<SpareProgress>,
    /// The protocol version of this connection, once its handshake is done.
    pub(super) protocol: Option<u32>,
    /// See `Feeder::speed_seed_after`; cleared once the spare flushed that far.
    pub(super) speed_seed_after: Option<u64>,
    /// The spare's `max_rate` cap on records and seed chunks.
    pub(super) bucket: Option<std::sync::Mutex<crate::core::rate::TokenBucket>>,
}

/// The socket of a link after the handshake: the write half, frames read by a separate
/// task, and the liveness bookkeeping.
pub(crate) struct LinkIo {
    pub(super) wr: OwnedWriteHalf,
    pub(super) frames: mpsc::Receiver<Result<Envelope>>,
    pub(super) keepalive: tokio::time::Interval,
    /// When the spare last sent any byte (the reader task notes it).
    pub(super) heard: Arc<crate::net::heard::Heard>,
    /// The connection's protocol version (a spare of the previous release speaks 2).
    pub(super) protocol: u32,
    _reader: AbortOnDrop,
}

/// Ends the socket-reading task with the link.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames off the socket into a bounded channel, so a select loop never cancels a
/// half-read frame; every byte that arrives is noted in `heard`.
pub async fn read_frames<R: AsyncRead + Unpin>(
    rd: R,
    tx: mpsc::Sender<Result<Envelope>>,
    heard: Arc<crate::net::heard::Heard>,
) {
    let mut rd = crate::net::heard::Noting::new(rd, heard);
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
        // A seed pins the log only while it is being sent: a spare that went away must not
        // hold the primary's disk (it gets a newer snapshot when it comes back).
        self.prim.pins.remove(&self.spare.name);
        LinkOutcome {
            connected,
            result,
            progress: self.progress,
            speed_seed_after: self.speed_seed_after,
        }
    }

    /// How long the spare may stay silent before the link is given up.
    pub(super) fn silence(&self) -> Duration {
        crate::actors::silence_timeout(self.data.config().cluster.heartbeat)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.data.epoch.load(Ordering::Relaxed)
    }

    /// Sends one message, giving up if the spare does not take it in time (stalled).
    pub(super) async fn send(&self, io: &mut LinkIo, message: Message) -> Result<()> {
        let payload = match &message {
            Message::Records { bytes, .. }
            | Message::RecordsLz4 { bytes, .. }
            | Message::SeedChunk { bytes, .. } => bytes.len() as u64,
            _ => 0,
        };
        if let (Some(bucket), true) = (&self.bucket, payload > 0) {
            let wait_ms = bucket
                .lock()
                .expect("bucket lock")
                .take(payload, crate::clock::wall_ms());
            self.pace(io, Duration::from_millis(wait_ms)).await?;
        }
        self.write(io, message).await
    }

    /// Waits `wait` before a rate-capped frame, with a keep-alive every heartbeat meanwhile:
    /// a large batch on a slow cap (1 MiB at 150 KiB/s is 7 s) must not look like a dead
    /// primary to the spare.
    async fn pace(&self, io: &mut LinkIo, wait: Duration) -> Result<()> {
        let slice = self.data.config().cluster.heartbeat;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(slice)).await;
            if left > slice {
                let last_lsn = self.committed.borrow().lsn;
                self.write(io, Message::KeepAlive { last_lsn }).await?;
            }
        }
    }

    /// Writes one frame, giving up if the spare does not take it in time (stalled).
    async fn write(&self, io: &mut LinkIo, message: Message) -> Result<()> {
        let env = self.data.identity.envelope(self.epoch(), message);
        tokio::time::timeout(self.silence(), write_frame(&mut io.wr, &env))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "spare took no data for {:?} (stalled)",
                    self.silence()
                ))
            })?
    }

    /// The next frame other than a keep-alive or ack, keeping the link alive meanwhile; an error if
    /// the spare stays silent longer than `silence`.
    pub(super) async fn recv(&self, io: &mut LinkIo, silence: Duration) -> Result<Envelope> {
        loop {
            tokio::select! {
                frame = io.frames.recv() => {
                    let env = frame.ok_or_else(|| Error::Unavailable("connection closed".into()))??;
                    match env.message {
                        // Progress reports can come at any time; outside streaming they are only
                        // signs of life.
                        Message::KeepAlive { .. } | Message::Ack { .. } => continue,
                        Message::Refuse { reason } => return Err(Error::Unavailable(format!("spare refused: {reason}"))),
                        _ => return Ok(env),
                    }
                }
                _ = io.keepalive.tick() => {
                    if io.heard.silent_for() > silence {
                        return Err(Error::Unavailable(format!("spare silent for {:?}", io.heard.silent_for())));
                    }
                    let last_lsn = self.committed.borrow().lsn;
                    self.send(io, Message::KeepAlive { last_lsn }).await?;
                }
            }
        }
    }

    async fn run_inner(&mut self, connected: &mut bool) -> Result<()> {
        let addr = self.spare.peer_advertise.clone();
        let mut stream = crate::net::stream::connect(
            &self.data.identity,
            &self.spare.name,
            &addr,
            CONNECT_TIMEOUT,
        )
        .await?;
        let mut report = handshake::as_primary(
            &mut stream,
            &self.data.identity,
            &self.spare.name,
            self.epoch(),
        )
        .await?;
        *connected = true;
        self.protocol = Some(report.protocol);
        self.data.events.record(
            "spare_connected",
            Some(&self.spare.name),
            &format!(
                "{} connected at LSN {}",
                self.spare.name, report.durable.lsn
            ),
        );
        let (rd, wr) = tokio::io::split(stream);
        let (tx, frames) = mpsc::channel(LINK_FRAME_QUEUE);
        let heard = crate::net::heard::Heard::now();
        let reader = AbortOnDrop(tokio::spawn(read_frames(rd, tx, heard.clone())));
        let keepalive = tokio::time::interval(self.data.config().cluster.heartbeat);
        let mut io = LinkIo {
            wr,
            frames,
            keepalive,
            heard,
            protocol: report.protocol,
            _reader: reader,
        };
        loop {
            let decided = self.decide(&report).await?;
            // After a seed the spare streams, however fast the log grew meanwhile, until it
            // caught up once (no seed after seed): `speed_seed_after`, set when a seed
            // starts (an interrupted one streams after a redial) and again when it ends.
            let resume = self.quicker(decided.clone(), &report).await;
            if matches!(resume, Resume::Seed(_) | Resume::Diverged(_)) {
                self.speed_seed_after = Some(self.committed.borrow().lsn);
            }
            let optional = matches!((&decided, &resume), (Resume::From(_), Resume::Seed(_)));
            report = match resume {
                Resume::From(lsn) => {
                    // A seed it was receiving is not needed any more: let its copy go.
                    self.forget_seed()?;
                    return self.stream(&mut io, lsn, &report).await;
                }
                Resume::Seed(reason) => self.seed(&mut io, &report, None, reason, optional).await?,
                Resume::Diverged(reason) => {
                    let common = self.find_fork(&mut io, &reason).await?;
                    self.seed(&mut io, &report, Some(common), reason, false)
                        .await?
                }
            };
            self.speed_seed_after = Some(self.committed.borrow().lsn);
        }
    }

    async fn decide(&mut self, report: &SpareReport) -> Result<Resume> {
        let durable = *self.committed.borrow();
        let base = *self.data.base.lock().expect("base lock");
        let spare = report.durable;
        let ours = if spare.lsn == base.lsn {
            Some((base.epoch, base.chain))
        } else if spare.lsn > base.lsn && spare.lsn <= durable.lsn {
            self.read(spare.lsn, spare.lsn, 0)
                .await
                .ok()
                .map(|mut r| r.remove(0))
                .map(|r| (r.epoch, r.chain))
        } else {
            None
        };
        Ok(position::decide(
            spare,
            PrimaryLog {
                durable,
                oldest: base.lsn + 1,
            },
            ours,
            report.broken.as_deref(),
        ))
    }

    /// Seeds instead of streaming when that is clearly faster (`position::quicker`); if the
    /// sizes cannot be read, streams as decided.
    async fn quicker(&self, resume: Resume, report: &SpareReport) -> Resume {
        let Resume::From(_) = resume else {
            return resume;
        };
        let gate = position::SpeedSeedGate {
            lan: self.spare.link == crate::config::Link::Lan,
            copies_underway: self.prim.pins.len(),
            seeded_until: self.speed_seed_after,
            spare_flushed: report.durable.lsn,
            says_holding: report.protocol >= 3,
        };
        if !position::may_seed_to_save_time(gate) {
            return resume;
        }
        let log_dir = self.data.log_dir();
        let db = self.data.node.data_dir.join(crate::store::DB_FILE);
        let (after, last) = (report.durable.lsn, self.committed.borrow().lsn);
        let sizes = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
            let replay = crate::log::bytes_after(&log_dir, after, last)?;
            let db = std::fs::metadata(&db)
                .map_err(Error::io(format!("read the size of {}", db.display())))?
                .len();
            Ok((replay, db))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("size task failed: {e}")))
        .and_then(|sizes| sizes);
        match sizes {
            Ok((replay_bytes, db_bytes)) => position::quicker(
                resume,
                position::Catchup {
                    replay_bytes,
                    db_bytes,
                    holding: report.holding || !self.spare.apply_delay.is_zero(),
                },
            ),
            Err(e) => {
                tracing::warn!(spare = %self.spare.name, cause = %e, "cannot weigh a seed against replaying; replaying");
                resume
            }
        }
    }

    /// Reads records [from, up_to] (bounded by `max_bytes`) on the blocking pool.
    pub(super) async fn read(
        &mut self,
        from: u64,
        up_to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
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
}

#[cfg(test)]
mod actor_tests {
    use super::*;
    use crate::actors::test_support::data_shared;
    use crate::config::{ClusterConfig, ConfigCell};

    /// Hands the feeder's progress reports to the test.
    struct Reports(mpsc::UnboundedSender<SpareProgress>);

    impl Actor for Reports {
        type Context = Context<Self>;
    }

    impl Handler<SpareProgress> for Reports {
        type Result = ();
        fn handle(&mut self, p: SpareProgress, _: &mut Context<Self>) {
            let _ = self.0.send(p);
        }
    }

    fn config(spare_peer: std::net::SocketAddr) -> ClusterConfig {
        let text = format!(
            "[cluster]\nname = \"shop\"\nsecret_file = \"cluster.secret\"\n\n[[node]]\nname = \"main\"\nrole = \"primary\"\npeer = \"127.0.0.1:7\"\nhttp = \"127.0.0.1:8\"\n\n[[node]]\nname = \"lan-1\"\nrole = \"spare\"\npeer = \"{spare_peer}\"\nhttp = \"127.0.0.1:10\"\n"
        );
        ClusterConfig::parse(std::path::Path::new("/conf/cluster.toml"), &text).unwrap()
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn a_feeder_whose_spare_drops_the_handshake_reports_it_disconnected_redials_and_stops_when_told_or_with_its_incarnation(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let cell = Arc::new(ConfigCell::new(config(listener.local_addr().unwrap())));
        let (data, _applied, stopper) = data_shared(dir.path(), cell.clone(), "main");
        let spare = cell.get().node("lan-1").unwrap().clone();
        let (_committed_tx, committed) = watch::channel(Position::default());
        let system = actix_rt::System::new();
        system.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tx, mut reports) = mpsc::unbounded_channel();
            let to = Reports(tx).start().recipient();
            let prim = Arc::new(PrimaryShared::default());
            let again = (
                spare.clone(),
                data.clone(),
                prim.clone(),
                committed.clone(),
                to.clone(),
            );
            let feeder = Feeder::new(spare, data, prim, committed, to).start();
            // The spare's port accepts and closes at once: no handshake, twice in a row.
            for dial in 1..=2 {
                let (socket, _) = tokio::time::timeout(BOUND, listener.accept())
                    .await
                    .unwrap_or_else(|_| panic!("dial {dial} within {BOUND:?}"))
                    .unwrap();
                drop(socket);
                let p = tokio::time::timeout(BOUND, reports.recv())
                    .await
                    .expect("a progress report")
                    .unwrap();
                assert_eq!(
                    (p.spare.as_str(), p.state),
                    ("lan-1", LinkState::Disconnected)
                );
                assert_eq!((p.applied, p.in_flight_bytes), (0, 0), "nothing was sent");
            }
            feeder.send(StopFeeder).await.unwrap();
            crate::actors::test_support::wait_disconnected(&feeder).await;
            // A feeder is a part of the primary's incarnation: it ends with it.
            let (spare, data, prim, committed, to) = again;
            let feeder = Feeder::new(spare, data, prim, committed, to).start();
            // Its dial is taken and left open: the feeder waits in the handshake.
            let (_open, _) = tokio::time::timeout(BOUND, listener.accept())
                .await
                .expect("the second feeder dials")
                .unwrap();
            tokio::time::timeout(BOUND, stopper.stop())
                .await
                .expect("the incarnation stops once its feeder did");
            assert!(!feeder.connected(), "the stop waited for the feeder to end");
        });
    }
}
