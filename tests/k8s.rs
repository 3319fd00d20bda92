//! Black-box tests of the Kubernetes drain strategy (issue 3): the real
//! binary as PID 1 of a fresh PID namespace, testapp as the app, and the
//! test API server double (tests/k8s/apiserver.py) as the cluster.
//!
//! The scenario everywhere: a pod `web-1` (10.0.0.5) listed in Service
//! `web`; the test deletes the pod (as `kubectl delete` would: the pod gets
//! its deletionTimestamp, the EndpointSlice controller flips the endpoint
//! to terminating) and sends lastcall the stop signal (as the kubelet
//! would). The app must see TERM only after the endpoint flipped plus the
//! propagation delay, and always before the deadline.
//!
//! Rules as in tests/pid1.rs: wait for events (app lines, requests and
//! watches counted by the server, lastcall's log lines), never for time to
//! pass; bounds are generous; ordering is asserted with CLOCK_MONOTONIC.
//! Timings that tell outcomes apart: the fallback delay is 20 s where a
//! test expects the endpoint to be observed (so a fallback could never pass
//! for a success), and 3 s where a test expects the fallback.

#![cfg(feature = "k8s")]

mod support;

use std::time::Duration;

use libc::SIGTERM;
use serde_json::json;
use support::apiserver::{ApiServer, Conditions, Flip, StartOptions};
use support::{mono_ns, secs, Mode, Proc, Run, GUARD, MS, SEC};

/// KILL at 29 s, drain until 27 s; the fallback (20 s) would be obvious.
const OBSERVE: [&str; 10] =
    ["--grace-period", "30s", "--kill-margin", "1s", "--stop-budget", "2s", "--drain-delay", "20s", "--propagation-delay", "1s"];
/// The same with a 3 s fallback, for the fault tests.
const FAULT: [&str; 10] =
    ["--grace-period", "30s", "--kill-margin", "1s", "--stop-budget", "2s", "--drain-delay", "3s", "--propagation-delay", "1s"];
const PROPAGATION: u64 = SEC;

/// lastcall pointed at `api` the in-cluster way (KUBERNETES_SERVICE_HOST/
/// PORT), with the Downward API env a pod would have.
fn lastcall(api: &ApiServer, opts: &[&str]) -> Run {
    lastcall_with_ca(api, &api.ca_path(), opts)
}

fn lastcall_with_ca(api: &ApiServer, ca: &std::path::Path, opts: &[&str]) -> Run {
    let mut run = Run::new(Mode::Pid1)
        .opts(["--drain", "k8s"])
        .opts([std::ffi::OsStr::new("--k8s-token-file"), api.token_path().as_os_str()])
        .opts([std::ffi::OsStr::new("--k8s-ca-file"), ca.as_os_str()])
        .opts(opts)
        .env("POD_NAME", "web-1")
        .env("POD_IP", "10.0.0.5");
    for (k, v) in api.env() {
        run = run.env(&k, &v);
    }
    run
}

/// Starts lastcall with testapp `args`, waits for the app and for the
/// startup check (one LIST and one GET of the pod), then zeroes the
/// server's request counts so a test counts only the drain's requests.
fn start(api: &ApiServer, opts: &[&str], app: &[&str]) -> Proc {
    let mut p = lastcall(api, opts).app(app).spawn();
    p.expect_prefix("ready");
    let checked = api.wait_requests("get-pod", 1, GUARD);
    p.check(checked, "the startup check did not read the pod");
    api.reset_stats();
    p
}

