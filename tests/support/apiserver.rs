//! Kubernetes API server test double for integration tests.
//!
//! Wraps `tests/k8s/apiserver.py` (Python 3 standard library + the `openssl` CLI): a TLS server on
//! 127.0.0.1 with its own CA that serves EndpointSlices (list/get/watch) and Pods (get/list/watch)
//! like kube-apiserver, Services (get), Events (create) and SelfSubjectAccessReviews, plus JSON
//! control commands on the child's stdin.
//!
//! ```ignore
//! mod support;
//! use support::apiserver::{ApiServer, Flip};
//!
//! let api = ApiServer::start();
//! let uid = api.add_pod("web-1", "10.0.0.5", 30);
//! let slices = api.add_service("web", 1, false, "IPv4");
//! api.add_endpoint("web", 0, "web-1");
//! // point lastcall at api.url() with token/ca.crt/namespace from api.dir() ...
//! api.wait_watches(1, Duration::from_secs(10));
//! api.delete_pod("web-1", None, Flip::Now);
//! assert_eq!(api.stats().count("list"), 1);
//! ```
//!
//! Synchronisation never sleeps: `start` blocks on the `READY port=N` line, every command blocks on
//! its one-line JSON reply, and `wait_watches` / `wait_requests` block inside the server until the
//! condition holds (or their timeout passes).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Script location, resolved at compile time so tests work from any working directory.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/k8s/apiserver.py");
/// How long to wait for `READY` (certificate generation included) and for a plain command reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Endpoint conditions as sent to the server. `None` leaves the field out of the JSON (nil).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl Conditions {
    /// A ready, serving, not terminating endpoint.
    pub const READY: Conditions = Conditions { ready: Some(true), serving: Some(true), terminating: Some(false) };
    /// What the EndpointSlice controller writes for a deleted pod that is still Ready.
    pub const TERMINATING: Conditions = Conditions { ready: Some(false), serving: Some(true), terminating: Some(true) };
    /// All three conditions nil (`"conditions": {}`).
    pub const NIL: Conditions = Conditions { ready: None, serving: None, terminating: None };

    fn put(&self, v: &mut Value) {
        v["ready"] = json!(self.ready);
        v["serving"] = json!(self.serving);
        v["terminating"] = json!(self.terminating);
    }
}

/// When `delete_pod` flips the pod's endpoints (podToEndpoint: terminating, not ready).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    /// Before the command replies.
    Now,
    /// From a server-side timer, this many milliseconds after the reply.
    AfterMs(u64),
    /// Never: only the pod gets its deletionTimestamp.
    Never,
}

/// One API request the server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query string, exactly as sent.
    pub path: String,
    /// `list`, `watch`, `get-slice`, `get-pod`, `list-pod`, `watch-pod`, `get-service`,
    /// `create-event`, `ssar` or `other`.
    pub kind: String,
}

/// Request accounting since start or the last `reset_stats`.
#[derive(Clone, Debug)]
pub struct Stats {
    pub counts: BTreeMap<String, u64>,
    pub requests: Vec<Request>,
    pub active_watches: u64,
    pub resource_version: String,
}

impl Stats {
    /// Requests of one kind (`list`, `watch`, `get-slice`, `get-pod`, `list-pod`, `watch-pod`, `other`).
    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }

    /// All requests, all kinds.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Options for [`ApiServer::start_with`].
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Written to `dir()/namespace`; also the service account's namespace in 403 messages.
    pub namespace: String,
    /// Listen on `::1` instead of `127.0.0.1`.
    pub ipv6: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions { namespace: "default".into(), ipv6: false }
    }
}

struct Io {
    stdin: ChildStdin,
    lines: Receiver<String>,
}

/// A running API server double. Killed, and its files removed, on drop.
pub struct ApiServer {
    child: Child,
    io: Mutex<Io>,
    root: PathBuf,
    dir: PathBuf,
    port: u16,
    ipv6: bool,
}

impl ApiServer {
    /// The tests' usual cluster: pod web-1 (10.0.0.5, 30 s grace) listed,
    /// ready, in the one slice of Service web.
    pub fn web1() -> ApiServer {
        let api = ApiServer::start();
        api.add_pod("web-1", "10.0.0.5", 30);
        api.add_service("web", 1, false, "IPv4");
        api.add_endpoint("web", 0, "web-1");
        api
    }

