//! EndpointSlice, watch-event and Pod decoding (the few fields lastcall
//! needs, everything else ignored), and the pure "is my endpoint gone?"
//! evaluation.
//!
//! Decoding never panics and tolerates what the API server really sends:
//! missing fields and `null` (Go's nil slices and maps marshal as `null`,
//! e.g. `"endpoints": null` on an empty slice) both mean "empty".
//!
//! "Gone" follows the EndpointSlice controller (`podToEndpoint` in
//! k8s.io/endpointslice utils.go): for a pod being deleted it writes
//! `terminating = true`, `serving = PodReady` and
//! `ready = publishNotReadyAddresses || (serving && !terminating)`, and it
//! keeps the endpoint listed until the pod has stopped (since 1.26,
//! KEP-1672). So an entry is out of service when it is absent, or
//! `ready == false`, or `terminating == true`. A nil `ready` means true and a
//! nil `terminating` means false (discovery/v1 EndpointConditions). With
//! `publishNotReadyAddresses` `ready` stays true: only `terminating` tells.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// The label that ties a slice to its Service (discovery/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Set by the EndpointSlice controller on every slice update: when the pod
/// or Service change that caused it happened (RFC3339Nano).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct EndpointSliceList {
    pub resource_version: String,
    /// The `continue` token of a paged list; empty on the last page.
    pub continue_token: String,
    pub items: Vec<EndpointSlice>,
}

/// The fields of an EndpointSlice that matter here.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EndpointSlice {
    pub name: String,
    pub resource_version: String,
    /// Its `kubernetes.io/service-name` label.
    pub service: String,
    pub trigger_time: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub conditions: Conditions,
    pub target_ref: Option<ObjectReference>,
}

/// `nil` is kept as `None`: its meaning differs per field.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Conditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl Conditions {
    /// Still receives new connections from kube-proxy and ingresses.
    pub fn in_service(&self) -> bool {
        self.ready != Some(false) && self.terminating != Some(true)
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ObjectReference {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The fields of the own Pod that matter here.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pod {
    pub uid: String,
    pub deletion_timestamp: Option<String>,
    pub deletion_grace_period_seconds: Option<i64>,
    pub ips: Vec<IpAddr>,
}

/// `metav1.Status`, the body of every API error and of watch ERROR events.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Status {
    pub message: String,
    pub reason: String,
    pub code: i64,
}

/// One decoded watch event (`watch.Event`: ADDED, MODIFIED, DELETED,
/// BOOKMARK, ERROR; kubernetes.io "API Concepts", efficient detection of
/// changes).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Added(EndpointSlice),
    Modified(EndpointSlice),
    Deleted(EndpointSlice),
    /// Only the resourceVersion is meaningful (`allowWatchBookmarks`).
    Bookmark(String),
    Error(Status),
}

// Small accessors over serde_json's `Value`. A missing field and `null`
// are the same (Go's nil); a field of the wrong type is an error where the
// decision depends on it (conditions, lists), and "empty" for names.

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn text(v: &Value, key: &str) -> String {
    field(v, key).as_str().unwrap_or_default().to_string()
}

fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match field(v, key) {
        Value::Null => Ok(&[]),
        Value::Array(a) => Ok(a),
        _ => Err(format!("{key} is not a list")),
    }
}

fn flag(v: &Value, key: &str) -> Result<Option<bool>, String> {
    match field(v, key) {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(format!("conditions.{key} is not a boolean")),
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Value, String> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(format!("{what} is not a JSON object"))
    }
}

fn parse(bytes: &[u8], what: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed {what}: {e}"))?;
    object(&v, what)?;
    Ok(v)
}

fn slice_from(v: &Value) -> Result<EndpointSlice, String> {
    let meta = field(object(v, "EndpointSlice")?, "metadata");
    let mut endpoints = Vec::new();
    for ep in list(v, "endpoints")? {
        let ep = object(ep, "endpoint")?;
        let c = field(ep, "conditions");
        let r = field(ep, "targetRef");
        endpoints.push(Endpoint {
            addresses: list(ep, "addresses")?.iter().filter_map(|a| a.as_str().map(String::from)).collect(),
            conditions: Conditions { ready: flag(c, "ready")?, serving: flag(c, "serving")?, terminating: flag(c, "terminating")? },
            target_ref: r.is_object().then(|| ObjectReference {
                kind: text(r, "kind"),
                namespace: text(r, "namespace"),
                name: text(r, "name"),
                uid: text(r, "uid"),
            }),
        });
    }
    Ok(EndpointSlice {
        name: text(meta, "name"),
        resource_version: text(meta, "resourceVersion"),
        service: text(field(meta, "labels"), SERVICE_NAME_LABEL),
        trigger_time: field(field(meta, "annotations"), TRIGGER_TIME_ANNOTATION).as_str().map(String::from),
        endpoints,
    })
}

