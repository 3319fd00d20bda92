//! Property tests of everything that reads what the API server sends:
//! EndpointSlice lists, watch events, Pods, Status bodies, Services and
//! SelfSubjectAccessReview answers, and timestamps.
//! No input may panic (lastcall is PID 1, and a release build aborts on a
//! panic), and the "gone" evaluation must agree with a direct reading of the
//! rules on any sequence of well-formed events.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::rfc3339;
use super::slices::{decode_brief, decode_event, decode_list, decode_list_from, decode_pod, decode_status, Event, Me, Tracker};

/// A slice as the reference reads it: name, resourceVersion, Service, and
/// per endpoint its addresses, conditions and targetRef.
type RefSlice = (String, String, String, Vec<(Vec<String>, [Option<bool>; 3], Option<[String; 4]>)>);

/// The reference decoding: the fields the strategy uses, read from a
/// generic JSON tree (how the decoders were first written), to check the
/// streaming decoders against. Missing and `null` are the same; names of a
/// wrong type read as empty.
fn reference_list(bytes: &[u8]) -> Option<Vec<RefSlice>> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let null = Value::Null;
    let items = v.get("items").unwrap_or(&null);
    let items: &[Value] = if items.is_null() { &[] } else { items.as_array()? };
    let mut out = Vec::new();
    for it in items {
        let meta = it.get("metadata").unwrap_or(&null);
        let labels = meta.get("labels").unwrap_or(&null);
        let eps = it.get("endpoints").unwrap_or(&null);
        let eps: &[Value] = if eps.is_null() { &[] } else { eps.as_array()? };
        let mut endpoints = Vec::new();
        for ep in eps {
            let c = ep.get("conditions").unwrap_or(&null);
            let flag = |k: &str| c.get(k).and_then(Value::as_bool);
            let addrs =
                ep.get("addresses").and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect());
            let r = ep.get("targetRef").filter(|r| r.is_object());
            let r = r.map(|r| [text(r, "kind"), text(r, "namespace"), text(r, "name"), text(r, "uid")]);
            endpoints.push((addrs.unwrap_or_default(), [flag("ready"), flag("serving"), flag("terminating")], r));
        }
        out.push((text(meta, "name"), text(meta, "resourceVersion"), text(labels, "kubernetes.io/service-name"), endpoints));
    }
    Some(out)
}

/// Any JSON value, nested a few levels (keys drawn from the field names the
/// decoders look at, so the fuzzing reaches past the top level).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "Pod", "10.0.0.5", "web-1"])
            .prop_map(|s| Value::String(s.into())),
    ];
    let keys = prop::sample::select(vec![
        "type",
        "object",
        "metadata",
        "items",
        "endpoints",
        "addresses",
        "conditions",
        "ready",
        "serving",
        "terminating",
        "targetRef",
        "kind",
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "continue",
        "labels",
        "annotations",
        "deletionTimestamp",
        "status",
        "podIP",
        "podIPs",
        "ip",
        "code",
        "reason",
        "message",
        "spec",
        "publishNotReadyAddresses",
        "allowed",
        "evaluationError",
        "terminationGracePeriodSeconds",
        "x",
    ]);
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

fn me() -> Me {
    Me { name: "web-1".into(), namespace: "default".into(), uid: Some("uid-web-1".into()), ips: vec!["10.0.0.5".parse().unwrap()] }
}

/// A condition as the API may write it: true, false, null or absent.
fn tri() -> impl Strategy<Value = Option<Option<bool>>> {
    prop_oneof![Just(None), Just(Some(None)), Just(Some(Some(true))), Just(Some(Some(false)))]
}

