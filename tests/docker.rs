//! Real-container tests: lastcall as PID 1 under a Docker engine.
//!
//! Every image is built from the Dockerfiles we ship, `FROM scratch`, with
//! binaries built on the host (this machine kind cannot pull images):
//! docker/Dockerfile.prebuilt (docker/Dockerfile's final stage from a host-built binary), and docker/example/Dockerfile
//! with the testapp fixture as `/app`. The tests drive containers only through
//! the docker CLI (`run`, `stop`, `kill`, `inspect`, `top`, `events`) and wait
//! on the testapp's stdout lines and on docker's answers, not on fixed sleeps.
//!
//! Without a Docker engine every test prints `SKIPPED: docker tests (no Docker
//! engine answers)` once and passes; `LASTCALL_REQUIRE_DOCKER=1` turns that
//! into a failure, for CI that must not skip. Everything a test creates is
//! named `lastcall-test-<pid>-...` and removed on drop, so also when it fails.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use harness::{engine, images, lastcall_is, repo, Container};
use support::mono_ns;

/// `ensure!(container, condition, "message {}", args)`: on failure, panic with
/// the message and everything the container printed and its state.
macro_rules! ensure {
    ($c:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $c.fail(&format!($($msg)+))
        }
    };
}

/// Docker's default `docker stop` timeout, which the tests also pass as
/// `-t 10` so that it is explicit (docs.docker.com, `docker container stop`).
const DOCKER_STOP_TIMEOUT: u64 = 10;

/// The grace options that fit `docker stop -t 10`: lastcall's own SIGKILL
/// comes at 10 s - 2 s = 8 s, before Docker's at 10 s.
const FIT_DOCKER: [&str; 4] = ["-e", "LASTCALL_GRACE_PERIOD=10s", "-e", "LASTCALL_KILL_MARGIN=2s"];

#[test]
fn lastcall_image_is_the_binary_alone() {
    let Some(()) = engine() else { return };
    let images = images();
    let tag = &images.lastcall.tag;

    let layers = harness::ok(
        harness::docker(["image", "inspect", "-f", "{{len .RootFS.Layers}} {{json .Config.Entrypoint}}", tag]),
        harness::CLI_LIMIT,
    );
    assert_eq!(layers.stdout.trim(), r#"1 ["/lastcall"]"#, "one layer and /lastcall as entrypoint");
    assert_eq!(harness::image_files(tag), ["lastcall"], "the image's only layer holds /lastcall and nothing else");

    // It is a complete program on its own (static: no loader, no libc in the image).
    let c = Container::start(tag, &[], &["--version"]);
    let code = c.exit_code();
    ensure!(c, code == 0, "`lastcall --version` in the image exited {code}");
    let version = format!("lastcall {}", env!("CARGO_PKG_VERSION"));
    ensure!(c, c.stdout().iter().any(|l| l.contains(&version)), "no `{version}` line");
}

/// Tests build docker/Dockerfile.prebuilt because `rust:` cannot be pulled
/// here; this keeps it the same image as docker/Dockerfile's final stage,
/// the one users build.
#[test]
fn prebuilt_matches_final_stage() {
    let text = fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    let stages = harness::stages(&text);
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["builder", "lastcall"], "stage order (see the file's header)");
    let [builder, lastcall] = &stages[..] else { unreachable!() };
    let text = fs::read_to_string(repo().join("docker/Dockerfile.prebuilt")).unwrap();
    let prebuilt_stages = harness::stages(&text);
    let [prebuilt] = &prebuilt_stages[..] else { panic!("Dockerfile.prebuilt has {} stages, want one", prebuilt_stages.len()) };

    assert!(builder.from.starts_with("rust:"), "builder stage: FROM {}", builder.from);
    assert!(
        builder.body.iter().any(|i| i.starts_with("RUN cargo build --release")),
        "builder stage runs cargo build --release: {:#?}",
        builder.body
    );
    assert_eq!(lastcall.from, "scratch");
    assert!(
        lastcall.body.contains(&"COPY --from=builder /lastcall /lastcall".to_string()),
        "final stage copies the binary from builder: {:#?}",
        lastcall.body
    );
    // Same base, same instructions; only where COPY takes /lastcall from differs.
    let only_destination = |body: &[String]| -> Vec<String> {
        body.iter()
            .map(|i| match i.strip_prefix("COPY ") {
                Some(args) => format!("COPY -> {}", args.split_whitespace().last().unwrap_or("")),
                None => i.clone(),
            })
            .collect()
    };
    assert_eq!(prebuilt.from, lastcall.from);
    assert_eq!(only_destination(&prebuilt.body), only_destination(&lastcall.body));
}

/// The documented build (`docker build -f docker/Dockerfile .` from the
/// repository root) must not send build output to the builder: the root
/// .dockerignore, which BuildKit and the legacy builder both read, leaves
/// it out.
#[test]
fn repository_context_leaves_build_output_out() {
    let ignore = fs::read_to_string(repo().join(".dockerignore")).expect("a .dockerignore at the repository root");
    let lines: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for dir in ["target", "fuzz/target", ".git", "dist"] {
        assert!(lines.contains(&dir), "{dir} is sent to the builder: {lines:?}");
    }
}

