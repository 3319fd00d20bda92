//! The Kubernetes strategy: wait until this pod's own endpoint is out of
//! service in every EndpointSlice, then allow `--propagation-delay` for the
//! consumers that lag the API (kube-proxy, ingress controllers).
//!
//! One drain costs O(1) requests: GET the own Pod (its `deletionTimestamp`
//! and `deletionGracePeriodSeconds` give the kubelet's SIGKILL time), LIST
//! the EndpointSlices once, WATCH from that list's resourceVersion
//! (kubernetes.io, "API Concepts": list, then watch; re-list on 410 Gone).
//! Polling at `--poll-interval` is only the fallback when watching is
//! forbidden or the server keeps ending watches.
//!
//! Faults never cost the deadline, and never end the observation early:
//! every request has a deadline within the remaining budget; a fault that
//! retrying cannot mend (401, 403, a wrong pod name) falls back at once; any
//! other (unreachable, a restart, TLS, 5xx, 429, a hang, a dripping peer,
//! malformed JSON, a cut watch) is retried with backoff (a cut watch is
//! first resumed, else list again, then watch) until the observation works
//! again or the fixed `--drain-delay` is over, and then ends in one
//! `Outcome::Fallback` whose reason `drain::run` logs. So an API server
//! restart shorter than the fallback delay costs nothing: the flip is seen
//! when the API is back.
//!
//! Layout: `client` (HTTPS, auth, deadlines), `slices` (streaming decoding
//! and the pure "gone" evaluation), `identity` (pod name, namespace, IPs),
//! `rfc3339` (timestamps), `tls` (the cut-down rustls crypto provider),
//! `events` (the `--events` Kubernetes Events). `lastcall explain` reads
//! the API through the same client and decoders (`mode/explain/k8s.rs`).

pub(crate) mod client;
pub mod events;
pub(crate) mod identity;
#[cfg(test)]
mod proptests;
mod rfc3339;
pub(crate) mod slices;
mod tls;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use self::client::{ApiError, Client};
use self::identity::{Identity, Sources};
use self::slices::{decode_event, decode_list_from, decode_pod_from, label_selector, Event, Listing, Me, Tracker};
use super::{delay::sleep_until, join, Ctx, Outcome, Problem, Strategy};
use crate::config::DrainConfig;

/// A GET or LIST never waits longer than this for its answer...
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// ...nor, while there is budget left, less than this.
const REQUEST_TIMEOUT_MIN: Duration = Duration::from_secs(2);
/// Startup check: all its requests together.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);
/// Watches per drain (clean ends included) before switching to polling:
/// keeps the request count O(1) against a server or proxy that keeps
/// ending watches.
const MAX_WATCHES: u32 = 10;
/// 410 Gone re-lists per drain before switching to polling.
const MAX_RELISTS: u32 = 5;
/// 429 Too Many Requests (API Priority and Fairness) retries per request.
const THROTTLE_RETRIES: u32 = 3;
/// List page size (kube-rs's watcher uses 500 too).
const PAGE_SIZE: &str = "500";
/// The pause after the first fault of a drain; it doubles with each fault...
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// ...up to this, less a random part of up to half, so that the pods that
/// lost the API together do not come back to it in step.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Fewer than this left before the fallback ends: no further try.
const LAST_TRY: Duration = Duration::from_millis(100);
/// A watch that broke after it was open is resumed for at least this long,
/// even past the end of the fallback delay: the API was there a moment ago.
const RESUME_GRACE: Duration = Duration::from_secs(2);

/// The strategy (`--drain k8s`).
pub struct K8s;

impl Strategy for K8s {
    fn name(&self) -> &'static str {
        crate::config::Strategy::K8s.name()
    }

    fn preflight(&self, cfg: &DrainConfig) -> Result<(), Problem> {
        Ok(preflight(cfg)?)
    }

    fn wait(&mut self, ctx: &Ctx) -> Outcome {
        match observe(ctx) {
            Ok(seen) => Outcome::Done(seen),
            Err(e) => Outcome::Fallback(e.to_string()),
        }
    }
}

