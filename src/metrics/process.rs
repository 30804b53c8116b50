//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_threads`,
//! `process_start_time_seconds`), read from `/proc/self` at scrape time. Linux only (elsewhere none are
//! shown). Written here because `prometheus-client` has no process collector and the crates that do are tied
//! to other metrics libraries; the reading is a few lines of `/proc` parsing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Kernel clock ticks per second in `/proc/<pid>/stat` (USER_HZ: 100 on every Linux architecture we build for).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub(super) struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    threads: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
}

impl Reading {
    fn now() -> Reading {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let mut r = Reading::default();
        if let Some(stat) = read("/proc/self/stat") {
            let boot_time = read("/proc/stat").and_then(|s| field_after(&s, "btime"));
            r.read_stat(&stat, boot_time);
        }
        if let Some(status) = read("/proc/self/status") {
            r.resident_bytes = field_after(&status, "VmRSS:").map(|kb| kb * 1024);
            r.virtual_bytes = field_after(&status, "VmSize:").map(|kb| kb * 1024);
            r.threads = field_after(&status, "Threads:");
        }
        r.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
        r.max_fds = read("/proc/self/limits").and_then(|s| {
            s.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        });
        r
    }

    /// `/proc/self/stat`: after the `(comm)` field, utime and stime are fields 14 and 15, starttime is 22.
    fn read_stat(&mut self, stat: &str, boot_time: Option<i64>) {
        let Some((_, rest)) = stat.rsplit_once(')') else { return };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3 (state).
        let num = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (num(14), num(15)) {
            self.cpu_seconds = Some((user + system) / TICKS_PER_SECOND);
        }
        if let (Some(start), Some(boot)) = (num(22), boot_time) {
            self.start_time_seconds = Some(boot as f64 + start / TICKS_PER_SECOND);
        }
    }
}

/// The first number after `key` on the line that starts with it.
fn field_after(text: &str, key: &str) -> Option<i64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<N>) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let Some(v) = value else { return Ok(()) };
    let g = ConstGauge::new(v);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = Reading::now();
        if let Some(cpu) = r.cpu_seconds {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let e = &mut encoder;
        gauge(e, "process_resident_memory_bytes", "Resident memory size in bytes", r.resident_bytes)?;
        gauge(e, "process_virtual_memory_bytes", "Virtual memory size in bytes", r.virtual_bytes)?;
        gauge(e, "process_open_fds", "Number of open file descriptors", r.open_fds)?;
        gauge(e, "process_max_fds", "Maximum number of open file descriptors", r.max_fds)?;
        gauge(e, "process_threads", "Number of OS threads in the process", r.threads)?;
        gauge(e, "process_start_time_seconds", "Start time of the process since the Unix epoch", r.start_time_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_name_with_spaces_and_parens() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123 45";
        let mut r = Reading::default();
        r.read_stat(stat, Some(1_700_000_000));
        assert_eq!(r.cpu_seconds, Some(3.0));
        assert_eq!(r.start_time_seconds, Some(1_700_000_010.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let r = Reading::now();
        assert!(r.resident_bytes.is_some_and(|b| b > 0));
        assert!(r.open_fds.is_some_and(|n| n > 0) && r.max_fds.is_some_and(|n| n > 0));
        assert!(r.cpu_seconds.is_some() && r.start_time_seconds.is_some_and(|t| t > 1.0e9));
        assert!(r.threads.is_some_and(|n| n >= 1));
    }
}
