//! The process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from `/proc` at each scrape, under
//! the standard names (no service prefix) so that the usual dashboards find them. Elsewhere
//! than Linux, or where a file cannot be read, the metric is left out.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc`'s times: the kernel's `USER_HZ`, 100 on every
/// architecture Linux runs containers on (Prometheus's own procfs library fixes it at 100
/// too rather than call `sysconf`).
const USER_HZ: f64 = 100.0;

/// One reading of the process's figures; `None` where it could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Process {
    /// Reads `/proc/self` now.
    pub fn read() -> Self {
        let file = |path: &str| std::fs::read_to_string(path).ok();
        let stat = file("/proc/self/stat").and_then(|s| Stat::parse(&s));
        let boot = file("/proc/stat").and_then(|s| boot_time(&s));
        let (resident_bytes, virtual_bytes) = file("/proc/self/status")
            .map(|s| (status_kib(&s, "VmRSS:"), status_kib(&s, "VmSize:")))
            .unwrap_or_default();
        Self {
            cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            resident_bytes,
            virtual_bytes,
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: file("/proc/self/limits").and_then(|s| max_open_files(&s)),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / USER_HZ),
        }
    }
}

/// Appends the readings in the text exposition format, one family each with `# HELP`.
pub fn render(process: &Process, out: &mut String) {
    let mut family = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        }
    };
    let text = |v: Option<u64>| v.map(|v| v.to_string());
    let float = |v: Option<f64>| v.map(|v| v.to_string());
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        float(process.cpu_seconds),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        text(process.resident_bytes),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        text(process.virtual_bytes),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        text(process.open_fds),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        text(process.max_fds),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        float(process.start_time_seconds),
    );
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

impl Stat {
    /// The line's fields after the command name (which may hold spaces and parentheses: it
    /// ends at the last `)`); `state` is field 3, `utime` 14, `stime` 15, `starttime` 22.
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
        })
    }
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `kB` line of `/proc/self/status` (`VmRSS:   2132 kB`), in bytes.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    let value = text.lines().find_map(|l| l.strip_prefix(key))?;
    let kib: u64 = value.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_follow_the_last_parenthesis() {
        let line = "26983 (a (b) c) R 26936 26936 24983 0 -1 4194304 100 0 0 0 250 37 0 0 20 0 \
                    1 0 4437931 3133440 412 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 250,
                stime: 37,
                starttime: 4437931
            })
        );
        assert_eq!(Stat::parse("1 (x) R 2 3"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\tx\nVmSize:\t    3892 kB\nVmRSS:\t    2132 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2132 * 1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(3892 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                524288               files\n";
        assert_eq!(max_open_files(limits), Some(20000));
        assert_eq!(
            max_open_files("Max open files            unlimited            unlimited  files"),
            None
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1796249911\nprocesses 9\n"),
            Some(1796249911)
        );
    }

    #[test]
    fn renders_each_reading_with_help_and_type() {
        let mut out = String::new();
        render(
            &Process {
                cpu_seconds: Some(2.87),
                resident_bytes: Some(2183168),
                open_fds: Some(12),
                ..Process::default()
            },
            &mut out,
        );
        assert!(out.contains(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2.87\n"
        ));
        assert!(out.contains(
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 2183168\n"
        ));
        assert!(out.contains("process_open_fds 12\n"));
        assert!(!out.contains("process_max_fds"), "left out when unread");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(p.resident_bytes.is_some_and(|b| b > 0));
        assert!(p.open_fds.is_some_and(|n| n >= 3));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start}"
        );
    }
}
