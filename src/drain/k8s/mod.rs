//! The Kubernetes strategy: wait until this pod's own endpoint is out of
//! service in every EndpointSlice, then allow `--propagation-delay` for the
//! consumers that lag the API (kube-proxy, ingress controllers).
//!
//! One drain costs O(1) requests: GET the own Pod (its `deletionTimestamp`
//! is the kubelet's SIGKILL time), LIST the EndpointSlices once, WATCH from
//! that list's resourceVersion (kubernetes.io, "API Concepts": list, then
//! watch; re-list on 410 Gone). Polling at `--poll-interval` is only the
//! fallback when watching is forbidden or the server keeps ending watches.
//!
//! Faults never cost the deadline: every request has a timeout within the
//! remaining budget, and any fault (unreachable, TLS, 401/403, 404, 5xx, a
//! hang, malformed JSON, a watch cut three times in a row) ends in one
//! `Outcome::Fallback` whose reason `drain::run` logs once before the fixed
//! `--drain-delay`.
//!
//! Layout: `client` (HTTPS, auth, timeouts), `slices` (decoding and the
//! pure "gone" evaluation), `identity` (pod name, namespace, IPs),
//! `rfc3339` (timestamps), `tls` (the cut-down rustls crypto provider).

mod client;
mod identity;
#[cfg(test)]
mod proptests;
mod rfc3339;
mod slices;
mod tls;

use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use self::client::{ApiError, Client};
use self::identity::{Identity, Sources};
use self::slices::{decode_event, decode_list, decode_pod, label_selector, EndpointSliceList, Event, Me, Tracker};
use super::{delay::sleep_until, Ctx, Outcome};
use crate::config::DrainConfig;

/// A GET or LIST never waits longer than this for its answer...
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// ...nor, while there is budget left, less than this.
const REQUEST_TIMEOUT_MIN: Duration = Duration::from_secs(2);
/// Startup check: all its requests together.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);
/// Broken watches (cut, garbage, 5xx, no answer) per drain before the
/// strategy gives up: the first two are resumed from the last
/// resourceVersion.
const WATCH_FAILURES: u32 = 3;
/// Watches per drain (clean ends included) before switching to polling:
/// keeps the request count O(1) against a server or proxy that keeps
/// ending watches.
const MAX_WATCHES: u32 = 10;
/// 410 Gone re-lists per drain before switching to polling.
const MAX_RELISTS: u32 = 5;
/// Polls that failed in a row before the strategy gives up.
const POLL_ATTEMPTS: u32 = 2;
/// 429 Too Many Requests (API Priority and Fairness) retries per request.
const THROTTLE_RETRIES: u32 = 3;
/// List page size (kube-rs's watcher uses 500 too).
const PAGE_SIZE: &str = "500";

/// Startup check: configuration present, TLS good, listing EndpointSlices
/// allowed. One line saying what to do when not.
pub fn preflight(cfg: &DrainConfig) -> Result<(), String> {
    let k = &cfg.k8s;
    let id = identity::resolve(k, &Sources::gather(k)).map_err(|e| format!("k8s drain: {e}"))?;
    let client = Client::new(k).map_err(|e| format!("k8s drain: {e}"))?;
    let until = Instant::now() + PREFLIGHT_TIMEOUT;
    let left = || until.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let mut query = vec![("limit", "1".to_string())];
    if let Some(sel) = label_selector(&k.services) {
        query.push(("labelSelector", sel));
    }
    let listed = client
        .get(&slices_path(&id.namespace), &query, left())
        .and_then(|body| decode_list(&body).map_err(ApiError::Decode))
        .map_err(|e| format!("k8s drain: {}", explain_list(&e, &id.namespace, &client)))?;
    // Reading the own pod is optional (the exact deadline), but a 404 means
    // the name is wrong, and then no endpoint would ever be recognised.
    let pod = match client.get(&pod_path(&id), &[], left()) {
        Ok(_) => "readable",
        Err(e) if e.code() == Some(404) => {
            return Err(format!(
                "k8s drain: pod {:?} (from {}) not found in namespace {}: set POD_NAME from the Downward API (fieldRef metadata.name)",
                id.name, id.name_from, id.namespace
            ))
        }
        Err(e) if e.code() == Some(403) => "forbidden (the deadline comes from --grace-period)",
        Err(_) => "unreadable",
    };
    info!(
        pod = %id.name,
        pod_from = id.name_from,
        namespace = %id.namespace,
        ips = %join(&id.ips),
        ips_from = id.ips_from,
        api = client.base(),
        listed_rv = %listed.resource_version,
        own_pod = pod,
        "k8s drain ready: EndpointSlices can be listed"
    );
    Ok(())
}

