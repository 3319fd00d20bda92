//! Private network namespaces and CPU-limited cgroups for the traffic
//! strategy's tests (tests/traffic.rs).
//!
//! [`NetNs`] is a fresh network namespace with `lo` up, held by a file
//! descriptor (no name under /run/netns, so nothing is left behind when a
//! test dies). A network namespace belongs to a thread in Linux:
//! [`NetNs::enter`] moves the test's thread into it, and whatever that
//! thread spawns afterwards (lastcall through `Run::spawn`, client threads
//! and their sockets) lives in the namespace. [`NetNs::with_uplink`] adds a veth pair to the test's own
//! namespace, for an app that must reach a server outside its pod.
//!
//! [`CpuLimit`] is a cgroup with a CFS bandwidth quota (cgroup v1
//! `cpu.cfs_quota_us`, or v2 `cpu.max`), into which a test moves processes
//! by pid.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of its own.
pub struct NetNs {
    fd: OwnedFd,
    /// With an uplink: the host side's and the namespace side's IPv4 address.
    pub host_ip: Option<String>,
    pub ns_ip: Option<String>,
    host_if: Option<String>,
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(out.status.success(), "{argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl NetNs {
    /// A new network namespace with only `lo`, up.
    pub fn new() -> NetNs {
        Self::create(false)
    }

    /// A new network namespace with `lo` and an `eth0` whose peer lives in
    /// the test's namespace, each end with an address of one /30.
    pub fn with_uplink() -> NetNs {
        Self::create(true)
    }

    fn create(uplink: bool) -> NetNs {
        // Unique across concurrent test processes (other worktrees run the
        // same tests): the pid and a per-process counter.
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = std::process::id() as usize * 8 + n % 8;
        let (host_if, host_ip, ns_ip) = if uplink {
            let net = id % (64 * 256);
            let (b, c) = (net / 64, (net % 64) * 4);
            (Some(format!("lct{}", id % 100_000_000)), Some(format!("10.160.{b}.{}", c + 1)), Some(format!("10.160.{b}.{}", c + 2)))
        } else {
            (None, None, None)
        };
        let (h, hi, ni) = (host_if.clone(), host_ip.clone(), ns_ip.clone());
        let fd = std::thread::spawn(move || {
            // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's
            // network namespace (allowed in a multi-threaded process).
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("unshare(CLONE_NEWNET): {} (the traffic tests need root)", std::io::Error::last_os_error());
            }
            // Commands spawned from this thread start in its namespace.
            run(&["ip", "link", "set", "lo", "up"]);
            if let (Some(h), Some(hi), Some(ni)) = (h, hi, ni) {
                // Made here, the pair's far end is moved out to the
                // namespace of PID 1 (the test's: it runs in the initial
                // PID namespace).
                run(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", &h]);
                run(&["ip", "link", "set", &h, "netns", "1"]);
                run(&["ip", "addr", "add", &format!("{ni}/30"), "dev", "eth0"]);
                run(&["ip", "link", "set", "eth0", "up"]);
                run(&["ip", "route", "add", "default", "via", &hi]);
            }
            OwnedFd::from(File::open("/proc/thread-self/ns/net").expect("open /proc/thread-self/ns/net"))
        })
        .join()
        .expect("creating a network namespace");
        if let (Some(h), Some(hi)) = (&host_if, &host_ip) {
            run(&["ip", "addr", "add", &format!("{hi}/30"), "dev", h]);
            run(&["ip", "link", "set", h, "up"]);
        }
        NetNs { fd, host_ip, ns_ip, host_if }
    }

    /// Moves the calling thread into the namespace, for good: what it
    /// spawns from then on (lastcall, client threads) starts there. A test
    /// calls this on its own thread (libtest runs each test on a thread of
    /// its own). lastcall must be spawned by a thread that outlives it:
    /// the harness sets PR_SET_PDEATHSIG, which fires when the spawning
    /// *thread* exits, so a short-lived helper thread would kill it.
    pub fn enter(&self) {
        // SAFETY: setns(2) on a valid namespace fd; it affects this thread only.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // The namespace goes away with its last user; the veth pair with it.
        // Deleting the host end now keeps a still-running process in the
        // namespace from holding the address.
        if let Some(h) = &self.host_if {
            let _ = Command::new("ip").args(["link", "del", h]).output();
        }
    }
}

/// A cgroup with a CPU bandwidth limit.
pub struct CpuLimit {
    dir: PathBuf,
}

impl CpuLimit {
    /// `quota_us` of CPU time per `period_us`; None when this machine has
    /// neither a cgroup v1 cpu controller at /sys/fs/cgroup/cpu nor a
    /// cgroup v2 hierarchy with the cpu controller enabled.
    pub fn new(quota_us: u64, period_us: u64) -> Option<CpuLimit> {
        let name = format!("lastcall-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").exists() {
            let dir = v1.join(&name);
            std::fs::create_dir(&dir).ok()?;
            let limit = CpuLimit { dir };
            std::fs::write(limit.dir.join("cpu.cfs_period_us"), period_us.to_string()).ok()?;
            std::fs::write(limit.dir.join("cpu.cfs_quota_us"), quota_us.to_string()).ok()?;
            return Some(limit);
        }
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let controllers = std::fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            let dir = v2.join(&name);
            std::fs::create_dir(&dir).ok()?;
            let limit = CpuLimit { dir };
            std::fs::write(limit.dir.join("cpu.max"), format!("{quota_us} {period_us}")).ok()?;
            return Some(limit);
        }
        None
    }

    /// Moves a process (all its threads) into the cgroup; its later
    /// children and threads start there.
    pub fn add(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving pid {pid} into {}: {e}", self.dir.display()));
    }

    /// How often the cgroup was throttled so far (`nr_throttled` of cpu.stat).
    pub fn throttled(&self) -> u64 {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        stat.lines().find_map(|l| l.strip_prefix("nr_throttled ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // A cgroup can only be removed once empty: kill what is left (the
        // test's own processes), then retry briefly while they exit.
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            // Polling the removal: the kernel sends no event when the last
            // process of a cgroup is gone (a v1 release agent is global).
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