/// One endpoint: ours (by name, uid or IP) or someone else's (another pod
/// with our IP included: targetRef wins).
fn endpoint() -> impl Strategy<Value = (Value, bool, bool)> {
    (0..6u8, tri(), tri(), tri()).prop_map(|(who, ready, serving, terminating)| {
        let mut cond = serde_json::Map::new();
        for (k, v) in [("ready", ready), ("serving", serving), ("terminating", terminating)] {
            if let Some(v) = v {
                cond.insert(k.into(), json!(v));
            }
        }
        let (ep, ours) = match who {
            0 => (json!({"addresses": ["10.0.0.9"], "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}), true),
            1 => (json!({"addresses": ["10.0.0.9"], "targetRef": {"kind": "Pod", "name": "x", "uid": "uid-web-1"}}), true),
            2 => (json!({"addresses": ["10.0.0.5"]}), true),
            3 => (json!({"addresses": ["10.0.0.6"], "targetRef": {"kind": "Pod", "name": "web-2"}}), false),
            4 => (json!({"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "name": "web-2", "uid": "uid-web-2"}}), false),
            _ => (json!({"addresses": ["10.0.0.9"], "targetRef": {"kind": "Node", "name": "web-1", "namespace": "other"}}), false),
        };
        let mut ep = ep;
        ep["conditions"] = Value::Object(cond);
        // nil ready = true, nil terminating = false.
        let in_service = ready != Some(Some(false)) && terminating != Some(Some(true));
        (ep, ours, in_service)
    })
}

/// A slice named from a small set, so events hit the same slices again.
fn slice() -> impl Strategy<Value = (String, Vec<(Value, bool, bool)>)> {
    (prop::sample::select(vec!["web-a", "web-b", "web-c"]), prop::collection::vec(endpoint(), 0..4))
        .prop_map(|(n, eps)| (n.to_string(), eps))
}

fn slice_json(name: &str, rv: u64, eps: &[(Value, bool, bool)]) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string(),
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4",
           "endpoints": if eps.is_empty() { Value::Null } else { Value::Array(eps.iter().map(|e| e.0.clone()).collect()) }})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_list(&bytes);
        let _ = decode_event(&bytes);
        let _ = decode_pod(&bytes);
        let _ = decode_status(&bytes);
        let _ = decode_brief(&bytes);
        let _ = rfc3339::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_never_panics(v in any_json(), kind in prop::sample::select(vec!["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "?"])) {
        let text = v.to_string();
        let m = me();
        let mut t = Tracker::new(&[]);
        if let Ok(list) = decode_list(text.as_bytes()) {
            t.reset(&m, &list);
            let _ = t.summary();
        }
        let _ = decode_pod(text.as_bytes());
        let _ = decode_status(text.as_bytes());
        let _ = decode_brief(text.as_bytes());
        for ev in [text.clone(), json!({"type": kind, "object": v}).to_string()] {
            if let Ok(e) = decode_event(ev.as_bytes()) {
                t.apply(&m, &e);
                let _ = t.summary().gone();
            }
        }
    }

    /// The streaming decoder reads well-formed lists (with fields it does
    /// not know, nulls, any key order) exactly as the reference does, and
    /// streaming a list slice by slice gives the same slices as decoding it
    /// whole.
    #[test]
    fn streaming_decode_matches_the_reference(slices in prop::collection::vec(slice(), 0..4), extra in any_json(), rv in 0..1000u64) {
        let items: Vec<Value> = slices.iter().enumerate().map(|(i, (n, eps))| {
            let mut s = slice_json(n, i as u64, eps);
            s["unknownField"] = extra.clone();
            s["metadata"]["managedFields"] = extra.clone();
            s
        }).collect();
        let doc = json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "extra": extra,
                         "items": items, "metadata": {"resourceVersion": rv.to_string(), "continue": "tok"}}).to_string();
        let want = reference_list(doc.as_bytes()).expect("the reference reads it");
        let list = decode_list(doc.as_bytes()).expect("the decoder reads it");
        prop_assert_eq!((list.resource_version.clone(), list.continue_token.clone()), (rv.to_string(), "tok".to_string()));
        let got: Vec<_> = list.items.iter().map(|s| (s.name.clone(), s.resource_version.clone(), s.service.clone(),
            s.endpoints.iter().map(|e| (e.addresses.clone(), [e.conditions.ready, e.conditions.serving, e.conditions.terminating],
                e.target_ref.as_ref().map(|r| [r.kind.clone(), r.namespace.clone(), r.name.clone(), r.uid.clone()]))).collect::<Vec<_>>())).collect();
        prop_assert_eq!(got, want);
        let mut streamed = Vec::new();
        let meta = decode_list_from(&mut doc.as_bytes(), &mut |s| streamed.push(s)).unwrap();
        prop_assert_eq!(meta, (rv.to_string(), "tok".to_string()));
        prop_assert_eq!(streamed, list.items);
    }

    #[test]
    fn timestamps_never_panic(s in "[0-9TZtz:+.-]{0,40}", prefix in "(19|20|99)[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9]") {
        let _ = rfc3339::parse(&s);
        let _ = rfc3339::parse(&format!("{prefix}{s}"));
    }

    /// After a list and any sequence of ADDED/MODIFIED/DELETED events, the
    /// tracker says "gone" exactly when no entry of ours is in service in
    /// the latest version of any slice.
    #[test]
    fn gone_matches_the_rules(initial in prop::collection::vec(slice(), 0..3), events in prop::collection::vec((0..3u8, slice()), 0..12)) {
        let m = me();
        let mut t = Tracker::new(&[]);
        // The reference model: the latest entries of each slice.
        let mut model: std::collections::BTreeMap<String, Vec<(Value, bool, bool)>> = Default::default();
        let items: Vec<Value> = initial.iter().map(|(n, eps)| slice_json(n, 1, eps)).collect();
        for (n, eps) in &initial {
            model.insert(n.clone(), eps.clone());
        }
        let list = decode_list(json!({"metadata": {"resourceVersion": "1"}, "items": items}).to_string().as_bytes()).unwrap();
        t.reset(&m, &list);
        for (i, (kind, (name, eps))) in events.iter().enumerate() {
            let kind = ["ADDED", "MODIFIED", "DELETED"][usize::from(*kind)];
            let ev = decode_event(json!({"type": kind, "object": slice_json(name, 2 + i as u64, eps)}).to_string().as_bytes()).unwrap();
            prop_assert!(matches!(ev, Event::Added(_) | Event::Modified(_) | Event::Deleted(_)));
            t.apply(&m, &ev);
            if kind == "DELETED" { model.remove(name); } else { model.insert(name.clone(), eps.clone()); }
            let ours: Vec<bool> = model.values().flatten().filter(|e| e.1).map(|e| e.2).collect();
            let s = t.summary();
            prop_assert_eq!(s.entries, ours.len());
            prop_assert_eq!(s.in_service, ours.iter().filter(|&&b| b).count());
            prop_assert_eq!(s.gone(), !ours.contains(&true));
            prop_assert_eq!(t.rv.clone(), (2 + i).to_string());
        }
    }
}