/// The strategy.
pub fn wait(ctx: &Ctx) -> Outcome {
    let k = &ctx.cfg.k8s;
    let id = match identity::resolve(k, &Sources::gather(k)) {
        Ok(id) => id,
        Err(e) => return Outcome::Fallback(e),
    };
    let client = match Client::new(k) {
        Ok(c) => c,
        Err(e) => return Outcome::Fallback(e.to_string()),
    };
    let mut drain = Drain {
        ctx,
        me: Me { name: id.name.clone(), namespace: id.namespace.clone(), uid: None, ips: id.ips.clone() },
        tracker: Tracker::new(&k.services),
        selector: label_selector(&k.services),
        id,
        client,
        not_deleted: false,
    };
    drain.run()
}

struct Drain<'a> {
    ctx: &'a Ctx<'a>,
    id: Identity,
    me: Me,
    client: Client,
    tracker: Tracker,
    selector: Option<String>,
    /// The pod object was read and has no deletionTimestamp.
    not_deleted: bool,
}

/// How one watch request ended.
enum WatchEnd {
    /// Every entry of ours is out of service; the slice that changed last.
    Gone(Option<String>),
    /// Clean end of stream, or the budget ran out.
    Ended,
    /// 410 Gone: the resourceVersion is too old; list again.
    Expired,
    /// 403/405 on watch: poll instead.
    Forbidden(String),
    Failed(String),
}

