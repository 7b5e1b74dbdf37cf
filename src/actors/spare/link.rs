//! One accepted peer connection on a spare: handshake, then receive batches, make them
//! durable in the local log, wake the apply thread, and acknowledge.
//!
//! Nothing from the peer is written before the handshake proved it is this cluster's
//! primary. Each batch is checked record by record (CRC, consecutive LSNs, checksum chain,
//! epochs) before it is appended; a batch that fails any check is refused whole and the
//! connection closed. A record that does not continue this node's history means divergence:
//! the link is refused and the node reports it (re-seeding comes with retention).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::net::stream::PeerStream;
type OwnedWriteHalf = tokio::io::WriteHalf<PeerStream>;
use tokio::sync::mpsc;

use crate::actors::node::voter::serve_control;
use crate::actors::primary::feeder::{read_frames, AbortOnDrop};
use crate::actors::spare::SpareShared;
use crate::actors::LINK_FRAME_QUEUE;
use crate::clock::wall_ms as now_ms;
use crate::error::{Error, Result};
use crate::log::record::{decode_all, Record};
use crate::net::handshake;
use crate::wire::message::{Purpose, SeedResume};
use crate::wire::{write_frame, Envelope, Message};

/// Sends `message` to the primary, giving up once it takes nothing for the silence
/// timeout: a primary that keeps the connection open but stopped reading must not hold
/// this link (and a role change waiting for it) for ever.
async fn send(shared: &SpareShared, wr: &mut OwnedWriteHalf, message: Message) -> Result<()> {
    let silence = crate::actors::silence_timeout(shared.data.config().cluster.heartbeat);
    tokio::time::timeout(silence, write_frame(wr, &envelope(shared, message)))
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "the primary took nothing for {silence:?} (stalled)"
            ))
        })?
}

/// Marks the spare disconnected (and no longer seeding) when its link to the primary ends,
/// unless a newer connection replaced it.
struct LinkEnded {
    shared: Arc<SpareShared>,
    generation: u64,
}

impl Drop for LinkEnded {
    fn drop(&mut self) {
        if self.shared.generation.borrow().eq(&self.generation) {
            self.shared.connected.store(false, Ordering::Release);
            *self.shared.seeding.lock().expect("lock") = None;
        }
    }
}

/// Serves one connection until it ends; logs why it ended.
pub async fn serve(
    shared: Arc<SpareShared>,
    mut stream: PeerStream,
    from: SocketAddr,
    turn: crate::actors::node::places::HandshakeTurn,
) {
    let followed = shared.data.voter.state();
    let peer = authenticate(&shared, &mut stream, followed.epoch, &followed.primary).await;
    drop(turn);
    let peer = match peer {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%from, cause = %e, "refused a peer connection");
            return;
        }
    };
    if peer.purpose == Purpose::Control {
        let (voter, me) = (shared.data.voter.clone(), shared.data.identity.clone());
        if let Err(e) = serve_control(stream, voter, me, peer.name.clone()).await {
            tracing::debug!(%from, peer = %peer.name, cause = %e, "control connection ended");
        }
        return;
    }
    if peer.epoch > followed.epoch && !adopt_newer_epoch(&shared, &peer).await {
        return;
    }
    shared.data.epoch.fetch_max(peer.epoch, Ordering::Relaxed);
    let generation = shared.generation.send_modify_return(|g| *g += 1);
    *shared.diverged.lock().expect("lock") = None;
    // A part of the incarnation while it streams: the node's next role waits for it.
    let Some(_running) = shared.data.stop.enlist() else {
        tracing::info!(%from, "refused a stream: this spare is stopping");
        return;
    };
    tracing::info!(%from, primary = %peer.name, "primary connected");
    shared.data.events.record(
        "primary_connected",
        None,
        &format!("primary {} connected", peer.name),
    );
    // Runs however the link ends, cut from outside too (an `allow_from` reload drops it).
    let _ended = LinkEnded {
        shared: shared.clone(),
        generation,
    };
    let result = stream_from_primary(&shared, stream, generation, peer.protocol).await;
    log_link_end(&shared, result);
}

