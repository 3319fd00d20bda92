//! The app's sockets, from /proc: its process tree (parent pids from
//! /proc/PID/stat, which works where CONFIG_PROC_CHILDREN and with it
//! /proc/PID/task/TID/children are missing) and the socket inodes its file
//! descriptors point to (`/proc/PID/fd/N -> socket:[INODE]`, proc(5)); and
//! what tells whether lastcall's network namespace is the pod's own: the
//! namespace's inode, and the other processes that listen in it.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// `root` and every descendant visible in /proc, root first. Processes that
/// vanish while /proc is read are skipped.
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            if let Some(ppid) = parse_ppid(&stat) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        if let Some(kids) = children.get(&tree[i]) {
            tree.extend(kids.iter().filter(|k| !tree.contains(k)).copied().collect::<Vec<_>>());
        }
        i += 1;
    }
    tree
}

/// The ppid field of a /proc/PID/stat line: "PID (COMM) STATE PPID ...".
/// COMM may hold spaces and parentheses, so the fields after it start at the
/// last ')'.
fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The inode of a `socket:[INODE]` link target.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Socket inodes held open by the processes in `pids` (threads share their
/// process's descriptor table). Failing to read the first pid's fd
/// directory is an error (no permission: e.g. the app runs as another user
/// and lastcall lacks CAP_SYS_PTRACE); a descendant that exits meanwhile is
/// skipped.
pub fn socket_inodes(pids: &[i32]) -> io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for (i, pid) in pids.iter().enumerate() {
        let dir = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(d) => d,
            Err(e) if i == 0 => return Err(io::Error::new(e.kind(), format!("/proc/{pid}/fd: {e}"))),
            Err(_) => continue,
        };
        for entry in dir.flatten() {
            if let Some(inode) = std::fs::read_link(entry.path()).ok().as_ref().and_then(|t| t.to_str()).and_then(socket_inode) {
                inodes.insert(inode);
            }
        }
    }
    Ok(inodes)
}

/// Every pid visible in /proc.
pub fn visible_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

/// The visible processes that hold one of `listeners` (socket inodes), in
/// /proc's (ascending) order; processes whose descriptors cannot be read
/// are skipped.
pub fn listener_holders(listeners: &HashSet<u64>) -> Vec<i32> {
    if listeners.is_empty() {
        return Vec::new();
    }
    visible_pids()
        .into_iter()
        .filter(|&pid| socket_inodes(&[pid]).is_ok_and(|inodes| inodes.iter().any(|i| listeners.contains(i))))
        .collect()
}

/// A process's command name, for the log.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_string()).unwrap_or_default()
}

/// Recent kernels give the initial namespaces fixed inode numbers below
/// PROC_DYNAMIC_FIRST (0xF0000000; include/linux/proc_ns.h), and every
/// other namespace one above it; the initial PID namespace has had its
/// fixed number (PROC_PID_INIT_INO) since Linux 3.8.
const PROC_DYNAMIC_FIRST: u64 = 0xF000_0000;
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// Is lastcall's network namespace the host's (the initial one)? True when
/// the kernel says so by the inode number, or, on kernels that number
/// every namespace dynamically, when lastcall runs in the initial PID
/// namespace and shares PID 1's network namespace. False otherwise, which
/// includes "cannot tell" (a container on an older kernel).
pub fn in_host_netns() -> bool {
    let ino = |path: &str| std::fs::metadata(path).map(|m| m.ino()).ok();
    let Some(net) = ino("/proc/self/ns/net") else { return false };
    if net < PROC_DYNAMIC_FIRST {
        return true;
    }
    ino("/proc/self/ns/pid") == Some(PROC_PID_INIT_INO) && ino("/proc/1/ns/net") == Some(net)
}

/// How long PID 1 of lastcall's PID namespace has been running: the start
/// of the pod's history when lastcall did not see the start itself
/// (`lastcall drain` without a lastcall PID 1).
pub fn pid1_age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/1/stat").ok()?;
    // Field 22, starttime, in clock ticks since boot; field 3 is the first after ")".
    let start: u64 = stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()?;
    let uptime = uptime_ms(&std::fs::read_to_string("/proc/uptime").ok()?)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    uptime.checked_sub(start * 1000 / hz).map(Duration::from_millis)
}

/// The first field of /proc/uptime ("12345.67 ..."), in milliseconds. Parsed
/// by hand: `f64::from_str` would link 16 KB of float parsing tables.
fn uptime_ms(text: &str) -> Option<u64> {
    let field = text.split_whitespace().next()?;
    let (secs, frac) = field.split_once('.').unwrap_or((field, "0"));
    let frac: String = frac.chars().chain("000".chars()).take(3).collect();
    Some(secs.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_after_an_awkward_comm() {
        assert_eq!(parse_ppid("42 (web) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_ppid("42 (a) b) (c) R 1 42"), Some(1));
        assert_eq!(parse_ppid("42 (x) S"), None);
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[398264]"), Some(398264));
        assert_eq!(socket_inode("pipe:[398264]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[]"), None);
    }

    #[test]
    fn own_tree_and_sockets() {
        let me = std::process::id() as i32;
        assert_eq!(process_tree(me)[0], me);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inodes = socket_inodes(&[me]).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&listener))).unwrap();
        assert!(inodes.contains(&socket_inode(link.to_str().unwrap()).unwrap()));
        assert!(socket_inodes(&[i32::MAX]).is_err());
    }

    #[test]
    fn holders_of_a_listener() {
        let me = std::process::id() as i32;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&listener))).unwrap();
        let inode = socket_inode(link.to_str().unwrap()).unwrap();
        let held = listener_holders(&HashSet::from([inode]));
        assert!(held.contains(&me), "{held:?}");
        assert!(!comm(me).is_empty());
    }

    #[test]
    fn uptime() {
        assert_eq!(uptime_ms("12345.67 54321.00\n"), Some(12_345_670));
        assert_eq!(uptime_ms("5.1 2.0"), Some(5_100));
        assert_eq!(uptime_ms("7 1"), Some(7_000));
        assert_eq!(uptime_ms("x.5 1"), None);
        assert_eq!(uptime_ms(""), None);
    }

    #[test]
    fn pid1_has_an_age() {
        assert!(pid1_age().is_some_and(|a| a > Duration::ZERO));
    }
}
