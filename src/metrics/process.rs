//! The standard `process_*` metrics, read from `/proc/self` at scrape time (Linux only;
//! elsewhere they are left out).

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: u64,
}

/// `/proc` reports CPU times and start times in USER_HZ ticks, which the kernel fixes at
/// 100 per second for user space on every architecture it supports (`sysconf(_SC_CLK_TCK)`).
const USER_HZ: f64 = 100.0;

/// Reads the stats; `None` where `/proc/self` is not available.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mut s = parse_stat(&stat)?;
    s.resident_bytes = status_kib(&status, "VmRSS:")? * 1024;
    s.virtual_bytes = status_kib(&status, "VmSize:").unwrap_or(0) * 1024;
    s.open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    s.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| max_open_files(&l));
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
    s.start_time_seconds = boot.zip(s.start_time_seconds).map(|(b, since_boot)| b + since_boot);
    Some(s)
}

/// CPU time, thread count and the start time since boot from `/proc/self/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is index n - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    Some(ProcessStats {
        cpu_seconds: ticks as f64 / USER_HZ,
        threads: field(20).unwrap_or(0),
        start_time_seconds: field(22).map(|t| t as f64 / USER_HZ),
        ..ProcessStats::default()
    })
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn boot_time(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line[6..].trim().parse::<u64>().ok().map(|b| b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (messagebox (core) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 3 0 123456 \
                    100000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(stat).unwrap();
        assert_eq!(s.cpu_seconds, 3.25, "utime 250 + stime 75 ticks");
        assert_eq!(s.threads, 3);
        assert_eq!(s.start_time_seconds, Some(1234.56));
        assert_eq!(status_kib("Name:\tx\nVmSize:\t  20480 kB\nVmRSS:\t    1024 kB\n", "VmRSS:"), Some(1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read().expect("/proc/self is readable on Linux");
        assert!(s.resident_bytes > 1024 * 1024, "{s:?}");
        assert!(s.open_fds >= 3, "{s:?}");
        assert!(s.threads >= 1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 86400.0 * 365.0, "{start} vs {now}");
    }
}
