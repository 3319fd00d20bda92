//! Kubernetes Events about the shutdown (opt-in, `--events`), so that
//! `kubectl get events` and `kubectl describe pod` tell the story: one
//! event when the drain ends (Normal `Drained`, or Warning `DrainFallback`
//! when lastcall could not observe and used `--drain-delay`, or Warning
//! `DrainCutShort` when the deadline ended it), and a Warning `Killed` when
//! lastcall had to SIGKILL.
//!
//! The events.k8s.io/v1 Event API (kubernetes.io, "Kubernetes API
//! Reference: Event v1 (events.k8s.io)"): the current one, the one
//! client-go's events library writes; the API server stores its Events
//! where core/v1 reads them too, so `kubectl get events` lists them and
//! `kubectl describe pod` shows them (it selects by the pod's uid and shows
//! `reportingController` as "From"). RBAC: `create` on `events` in the
//! `events.k8s.io` group. Validation (pkg/apis/core/validation/events.go,
//! ValidateEventCreate) wants `eventTime` (MicroTime: exactly six
//! fractional digits), a qualified-name `reportingController`, a
//! `reportingInstance`, `action` and `reason` (each at most 128 bytes), a
//! `type` of Normal or Warning, and a `note` of at most 1 KiB.
//!
//! Posting never delays the stop signal or the SIGKILL: the supervisor asks
//! for an event only after it has sent the signal, and each event is posted
//! by a short-lived thread of its own, with one absolute deadline for all
//! of its requests. At exit the supervisor waits a bounded time for posts
//! still in flight (`flush`), after the termination report is written.
//! Events are best effort: a failure is one warning in the log.

use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, warn};

use super::client::Client;
use super::identity::{self, Sources};
use super::slices::decode_pod_from;
use crate::config::K8sConfig;

/// All the requests of one event (a GET of the pod for its uid, the POST)
/// end by this long after it was asked for.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// The part of a drain's reason that says it fell back (`drain::chain`
/// writes `"{strategy}: fallback delay after: {why}"`; a test below keeps
/// the two in step).
const FALLBACK: &str = ": fallback delay after: ";
/// The API's limit on `note` (NoteLengthLimit).
const NOTE_MAX: usize = 1024;
/// The API's limit on `reportingInstance`.
const INSTANCE_MAX: usize = 128;

/// The pod's uid, once known: `kubectl describe pod` selects events by it.
static UID: OnceLock<String> = OnceLock::new();

/// Remember the pod's uid (from a GET of the pod by the strategy or the
/// startup check), so that an event needs no request of its own for it.
pub fn remember_uid(uid: &str) {
    if !uid.is_empty() {
        let _ = UID.set(uid.to_string());
    }
}

/// Events being posted, and the wake-up for `flush`.
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static POSTED: Condvar = Condvar::new();

/// The drain ended (`t_ms` after it began) for `why`; `cut_short`: by its
/// deadline rather than by its strategies.
pub fn drain_ended(cfg: &K8sConfig, t_ms: u128, why: &str, cut_short: bool) {
    let (kind, reason) = match (cut_short, why.contains(FALLBACK)) {
        (true, _) => ("Warning", "DrainCutShort"),
        (false, true) => ("Warning", "DrainFallback"),
        (false, false) => ("Normal", "Drained"),
    };
    post(cfg, kind, reason, "Drain", format!("drain ended after {t_ms} ms: {why}"));
}

/// lastcall sent SIGKILL at `t_ms` to `processes` processes.
pub fn killed(cfg: &K8sConfig, t_ms: u128, processes: usize) {
    let note = format!("lastcall sent SIGKILL at +{t_ms} ms to {processes} process(es) still running at its deadline");
    post(cfg, "Warning", "Killed", "Kill", note);
}

/// Post one event on a thread of its own; returns at once.
fn post(cfg: &K8sConfig, kind: &'static str, reason: &'static str, action: &'static str, note: String) {
    if !cfg.events {
        return;
    }
    let (cfg, by) = (cfg.clone(), Instant::now() + POST_TIMEOUT);
    *IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    let spawned = std::thread::Builder::new().name("event".into()).stack_size(512 << 10).spawn(move || {
        match send(&cfg, kind, reason, action, &note, by) {
            Ok(()) => debug!(reason, "Kubernetes event posted"),
            Err(e) => warn!(reason, error = %e, "cannot post the Kubernetes event"),
        }
        done();
    });
    if let Err(e) = spawned {
        warn!(reason, error = %e, "cannot post the Kubernetes event: no thread");
        done();
    }
}

fn done() {
    *IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
    POSTED.notify_all();
}