pub fn decode_list(bytes: &[u8]) -> Result<EndpointSliceList, String> {
    let v = parse(bytes, "EndpointSliceList")?;
    let meta = field(&v, "metadata");
    let items = list(&v, "items")?.iter().map(slice_from).collect::<Result<_, _>>();
    Ok(EndpointSliceList {
        resource_version: text(meta, "resourceVersion"),
        continue_token: text(meta, "continue"),
        items: items.map_err(|e| format!("malformed EndpointSliceList: {e}"))?,
    })
}

pub fn decode_pod(bytes: &[u8]) -> Result<Pod, String> {
    let v = parse(bytes, "Pod")?;
    let meta = field(&v, "metadata");
    let status = field(&v, "status");
    let ips = std::iter::once(field(status, "podIP"))
        .chain(list(status, "podIPs").unwrap_or_default().iter().map(|p| field(p, "ip")))
        .filter_map(Value::as_str);
    Ok(Pod {
        uid: text(meta, "uid"),
        deletion_timestamp: field(meta, "deletionTimestamp").as_str().map(String::from),
        deletion_grace_period_seconds: field(meta, "deletionGracePeriodSeconds").as_i64(),
        ips: super::identity::parse_ips(ips),
    })
}

fn status_from(v: &Value) -> Status {
    Status { message: text(v, "message"), reason: text(v, "reason"), code: field(v, "code").as_i64().unwrap_or(0) }
}

/// The Status in an error response body, if it is one.
pub fn decode_status(bytes: &[u8]) -> Option<Status> {
    let st = status_from(&serde_json::from_slice::<Value>(bytes).ok()?);
    (!st.message.is_empty() || !st.reason.is_empty() || st.code != 0).then_some(st)
}

/// One line of a watch stream.
pub fn decode_event(bytes: &[u8]) -> Result<Event, String> {
    let v = parse(bytes, "watch event")?;
    let kind = field(&v, "type").as_str().unwrap_or_default();
    let obj = field(&v, "object");
    let slice = |o: &Value| slice_from(o).map_err(|e| format!("malformed {kind} event: {e}"));
    Ok(match kind {
        "ADDED" => Event::Added(slice(obj)?),
        "MODIFIED" => Event::Modified(slice(obj)?),
        "DELETED" => Event::Deleted(slice(obj)?),
        "BOOKMARK" => Event::Bookmark(text(field(obj, "metadata"), "resourceVersion")),
        "ERROR" => Event::Error(status_from(obj)),
        other => return Err(format!("unknown watch event type {other:?}")),
    })
}

/// The pod whose endpoints we look for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Me {
    pub name: String,
    pub namespace: String,
    /// Known once the pod object was read.
    pub uid: Option<String>,
    pub ips: Vec<IpAddr>,
}

impl Me {
    /// Is this endpoint ours? By `targetRef` (kind Pod, our name or uid), or
    /// by an address equal to one of our IPs (slices written by hand have no
    /// targetRef).
    pub fn owns(&self, ep: &Endpoint) -> bool {
        if let Some(r) = &ep.target_ref {
            if r.kind == "Pod" && (r.namespace.is_empty() || r.namespace == self.namespace) {
                if !r.name.is_empty() && r.name == self.name {
                    return true;
                }
                if let Some(uid) = &self.uid {
                    if !r.uid.is_empty() && &r.uid == uid {
                        return true;
                    }
                }
            }
        }
        ep.addresses.iter().any(|a| a.trim().parse::<IpAddr>().is_ok_and(|ip| self.ips.contains(&ip)))
    }
}

/// What one slice says about our pod: one flag per entry (in service?).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceView {
    pub service: String,
    pub in_service: Vec<bool>,
    pub trigger_time: Option<String>,
}

/// Our pod's entries across all slices, kept up to date by watch events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    /// Only slices that hold at least one entry of ours, by slice name.
    slices: BTreeMap<String, SliceView>,
    /// Service names to consider; empty: all.
    services: Vec<String>,
    /// Slices seen in the last list (for log lines).
    pub listed: usize,
    /// The resourceVersion to watch from.
    pub rv: String,
}

