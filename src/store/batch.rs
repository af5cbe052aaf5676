//! The group-commit writer both backends share: it owns the insert queue (bounded, so a
//! full queue makes callers wait), the gathering of queued requests into batches of at most
//! `max_batch_rows` rows, the policy that answers a batch's requests (all from one commit,
//! or, when a batch of several fails on a statement, each request written alone), the
//! [`WriterStats`] counters, and queue-ordered flushes.
//!
//! A backend supplies the transaction through [`BatchWriter`] and the thread that drives
//! it: it loops over [`Intake::next`] and commits each [`Batch`] with [`Batch::commit`]
//! (MySQL on its runtime thread, several batches in flight; SQLite inline on its writer
//! thread, between its other writes). The intake ends only when every [`Queue`] is gone and
//! the queue is empty, so what was accepted before shutdown is committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{InsertOutcome, NewMessage, StoreError, StoreFuture, WriterStats};
use crate::metrics::histogram::{Histogram, BATCH_ROWS_BUCKETS};

/// Writes one batch of message rows for the group-commit writer.
pub(crate) trait BatchWriter {
    /// Writes `rows` (any number of requests' rows, in order) in one transaction and
    /// returns each row's outcome in the same order. It retries what is safe to retry; an
    /// error means nothing of `rows` was committed.
    async fn write(&mut self, rows: &[&NewMessage]) -> Result<Vec<InsertOutcome>, WriteFailure>;
}

/// Why a batch was not written.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub error: StoreError,
    /// A statement failed (not the connection): the other requests of the batch may well
    /// succeed without the one that caused it, so they are written one by one.
    pub statement_level: bool,
}

/// One queued `insert_messages` call.
struct Pending {
    rows: Vec<NewMessage>,
    reply: oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>,
}

/// A message on the writer's queue. `J` is other work a backend runs on its writer in
/// queue order (SQLite's other writes); MySQL has none.
enum Queued<J> {
    Insert(Pending),
    Flush(oneshot::Sender<()>),
    Job(J),
}

/// What the writer does next, in queue order.
pub(crate) enum Work<J> {
    /// Consecutive insert requests, to commit together.
    Batch(Batch),
    /// Answer once every request queued before it is answered.
    Flush(oneshot::Sender<()>),
    Job(J),
}

/// The writer's counters (read through [`Queue::stats`]).
///
/// Written by the writer's one thread only (the metrics scrape reads them), so they cost
/// no contention.
#[derive(Debug)]
pub(crate) struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
    rows: AtomicU64,
    inserted: AtomicU64,
    fallbacks: AtomicU64,
    batch_rows: Histogram,
    commit_time: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            batch_rows: Histogram::new(BATCH_ROWS_BUCKETS, 1.0),
            commit_time: Histogram::durations(),
        }
    }
}

impl Counters {
    /// A backend redid a batch another way (e.g. row by row after an ambiguous outcome).
    pub(crate) fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WriterStats {
        WriterStats {
            batches: self.batches.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            inserted: self.inserted.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            batch_rows: self.batch_rows.snapshot(),
            commit_seconds: self.commit_time.snapshot(),
            // The backend adds where its other operations ran.
            on_core: 0,
            handed_off: 0,
        }
    }
}

/// The store handle's end of the writer queue.
pub(crate) struct Queue<J> {
    tx: mpsc::Sender<Queued<J>>,
    counters: Arc<Counters>,
    /// The `Unavailable` message once the writer is gone.
    stopped: &'static str,
}

/// The writer's end of the queue.
pub(crate) struct Intake<J> {
    rx: mpsc::Receiver<Queued<J>>,
    /// A non-insert message that ended the previous batch; it runs next.
    held: Option<Queued<J>>,
    max_batch_rows: usize,
    counters: Arc<Counters>,
}

/// A queue of at most `capacity` requests whose batches hold at most `max_batch_rows` rows
/// (a single larger request is still one batch). `stopped` is the error callers get once
/// the writer is gone.
pub(crate) fn queue<J>(capacity: usize, max_batch_rows: usize, stopped: &'static str) -> (Queue<J>, Intake<J>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let counters = Arc::new(Counters::default());
    let intake = Intake { rx, held: None, max_batch_rows: max_batch_rows.max(1), counters: counters.clone() };
    (Queue { tx, counters, stopped }, intake)
}