    /// Start a server on 127.0.0.1 in namespace `default`.
    pub fn start() -> ApiServer {
        Self::start_with(&StartOptions::default())
    }

    pub fn start_with(opts: &StartOptions) -> ApiServer {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let root = std::env::temp_dir().join(format!(
            "lastcall-apiserver-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos
        ));
        let dir = root.join("serviceaccount");
        std::fs::create_dir_all(&dir).expect("create apiserver temp dir");
        let log = std::fs::File::create(root.join("apiserver.log")).expect("create apiserver log");
        let python = std::env::var("LASTCALL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(python);
        cmd.arg(SCRIPT).arg("--dir").arg(&dir).arg("--namespace").arg(&opts.namespace);
        if opts.ipv6 {
            cmd.arg("--ipv6");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn python3 tests/k8s/apiserver.py");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = child.stdout.take().expect("child stdout");
        // A reader thread turns stdout into a channel so every wait has a timeout.
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut server = ApiServer { child, io: Mutex::new(Io { stdin, lines }), root, dir, port: 0, ipv6: opts.ipv6 };
        let first = server.recv_line(REPLY_TIMEOUT, "the READY line");
        server.port = first
            .strip_prefix("READY port=")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| server.fail(&format!("unexpected first line {first:?}")));
        server
    }

    /// `https://127.0.0.1:PORT` (or `https://[::1]:PORT`).
    pub fn url(&self) -> String {
        format!("https://{}:{}", if self.ipv6 { "[::1]" } else { "127.0.0.1" }, self.port)
    }

    pub fn host(&self) -> &'static str {
        if self.ipv6 {
            "::1"
        } else {
            "127.0.0.1"
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service-account directory: `token`, `ca.crt`, `namespace` (plus `ca.key`, `server.*`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The currently valid bearer token (as in `dir()/token`).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_path()).expect("read token")
    }

    pub fn namespace(&self) -> String {
        std::fs::read_to_string(self.dir.join("namespace")).expect("read namespace")
    }

    /// `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT` as a pod would see them.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("KUBERNETES_SERVICE_HOST".into(), self.host().into()), ("KUBERNETES_SERVICE_PORT".into(), self.port.to_string())]
    }

