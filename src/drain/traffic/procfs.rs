//! The app's sockets, from /proc: its process tree (parent pids from
//! /proc/PID/stat, which works where CONFIG_PROC_CHILDREN and with it
//! /proc/PID/task/TID/children are missing) and the socket inodes its file
//! descriptors point to (`/proc/PID/fd/N -> socket:[INODE]`, proc(5)).

use std::collections::{HashMap, HashSet};
use std::io;

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
}
