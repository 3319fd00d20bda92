//! Build script: puts the git commit into `lastcall --version`
//! (`lastcall 0.1.0 (commit 354d3cb…)`), so a binary found on a node can be
//! traced to the source it was built from.
//!
//! Where the commit comes from, first match wins:
//! 1. `LASTCALL_COMMIT` in the environment (scripts/release sets it; a build
//!    from a source tarball, which has no `.git`, can set it by hand);
//! 2. `git rev-parse HEAD` when this package is the top of a git work tree,
//!    with `-dirty` when tracked files differ from that commit;
//! 3. `unknown`: no git, no `.git` (a tarball, a `docker build` whose
//!    context leaves `.git` out), or a package vendored inside some other
//!    repository, whose commit would be a lie.
//!
//! Nothing time-dependent goes in, so two builds of one commit stay identical.
//!
//! It also links the release binary without unwind tables
//! (build/no-unwind-tables.ld: 12 % of the file), where `panic = "abort"`
//! means nothing can unwind. Only the binary, only in the release profile
//! (test binaries unwind to report a failed test), and only on x86_64, whose
//! release binary is static-pie: a static non-PIE link (the aarch64 release)
//! starts with crtbeginT.o, which registers `.eh_frame` at start-up, so
//! discarding the section fails the link there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-env-changed=LASTCALL_COMMIT");
    // Emitting any rerun-if-changed turns off cargo's default (rerun when any
    // package file changes), so name what the dirty check depends on.
    for path in ["build.rs", "Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = match std::env::var("LASTCALL_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => git_commit(&manifest_dir).unwrap_or_else(|| "unknown".to_string()),
    };
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    println!("cargo:rustc-env=LASTCALL_VERSION={version} (commit {commit})");

    // The release profile is the one with panic = "abort" (Cargo.toml);
    // CARGO_CFG_PANIC does not see profile settings.
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "x86_64");
    if release && linux && x86_64 {
        let script = manifest_dir.join("build/no-unwind-tables.ld");
        println!("cargo:rerun-if-changed=build/no-unwind-tables.ld");
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}

/// The commit of the work tree at `dir`, if `dir` is its top level.
fn git_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    // Rebuild when HEAD moves: HEAD itself (branch switch, detached
    // checkout), the ref it points to (a commit), and the index (staging,
    // which the dirty check reads). In a linked worktree HEAD and the index
    // live in the worktree's git dir, the refs in the common dir.
    let git_dir = PathBuf::from(git(dir, &["rev-parse", "--absolute-git-dir"])?);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!("cargo:rerun-if-changed={}", git_dir.join("index").display());
    let reference = git(dir, &["symbolic-ref", "-q", "HEAD"]);
    let common = git(dir, &["rev-parse", "--path-format=absolute", "--git-common-dir"]).map(PathBuf::from);
    if let (Some(reference), Some(common)) = (reference, common) {
        let loose = common.join(&reference);
        // A packed ref has no file of its own; packed-refs changes with it.
        let watched = if loose.exists() { loose } else { common.join("packed-refs") };
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let head = git(dir, &["rev-parse", "HEAD"])?;
    let dirty = git(dir, &["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// `git -C dir args...`'s trimmed stdout, or None when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
