//! Which lastcall binary the black-box tests start, and through what.
//!
//! By default the binary cargo built for this test run. Two environment
//! variables point the same tests at another build, such as a release
//! artifact for another architecture (scripts/check-release):
//!
//! - `LASTCALL_TEST_BIN`: the lastcall binary to test instead;
//! - `LASTCALL_TEST_RUNNER`: a program that runs it, with its arguments
//!   separated by spaces, e.g. `qemu-aarch64-static`. Called explicitly, so
//!   no binfmt_misc registration is needed.
//!
//! Under qemu's user mode only the PID-namespace (`pid1`) variants can run:
//! qemu rejects PR_SET_CHILD_SUBREAPER, which the `subreaper` variants need.
//! The testapp fixture is always the host build (`support::testapp`); lastcall
//! execs it as a host program, so only lastcall itself is emulated.

use std::ffi::OsString;
use std::path::PathBuf;

/// argv prefix that starts lastcall: `[runner args..., binary]`.
pub fn argv() -> Vec<OsString> {
    let bin = match std::env::var_os("LASTCALL_TEST_BIN") {
        Some(path) if !path.is_empty() => {
            // cargo runs tests from the package root: a relative path is
            // taken from there, and made absolute because the harness may
            // start lastcall from another directory.
            let path = PathBuf::from(path);
            std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("LASTCALL_TEST_BIN={}: {e}", path.display()))
        }
        _ => super::lastcall(),
    };
    let mut argv: Vec<OsString> = match std::env::var("LASTCALL_TEST_RUNNER") {
        Ok(runner) => runner.split_whitespace().map(OsString::from).collect(),
        Err(_) => Vec::new(),
    };
    argv.push(bin.into_os_string());
    argv
}
