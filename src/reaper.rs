//! Reaping, subreaping, and finding the processes left behind.
//!
//! `reap` collects every exited child with `waitpid(-1, WNOHANG)` until
//! nothing is left to collect, every time it is called: one SIGCHLD may
//! stand for many exits, and orphans reparented to us are children too.
//! It hands on the raw wait status (`exit_status.rs` maps it) and allocates
//! nothing, so reaping thousands of orphans costs one system call each.

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
        // Raw libc: nix's waitpid decodes the status into a WaitStatus, which
        // fails (EINVAL) for a death by a real-time signal after the child
        // is reaped, losing the status the exit code is made from.
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
    nix::sys::prctl::set_child_subreaper(true)
}

/// Every process in /proc, with its parent's pid (field 4 of
/// /proc/PID/stat, after the parenthesised command name, which may itself
/// contain spaces or ')').
fn processes() -> Vec<(Pid, Option<i32>)> {
    let Ok(dir) = fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(|pid| {
            let ppid = fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(1)?.parse::<i32>().ok()
            });
            (Pid::from_raw(pid), ppid)
        })
        .collect()
}

/// The processes lastcall still answers for, other than itself: as PID 1
/// every process in the namespace, otherwise its direct children
/// (descendants are reparented to it as their parents die).
pub fn leftovers(is_pid1: bool) -> Vec<Pid> {
    let me = nix::unistd::getpid();
    processes().into_iter().filter(|&(pid, ppid)| if is_pid1 { pid != me } else { ppid == Some(me.as_raw()) }).map(|(pid, _)| pid).collect()
}

/// Signal every process lastcall answers for (see `leftovers`): as PID 1
/// with one kill(-1), otherwise the main child's process group; then each
/// process left, one by one. That second pass finds the processes that
/// could not be signalled: kill(-1) reports success even when every target
/// refused with EPERM (kernel/signal.c, kill_something_info). Fails with
/// EPERM then; ESRCH (already gone) is not a failure.
pub fn signal_all(sig: Signal, is_pid1: bool, main_pgid: Pid) -> Result<(), Errno> {
    let kill = |pid: i32| {
        // nix's kill takes Option<nix::Signal>, which lacks real-time signals.
        // SAFETY: kill(2) has no memory-safety preconditions.
        match unsafe { libc::kill(pid, sig.0) } {
            0 => Ok(()),
            _ if Errno::last() == Errno::ESRCH => Ok(()),
            _ => Err(Errno::last()),
        }
    };
    // The broad kill first: it needs no /proc walk.
    let mut result = kill(if is_pid1 { -1 } else { -main_pgid.as_raw() });
    for pid in leftovers(is_pid1) {
        result = result.and(kill(pid.as_raw()));
    }
    result
}
