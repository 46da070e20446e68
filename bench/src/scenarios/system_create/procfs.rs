//! CPU time per process from `/proc`: `utime + stime` of `/proc/<pid>/stat` (all threads of
//! the process), and the machine's busy time from the `cpu` line of `/proc/stat`. Both are in
//! clock ticks of `USER_HZ`, 100 per second on Linux (x86-64 and arm64).

use std::collections::BTreeMap;
use std::time::Duration;

/// `USER_HZ`: the unit of every CPU time in `/proc`.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of every process's CPU time.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    /// pid → (command name, utime + stime in ticks).
    pub processes: BTreeMap<u32, (String, u64)>,
    /// Busy ticks of all CPUs together (everything but idle and iowait).
    pub machine_busy: u64,
}

impl CpuSample {
    /// Read `/proc` now. Processes that vanish while being read are skipped.
    pub fn read() -> Self {
        let mut sample = Self::default();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some(parsed) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .as_deref()
                    .and_then(parse_pid_stat)
                {
                    sample.processes.insert(pid, parsed);
                }
            }
        }
        sample.machine_busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_machine_busy)
            .unwrap_or(0);
        sample
    }
}

/// `(comm, utime + stime)` from the text of `/proc/<pid>/stat`.
pub fn parse_pid_stat(text: &str) -> Option<(String, u64)> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so cut at the last `)`.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); after the comm, field 3 (state) is index 0.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Busy ticks from the aggregate `cpu` line of `/proc/stat`: user + nice + system + irq +
/// softirq + steal (guest time is already inside user and nice).
pub fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|value| value.parse().ok())
        .collect::<Option<_>>()?;
    let at = |index: usize| values.get(index).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// CPU per group between two samples over `window`, in percent of one core. `group` names the
/// group of a process (or `None` to leave it out). A process that started during the window
/// counts with all its time; one that ended during it is lost (its time cannot be read).
/// Adds `machine` (all busy time) and `other` (machine minus the groups).
pub fn cpu_percent(
    start: &CpuSample,
    end: &CpuSample,
    window: Duration,
    group: impl Fn(u32, &str) -> Option<String>,
) -> BTreeMap<String, f64> {
    let seconds = window.as_secs_f64();
    let percent = |ticks: u64| {
        if seconds > 0.0 {
            ticks as f64 / TICKS_PER_SECOND / seconds * 100.0
        } else {
            0.0
        }
    };
    let mut ticks: BTreeMap<String, u64> = BTreeMap::new();
    for (pid, (comm, end_ticks)) in &end.processes {
        let Some(name) = group(*pid, comm) else {
            continue;
        };
        let start_ticks = start
            .processes
            .get(pid)
            .filter(|(start_comm, _)| start_comm == comm)
            .map_or(0, |(_, ticks)| *ticks);
        *ticks.entry(name).or_default() += end_ticks.saturating_sub(start_ticks);
    }
    let listed: u64 = ticks.values().sum();
    let machine = end.machine_busy.saturating_sub(start.machine_busy);
    let mut out: BTreeMap<String, f64> = ticks
        .into_iter()
        .map(|(name, ticks)| (name, percent(ticks)))
        .collect();
    out.insert("machine".to_owned(), percent(machine));
    out.insert("other".to_owned(), percent(machine.saturating_sub(listed)));
    out
}

/// `/proc/loadavg`'s first three fields (1, 5, 15 minutes).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_comm_has_spaces_and_parentheses() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_pid_stat(line), Some(("tokio (rt) x".to_owned(), 325)));
        assert_eq!(parse_pid_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let text = "cpu  100 5 50 9000 40 3 2 1 7 0\ncpu0 50 2 25 4500 20 1 1 0 3 0\n";
        assert_eq!(parse_machine_busy(text), Some(100 + 5 + 50 + 3 + 2 + 1));
    }

    #[test]
    fn percent_per_group_with_machine_and_other() {
        let start = CpuSample {
            processes: BTreeMap::from([
                (1, ("postgres".to_owned(), 100)),
                (2, ("postgres".to_owned(), 50)),
                (3, ("api".to_owned(), 10)),
            ]),
            machine_busy: 1_000,
        };
        let end = CpuSample {
            processes: BTreeMap::from([
                (1, ("postgres".to_owned(), 200)),
                (2, ("postgres".to_owned(), 100)),
                (3, ("api".to_owned(), 60)),
                // Started during the window: all of its time counts.
                (4, ("postgres".to_owned(), 50)),
            ]),
            machine_busy: 1_400,
        };
        let shares = cpu_percent(&start, &end, Duration::from_secs(2), |_, comm| {
            Some(comm.to_owned())
        });
        assert_eq!(shares.get("postgres"), Some(&100.0)); // 200 ticks over 2 s
        assert_eq!(shares.get("api"), Some(&25.0));
        assert_eq!(shares.get("machine"), Some(&200.0));
        assert_eq!(shares.get("other"), Some(&75.0));
    }
}
