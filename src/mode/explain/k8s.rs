//! The live checks of `lastcall explain` against the API server, through
//! the strategy's own client and decoders: who this pod is (and where each
//! part of that came from), what its ServiceAccount may do (a
//! SelfSubjectAccessReview per permission, authorization.k8s.io/v1, which
//! any authenticated user may create), which EndpointSlices list the pod
//! and with which conditions, and what their Services are (type,
//! `publishNotReadyAddresses`). Each finding that stops the drain from
//! working is a problem; each that makes it work other than intended, a
//! warning, worded as what to do.
//!
//! All requests together end within `CHECKS_TIMEOUT`, each within
//! `REQUEST_TIMEOUT`: an API server that hangs costs the operator seconds,
//! not minutes.

use std::time::{Duration, Instant};

use super::{human, Findings, Out};
use crate::config::{ShutdownConfig, Strategy};
use crate::drain::k8s::client::Client;
use crate::drain::k8s::identity::{self, Sources};
use crate::drain::k8s::slices::{self, label_selector, Me};
use crate::drain::k8s::{events, pod_path, slices_path, Error, Request};

const CHECKS_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Cloud load balancers that target pods stop sending new connections tens
/// of seconds after the endpoint change (docs/kubernetes.md, "The
/// propagation delay"): a shorter propagation delay behind one is a warning.
const LB_LAG: Duration = Duration::from_secs(30);
const SSAR_PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