/// Waits until lastcall's stderr contains `needle`. The log has no event
/// the harness can block on, so it is polled (10 ms), bounded by GUARD.
#[track_caller]
fn wait_log(p: &mut Proc, needle: &str) {
    let deadline = mono_ns() + GUARD.as_nanos() as u64;
    while !p.stderr_snapshot().contains(needle) {
        if mono_ns() > deadline {
            p.fail(format!("lastcall never logged {needle:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything lastcall logged: waits for it to exit first (the app exits
/// on TERM), since stderr is read by another thread than stdout and a
/// snapshot taken when the app's TERM line arrives may lag behind.
#[track_caller]
fn full_log(p: &mut Proc) -> String {
    p.wait();
    p.stderr()
}

#[track_caller]
fn wait_watch(p: &mut Proc, api: &ApiServer) {
    let open = api.wait_watches(1, GUARD);
    p.check(open, "lastcall did not open a watch");
}

/// web-1 is deleted (its endpoint not yet flipped), lastcall got the stop
/// signal at `sent` and is watching: the start of every watch-fault test.
#[track_caller]
fn watching_after_stop() -> (ApiServer, Proc, u64) {
    let api = ApiServer::web1();
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    let sent = p.signal(SIGTERM);
    wait_watch(&mut p, &api);
    (api, p, sent)
}

/// TERM reached the app at `got`: after `not_before`, and within `within`
/// of the stop signal `sent`.
#[track_caller]
fn check_term(p: &mut Proc, sent: u64, got: u64, not_before: u64, within: u64) {
    p.check(got >= not_before, format!("the app got TERM {} too early", secs(not_before.saturating_sub(got))));
    p.check(got - sent < within, format!("the app got TERM {} after the stop signal, not within {}", secs(got - sent), secs(within)));
}

// ---------------------------------------------------------------------------
// The main path
// ---------------------------------------------------------------------------

/// The pod is deleted, the endpoint flips 1.5 s later: TERM comes no earlier
/// than the flip plus the 1 s propagation delay, and long before the 20 s
/// fallback or the deadline. The drain costs O(1) requests: one GET of the
/// pod, one LIST, one WATCH, though bookmarks arrive every 200 ms.
#[test]
fn endpoint_flip_then_propagation_delay() {
    let api = ApiServer::web1();
    api.config(json!({"bookmark_interval_ms": 200}));
    let mut p = start(&api, &OBSERVE, &["signals"]);
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(1500));
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, deleted + 1500 * MS + PROPAGATION, 10 * SEC);
    p.expect_exit_code(0);
    let log = p.stderr();
    assert!(log.contains("pod is being deleted"), "{log}");
    assert!(log.contains("endpoint out of service in every slice"), "{log}");
    assert!(log.contains("endpoint out of service in 1 slice after") && log.contains("waited propagation delay 1s"), "{log}");
    let st = api.stats();
    assert_eq!((st.count("get-pod"), st.count("list"), st.count("watch")), (1, 1, 1), "{:?}", st.requests);
    assert_eq!(st.total(), 3, "{:?}", st.requests);
}

/// The flip happened before lastcall looked (the controller was faster than
/// the kubelet): the LIST already shows it, no watch is needed.
#[test]
fn already_flipped_needs_no_watch() {
    let api = ApiServer::web1();
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Now);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + PROPAGATION, 10 * SEC);
    let st = api.stats();
    assert_eq!((st.count("get-pod"), st.count("list"), st.count("watch")), (1, 1, 0), "{:?}", st.requests);
}

/// A pod in no Service has nothing to drain: TERM at once (well before the
/// 20 s fallback), and the log says why.
#[test]
fn pod_in_no_service_forwards_at_once() {
    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 30);
    api.add_pod("other-1", "10.0.0.6", 30);
    api.add_service("other", 1, false, "IPv4");
    api.add_endpoint("other", 0, "other-1");
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Now);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent, 10 * SEC);
    p.expect_exit_code(0);
    let log = p.stderr();
    assert!(log.contains("pod is in no Service: nothing to drain"), "{log}");
    assert_eq!(api.stats().count("watch"), 0);
}

/// SIGTERM while the pod has no deletionTimestamp (a liveness restart, a
/// kubelet eviction, a node shutdown): the endpoint will not flip, so
/// lastcall does not wait for it; it uses the 3 s fallback and says why.
#[test]
fn no_deletion_timestamp_uses_fallback() {
    let api = ApiServer::web1();
    let mut p = start(&api, &FAULT, &["signals"]);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + 3 * SEC, 10 * SEC);
    let log = full_log(&mut p);
    assert!(log.contains("is not being deleted") && log.contains("falling back to --drain-delay"), "{log}");
    let st = api.stats();
    assert_eq!((st.count("get-pod"), st.count("list"), st.count("watch")), (1, 1, 0), "{:?}", st.requests);
}

/// The same restart of a pod in no Service (a worker): nothing to drain, so
/// no fallback delay (20 s) either.
#[test]
fn no_deletion_timestamp_in_no_service_forwards_at_once() {
    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 30);
    let mut p = start(&api, &OBSERVE, &["signals"]);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent, 10 * SEC);
    assert!(full_log(&mut p).contains("pod is in no Service: nothing to drain"));
}

/// A restarted container whose endpoint is already not ready (readiness
/// failed with liveness): out of service already, only the propagation
/// delay, no fallback.
#[test]
fn no_deletion_timestamp_already_not_ready() {
    let api = ApiServer::web1();
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.set_pod_ready("web-1", false);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + PROPAGATION, 10 * SEC);
    let log = full_log(&mut p);
    assert!(!log.contains("falling back"), "{log}");
}

