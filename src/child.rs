//! Starting the app and signalling it.
//!
//! The app is started with fork(2) and execve(2) by hand, which is smaller
//! than `std::process::Command` and lets the child do exactly what an init
//! owes it. Three rules make that sound, and are worth keeping:
//!
//! * **Everything is allocated before the fork.** lastcall may have threads
//!   (a drain thread), and after fork only async-signal-safe calls are
//!   allowed in the child: the argv C strings, the `PATH` candidates
//!   (execvp(3) would allocate) and the working directory's descriptor are
//!   all prepared first, and `exec_child` only makes system calls on them.
//! * **exec reports its failure through a pipe.** The child writes its
//!   errno to a close-on-exec pipe and `_exit`s; end of file without bytes
//!   means exec succeeded. So `spawn` returns either a running app or the
//!   real reason it could not start, mapped to the shell's 127 (not found)
//!   and 126 (not executable).
//! * **Signals are reset with the raw rt_sigaction(2) syscall.** Before exec
//!   the child sets every disposition to its default and unblocks all
//!   signals, so it starts as if no init were there, whatever lastcall
//!   inherited. glibc's sigaction(3) refuses signals 32 and 33 (its own),
//!   yet an ignored 32/33 is inherited across exec too, so the kernel call
//!   is made directly.
//!
//! The child always gets its own process group (as with tini), so that
//! `--process-group` can signal the app and everything it started with one
//! kill(2), and so that a terminal's foreground can be handed to it: with a
//! TTY on stdin the child becomes the foreground process group, and Ctrl-C
//! and Ctrl-Z reach it straight from the terminal driver, as in a shell
//! (tini's `isolate_child`).

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

/// Start `argv` as the app. The command is looked up in `PATH` here, before
/// fork (execvp(3) is not async-signal-safe: it allocates): the child only
/// tries the candidates with execve(2), in order, as execvp would.
///
/// The app starts in lastcall's working directory, while lastcall itself
/// moves to `/` before the fork (like catatonit: PID 1 pins no mount): the
/// child returns to the directory through a descriptor opened first, so
/// the app never sees lastcall anywhere but in `/`.
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
    let candidates = candidates(&cmd, std::env::var_os("PATH").as_deref());
    let mut c_paths: Vec<*const libc::c_char> = candidates.iter().map(|c| c.as_ptr()).collect();
    c_paths.push(std::ptr::null());
    let stdin_is_tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let max_sig = libc::SIGRTMAX();
    // exec reports failure through this close-on-exec pipe: EOF means exec worked.
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| other(e.into()))?;
    // Relative commands and PATH entries were resolved against this
    // directory too, so the child goes back to it before exec.
    let cwd = nix::fcntl::open(".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).ok();
    if cwd.is_some() {
        let _ = std::env::set_current_dir("/");
    }
    let cwd_fd = cwd.as_ref().map_or(-1, |fd| fd.as_raw_fd());

    // SAFETY: fork(2) in a process that may have other threads; the child
    // below only calls async-signal-safe functions (setpgid, tcsetpgrp,
    // rt_sigaction, sigprocmask, fchdir, execve, write, _exit) on memory
    // prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(other(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; in the child, until exec or _exit.
        unsafe { exec_child(&c_paths, &c_argv, stdin_is_tty, max_sig, cwd_fd, err_write.as_raw_fd()) }
    }
    drop(err_write);
    if cwd.is_none() {
        // The directory could not be opened (removed, no search permission):
        // the child kept it by inheritance; lastcall leaves it now.
        let _ = std::env::set_current_dir("/");
    }
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

/// The paths execve(2) is tried with, in order: the command itself when it
/// names a path (has a `/`), else each `PATH` directory joined with it
/// (an empty entry is the current directory; without `PATH`, the default
/// search path of glibc's execvp).
fn candidates(cmd: &str, path: Option<&std::ffi::OsStr>) -> Vec<CString> {
    use std::os::unix::ffi::OsStrExt;
    if cmd.contains('/') || cmd.is_empty() {
        return CString::new(cmd).into_iter().collect();
    }
    let path = path.map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
    path.split(|&b| b == b':')
        .filter_map(|dir| {
            let mut full = if dir.is_empty() { b".".to_vec() } else { dir.to_vec() };
            full.push(b'/');
            full.extend_from_slice(cmd.as_bytes());
            CString::new(full).ok()
        })
        .collect()
}

/// The child's side of `spawn`, between fork and exec.
///
/// # Safety
/// Only to be called in a freshly forked child; `paths` and `argv` are
/// NULL-terminated arrays of C strings.
unsafe fn exec_child(
    paths: &[*const libc::c_char],
    argv: &[*const libc::c_char],
    stdin_is_tty: bool,
    max_sig: i32,
    cwd: i32,
    err_fd: i32,
) -> ! {
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
    if cwd >= 0 {
        libc::fchdir(cwd);
    }
    // As execvp(3): the first candidate that execs wins; EACCES from one is
    // remembered (a later ENOENT does not hide it); other errors stop.
    let mut errno = libc::ENOENT;
    let mut i = 0;
    while !paths[i].is_null() {
        libc::execve(paths[i], argv.as_ptr(), environ);
        match *libc::__errno_location() {
            libc::EACCES => errno = libc::EACCES,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            e => {
                errno = e;
                break;
            }
        }
        i += 1;
    }
    libc::write(err_fd, (&errno as *const i32).cast(), 4);
    libc::_exit(127)
}

extern "C" {
    /// The process environment (environ(7)), passed on to the app as is.
    static environ: *const *const libc::c_char;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(c: Vec<CString>) -> Vec<String> {
        c.into_iter().map(|c| c.into_string().unwrap()).collect()
    }

    #[test]
    fn candidates_follow_execvp() {
        assert_eq!(strs(candidates("/bin/app", Some("/usr/bin".as_ref()))), ["/bin/app"]);
        assert_eq!(strs(candidates("./app", None)), ["./app"]);
        assert_eq!(strs(candidates("app", Some("/a:/b".as_ref()))), ["/a/app", "/b/app"]);
        assert_eq!(strs(candidates("app", Some("/a::".as_ref()))), ["/a/app", "./app", "./app"]);
        assert_eq!(strs(candidates("app", None)), ["/bin/app", "/usr/bin/app"]);
    }
}
