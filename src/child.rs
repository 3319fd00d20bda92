//! Starting the app and signalling it.
//!
//! The child always gets its own process group (as with tini), so that
//! `--process-group` can signal the app and everything it started with one
//! kill(2), and so that a terminal's foreground can be handed to it: with a
//! TTY on stdin the child becomes the foreground process group, and Ctrl-C
//! and Ctrl-Z reach it straight from the terminal driver, as in a shell
//! (tini's `isolate_child`). Before exec the child resets every signal
//! disposition to its default and unblocks all signals, so it starts as if
//! no init were there, whatever lastcall itself inherited.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::signals::Signal;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{cmd}: command not found")]
    NotFound { cmd: String },
    #[error("{cmd}: permission denied or not executable: {source}")]
    NotExecutable { cmd: String, source: io::Error },
    #[error("{cmd}: cannot start: {source}")]
    Other { cmd: String, source: io::Error },
}

impl SpawnError {
    /// The shell's and Docker's convention: 127 not found, 126 cannot execute.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            _ => 126,
        }
    }
}

/// The kernel's `struct sigaction` for rt_sigaction(2) on x86_64 (not
/// glibc's, which has a larger mask): handler, flags, restorer, 64-bit mask.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The main child.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub pid: Pid,
}

pub fn spawn(argv: &[String]) -> Result<Child, SpawnError> {
    let cmd = argv[0].clone();
    let stdin_is_tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let max_sig = libc::SIGRTMAX();
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (setpgid, sigaction via signal, tcsetpgrp,
    // sigprocmask); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if stdin_is_tty {
                // We are a background group until tcsetpgrp succeeds, so
                // SIGTTOU must not stop us while we take the terminal.
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
            }
            // The raw syscall, not sigaction(3): glibc refuses signals 32 and
            // 33 (its own), yet an ignored 32/33 is inherited across exec too.
            let default: KernelSigaction = std::mem::zeroed(); // SIG_DFL, no flags
            for sig in 1..=max_sig {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, sig, &default, std::ptr::null_mut::<KernelSigaction>(), 8usize);
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    match command.spawn() {
        // Dropping std's handle neither waits nor kills: the reaper owns it.
        Ok(child) => Ok(Child { pid: Pid::from_raw(child.id() as i32) }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpawnError::NotFound { cmd }),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::ENOEXEC) => {
            Err(SpawnError::NotExecutable { cmd, source: e })
        }
        Err(e) => Err(SpawnError::Other { cmd, source: e }),
    }
}

/// Send `sig` to the child, or to its process group. ESRCH (already gone)
/// is not an error worth more than a debug line.
pub fn signal(child: Child, sig: Signal, group: bool) -> Result<(), Errno> {
    let target = if group { Pid::from_raw(-child.pid.as_raw()) } else { child.pid };
    // nix's kill takes Option<nix::Signal>, which lacks real-time signals.
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(target.as_raw(), sig.0) };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// SIGKILL the child's process group (covers the child and what it started
/// without leaving the group).
pub fn kill_group(child: Child) {
    let _ = kill(Pid::from_raw(-child.pid.as_raw()), nix::sys::signal::Signal::SIGKILL);
}
