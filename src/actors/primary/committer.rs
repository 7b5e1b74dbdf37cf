//! The primary's write path (group commit), on a dedicated thread.
//!
//! Why a thread and not an actix actor: group commit needs to take *every* waiting request at
//! once, and SQLite and fsync block. The thread drains the bounded queue, runs the requests in
//! one SQLite transaction (each under its own savepoint), appends one log record, fsyncs once,
//! commits SQLite, answers every request with the record's LSN, and publishes the new
//! committed position for feeders and readers.
//!
//! A request that changes the schema runs in a group of its own. If the log cannot be
//! written or synced, the thread answers the waiting requests with an error and stops taking
//! writes: an fsync failure leaves the file in an unknown state, and only a restart (which
//! re-checks the log) may continue.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::actors::shared::{DataShared, PrimaryShared};
use crate::error::{Error, Result};
use crate::log::{retention, LogWriter, Position, RecordKind};
use crate::store::checkpointer::Checkpointer;
use crate::store::exec::{Executor, Request, StatementResult, WriteLimits};

/// Requests waiting for the write path; a client beyond this waits to enqueue (bounded by
/// its own timeout) instead of growing memory.
pub const WRITE_QUEUE_CAPACITY: usize = 4096;
/// Most requests in one group transaction: bounds the work lost to one failing fsync and the
/// latency of the first request in a group.
pub const MAX_GROUP_REQUESTS: usize = 512;
const _: () = assert!(MAX_GROUP_REQUESTS <= WRITE_QUEUE_CAPACITY);
/// Tries, and pauses between them, of the checkpoint retention needs (once per segment):
/// at most 50 ms of the write path.
const RETENTION_CHECKPOINT_TRIES: usize = 10;
const RETENTION_CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// One client request waiting for the write path.
pub struct WriteJob {
    pub request: Request,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// What the write path is asked to do.
pub enum Job {
    /// Run a client's request.
    Write(WriteJob),
    /// The primary is idle: log a heartbeat record, so that lag in seconds stays truthful
    /// (an idle cluster reads zero, a disconnected spare's lag keeps growing).
    Heartbeat,
    /// The node changes role: refuse what waits, release the log and the database, then
    /// answer.
    Stop(std::sync::mpsc::Sender<()>),
    /// A switchover: stop (`accept: false`, for `bound` at most: a switchover that dies
    /// half way must not stop the primary for good) or start again taking writes; answers the
    /// LSN of the last record, which no later record follows while writes are stopped.
    Writes {
        accept: bool,
        bound: std::time::Duration,
        ack: oneshot::Sender<u64>,
    },
}

/// What a successful write returns to its client.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub results: Vec<StatementResult>,
    /// LSN of the record holding this write, or the current LSN when it changed nothing.
    pub lsn: u64,
}

pub struct Committer {
    executor: Executor,
    /// Checkpoints the database off the commit path (dropped, so joined, with the committer).
    checkpointer: Option<Checkpointer>,
    log: LogWriter,
    epoch: u64,
    committed: Arc<watch::Sender<Position>>,
    /// Requests taken from the queue that run before any newer one: a schema request met
    /// while a group was forming (it runs alone), and the requests a group did not run
    /// (it reached a bound first).
    pending: std::collections::VecDeque<WriteJob>,
    /// What retention needs: the node's shared state and the spares' positions.
    retention: Option<(Arc<DataShared>, Arc<PrimaryShared>)>,
    /// The write lease: nothing is acknowledged without it (None: benchmarks and tools).
    lease: Option<Arc<crate::actors::primary::lease_guard::LeaseGuard>>,
    /// Segment count at the last retention pass: a new segment triggers the next one.
    segments_seen: usize,
    /// A stop taken from the queue while a group was forming: honoured after the group.
    stop: Option<std::sync::mpsc::Sender<()>>,
    /// A switchover stopped writes (and heartbeats) until then: this log must not grow.
    paused_until: Option<std::time::Instant>,
    /// A pause taken from the queue while a group was forming: answered after the group.
    pausing: Option<(bool, std::time::Duration, oneshot::Sender<u64>)>,
    /// Write limits that override the configuration's (tools and tests).
    limits: Option<WriteLimits>,
}

