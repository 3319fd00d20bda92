//! `lastcall explain` (issue 14, item 3) and the Kubernetes Events of
//! `--events` (item 4), black-box: the real binary against the test API
//! server double (tests/k8s/apiserver.py), which answers
//! SelfSubjectAccessReviews from its RBAC switches, serves Services and
//! records the Events created.
//!
//! explain runs as a plain process (it starts nothing); its JSON answer is
//! parsed and its fields asserted, with its exit status: 0 when the
//! configured drain can work, 78 with the problems otherwise. The events
//! tests run lastcall as PID 1 of a fresh PID namespace with testapp, as in
//! tests/k8s.rs, and wait for events (app lines, exits), never for time.

#![cfg(feature = "k8s")]

mod support;

use libc::SIGTERM;
use serde_json::{json, Value};
use support::apiserver::{ApiServer, Flip};
use support::{Mode, Proc, Run, GUARD, MS, SEC};

/// lastcall pointed at `api` the in-cluster way (KUBERNETES_SERVICE_HOST/
/// PORT, the token and CA files), with the Downward API env of pod web-1.
fn in_cluster(run: Run, api: &ApiServer) -> Run {
    let mut run = run
        .env("POD_NAME", "web-1")
        .env("POD_IP", "10.0.0.5")
        .env("LASTCALL_K8S_TOKEN_FILE", api.token_path().to_str().unwrap())
        .env("LASTCALL_K8S_CA_FILE", api.ca_path().to_str().unwrap());
    for (k, v) in api.env() {
        run = run.env(&k, &v);
    }
    run
}

/// `lastcall explain --format json OPTS` (in the cluster of `api`, if any):
/// its exit code and its answer.
fn explain(api: Option<&ApiServer>, opts: &[&str]) -> (i32, Value, Proc) {
    explain_with(api, opts, &[])
}

fn explain_with(api: Option<&ApiServer>, opts: &[&str], env: &[(&str, &str)]) -> (i32, Value, Proc) {
    let argv: Vec<&str> = ["explain", "--format", "json"].into_iter().chain(opts.iter().copied()).collect();
    let mut run = Run::new(Mode::Subreaper).raw(argv);
    if let Some(api) = api {
        run = in_cluster(run, api);
    }
    for (k, v) in env {
        run = run.env(k, v);
    }
    let mut p = run.spawn();
    p.expect_eof(GUARD);
    let code = p.wait().code().unwrap_or(-1);
    let out: Vec<String> = p.lines().into_iter().map(|l| l.text).collect();
    p.check(out.len() == 1, format!("the JSON answer is not one line: {out:?}"));
    let v: Value = serde_json::from_str(&out[0]).unwrap_or_else(|e| p.fail(format!("not JSON ({e}): {}", out[0])));
    p.check(v["ok"] == json!(code == 0), format!("\"ok\" and the exit code {code} disagree: {v}"));
    (code, v, p)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect()).unwrap_or_default()
}

/// The one warning (or problem) containing `needle`.
#[track_caller]
fn one_with(p: &mut Proc, list: &Value, needle: &str) -> String {
    let hits: Vec<String> = strings(list).into_iter().filter(|w| w.contains(needle)).collect();
    p.check(hits.len() == 1, format!("expected one entry with {needle:?} in {list}"));
    hits[0].clone()
}

#[track_caller]
fn setting<'a>(p: &mut Proc, v: &'a Value, option: &str) -> &'a Value {
    match v["settings"].as_array().and_then(|s| s.iter().find(|s| s["option"] == option)) {
        Some(s) => s,
        None => p.fail(format!("no setting {option} in {}", v["settings"])),
    }
}

// ---------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------