pub fn check(cfg: &ShutdownConfig, found: &mut Findings, out: &mut Out) {
    let k = &cfg.drain.k8s;
    let strategy = cfg.drain.strategies.contains(&Strategy::K8s);
    let client = match Client::new(k) {
        Ok(c) => c,
        Err(e) => {
            found.problems.push(format!("k8s: {e}"));
            return out.opt("api", None);
        }
    };
    out.str("api", client.base());
    let id = match identity::resolve(k, &Sources::gather(k)) {
        Ok(id) => id,
        Err(e) => return found.problems.push(format!("k8s: {e}")),
    };
    if id.name_from == "hostname" {
        found.warnings.push(format!(
            "the pod name {:?} is the hostname, which differs from the pod's name with spec.hostname, setHostnameAsFQDN or long names: set POD_NAME from the Downward API (fieldRef metadata.name)",
            id.name
        ));
    }
    let until = Instant::now() + CHECKS_TIMEOUT;
    let by = || (Instant::now() + REQUEST_TIMEOUT).min(until);
    let left = || by().saturating_duration_since(Instant::now());
    let ns = id.namespace.as_str();

    // The pod itself: uid (for matching and for events), grace period,
    // deletion, IPs.
    let mut me = Me { name: id.name.clone(), namespace: id.namespace.clone(), uid: None, ips: id.ips.clone() };
    out.obj("pod");
    let ips: Vec<String> = id.ips.iter().map(|ip| ip.to_string()).collect();
    for (key, v) in [("name", id.name.as_str()), ("name_from", id.name_from), ("namespace", ns), ("namespace_from", id.namespace_from)] {
        out.str(key, v);
    }
    out.strs("ips", &ips);
    out.str("ips_from", id.ips_from);
    let grace = cfg.budget.grace;
    match client.get(&pod_path(&id), &[], left(), slices::decode_pod_from) {
        Ok(p) => {
            let pod_ips: Vec<String> = p.ips.iter().map(|ip| ip.to_string()).collect();
            if !p.ips.is_empty() && id.ips_from != "interfaces" && !id.ips.iter().any(|ip| p.ips.contains(ip)) {
                found.warnings.push(format!(
                    "the pod IPs from {} are not the pod's ({}): set POD_IPS from the Downward API (fieldRef status.podIPs)",
                    id.ips_from,
                    pod_ips.join(",")
                ));
            }
            if let Some(s) = p.grace_period_seconds.filter(|&s| u64::try_from(s).ok() != Some(grace.as_secs()) || grace.subsec_nanos() != 0)
            {
                found.warnings.push(format!(
                    "the pod's terminationGracePeriodSeconds is {s} but --grace-period is {}: set them to the same value (the Downward API cannot pass it on)",
                    human(grace)
                ));
            }
            out.str("uid", &p.uid);
            out.strs("pod_ips", &pod_ips);
            out.int("termination_grace_period_s", p.grace_period_seconds);
            out.opt("deletion_timestamp", p.deletion_timestamp.as_deref());
            if !p.uid.is_empty() {
                me.uid = Some(p.uid);
            }
        }
        Err(e) => {
            out.str("error", &e.to_string());
            match e.code() {
                Some(403) => found.warnings.push(format!(
                    "the ServiceAccount may not get pod {}: the deadline comes from --grace-period only, and a container restart cannot be told from a pod deletion (grant get on pods, see deploy/rbac.yaml)",
                    id.name
                )),
                Some(404) => {
                    let not_found = Error::PodNotFound { name: id.name.clone(), from: id.name_from, namespace: ns.to_string() };
                    found.problems.push(not_found.to_string());
                }
                _ => found.problems.push(format!("k8s: {}", Error::request(Request::GetPod(ns.to_string(), id.name.clone()), e, &client))),
            }
        }
    }
    out.end();
    if k.events && me.uid.is_none() && events::known_uid().is_none() {
        found.warnings.push(
            "--events: the pod's uid is unknown (no POD_UID, and the pod cannot be read), so the events will show in `kubectl get events` but not in `kubectl describe pod`: set POD_UID from the Downward API (fieldRef metadata.uid)".into(),
        );
    }

    // What the ServiceAccount may do. Get and list are also tried for real;
    // watch and create events only asked about.
    let mut asks = vec![("get", "", "pods", id.name.as_str())];
    if strategy {
        asks.extend([("list", "discovery.k8s.io", "endpointslices", ""), ("watch", "discovery.k8s.io", "endpointslices", "")]);
    }
    if k.events {
        asks.push(("create", "events.k8s.io", "events", ""));
    }
    out.list("permissions");
    let mut unasked = None;
    for (verb, group, resource, name) in asks {
        let mut body = String::from(
            "{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SelfSubjectAccessReview\",\"spec\":{\"resourceAttributes\":{",
        );
        for (i, (key, v)) in
            [("namespace", ns), ("verb", verb), ("group", group), ("resource", resource), ("name", name)].into_iter().enumerate()
        {
            if i > 0 {
                body.push(',');
            }
            body.push('"');
            body.push_str(key);
            body.push_str("\":");
            crate::logging::json_string(&mut body, v);
        }
        body.push_str("}}}");
        let answer = client.post(SSAR_PATH, body.as_bytes(), by(), slices::decode_brief_from);
        let what = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
        out.row();
        out.str("verb", verb);
        out.str("resource", &what);
        out.opt("name", (!name.is_empty()).then_some(name));
        match answer {
            Ok(r) => {
                out.bool("allowed", r.allowed);
                // Why not, when the authorizer says (RBAC gives no reason for a no).
                let why = if r.evaluation_error.is_empty() { r.reason } else { r.evaluation_error };
                out.opt("reason", (!r.allowed && !why.is_empty()).then_some(why.as_str()));
                if !r.allowed && verb == "watch" {
                    found.warnings.push(format!(
                        "the ServiceAccount may not watch {what}: the drain polls the list every --poll-interval instead (grant watch, see deploy/rbac.yaml)"
                    ));
                }
                if !r.allowed && verb == "create" {
                    found.problems.push(format!(
                        "--events is on, but the ServiceAccount may not create {what}: no event will be posted (grant it with the optional Role in deploy/rbac.yaml)"
                    ));
                }
            }
            Err(e) => {
                let e = e.to_string();
                out.flag("allowed", None);
                out.str("reason", &e);
                unasked = Some(e);
            }
        }
        out.end();
    }
    out.end();
    if let Some(why) = unasked {
        found.warnings.push(format!("cannot ask the API server what the ServiceAccount may do (SelfSubjectAccessReview: {why})"));
    }
    if strategy {
        endpoints(cfg, &client, &me, &left, found, out);
    }
}