/// The handshake as a spare: streams only from the primary it follows (or one of a newer
/// epoch), control requests from any member.
async fn authenticate(
    shared: &SpareShared,
    stream: &mut PeerStream,
    epoch: u64,
    primary: &str,
) -> Result<handshake::Peer> {
    let config = shared.data.config();
    let members: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
    let admission = handshake::Admission {
        streams: handshake::Streams::Follow { epoch, primary },
        members: &members,
    };
    let peer = handshake::accept(stream, &shared.data.identity, epoch, admission).await?;
    stream.check_peer_name(&peer.name)?;
    Ok(peer)
}

/// A promotion completed while this node was away: follow its primary, on disk first.
/// False if that could not be recorded (the stream is then refused).
async fn adopt_newer_epoch(shared: &SpareShared, peer: &handshake::Peer) -> bool {
    let (voter, name, epoch) = (shared.data.voter.clone(), peer.name.clone(), peer.epoch);
    match tokio::task::spawn_blocking(move || voter.adopt(&name, epoch)).await {
        Ok(Ok(_)) => {
            tracing::info!(primary = %peer.name, epoch = peer.epoch, "following the primary of a newer epoch");
            shared.data.epoch.store(peer.epoch, Ordering::Relaxed);
            true
        }
        Ok(Err(e)) => {
            tracing::error!(cause = %e, "cannot record the newer epoch in node.state; refusing the stream");
            false
        }
        Err(e) => {
            tracing::error!(cause = %e, "recording the newer epoch failed");
            false
        }
    }
}

/// Says why the link to the primary ended (a divergence is kept for status).
fn log_link_end(shared: &SpareShared, result: Result<()>) {
    match result {
        Err(Error::Diverged(why)) => {
            tracing::error!(%why, "this spare's history diverged from the primary's; it must be re-seeded");
            *shared.diverged.lock().expect("lock") = Some(why);
        }
        Err(e) => {
            tracing::warn!(cause = %e, "link to the primary ended");
            shared
                .data
                .events
                .record("primary_disconnected", None, &e.to_string());
        }
        Ok(()) if shared.data.stop.is_stopped() => {
            tracing::info!("link to the primary closed: this node is changing role")
        }
        Ok(()) => tracing::info!("link to the primary replaced by a newer connection"),
    }
}

trait SendModifyReturn {
    fn send_modify_return(&self, f: impl FnOnce(&mut u64)) -> u64;
}

impl SendModifyReturn for tokio::sync::watch::Sender<u64> {
    fn send_modify_return(&self, f: impl FnOnce(&mut u64)) -> u64 {
        let mut out = 0;
        self.send_modify(|g| {
            f(g);
            out = *g;
        });
        out
    }
}

fn envelope(shared: &SpareShared, message: Message) -> Envelope {
    shared
        .data
        .identity
        .envelope(shared.data.epoch.load(Ordering::Relaxed), message)
}

/// What one link to the primary knows of itself.
struct LinkState {
    /// The connection's protocol version: on version 2, no field of version 3 is set.
    protocol: u32,
    /// A partial seed on disk at the start is deleted by the first batch of records, unless
    /// the primary resumes (or replaces) it first: it may be as large as the database, and
    /// a primary that streams no longer keeps its snapshot.
    stale_seed: bool,
}

/// This node's `Position`: durable log end, applied LSN, and a seed it can resume.
fn position(shared: &SpareShared, link: &LinkState) -> Result<Message> {
    let durable = shared.log.lock().expect("log lock").durable();
    let applied_lsn = shared.apply.applied.load(Ordering::Acquire);
    let seed = shared.seed.partial()?.map(|p| SeedResume {
        id: p.info.id,
        offset: p.offset,
    });
    let broken = shared.apply.failure.lock().expect("failure lock").clone();
    Ok(Message::Position {
        durable,
        applied_lsn,
        seed,
        broken,
        // Version 3: a primary of version 2 never seeds only to save time.
        holding: link.protocol >= 3 && shared.apply.gate().holds(),
    })
}