/// The pod's deletionTimestamp (grace 4 s) is sooner than --grace-period
/// (60 s): lastcall adopts it, stops the drain in time, and SIGKILLs the
/// app (which ignores TERM) before that instant.
#[test]
fn deletion_timestamp_sooner_than_grace_period() {
    let api = ApiServer::web1();
    let opts = ["--grace-period", "60s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "30s"];
    let mut p = start(&api, &opts, &["signals", "--exit-on", "none"]);
    api.delete_pod("web-1", Some(4), Flip::Never);
    // deletionTimestamp has second precision (rounded down): the kubelet's
    // SIGKILL instant is at most 4 s after the delete command returned.
    let deleted = mono_ns();
    p.signal(SIGTERM);
    let term = p.expect_signal(SIGTERM).mono();
    let st = p.wait();
    p.check(st.code() == Some(128 + 9), format!("lastcall exited {st:?}, expected 137 (the app was SIGKILLed)"));
    let exited = p.exited_at();
    p.check(exited < deleted + 4 * SEC, format!("the app was killed {} after the delete, after the 4 s deadline", secs(exited - deleted)));
    p.check(term < exited, "TERM must come before KILL");
    let log = p.stderr();
    assert!(log.contains("pod deletion deadline is sooner than --grace-period: adopting it"), "{log}");
}

/// publishNotReadyAddresses: `ready` stays true while terminating, so only
/// `terminating` tells; the drain still ends long before the fallback.
#[test]
fn publish_not_ready_addresses() {
    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 30);
    let slices = api.add_service("web", 1, true, "IPv4");
    api.add_endpoint("web", 0, "web-1");
    let mut p = start(&api, &OBSERVE, &["signals"]);
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(800));
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, deleted + 800 * MS + PROPAGATION, 10 * SEC);
    let ep = &api.get_object("endpointslices", &slices[0])["endpoints"][0]["conditions"];
    assert_eq!(
        (ep["ready"].clone(), ep["terminating"].clone()),
        (json!(true), json!(true)),
        "the double must model publishNotReadyAddresses"
    );
}

/// A dual-stack Service has two slices, and the pod is in both: the flip in
/// one does not end the drain; the flip in the second does.
#[test]
fn service_split_over_two_slices() {
    let api = ApiServer::start();
    api.add_pod_json(json!({"name": "web-1", "ips": ["10.0.0.5", "fd00::5"], "grace": 30}));
    api.add_service("web", 1, false, "dual");
    api.add_endpoint("web", 0, "web-1");
    api.add_endpoint("web", 1, "web-1");
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    let sent = p.signal(SIGTERM);
    wait_watch(&mut p, &api);
    let flip = |slice: usize| {
        let t = Conditions::TERMINATING;
        api.cmd_ok(json!({"cmd": "set_conditions", "service": "web", "pod": "web-1", "slice": slice,
                          "ready": t.ready, "serving": t.serving, "terminating": t.terminating}));
    };
    flip(0);
    wait_log(&mut p, "endpoint change seen: some entries still in service");
    let second = mono_ns();
    flip(1);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, second + PROPAGATION, 10 * SEC);
    let log = p.stderr();
    assert!(log.contains("endpoint out of service in 2 slices"), "{log}");
}

/// 410 Gone during the watch (an ERROR event, as the watch cache sends it):
/// lastcall lists again, watches from the new resourceVersion, and still
/// sees the flip.
#[test]
fn watch_expired_event_relists() {
    let (api, mut p, sent) = watching_after_stop();
    api.close_watches_expired();
    p.check(api.wait_requests("list", 2, GUARD), "no second LIST after the 410");
    wait_watch(&mut p, &api);
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    let st = api.stats();
    assert_eq!((st.count("list"), st.count("watch")), (2, 2), "{:?}", st.requests);
    assert!(p.stderr().contains("watch expired (410 Gone): listing again"));
}

/// 410 Gone as an HTTP status when re-watching from a compacted
/// resourceVersion (after the server ended the first watch).
#[test]
fn watch_expired_http_relists() {
    let api = ApiServer::web1();
    api.config(json!({"watch_410": "http"}));
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    let sent = p.signal(SIGTERM);
    wait_watch(&mut p, &api);
    // A change the slice watch does not see, then compaction: lastcall's
    // resourceVersion is now too old.
    api.add_pod("unrelated-1", "10.0.0.99", 30);
    api.compact();
    api.close_watches();
    p.check(api.wait_requests("list", 2, GUARD), "no second LIST after the 410");
    wait_watch(&mut p, &api);
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    assert_eq!(api.stats().count("watch"), 3);
}

/// The token file is re-read for every request: rotated before the drain
/// and again while the watch is open (the server rejects old tokens).
#[test]
fn rotated_token_is_used() {
    let api = ApiServer::web1();
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    api.rotate_token();
    let sent = p.signal(SIGTERM);
    wait_watch(&mut p, &api);
    api.rotate_token();
    api.close_watches();
    p.check(api.wait_requests("watch", 2, GUARD), "no second watch");
    wait_watch(&mut p, &api);
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    let log = api.log();
    assert!(!log.contains("auth=invalid") && !log.contains("auth=missing"), "{log}");
}

// ---------------------------------------------------------------------------
// Faults: each one gives one log line and the 3 s fallback, never more than
// the deadline (TERM well before 27 s).
// ---------------------------------------------------------------------------

/// Injects `fault` into every request of `kind` once the startup check is
/// done; the pod is deleted but its endpoint never flips.
fn fault_case(kind: &str, fault: &str, expect_in_log: &str) {
    let (_api, mut p, log) = fault_then_fallback(kind, fault, 15 * SEC);
    p.check(log.contains(expect_in_log), format!("the fallback line does not say {expect_in_log:?}"));
    p.check(!log.contains("panicked"), "lastcall panicked");
}

