//! How a child's wait status becomes lastcall's exit code.
//!
//! | child                     | lastcall exits |
//! |---------------------------|----------------|
//! | exit(N)                   | N              |
//! | killed by signal N        | 128 + N        |
//! | code listed in --remap-exit | 0            |
//!
//! This is the shell's convention, and tini's, dumb-init's and catatonit's.

use std::collections::BTreeSet;

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