/// Counts for decisions and log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Slices that list this pod.
    pub slices: usize,
    /// This pod's entries in them.
    pub entries: usize,
    /// Entries still in service.
    pub in_service: usize,
}

impl Summary {
    pub fn gone(&self) -> bool {
        self.in_service == 0
    }
}

impl Tracker {
    pub fn new(services: &[String]) -> Tracker {
        Tracker { services: services.to_vec(), ..Default::default() }
    }

    /// Forget everything and take a fresh list (after a 410, or a poll).
    pub fn reset(&mut self, me: &Me, list: &EndpointSliceList) {
        self.slices.clear();
        self.listed = 0;
        for slice in &list.items {
            self.listed += 1;
            self.put(me, slice);
        }
        self.rv = list.resource_version.clone();
    }

    /// Applies one watch event; returns the name of the slice it changed
    /// (for log lines), if it concerns one of ours.
    pub fn apply(&mut self, me: &Me, event: &Event) -> Option<String> {
        let (slice, deleted) = match event {
            Event::Added(s) | Event::Modified(s) => (s, false),
            Event::Deleted(s) => (s, true),
            Event::Bookmark(rv) => {
                if !rv.is_empty() {
                    self.rv = rv.clone();
                }
                return None;
            }
            Event::Error(_) => return None,
        };
        if !slice.resource_version.is_empty() {
            self.rv = slice.resource_version.clone();
        }
        let name = slice.name.clone();
        let was_ours = self.slices.contains_key(&name);
        if deleted {
            self.slices.remove(&name);
        } else {
            self.put(me, slice);
        }
        (was_ours || self.slices.contains_key(&name)).then_some(name)
    }

    fn put(&mut self, me: &Me, slice: &EndpointSlice) {
        let name = slice.name.clone();
        let service = slice.service.clone();
        // The server filters by label already; checking again costs nothing
        // and keeps a slice of another Service from ever counting.
        if !self.services.is_empty() && !self.services.contains(&service) {
            self.slices.remove(&name);
            return;
        }
        let in_service: Vec<bool> = slice.endpoints.iter().filter(|ep| me.owns(ep)).map(|ep| ep.conditions.in_service()).collect();
        if in_service.is_empty() {
            self.slices.remove(&name);
        } else {
            self.slices.insert(name, SliceView { service, in_service, trigger_time: slice.trigger_time.clone() });
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary { slices: self.slices.len(), ..Default::default() };
        for view in self.slices.values() {
            s.entries += view.in_service.len();
            s.in_service += view.in_service.iter().filter(|&&b| b).count();
        }
        s
    }

    /// The Services our pod is listed in, comma-separated, for log lines.
    pub fn services(&self) -> String {
        let mut names: Vec<&str> = self.slices.values().map(|v| v.service.as_str()).filter(|s| !s.is_empty()).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        names.join(",")
    }

    pub fn trigger_time(&self, slice: &str) -> Option<&str> {
        self.slices.get(slice).and_then(|v| v.trigger_time.as_deref())
    }
}

/// `kubernetes.io/service-name=a` or `kubernetes.io/service-name in (a,b)`;
/// None without `--service` (every slice in the namespace).
pub fn label_selector(services: &[String]) -> Option<String> {
    match services {
        [] => None,
        [one] => Some(format!("{SERVICE_NAME_LABEL}={one}")),
        many => Some(format!("{SERVICE_NAME_LABEL} in ({})", many.join(","))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoint(v: serde_json::Value) -> Result<Endpoint, String> {
        let mut s = slice_from(&json!({"endpoints": [v]}))?;
        Ok(s.endpoints.remove(0))
    }

    fn me() -> Me {
        Me { name: "web-1".into(), namespace: "default".into(), uid: None, ips: vec!["10.0.0.5".parse().unwrap()] }
    }

    fn ep(name: &str, addr: &str, conditions: serde_json::Value) -> serde_json::Value {
        json!({"addresses": [addr], "conditions": conditions,
               "targetRef": {"kind": "Pod", "namespace": "default", "name": name, "uid": format!("uid-{name}")}})
    }

    fn slice(name: &str, service: &str, rv: &str, endpoints: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv,
                            "labels": {SERVICE_NAME_LABEL: service},
                            "annotations": {TRIGGER_TIME_ANNOTATION: "2026-11-25T14:03:11.5Z"}},
               "addressType": "IPv4", "endpoints": endpoints})
    }

