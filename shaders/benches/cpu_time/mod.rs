//! The process's CPU time, shared by the benches: what a run cost the machine, beside
//! what it took on the wall clock.

/// CPU seconds this process has used (all threads: llvmpipe's workers included), from
/// each thread's /proc/self/task/*/schedstat (nanoseconds on the CPU; the utime of
/// /proc/self/stat counts 100 Hz ticks, too coarse for short runs), falling back to
/// /proc/self/stat. On a shared machine this, not the wall clock, says what a kernel costs.
pub fn cpu_seconds() -> f64 {
    let from_tasks = std::fs::read_dir("/proc/self/task").ok().map(|tasks| {
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .sum::<f64>()
            / 1e9
    });
    if let Some(s) = from_tasks.filter(|&s| s > 0.0) {
        return s;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of the stat line are utime and stime; `after` starts at field 3.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}