impl Drain<'_> {
    fn run(&mut self) -> Outcome {
        if let Err(why) = self.read_own_pod() {
            return Outcome::Fallback(why);
        }
        if let Err(why) = self.list() {
            return Outcome::Fallback(why);
        }
        let s = self.tracker.summary();
        if s.entries == 0 {
            info!(
                pod = %self.me.name,
                namespace = %self.me.namespace,
                slices_listed = self.tracker.listed,
                "pod is in no Service: nothing to drain"
            );
            return Outcome::Done("pod is in no Service: nothing to drain".into());
        }
        info!(
            services = %self.tracker.services(),
            slices = s.slices,
            entries = s.entries,
            in_service = s.in_service,
            rv = %self.tracker.rv,
            "endpoints of this pod found: waiting until they are out of service"
        );
        if s.gone() {
            return self.finish(None);
        }
        if self.not_deleted {
            return Outcome::Fallback(format!(
                "pod {} is not being deleted (no deletionTimestamp: a liveness-probe restart, a kubelet eviction or a node shutdown), so its endpoint will not flip by itself",
                self.me.name
            ));
        }
        self.watch_loop()
    }

    /// GET the own Pod: its deletionTimestamp is the kubelet's SIGKILL time
    /// (ObjectMeta.DeletionTimestamp, k8s.io/apimachinery types.go). Without
    /// one, this stop is a container restart (liveness/startup probe), a
    /// kubelet eviction or a node shutdown: the endpoint will not flip by
    /// itself (those do not set a deletionTimestamp).
    fn read_own_pod(&mut self) -> Result<(), String> {
        // (Sets `not_deleted`: whether that is so is decided after the LIST,
        // since a pod in no Service needs no drain whatever stopped it.)
        let path = pod_path(&self.id);
        let body = match self.call(|c, t| c.get(&path, &[], t)) {
            Ok(b) => b,
            Err(e) if e.code() == Some(403) => {
                info!(
                    pod = %self.me.name,
                    "no permission to get the own pod: the wait is bounded by --drain-timeout and --grace-period"
                );
                return Ok(());
            }
            Err(e) if e.code() == Some(404) => {
                return Err(format!(
                    "pod {:?} (from {}) not found in namespace {}: set POD_NAME from the Downward API",
                    self.me.name, self.id.name_from, self.me.namespace
                ))
            }
            Err(e) => return Err(explain(&e, &format!("cannot get pod {}/{}", self.me.namespace, self.me.name), &self.client)),
        };
        let pod = decode_pod(&body)?;
        if !pod.uid.is_empty() {
            self.me.uid = Some(pod.uid.clone());
        }
        for &ip in &pod.ips {
            if !self.me.ips.contains(&ip) {
                self.me.ips.push(ip);
            }
        }
        let Some(ts) = pod.deletion_timestamp.as_deref() else {
            self.not_deleted = true;
            self.ctx.not_deleting();
            return Ok(());
        };
        match rfc3339::parse(ts) {
            Some(at) => {
                let (now_wall, now) = (SystemTime::now(), Instant::now());
                let deadline = rfc3339::to_instant(at, now_wall, now);
                info!(
                    deletion_timestamp = ts,
                    grace_s = pod.deletion_grace_period_seconds.unwrap_or(-1),
                    kill_in_ms = rfc3339::millis_between(now_wall, at),
                    "pod is being deleted"
                );
                self.ctx.hard_deadline(deadline);
            }
            None => warn!(deletion_timestamp = ts, "cannot parse the pod's deletionTimestamp: the deadline comes from --grace-period"),
        }
        Ok(())
    }

    /// LIST every EndpointSlice (of the selected Services), page by page,
    /// and start tracking from it. `resourceVersion=0` lets the API server
    /// answer from its watch cache; the watch that follows starts at the
    /// list's resourceVersion, so nothing after it is missed.
    fn list(&mut self) -> Result<(), String> {
        let path = slices_path(&self.me.namespace);
        let mut all = EndpointSliceList::default();
        let mut token = String::new();
        let mut restarted = false;
        loop {
            let mut query = vec![("limit", PAGE_SIZE.to_string())];
            if let Some(sel) = &self.selector {
                query.push(("labelSelector", sel.clone()));
            }
            if token.is_empty() {
                query.push(("resourceVersion", "0".into()));
            } else {
                query.push(("continue", token.clone()));
            }
            let page = match self.call(|c, t| c.get(&path, &query, t)) {
                // An expired continue token: start over once.
                Err(e) if e.code() == Some(410) && !token.is_empty() && !restarted => {
                    restarted = true;
                    token.clear();
                    all = EndpointSliceList::default();
                    continue;
                }
                Err(e) => return Err(explain_list(&e, &self.me.namespace, &self.client)),
                Ok(body) => decode_list(&body)?,
            };
            if token.is_empty() {
                all.resource_version = page.resource_version.clone();
            }
            all.items.extend(page.items);
            if page.continue_token.is_empty() {
                break;
            }
            token = page.continue_token;
        }
        if all.resource_version.is_empty() {
            return Err("the EndpointSlice list carries no resourceVersion".into());
        }
        self.tracker.reset(&self.me, &all);
        Ok(())
    }

    fn watch_loop(&mut self) -> Outcome {
        let (mut failures, mut watches, mut relists) = (0u32, 0u32, 0u32);
        loop {
            if Instant::now() >= self.ctx.bounded_until() {
                return self.timed_out();
            }
            if watches >= MAX_WATCHES {
                return self.poll(&format!("the API server ended {MAX_WATCHES} watches"));
            }
            watches += 1;
            match self.watch_once() {
                WatchEnd::Gone(slice) => return self.finish(slice),
                WatchEnd::Ended => debug!(rv = %self.tracker.rv, "watch ended: watching again"),
                WatchEnd::Expired => {
                    relists += 1;
                    if relists > MAX_RELISTS {
                        return self.poll("the watch expired (410 Gone) too often");
                    }
                    info!(rv = %self.tracker.rv, "watch expired (410 Gone): listing again");
                    if let Err(why) = self.list() {
                        return Outcome::Fallback(why);
                    }
                    if self.tracker.summary().gone() {
                        return self.finish(None);
                    }
                }
                WatchEnd::Forbidden(why) => return self.poll(&why),
                WatchEnd::Failed(why) => {
                    // Counted per drain, not per streak: a drain lasts
                    // seconds, and a watch path that broke three times in
                    // it is not to be trusted (even if events got through).
                    failures += 1;
                    if failures >= WATCH_FAILURES {
                        return Outcome::Fallback(format!("the EndpointSlice watch failed {failures} times: {why}"));
                    }
                    warn!(error = %why, attempt = failures, rv = %self.tracker.rv, "watch broke: resuming from the last resourceVersion");
                    // A short pause, so a failing server is not hammered.
                    let pause = Duration::from_millis(200 * u64::from(failures));
                    sleep_until(Instant::now().checked_add(pause).map_or(self.ctx.bounded_until(), |t| t.min(self.ctx.bounded_until())));
                }
            }
        }
    }

    /// One watch request from the tracker's resourceVersion, read until it
    /// ends.
    fn watch_once(&mut self) -> WatchEnd {
        let until = self.ctx.bounded_until();
        let Some(header_timeout) = self.request_timeout() else { return WatchEnd::Ended };
        let left = until.saturating_duration_since(Instant::now());
        let mut query = vec![
            ("watch", "1".to_string()),
            ("resourceVersion", self.tracker.rv.clone()),
            ("allowWatchBookmarks", "true".to_string()),
            // The server ends the watch at our deadline too.
            ("timeoutSeconds", left.as_secs_f64().ceil().max(1.0).to_string()),
        ];
        if let Some(sel) = &self.selector {
            query.push(("labelSelector", sel.clone()));
        }
        let path = slices_path(&self.me.namespace);
        let mut stream = match self.client.watch(&path, &query, header_timeout, until) {
            Ok(s) => s,
            Err(e) => {
                return match e.code() {
                    Some(410) => WatchEnd::Expired,
                    Some(403) | Some(405) => WatchEnd::Forbidden(format!("watching endpointslices is not allowed ({e})")),
                    _ => WatchEnd::Failed(e.to_string()),
                }
            }
        };
        loop {
            let line = match stream.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return WatchEnd::Ended,
                Err(_) if Instant::now() >= until => return WatchEnd::Ended,
                Err(e) => return WatchEnd::Failed(e.to_string()),
            };
            let event = match decode_event(&line) {
                Ok(ev) => ev,
                Err(e) => return WatchEnd::Failed(e),
            };
            if let Event::Error(st) = &event {
                if st.code == 410 || st.reason == "Expired" || st.reason == "Gone" {
                    return WatchEnd::Expired;
                }
                return WatchEnd::Failed(format!("ERROR event {} {}: {}", st.code, st.reason, st.message));
            }
            let before = self.tracker.summary();
            let Some(slice) = self.tracker.apply(&self.me, &event) else { continue };
            let now = self.tracker.summary();
            if now.gone() {
                return WatchEnd::Gone(Some(slice));
            }
            if now != before {
                info!(
                    slice = %slice,
                    in_service = now.in_service,
                    entries = now.entries,
                    after_ms = self.ctx.started.elapsed().as_millis(),
                    "endpoint change seen: some entries still in service"
                );
            }
        }
    }

    /// The fallback to watching: LIST every `--poll-interval`.
    fn poll(&mut self, why: &str) -> Outcome {
        let interval = self.ctx.cfg.poll_interval;
        warn!(reason = why, interval_ms = interval.as_millis(), "cannot watch the EndpointSlices: polling");
        let mut failures = 0;
        loop {
            let until = self.ctx.bounded_until();
            sleep_until(Instant::now().checked_add(interval).map_or(until, |t| t.min(until)));
            if Instant::now() >= until {
                return self.timed_out();
            }
            match self.list() {
                Ok(()) if self.tracker.summary().gone() => return self.finish(None),
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= POLL_ATTEMPTS {
                        return Outcome::Fallback(format!("polling failed {failures} times in a row: {e}"));
                    }
                }
            }
        }
    }

    /// Our endpoint is out of service everywhere: log it, give consumers
    /// `--propagation-delay` (unless the traffic strategy follows, which
    /// observes the real end of traffic), done.
    fn finish(&self, slice: Option<String>) -> Outcome {
        let s = self.tracker.summary();
        let after = self.ctx.started.elapsed();
        let trigger = slice.as_deref().and_then(|n| self.tracker.trigger_time(n));
        let lag_ms = trigger.and_then(rfc3339::parse).map(|t| rfc3339::millis_between(t, SystemTime::now()));
        info!(
            after_ms = after.as_millis(),
            slices = s.slices,
            entries = s.entries,
            last_change_trigger_time = trigger.unwrap_or("-"),
            trigger_lag_ms = lag_ms.unwrap_or(-1),
            "endpoint out of service in every slice"
        );
        let plural = if s.slices == 1 { "" } else { "s" };
        let seen = format!("endpoint out of service in {} slice{plural} after {}ms", s.slices, after.as_millis());
        // The propagation delay stays a minimum even when a traffic
        // measurement follows: with little traffic a lull right after the
        // flip looks the same as a load balancer that has already let go
        // (measured in bench/results/rollout-2026-11-25-lowrate.md).
        let want = self.ctx.cfg.propagation_delay;
        if want.is_zero() {
            return Outcome::Done(format!("{seen}; no propagation delay"));
        }
        let start = Instant::now();
        let end = start.checked_add(want).map_or(self.ctx.until(), |t| t.min(self.ctx.until()));
        info!(delay_ms = want.as_millis(), "waiting --propagation-delay for kube-proxy and load balancers to catch up");
        sleep_until(end);
        let waited = end.saturating_duration_since(start);
        let cut = if waited < want { " (cut short by the deadline)" } else { "" };
        Outcome::Done(format!("{seen}; waited propagation delay {}{cut}", human(waited)))
    }

    fn timed_out(&self) -> Outcome {
        let s = self.tracker.summary();
        Outcome::Fallback(format!(
            "endpoint still in service in {} of {} entries after {}ms (--drain-timeout or the grace period ran out)",
            s.in_service,
            s.entries,
            self.ctx.started.elapsed().as_millis()
        ))
    }

    /// The time one GET/LIST (or a watch's headers) may take: no later than
    /// the fixed fallback would end anyway (so a hanging API server costs
    /// nothing over `--drain-delay`), within [2 s, 5 s], and never past the
    /// budget. None when no budget is left.
    fn request_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let left = self.ctx.bounded_until().saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        let to_fallback =
            self.ctx.started.checked_add(self.ctx.cfg.delay).map_or(REQUEST_TIMEOUT_MAX, |t| t.saturating_duration_since(now));
        Some(to_fallback.clamp(REQUEST_TIMEOUT_MIN, REQUEST_TIMEOUT_MAX).min(left))
    }

    /// One request with its timeout, retried after 429 Too Many Requests
    /// (API Priority and Fairness) as long as the budget allows.
    fn call(&self, f: impl Fn(&Client, Duration) -> Result<Vec<u8>, ApiError>) -> Result<Vec<u8>, ApiError> {
        let mut retries = 0;
        loop {
            let Some(timeout) = self.request_timeout() else {
                return Err(ApiError::Transport("no time left for a request".into()));
            };
            match f(&self.client, timeout) {
                Err(ApiError::Status { code: 429, retry_after, .. }) if retries < THROTTLE_RETRIES => {
                    let pause = retry_after.unwrap_or(Duration::from_secs(1)).clamp(Duration::from_millis(100), Duration::from_secs(5));
                    let resume = Instant::now().checked_add(pause).unwrap_or(self.ctx.bounded_until());
                    if resume >= self.ctx.bounded_until() {
                        return Err(ApiError::Transport("throttled (429) and no time left to retry".into()));
                    }
                    info!(retry_in_ms = pause.as_millis(), "API server is busy (429 Too Many Requests): retrying");
                    sleep_until(resume);
                    retries += 1;
                }
                other => return other,
            }
        }
    }
}