#[test]
fn lastcall_is_pid_1() {
    let Some(()) = engine() else { return };
    let images = images();
    let c = Container::start(&images.app.tag, &["-e", "LASTCALL_DRAIN=none"], &["status", "--wait"]);
    // The app's parent is PID 1 of the container's pid namespace.
    let ppid = c.wait_for("ppid=");
    ensure!(c, ppid == "ppid=1", "the app reports {ppid}, not ppid=1");
    c.wait_for("ready");

    // Docker's init process for the container (State.Pid, a host pid) is lastcall, and it is
    // pid 1 inside: NSpid lists the pid in each nested namespace, innermost last.
    let host_pid = c.inspect("{{.State.Pid}}");
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
    let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap_or("");
    ensure!(c, nspid.split_whitespace().last() == Some("1"), "State.Pid {host_pid}: NSpid {nspid:?}");
    let cmdline = fs::read(format!("/proc/{host_pid}/cmdline")).unwrap_or_default();
    ensure!(c, cmdline.starts_with(b"/lastcall\0"), "State.Pid {host_pid} runs {:?}", String::from_utf8_lossy(&cmdline));

    // What `docker top` sees: lastcall and its one child, the app.
    let top = c.top();
    ensure!(c, top.len() == 2, "docker top: {top:#?}");
    ensure!(c, top[0].pid == host_pid && lastcall_is(&top[0].args), "docker top: {top:#?}");
    ensure!(c, top[1].ppid == host_pid && top[1].args.starts_with("/app status"), "docker top: {top:#?}");

    c.stop(DOCKER_STOP_TIMEOUT);
    let code = c.exit_code();
    ensure!(c, code == 0, "exit code {code} after the app exited 0 on TERM");
}

#[test]
fn stop_drains_then_forwards_and_keeps_the_app_exit_code() {
    let Some(()) = engine() else { return };
    let images = images();
    let mut opts = vec!["-e", "LASTCALL_DRAIN=delay", "-e", "LASTCALL_DRAIN_DELAY=2s"];
    opts.extend(FIT_DOCKER);
    let c = Container::start(&images.app.tag, &opts, &["signals", "--exit-code", "7"]);
    c.wait_for("ready");

    // Containers share CLOCK_MONOTONIC with the host (Docker makes no time
    // namespace), so the app's timestamps compare with ours directly.
    let stop_ns = mono_ns();
    let stop_took = c.stop(DOCKER_STOP_TIMEOUT);
    let term = c.wait_for("signal TERM ");
    let term_ns: u64 = term.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let after = Duration::from_nanos(term_ns.saturating_sub(stop_ns));
    ensure!(c, term_ns >= stop_ns + 2_000_000_000, "the app got TERM {after:?} after `docker stop`, before the 2 s drain");
    ensure!(c, after < Duration::from_secs(8), "the app got TERM only {after:?} after `docker stop`");
    c.wait_for("exiting");

    let code = c.exit_code();
    ensure!(c, code == 7, "container exit code {code}, the app exited 7");
    ensure!(c, stop_took < Duration::from_secs(DOCKER_STOP_TIMEOUT), "docker stop took {stop_took:?}");
    let signals: Vec<String> = c.stdout().into_iter().filter(|l| l.starts_with("signal ")).collect();
    ensure!(c, signals.len() == 1, "the app got more than the one TERM: {signals:?}");
}

/// distroless `:nonroot` images run as uid 65532, often with a read-only
/// root filesystem: /run/lastcall.sock cannot be created. The preStop hook
/// (`docker exec ... /lastcall drain`, as the kubelet runs it) must still
/// reach the PID 1 and drain once, and the stop that follows must not drain
/// a second time.
#[test]
fn nonroot_readonly_container_drains_once() {
    let Some(()) = engine() else { return };
    let images = images();
    let mut opts = vec!["--user", "65532:65532", "--read-only", "-e", "LASTCALL_DRAIN=delay", "-e", "LASTCALL_DRAIN_DELAY=2s"];
    opts.extend(FIT_DOCKER);
    let c = Container::start(&images.app.tag, &opts, &["signals"]);
    c.wait_for("ready");
    let (hook, took) = c.exec(&["/lastcall", "drain"]);
    ensure!(c, hook.status.success(), "the hook failed:\n{hook}");
    ensure!(c, hook.stderr.contains("drain done by the lastcall PID 1"), "the hook did not drain through the PID 1:\n{hook}");
    ensure!(c, took >= Duration::from_secs(2), "the hook returned after {took:?}, before the 2 s drain");
    let stop_ns = mono_ns();
    c.stop(DOCKER_STOP_TIMEOUT);
    let term = c.wait_for("signal TERM ");
    let term_ns: u64 = term.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let after = Duration::from_nanos(term_ns.saturating_sub(stop_ns));
    ensure!(c, after < Duration::from_secs(1), "the app got TERM {after:?} after `docker stop`: drained a second time");
    let code = c.exit_code();
    ensure!(c, code == 0, "exit code {code}");
}

