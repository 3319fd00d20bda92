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

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
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
    let other = |source| SpawnError::Other { cmd: cmd.clone(), source };
    // Everything that allocates happens before fork: the child may only
    // make async-signal-safe calls.
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| other(io::Error::new(io::ErrorKind::InvalidInput, "an argument contains a NUL byte")))?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());
    let stdin_is_tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let max_sig = libc::SIGRTMAX();
    // exec reports failure through this close-on-exec pipe: EOF means exec worked.
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| other(e.into()))?;

    // SAFETY: fork(2) in a process that may have other threads; the child
    // below only calls async-signal-safe functions (setpgid, signal via
    // rt_sigaction, tcsetpgrp, sigprocmask, execvp, write, _exit) on memory
    // prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(other(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; in the child, until exec or _exit.
        unsafe { exec_child(&c_argv, stdin_is_tty, max_sig, err_write.as_raw_fd()) }
    }
    drop(err_write);
    let mut errno = [0u8; 4];
    let mut got = 0;
    let mut pipe = std::fs::File::from(err_read);
    while got < 4 {
        match pipe.read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got < 4 {
        return Ok(Child { pid: Pid::from_raw(pid) });
    }
    // exec failed: collect the child, which has already _exit()ed.
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
    let e = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
    Err(match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => SpawnError::NotFound { cmd },
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => SpawnError::NotExecutable { cmd, source: e },
        _ => SpawnError::Other { cmd, source: e },
    })
}

/// The child's side of `spawn`, between fork and exec.
///
/// # Safety
/// Only to be called in a freshly forked child; `argv` is NULL-terminated.
unsafe fn exec_child(argv: &[*const libc::c_char], stdin_is_tty: bool, max_sig: i32, err_fd: i32) -> ! {
    if libc::setpgid(0, 0) == 0 && stdin_is_tty {
        // We are a background group until tcsetpgrp succeeds, so SIGTTOU
        // must not stop us while we take the terminal.
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
    }
    // The raw syscall, not sigaction(3): glibc refuses signals 32 and 33
    // (its own), yet an ignored 32/33 is inherited across exec too.
    let default: KernelSigaction = std::mem::zeroed(); // SIG_DFL, no flags
    for sig in 1..=max_sig {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(libc::SYS_rt_sigaction, sig, &default, std::ptr::null_mut::<KernelSigaction>(), 8usize);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::execvp(argv[0], argv.as_ptr());
    let errno = *libc::__errno_location();
    libc::write(err_fd, (&errno as *const i32).cast(), 4);
    libc::_exit(127)
}

/// Send `sig` to the child, or to its process group. ESRCH (already gone)
/// is not an error worth more than a debug line.
pub fn signal(child: Child, sig: Signal, group: bool) -> Result<(), Errno> {
    let target = if group { Pid::from_raw(-child.pid.as_raw()) } else { child.pid };
    // nix's kill takes Option<nix::Signal>, which lacks real-time signals.
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(target.as_raw(), sig.0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}