/// The pod is deleted, its endpoint never flips, and requests of `kind` get
/// `fault`: TERM reaches the app at the 3 s fallback, no later than
/// `within` after the stop signal, after exactly one fallback line.
/// Returns the server (for its log), the run and lastcall's log.
fn fault_then_fallback(kind: &str, fault: &str, within: u64) -> (ApiServer, Proc, String) {
    let api = ApiServer::web1();
    let mut p = start(&api, &FAULT, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    api.fault(kind, fault, 0);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + 3 * SEC, within);
    let log = full_log(&mut p);
    let fallbacks = log.matches("falling back to --drain-delay").count();
    p.check(fallbacks == 1, format!("expected one fallback line, got {fallbacks}"));
    (api, p, log)
}

#[test]
fn fault_hang_on_pod_get() {
    fault_case("get-pod", "hang", "timed out");
}

#[test]
fn fault_list_forbidden() {
    fault_case("list", "status:403", "403 Forbidden — grant list/watch on endpointslices.discovery.k8s.io");
}

#[test]
fn fault_list_server_error() {
    fault_case("list", "status:500", "500 InternalError");
}

#[test]
fn fault_list_reset() {
    fault_case("list", "reset", "connection");
}

#[test]
fn fault_list_garbage_json() {
    fault_case("list", "garbage", "malformed EndpointSliceList");
}

#[test]
fn fault_unauthorized_everywhere() {
    fault_case("any", "status:401", "401");
}

#[test]
fn fault_watch_reset_mid_stream() {
    fault_case("watch", "reset_mid_stream", "the EndpointSlice watch broke");
}

#[test]
fn fault_watch_garbage_event() {
    fault_case("watch", "garbage_event", "malformed watch event");
}

#[test]
fn fault_watch_hang() {
    fault_case("watch", "hang", "timed out");
}

#[test]
fn fault_api_unreachable() {
    let api = ApiServer::web1();
    let mut p = lastcall(&api, &FAULT).env("KUBERNETES_SERVICE_PORT", "1").app(&["signals"]).spawn();
    p.expect_prefix("ready");
    api.delete_pod("web-1", None, Flip::Now);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + 3 * SEC, 15 * SEC);
    let log = full_log(&mut p);
    assert!(log.contains("connection refused"), "{log}");
}

#[test]
fn fault_tls_wrong_ca() {
    let api = ApiServer::web1();
    let other = ApiServer::start(); // its CA did not sign `api`'s certificate
    let mut p = lastcall_with_ca(&api, &other.ca_path(), &FAULT).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    api.delete_pod("web-1", None, Flip::Now);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + 3 * SEC, 15 * SEC);
    let log = full_log(&mut p);
    assert!(log.contains("UnknownIssuer") || log.contains("certificate"), "{log}");
}

/// One cut mid-event is survived: the watch resumes from the last
/// resourceVersion and the flip is still seen (no fallback).
#[test]
fn single_stream_cut_resumes() {
    let api = ApiServer::web1();
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    api.fault("watch", "reset_mid_stream", 1);
    let sent = p.signal(SIGTERM);
    p.check(api.wait_requests("watch", 2, GUARD), "the watch was not resumed");
    wait_watch(&mut p, &api);
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    let st = api.stats();
    assert_eq!((st.count("list"), st.count("watch")), (1, 2), "{:?}", st.requests);
    let log = p.stderr();
    assert!(log.contains("watch broke: resuming from the last resourceVersion") && !log.contains("falling back"), "{log}");
}

/// 429 Too Many Requests (API Priority and Fairness) on the LIST: retried
/// after Retry-After, the drain still observes the flip.
#[test]
fn throttled_list_is_retried() {
    let api = ApiServer::web1();
    let mut p = start(&api, &OBSERVE, &["signals"]);
    api.fault("list", "status:429", 1);
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(500));
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, deleted + 500 * MS + PROPAGATION, 10 * SEC);
    assert_eq!(api.stats().count("list"), 2);
}

/// Watching forbidden (RBAC grants get/list only): lastcall polls at
/// --poll-interval and still sees the flip.
#[test]
fn watch_forbidden_polls() {
    let api = ApiServer::web1();
    api.rbac_verbs(&["get", "list"], &["get"]);
    let mut p = start(&api, &[&OBSERVE[..], &["--poll-interval", "200ms"]].concat(), &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    let sent = p.signal(SIGTERM);
    p.check(api.wait_requests("list", 3, GUARD), "lastcall is not polling");
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    assert!(p.stderr().contains("cannot watch the EndpointSlices: polling"));
}

/// Without `get` on pods the drain still works, bounded by the grace period.
#[test]
fn without_pod_permission() {
    let api = ApiServer::web1();
    api.rbac(true, false);
    let mut p = lastcall(&api, &OBSERVE).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    p.check(api.wait_requests("get-pod", 1, GUARD), "no startup check");
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(500));
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, deleted + 500 * MS + PROPAGATION, 10 * SEC);
    assert!(p.stderr().contains("no permission to get the own pod"));
}

// ---------------------------------------------------------------------------
// Startup check, other modes, other networks
// ---------------------------------------------------------------------------

