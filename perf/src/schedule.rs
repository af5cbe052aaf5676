//! When each operation starts, and whether it counts.
//!
//! A [`Plan`] hands out numbered tickets to every worker of every thread. Open loop (a
//! `--rate`): ticket `i` is scheduled at `start + i / rate` whatever happened before, and
//! latency is measured from that scheduled instant, so a server that stalls is charged for
//! the whole queue behind the stall (no coordinated omission). Closed loop: a ticket is
//! "scheduled" when a worker asks for it. Tickets scheduled before the warm-up ends are
//! marked unmeasured; the run ends after `--duration` of measured time or `--requests`
//! measured tickets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One operation to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub seq: u64,
    /// Latency is measured from here.
    pub scheduled: Instant,
    /// False during the warm-up.
    pub measured: bool,
}

/// The run's schedule, shared by all workers.
#[derive(Debug)]
pub struct Plan {
    pub start: Instant,
    pub warmup_end: Instant,
    /// Last scheduled instant (duration mode).
    end: Option<Instant>,
    rate: Option<f64>,
    /// Measured tickets to issue (count mode).
    quota: Option<u64>,
    next: AtomicU64,
    measured_issued: AtomicU64,
    stopped: AtomicBool,
}

impl Plan {
    /// `duration` wins over `requests` when both are given.
    pub fn new(
        start: Instant,
        warmup: Duration,
        duration: Option<Duration>,
        requests: Option<u64>,
        rate: Option<f64>,
    ) -> Plan {
        let warmup_end = start + warmup;
        let (end, quota) = match (duration, requests) {
            (Some(d), _) => (Some(warmup_end + d), None),
            (None, Some(n)) => (None, Some(n)),
            (None, None) => (Some(warmup_end + Duration::from_secs(10)), None),
        };
        Plan {
            start,
            warmup_end,
            end,
            rate,
            quota,
            next: AtomicU64::new(0),
            measured_issued: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The planned end of scheduling, when known in advance.
    pub fn end(&self) -> Option<Instant> {
        match (self.end, self.quota, self.rate) {
            (Some(e), _, _) => Some(e),
            (None, Some(q), Some(r)) => {
                Some(self.start + Duration::from_secs_f64((self.warm_tickets() + q) as f64 / r))
            }
            _ => None,
        }
    }

    /// Open loop: tickets scheduled inside the warm-up (`i / rate < warmup`).
    fn warm_tickets(&self) -> u64 {
        let r = self.rate.unwrap_or(0.0);
        ((self.warmup_end - self.start).as_secs_f64() * r - 1e-9).ceil().max(0.0) as u64
    }

    /// Total tickets the plan will issue, when that is known in advance (open loop, or a
    /// closed loop with a count: then the warm-up ones are not included).
    pub fn planned_tickets(&self) -> Option<u64> {
        match (self.rate, self.quota, self.end) {
            (Some(_), Some(q), _) => Some(self.warm_tickets() + q),
            (Some(r), None, Some(e)) => Some(((e - self.start).as_secs_f64() * r).ceil() as u64),
            (None, Some(q), _) => Some(q),
            _ => None,
        }
    }

    /// Open loop: ticket `seq` without waiting (pure).
    pub fn open_ticket(&self, seq: u64) -> Option<Ticket> {
        let rate = self.rate?;
        let scheduled = self.start + Duration::from_secs_f64(seq as f64 / rate);
        let warm = self.warm_tickets();
        if let Some(q) = self.quota {
            if seq >= warm + q {
                return None;
            }
        } else if self.end.is_some_and(|e| scheduled >= e) {
            return None;
        }
        Some(Ticket { seq, scheduled, measured: seq >= warm })
    }

    /// Closed loop: the ticket a worker gets at `now`.
    pub fn closed_ticket(&self, seq: u64, now: Instant) -> Option<Ticket> {
        let measured = now >= self.warmup_end;
        if self.end.is_some_and(|e| now >= e) {
            return None;
        }
        if let (Some(q), true) = (self.quota, measured) {
            if self.measured_issued.fetch_add(1, Ordering::Relaxed) >= q {
                return None;
            }
        }
        Some(Ticket { seq, scheduled: now, measured })
    }

    /// The next ticket, waiting for its scheduled time in open loop; `None` when the run is over.
    pub async fn next(&self) -> Option<Ticket> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if self.rate.is_some() {
            let t = self.open_ticket(seq)?;
            if t.scheduled > Instant::now() {
                tokio::time::sleep_until(t.scheduled.into()).await;
            }
            Some(t)
        } else {
            let now = Instant::now();
            if now < self.start {
                tokio::time::sleep_until(self.start.into()).await;
                return self.closed_ticket(seq, self.start);
            }
            self.closed_ticket(seq, now)
        }
    }

    /// Ends the run early (no more tickets).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn open_loop_schedules_at_the_fixed_rate() {
        let t0 = Instant::now();
        let p = Plan::new(t0, ms(1000), Some(ms(2000)), None, Some(1000.0));
        let t = p.open_ticket(5).unwrap();
        assert_eq!(t.scheduled, t0 + ms(5));
        assert!(!t.measured);
        assert!(!p.open_ticket(999).unwrap().measured);
        assert!(p.open_ticket(1000).unwrap().measured);
        assert!(p.open_ticket(2999).is_some());
        assert!(p.open_ticket(3000).is_none(), "scheduling stops at warm-up + duration");
        assert_eq!(p.planned_tickets(), Some(3000));
        assert_eq!(p.end(), Some(t0 + ms(3000)));
    }

    #[test]
    fn open_loop_with_a_count_measures_exactly_that_many() {
        let t0 = Instant::now();
        let p = Plan::new(t0, ms(500), None, Some(100), Some(200.0));
        let measured = (0..1000).filter_map(|i| p.open_ticket(i)).filter(|t| t.measured).count();
        let all = (0..1000).filter_map(|i| p.open_ticket(i)).count();
        assert_eq!(measured, 100);
        assert_eq!(all, 200, "100 warm-up tickets in 0.5 s at 200/s");
        assert_eq!(p.planned_tickets(), Some(200));
    }

    #[test]
    fn closed_loop_counts_only_after_the_warmup() {
        let t0 = Instant::now();
        let p = Plan::new(t0, ms(100), None, Some(3), None);
        assert!(!p.closed_ticket(0, t0 + ms(50)).unwrap().measured);
        let got: Vec<_> = (1..10).filter_map(|i| p.closed_ticket(i, t0 + ms(200))).collect();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|t| t.measured && t.scheduled == t0 + ms(200)));
        let d = Plan::new(t0, ms(100), Some(ms(100)), None, None);
        assert!(d.closed_ticket(0, t0 + ms(150)).is_some());
        assert!(d.closed_ticket(1, t0 + ms(200)).is_none());
    }

    #[test]
    fn zero_warmup_measures_from_the_first_ticket() {
        let t0 = Instant::now();
        let p = Plan::new(t0, Duration::ZERO, None, Some(2), Some(10.0));
        assert!(p.open_ticket(0).unwrap().measured);
        assert!(p.open_ticket(2).is_none());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn next_waits_for_the_schedule_and_stop_ends_it() {
        let t0 = Instant::now();
        let p = Plan::new(t0, Duration::ZERO, Some(ms(1000)), None, Some(100.0));
        let a = p.next().await.unwrap();
        let b = p.next().await.unwrap();
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!(b.scheduled, t0 + ms(10));
        p.stop();
        assert!(p.next().await.is_none());
    }
}
