//! lastcall's exit status: the child's wait status, or why lastcall could
//! not run the child at all.
//!
//! | what happened                         | lastcall exits |
//! |---------------------------------------|----------------|
//! | the child exit(N)                     | N              |
//! | the child was killed by signal N      | 128 + N        |
//! | the child's code is in --remap-exit   | 0              |
//! | bad usage or settings                 | 2              |
//! | a SIGKILL at the deadline was refused | 137            |
//! | the command is not executable         | 126            |
//! | the command is not found              | 127            |
//! | lastcall failed before the child ran  | 125            |
//! | `--strict` found a strategy unusable  | 78             |
//!
//! The first three are the shell's convention, and tini's, dumb-init's and
//! catatonit's; 125-127 are Docker's and the shell's.

use std::collections::BTreeSet;

use crate::child::SpawnError;
use crate::drain::PreflightError;

/// Bad usage or settings (clap's convention).
pub const EXIT_USAGE: i32 = 2;
/// lastcall failed before the child ran (Docker's convention for the runtime).
pub const EXIT_SETUP: i32 = 125;
/// `--strict` found a drain strategy unusable (sysexits' EX_CONFIG).
pub const EXIT_PREFLIGHT: i32 = 78;

/// Why lastcall could not run the app at all.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("{what}: {source}")]
    Setup { what: &'static str, source: std::io::Error },
    /// The sidecar's `--listen` address.
    #[cfg(feature = "sidecar")]
    #[error("cannot listen on {addr} (--listen): {source}")]
    Listen { addr: String, source: std::io::Error },
    /// `--strict` and a drain strategy cannot work here.
    #[error("{0} (exiting because of --strict)")]
    Preflight(#[from] PreflightError),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Spawn(e) => e.exit_code(),
            Failure::Setup { .. } => EXIT_SETUP,
            #[cfg(feature = "sidecar")]
            Failure::Listen { .. } => EXIT_SETUP,
            Failure::Preflight(_) => EXIT_PREFLIGHT,
        }
    }
}

/// How the main child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signaled(i32),
}

impl ChildExit {
    pub fn from_wait(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            ChildExit::Signaled(libc::WTERMSIG(status))
        } else {
            ChildExit::Code(libc::WEXITSTATUS(status))
        }
    }

    pub fn raw_code(self) -> i32 {
        match self {
            ChildExit::Code(c) => c,
            ChildExit::Signaled(s) => 128 + s,
        }
    }
}

/// Child codes that count as success (tini `-e`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remap(BTreeSet<i32>);

impl Remap {
    pub fn parse(codes: &[String]) -> Result<Self, BadExitCode> {
        codes.iter().map(|c| c.trim().parse::<u8>().map(i32::from).map_err(|_| BadExitCode(c.clone()))).collect::<Result<_, _>>().map(Remap)
    }

    pub fn exit_code(&self, exit: ChildExit) -> i32 {
        let code = exit.raw_code();
        if self.0.contains(&code) {
            0
        } else {
            code
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid exit code {0:?}: expected 0-255")]
pub struct BadExitCode(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let none = Remap::default();
        let remap = Remap::parse(&["143".into(), "3".into()]).unwrap();
        let cases = [
            (ChildExit::Code(0), 0, 0),
            (ChildExit::Code(3), 3, 0),
            (ChildExit::Code(255), 255, 255),
            (ChildExit::Signaled(libc::SIGTERM), 143, 0),
            (ChildExit::Signaled(libc::SIGKILL), 137, 137),
            (ChildExit::Code(143), 143, 0),
        ];
        for (exit, plain, remapped) in cases {
            assert_eq!(none.exit_code(exit), plain, "{exit:?}");
            assert_eq!(remap.exit_code(exit), remapped, "{exit:?}");
        }
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(ChildExit::from_wait(3 << 8), ChildExit::Code(3));
        assert_eq!(ChildExit::from_wait(libc::SIGTERM), ChildExit::Signaled(libc::SIGTERM));
    }

    #[test]
    fn rejects_out_of_range() {
        for bad in ["256", "-1", "x"] {
            assert!(Remap::parse(&[bad.into()]).is_err());
        }
    }
}