/// The kubelet mounts the termination message file at /dev/termination-log
/// and shows what it holds under "Last State" in `kubectl describe pod`.
/// Here Docker mounts one the same way; after `docker stop` it holds
/// lastcall's report of the shutdown.
#[test]
fn termination_report_in_a_real_container() {
    let Some(()) = engine() else { return };
    let images = images();
    let dir = support::TempDir::new("termlog");
    let file = dir.join("termination-log");
    fs::write(&file, "").unwrap();
    let mount = format!("{}:/dev/termination-log", file.display());
    let mut opts = vec!["-v", mount.as_str(), "-e", "LASTCALL_DRAIN=delay", "-e", "LASTCALL_DRAIN_DELAY=1s"];
    opts.extend(FIT_DOCKER);
    let c = Container::start(&images.app.tag, &opts, &["signals", "--exit-code", "5"]);
    c.wait_for("ready");
    c.stop(DOCKER_STOP_TIMEOUT);
    let code = c.exit_code();
    ensure!(c, code == 5, "exit code {code}");
    let report = fs::read_to_string(&file).unwrap_or_default();
    for want in [
        "lastcall: stopped by SIGTERM",
        "drain: ended after ",
        "stop signal: SIGTERM sent to the app",
        "app: exited with code 5",
        "SIGKILL: not sent by lastcall",
    ] {
        ensure!(c, report.contains(want), "the termination report has no {want:?}:\n{report}");
    }
}

#[test]
fn kill_hup_reaches_the_app() {
    let Some(()) = engine() else { return };
    let images = images();
    let c = Container::start(&images.app.tag, &["-e", "LASTCALL_DRAIN=none"], &["signals"]);
    c.wait_for("ready");
    c.kill("HUP");
    c.wait_for("signal HUP ");
    let running = c.inspect("{{.State.Running}}");
    ensure!(c, running == "true", "HUP is not a stop signal, yet the container is not running");

    c.stop(DOCKER_STOP_TIMEOUT);
    let code = c.exit_code();
    ensure!(c, code == 0, "exit code {code}");
}