/// Why the strategy cannot observe (or its startup check failed), as one
/// line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing was sent (not in a cluster, no CA or token), or a request
    /// failed before it said what it was for.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The pod's name, namespace or IPs cannot be found out.
    #[error("{0}")]
    Identity(String),
    #[error("{0}: 403 Forbidden — grant list/watch on endpointslices.discovery.k8s.io (see deploy/rbac.yaml)")]
    ListForbidden(Request),
    #[error("{request}: 401 Unauthorized — the API server rejected the token in {}", token_file.display())]
    Unauthorized { request: Request, token_file: PathBuf },
    /// The API server could not be reached, or the exchange broke.
    #[error("{request}: {api}: {error}")]
    Unreachable { request: Request, api: String, error: String },
    /// The API server answered with an error, or with nonsense.
    #[error("{0}: {1}")]
    Answer(Request, Box<ApiError>),
    #[error("pod {name:?} (from {from}) not found in namespace {namespace}: set POD_NAME from the Downward API (fieldRef metadata.name)")]
    PodNotFound { name: String, from: &'static str, namespace: String },
    #[error(
        "pod {0} is not being deleted (no deletionTimestamp: a liveness-probe restart, a kubelet eviction or a node shutdown), so its endpoint will not flip by itself"
    )]
    NotDeleting(String),
    #[error(
        "endpoint still in service in {in_service} of {entries} entries after {after_ms}ms (--drain-timeout or the grace period ran out)"
    )]
    TimedOut { in_service: usize, entries: usize, after_ms: u128 },
    /// The time for retrying is over; `last` is what failed last.
    #[error("{last} (still failing after {attempts} attempts in {tried_ms}ms)")]
    StillFailing { last: Box<Error>, attempts: u32, tried_ms: u128 },
    #[error("the EndpointSlice list carries no resourceVersion")]
    NoResourceVersion,
    #[error("the EndpointSlice watch broke: {0}")]
    WatchBroke(ApiError),
    #[error("the EndpointSlice watch broke: {0}")]
    WatchGarbage(String),
    #[error("the EndpointSlice watch broke: ERROR event {code} {reason}: {message}")]
    WatchErrorEvent { code: i64, reason: String, message: String },
    #[error("watching endpointslices is not allowed ({0})")]
    WatchForbidden(ApiError),
    #[error("the API server ended {MAX_WATCHES} watches")]
    WatchesEnded,
    #[error("the watch expired (410 Gone) too often")]
    WatchExpiredTooOften,
}

/// What a failed request was for.
#[derive(Debug, Clone)]
pub enum Request {
    /// LIST the EndpointSlices of a namespace.
    List(String),
    /// WATCH them.
    Watch(String),
    /// GET a pod: namespace, name.
    GetPod(String, String),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::List(ns) => write!(f, "cannot list endpointslices in namespace {ns}"),
            Request::Watch(ns) => write!(f, "cannot watch endpointslices in namespace {ns}"),
            Request::GetPod(ns, name) => write!(f, "cannot get pod {ns}/{name}"),
        }
    }
}

impl Error {
    /// A failed request as one line: what it was for, then what went wrong
    /// and what to do.
    pub fn request(request: Request, e: ApiError, client: &Client) -> Error {
        match e {
            ApiError::Status { code: 403, .. } if matches!(request, Request::List(_)) => Error::ListForbidden(request),
            ApiError::Status { code: 401, .. } => Error::Unauthorized { request, token_file: client.token_file().to_path_buf() },
            ApiError::Setup(_) => Error::Api(e),
            ApiError::Transport(error) => Error::Unreachable { request, api: client.base().to_string(), error },
            ApiError::Status { .. } | ApiError::Decode(_) => Error::Answer(request, Box::new(e)),
        }
    }
}