    /// Everything the server logged so far (one line per API request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("apiserver.log")).unwrap_or_default()
    }

    /// Send one control command; returns the reply as is (`{"ok":false,...}` included).
    pub fn cmd(&self, c: Value) -> Value {
        let mut timeout = REPLY_TIMEOUT;
        if let Some(ms) = c.get("timeout_ms").and_then(Value::as_u64) {
            timeout += Duration::from_millis(ms);
        }
        // The lock is released before failing so Drop/fail can run without deadlock.
        let reply = {
            let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
            match writeln!(io.stdin, "{c}").and_then(|_| io.stdin.flush()) {
                Err(e) => Err(format!("writing command {c}: {e}")),
                Ok(()) => io.lines.recv_timeout(timeout).map_err(|e| format!("no reply to {c}: {e:?}")),
            }
        };
        let line = reply.unwrap_or_else(|msg| self.fail(&msg));
        serde_json::from_str(&line).unwrap_or_else(|e| self.fail(&format!("bad reply {line:?}: {e}")))
    }

    /// Like [`cmd`](Self::cmd) but panics unless the reply has `"ok": true`.
    pub fn cmd_ok(&self, c: Value) -> Value {
        let reply = self.cmd(c.clone());
        if reply["ok"] != json!(true) {
            self.fail(&format!("command {c} failed: {reply}"));
        }
        reply
    }

    // ---- objects ----

    /// Add a Running, Ready pod with a fresh uid; returns the uid.
    pub fn add_pod(&self, name: &str, ip: &str, grace_seconds: u32) -> String {
        self.add_pod_json(json!({"name": name, "ip": ip, "grace": grace_seconds}))
    }

    pub fn add_pod_with_uid(&self, name: &str, ip: &str, uid: &str, grace_seconds: u32) -> String {
        self.add_pod_json(json!({"name": name, "ip": ip, "uid": uid, "grace": grace_seconds}))
    }

    /// Full form: `{"name", "ip" | "ips": [..], "uid", "grace", "ready", "node", "labels", "namespace"}`.
    pub fn add_pod_json(&self, mut spec: Value) -> String {
        spec["cmd"] = json!("add_pod");
        self.cmd_ok(spec)["uid"].as_str().unwrap_or_default().to_string()
    }

    /// Add a Service with `slices` EndpointSlices per family (`"IPv4"`, `"IPv6"` or `"dual"`);
    /// returns the generated slice names (index order used by `slice` arguments).
    pub fn add_service(&self, name: &str, slices: u32, publish_not_ready_addresses: bool, ip_family: &str) -> Vec<String> {
        let r = self.cmd_ok(json!({"cmd": "add_service", "name": name, "slices": slices,
            "publishNotReadyAddresses": publish_not_ready_addresses, "ip_family": ip_family}));
        strings(&r["slices"])
    }

    /// Full form: `{"name", "slices", "publishNotReadyAddresses", "ip_family", "type" (ClusterIP |
    /// NodePort | LoadBalancer), "selector", "ports", "labels"}`; returns the slice names. The
    /// Service object is served too (`GET .../services/NAME`).
    pub fn add_service_json(&self, mut spec: Value) -> Vec<String> {
        spec["cmd"] = json!("add_service");
        strings(&self.cmd_ok(spec)["slices"])
    }

    /// Add `pod` to slice number `slice` of `service` with the conditions the controller would
    /// compute from the pod; returns the slice name.
    pub fn add_endpoint(&self, service: &str, slice: usize, pod: &str) -> String {
        let r = self.cmd_ok(json!({"cmd": "add_endpoint", "service": service, "slice": slice, "pod": pod}));
        r["slice"].as_str().unwrap_or_default().to_string()
    }

    /// Add an endpoint with explicit conditions (`None` = field omitted).
    pub fn add_endpoint_with(&self, service: &str, slice: usize, pod: &str, c: Conditions) -> String {
        let mut v = json!({"cmd": "add_endpoint", "service": service, "slice": slice, "pod": pod});
        c.put(&mut v);
        self.cmd_ok(v)["slice"].as_str().unwrap_or_default().to_string()
    }

    /// Set all three conditions of `pod`'s endpoints in `service` (`None` = nil); returns the
    /// names of the slices that changed (each one gets a MODIFIED event).
    pub fn set_conditions(&self, service: &str, pod: &str, c: Conditions) -> Vec<String> {
        let mut v = json!({"cmd": "set_conditions", "service": service, "pod": pod});
        c.put(&mut v);
        strings(&self.cmd_ok(v)["slices"])
    }

    pub fn remove_endpoint(&self, service: &str, pod: &str) -> Vec<String> {
        strings(&self.cmd_ok(json!({"cmd": "remove_endpoint", "service": service, "pod": pod}))["slices"])
    }

    /// Graceful delete: deletionTimestamp = now + grace (default: the pod's
    /// terminationGracePeriodSeconds); then, per `flip`, endpoints become terminating.
    /// Returns the reply (`deletionTimestamp`, `resourceVersion`, `slices` when flipped now).
    pub fn delete_pod(&self, name: &str, grace_seconds: Option<u32>, flip: Flip) -> Value {
        let (flip, after) = match flip {
            Flip::Now => (true, 0),
            Flip::AfterMs(ms) => (true, ms),
            Flip::Never => (false, 0),
        };
        self.cmd_ok(json!({"cmd": "delete_pod", "name": name, "grace_seconds": grace_seconds,
            "flip": flip, "flip_after_ms": after}))
    }

    /// Change PodReady; endpoints follow (serving = ready) as the controller would.
    pub fn set_pod_ready(&self, name: &str, ready: bool) -> Vec<String> {
        strings(&self.cmd_ok(json!({"cmd": "set_pod_ready", "name": name, "ready": ready}))["slices"])
    }

    /// Delete the Pod object (404 afterwards) and drop its endpoints.
    pub fn remove_pod(&self, name: &str) -> Vec<String> {
        strings(&self.cmd_ok(json!({"cmd": "remove_pod", "name": name}))["slices"])
    }

    /// Delete slice number `slice` of `service` (DELETED event); returns its name.
    pub fn delete_slice(&self, service: &str, slice: usize) -> String {
        let r = self.cmd_ok(json!({"cmd": "delete_slice", "service": service, "slice": slice}));
        r["slice"].as_str().unwrap_or_default().to_string()
    }

    /// The current object as stored (`resource`: `endpointslices` or `pods`).
    pub fn get_object(&self, resource: &str, name: &str) -> Value {
        self.cmd_ok(json!({"cmd": "get", "resource": resource, "name": name}))["object"].clone()
    }

    /// All objects, services, the current RV, compaction point and token.
    pub fn dump(&self) -> Value {
        self.cmd_ok(json!({"cmd": "dump"}))
    }

    /// The server's current global resourceVersion.
    pub fn resource_version(&self) -> String {
        self.stats().resource_version
    }

    // ---- auth ----

    /// New token, written to `dir()/token`; the old one is rejected from now on.
    pub fn rotate_token(&self) -> String {
        self.rotate(false)
    }

    /// New token; the previous ones stay valid until `revoke_old_tokens`.
    pub fn rotate_token_keep_old(&self) -> String {
        self.rotate(true)
    }

    fn rotate(&self, accept_old: bool) -> String {
        let r = self.cmd_ok(json!({"cmd": "rotate_token", "accept_old": accept_old}));
        r["token"].as_str().unwrap_or_default().to_string()
    }

    pub fn revoke_old_tokens(&self) {
        self.cmd_ok(json!({"cmd": "revoke_old_tokens"}));
    }

    /// Allow all (get/list/watch) or nothing on each resource.
    pub fn rbac(&self, endpointslices: bool, pods: bool) {
        self.cmd_ok(json!({"cmd": "rbac", "endpointslices": endpointslices, "pods": pods}));
    }

    /// One resource's permission: `resource` is `endpointslices`, `pods`, `services`, `events` or
    /// `selfsubjectaccessreviews`; `verbs` is `true` (all it serves), `false`, or a list of verbs.
    /// SelfSubjectAccessReviews answer from the same settings.
    pub fn rbac_set(&self, resource: &str, verbs: Value) {
        let mut c = json!({"cmd": "rbac"});
        c[resource] = verbs;
        self.cmd_ok(c);
    }

    /// Every Event created through the API so far, in order (events.k8s.io/v1 objects).
    pub fn events(&self) -> Vec<Value> {
        self.cmd_ok(json!({"cmd": "events"}))["events"].as_array().cloned().unwrap_or_default()
    }

    /// Allow exactly these verbs, e.g. `rbac_verbs(&["list", "watch"], &[])`.
    pub fn rbac_verbs(&self, endpointslices: &[&str], pods: &[&str]) {
        self.cmd_ok(json!({"cmd": "rbac", "endpointslices": endpointslices, "pods": pods}));
    }

    // ---- faults ----

    /// Inject `fault` into the next `count` requests of `kind` (`count == 0`: until cleared).
    /// kind: `list`, `watch`, `get-slice`, `get-pod` (alias `pod`), `list-pod`, `watch-pod`, `get-service`,
    /// `create-event`, `ssar`, `other`, `any`.
    /// fault: `hang`, `status:<code>`, `reset`, `garbage`, `reset_mid_stream`, `garbage_event`,
    /// `slow_headers:<ms>`, `drip_body:<ms>` (the body, or each watch event, one byte every `ms`).
    /// kind `connect` with fault `drip_tls:<ms>` acts on new connections before TLS: the server reads
    /// the ClientHello, sends the header of a 16 KiB record and then one byte of it every `ms`.
    pub fn fault(&self, kind: &str, fault: &str, count: u32) {
        self.cmd_ok(json!({"cmd": "fault", "kind": kind, "fault": fault, "count": count}));
    }

    pub fn clear_faults(&self) {
        self.cmd_ok(json!({"cmd": "clear_faults"}));
    }

    /// A big namespace: `services` Services of `endpoints` ready endpoints each, at most 100 per
    /// slice, for pods without Pod objects (addresses in 10.64.0.0/10). Returns the reply
    /// (`slices`, `endpoints`).
    pub fn add_bulk(&self, services: u32, endpoints: u32) -> Value {
        self.cmd_ok(json!({"cmd": "add_bulk", "services": services, "endpoints": endpoints}))
    }

    // ---- restarts ----

    /// The API server process dies (its port closes, open connections are cut without a clean
    /// end) and comes back `gap` later with the same objects. Its new watch cache starts at the
    /// current resourceVersion, so a watch from an older one gets 410; for `init_429` after coming
    /// back, LIST and WATCH answer 429 "storage is (re)initializing" with Retry-After: 1.
    /// Returns once the server listens again.
    pub fn restart(&self, gap: Duration, init_429: Duration) -> Value {
        self.cmd_ok(json!({"cmd": "restart", "gap_ms": gap.as_millis() as u64, "init_429_ms": init_429.as_millis() as u64,
                           "timeout_ms": gap.as_millis() as u64}))
    }

    // ---- watch control ----

    /// Compact history at the current RV: older watch RVs / continue tokens get 410 Expired.
    /// Returns the compaction RV.
    pub fn compact(&self) -> String {
        self.cmd_ok(json!({"cmd": "compact"}))["compacted"].as_str().unwrap_or_default().to_string()
    }

    /// Send a BOOKMARK now to every watch opened with allowWatchBookmarks; returns how many.
    pub fn bookmark(&self) -> u64 {
        self.cmd_ok(json!({"cmd": "bookmark"}))["watchers"].as_u64().unwrap_or(0)
    }

    /// End every open watch cleanly (as a timeout or apiserver restart does).
    pub fn close_watches(&self) {
        self.cmd_ok(json!({"cmd": "close_watches"}));
    }

    /// Send an ERROR event (410 Expired) to every open watch, then end it.
    pub fn close_watches_expired(&self) {
        self.cmd_ok(json!({"cmd": "close_watches", "error": "expired"}));
    }

    /// Server config: `bookmark_interval_ms` (0 = off), `watch_410` (`"event"` | `"http"`),
    /// `expired_reason` (`"Expired"` | `"Gone"`), `bookmark_style` (`"minimal"` | `"typed"`),
    /// `default_watch_timeout_s`.
    pub fn config(&self, mut settings: Value) -> Value {
        settings["cmd"] = json!("config");
        self.cmd_ok(settings)["config"].clone()
    }

    // ---- accounting ----

    pub fn stats(&self) -> Stats {
        let r = self.cmd_ok(json!({"cmd": "stats"}));
        let counts =
            r["counts"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect()).unwrap_or_default();
        let requests = r["requests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|q| Request {
                        method: q["method"].as_str().unwrap_or_default().into(),
                        path: q["path"].as_str().unwrap_or_default().into(),
                        kind: q["kind"].as_str().unwrap_or_default().into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Stats {
            counts,
            requests,
            active_watches: r["active_watches"].as_u64().unwrap_or(0),
            resource_version: r["resourceVersion"].as_str().unwrap_or_default().into(),
        }
    }

    pub fn reset_stats(&self) {
        self.cmd_ok(json!({"cmd": "reset_stats"}));
    }

    /// Block until at least `count` watches are open (any resource); false on timeout.
    pub fn wait_watches(&self, count: usize, timeout: Duration) -> bool {
        let ms = timeout.as_millis() as u64;
        self.cmd(json!({"cmd": "wait_watches", "count": count, "timeout_ms": ms}))["ok"] == json!(true)
    }

    /// Block until at least `count` requests of `kind` were counted; false on timeout.
    pub fn wait_requests(&self, kind: &str, count: u64, timeout: Duration) -> bool {
        let ms = timeout.as_millis() as u64;
        self.cmd(json!({"cmd": "wait_requests", "kind": kind, "count": count, "timeout_ms": ms}))["ok"] == json!(true)
    }

    // ---- internals ----

    fn recv_line(&self, timeout: Duration, what: &str) -> String {
        let io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        match io.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                drop(io);
                self.fail(&format!("timed out waiting for {what}"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                drop(io);
                self.fail(&format!("server exited before {what}"))
            }
        }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("apiserver double: {msg}\n---- apiserver log ----\n{}", tail(&self.log(), 60));
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- apiserver log ({}) ----\n{}", self.url(), tail(&self.log(), 200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