impl<J: Send> Queue<J> {
    /// Queues the rows and resolves once their batch is committed (or failed).
    pub(crate) fn insert(&self, rows: Vec<NewMessage>) -> StoreFuture<'_, Vec<InsertOutcome>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, answer) = oneshot::channel();
            self.tx.send(Queued::Insert(Pending { rows, reply })).await.map_err(|_| self.stopped())?;
            answer.await.map_err(|_| self.stopped())?
        })
    }

    /// Resolves once every request queued before it is answered.
    pub(crate) fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, finished) = oneshot::channel();
            self.tx.send(Queued::Flush(done)).await.map_err(|_| self.stopped())?;
            finished.await.map_err(|_| self.stopped())
        })
    }

    /// Queues other work for the writer, behind what is queued already.
    pub(crate) async fn job(&self, job: J) -> Result<(), StoreError> {
        self.tx.send(Queued::Job(job)).await.map_err(|_| self.stopped())
    }

    pub(crate) fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// The counters, for a backend that records its own fallbacks.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub(crate) fn stopped(&self) -> StoreError {
        StoreError::Unavailable(self.stopped.into())
    }
}

impl<J> Intake<J> {
    /// The next work in queue order: consecutive queued inserts become one batch (up to
    /// `max_batch_rows` rows, without waiting for more). `None` once every [`Queue`] is
    /// dropped and nothing is left.
    pub(crate) async fn next(&mut self) -> Option<Work<J>> {
        let first = match self.held.take() {
            Some(held) => held,
            None => self.rx.recv().await?,
        };
        Some(match first {
            Queued::Insert(first) => Work::Batch(self.gather(first)),
            Queued::Flush(done) => Work::Flush(done),
            Queued::Job(job) => Work::Job(job),
        })
    }

    /// The next queued message if it is a job `take` accepts (`Ok`), without waiting: a
    /// backend that can commit several such jobs together gathers them with this. A job it
    /// hands back (`Err`), or anything else, stays first in line for [`Intake::next`].
    pub(crate) fn next_job_now<T>(&mut self, take: impl FnOnce(J) -> Result<T, J>) -> Option<T> {
        let queued = match self.held.take() {
            Some(held) => held,
            None => self.rx.try_recv().ok()?,
        };
        let back = match queued {
            Queued::Job(job) => match take(job) {
                Ok(taken) => return Some(taken),
                Err(job) => Queued::Job(job),
            },
            other => other,
        };
        self.held = Some(back);
        None
    }

    fn gather(&mut self, first: Pending) -> Batch {
        let mut rows = first.rows.len();
        let mut requests = vec![first];
        while rows < self.max_batch_rows {
            match self.rx.try_recv() {
                Ok(Queued::Insert(p)) => {
                    rows += p.rows.len();
                    requests.push(p);
                }
                // Keep queue order: this batch first, then that.
                Ok(other) => {
                    self.held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        Batch { requests, counters: self.counters.clone() }
    }
}

/// Insert requests to commit together.
pub(crate) struct Batch {
    requests: Vec<Pending>,
    counters: Arc<Counters>,
}

impl Batch {
    /// Writes the batch and answers each request. When a batch of several requests fails
    /// on a statement, each request is written alone so one bad request does not fail the
    /// others; any other failure fails them all.
    pub(crate) async fn commit<W: BatchWriter>(self, writer: &mut W) {
        let Batch { requests, counters } = self;
        counters.requests.fetch_add(requests.len() as u64, Ordering::Relaxed);
        let all: Vec<&NewMessage> = requests.iter().flat_map(|p| p.rows.iter()).collect();
        let result = write(writer, &all, &counters).await;
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for p in requests {
                    let mine = outcomes.by_ref().take(p.rows.len()).collect();
                    let _ = p.reply.send(Ok(mine));
                }
            }
            Err(f) if f.statement_level && requests.len() > 1 => {
                tracing::warn!(error = %f.error, requests = requests.len(), "group-committed insert failed; retrying each request alone");
                counters.count_fallback();
                for p in requests {
                    let rows: Vec<&NewMessage> = p.rows.iter().collect();
                    let result = write(writer, &rows, &counters).await.map_err(|f| f.error);
                    let _ = p.reply.send(result);
                }
            }
            Err(f) => {
                for p in requests {
                    let _ = p.reply.send(Err(f.error.clone()));
                }
            }
        }
    }
}

/// One transaction, counted when it commits.
async fn write<W: BatchWriter>(
    writer: &mut W,
    rows: &[&NewMessage],
    counters: &Counters,
) -> Result<Vec<InsertOutcome>, WriteFailure> {
    let started = std::time::Instant::now();
    let outcomes = writer.write(rows).await?;
    counters.commit_time.observe_duration(started.elapsed());
    counters.batch_rows.observe(rows.len() as u64);
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
    let inserted = outcomes.iter().filter(|o| matches!(o, InsertOutcome::Inserted)).count();
    counters.inserted.fetch_add(inserted as u64, Ordering::Relaxed);
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use InsertOutcome::{Duplicate, Inserted};

    /// Remembers every transaction it was asked for. A row whose id starts with `bad` fails
    /// its statement; `down` fails the connection. Ids seen before are duplicates.
    #[derive(Default)]
    struct Fake {
        transactions: Vec<Vec<String>>,
        stored: Vec<String>,
    }

    impl BatchWriter for Fake {
        async fn write(&mut self, rows: &[&NewMessage]) -> Result<Vec<InsertOutcome>, WriteFailure> {
            let ids: Vec<String> = rows.iter().map(|r| r.message_id.clone()).collect();
            self.transactions.push(ids.clone());
            let fail =
                |message: &str, statement_level| WriteFailure { error: StoreError::database(message), statement_level };
            if ids.iter().any(|id| id.starts_with("bad")) {
                return Err(fail("bad row", true));
            }
            if ids.iter().any(|id| id == "down") {
                return Err(fail("connection lost", false));
            }
            let mut out = Vec::new();
            for id in ids {
                out.push(if self.stored.contains(&id) { Duplicate } else { Inserted });
                self.stored.push(id);
            }
            Ok(out)
        }
    }

    use crate::store::tests::message as msg;

    fn msgs(ids: &[&str]) -> Vec<NewMessage> {
        ids.iter().map(|id| msg(id)).collect()
    }

    type Answer = Result<Vec<InsertOutcome>, StoreError>;

    /// Batches, requests, rows and fallbacks; the histograms must agree with them.
    fn counts(s: &WriterStats) -> (u64, u64, u64, u64) {
        assert_eq!(s.batch_rows.count(), s.batches, "one batch-size observation per commit");
        assert_eq!(s.batch_rows.sum() as u64, s.rows);
        assert_eq!(s.commit_seconds.count(), s.batches);
        (s.batches, s.requests, s.rows, s.fallbacks)
    }

    /// What a test queues: an insert request, or a flush (answered with no outcomes).
    enum Req {
        Insert(&'static [&'static str]),
        Flush,
    }