impl Committer {
    pub fn new(
        executor: Executor,
        log: LogWriter,
        epoch: u64,
        committed: Arc<watch::Sender<Position>>,
    ) -> Self {
        let segments_seen = log.segments().len();
        Committer {
            executor,
            log,
            epoch,
            committed,
            pending: std::collections::VecDeque::new(),
            retention: None,
            lease: None,
            segments_seen,
            stop: None,
            paused_until: None,
            pausing: None,
            limits: None,
            checkpointer: None,
        }
    }

    /// Hands the database's checkpoints to a thread of their own (`store::checkpointer`),
    /// stopped with the write path.
    pub fn with_checkpointer(mut self, name: &str) -> Result<Self> {
        self.checkpointer = Some(Checkpointer::take_over(self.executor.connection(), name)?);
        Ok(self)
    }

    /// Bounds groups by `limits` instead of the configuration's.
    pub fn with_limits(mut self, limits: WriteLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Acknowledges writes only while `lease` is valid.
    pub fn with_lease(
        mut self,
        lease: Arc<crate::actors::primary::lease_guard::LeaseGuard>,
    ) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Deletes old log segments as the node's retention rules allow (without this, the
    /// log is kept whole: benchmarks and tools).
    pub fn with_retention(mut self, shared: Arc<DataShared>, primary: Arc<PrimaryShared>) -> Self {
        self.retention = Some((shared, primary));
        self
    }

    /// A checkpoint retention can count on: the checkpoint thread may hold the checkpoint
    /// lock for a moment (a PASSIVE checkpoint then reports busy), so a few tries.
    /// Only busy is worth a retry: a reader holding old frames (a snapshot, a long query)
    /// keeps the checkpoint incomplete for longer than the write path may wait.
    fn checkpoint_for_retention(&self) -> Result<bool> {
        for attempt in 1..=RETENTION_CHECKPOINT_TRIES {
            match crate::store::checkpoint_passive(self.executor.connection())? {
                crate::store::Checkpointed::Busy if attempt < RETENTION_CHECKPOINT_TRIES => {
                    std::thread::sleep(RETENTION_CHECKPOINT_PAUSE)
                }
                crate::store::Checkpointed::Busy => return Ok(false),
                crate::store::Checkpointed::Partly => return Ok(false),
                crate::store::Checkpointed::Wholly => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Retention (DESIGN.md §5), run when the log starts a new segment: checkpoint SQLite so
    /// that the log is no longer needed for what it holds, then delete the segments that
    /// every spare applied or that fall outside the budget, never what a seed still needs.
    fn maintain(&mut self) -> Result<()> {
        self.segments_seen = self.log.segments().len();
        let Some((shared, primary)) = self.retention.clone() else {
            return Ok(());
        };
        if let Some(archive) = &shared.node.log_archive_dir {
            // Before any deletion: the archive must hold every segment retention drops. If it
            // cannot, nothing is deleted (the log grows) and a human must look.
            if let Err(e) = crate::log::archive_segments(&shared.log_dir(), archive) {
                tracing::error!(cause = %e, archive = %archive.display(), "archiving the log failed; no segment is deleted until it works again");
                return Ok(());
            }
        }
        let committed = self.log.durable().lsn;
        let floor = if self.checkpoint_for_retention()? {
            committed
        } else {
            shared.oldest_lsn().saturating_sub(1)
        };
        let floor = primary
            .pins
            .iter()
            .map(|p| *p.value())
            .fold(floor, u64::min);
        let all_applied = shared
            .config()
            .spares()
            .map(|s| primary.spare_applied.get(&s.name).map_or(0, |v| *v))
            .min()
            .unwrap_or(committed);
        let through = retention::deletable_through(
            self.log.segments(),
            floor,
            all_applied,
            shared.retention_budget(),
            crate::clock::wall_ms(),
        );
        if self.log.delete_through(through)? > 0 {
            let base = crate::log::base::load(&shared.log_dir())?.unwrap_or_default();
            *shared.base.lock().expect("base lock") = base;
            tracing::info!(through, oldest = base.lsn + 1, "deleted old log segments");
        }
        Ok(())
    }

    /// Runs until every sender is dropped or the log fails.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        loop {
            let group = match self.pending.pop_front() {
                Some(job) => self.form_group(job, &mut jobs),
                None => match jobs.blocking_recv() {
                    Some(Job::Write(first)) => self.form_group(first, &mut jobs),
                    Some(Job::Heartbeat) => Vec::new(),
                    Some(Job::Stop(ack)) => return self.stop(jobs, ack),
                    Some(Job::Writes { accept, bound, ack }) => {
                        self.pausing = Some((accept, bound, ack));
                        Vec::new()
                    }
                    None => return,
                },
            };
            let step = match (group.is_empty(), self.pausing.is_some()) {
                (true, true) => Ok(()),
                (true, false) => self.heartbeat(),
                (false, _) => self.commit_group(group),
            };
            if let Some((accept, bound, ack)) = self.pausing.take() {
                self.paused_until = (!accept).then(|| std::time::Instant::now() + bound);
                let _ = ack.send(self.log.durable().lsn);
                tracing::warn!(
                    accept,
                    lsn = self.log.durable().lsn,
                    "switchover: writes {}",
                    if accept { "resumed" } else { "stopped" }
                );
            }
            let outcome = step.and_then(|()| {
                if self.log.segments().len() > self.segments_seen {
                    self.maintain()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = outcome {
                tracing::error!(cause = %e, "the write path stopped: the replication log could not be written; restart the node (it re-checks its log) after fixing the disk");
                self.refuse_all(&mut jobs, &e);
                return;
            }
            if let Some(ack) = self.stop.take() {
                return self.stop(jobs, ack);
            }
        }
    }

    /// Ends the write path: waiting writes are refused (retryable), the log writer and the
    /// database connection are closed, then `ack` is answered.
    fn stop(mut self, mut jobs: mpsc::Receiver<Job>, ack: std::sync::mpsc::Sender<()>) {
        self.refuse_all(
            &mut jobs,
            &Error::Unavailable("this node is changing role".into()),
        );
        drop(self);
        let _ = ack.send(());
    }

    /// A group: `first`, then what waits (pending requests first, they are older), up to a
    /// schema request, which runs alone.
    fn form_group(&mut self, first: WriteJob, jobs: &mut mpsc::Receiver<Job>) -> Vec<WriteJob> {
        let mut group = vec![first];
        if group[0].request.is_ddl() {
            return group;
        }
        while group.len() < MAX_GROUP_REQUESTS {
            match self.pending.front() {
                Some(job) if job.request.is_ddl() => return group,
                Some(_) => {
                    group.extend(self.pending.pop_front());
                    continue;
                }
                None => {}
            }
            match jobs.try_recv() {
                Ok(Job::Write(job)) if job.request.is_ddl() => {
                    self.pending.push_back(job);
                    break;
                }
                Ok(Job::Write(job)) => group.push(job),
                // This group's record serves as a heartbeat.
                Ok(Job::Heartbeat) => continue,
                Ok(Job::Stop(ack)) => {
                    self.stop = Some(ack);
                    break;
                }
                Ok(Job::Writes { accept, bound, ack }) => {
                    self.pausing = Some((accept, bound, ack));
                    break;
                }
                Err(_) => break,
            }
        }
        group
    }

    fn commit_group(&mut self, group: Vec<WriteJob>) -> Result<()> {
        if self.paused() {
            for job in group {
                let _ = job.reply.send(Err(Error::NotTaken("a switchover is in progress: this primary takes no more writes; retry in a moment (clients that know several nodes find the new primary)".into())));
            }
            return Ok(());
        }
        // Without a lease another node may have been promoted: write nothing.
        if let Some(Err(refused)) = self.lease.as_ref().map(|l| l.wait_valid()) {
            // Refused before anything ran: a retry cannot apply it twice.
            for job in group {
                let _ = job.reply.send(Err(refused.clone_refusal()));
            }
            return Ok(());
        }
        let requests: Vec<Request> = group.iter().map(|j| j.request.clone()).collect();
        let outcome = match self.executor.run_group(&requests, &self.limits()) {
            Ok(o) => o,
            Err(e) => {
                self.executor.rollback();
                for job in group {
                    let _ = job.reply.send(Err(Error::Sql(e.to_string())));
                }
                return Ok(());
            }
        };
        // The requests the group did not run go back first, before anything here can fail:
        // older than anything pending, they run next, in their order.
        let (ran, again): (Vec<_>, Vec<_>) = group
            .into_iter()
            .zip(outcome.results)
            .partition(|(_, result)| result.is_some());
        for (job, _) in again.into_iter().rev() {
            self.pending.push_front(job);
        }
        let lsn = match &outcome.payload {
            None => {
                self.executor.commit(None, None)?;
                self.log.durable().lsn
            }
            Some(payload) => match self.log_and_commit(payload)? {
                Ok(lsn) => lsn,
                Err(refused) => {
                    for (job, _) in ran {
                        let _ = job
                            .reply
                            .send(Err(Error::InvalidInput(refused.to_string())));
                    }
                    return Ok(());
                }
            },
        };
        // The lease may have run out while the group was written: then the write is durable
        // here, but acknowledging it could contradict a newer primary.
        let expired = self.lease.as_ref().is_some_and(|l| !l.is_valid());
        for (job, result) in ran {
            let result = result.expect("partitioned on Some");
            if expired && result.is_ok() {
                let _ = job.reply.send(Err(Error::Unavailable("this primary's write lease ran out while the write was committed: it is durable here but not confirmed; check `spare status` before retrying".into())));
                continue;
            }
            let _ = job
                .reply
                .send(result.map(|results| WriteOutcome { results, lsn }));
        }
        Ok(())
    }

    /// Whether a switchover stopped the writes; a stop past its bound ends here (its
    /// switchover died half way): writes resume, and the lease renews again.
    fn paused(&mut self) -> bool {
        let Some(until) = self.paused_until else {
            return false;
        };
        if std::time::Instant::now() < until {
            return true;
        }
        self.paused_until = None;
        if let Some(lease) = &self.lease {
            lease.resume();
        }
        tracing::warn!("the switchover that stopped the writes did not finish in time: writes resume (run `spare status`; start the switchover again if it is still wanted)");
        false
    }

    /// The write limits of the configuration as of now (defaults without one: tools).
    fn limits(&self) -> WriteLimits {
        if let Some(limits) = self.limits {
            return limits;
        }
        let Some((shared, _)) = &self.retention else {
            return WriteLimits::default();
        };
        let limits = shared.config().cluster.limits;
        WriteLimits {
            time: limits.write_time_limit,
            schema_time: limits.schema_time_limit,
            ..WriteLimits::default()
        }
    }

    /// Appends the payload, fsyncs, then commits SQLite: a crash in between is repaired at
    /// start by replaying the log. The outer error is fatal to the write path; the inner one
    /// refuses this group only (a record too large to log).
    fn log_and_commit(&mut self, payload: &crate::store::TxnPayload) -> Result<Result<u64>> {
        let record = match self.log.append(
            self.epoch,
            crate::clock::wall_ms(),
            RecordKind::Txn,
            payload.encode(),
        ) {
            Ok(r) => r,
            Err(e @ Error::InvalidInput(_)) => {
                self.executor.rollback();
                return Ok(Err(e));
            }
            Err(e) => return Err(e),
        };
        let start = self.log.appended_bytes() - record.encoded_len() as u64;
        let durable = self.log.sync()?;
        self.executor
            .commit(Some((record.lsn, record.time_ms)), Some(payload))?;
        if let Some((_, primary)) = &self.retention {
            primary
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.published(&record, start, durable);
        Ok(Ok(record.lsn))
    }

    /// Logs a heartbeat record (no SQLite change: its LSN is applied by definition).
    fn heartbeat(&mut self) -> Result<()> {
        // Without a lease another node may lead, and while a switchover runs the candidate
        // must be able to catch up exactly: add nothing to this history.
        if self.paused() || self.lease.as_ref().is_some_and(|l| !l.is_valid()) {
            return Ok(());
        }
        let record = self.log.append(
            self.epoch,
            crate::clock::wall_ms(),
            RecordKind::Heartbeat,
            Vec::new(),
        )?;
        let start = self.log.appended_bytes() - record.encoded_len() as u64;
        let durable = self.log.sync()?;
        self.published(&record, start, durable);
        Ok(())
    }

    /// Makes a durable record visible: to lag bookkeeping, then to feeders and readers.
    fn published(&mut self, record: &crate::log::Record, start: u64, durable: Position) {
        if let Some((_, primary)) = &self.retention {
            primary.recent.lock().expect("recent lock").push(
                record.lsn,
                start,
                self.log.appended_bytes(),
                record.time_ms,
            );
        }
        self.committed.send_replace(durable);
    }

    /// Answers every request taken or waiting with `cause`; the queue takes no more.
    fn refuse_all(&mut self, jobs: &mut mpsc::Receiver<Job>, cause: &Error) {
        jobs.close();
        let refuse = |job: WriteJob| {
            let _ = job.reply.send(Err(Error::Unavailable(format!(
                "the write path stopped: {cause}"
            ))));
        };
        self.pending.drain(..).for_each(refuse);
        while let Ok(job) = jobs.try_recv() {
            match job {
                Job::Write(job) => refuse(job),
                Job::Stop(ack) => {
                    let _ = ack.send(());
                }
                Job::Writes { ack, .. } => drop(ack),
                Job::Heartbeat => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, ConnKind, Statement};

    fn job(sql: &str) -> (Job, oneshot::Receiver<Result<WriteOutcome>>) {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            statements: vec![Statement {
                sql: sql.into(),
                params: vec![],
            }],
        };
        (Job::Write(WriteJob { request, reply }), rx)
    }

    /// A group where a statement stops at its time limit: the requests before it commit,
    /// those after it run in the next group, every one is answered once, in order in the log.
    #[test]
    fn a_stopped_statement_does_not_cost_its_group_neighbours_their_writes_nor_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(&dir.path().join("db.sqlite"), ConnKind::Writer).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .unwrap();
        let log = crate::log::open(&dir.path().join("log"), 0).unwrap().writer;
        let committed = Arc::new(watch::Sender::new(log.durable()));
        let committer = Committer::new(Executor::new(conn).unwrap(), log, 1, committed.clone())
            .with_limits(WriteLimits {
                time: std::time::Duration::from_millis(200),
                ..WriteLimits::default()
            });
        let (tx, rx) = mpsc::channel(16);
        let runaway = "WITH RECURSIVE c(x) AS (SELECT 10 UNION ALL SELECT x + 1 FROM c) INSERT INTO t SELECT x FROM c";
        // Queued before the thread starts: they form one group.
        let answers: Vec<_> = [
            "INSERT INTO t VALUES (1)",
            runaway,
            "INSERT INTO t VALUES (2)",
        ]
        .into_iter()
        .map(|sql| {
            let (j, answer) = job(sql);
            assert!(tx.try_send(j).is_ok(), "queue has room");
            answer
        })
        .collect();
        let thread = std::thread::spawn(move || committer.run(rx));
        let got: Vec<_> = answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap())
            .collect();
        drop(tx);
        thread.join().unwrap();
        assert!(
            matches!(got[1], Err(Error::TimeLimit(_))),
            "{:?}",
            got[1].as_ref().err()
        );
        let (a, b) = (got[0].as_ref().unwrap(), got[2].as_ref().unwrap());
        assert!(a.lsn < b.lsn, "the later request commits in a later group");
        let rows: i64 = store::open(&dir.path().join("db.sqlite"), ConnKind::Reader)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }
}