/// Startup check: configuration present, TLS good, listing EndpointSlices
/// allowed. One line saying what to do when not.
pub fn preflight(cfg: &DrainConfig) -> Result<(), Error> {
    let k = &cfg.k8s;
    // The API first: outside a cluster "not in a cluster" is the problem
    // to name, not the namespace that follows from it.
    let client = Client::new(k)?;
    let id = identity::resolve(k, &Sources::gather(k)).map_err(Error::Identity)?;
    let until = Instant::now() + PREFLIGHT_TIMEOUT;
    let left = || until.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let mut query = vec![("limit", "1".to_string())];
    if let Some(sel) = label_selector(&k.services) {
        query.push(("labelSelector", sel));
    }
    let (listed_rv, _) = client
        .get(&slices_path(&id.namespace), &query, left(), |r| decode_list_from(r, &mut |_| ()))
        .map_err(|e| Error::request(Request::List(id.namespace.clone()), e, &client))?;
    // Reading the own pod is optional (the exact deadline), but a 404 means
    // the name is wrong, and then no endpoint would ever be recognised.
    let pod = match client.get(&pod_path(&id), &[], left(), decode_pod_from) {
        Ok(p) => {
            events::remember_uid(&p.uid);
            "readable"
        }
        Err(e) if e.code() == Some(404) => {
            return Err(Error::PodNotFound { name: id.name, from: id.name_from, namespace: id.namespace });
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
        listed_rv = %listed_rv,
        own_pod = pod,
        "k8s drain ready: EndpointSlices can be listed"
    );
    Ok(())
}

/// The drain: what it saw, or why it cannot observe.
fn observe(ctx: &Ctx) -> Result<String, Error> {
    let k = &ctx.cfg.k8s;
    let client = Client::new(k)?;
    let id = identity::resolve(k, &Sources::gather(k)).map_err(Error::Identity)?;
    let mut drain = Drain {
        ctx,
        me: Me { name: id.name.clone(), namespace: id.namespace.clone(), uid: None, ips: id.ips.clone() },
        tracker: Tracker::new(&k.services),
        selector: label_selector(&k.services),
        id,
        client,
        not_deleted: false,
        faults: 0,
        outage: false,
        blind_until: None,
        first_fault: None,
        last_fault: None,
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
    /// Transient faults in this drain: the backoff grows with them.
    faults: u32,
    /// Since the last transient fault, nothing has come through.
    outage: bool,
    /// Set by the first transient fault: until then the drain keeps trying,
    /// then it falls back (the fallback delay's end, or the deadline).
    blind_until: Option<Instant>,
    /// When that was.
    first_fault: Option<Instant>,
    /// What failed last.
    last_fault: Option<Error>,
}

/// Why a step failed.
enum Fault {
    /// Retrying cannot help (identity, permission, a rejected token, a
    /// request the server calls bad): fall back at once.
    Fatal(Error),
    /// Unreachable, slow, restarting, throttled, or nonsense: try again.
    Transient(Error),
}

/// A failed request, said as `Error::request` says it, as a fault.
fn classify(request: Request, e: ApiError, client: &Client) -> Fault {
    let fatal = is_fatal(&e);
    let e = Error::request(request, e, client);
    if fatal {
        Fault::Fatal(e)
    } else {
        Fault::Transient(e)
    }
}

/// Whether trying again cannot help: 4xx answers are final, except 408
/// (timeout) and 429 (throttled); 410 is handled where it can come (watch,
/// continue token).
fn is_fatal(e: &ApiError) -> bool {
    match e {
        ApiError::Setup(_) => true,
        ApiError::Status { code, .. } => (400..500).contains(code) && !matches!(code, 408 | 429),
        _ => false,
    }
}

/// The drain's next request.
#[derive(Clone, Copy, PartialEq)]
enum Step {
    Pod,
    /// The first LIST: it decides whether there is anything to wait for.
    FirstList,
    List,
    Watch,
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
    Forbidden(Error),
    /// The watch could not be opened.
    Failed(Fault),
    /// The watch was open and broke (cut, garbage, an ERROR event).
    Broke(Error),
}

impl Drain<'_> {
    fn run(&mut self) -> Result<String, Error> {
        let (mut step, mut watches, mut relists) = (Step::Pod, 0u32, 0u32);
        loop {
            let now = Instant::now();
            if now >= self.ctx.bounded_until() {
                return self.timed_out();
            }
            if self.outage && self.end().saturating_duration_since(now) < LAST_TRY {
                return self.give_up();
            }
            let failed = match step {
                Step::Pod => match self.read_own_pod() {
                    Ok(()) => {
                        step = Step::FirstList;
                        continue;
                    }
                    Err(f) => f,
                },
                Step::FirstList | Step::List => {
                    let blind = self.outage;
                    match self.list() {
                        Ok(()) if step == Step::FirstList => match self.first_look(blind) {
                            Some(outcome) => return outcome,
                            None => {
                                step = Step::Watch;
                                continue;
                            }
                        },
                        Ok(()) if self.tracker.summary().gone() => return self.finish(None, blind),
                        Ok(()) => {
                            step = Step::Watch;
                            continue;
                        }
                        Err(f) => f,
                    }
                }
                Step::Watch => {
                    // Watches that were open count (those that could not be
                    // opened are paced by the backoff).
                    if watches >= MAX_WATCHES {
                        return self.poll(Error::WatchesEnded);
                    }
                    match self.watch_once() {
                        WatchEnd::Gone(slice) => return self.finish(slice, false),
                        WatchEnd::Ended => {
                            watches += 1;
                            debug!(rv = %self.tracker.rv, "watch ended: watching again");
                            continue;
                        }
                        WatchEnd::Expired => {
                            relists += 1;
                            if relists > MAX_RELISTS {
                                return self.poll(Error::WatchExpiredTooOften);
                            }
                            info!(rv = %self.tracker.rv, "watch expired (410 Gone): listing again");
                            step = Step::List;
                            continue;
                        }
                        WatchEnd::Forbidden(why) => return self.poll(why),
                        WatchEnd::Failed(f) => {
                            // Not even open (the server is away, slow or
                            // failing): list again, then watch from the new
                            // list, which shows what changed meanwhile.
                            step = Step::List;
                            f
                        }
                        WatchEnd::Broke(why) => {
                            // A watch that was open and broke is resumed from
                            // the last resourceVersion (one request).
                            watches += 1;
                            if let Some(outcome) = self.fault(why, true) {
                                return outcome;
                            }
                            continue;
                        }
                    }
                }
            };
            match failed {
                Fault::Fatal(why) => return Err(why),
                Fault::Transient(why) => {
                    if let Some(outcome) = self.fault(why, false) {
                        return outcome;
                    }
                }
            }
        }
    }

    /// After the first LIST: is there anything to wait for? None: watch.
    /// `blind`: that LIST ended an outage (see `finish`).
    fn first_look(&mut self, blind: bool) -> Option<Result<String, Error>> {
        let s = self.tracker.summary();
        if s.entries == 0 {
            info!(
                pod = %self.me.name,
                namespace = %self.me.namespace,
                slices_listed = self.tracker.listed,
                "pod is in no Service: nothing to drain"
            );
            return Some(Ok("pod is in no Service: nothing to drain".into()));
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
            return Some(self.finish(None, blind));
        }
        if self.not_deleted {
            return Some(Err(Error::NotDeleting(self.me.name.clone())));
        }
        None
    }

    /// A transient fault: wait (backoff) before the next try, or, when the
    /// time for trying is over, the outcome. `watch_broke`: an open watch
    /// broke (see RESUME_GRACE).
    fn fault(&mut self, why: Error, watch_broke: bool) -> Option<Result<String, Error>> {
        let now = Instant::now();
        self.faults += 1;
        let new_outage = !self.outage;
        self.outage = true;
        let bounded = self.ctx.bounded_until();
        let fallback = self.ctx.started.checked_add(self.ctx.cfg.delay).unwrap_or(bounded);
        let blind_until = *self.blind_until.get_or_insert_with(|| {
            let grace = if watch_broke { now.checked_add(RESUME_GRACE).unwrap_or(bounded) } else { fallback };
            fallback.max(grace).min(bounded)
        });
        self.first_fault.get_or_insert(now);
        let left = blind_until.saturating_duration_since(now);
        let why = &*self.last_fault.insert(why);
        if left < LAST_TRY {
            return Some(self.give_up());
        }
        let pause = backoff(self.faults).min(left / 2);
        let (attempt, retry_in_ms, gives_up_in_ms) = (self.faults, pause.as_millis(), left.as_millis());
        if watch_broke {
            warn!(error = %why, attempt, retry_in_ms, gives_up_in_ms, rv = %self.tracker.rv, "watch broke: resuming from the last resourceVersion");
        } else if new_outage {
            warn!(error = %why, attempt, retry_in_ms, gives_up_in_ms, "cannot observe the endpoint right now: trying again until the fallback delay ends");
        } else {
            debug!(error = %why, attempt, retry_in_ms, gives_up_in_ms, "cannot observe the endpoint right now: trying again until the fallback delay ends");
        }
        sleep_until(now + pause);
        None
    }

    /// The time for trying is over: fall back, saying what failed last.
    fn give_up(&mut self) -> Result<String, Error> {
        let tried_ms = self.first_fault.map_or(0, |t| t.elapsed().as_millis());
        // An outage, and so the time for trying, begins with a fault.
        let Some(last) = self.last_fault.take() else { return self.timed_out() };
        Err(Error::StillFailing { last: Box::new(last), attempts: self.faults, tried_ms })
    }

    /// An answer came through: the outage, if any, is over.
    fn observing(&mut self) {
        self.outage = false;
    }

    /// When the current try must be over: the drain's bound, or, during an
    /// outage, the end of the time for trying.
    fn end(&self) -> Instant {
        let bounded = self.ctx.bounded_until();
        match self.blind_until {
            Some(blind) if self.outage => blind.min(bounded),
            _ => bounded,
        }
    }

    /// GET the own Pod: `deletionTimestamp` and `deletionGracePeriodSeconds`
    /// give the kubelet's SIGKILL time (see `rfc3339::kill_deadline`).
    /// Without a deletionTimestamp, this stop is a container restart
    /// (liveness/startup probe), a kubelet eviction or a node shutdown: the
    /// endpoint will not flip by itself (those do not set one).
    fn read_own_pod(&mut self) -> Result<(), Fault> {
        // (Sets `not_deleted`: whether that matters is decided after the
        // LIST, since a pod in no Service needs no drain whatever stopped it.)
        let path = pod_path(&self.id);
        let pod = match self.call(|c, t| c.get(&path, &[], t, decode_pod_from)) {
            Ok(pod) => pod,
            Err(e) if e.code() == Some(403) => {
                info!(
                    pod = %self.me.name,
                    "no permission to get the own pod: the wait is bounded by --drain-timeout and --grace-period"
                );
                return Ok(());
            }
            Err(e) if e.code() == Some(404) => {
                let (name, from, namespace) = (self.me.name.clone(), self.id.name_from, self.me.namespace.clone());
                return Err(Fault::Fatal(Error::PodNotFound { name, from, namespace }));
            }
            Err(e) => return Err(classify(Request::GetPod(self.me.namespace.clone(), self.me.name.clone()), e, &self.client)),
        };
        self.observing();
        if !pod.uid.is_empty() {
            events::remember_uid(&pod.uid);
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
        let (now_wall, now) = (SystemTime::now(), Instant::now());
        match rfc3339::kill_deadline(ts, pod.deletion_grace_period_seconds, self.ctx.started, now_wall, now) {
            Some(deadline) => {
                info!(
                    deletion_timestamp = ts,
                    grace_s = pod.deletion_grace_period_seconds.unwrap_or(-1),
                    kill_in_ms = deadline.saturating_duration_since(now).as_millis(),
                    "pod is being deleted"
                );
                self.ctx.hard_deadline(deadline);
            }
            None => warn!(deletion_timestamp = ts, "cannot parse the pod's deletionTimestamp: the deadline comes from --grace-period"),
        }
        Ok(())
    }

    /// LIST every EndpointSlice (of the selected Services), page by page,
    /// and start tracking from it. Each page is decoded as it streams in and
    /// only this pod's entries are kept. `resourceVersion=0` lets the API
    /// server answer from its watch cache; the watch that follows starts at
    /// the list's resourceVersion, so nothing after it is missed.
    fn list(&mut self) -> Result<(), Fault> {
        let path = slices_path(&self.me.namespace);
        let mut all = Listing::default();
        let (mut rv, mut token, mut restarted) = (String::new(), String::new(), false);
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
            let (tracker, me) = (&self.tracker, &self.me);
            let page = self.call(|c, t| {
                c.get(&path, &query, t, |body| {
                    let mut page = Listing::default();
                    let (rv, next) = decode_list_from(body, &mut |slice| tracker.add(&mut page, me, &slice))?;
                    Ok((page, rv, next))
                })
            });
            let (page, page_rv, next) = match page {
                // An expired continue token: start over once.
                Err(e) if e.code() == Some(410) && !token.is_empty() && !restarted => {
                    restarted = true;
                    token.clear();
                    all = Listing::default();
                    continue;
                }
                Err(e) => return Err(classify(Request::List(self.me.namespace.clone()), e, &self.client)),
                Ok(page) => page,
            };
            if token.is_empty() {
                rv = page_rv;
            }
            all.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        if rv.is_empty() {
            return Err(Fault::Transient(Error::NoResourceVersion));
        }
        self.tracker.take(all, rv);
        self.observing();
        Ok(())
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
                    Some(403) | Some(405) => WatchEnd::Forbidden(Error::WatchForbidden(e)),
                    _ => WatchEnd::Failed(classify(Request::Watch(self.me.namespace.clone()), e, &self.client)),
                }
            }
        };
        self.observing();
        loop {
            let line = match stream.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return WatchEnd::Ended,
                Err(_) if Instant::now() >= until => return WatchEnd::Ended,
                Err(e) => return WatchEnd::Broke(Error::WatchBroke(e)),
            };
            let event = match decode_event(&line) {
                Ok(ev) => ev,
                Err(e) => return WatchEnd::Broke(Error::WatchGarbage(e)),
            };
            if let Event::Error(st) = event {
                if st.code == 410 || st.reason == "Expired" || st.reason == "Gone" {
                    return WatchEnd::Expired;
                }
                return WatchEnd::Broke(Error::WatchErrorEvent { code: st.code, reason: st.reason, message: st.message });
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
    fn poll(&mut self, why: Error) -> Result<String, Error> {
        let interval = self.ctx.cfg.poll_interval;
        warn!(reason = %why, interval_ms = interval.as_millis(), "cannot watch the EndpointSlices: polling");
        loop {
            let until = self.ctx.bounded_until();
            sleep_until(Instant::now().checked_add(interval).map_or(until, |t| t.min(until)));
            if Instant::now() >= until {
                return self.timed_out();
            }
            let blind = self.outage;
            match self.list() {
                Ok(()) if self.tracker.summary().gone() => return self.finish(None, blind),
                Ok(()) => {}
                Err(Fault::Fatal(why)) => return Err(why),
                Err(Fault::Transient(why)) => {
                    if let Some(outcome) = self.fault(why, false) {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Our endpoint is out of service everywhere: log it, give consumers
    /// `--propagation-delay` (unless the traffic strategy follows, which
    /// observes the real end of traffic), done. `blind`: the flip was first
    /// seen by the list that ended an outage, so it happened while lastcall
    /// could not see it, and the drain still ends by the fallback delay's
    /// end (the earlier of that and the flip plus the propagation delay).
    fn finish(&self, slice: Option<String>, blind: bool) -> Result<String, Error> {
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
            return Ok(format!("{seen}; no propagation delay"));
        }
        let start = Instant::now();
        let mut end = start.checked_add(want).map_or(self.ctx.until(), |t| t.min(self.ctx.until()));
        let mut cut = " (cut short by the deadline)";
        if let Some(blind_until) = self.blind_until.filter(|_| blind) {
            if blind_until < end {
                end = blind_until.max(start);
                cut = " (cut short by the end of the fallback delay)";
            }
        }
        info!(delay_ms = want.as_millis(), "waiting --propagation-delay for kube-proxy and load balancers to catch up");
        sleep_until(end);
        let waited = end.saturating_duration_since(start);
        let cut = if waited < want { cut } else { "" };
        Ok(format!("{seen}; waited propagation delay {}{cut}", human(waited)))
    }

    fn timed_out(&self) -> Result<String, Error> {
        let s = self.tracker.summary();
        Err(Error::TimedOut { in_service: s.in_service, entries: s.entries, after_ms: self.ctx.started.elapsed().as_millis() })
    }

    /// The time one GET/LIST (or a watch's headers) may take: no later than
    /// the fixed fallback would end anyway (so a hanging API server costs
    /// nothing over `--drain-delay`), within [2 s, 5 s], never past the
    /// budget, and, during an outage, never past the time for trying. None
    /// when no time is left.
    fn request_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let left = self.end().saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        let to_fallback =
            self.ctx.started.checked_add(self.ctx.cfg.delay).map_or(REQUEST_TIMEOUT_MAX, |t| t.saturating_duration_since(now));
        Some(to_fallback.clamp(REQUEST_TIMEOUT_MIN, REQUEST_TIMEOUT_MAX).min(left))
    }

    /// One request with its timeout, retried after 429 Too Many Requests
    /// (API Priority and Fairness, or a restarted server filling its watch
    /// cache) as long as the time allows.
    fn call<T>(&self, f: impl Fn(&Client, Duration) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut retries = 0;
        loop {
            let Some(timeout) = self.request_timeout() else {
                return Err(ApiError::Transport("no time left for a request".into()));
            };
            match f(&self.client, timeout) {
                Err(ApiError::Status { code: 429, retry_after, .. }) if retries < THROTTLE_RETRIES => {
                    let pause = retry_after.unwrap_or(Duration::from_secs(1)).clamp(Duration::from_millis(100), Duration::from_secs(5));
                    let resume = Instant::now().checked_add(pause).unwrap_or(self.end());
                    if resume >= self.end() {
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

/// The pause before try number `n + 1` (n ≥ 1): BACKOFF_FIRST doubled per
/// fault up to BACKOFF_MAX, less a random part of up to half.
fn backoff(n: u32) -> Duration {
    let full = BACKOFF_FIRST.saturating_mul(1 << n.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    let mut r = [0u8; 2];
    let got = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let fraction = if got.is_ok() { f64::from(u16::from_ne_bytes(r)) / f64::from(u16::MAX) } else { 0.0 };
    full.mul_f64(1.0 - fraction / 2.0)
}

pub(crate) fn slices_path(namespace: &str) -> String {
    format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")
}

pub(crate) fn pod_path(id: &Identity) -> String {
    format!("/api/v1/namespaces/{}/pods/{}", id.namespace, id.name)
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
    fn backoff_doubles_to_its_cap_with_jitter() {
        let ms = Duration::from_millis;
        for (n, full) in [(1, ms(250)), (2, ms(500)), (3, ms(1000)), (4, ms(2000)), (5, ms(2000)), (40, ms(2000))] {
            for _ in 0..20 {
                let b = backoff(n);
                assert!(b <= full && b >= full / 2, "try {n}: {b:?} outside [{:?}, {full:?}]", full / 2);
            }
        }
    }

    #[test]
    fn faults_that_retrying_cannot_mend() {
        let status = |code| ApiError::Status { code, reason: String::new(), message: String::new(), retry_after: None };
        for (e, fatal) in [
            (status(401), true),
            (status(403), true),
            (status(404), true),
            (status(400), true),
            (status(408), false),
            (status(429), false),
            (status(500), false),
            (status(503), false),
            (ApiError::Transport("connection refused".into()), false),
            (ApiError::Decode("malformed".into()), false),
            (ApiError::Setup("no token".into()), true),
        ] {
            assert_eq!(is_fatal(&e), fatal, "{e:?}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::ZERO), "0ms");
    }

    #[test]
    fn paths() {
        let id = Identity {
            name: "web-1".into(),
            namespace: "shop".into(),
            ips: vec![],
            name_from: "POD_NAME",
            namespace_from: "POD_NAMESPACE",
            ips_from: "POD_IP",
        };
        assert_eq!(pod_path(&id), "/api/v1/namespaces/shop/pods/web-1");
        assert_eq!(slices_path("shop"), "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices");
    }
}