/// --strict and no permission to list EndpointSlices: exit 78 before the
/// app starts, with one line naming the missing permission.
#[test]
fn strict_forbidden_exits_78() {
    let api = ApiServer::web1();
    api.rbac(false, false);
    let mut p = lastcall(&api, &["--strict"]).app(&["signals"]).spawn();
    p.expect_exit_code(78);
    let out = p.lines();
    assert!(out.is_empty(), "the app was started: {out:?}");
    let log = p.stderr();
    assert!(
        log.contains("k8s drain: cannot list endpointslices in namespace default: 403 Forbidden — grant list/watch on endpointslices.discovery.k8s.io (see deploy/rbac.yaml)"),
        "{log}"
    );
}

/// Without --strict the same problem is one warning, and the app runs.
#[test]
fn forbidden_without_strict_warns() {
    let api = ApiServer::web1();
    api.rbac(false, false);
    let mut p = lastcall(&api, &[]).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    wait_log(&mut p, "403 Forbidden — grant list/watch");
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
}

/// Outside a cluster with --strict: exit 78 and say what is missing.
#[test]
fn strict_not_in_cluster_exits_78() {
    let mut p = Run::new(Mode::Pid1).opts(["--drain", "k8s", "--strict"]).env("POD_NAME", "web-1").app(&["signals"]).spawn();
    p.expect_exit_code(78);
    let log = p.stderr();
    assert!(log.contains("KUBERNETES_SERVICE_HOST") || log.contains("namespace"), "{log}");
}

/// Outside a cluster, the first thing said is that: not the namespace or
/// token that are missing because of it.
#[test]
fn not_in_a_cluster_is_named_first() {
    let mut p = Run::new(Mode::Subreaper).opts(["--drain", "k8s", "--strict"]).app(&["signals"]).spawn();
    p.expect_exit_code(78);
    let log = p.stderr();
    assert!(log.contains("not in a cluster"), "{log}");
    assert!(!log.contains("namespace"), "{log}");
}

/// `lastcall drain` (preStop exec hook, no lastcall PID 1 to ask) runs the
/// k8s strategy itself and exits 0 once the endpoint is gone.
#[test]
fn prestop_drain_mode() {
    let api = ApiServer::web1();
    let dir = api.dir();
    let (token, ca) = (dir.join("token"), dir.join("ca.crt"));
    let mut args: Vec<std::ffi::OsString> =
        ["drain", "--drain", "k8s", "--grace-period", "30s", "--drain-delay", "20s", "--propagation-delay", "1s"]
            .iter()
            .map(Into::into)
            .collect();
    args.extend(["--k8s-token-file".into(), token.into_os_string(), "--k8s-ca-file".into(), ca.into_os_string()]);
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(1000));
    let mut run = Run::new(Mode::Subreaper).raw(args).env("POD_NAME", "web-1").env("POD_IP", "10.0.0.5");
    for (k, v) in api.env() {
        run = run.env(&k, &v);
    }
    let mut p = run.spawn();
    let exited = p.expect_exit_code(0);
    p.check(exited >= deleted + 1000 * MS + PROPAGATION, format!("drain returned {} after the delete", secs(exited - deleted)));
    p.check(exited - deleted < 10 * SEC, "drain took too long");
    assert!(p.stderr().contains("endpoint out of service in every slice"));
}

/// `lastcall drain` without a PID 1 adopts a deletionTimestamp sooner than
/// `--grace-period`: with a 5 s deletion grace (kubectl delete
/// --grace-period=5), a 60 s grace period and an endpoint that never flips,
/// the hook returns by 5 − kill margin (1 s) − stop budget (2 s) = 2 s after
/// the delete, not at the 60 s plan's drain end.
#[test]
fn prestop_drain_mode_adopts_a_sooner_deletion_deadline() {
    let api = ApiServer::web1();
    let dir = api.dir();
    let (token, ca) = (dir.join("token"), dir.join("ca.crt"));
    let mut args: Vec<std::ffi::OsString> =
        ["drain", "--drain", "k8s", "--grace-period", "60s", "--kill-margin", "1s", "--stop-budget", "2s", "--drain-delay", "50s"]
            .iter()
            .map(Into::into)
            .collect();
    args.extend(["--k8s-token-file".into(), token.into_os_string(), "--k8s-ca-file".into(), ca.into_os_string()]);
    let deleted = mono_ns();
    api.delete_pod("web-1", Some(5), Flip::Never);
    let mut run = Run::new(Mode::Subreaper).raw(args).env("POD_NAME", "web-1").env("POD_IP", "10.0.0.5");
    for (k, v) in api.env() {
        run = run.env(&k, &v);
    }
    let mut p = run.spawn();
    let exited = p.expect_exit_code(0);
    // The deletionTimestamp has second precision: the kill instant is 4-5 s away.
    p.check(exited >= deleted + SEC, format!("drain returned {} after the delete: too early", secs(exited - deleted)));
    p.check(exited < deleted + 4 * SEC, format!("drain returned {} after the delete: past the 2 s budget", secs(exited - deleted)));
}