/// The acknowledgement of where this spare stands now (noting the applied LSN it carries).
fn ack(shared: &SpareShared) -> Message {
    let applied = shared.apply.applied.load(Ordering::Acquire);
    shared.acked_applied.store(applied, Ordering::Release);
    Message::Ack {
        received: shared.received.load(Ordering::Acquire),
        flushed: shared.apply.flushed.load(Ordering::Acquire),
        applied,
        applied_time_ms: shared.apply.applied_time_ms.load(Ordering::Acquire),
        oldest_unapplied_ms: shared.apply.held_since_ms.load(Ordering::Acquire),
        held: crate::actors::spare::held_text(&shared.apply.gate()).unwrap_or_default(),
    }
}

async fn stream_from_primary(
    shared: &Arc<SpareShared>,
    stream: PeerStream,
    generation: u64,
    protocol: u32,
) -> Result<()> {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut link = LinkState {
        protocol,
        stale_seed: false,
    };
    let first = position(shared, &link)?;
    // A spare that already said why it cannot apply waits here for its re-seed.
    let reported_broken = match &first {
        Message::Position { broken, .. } => broken.clone(),
        _ => None,
    };
    link.stale_seed = matches!(&first, Message::Position { seed: Some(_), .. });
    send(shared, &mut wr, first).await?;
    // A new primary (or a restarted one) hears a first acknowledgement whatever the last
    // link carried: it learns why this spare holds records back from it.
    shared.acked_applied.store(u64::MAX, Ordering::Release);
    shared.connected.store(true, Ordering::Release);
    let (tx, mut frames) = mpsc::channel(LINK_FRAME_QUEUE);
    let heard = crate::net::heard::Heard::now();
    let reader = tokio::spawn(read_frames(rd, tx, heard.clone()));
    let _abort = AbortOnDrop(reader);
    let mut gen_rx = shared.generation.subscribe();
    let mut applied_rx = shared.data.applied.clone();
    let mut keepalive = tokio::time::interval(shared.data.config().cluster.heartbeat);
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let env = frame.ok_or_else(|| Error::Unavailable("connection closed".into()))??;
                shared.last_heard_ms.store(now_ms(), Ordering::Release);
                on_frames(shared, env, &mut frames, &mut wr, &mut link).await?;
            }
            changed = applied_rx.changed() => {
                if changed.is_err() { return Ok(()) }
                let applied = shared.apply.applied.load(Ordering::Acquire);
                if applied != shared.acked_applied.load(Ordering::Acquire) {
                    send(shared, &mut wr, ack(shared)).await?;
                }
            }
            _ = gen_rx.changed() => if *gen_rx.borrow() != generation { return Ok(()) },
            () = shared.data.stop.stopped() => return Ok(()),
            _ = keepalive.tick() => {
                if heard.silent_for() > crate::actors::silence_timeout(shared.data.config().cluster.heartbeat) {
                    return Err(Error::Unavailable(format!("primary silent for {:?}", heard.silent_for())));
                }
                // Applying stopped on a conflict: end the link, so that the primary's next
                // handshake learns it (`Position::broken`) and re-seeds this spare.
                let failure = shared.apply.failure.lock().expect("failure lock").clone();
                if let Some(why) = failure.filter(|f| Some(f) != reported_broken.as_ref()) {
                    return Err(Error::Unavailable(format!("applying stopped ({why}); reconnecting to be re-seeded")));
                }
                send(shared, &mut wr, Message::KeepAlive { last_lsn: shared.apply.flushed.load(Ordering::Acquire) }).await?;
            }
        }
    }
}

