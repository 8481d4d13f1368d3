//! System information attached to events that report failures: hostname, OS
//! release, kernel, free space on the state dir, host and agent uptime.

use std::path::Path;

use serde_json::{json, Map, Value};

/// Collects what can be read; a field that cannot be read is left out.
pub fn collect(state_dir: &Path) -> Map<String, Value> {
    let mut m = Map::new();
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if let Some(h) = read("/proc/sys/kernel/hostname") {
        m.insert("hostname".into(), json!(h));
    }
    if let Some(os) = read("/etc/os-release").and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_owned())
        })
    }) {
        m.insert("os".into(), json!(os));
    }
    if let Some(k) = read("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), json!(k));
    }
    if let Some(free) = free_bytes(state_dir) {
        m.insert("state_dir_free_bytes".into(), json!(free));
    }
    let host_up =
        read("/proc/uptime").and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok());
    if let Some(up) = host_up {
        m.insert("host_uptime_s".into(), json!(up as u64));
    }
    // The agent process's age: /proc/self/stat field 22 is its start, in
    // clock ticks after boot.
    let started = read("/proc/self/stat").and_then(|t| {
        let after_comm = &t[t.rfind(')')? + 2..];
        after_comm.split_whitespace().nth(19)?.parse::<f64>().ok()
    });
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if let (Some(up), Some(start)) = (host_up, started) {
        if ticks > 0.0 {
            m.insert(
                "agent_uptime_ms".into(),
                json!(((up - start / ticks) * 1000.0).max(0.0) as u64),
            );
        }
    }
    m.insert("arch".into(), json!(std::env::consts::ARCH));
    m.insert("target".into(), json!(crate::version::TARGET));
    m
}

/// Free bytes available to unprivileged users on the file system of `path`
/// (or its nearest existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn collects_the_basics() {
        let dir = tempfile::tempdir().unwrap();
        let m = super::collect(&dir.path().join("not/yet"));
        assert!(m["state_dir_free_bytes"].as_u64().unwrap() > 0);
        assert!(m.contains_key("kernel"));
        assert!(m.contains_key("hostname"));
        assert!(m["agent_uptime_ms"].as_u64().is_some());
    }
}
