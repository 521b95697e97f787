//! CPU time and resident memory of a process, from Linux's `/proc` (mixer processes in
//! `/metrics`). The parsing is pure; `of(pid)` reads the files.

/// What `/proc/{pid}` says about one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStats {
    /// User + system CPU time so far, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/*/stat` times: 100 on every Linux this runs on
/// (`getconf CLK_TCK`; the kernel's USER_HZ is fixed at 100 on x86 and arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `/proc/{pid}/stat` and `/proc/{pid}/statm`; `None` if the process is gone.
pub fn of(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    parse(&stat, &statm, page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// `stat`: fields after the command name (which may hold spaces and parentheses, so it is
/// skipped up to its last `)`); utime and stime are fields 14 and 15. `statm`: the second
/// number is resident pages.
pub fn parse(stat: &str, statm: &str, page_size: u64) -> Option<ProcStats> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcStats {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        rss_bytes: resident_pages * page_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat = "4242 (costream (mix) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000000 2000 18446744073709551615";
        let stats = parse(stat, "5000 2000 300 10 0 900 0", 4096).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.rss_bytes, 2000 * 4096);
        assert!(parse("garbage", "1 2", 4096).is_none());
        assert!(parse("1 (x) S 1", "1 2", 4096).is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = of(std::process::id()).expect("our own /proc entry");
        assert!(me.rss_bytes > 1_000_000, "{me:?}");
        assert!(of(u32::MAX).is_none());
    }
}