/// An API server on ::1 reached through KUBERNETES_SERVICE_HOST=::1 (an IPv6
/// cluster: the host goes in brackets).
#[test]
fn ipv6_api_server() {
    let api = ApiServer::start_with(&StartOptions { ipv6: true, ..Default::default() });
    api.add_pod("web-1", "10.0.0.5", 30);
    api.add_service("web", 1, false, "IPv4");
    api.add_endpoint("web", 0, "web-1");
    let mut p = start(&api, &OBSERVE, &["signals"]);
    wait_log(&mut p, "k8s drain ready");
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(300));
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, deleted + 300 * MS + PROPAGATION, 10 * SEC);
}

/// --service narrows the LIST and WATCH with a label selector.
#[test]
fn service_selector_narrows_requests() {
    let api = ApiServer::web1();
    api.add_service("admin", 1, false, "IPv4");
    api.add_endpoint("admin", 0, "web-1");
    let mut p = start(&api, &[&OBSERVE[..], &["--service", "web"]].concat(), &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    let sent = p.signal(SIGTERM);
    wait_watch(&mut p, &api);
    // Only web's slice flips; admin's entry stays ready but is not selected.
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    let st = api.stats();
    assert!(
        st.requests
            .iter()
            .filter(|r| r.kind == "list" || r.kind == "watch")
            .all(|r| r.path.contains("labelSelector=kubernetes.io%2Fservice-name%3Dweb")),
        "{:?}",
        st.requests
    );
}

// ---------------------------------------------------------------------------
// Hostile peers and a broken API (issue 12)
// ---------------------------------------------------------------------------

/// `lastcall drain` (no PID 1) pointed at `api`, with `opts` after the
/// credentials; `env` on top of the pod's Downward API variables.
fn drain_hook(api: &ApiServer, opts: &[&str]) -> Run {
    let dir = api.dir();
    let mut args: Vec<std::ffi::OsString> = vec!["drain".into(), "--drain".into(), "k8s".into()];
    args.extend([
        "--k8s-token-file".into(),
        dir.join("token").into_os_string(),
        "--k8s-ca-file".into(),
        dir.join("ca.crt").into_os_string(),
    ]);
    args.extend(opts.iter().map(Into::into));
    let mut run = Run::new(Mode::Subreaper).raw(args).env("POD_NAME", "web-1").env("POD_IP", "10.0.0.5");
    for (k, v) in api.env() {
        run = run.env(&k, &v);
    }
    run
}

/// A peer on the path to the API that drips bytes: it answers the
/// ClientHello with the header of a 16 KiB record, then sends one byte of it
/// every 1.5 s, each well within any per-read timeout. Only a deadline on the
/// whole exchange ends it: the drain falls back at its 3 s fallback (retrying
/// until then), not at the drain deadline (27 s).
#[test]
fn drip_fed_tls_handshake_cannot_hold_the_drain() {
    drip_falls_back_at_the_fallback("connect", "drip_tls:1500", Some("fault=drip_tls"));
}

/// The pod is deleted but its endpoint never flips, and the API peer drips
/// (`fault` on requests of `kind`): TERM reaches the app at the 3 s fallback
/// (not at the drain deadline), after one fallback line naming the timeout.
fn drip_falls_back_at_the_fallback(kind: &str, fault: &str, server_log: Option<&str>) {
    let (api, mut p, log) = fault_then_fallback(kind, fault, 6 * SEC);
    p.check(log.contains("timed out"), "the fallback line does not say the request timed out");
    if let Some(needle) = server_log {
        p.check(api.log().contains(needle), "the server never dripped");
    }
}

/// The same drip inside a response: the LIST's headers come at once, its
/// body one byte every 1.5 s.
#[test]
fn drip_fed_list_body_cannot_hold_the_drain() {
    drip_falls_back_at_the_fallback("list", "drip_body:1500", None);
}

/// The drip inside TLS records: the handshake and the response head at full
/// speed, then the body's records one byte every 1.5 s (no record ever
/// completes, so no read returns data).
#[test]
fn drip_fed_tls_records_in_the_body_cannot_hold_the_drain() {
    drip_falls_back_at_the_fallback("connect", "drip_tls_body:1500", None);
}

/// `lastcall drain` without a PID 1 against a drip-feeding peer, with a
/// fallback (20 s) later than its plan's end (10 s grace − 1 s margin − 1 s
/// stop budget = 8 s): the strategy itself ends by the plan's end.
#[test]
fn prestop_drain_against_a_drip_feeding_peer_ends_at_its_deadline() {
    let api = ApiServer::web1();
    api.delete_pod("web-1", None, Flip::Never);
    api.fault("connect", "drip_tls:1500", 0);
    let started = mono_ns();
    let mut p = drain_hook(&api, &["--grace-period", "10s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "20s"]).spawn();
    let exited = p.expect_exit_code(0);
    p.check(
        exited - started < 8 * SEC + 1500 * MS,
        format!("drain returned {} after its start, past its 8 s plan", secs(exited - started)),
    );
    p.check(exited - started >= 7 * SEC, format!("drain returned after {}: before its plan's end", secs(exited - started)));
}

/// `--k8s-api` with a host name whose DNS server never answers: the lookup
/// is bounded by the request's deadline too (it runs on a helper thread that
/// is abandoned), so the drain falls back at its 3 s fallback. The resolver
/// configuration is swapped in a private mount namespace.
#[test]
fn dns_lookup_that_never_answers_cannot_hold_the_drain() {
    let api = ApiServer::web1();
    api.delete_pod("web-1", None, Flip::Never);
    // A name server that takes queries and never answers (port 53: the
    // resolver has no other; an address of this test run's own).
    let pid = std::process::id();
    let ns_addr = format!("127.77.{}.{}", (pid >> 8) & 255, (pid & 255).max(1));
    let dns = std::net::UdpSocket::bind((ns_addr.as_str(), 53)).unwrap_or_else(|e| panic!("bind {ns_addr}:53 (root needed): {e}"));
    let tmp = support::TempDir::new("k8s-dns");
    std::fs::write(tmp.join("resolv.conf"), format!("nameserver {ns_addr}\noptions timeout:30 attempts:2\n")).unwrap();
    let dir = api.dir();
    let script = format!(
        "mount --bind {resolv} /etc/resolv.conf && exec {bin} drain --drain k8s --k8s-api https://api.lastcall-test.invalid:{port} \
         --k8s-token-file {dir}/token --k8s-ca-file {dir}/ca.crt --namespace default --pod-name web-1 --pod-ip 10.0.0.5 \
         --grace-period 30s --kill-margin 1s --stop-budget 2s --drain-delay 3s",
        resolv = tmp.join("resolv.conf").display(),
        bin = support::lastcall().display(),
        port = api.port(),
        dir = dir.display(),
    );
    let started = mono_ns();
    let mut child = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LASTCALL_CONTROL_SOCKET", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn unshare --mount");
    // Bounded wait for the exit (the hook would otherwise take the resolver's 60 s).
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if mono_ns() - started < GUARD.as_nanos() as u64 => {
                std::thread::sleep(Duration::from_millis(20)); // no event to block on with a bound: poll the child
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let took = mono_ns() - started;
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    drop(dns);
    assert!(status.is_some_and(|s| s.success()), "drain did not end with 0 within {}: {status:?}\n{log}", secs(took));
    assert!(took < 6 * SEC, "drain took {}, not bounded by the 3 s fallback\n{log}", secs(took));
    assert!(log.contains("falling back to --drain-delay") && log.contains("api.lastcall-test.invalid"), "{log}");
}

/// The API server restarts during the watch: killed, back 2 s later, and
/// answering LIST and WATCH with 429 for 0.5 s more while its watch cache
/// fills. lastcall keeps trying (re-list, then watch, with backoff) and sees
/// the flip made after the restart, long before its 20 s fallback; the
/// retries stay few.
#[test]
fn api_server_restart_observation_continues() {
    let (api, mut p, sent) = watching_after_stop();
    api.restart(Duration::from_secs(2), Duration::from_millis(500));
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    let log = full_log(&mut p);
    p.check(!log.contains("falling back"), "lastcall gave up observing");
    p.check(log.contains("endpoint out of service in every slice"), "the flip was not seen");
    let st = api.stats();
    p.check(st.total() <= 15, format!("{} requests for one drain with one restart: {:?}", st.total(), st.requests));
}

/// The API server is down for longer than the fallback (3 s): lastcall keeps
/// trying until the fallback ends, then stops the app, once, saying why, and
/// before the API comes back (5 s).
#[test]
fn api_server_down_past_the_fallback_ends_at_the_fallback() {
    let api = ApiServer::web1();
    let mut p = start(&api, &FAULT, &["signals"]);
    api.delete_pod("web-1", None, Flip::Never);
    let sent = p.signal(SIGTERM);
    wait_watch(&mut p, &api);
    api.restart(Duration::from_secs(5), Duration::ZERO);
    let back = mono_ns();
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, sent + 3 * SEC, 5 * SEC);
    p.check(got < back, "the fallback waited for the API to come back");
    let log = full_log(&mut p);
    p.check(log.matches("falling back to --drain-delay").count() == 1, "expected one fallback line");
    p.check(log.contains("connection refused"), "the fallback line does not say why");
}

/// A restart without a gap: the watch is cut, the resumed watch from the old
/// resourceVersion gets 410 from the new watch cache, lastcall lists again
/// and watches from there, and sees the flip.
#[test]
fn api_server_quick_restart_relists_after_410() {
    let (api, mut p, sent) = watching_after_stop();
    api.restart(Duration::ZERO, Duration::ZERO);
    p.check(api.wait_requests("list", 2, GUARD), "no LIST after the restart");
    wait_watch(&mut p, &api);
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, flipped + PROPAGATION, 10 * SEC);
    let log = full_log(&mut p);
    p.check(!log.contains("falling back"), "lastcall gave up observing");
}

/// VmHWM of `pid` in KiB.
fn peak_kib(pid: i32) -> u64 {
    let v = support::status_field(pid, "VmHWM").unwrap_or_else(|| panic!("no VmHWM for pid {pid}"));
    v.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bad VmHWM {v:?}"))
}

/// A namespace with 5,000 endpoints in 1,000 EndpointSlices (1,000 small
/// Services; three LIST pages) and no `--service`: the drain filters page by
/// page and keeps only this pod's entries, so lastcall's peak memory grows
/// by far less than the LIST's size. Prints the figures (docs/kubernetes.md
/// quotes them from the release build: `cargo test --release --test k8s
/// big_namespace -- --nocapture`).
#[test]
fn big_namespace_drain_memory_stays_small() {
    let api = ApiServer::web1();
    let bulk = api.add_bulk(1000, 5);
    assert_eq!(bulk["endpoints"], json!(5000));
    let opts = ["--grace-period", "12s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "10s", "--propagation-delay", "0s"];
    let mut p = start(&api, &opts, &["signals", "--exit-on", "none"]);
    let pid = p.lastcall_pid();
    let before = peak_kib(pid);
    api.delete_pod("web-1", None, Flip::AfterMs(300));
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    let after = peak_kib(pid);
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let pss = rollup.lines().find(|l| l.starts_with("Pss:")).unwrap_or("Pss: ?").split_whitespace().nth(1).unwrap_or("?").to_string();
    let lists = api.stats().count("list");
    eprintln!(
        "big namespace: VmHWM {before} KiB before the drain, {after} KiB after (+{} KiB); Pss after {pss} KiB; {lists} LIST requests",
        after - before
    );
    let app_pid = p.lines_starting("ready")[0].pid();
    let app = p.host_pid(app_pid);
    support::kill(app, libc::SIGKILL);
    p.wait();
    let log = p.stderr();
    assert!(log.contains("endpoint out of service in every slice"), "{log}");
    assert!(lists >= 3, "expected the LIST in pages of 500, got {lists} requests");
    // The LIST bodies are about 2.5 MB; decoding them whole costs several times that.
    assert!(after - before < 2048, "the drain raised lastcall's peak memory by {} KiB", after - before);
}

/// An endpoint whose targetRef names another pod is not this pod's, even
/// with this pod's IP (hostNetwork pods share the node's address, and IPs
/// are reused): the drain ends with web-1's own flip, instead of waiting
/// until the deadline for other-1's endpoint.
#[test]
fn endpoint_of_another_pod_with_the_same_ip_is_not_ours() {
    let api = ApiServer::web1();
    api.add_pod("other-1", "10.0.0.5", 30);
    api.add_service("other", 1, false, "IPv4");
    api.add_endpoint("other", 0, "other-1");
    let mut p = start(&api, &OBSERVE, &["signals"]);
    let deleted = mono_ns();
    api.delete_pod("web-1", None, Flip::AfterMs(500));
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    check_term(&mut p, sent, got, deleted + 500 * MS + PROPAGATION, 10 * SEC);
    let log = full_log(&mut p);
    assert!(log.contains("endpoint out of service in 1 slice after"), "{log}");
}

/// An ordinary delete: the pod's deletionGracePeriodSeconds equals
/// --grace-period, so the kubelet's SIGKILL comes that long after it began
/// stopping the pod, as lastcall planned. The deletionTimestamp, in whole
/// seconds, is up to 1 s earlier than the moment it stands for; taking it as
/// is would cut the app's stop time and log a deadline change on every
/// delete. The delete is made late in a wall-clock second, where the
/// truncation takes the most. The app ignores TERM, so lastcall's SIGKILL
/// shows when it planned the kill.
#[test]
fn ordinary_delete_keeps_the_planned_deadline() {
    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 8);
    api.add_service("web", 1, false, "IPv4");
    api.add_endpoint("web", 0, "web-1");
    let opts = ["--grace-period", "8s", "--kill-margin", "1s", "--stop-budget", "2s", "--drain-delay", "2s", "--propagation-delay", "1s"];
    let mut p = start(&api, &opts, &["signals", "--exit-on", "none"]);
    // The subject is the wall clock's second boundary: wait for the last
    // 300 ms of a second (a sleep, since no event marks it).
    let frac = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
    while frac() < 700 {
        std::thread::sleep(Duration::from_millis(700 - u64::from(frac())));
    }
    api.delete_pod("web-1", None, Flip::Now);
    let sent = p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    let st = p.wait();
    p.check(st.code() == Some(128 + 9), format!("lastcall exited {st:?}, expected 137 (the app was SIGKILLed)"));
    let exited = p.exited_at();
    // Planned: KILL at the stop signal + 8 s − 1 s margin.
    p.check(
        exited >= sent + 7 * SEC - 100 * MS,
        format!("the app was killed {} after the stop signal, before the planned 7 s", secs(exited - sent)),
    );
    let log = p.stderr();
    assert!(!log.contains("adopting it"), "{log}");
}