/// Everything in order: exit 0, no problem, no warning; who the pod is and
/// where each part came from; the permissions (asked with
/// SelfSubjectAccessReviews); the pod's entry and its conditions; the
/// Service; the deadlines. It only reads: no watch, no event.
#[test]
fn all_good() {
    let api = ApiServer::web1();
    let uid = api.get_object("pods", "web-1")["metadata"]["uid"].clone();
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s"]);
    p.check(code == 0 && v["problems"] == json!([]) && v["warnings"] == json!([]), format!("{v:#}"));
    let k = &v["kubernetes"];
    assert_eq!(k["api"], api.url());
    let pod = &k["pod"];
    assert_eq!((&pod["name"], &pod["name_from"]), (&json!("web-1"), &json!("POD_NAME")), "{pod}");
    assert_eq!((&pod["namespace"], &pod["namespace_from"]), (&json!("default"), &json!("namespace file")), "{pod}");
    assert_eq!((&pod["ips"], &pod["ips_from"], &pod["uid"]), (&json!(["10.0.0.5"]), &json!("POD_IP"), &uid), "{pod}");
    assert_eq!((&pod["termination_grace_period_s"], &pod["deletion_timestamp"]), (&json!(30), &Value::Null), "{pod}");
    let asked: Vec<(String, bool)> = k["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (format!("{} {}", q["verb"].as_str().unwrap(), q["resource"].as_str().unwrap()), q["allowed"] == json!(true)))
        .collect();
    assert_eq!(
        asked,
        [("get pods", true), ("list endpointslices.discovery.k8s.io", true), ("watch endpointslices.discovery.k8s.io", true)]
            .map(|(q, a)| (q.to_string(), a))
    );
    let ep = &k["endpoints"];
    assert_eq!(ep.as_array().map(Vec::len), Some(1), "{ep}");
    assert_eq!(
        (&ep[0]["service"], &ep[0]["in_service"], &ep[0]["ready"], &ep[0]["serving"], &ep[0]["terminating"]),
        (&json!("web"), &json!(true), &json!(true), &json!(true), &json!(false))
    );
    assert_eq!(k["services"], json!([{"name": "web", "type": "ClusterIP", "publish_not_ready_addresses": false}]));
    let d = &v["drain"];
    assert_eq!(d["strategies"], json!(["k8s"]));
    let at = |f: &str| d[f].as_i64().unwrap_or(-1);
    assert_eq!(
        [
            at("grace_period_ms"),
            at("drain_window_ms"),
            at("fallback_ends_ms"),
            at("app_stop_signal_by_ms"),
            at("lastcall_sigkill_ms"),
            at("kubelet_sigkill_ms")
        ],
        [30_000, 23_000, 15_000, 23_000, 28_000, 30_000]
    );
    let st = api.stats();
    assert_eq!(
        (st.count("ssar"), st.count("get-pod"), st.count("list"), st.count("get-service"), st.count("watch"), st.count("create-event")),
        (3, 1, 1, 1, 0, 0),
        "{:?}",
        st.requests
    );
}

/// No RBAC at all: listing the slices is forbidden (a problem: exit 78),
/// getting the pod too (a warning); each line says what to grant.
#[test]
fn rbac_denied() {
    let api = ApiServer::web1();
    api.rbac(false, false);
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s", "--service", "web"]);
    p.check(code == 78, format!("exit {code}: {v:#}"));
    let problem = one_with(&mut p, &v["problems"], "cannot list endpointslices");
    assert!(problem.contains("403 Forbidden") && problem.contains("deploy/rbac.yaml"), "{problem}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(1), "{v:#}");
    one_with(&mut p, &v["warnings"], "may not get pod web-1");
    // What the list would have told is not guessed at.
    p.check(strings(&v["warnings"]).iter().all(|w| !w.contains("in no Service") && !w.contains("does not list")), format!("{v:#}"));
    one_with(&mut p, &v["warnings"], "may not watch endpointslices.discovery.k8s.io");
    let allowed: Vec<&Value> = v["kubernetes"]["permissions"].as_array().unwrap().iter().map(|q| &q["allowed"]).collect();
    assert_eq!(allowed, [&json!(false); 3]);
}

/// List allowed, watch not: the drain works by polling, so a warning only.
#[test]
fn watch_denied_is_a_warning() {
    let api = ApiServer::web1();
    api.rbac_verbs(&["list"], &["get"]);
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let w = one_with(&mut p, &v["warnings"], "may not watch");
    assert!(w.contains("polls"), "{w}");
}

/// A cluster that does not let the ServiceAccount ask: the real GET and
/// LIST still tell what is needed; what could not be asked is said.
#[test]
fn access_reviews_forbidden() {
    let api = ApiServer::web1();
    api.rbac_set("selfsubjectaccessreviews", json!(false));
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let w = one_with(&mut p, &v["warnings"], "cannot ask the API server what the ServiceAccount may do");
    assert!(w.contains("403"), "{w}");
    assert!(v["kubernetes"]["permissions"].as_array().unwrap().iter().all(|q| q["allowed"].is_null()), "{v:#}");
    assert_eq!(v["kubernetes"]["endpoints"][0]["in_service"], json!(true));
}

/// publishNotReadyAddresses on one Service, a LoadBalancer Service with the
/// default 2 s propagation delay, and a pod whose
/// terminationGracePeriodSeconds is not --grace-period: three warnings,
/// each naming what to change; the drain works (exit 0).
#[test]
fn publish_not_ready_addresses_load_balancer_and_grace_mismatch() {
    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 60);
    api.add_service("web", 1, true, "IPv4");
    api.add_service_json(json!({"name": "edge", "type": "LoadBalancer", "selector": {"app": "web"}}));
    api.add_endpoint("web", 0, "web-1");
    api.add_endpoint("edge", 0, "web-1");
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let w = one_with(&mut p, &v["warnings"], "publishNotReadyAddresses");
    assert!(w.starts_with("Service web ") && w.contains("terminating"), "{w}");
    let w = one_with(&mut p, &v["warnings"], "LoadBalancer");
    assert!(w.starts_with("Service edge ") && w.contains("--propagation-delay is 2s"), "{w}");
    let w = one_with(&mut p, &v["warnings"], "terminationGracePeriodSeconds is 60");
    assert!(w.contains("--grace-period is 30s"), "{w}");
    let services = &v["kubernetes"]["services"];
    assert_eq!(
        *services,
        json!([{"name": "edge", "type": "LoadBalancer", "publish_not_ready_addresses": false},
               {"name": "web", "type": "ClusterIP", "publish_not_ready_addresses": true}])
    );
    // Behind a LoadBalancer the traffic strategy measures instead: no warning then.
    let (_, v, mut p) = explain(Some(&api), &["--drain", "k8s,traffic", "--grace-period", "60s"]);
    p.check(
        strings(&v["warnings"]).iter().all(|w| !w.contains("LoadBalancer") && !w.contains("terminationGracePeriodSeconds")),
        format!("{v:#}"),
    );
}

/// A pod no Service lists: the drain ends at once, which is worth a
/// warning (a selector that does not match); a --service that does not
/// exist is named.
#[test]
fn pod_in_no_service() {
    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 30);
    api.add_pod("other-1", "10.0.0.6", 30);
    api.add_service("other", 1, false, "IPv4");
    api.add_endpoint("other", 0, "other-1");
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let w = one_with(&mut p, &v["warnings"], "is in no Service");
    assert!(w.contains("among 1 EndpointSlices") && w.contains("selector"), "{w}");
    assert_eq!((&v["kubernetes"]["endpoints"], &v["kubernetes"]["services"]), (&json!([]), &json!([])));

    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s", "--service", "web"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    one_with(&mut p, &v["warnings"], "is in no Service (of --service web)");
    one_with(&mut p, &v["warnings"], "Service web (--service) does not exist in namespace default");
    // A Service that exists but does not list the pod.
    let (_, v, mut p) = explain(Some(&api), &["--drain", "k8s", "--service", "other"]);
    one_with(&mut p, &v["warnings"], "Service other (--service) does not list pod web-1");
}

/// Without `get` on services, explain says what it cannot tell (and the
/// drain, which does not need it, still works).
#[test]
fn services_forbidden_says_what_cannot_be_told() {
    let api = ApiServer::web1();
    api.rbac_set("services", json!(false));
    let (code, v, mut p) = explain(Some(&api), &["--drain", "k8s"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let svc = &v["kubernetes"]["services"][0];
    let error = svc["error"].as_str().unwrap_or_default();
    assert!(error.contains("403") && error.contains("cannot tell its type and publishNotReadyAddresses"), "{svc}");
}

/// A grace period that leaves nothing to drain is a problem (78); waits
/// longer than the drain window are warnings. The deadline arithmetic
/// follows deadline.rs (scaled kill margin and stop budget for short grace
/// periods). No API needed.
#[test]
fn grace_period_too_short() {
    let (code, v, mut p) =
        explain(None, &["--drain-delay", "3s", "--grace-period", "1s", "--kill-margin", "500ms", "--stop-budget", "500ms"]);
    p.check(code == 78, format!("exit {code}: {v:#}"));
    one_with(&mut p, &v["problems"], "--grace-period 1s leaves no time to drain");
    let d = &v["drain"];
    assert_eq!((&d["drain_window_ms"], &d["lastcall_sigkill_ms"], &d["kubelet_sigkill_ms"]), (&json!(0), &json!(500), &json!(1000)));

    let (code, v, mut p) = explain(None, &["--drain-delay", "15s", "--grace-period", "10s"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let w = one_with(&mut p, &v["warnings"], "--drain-delay (15s) does not fit in the drain window of 6s");
    assert!(w.contains("cut short"), "{w}");
    let d = &v["drain"];
    let at = |f: &str| d[f].as_i64().unwrap_or(-1);
    // 10 s: kill margin 1 s, stop budget 3 s (scaled), so 6 s to drain.
    assert_eq!(
        [at("kill_margin_ms"), at("stop_budget_ms"), at("drain_window_ms"), at("drain_ends_by_ms"), at("lastcall_sigkill_ms")],
        [1000, 3000, 6000, 6000, 9000]
    );
    assert!(d["fallback_ends_ms"].is_null() && d["strategies"] == json!(["delay"]), "{d}");
}

/// `--events` with any strategy: explain asks whether events may be
/// created (a problem when not: they are configured and cannot work) and
/// reads the pod for its uid; it does not list slices for a drain that
/// does not watch them.
#[test]
fn events_permission() {
    let api = ApiServer::web1();
    let (code, v, mut p) = explain(Some(&api), &["--drain-delay", "3s", "--events"]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let asked: Vec<String> =
        v["kubernetes"]["permissions"].as_array().unwrap().iter().map(|q| format!("{} {}", q["verb"], q["resource"])).collect();
    assert_eq!(asked, [r#""get" "pods""#, r#""create" "events.events.k8s.io""#]);
    assert!(v["kubernetes"].get("endpoints").is_none(), "{v:#}");
    assert_eq!(api.stats().count("list"), 0);

    api.rbac_set("events", json!(false));
    let (code, v, mut p) = explain(Some(&api), &["--drain-delay", "3s", "--events"]);
    p.check(code == 78, format!("exit {code}: {v:#}"));
    one_with(&mut p, &v["problems"], "--events is on, but the ServiceAccount may not create events.events.k8s.io");
    assert_eq!(api.events(), Vec::<Value>::new(), "explain posts no event");
}

/// The k8s strategy outside a cluster: the first problem says so; without
/// the k8s strategy there is no Kubernetes section and nothing to complain
/// about.
#[test]
fn outside_a_cluster_and_without_the_k8s_strategy() {
    let (code, v, mut p) = explain(None, &["--drain", "k8s"]);
    p.check(code == 78, format!("exit {code}: {v:#}"));
    let problems = strings(&v["problems"]);
    p.check(problems.len() == 1 && problems[0].contains("not in a cluster: KUBERNETES_SERVICE_HOST"), format!("{v:#}"));

    let (code, v, mut p) = explain(None, &["--drain-delay", "3s"]);
    p.check(code == 0 && v["warnings"] == json!([]) && v.get("kubernetes").is_none(), format!("exit {code}: {v:#}"));
}

/// Each setting says where its value came from: the command line, the
/// environment (LASTCALL_*), the default, or nowhere; options may come
/// before the mode name too.
#[test]
fn settings_and_where_they_came_from() {
    let (code, v, mut p) = explain_with(None, &["--drain-delay", "3s"], &[("LASTCALL_PROPAGATION_DELAY", "5s")]);
    p.check(code == 0, format!("exit {code}: {v:#}"));
    let s = setting(&mut p, &v, "--drain-delay").clone();
    assert_eq!((&s["value"], &s["from"]), (&json!("3s"), &json!("flag")));
    let s = setting(&mut p, &v, "--propagation-delay").clone();
    assert_eq!((&s["value"], &s["from"]), (&json!("5s"), &json!("env LASTCALL_PROPAGATION_DELAY")));
    let s = setting(&mut p, &v, "--grace-period").clone();
    assert_eq!((&s["value"], &s["from"]), (&json!("30s"), &json!("default")));
    let s = setting(&mut p, &v, "--drain-timeout").clone();
    assert_eq!((&s["value"], &s["from"]), (&Value::Null, &json!("unset")));

    let mut p = Run::new(Mode::Subreaper).raw(["--grace-period", "9s", "explain", "--format", "json"]).spawn();
    p.expect_eof(GUARD);
    p.expect_exit_code(0);
    let out = p.lines().into_iter().map(|l| l.text).collect::<String>();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| p.fail(format!("{e}: {out}")));
    assert_eq!(v["drain"]["grace_period_ms"], json!(9000));
}

/// Under `kubectl exec POD -- /lastcall explain` in a container whose PID 1
/// is a lastcall started with options, explain does not see those options:
/// it says so, naming them.
#[test]
fn options_of_a_lastcall_pid1_are_pointed_out() {
    let mut pid1 = Run::new(Mode::Pid1).opts(["--grace-period", "45s", "--drain-delay", "1s"]).app(&["signals"]).spawn();
    pid1.expect_prefix("ready");
    let pid = pid1.lastcall_pid().to_string();
    let bin = support::lastcall();
    let mut p = Run::new(Mode::Subreaper)
        .raw_cmd(["nsenter", "--target", &pid, "--mount", "--pid", "--", bin.to_str().unwrap(), "explain", "--format", "json"])
        .spawn();
    p.expect_eof(GUARD);
    p.expect_exit_code(0);
    let out = p.lines().into_iter().map(|l| l.text).collect::<String>();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| p.fail(format!("{e}: {out}")));
    let w = one_with(&mut p, &v["warnings"], "PID 1 is a lastcall started with options of its own");
    assert!(w.contains("(--grace-period 45s --drain-delay 1s)"), "{w}");
    pid1.signal(SIGTERM);
    pid1.expect_exit_code(0);
}

/// The text form says the same as the JSON one, for people.
#[test]
fn text_for_people() {
    let api = ApiServer::web1();
    api.rbac_verbs(&["list"], &["get"]);
    let mut p = in_cluster(Run::new(Mode::Subreaper).raw(["explain", "--drain", "k8s"]), &api).spawn();
    p.expect_eof(GUARD);
    p.expect_exit_code(0);
    let text: Vec<String> = p.lines().into_iter().map(|l| l.text).collect();
    for want in [
        "lastcall explain: a dry run (nothing is drained, signalled or stopped)",
        "  --drain value=k8s from=flag",
        "  drain_window: 23s",
        "  lastcall_sigkill: 28s",
        "    name_from: POD_NAME",
        "    watch resource=endpointslices.discovery.k8s.io allowed=false",
        "problems: none",
        "ok: true",
    ] {
        p.check(text.iter().any(|l| l == want), format!("no line {want:?} in:\n{}", text.join("\n")));
    }
    p.check(text.iter().any(|l| l.starts_with("    web slice=web-") && l.contains(" in_service=true ready=true")), text.join("\n"));
    p.check(text.iter().any(|l| l.starts_with("  - the ServiceAccount may not watch")), text.join("\n"));
}

// ---------------------------------------------------------------------------
// --events
// ---------------------------------------------------------------------------

/// lastcall as PID 1 in the cluster of `api`, testapp `app`.
fn pid1(api: &ApiServer, opts: &[&str], app: &[&str]) -> Proc {
    let mut p = in_cluster(Run::new(Mode::Pid1).opts(opts), api).app(app).spawn();
    p.expect_prefix("ready");
    p
}

#[track_caller]
fn only_event<'a>(p: &mut Proc, events: &'a [Value], reason: &str) -> &'a Value {
    let hits: Vec<&Value> = events.iter().filter(|e| e["reason"] == reason).collect();
    p.check(hits.len() == 1, format!("expected one {reason} event in {events:#?}"));
    hits[0]
}

/// The drain observed the endpoint leave: one Normal event on the pod,
/// with the reason and the duration, under the pod's uid (so `kubectl
/// describe pod` shows it).
#[test]
fn normal_event_when_the_drain_ends() {
    let api = ApiServer::web1();
    let uid = api.get_object("pods", "web-1")["metadata"]["uid"].clone();
    let mut p = pid1(&api, &["--events", "--drain", "k8s", "--drain-delay", "20s", "--propagation-delay", "500ms"], &["signals"]);
    api.delete_pod("web-1", None, Flip::AfterMs(300));
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
    let events = api.events();
    p.check(events.len() == 1, format!("{events:#?}"));
    let e = only_event(&mut p, &events, "Drained");
    assert_eq!((&e["type"], &e["action"], &e["reportingController"]), (&json!("Normal"), &json!("Drain"), &json!("lastcall")));
    assert_eq!((&e["regarding"]["kind"], &e["regarding"]["name"], &e["regarding"]["uid"]), (&json!("Pod"), &json!("web-1"), &uid));
    let note = e["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("drain ended after ") && note.contains("k8s: endpoint out of service in 1 slice"), "{note}");
}

/// The drain fell back to --drain-delay (the pod is not being deleted: a
/// container restart): a Warning says why.
#[test]
fn warning_event_on_fallback() {
    let api = ApiServer::web1();
    let mut p = pid1(&api, &["--events", "--drain", "k8s", "--drain-delay", "1s"], &["signals"]);
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
    let events = api.events();
    let e = only_event(&mut p, &events, "DrainFallback");
    assert_eq!(e["type"], json!("Warning"));
    let note = e["note"].as_str().unwrap_or_default();
    assert!(note.contains("fallback delay after") && note.contains("is not being deleted"), "{note}");
    p.check(events.len() == 1, format!("{events:#?}"));
}

/// The app ignores the stop signal: lastcall's SIGKILL at its deadline is a
/// Warning, after the Normal drain event. Without --events, the same
/// shutdown creates no event and sends no request at all.
#[test]
fn warning_event_on_sigkill_and_none_without_events() {
    let opts = ["--drain-delay", "1s", "--grace-period", "4s", "--kill-margin", "1s", "--stop-budget", "1s"];
    let api = ApiServer::web1();
    let with: Vec<&str> = std::iter::once("--events").chain(opts).collect();
    let mut p = pid1(&api, &with, &["signals", "--ignore", "TERM"]);
    p.signal(SIGTERM);
    p.expect_exit_code(137);
    let events = api.events();
    let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap_or_default()).collect();
    p.check(reasons.len() == 2 && reasons.contains(&"Drained") && reasons.contains(&"Killed"), format!("{events:#?}"));
    let e = only_event(&mut p, &events, "Killed");
    assert_eq!((&e["type"], &e["action"]), (&json!("Warning"), &json!("Kill")));
    assert!(e["note"].as_str().unwrap_or_default().contains("lastcall sent SIGKILL at +"), "{e}");

    let api = ApiServer::web1();
    let mut p = pid1(&api, &opts, &["signals", "--ignore", "TERM"]);
    p.signal(SIGTERM);
    p.expect_exit_code(137);
    assert_eq!(api.events(), Vec::<Value>::new());
    assert_eq!(api.stats().total(), 0, "{:?}", api.stats().requests);
}

/// An API server that never answers the event's POST delays neither the
/// stop signal nor the SIGKILL; lastcall exits at most about a second
/// (the bounded wait for posts in flight) after the app is gone.
#[test]
fn a_hanging_event_post_delays_nothing() {
    let api = ApiServer::web1();
    api.fault("create-event", "hang", 0);
    let opts = ["--events", "--drain-delay", "1s", "--grace-period", "4s", "--kill-margin", "1s", "--stop-budget", "1s"];
    let mut p = pid1(&api, &opts, &["signals", "--ignore", "TERM"]);
    let sent = p.signal(SIGTERM);
    p.expect_exit_code(137);
    let exited = p.exited_at();
    let log = p.stderr();
    // SIGKILL at its deadline, 3 s after the stop signal, though the drain's
    // event was hanging since 1 s.
    let kill_ms: u64 = log
        .lines()
        .find(|l| l.contains("SIGKILL sent"))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("t_ms=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| p.fail(format!("no SIGKILL line in:\n{log}")));
    p.check((3000..3500).contains(&kill_ms), format!("SIGKILL at +{kill_ms} ms, not at its deadline (+3000 ms)"));
    p.check(exited - sent < 3 * SEC + 500 * MS + 1500 * MS, format!("lastcall exited {} ms after the stop signal", (exited - sent) / MS));
    assert!(api.wait_requests("create-event", 2, GUARD), "the two events were not even tried");
    assert_eq!(api.events(), Vec::<Value>::new());
}

/// The JSON answer of an explain run started some other way.
#[cfg(feature = "traffic")]
fn answer(p: &mut Proc) -> (i32, Value) {
    p.expect_eof(GUARD);
    let code = p.wait().code().unwrap_or(-1);
    let out: Vec<String> = p.lines().into_iter().map(|l| l.text).collect();
    p.check(out.len() == 1, format!("the JSON answer is not one line: {out:?}"));
    let v: Value = serde_json::from_str(&out[0]).unwrap_or_else(|e| p.fail(format!("not JSON ({e}): {}", out[0])));
    (code, v)
}

/// `kubectl exec POD -- /lastcall explain` in a pod whose PID 1 is lastcall
/// with an HTTP app: the traffic strategy would watch the app's listening
/// port, and the quiet period it would choose now is the automatic one.
#[cfg(feature = "traffic")]
#[test]
fn traffic_from_inside_the_pod() {
    let mut pid1 = Run::new(Mode::Pid1).opts(["--drain", "traffic"]).app(&["http", "--listen", "127.0.0.1:0"]).spawn();
    let ready = pid1.expect_prefix("ready");
    let port = ready.field("addr").and_then(|a| a.rsplit(':').next()).unwrap_or_else(|| pid1.fail("no addr= port")).to_string();
    let target = pid1.lastcall_pid().to_string();
    let bin = support::lastcall();
    let mut p = Run::new(Mode::Subreaper)
        .raw_cmd([
            "nsenter",
            "--target",
            &target,
            "--mount",
            "--pid",
            "--",
            bin.to_str().unwrap(),
            "explain",
            "--format",
            "json",
            "--drain",
            "traffic",
        ])
        .spawn();
    let (code, v) = answer(&mut p);
    let t = &v["traffic"];
    p.check(code == 0, format!("exit {code}: {v}"));
    p.check(t["ports"] == json!([port]), format!("watched ports {} (the app listens on {port})", t["ports"]));
    p.check(t["ports_from"] == json!("the app's listening sockets"), format!("{}", t["ports_from"]));
    let quiet = t["quiet_period_ms"].as_u64().unwrap_or(0);
    p.check((1000..=4000).contains(&quiet), format!("automatic quiet period {quiet} ms, not within 1-4 s"));
    p.check(t["quiet_period_why"].as_str().is_some_and(|w| !w.is_empty()), "no reason for the quiet period");
    pid1.signal(SIGTERM);
    pid1.expect_exit_code(0);
}

/// Nothing to watch (no app with a listening socket, no --port): the
/// traffic strategy could not observe, which is a problem (exit 78).
#[cfg(feature = "traffic")]
#[test]
fn traffic_with_nothing_to_watch_is_a_problem() {
    let mut p = Run::new(Mode::Pid1).raw(["explain", "--format", "json", "--drain", "traffic"]).spawn();
    let (code, v) = answer(&mut p);
    p.check(code == 78, format!("exit {code}: {v}"));
    let problems = strings(&v["problems"]);
    p.check(problems.iter().any(|s| s.starts_with("traffic: ") && s.contains("--port")), format!("problems {problems:?}"));
}