/// Awaits `work`, sending keep-alives meanwhile: a long append (a large batch on a slow
/// disk) must not look like silence to the primary.
async fn alive_while<T>(
    shared: &Arc<SpareShared>,
    wr: &mut OwnedWriteHalf,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, bool)> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(shared.data.config().cluster.heartbeat);
    tick.tick().await;
    // A keep-alive that cannot be written stops the keep-alives, not the work; the caller
    // learns it (false) and ends the link once it recorded the work: a write cut by its
    // timeout may have left half a frame on the socket, so nothing more may follow it.
    let mut writable = true;
    loop {
        tokio::select! {
            done = &mut work => return done.map(|d| (d, writable)),
            _ = tick.tick(), if writable => {
                let alive = Message::KeepAlive { last_lsn: shared.apply.flushed.load(Ordering::Acquire) };
                writable = send(shared, wr, alive).await.is_ok();
            }
        }
    }
}

/// Handles `first` and, when it is a batch of records or a seed chunk, every frame of the
/// same kind already queued behind it (at most [`LINK_FRAME_QUEUE`]): one write, one fsync
/// and one acknowledgement for all of them. A spare that fell behind (a slow disk, a busy
/// machine) thus catches up by whole queues instead of paying an fsync per frame, and a
/// seed arrives at the disk's pace rather than an fsync per chunk. A frame of another kind
/// met in the queue is handled right after, in order; a read error after them ends the link
/// once they are durable.
async fn on_frames(
    shared: &Arc<SpareShared>,
    first: Envelope,
    frames: &mut mpsc::Receiver<Result<Envelope>>,
    wr: &mut OwnedWriteHalf,
    link: &mut LinkState,
) -> Result<()> {
    let after = match records_of(first)? {
        Ok(mut records) => {
            let after = drain(frames, records_of, |more| records.extend(more));
            on_records(shared, records, wr, std::mem::take(&mut link.stale_seed)).await?;
            after
        }
        Err(env) => match chunk_of(env)? {
            Ok(chunk) => {
                link.stale_seed = false;
                let mut chunks = vec![chunk];
                let after = drain(frames, chunk_of, |c| chunks.push(c));
                on_seed_chunks(shared, chunks, wr).await?;
                after
            }
            Err(other) => {
                if matches!(other.message, Message::SeedStart { .. }) {
                    link.stale_seed = false;
                }
                return on_frame(shared, other, wr, link).await;
            }
        },
    };
    match after {
        Some(Ok(env)) => on_frame(shared, env, wr, link).await,
        Some(Err(e)) => Err(e),
        None => Ok(()),
    }
}