#[test]
fn orphans_leave_no_zombies() {
    let Some(()) = engine() else { return };
    let images = images();
    let c = Container::start(&images.app.tag, &["-e", "LASTCALL_DRAIN=none"], &["orphans", "50", "--wait"]);
    c.wait_for("spawned 50");
    c.wait_for("ready");
    // 50 grandchildren were reparented to PID 1 and have exited: once lastcall has
    // reaped them only lastcall and the app remain. Nothing announces "reaped", so
    // look again until that holds; the limit only bounds a failure.
    let deadline = Instant::now() + harness::EVENT_LIMIT;
    loop {
        let top = c.top();
        let zombies: Vec<_> = top.iter().filter(|p| p.stat.starts_with('Z')).collect();
        if zombies.is_empty() && top.len() == 2 {
            break;
        }
        ensure!(
            c,
            Instant::now() < deadline,
            "after {:?}: {} zombies, {} processes: {top:#?}",
            harness::EVENT_LIMIT,
            zombies.len(),
            top.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.stop(DOCKER_STOP_TIMEOUT);
    let code = c.exit_code();
    ensure!(c, code == 0, "exit code {code}");
}

#[test]
fn ignored_term_is_killed_by_lastcall_before_docker_does() {
    let Some(()) = engine() else { return };
    let images = images();
    let mut opts = vec!["-e", "LASTCALL_DRAIN=none"];
    opts.extend(FIT_DOCKER);
    let c = Container::start(&images.app.tag, &opts, &["signals", "--ignore", "TERM"]);
    c.wait_for("ready");
    let since = harness::unix_now();

    let took = c.stop(DOCKER_STOP_TIMEOUT);
    let code = c.exit_code();
    ensure!(c, code == 137, "container exit code {code}, expected 137 (128 + SIGKILL)");
    // lastcall's deadline is grace - margin = 8 s after TERM; Docker's own kill comes at 10 s.
    ensure!(c, took >= Duration::from_millis(7_900), "killed after {took:?}, before lastcall's 8 s deadline");
    ensure!(c, took < Duration::from_secs(DOCKER_STOP_TIMEOUT), "docker stop took {took:?}: Docker had to kill");
    // Docker logs a `kill` event per signal it sends: TERM (15), and 9 only if it had to kill.
    let sent = c.docker_signals_since(&since);
    ensure!(c, sent == ["15"], "signals Docker sent: {sent:?}");
    ensure!(c, c.stderr().iter().any(|l| l.contains("SIGKILL")), "lastcall's log does not say SIGKILL");
    ensure!(c, !c.stdout().iter().any(|l| l == "exiting"), "the app exited by itself");
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_app_once() {
    let Some(()) = engine() else { return };
    let images = images();
    let c = Container::start_tty(&images.app.tag, &["-e", "LASTCALL_DRAIN=none"], &["signals"]);
    c.wait_line("ready", |l| l.contains("ready pid="));
    c.type_keys(b"\x03");
    // The terminal echoes `^C`, possibly on the same line: match inside lines.
    c.wait_line("signal INT", |l| l.contains("signal INT "));
    // A fence: lastcall forwards in order, so a second INT (the kernel's to the app's
    // group and a forwarded copy) would arrive before USR1.
    c.kill("USR1");
    c.wait_line("signal USR1", |l| l.contains("signal USR1 "));
    let ints = c.stdout().iter().filter(|l| l.contains("signal INT ")).count();
    ensure!(c, ints == 1, "Ctrl-C reached the app {ints} times");
    ensure!(c, c.inspect("{{.State.Running}}") == "true", "INT is not the stop signal, yet the container stopped");

    c.stop(DOCKER_STOP_TIMEOUT);
    let code = c.exit_code();
    ensure!(c, code == 0, "exit code {code}");
    ensure!(c, c.tty_client_status() == Some(0), "`docker run -it` exited {:?}", c.tty_client_status());
}

#[test]
fn example_image_drains_with_its_defaults() {
    let Some(()) = engine() else { return };
    let images = images();
    let tag = &images.app.tag;
    let config = harness::ok(
        harness::docker(["image", "inspect", "-f", "{{json .Config.Entrypoint}} {{.Config.StopSignal}}", tag]),
        harness::CLI_LIMIT,
    );
    assert_eq!(config.stdout.trim(), r#"["/lastcall","--","/app"] SIGTERM"#);

    // As shipped: the default CMD (graceful HTTP server) and the ENV drain settings (3 s).
    let c = Container::start(tag, &[], &[]);
    c.wait_for("ready pid=");
    let took = c.stop_default();
    c.wait_for("exiting");
    let code = c.exit_code();
    ensure!(c, code == 0, "exit code {code}");
    ensure!(c, took >= Duration::from_secs(3), "stopped after {took:?}, within the image's 3 s drain");
    ensure!(c, took < Duration::from_secs(DOCKER_STOP_TIMEOUT), "docker stop took {took:?}: Docker had to kill");
}

/// Docker CLI plumbing with failure dumps, guards that clean up on drop, and
/// the images shared by the tests that run at the same time.
mod harness {
    use std::fs::{self, File};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, Weak};
    use std::thread;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    use super::support::{self, TempDir};

    /// Failure guard for one docker or cargo call; never a pacing device.
    pub const CLI_LIMIT: Duration = Duration::from_secs(180);
    /// Failure guard for a line or a state the test waits for.
    pub const EVENT_LIMIT: Duration = support::GUARD;

    pub fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// A fresh name for a container or image: `lastcall-test-<pid>-<n>-<what>`.
    fn unique(what: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("lastcall-test-{}-{}-{what}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Wall-clock time in the `seconds.nanoseconds` form `docker events --since` takes.
    pub fn unix_now() -> String {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
    }

    /// A `docker top` command line that is lastcall's.
    pub fn lastcall_is(args: &str) -> bool {
        args == "/lastcall" || args.starts_with("/lastcall ")
    }

    /// `Some(())` when a Docker engine answers. Otherwise prints the SKIPPED line
    /// once and gives `None`, or fails when LASTCALL_REQUIRE_DOCKER=1.
    pub fn engine() -> Option<()> {
        static UP: OnceLock<Result<(), String>> = OnceLock::new();
        let required = std::env::var_os("LASTCALL_REQUIRE_DOCKER").is_some_and(|v| v == "1");
        let up = UP.get_or_init(|| {
            let up = match try_output(docker(["info", "--format", "{{.ServerVersion}}"]), Duration::from_secs(60)) {
                Ok(o) if o.status.success() && !o.stdout.trim().is_empty() => Ok(()),
                Ok(o) => Err(o.to_string()),
                Err(e) => Err(e),
            };
            if up.is_err() && !required {
                // Through the handle, not eprintln!: libtest captures only the macros,
                // and this line must show in a passing run.
                let _ = writeln!(std::io::stderr(), "SKIPPED: docker tests (no Docker engine answers)");
            }
            up
        });
        match up {
            Ok(()) => Some(()),
            Err(e) if required => panic!("LASTCALL_REQUIRE_DOCKER=1 but no Docker engine answers:\n{e}"),
            Err(_) => None,
        }
    }

    pub fn docker<I, S>(args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("docker");
        cmd.args(args);
        cmd
    }

    pub struct Output {
        pub shown: String,
        pub status: ExitStatus,
        pub stdout: String,
        pub stderr: String,
    }

    impl std::fmt::Display for Output {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "$ {}\n{}\n--- stdout\n{}--- stderr\n{}", self.shown, self.status, self.stdout, self.stderr)
        }
    }

    /// Runs `cmd` to its end; past `limit` kills it (by its pid) and gives an error.
    pub fn try_output(mut cmd: Command, limit: Duration) -> Result<Output, String> {
        let shown = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("$ {shown}\ncannot start: {e}"))?;
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(limit) {
            Ok(Ok(o)) => Ok(Output {
                shown,
                status: o.status,
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }),
            Ok(Err(e)) => Err(format!("$ {shown}\n{e}")),
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                Err(format!("$ {shown}\ndid not finish within {limit:?}"))
            }
        }
    }

    /// Runs `cmd` and panics with command, status, stdout and stderr unless it succeeds.
    pub fn ok(cmd: Command, limit: Duration) -> Output {
        match try_output(cmd, limit) {
            Ok(o) if o.status.success() => o,
            Ok(o) => panic!("command failed:\n{o}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Best effort, for Drop: never panics (a panic while unwinding aborts the run).
    fn remove<const N: usize>(args: [&str; N]) {
        match try_output(docker(args), CLI_LIMIT) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("cleanup failed:\n{o}"),
            Err(e) => eprintln!("cleanup failed:\n{e}"),
        }
    }

    /// The testapp fixture, built next to lastcall: `cargo test --test docker`
    /// builds no examples, and cargo has released its lock by the time tests run.
    pub fn testapp_bin() -> &'static Path {
        static PATH: OnceLock<PathBuf> = OnceLock::new();
        PATH.get_or_init(|| {
            let lastcall = support::lastcall();
            let dir = lastcall.parent().expect("target dir");
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "--example", "testapp"]).current_dir(repo());
            // Drop what cargo sets for the test run: build scripts that watch these
            // (ring: CARGO_MANIFEST_DIR) would rebuild, here and in the next plain build.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                let per_test = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_CRATE_", "CARGO_PRIMARY_", "CARGO_TARGET_TMPDIR"];
                if per_test.iter().any(|p| key.starts_with(p)) {
                    cargo.env_remove(&*key);
                }
            }
            if dir.ends_with("release") {
                cargo.arg("--release");
            }
            ok(cargo, Duration::from_secs(900));
            dir.join("examples/testapp")
        })
    }

    /// An image built by this run; removed on drop.
    pub struct Image {
        pub tag: String,
    }

    impl Drop for Image {
        fn drop(&mut self) {
            remove(["rmi", "-f", &self.tag]);
        }
    }

    /// A build context: a fresh directory holding copies of host files; removed on drop.
    fn context(files: &[(&str, &Path)]) -> TempDir {
        let ctx = TempDir::new("docker-context");
        for (name, from) in files {
            fs::copy(from, ctx.join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        ctx
    }

    /// `docker build` of a shipped Dockerfile; the guard exists before the build
    /// starts, so whatever it leaves tagged goes too.
    fn build(dockerfile: &str, ctx: &TempDir, what: &str, args: &[&str]) -> Image {
        let image = Image { tag: unique(what) };
        let mut cmd = docker(["build", "--force-rm", "-t", &image.tag, "-f"]);
        cmd.arg(repo().join(dockerfile)).args(args).arg(ctx.path());
        ok(cmd, CLI_LIMIT);
        image
    }

    pub struct Images {
        /// docker/Dockerfile.prebuilt, from the host-built lastcall.
        pub lastcall: Image,
        /// docker/example/Dockerfile with the testapp as /app and the image above.
        pub app: Image,
    }

    /// The two images, built once and shared by the tests that run at the same
    /// time; the last test to let go removes them (a later one builds anew).
    pub fn images() -> Arc<Images> {
        static SHARED: Mutex<Weak<Images>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(images) = shared.upgrade() {
            return images;
        }
        let ctx = context(&[("lastcall", &support::lastcall())]);
        let lastcall = build("docker/Dockerfile.prebuilt", &ctx, "lastcall", &[]);
        let ctx = context(&[("app", testapp_bin())]);
        let arg = format!("LASTCALL_IMAGE={}", lastcall.tag);
        let app = build("docker/example/Dockerfile", &ctx, "app", &["--build-arg", &arg]);
        let images = Arc::new(Images { lastcall, app });
        *shared = Arc::downgrade(&images);
        images
    }

    /// The files in an image's layers, from `docker save` (a tar of layer tars).
    pub fn image_files(tag: &str) -> Vec<String> {
        let ctx = TempDir::new("docker-save");
        let saved = ctx.join("image.tar");
        let mut save = docker(["save", "-o"]);
        save.arg(&saved).arg(tag);
        ok(save, CLI_LIMIT);
        let tar = |args: &[&str]| {
            let mut cmd = Command::new("tar");
            cmd.current_dir(ctx.path()).args(args);
            ok(cmd, CLI_LIMIT).stdout
        };
        let manifest = tar(&["-xOf", "image.tar", "manifest.json"]);
        let layers = manifest
            .split_once("\"Layers\":[")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list.split(',').map(|l| l.trim_matches('"').to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no Layers in manifest.json: {manifest}"));
        let mut files = Vec::new();
        for layer in layers {
            tar(&["-xf", "image.tar", &layer]);
            files.extend(tar(&["-tf", &layer]).lines().map(|l| l.trim_end_matches('/').to_string()));
        }
        files
    }

    /// One Dockerfile stage: its base, its `AS` name and its other instructions.
    pub struct Stage {
        pub from: String,
        pub name: String,
        pub body: Vec<String>,
    }

    /// Splits a Dockerfile into stages (continuation lines joined, comments dropped).
    pub fn stages(text: &str) -> Vec<Stage> {
        let mut instructions = Vec::new();
        let mut pending = String::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match line.strip_suffix('\\') {
                Some(part) => pending.push_str(part),
                None => instructions.push(std::mem::take(&mut pending) + line),
            }
        }
        let mut stages: Vec<Stage> = Vec::new();
        for i in instructions {
            let i = i.split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some(from) = i.strip_prefix("FROM ") {
                let (from, name) = from.split_once(" AS ").unwrap_or((from, ""));
                stages.push(Stage { from: from.into(), name: name.into(), body: Vec::new() });
            } else if let Some(stage) = stages.last_mut() {
                stage.body.push(i);
            }
        }
        stages
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Stream {
        Out,
        Err,
        /// Both, through a terminal.
        Tty,
    }

    /// The lines a container printed so far, for waiting on events.
    #[derive(Default)]
    struct Lines {
        state: Mutex<LinesState>,
        changed: Condvar,
    }

    #[derive(Default)]
    struct LinesState {
        lines: Vec<(Stream, String)>,
        /// Readers not at end of file yet.
        open: usize,
    }

    impl Lines {
        fn feed(self: &Arc<Self>, stream: Stream, source: impl Read + Send + 'static) {
            self.state.lock().unwrap().open += 1;
            let lines = Arc::clone(self);
            thread::spawn(move || {
                // Ends at EOF, or EIO once the last holder of a pty's other side is gone.
                for line in BufReader::new(source).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                    lines.state.lock().unwrap().lines.push((stream, text));
                    lines.changed.notify_all();
                }
                lines.state.lock().unwrap().open -= 1;
                lines.changed.notify_all();
            });
        }

        /// Waits until `found` gives something, or every reader has ended, or `limit`.
        fn wait<T>(&self, limit: Duration, mut found: impl FnMut(&LinesState) -> Option<T>) -> Option<T> {
            let deadline = Instant::now() + limit;
            let mut state = self.state.lock().unwrap();
            loop {
                if let Some(t) = found(&state) {
                    return Some(t);
                }
                let now = Instant::now();
                if state.open == 0 || now >= deadline {
                    return None;
                }
                state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
            }
        }

        fn of(&self, streams: &[Stream]) -> Vec<String> {
            let state = self.state.lock().unwrap();
            state.lines.iter().filter(|(s, _)| streams.contains(s)).map(|(_, l)| l.clone()).collect()
        }
    }

    /// One row of `docker top -o pid,ppid,stat,args` (host pids).
    #[derive(Debug)]
    pub struct Process {
        pub pid: String,
        pub ppid: String,
        pub stat: String,
        pub args: String,
    }

    /// A container of this run: removed (with its volumes) on drop, and followed:
    /// its output is collected as it comes, from `docker logs -f`, or from the
    /// terminal of an attached `docker run -it`.
    pub struct Container {
        name: String,
        lines: Arc<Lines>,
        /// `docker logs -f`, or the `docker run -it` client.
        follower: Mutex<Option<Child>>,
        /// Our side of the `docker run -it` client's terminal.
        terminal: Option<File>,
    }

    impl Container {
        fn named() -> Container {
            Container { name: unique("container"), lines: Arc::default(), follower: Mutex::new(None), terminal: None }
        }

        /// `docker run -d [OPTS] IMAGE [CMD]`, followed by `docker logs -f`.
        pub fn start(image: &str, opts: &[&str], cmd: &[&str]) -> Container {
            let mut c = Container::named();
            let mut run = docker(["run", "-d", "--name", &c.name]);
            run.args(opts).arg(image).args(cmd);
            ok(run, CLI_LIMIT);
            let mut logs = docker(["logs", "-f", &c.name])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("docker logs -f");
            c.lines.feed(Stream::Out, logs.stdout.take().unwrap());
            c.lines.feed(Stream::Err, logs.stderr.take().unwrap());
            c.follower = Mutex::new(Some(logs));
            c
        }

        /// `docker run -it [OPTS] IMAGE [CMD]` on a new pseudo-terminal, as from a shell.
        pub fn start_tty(image: &str, opts: &[&str], cmd: &[&str]) -> Container {
            let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
            let pty = nix::pty::openpty(&size, None).expect("openpty");
            let mut c = Container::named();
            let terminal = File::from(pty.master);
            let client = {
                let tty = File::from(pty.slave);
                let mut run = docker(["run", "-it", "--name", &c.name]);
                run.args(opts).arg(image).args(cmd);
                run.stdin(tty.try_clone().unwrap()).stdout(tty.try_clone().unwrap()).stderr(tty);
                run.spawn().expect("docker run -it")
                // `run` and `tty` drop here: only the client holds the terminal now, so
                // reading our side ends when the client exits.
            };
            c.follower = Mutex::new(Some(client));
            c.lines.feed(Stream::Tty, terminal.try_clone().unwrap());
            c.terminal = Some(terminal);
            c
        }

        /// Types `keys` at the terminal of a `start_tty` container.
        pub fn type_keys(&self, keys: &[u8]) {
            let mut terminal = self.terminal.as_ref().expect("a start_tty container");
            terminal.write_all(keys).unwrap();
        }

        /// The first stdout line (or terminal line) that satisfies `pred`; fails after EVENT_LIMIT.
        pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
            let found = self
                .lines
                .wait(EVENT_LIMIT, |state| state.lines.iter().find(|(s, l)| *s != Stream::Err && pred(l)).map(|(_, l)| l.clone()));
            found.unwrap_or_else(|| self.fail(&format!("no line {what:?} (waited up to {EVENT_LIMIT:?})")))
        }

        /// The first stdout line that starts with `prefix`.
        pub fn wait_for(&self, prefix: &str) -> String {
            self.wait_line(prefix, |l| l.starts_with(prefix))
        }

        /// Waits until the output has ended: the container has stopped and every line is in.
        pub fn wait_end(&self) {
            if self.lines.wait(EVENT_LIMIT, |state| (state.open == 0).then_some(())).is_none() {
                self.fail("the output did not end");
            }
        }

        /// What the app printed (through a terminal: everything).
        pub fn stdout(&self) -> Vec<String> {
            self.lines.of(&[Stream::Out, Stream::Tty])
        }

        /// What lastcall logged (through a terminal: everything).
        pub fn stderr(&self) -> Vec<String> {
            self.lines.of(&[Stream::Err, Stream::Tty])
        }

        pub fn inspect(&self, format: &str) -> String {
            self.docker_ok(&["inspect", "-f", format, &self.name]).trim().to_string()
        }

        /// `docker stop -t SECONDS`; gives how long it took (it returns once the container is down).
        pub fn stop(&self, seconds: u64) -> Duration {
            let t0 = Instant::now();
            self.docker_ok(&["stop", "-t", &seconds.to_string(), &self.name]);
            t0.elapsed()
        }

        /// `docker stop` with Docker's default timeout.
        pub fn stop_default(&self) -> Duration {
            let t0 = Instant::now();
            self.docker_ok(&["stop", &self.name]);
            t0.elapsed()
        }

        /// `docker exec CONTAINER ARGS...` (as the container's user): its
        /// output and how long it took.
        pub fn exec(&self, args: &[&str]) -> (Output, Duration) {
            let t0 = Instant::now();
            let mut all = vec!["exec", self.name.as_str()];
            all.extend_from_slice(args);
            match try_output(docker(all), CLI_LIMIT) {
                Ok(o) => (o, t0.elapsed()),
                Err(e) => self.fail(&e),
            }
        }

        /// `docker kill -s SIGNAL`.
        pub fn kill(&self, signal: &str) {
            self.docker_ok(&["kill", "-s", signal, &self.name]);
        }

        /// `docker wait`: the exit code, once the container has stopped and all
        /// its output is in.
        pub fn exit_code(&self) -> i64 {
            let code = self.docker_ok(&["wait", &self.name]);
            self.wait_end();
            code.trim().parse().unwrap_or_else(|_| self.fail(&format!("docker wait printed {code:?}")))
        }

        /// The exit status of the `docker run -it` client, once it has exited.
        pub fn tty_client_status(&self) -> Option<i32> {
            // The terminal reads EOF once the client has exited, so this wait is short.
            self.wait_end();
            let mut follower = self.follower.lock().unwrap();
            follower.as_mut().and_then(|client| client.wait().ok()).and_then(|status| status.code())
        }

        /// `docker top`: lastcall first, then the processes in pid order.
        pub fn top(&self) -> Vec<Process> {
            let out = self.docker_ok(&["top", &self.name, "-o", "pid,ppid,stat,args"]);
            let mut rows: Vec<Process> = out
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (pid, ppid, stat) = (f.next()?, f.next()?, f.next()?);
                    let args = f.collect::<Vec<_>>().join(" ");
                    Some(Process { pid: pid.into(), ppid: ppid.into(), stat: stat.into(), args })
                })
                .collect();
            rows.sort_by_key(|p| (!lastcall_is(&p.args), p.pid.parse::<u64>().unwrap_or(0)));
            rows
        }

        /// The signals Docker sent to this container since `since`, from its `kill` events.
        pub fn docker_signals_since(&self, since: &str) -> Vec<String> {
            let filter = format!("container={}", self.name);
            let out = self.docker_ok(&[
                "events",
                "--since",
                since,
                "--until",
                &unix_now(),
                "--filter",
                &filter,
                "--filter",
                "event=kill",
                "--format",
                "{{.Actor.Attributes.signal}}",
            ]);
            out.lines().map(str::to_string).collect()
        }

        fn docker_ok(&self, args: &[&str]) -> String {
            match try_output(docker(args), CLI_LIMIT) {
                Ok(o) if o.status.success() => o.stdout,
                Ok(o) => self.fail(&format!("command failed:\n{o}")),
                Err(e) => self.fail(&e),
            }
        }

        /// Panics with `msg`, the container's state and everything it printed.
        pub fn fail(&self, msg: &str) -> ! {
            let state = match try_output(docker(["inspect", "-f", "{{json .State}}", &self.name]), CLI_LIMIT) {
                Ok(o) => o.stdout + &o.stderr,
                Err(e) => e,
            };
            let show = |streams: &[Stream]| self.lines.of(streams).join("\n");
            panic!(
                "{msg}\n--- container {} state\n{}\n--- stdout (the app)\n{}\n--- stderr (lastcall)\n{}\n--- terminal\n{}\n---",
                self.name,
                state.trim(),
                show(&[Stream::Out]),
                show(&[Stream::Err]),
                show(&[Stream::Tty]),
            )
        }
    }

    impl Drop for Container {
        fn drop(&mut self) {
            remove(["rm", "-f", "-v", &self.name]);
            let follower = self.follower.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(mut follower) = follower {
                // Removing the container ends both `docker logs -f` and `docker run -it`;
                // kill (our own child, by its pid) only what is still there.
                if let Ok(None) = follower.try_wait() {
                    let _ = follower.kill();
                }
                let _ = follower.wait();
            }
        }
    }
}

