//! Reading a process's CPU time and memory from `/proc` (Linux): `/proc/PID/stat` for
//! user + system time, `/proc/PID/status` for `VmRSS` (now) and `VmHWM` (peak), and each
//! thread's `/proc/PID/task/TID/status` for its context switches. Used for the server
//! (`--server-pid`) and for the generator itself (its own cost per operation).

use std::time::Instant;

use serde::Serialize;

/// CPU time in clock ticks, as `/proc/PID/stat` reports it (fields 14 and 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub utime: u64,
    pub stime: u64,
}

impl CpuTicks {
    pub fn total(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses the contents of `/proc/PID/stat`. The command name (field 2) may itself hold
/// spaces and parentheses, so fields are counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<CpuTicks> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some(CpuTicks { utime, stime })
}

/// Resident memory in KiB from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size over the process's life.
    pub hwm_kib: u64,
}

pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")? })
}

/// A thread's context switches from its `/proc/PID/task/TID/status`: voluntary (it waited)
/// plus involuntary (it was preempted).
pub fn parse_switches(text: &str) -> Option<u64> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// The context switches of every thread of a process alive now (`/proc/PID/status` has the
/// main thread's only). A thread that ended took its count with it.
fn switches(task_dir: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(task_dir) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|text| parse_switches(&text))
        .sum()
}

/// Clock ticks per second for `/proc/PID/stat`: `getconf CLK_TCK`, which is the only safe
/// way to ask for `sysconf(_SC_CLK_TCK)` without `unsafe`; Linux has reported 100 on every
/// mainstream architecture for decades, which is the fallback if `getconf` is missing.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(100)
}

/// One look at a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu_s: f64,
    pub mem: Memory,
    /// Context switches of the process's threads so far.
    pub switches: u64,
}

/// A process, or several (a fleet's nodes), being watched: CPU and memory add up.
#[derive(Debug, Clone)]
pub struct Watch {
    /// `None` is this process.
    pids: Vec<Option<u32>>,
    ticks_per_s: u64,
}

impl Watch {
    /// Checks the process exists and is readable.
    pub fn new(pid: Option<u32>, ticks_per_s: u64) -> Result<Watch, String> {
        let w = Watch { pids: vec![pid], ticks_per_s };
        w.sample().map(|_| w)
    }

    /// The processes `pids` together (their CPU seconds and memory summed).
    pub fn of(pids: &[u32], ticks_per_s: u64) -> Result<Watch, String> {
        let w = Watch { pids: pids.iter().map(|&p| Some(p)).collect(), ticks_per_s };
        w.sample().map(|_| w)
    }

    fn path(pid: Option<u32>, file: &str) -> String {
        match pid {
            Some(p) => format!("/proc/{p}/{file}"),
            None => format!("/proc/self/{file}"),
        }
    }

    /// The sum over the watched processes (RSS and VmHWM: the sums of each one's).
    pub fn sample(&self) -> Result<Sample, String> {
        let at = Instant::now();
        let mut total = Sample { at, cpu_s: 0.0, mem: Memory::default(), switches: 0 };
        for &pid in &self.pids {
            let path = |f: &str| Self::path(pid, f);
            let read = |f: &str| std::fs::read_to_string(path(f)).map_err(|e| format!("{}: {e}", path(f)));
            let cpu = parse_stat(&read("stat")?).ok_or_else(|| format!("{}: unreadable", path("stat")))?;
            let mem = parse_status(&read("status")?).ok_or_else(|| format!("{}: no VmRSS/VmHWM", path("status")))?;
            total.cpu_s += cpu.total() as f64 / self.ticks_per_s as f64;
            total.mem.rss_kib += mem.rss_kib;
            total.mem.hwm_kib += mem.hwm_kib;
            total.switches += switches(&path("task"));
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_awkward_name() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 1234 0 5 0 750 125 0 0 20 0 3 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some(CpuTicks { utime: 750, stime: 125 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_memory() {
        let text = "Name:\tmessagebox\nVmPeak:\t  200000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\nThreads:\t4\n";
        assert_eq!(parse_status(text), Some(Memory { rss_kib: 40960, hwm_kib: 51234 }));
        assert_eq!(parse_status("Name:\tzombie\n"), None);
    }

    #[test]
    fn thread_switches() {
        let text = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_switches(text), Some(127));
        assert_eq!(parse_switches("Name:\tx\n"), None);
    }

    #[test]
    fn watching_ourselves() {
        let hz = clock_ticks_per_second();
        assert!(hz >= 1);
        let w = Watch::new(None, hz).unwrap();
        let a = w.sample().unwrap();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = w.sample().unwrap();
        assert!(b.cpu_s >= a.cpu_s);
        assert!(b.mem.rss_kib > 0 && b.mem.hwm_kib >= b.mem.rss_kib);
        std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(5))).join().unwrap();
        assert!(w.sample().unwrap().switches > a.switches, "this thread waited for another");
        assert!(Watch::new(Some(u32::MAX), hz).is_err());
        // Two processes add up: ourselves twice is twice ourselves.
        let me = std::process::id();
        let twice = Watch::of(&[me, me], hz).unwrap().sample().unwrap();
        let once = w.sample().unwrap();
        assert!(twice.cpu_s >= 2.0 * b.cpu_s && twice.cpu_s <= 2.0 * once.cpu_s + 0.05, "{twice:?} {once:?}");
        assert!(twice.mem.rss_kib > once.mem.rss_kib);
        assert!(Watch::of(&[me, u32::MAX], hz).is_err());
    }
}
