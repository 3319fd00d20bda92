//! Reaping, subreaping, and finding the processes left behind.
//!
//! `reap` collects every exited child with `waitpid(-1, WNOHANG)` until
//! nothing is left to collect, every time it is called: one SIGCHLD may
//! stand for many exits, and orphans reparented to us are children too.

use std::fs;

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::signals::Signal;

/// Whether lastcall has any child left after reaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    Some,
    None,
}

/// Reap every exited child; `on_exit(pid, raw_status)` is called for each.
pub fn reap(mut on_exit: impl FnMut(Pid, i32)) -> Remaining {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return Remaining::Some,
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Remaining::None, // ECHILD: no children at all
            pid => on_exit(Pid::from_raw(pid), status),
        }
    }
}

/// Make lastcall the reaper of its orphaned descendants when it is not PID 1
/// (prctl(2) PR_SET_CHILD_SUBREAPER).
pub fn become_subreaper() -> Result<(), Errno> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Direct children of `parent`, from /proc/*/stat (field 4, after the
/// parenthesised command name, which may itself contain spaces or ')').
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(dir) = fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(1)?.parse::<i32>().ok()
            }) == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// Signal every process lastcall is responsible for except itself: as PID 1
/// that is the whole PID namespace (kill(-1)); otherwise its direct children
/// (descendants are reparented to it as their parents die) plus the process
/// group of the main child. Returns how many processes were signalled.
pub fn signal_all(sig: Signal, is_pid1: bool, main_pgid: Pid) -> usize {
    // SAFETY (all kill calls below): kill(2) has no memory-safety preconditions.
    if is_pid1 {
        let n = fs::read_dir("/proc").map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))).count()).unwrap_or(0);
        unsafe { libc::kill(-1, sig.0) };
        return n.saturating_sub(1);
    }
    let children = children_of(nix::unistd::getpid());
    for pid in &children {
        unsafe { libc::kill(pid.as_raw(), sig.0) };
    }
    unsafe { libc::kill(-main_pgid.as_raw(), sig.0) };
    children.len()
}