/// `--close-idle` in a real container (issue 16): under Docker's default
/// seccomp profile pidfd_getfd is denied (it is allowed only with
/// CAP_SYS_PTRACE), so lastcall says so in one line and the idle keep-alive
/// connection lasts until the app exits; with `--cap-add SYS_PTRACE` lastcall
/// closes it before the app gets its TERM.
#[test]
fn close_idle_under_the_default_seccomp_profile_and_with_sys_ptrace() {
    use std::io::{BufRead, BufReader, Read, Write};
    let Some(()) = engine() else { return };
    let images = images();
    for (extra, allowed) in [(None, false), (Some("SYS_PTRACE"), true)] {
        let mut opts = vec!["-e", "LASTCALL_DRAIN=delay", "-e", "LASTCALL_DRAIN_DELAY=500ms", "-e", "LASTCALL_CLOSE_IDLE=8080"];
        opts.extend(FIT_DOCKER);
        if let Some(cap) = extra {
            opts.extend(["--cap-add", cap]);
        }
        let c = Container::start(&images.app.tag, &opts, &["http", "--listen", "0.0.0.0:8080", "--mode", "naive"]);
        c.wait_for("ready");
        let ip = c.inspect("{{.NetworkSettings.IPAddress}}");
        // One answered request, then idle: a pooled keep-alive connection.
        let stream = std::net::TcpStream::connect((ip.as_str(), 8080)).unwrap_or_else(|e| c.fail(&format!("connect {ip}:8080: {e}")));
        (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            if reader.read_line(&mut head).unwrap_or(0) == 0 {
                c.fail(&format!("no response head: {head:?}"));
            }
        }
        let mut body = [0u8; 64];
        let n = reader.read(&mut body).unwrap_or(0);
        ensure!(c, n > 0 && head.starts_with("HTTP/1.1 200"), "response {head:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let _ = (&stream).read(&mut buf);
            let _ = tx.send(mono_ns());
        });
        c.stop(DOCKER_STOP_TIMEOUT);
        let term = c.wait_for("signal TERM ");
        let term_ns: u64 = term.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let ended = rx.recv_timeout(harness::EVENT_LIMIT).unwrap_or_else(|_| c.fail("the connection never ended"));
        let code = c.exit_code();
        ensure!(c, code == 0, "exit code {code}");
        let lines: Vec<String> = c.stderr().into_iter().filter(|l| l.contains("idle")).collect();
        ensure!(c, lines.len() == 1, "one line about idle connections: {lines:#?}");
        if allowed {
            ensure!(c, lines[0].contains("closed idle inbound connections") && lines[0].contains("closed=1"), "{}", lines[0]);
            ensure!(c, ended < term_ns, "with SYS_PTRACE the idle connection ended only after the app's TERM");
        } else {
            ensure!(c, lines[0].contains("cannot close idle connections") && lines[0].contains("seccomp"), "{}", lines[0]);
            ensure!(c, ended > term_ns, "under the default profile the connection ended before the app's TERM");
        }
    }
}