    /// What the writer saw and answered.
    struct Run {
        answers: Vec<Answer>,
        /// The number of requests in each batch the intake formed, and `0` for a flush.
        work: Vec<usize>,
        stats: WriterStats,
    }

    /// Queues every request in order before the writer starts, then runs a writer over
    /// `fake` until every caller is answered and the queue is closed.
    fn run(max_batch_rows: usize, requests: Vec<Req>, fake: &mut Fake) -> Run {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (queue, mut intake) = queue::<Infallible>(64, max_batch_rows, "stopped");
            let queue = Arc::new(queue);
            let mut callers = Vec::new();
            for req in requests {
                let queue = queue.clone();
                let mut caller: StoreFuture<'static, Vec<InsertOutcome>> = match req {
                    Req::Insert(ids) => Box::pin(async move { queue.insert(msgs(ids)).await }),
                    Req::Flush => Box::pin(async move { queue.flush().await.map(|()| Vec::new()) }),
                };
                // One poll queues it (the queue has room), so the queue holds them in order.
                assert!(futures_util::FutureExt::now_or_never(&mut caller).is_none());
                callers.push(caller);
            }
            let counters = queue.counters();
            drop(queue);
            let mut work = Vec::new();
            let writer = async {
                while let Some(next) = intake.next().await {
                    match next {
                        Work::Batch(batch) => {
                            work.push(batch.requests.len());
                            batch.commit(&mut *fake).await;
                        }
                        Work::Flush(done) => {
                            work.push(0);
                            done.send(()).unwrap();
                        }
                        Work::Job(never) => match never {},
                    }
                }
            };
            let (answers, ()) = futures_util::future::join(futures_util::future::join_all(callers), writer).await;
            Run { answers, work, stats: counters.snapshot() }
        })
    }

    fn ok(answer: &Answer) -> Vec<InsertOutcome> {
        answer.clone().unwrap()
    }

    #[test]
    fn queued_requests_share_a_transaction_up_to_the_row_limit() {
        let mut fake = Fake::default();
        let requests =
            vec![Req::Insert(&["a", "b"]), Req::Insert(&["c"]), Req::Insert(&["a"]), Req::Insert(&["d", "e"])];
        let run = run(3, requests, &mut fake);
        // A batch takes requests while it holds fewer than 3 rows.
        assert_eq!(run.work, [2, 2]);
        assert_eq!(fake.transactions, [vec!["a", "b", "c"], vec!["a", "d", "e"]]);
        let answers: Vec<_> = run.answers.iter().map(ok).collect();
        assert_eq!(answers, [vec![Inserted, Inserted], vec![Inserted], vec![Duplicate], vec![Inserted, Inserted]]);
        assert_eq!(counts(&run.stats), (2, 4, 6, 0));
    }

    #[test]
    fn a_large_request_is_one_batch() {
        let mut fake = Fake::default();
        let run = run(2, vec![Req::Insert(&["a", "b", "c"]), Req::Insert(&["d"])], &mut fake);
        assert_eq!(run.work, [1, 1]);
        assert_eq!(counts(&run.stats), (2, 2, 4, 0));
    }

    #[test]
    fn a_flush_ends_a_batch_and_waits_for_it() {
        let mut fake = Fake::default();
        let requests = vec![Req::Insert(&["a"]), Req::Insert(&["b"]), Req::Flush, Req::Insert(&["c"]), Req::Flush];
        let run = run(512, requests, &mut fake);
        assert_eq!(run.work, [2, 0, 1, 0]);
        assert_eq!(fake.transactions, [vec!["a", "b"], vec!["c"]]);
        assert!(run.answers.iter().all(Result::is_ok));
        assert_eq!(counts(&run.stats), (2, 3, 3, 0));
    }

    #[test]
    fn a_statement_failure_splits_the_batch_into_its_requests() {
        let mut fake = Fake::default();
        let requests = vec![Req::Insert(&["a"]), Req::Insert(&["bad", "b"]), Req::Insert(&["c", "a"])];
        let run = run(512, requests, &mut fake);
        assert_eq!(run.work, [3]);
        assert_eq!(fake.transactions, [vec!["a", "bad", "b", "c", "a"], vec!["a"], vec!["bad", "b"], vec!["c", "a"]]);
        assert_eq!(ok(&run.answers[0]), [Inserted]);
        assert_eq!(run.answers[1], Err(StoreError::database("bad row")));
        assert_eq!(ok(&run.answers[2]), [Inserted, Duplicate]);
        assert_eq!(counts(&run.stats), (2, 3, 3, 1));
    }

    #[test]
    fn other_failures_fail_the_whole_batch() {
        let mut fake = Fake::default();
        let run = run(512, vec![Req::Insert(&["a"]), Req::Insert(&["down"])], &mut fake);
        assert_eq!(fake.transactions, [vec!["a", "down"]]);
        let lost = Err(StoreError::database("connection lost"));
        assert_eq!(run.answers, [lost.clone(), lost]);
        assert_eq!(counts(&run.stats), (0, 2, 0, 0));
    }

    #[test]
    fn a_request_alone_has_nothing_to_split_off() {
        let mut fake = Fake::default();
        let run = run(512, vec![Req::Insert(&["bad"])], &mut fake);
        assert_eq!(fake.transactions, [vec!["bad"]]);
        assert_eq!(run.answers, [Err(StoreError::database("bad row"))]);
        assert_eq!(counts(&run.stats), (0, 1, 0, 0));
    }

    /// Jobs gathered with `next_job_now` come in queue order; one refused, or an insert
    /// behind them, is not lost but next in line.
    #[test]
    fn jobs_are_gathered_in_order_and_nothing_refused_is_lost() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (queue, mut intake) = queue::<u32>(16, 8, "stopped");
            for job in [1, 2, 3] {
                queue.job(job).await.unwrap();
            }
            let mut insert: StoreFuture<'_, Vec<InsertOutcome>> = queue.insert(msgs(&["a"]));
            assert!(futures_util::FutureExt::now_or_never(&mut insert).is_none());
            queue.job(4).await.unwrap();
            let odd = |j: u32| if j % 2 == 1 { Ok(j) } else { Err(j) };

            assert!(matches!(intake.next().await, Some(Work::Job(1))));
            assert_eq!(intake.next_job_now(odd), None, "2 is refused");
            assert!(matches!(intake.next().await, Some(Work::Job(2))), "and next in line");
            assert_eq!(intake.next_job_now(odd), Some(3));
            assert_eq!(intake.next_job_now(odd), None, "an insert is not a job");
            assert!(matches!(intake.next().await, Some(Work::Batch(_))), "and keeps its place");
            assert_eq!(intake.next_job_now(Ok), Some(4));
            assert_eq!(intake.next_job_now(Ok), None, "the queue is empty");
        });
    }

    #[test]
    fn a_stopped_writer_is_unavailable_and_empty_inserts_skip_it() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (queue, intake) = queue::<Infallible>(4, 8, "the writer has stopped");
            assert_eq!(queue.insert(Vec::new()).await, Ok(Vec::new()));
            drop(intake);
            let stopped = Err(StoreError::Unavailable("the writer has stopped".into()));
            assert_eq!(queue.insert(msgs(&["a"])).await, stopped);
            assert_eq!(queue.flush().await, Err(StoreError::Unavailable("the writer has stopped".into())));
            assert_eq!(queue.stats(), WriterStats::default());
        });
    }
}