    fn list(rv: &str, items: Vec<serde_json::Value>) -> EndpointSliceList {
        decode_list(json!({"kind": "EndpointSliceList", "metadata": {"resourceVersion": rv}, "items": items}).to_string().as_bytes())
            .unwrap()
    }

    fn event(kind: &str, obj: serde_json::Value) -> Event {
        decode_event(json!({"type": kind, "object": obj}).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn condition_table() {
        // (ready, terminating) -> in service; nil ready = true, nil terminating = false.
        let t = Some(true);
        let f = Some(false);
        let cases = [
            (None, None, true),
            (t, None, true),
            (t, f, true),
            (f, None, false),
            (f, f, false),
            (None, t, false),
            (t, t, false), // publishNotReadyAddresses while terminating
            (f, t, false), // what the controller writes for a deleted pod
        ];
        for (ready, terminating, want) in cases {
            let c = Conditions { ready, serving: None, terminating };
            assert_eq!(c.in_service(), want, "{c:?}");
        }
    }

    #[test]
    fn null_and_missing_fields_decode_as_empty() {
        let l = decode_list(br#"{"metadata":null,"items":null}"#).unwrap();
        assert!(l.items.is_empty());
        let l = decode_list(br#"{"items":[{"metadata":{"name":"s","labels":null,"annotations":null},"endpoints":null}]}"#).unwrap();
        assert_eq!(l.items[0].endpoints, vec![]);
        let l = decode_list(br#"{"items":[{"endpoints":[{"addresses":null,"conditions":{},"targetRef":null}]}]}"#).unwrap();
        assert_eq!(l.items[0].endpoints[0].conditions, Conditions::default());
        assert!(decode_list(b"{\"items\":[{\"meta").is_err());
        assert!(decode_list(b"[]").is_err());
        assert!(decode_list(br#"{"items":{}}"#).is_err());
        assert!(decode_list(br#"{"items":[{"endpoints":[{"conditions":{"ready":"false"}}]}]}"#).is_err());
        assert!(decode_list(br#"{"items":[{"endpoints":[7]}]}"#).is_err());
        assert!(decode_pod(b"null").is_err());
    }

    #[test]
    fn ownership_by_name_uid_or_ip() {
        let mut m = me();
        let by_name: Endpoint = endpoint(ep("web-1", "10.9.9.9", json!({}))).unwrap();
        let other: Endpoint = endpoint(ep("web-2", "10.0.0.6", json!({}))).unwrap();
        let by_ip: Endpoint = endpoint(json!({"addresses": ["10.0.0.5"]})).unwrap();
        let by_uid: Endpoint = endpoint(ep("renamed", "10.9.9.8", json!({}))).unwrap();
        assert!(m.owns(&by_name) && m.owns(&by_ip));
        assert!(!m.owns(&other) && !m.owns(&by_uid));
        m.uid = Some("uid-renamed".into());
        assert!(m.owns(&by_uid));
        let v6: Endpoint = endpoint(json!({"addresses": ["fd00:0:0::5"]})).unwrap();
        m.ips.push("fd00::5".parse().unwrap());
        assert!(m.owns(&v6), "IPv6 compared as addresses, not strings");
        let other_ns =
            endpoint(json!({"addresses": ["10.1.1.1"], "targetRef": {"kind": "Pod", "namespace": "other", "name": "web-1"}})).unwrap();
        assert!(!m.owns(&other_ns));
    }

    #[test]
    fn flip_in_one_slice_of_two_is_not_gone() {
        let m = me();
        let mut t = Tracker::new(&[]);
        let ready = json!({"ready": true, "serving": true, "terminating": false});
        let term = json!({"ready": false, "serving": true, "terminating": true});
        t.reset(
            &m,
            &list(
                "100",
                vec![
                    slice("web-a", "web", "90", json!([ep("web-1", "10.0.0.5", ready.clone()), ep("web-2", "10.0.0.6", ready.clone())])),
                    slice("web-b", "web", "91", json!([ep("web-1", "10.0.0.5", ready.clone())])),
                    slice("db-a", "db", "92", json!([ep("db-1", "10.0.0.7", ready.clone())])),
                ],
            ),
        );
        assert_eq!((t.listed, t.rv.as_str()), (3, "100"));
        assert_eq!(t.summary(), Summary { slices: 2, entries: 2, in_service: 2 });
        assert_eq!(t.services(), "web");
        let changed = t.apply(&m, &event("MODIFIED", slice("web-a", "web", "101", json!([ep("web-1", "10.0.0.5", term.clone())]))));
        assert_eq!(changed.as_deref(), Some("web-a"));
        assert!(!t.summary().gone());
        assert_eq!(t.apply(&m, &event("MODIFIED", slice("db-a", "db", "102", json!([])))), None);
        t.apply(&m, &event("MODIFIED", slice("web-b", "web", "103", json!([ep("web-1", "10.0.0.5", term)]))));
        assert_eq!(t.summary(), Summary { slices: 2, entries: 2, in_service: 0 });
        assert!(t.summary().gone());
        assert_eq!(t.rv, "103");
        assert_eq!(t.trigger_time("web-b"), Some("2026-11-25T14:03:11.5Z"));
    }

    #[test]
    fn removal_and_deletion_count_as_gone() {
        let m = me();
        let mut t = Tracker::new(&[]);
        t.reset(&m, &list("5", vec![slice("web-a", "web", "4", json!([ep("web-1", "10.0.0.5", json!({}))]))]));
        assert!(!t.summary().gone());
        t.apply(&m, &event("MODIFIED", slice("web-a", "web", "6", json!(null))));
        assert!(t.summary().gone());
        t.reset(&m, &list("7", vec![slice("web-a", "web", "4", json!([ep("web-1", "10.0.0.5", json!({}))]))]));
        assert_eq!(t.apply(&m, &event("DELETED", slice("web-a", "web", "8", json!([])))).as_deref(), Some("web-a"));
        assert!(t.summary().gone());
        assert_eq!(t.rv, "8");
        assert_eq!(t.apply(&m, &event("BOOKMARK", json!({"kind": "EndpointSlice", "metadata": {"resourceVersion": "12"}}))), None);
        assert_eq!(t.rv, "12");
    }

    #[test]
    fn service_filter_applies_client_side() {
        let m = me();
        let mut t = Tracker::new(&["web".to_string()]);
        t.reset(&m, &list("5", vec![slice("other-a", "other", "4", json!([ep("web-1", "10.0.0.5", json!({}))]))]));
        assert_eq!(t.summary().entries, 0);
    }

    #[test]
    fn events() {
        assert_eq!(event("BOOKMARK", json!({"metadata": {"resourceVersion": "7"}})), Event::Bookmark("7".into()));
        // The typed bookmark the apiserver really sends: an empty object with only the RV.
        let typed = json!({"kind": "EndpointSlice", "metadata": {"resourceVersion": "8", "creationTimestamp": null},
                           "addressType": "", "endpoints": null, "ports": null});
        assert_eq!(event("BOOKMARK", typed), Event::Bookmark("8".into()));
        let err = event("ERROR", json!({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 1 (5)"}));
        assert!(matches!(err, Event::Error(Status { code: 410, .. })));
        assert!(decode_event(br#"{"type":"WHAT","object":{}}"#).is_err());
        assert!(decode_event(br#"{"type":"MODIFIED","object":{"kind":"EndpointSlice",,,garbage"#).is_err());
        assert!(decode_event(br#"{"type":"MODIFIED","object":{"endpoints":"nope"}}"#).is_err());
    }

    #[test]
    fn pod_and_status() {
        let pod = decode_pod(
            br#"{"metadata":{"name":"web-1","uid":"u","deletionTimestamp":"2026-11-25T14:03:11Z","deletionGracePeriodSeconds":30},
                 "status":{"podIP":"10.0.0.5","podIPs":[{"ip":"10.0.0.5"},{"ip":"fd00::5"}]}}"#,
        )
        .unwrap();
        assert_eq!(pod.deletion_timestamp.as_deref(), Some("2026-11-25T14:03:11Z"));
        assert_eq!(pod.deletion_grace_period_seconds, Some(30));
        assert_eq!(pod.uid, "u");
        assert_eq!(pod.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        let st = decode_status(br#"{"kind":"Status","status":"Failure","message":"forbidden","reason":"Forbidden","code":403}"#);
        assert_eq!(st.map(|s| s.code), Some(403));
        assert_eq!(decode_status(b"<html>"), None);
        assert_eq!(decode_status(b"{}"), None);
    }

    #[test]
    fn selectors() {
        assert_eq!(label_selector(&[]), None);
        assert_eq!(label_selector(&["web".into()]).as_deref(), Some("kubernetes.io/service-name=web"));
        assert_eq!(label_selector(&["a".into(), "b".into()]).as_deref(), Some("kubernetes.io/service-name in (a,b)"));
    }
}