/// Wait until the events asked for are posted, at most `bound`.
pub fn flush(bound: Duration) {
    let until = Instant::now() + bound;
    let mut n = IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner);
    while *n > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            debug!(in_flight = *n, "exiting before every Kubernetes event was posted");
            return;
        }
        n = POSTED.wait_timeout(n, left).unwrap_or_else(PoisonError::into_inner).0;
    }
}

fn send(cfg: &K8sConfig, kind: &str, reason: &str, action: &str, note: &str, by: Instant) -> Result<(), super::Error> {
    let client = Client::new(cfg)?;
    let id = identity::resolve(cfg, &Sources::gather(cfg)).map_err(super::Error::Identity)?;
    let uid = match known_uid() {
        Some(uid) => uid,
        None => {
            // The pod's uid puts the event under `kubectl describe pod`;
            // without it (no permission) the event still lists in
            // `kubectl get events`.
            let path = super::pod_path(&id);
            let left = by.saturating_duration_since(Instant::now());
            client.get(&path, &[], left, decode_pod_from).map(|p| p.uid).unwrap_or_default()
        }
    };
    let now = SystemTime::now();
    let body = event_json(&id.namespace, &id.name, &uid, kind, reason, action, note, now);
    let path = format!("/apis/events.k8s.io/v1/namespaces/{}/events", id.namespace);
    Ok(client.post(&path, body.as_bytes(), by, |_| Ok(()))?)
}

/// The uid without a request: remembered, or `POD_UID` (Downward API,
/// `metadata.uid`).
pub fn known_uid() -> Option<String> {
    UID.get().cloned().or_else(|| std::env::var("POD_UID").ok().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()))
}

/// The Event, as events.k8s.io/v1 JSON. Its name is the pod's and the time
/// in hex nanoseconds, as client-go names events.
#[allow(clippy::too_many_arguments)]
fn event_json(ns: &str, pod: &str, uid: &str, kind: &str, reason: &str, action: &str, note: &str, now: SystemTime) -> String {
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let millis = crate::rfc3339::format_millis(now);
    // MicroTime: six fractional digits (the API parses exactly that many).
    let micro = format!("{}{:03}Z", &millis[..millis.len() - 1], since.subsec_micros() % 1000);
    let mut out = format!(
        "{{\"apiVersion\":\"events.k8s.io/v1\",\"kind\":\"Event\",\"metadata\":{{\"name\":\"{pod}.{:x}\",\"namespace\":\"{ns}\"}},\
         \"eventTime\":\"{micro}\",\"reportingController\":\"lastcall\",\"reportingInstance\":\"{}\",\"action\":\"{action}\",\
         \"reason\":\"{reason}\",\"type\":\"{kind}\",\"regarding\":{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"namespace\":\"{ns}\",\
         \"name\":\"{pod}\",\"uid\":",
        since.as_nanos(),
        &pod[..pod.len().min(INSTANCE_MAX)],
    );
    crate::logging::json_string(&mut out, uid);
    out.push_str("},\"note\":");
    let mut end = note.len().min(NOTE_MAX);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    crate::logging::json_string(&mut out, &note[..end]);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_valid_json_within_the_limits() {
        let note = format!("drain ended: {}", "é\"\n".repeat(600));
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_795_618_991, 123_456_789);
        let body = event_json("shop", "web-1", "u-1", "Warning", "DrainFallback", "Drain", &note, at);
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(v["eventTime"], "2026-11-25T15:03:11.123456Z");
        assert_eq!(v["metadata"]["name"], format!("web-1.{:x}", 1_795_618_991_123_456_789u128));
        assert_eq!((&v["regarding"]["name"], &v["regarding"]["uid"], &v["type"]), (&"web-1".into(), &"u-1".into(), &"Warning".into()));
        let note = v["note"].as_str().unwrap();
        assert!(note.len() <= NOTE_MAX && note.starts_with("drain ended: é"), "{}", note.len());
    }

    /// The reason `drain::run` gives when a strategy falls back is what
    /// `drain_ended` looks for.
    #[test]
    fn a_fallback_is_recognised() {
        let mut cfg = crate::config::DrainConfig {
            strategies: vec![crate::config::Strategy::K8s],
            delay: Duration::ZERO,
            timeout: None,
            propagation_delay: Duration::ZERO,
            poll_interval: Duration::from_secs(1),
            quiet_period: Some(Duration::from_secs(1)),
            ports: vec![],
            wait_ports: vec![],
            close_idle: vec![],
            k8s: K8sConfig::default(),
        };
        // Not in a cluster: the strategy cannot observe and falls back.
        cfg.k8s.api = Some("http://not-https".into());
        let now = Instant::now();
        let ended = crate::drain::run(&cfg, now, now + Duration::from_secs(1), None, None, std::sync::Arc::new(crate::drain::NoNotify));
        assert!(ended.why.contains(FALLBACK), "{}", ended.why);
    }
}