/// Takes the frames already queued while `take` accepts them (`Ok(Ok)`), giving each to
/// `add`; returns the first frame it did not accept, or the error that stopped it.
fn drain<T>(
    frames: &mut mpsc::Receiver<Result<Envelope>>,
    take: impl Fn(Envelope) -> Result<std::result::Result<T, Envelope>>,
    mut add: impl FnMut(T),
) -> Option<Result<Envelope>> {
    while let Ok(frame) = frames.try_recv() {
        match frame.and_then(&take) {
            Ok(Ok(item)) => add(item),
            Ok(Err(other)) => return Some(Ok(other)),
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

/// The checked records of a batch frame (`Ok(Ok)`), or the frame itself if it is not a
/// batch (`Ok(Err)`); a batch that fails its checks is an error.
fn records_of(env: Envelope) -> Result<std::result::Result<Vec<Record>, Envelope>> {
    match unpack(env.message)? {
        Message::Records { count, bytes } => Ok(Ok(checked_batch(&bytes, count, env.epoch)?)),
        message => Ok(Err(Envelope { message, ..env })),
    }
}

/// The (offset, bytes) of a seed chunk whose checksum holds (`Ok(Ok)`), or the frame itself
/// if it is not a seed chunk (`Ok(Err)`); a chunk failing its checksum is an error.
fn chunk_of(env: Envelope) -> Result<std::result::Result<(u64, Vec<u8>), Envelope>> {
    match env.message {
        Message::SeedChunk { offset, crc, bytes } => {
            if crc32c::crc32c(&bytes) != crc {
                return Err(Error::InvalidData(format!(
                    "seed chunk at offset {offset} fails its checksum"
                )));
            }
            Ok(Ok((offset, bytes)))
        }
        message => Ok(Err(Envelope { message, ..env })),
    }
}

/// Handles one frame from the primary: the decisions on what it holds are pure
/// ([`unpack`], [`checked_batch`]); what they lead to (log, seed, answers) is done here.
/// Batches of records and seed chunks are taken by [`on_frames`] before they reach here.
async fn on_frame(
    shared: &Arc<SpareShared>,
    env: Envelope,
    wr: &mut OwnedWriteHalf,
    link: &LinkState,
) -> Result<()> {
    match env.message {
        Message::Diverged { reason } => {
            tracing::warn!(%reason, "the primary says this spare's history diverged");
            let points = blocking(shared, probes).await?;
            send(shared, wr, Message::Probes { points }).await
        }
        Message::SeedStart {
            snapshot,
            reason,
            optional,
        } => {
            if optional && shared.apply.gate().holds() {
                return Err(crate::actors::spare::held_back());
            }
            tracing::info!(%reason, lsn = snapshot.position.lsn, bytes = snapshot.size, "receiving a seed");
            let size = snapshot.size;
            let offset = blocking(shared, move |s| s.seed.begin(&snapshot)).await?;
            *shared.seeding.lock().expect("lock") = Some((offset, size));
            send(shared, wr, Message::SeedAck { offset }).await
        }
        Message::SeedEnd {
            quarantine_after,
            optional,
        } => {
            let installed =
                blocking(shared, move |s| s.install_seed(quarantine_after, optional)).await;
            *shared.seeding.lock().expect("lock") = None;
            let at = installed?;
            tracing::info!(
                lsn = at.lsn,
                "installed the seed; following the primary's log from here"
            );
            send(shared, wr, position(shared, link)?).await
        }
        Message::KeepAlive { last_lsn } => {
            shared.primary_last.fetch_max(last_lsn, Ordering::AcqRel);
            Ok(())
        }
        Message::Refuse { reason } => Err(Error::Diverged(format!(
            "the primary refused this spare: {reason}"
        ))),
        other => Err(Error::InvalidData(format!(
            "unexpected {} from the primary while streaming",
            other.name()
        ))),
    }
}

/// A compressed batch as the plain one it stands for; any other message as it is.
fn unpack(message: Message) -> Result<Message> {
    Ok(match message {
        Message::RecordsLz4 {
            count,
            raw_len,
            bytes,
        } => Message::Records {
            count,
            bytes: crate::wire::codec::decompress_batch(&bytes, raw_len)?,
        },
        other => other,
    })
}

/// The records of a batch, refused unless it holds as many as announced (at least one) and
/// none claims an epoch above its sender's: a primary cannot write records of an epoch it
/// does not lead.
fn checked_batch(bytes: &[u8], count: u32, sender_epoch: u64) -> Result<Vec<Record>> {
    let records = decode_all(bytes)?;
    if records.len() != count as usize || records.is_empty() {
        return Err(Error::InvalidData(format!(
            "batch announced {count} records but holds {}",
            records.len()
        )));
    }
    if let Some(r) = records.iter().find(|r| r.epoch > sender_epoch) {
        return Err(Error::InvalidData(format!(
            "record {} has epoch {} above its sender's {}",
            r.lsn, r.epoch, sender_epoch
        )));
    }
    Ok(records)
}

/// Appends a checked batch to the log, fsyncs it, wakes the applier, acknowledges.
async fn on_records(
    shared: &Arc<SpareShared>,
    records: Vec<Record>,
    wr: &mut OwnedWriteHalf,
    stale_seed: bool,
) -> Result<()> {
    let last = records[records.len() - 1].lsn;
    shared.received.fetch_max(last, Ordering::AcqRel);
    shared.primary_last.fetch_max(last, Ordering::AcqRel);
    let append = blocking(shared, move |s| {
        if stale_seed {
            tracing::info!("the primary streams: deleting the partial seed it no longer sends");
            // Disk space only: a seed that cannot be deleted must not stop the stream.
            if let Err(e) = s.seed.discard() {
                tracing::warn!(cause = %e, "cannot delete the partial seed; it stays on disk");
            }
        }
        let mut log = s.open_log()?;
        log.append_received(&records)?;
        let durable = log.sync()?;
        s.maintain_log(&mut log)?;
        Ok(durable)
    });
    let (durable, writable) = alive_while(shared, wr, append).await?;
    shared.apply.flushed.store(durable.lsn, Ordering::Release);
    shared.wake_applier();
    if !writable {
        return Err(Error::Unavailable(
            "the primary took no keep-alive while a batch was being made durable".into(),
        ));
    }
    send(shared, wr, ack(shared)).await
}

/// Writes checked, consecutive chunks of a seed, fsyncs them once, and acknowledges how
/// far the seed reached.
async fn on_seed_chunks(
    shared: &Arc<SpareShared>,
    chunks: Vec<(u64, Vec<u8>)>,
    wr: &mut OwnedWriteHalf,
) -> Result<()> {
    let write = blocking(shared, move |s| s.seed.write_chunks(&chunks));
    let (offset, writable) = alive_while(shared, wr, write).await?;
    if let Some(p) = shared.seeding.lock().expect("lock").as_mut() {
        p.0 = offset;
    }
    if !writable {
        return Err(Error::Unavailable(
            "the primary took no keep-alive while seed chunks were being made durable".into(),
        ));
    }
    send(shared, wr, Message::SeedAck { offset }).await
}

/// Runs blocking work (files, fsync) on the blocking pool.
async fn blocking<T: Send + 'static>(
    shared: &Arc<SpareShared>,
    f: impl FnOnce(&SpareShared) -> Result<T> + Send + 'static,
) -> Result<T> {
    let s = shared.clone();
    crate::actors::blocking("spare link work", move || f(&s)).await?
}

/// (LSN, epoch, chain) at exponentially spaced points of this node's log, newest first.
fn probes(shared: &SpareShared) -> Result<Vec<(u64, u64, u64)>> {
    let tail = shared.log.lock().expect("log lock").durable();
    let base = *shared.data.base.lock().expect("base lock");
    let mut reader = crate::log::LogReader::new(&shared.data.log_dir());
    let mut out = Vec::new();
    for lsn in crate::core::position::probe_points(tail.lsn, base.lsn + 1) {
        let r = reader.record_at(lsn)?;
        out.push((r.lsn, r.epoch, r.chain));
    }
    if base.lsn > 0 {
        out.push((base.lsn, base.epoch, base.chain));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{RecordKind, GENESIS_CHAIN};

    fn batch(epochs: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS_CHAIN;
        for (i, epoch) in epochs.iter().enumerate() {
            let r = Record::new(
                prev,
                i as u64 + 1,
                *epoch,
                1_700_000_000_000,
                RecordKind::Txn,
                vec![i as u8],
            );
            prev = r.chain;
            r.encode_into(&mut out);
        }
        out
    }

    fn env(message: Message) -> Envelope {
        Envelope {
            cluster: "c".into(),
            from: "main".into(),
            epoch: 1,
            message,
        }
    }

    fn chunk(offset: u64, bytes: &[u8]) -> Message {
        Message::SeedChunk {
            offset,
            crc: crc32c::crc32c(bytes),
            bytes: bytes.to_vec(),
        }
    }

    #[tokio::test]
    async fn queued_chunks_are_taken_together_up_to_the_first_other_frame() {
        let (tx, mut rx) = mpsc::channel(LINK_FRAME_QUEUE);
        for m in [
            chunk(3, b"def"),
            chunk(6, b"g"),
            Message::KeepAlive { last_lsn: 1 },
            chunk(7, b"h"),
        ] {
            tx.send(Ok(env(m))).await.unwrap();
        }
        let mut taken = Vec::new();
        let after = drain(&mut rx, chunk_of, |c| taken.push(c));
        assert_eq!(taken, vec![(3, b"def".to_vec()), (6, b"g".to_vec())]);
        assert!(matches!(
            after,
            Some(Ok(Envelope {
                message: Message::KeepAlive { .. },
                ..
            }))
        ));
        // What follows the other frame stays queued, in order.
        assert!(matches!(
            rx.try_recv().unwrap().unwrap().message,
            Message::SeedChunk { offset: 7, .. }
        ));
    }

    #[tokio::test]
    async fn a_chunk_failing_its_checksum_stops_the_taking_with_an_error() {
        let (tx, mut rx) = mpsc::channel(LINK_FRAME_QUEUE);
        let bad = Message::SeedChunk {
            offset: 1,
            crc: 0,
            bytes: b"zz".to_vec(),
        };
        tx.send(Ok(env(chunk(0, b"a")))).await.unwrap();
        tx.send(Ok(env(bad))).await.unwrap();
        let mut taken = Vec::new();
        let after = drain(&mut rx, chunk_of, |c| taken.push(c));
        assert_eq!(taken.len(), 1, "the good chunk before it is kept");
        let e = after.unwrap().unwrap_err().to_string();
        assert!(e.contains("fails its checksum"), "{e}");
    }

    #[tokio::test]
    async fn queued_batches_are_taken_together_and_an_empty_queue_ends_the_taking() {
        let (tx, mut rx) = mpsc::channel(LINK_FRAME_QUEUE);
        let plain = batch(&[1, 1]);
        tx.send(Ok(env(Message::Records {
            count: 2,
            bytes: plain.clone(),
        })))
        .await
        .unwrap();
        tx.send(Ok(env(Message::RecordsLz4 {
            count: 2,
            raw_len: plain.len() as u32,
            bytes: lz4_flex::block::compress(&plain),
        })))
        .await
        .unwrap();
        let mut count = 0;
        let after = drain(&mut rx, records_of, |r| count += r.len());
        assert_eq!(count, 4);
        assert!(after.is_none());
    }

    #[test]
    fn a_batch_holding_what_it_announces_is_accepted() {
        let records = checked_batch(&batch(&[1, 1, 2]), 3, 2).unwrap();
        assert_eq!(
            records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_batch_with_fewer_or_more_records_than_announced_is_refused() {
        let e = checked_batch(&batch(&[1, 1]), 3, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("announced 3 records but holds 2"), "{e}");
        assert!(checked_batch(&batch(&[1, 1]), 1, 1).is_err());
        assert!(
            checked_batch(&[], 0, 1).is_err(),
            "an empty batch is refused"
        );
    }

    #[test]
    fn a_record_of_an_epoch_above_its_senders_is_refused() {
        let e = checked_batch(&batch(&[1, 3]), 2, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("record 2 has epoch 3 above its sender's 2"),
            "{e}"
        );
    }

    #[test]
    fn garbage_bytes_are_refused_before_anything_is_appended() {
        assert!(checked_batch(&[0xff; 64], 1, 1).is_err());
    }

    #[test]
    fn a_compressed_batch_unpacks_to_the_plain_one_and_other_messages_pass_through() {
        let plain = batch(&[1, 1]);
        let packed = lz4_flex::block::compress(&plain);
        let message = Message::RecordsLz4 {
            count: 2,
            raw_len: plain.len() as u32,
            bytes: packed,
        };
        match unpack(message).unwrap() {
            Message::Records { count, bytes } => assert_eq!((count, bytes), (2, plain)),
            other => panic!("unpacked to {}", other.name()),
        }
        assert!(matches!(
            unpack(Message::KeepAlive { last_lsn: 7 }).unwrap(),
            Message::KeepAlive { last_lsn: 7 }
        ));
    }
}