fn slices_path(namespace: &str) -> String {
    format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")
}

fn pod_path(id: &Identity) -> String {
    format!("/api/v1/namespaces/{}/pods/{}", id.namespace, id.name)
}

/// A failed LIST as one line that says what to do.
fn explain_list(e: &ApiError, namespace: &str, client: &Client) -> String {
    let head = format!("cannot list endpointslices in namespace {namespace}");
    match e {
        ApiError::Status { code: 403, .. } => {
            format!("{head}: 403 Forbidden — grant list/watch on endpointslices.discovery.k8s.io (see deploy/rbac.yaml)")
        }
        _ => explain(e, &head, client),
    }
}

/// A failed request as one line: `head`, then what went wrong.
fn explain(e: &ApiError, head: &str, client: &Client) -> String {
    match e {
        ApiError::Status { code: 401, .. } => {
            format!("{head}: 401 Unauthorized — the API server rejected the token in {}", client.token_file().display())
        }
        ApiError::Status { .. } | ApiError::Decode(_) => format!("{head}: {e}"),
        ApiError::Transport(t) => format!("{head}: {}: {t}", client.base()),
        ApiError::Setup(s) => s.clone(),
    }
}

fn join(ips: &[std::net::IpAddr]) -> String {
    ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(",")
}

/// `2s`, `1500ms`.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::ZERO), "0ms");
    }

    #[test]
    fn paths() {
        let id = Identity { name: "web-1".into(), namespace: "shop".into(), ips: vec![], name_from: "POD_NAME", ips_from: "POD_IP" };
        assert_eq!(pod_path(&id), "/api/v1/namespaces/shop/pods/web-1");
        assert_eq!(slices_path("shop"), "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices");
    }
}