/// The EndpointSlices that list this pod, with the conditions of each of
/// its entries, and the Services they belong to.
fn endpoints(cfg: &ShutdownConfig, client: &Client, me: &Me, left: &dyn Fn() -> Duration, found: &mut Findings, out: &mut Out) {
    let (k, ns) = (&cfg.drain.k8s, me.namespace.as_str());
    let (mut services, mut entries, mut listed, mut token) = (Vec::new(), 0usize, 0usize, String::new());
    out.list("endpoints");
    let listing = loop {
        let mut query = vec![("limit", "500".to_string())];
        query.extend(label_selector(&k.services).map(|sel| ("labelSelector", sel)));
        if !token.is_empty() {
            query.push(("continue", std::mem::take(&mut token)));
        }
        let page = client.get(&slices_path(ns), &query, left(), |body| {
            slices::decode_list_from(body, &mut |slice| {
                listed += 1;
                for ep in slice.endpoints.iter().filter(|ep| me.owns(ep)) {
                    if !services.contains(&slice.service) {
                        services.push(slice.service.clone());
                    }
                    entries += 1;
                    let c = ep.conditions;
                    out.row();
                    out.str("service", &slice.service);
                    out.str("slice", &slice.name);
                    out.strs("addresses", &ep.addresses);
                    out.bool("in_service", c.in_service());
                    out.flag("ready", c.ready);
                    out.flag("serving", c.serving);
                    out.flag("terminating", c.terminating);
                    out.end();
                }
            })
        });
        match page {
            Ok((_, next)) if next.is_empty() => break true,
            Ok((_, next)) => token = next,
            Err(e) => {
                found.problems.push(format!("k8s: {}", Error::request(Request::List(ns.to_string()), e, client)));
                break false;
            }
        }
    };
    out.end();
    out.int("slices_listed", Some(listed as i64));
    if listing && entries == 0 {
        let of = if k.services.is_empty() { String::new() } else { format!(" (of --service {})", k.services.join(",")) };
        found.warnings.push(format!(
            "pod {} is in no Service{of}, among {listed} EndpointSlices: the drain ends at once. If it serves traffic, check that the Service's selector matches the pod's labels",
            me.name
        ));
    }
    let traffic = cfg.drain.strategies.contains(&Strategy::Traffic);
    services.retain(|s| !s.is_empty());
    let listing_pod = services.len();
    for s in &k.services {
        if !services.contains(s) {
            services.push(s.clone());
        }
    }
    out.list("services");
    for (i, name) in services.iter().enumerate() {
        let lists_pod = i < listing_pod;
        out.row();
        out.str("name", name);
        match client.get(&format!("/api/v1/namespaces/{ns}/services/{name}"), &[], left(), slices::decode_brief_from) {
            Ok(s) => {
                let kind = if s.kind.is_empty() { "ClusterIP" } else { s.kind.as_str() };
                out.str("type", kind);
                out.bool("publish_not_ready_addresses", s.publish_not_ready);
                if s.publish_not_ready {
                    found.warnings.push(format!(
                        "Service {name} has publishNotReadyAddresses: its endpoint stays ready while the pod terminates, so consumers that follow `ready` (kube-proxy, most ingress controllers) keep sending new connections until the pod is gone; lastcall ends the drain on `terminating`. Serve traffic through a Service without it, or add --drain k8s,traffic"
                    ));
                }
                let delay = cfg.drain.propagation_delay;
                if kind == "LoadBalancer" && delay < LB_LAG && !traffic {
                    found.warnings.push(format!(
                        "Service {name} is of type LoadBalancer: a cloud load balancer that targets pods may send new connections for 30 s or more after the endpoint change, and --propagation-delay is {}: raise it (within the drain window) or add --drain k8s,traffic",
                        human(delay)
                    ));
                }
                if !lists_pod && listing {
                    found.warnings.push(format!(
                        "Service {name} (--service) does not list pod {}: its selector does not match the pod's labels",
                        me.name
                    ));
                }
            }
            Err(e) => {
                let mut what = e.to_string();
                if e.code() == Some(404) {
                    found.warnings.push(format!("Service {name} (--service) does not exist in namespace {ns}"));
                } else {
                    what.push_str(": cannot tell its type and publishNotReadyAddresses (grant get on services to see them)");
                }
                out.str("error", &what);
            }
        }
        out.end();
    }
    out.end();
}
