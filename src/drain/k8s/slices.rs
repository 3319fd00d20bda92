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
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::net::IpAddr;

use serde_core::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The label that ties a slice to its Service (discovery/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Set by the EndpointSlice controller on every slice update: when the pod
/// or Service change that caused it happened (RFC3339Nano).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// A whole list (tests and fuzzing; the drain streams pages instead).
#[cfg_attr(not(test), allow(dead_code))]
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
    /// `spec.terminationGracePeriodSeconds` (what `--grace-period` should be).
    pub grace_period_seconds: Option<i64>,
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

// Decoding: serde visitors over a streaming JSON reader that keep only the
// fields above (everything else is skipped without being stored), so a LIST
// page is never held whole in memory; each slice is handed on as soon as it
// is decoded (`decode_list_from`). Every decoder is a pure function over
// bytes (or a reader) for tests and fuzzing. A missing field and `null` are
// the same (Go's nil); a field of the wrong type is an error.

/// One JSON deserializer type for every decoder: one copy of the code.
type Json<'r> = serde_json::Deserializer<serde_json::de::IoRead<&'r mut dyn Read>>;

/// A JSON object with a few known fields: `FIELDS[i]` is handed to `field`
/// with index `i`; any other key is skipped.
trait Object: Default {
    const FIELDS: &'static [&'static str];
    const WHAT: &'static str;
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error>;
}

/// Deserializes an `Object`; `null` gives its default (Go's nil).
struct Obj<T>(PhantomData<T>);

fn obj<T>() -> Obj<T> {
    Obj(PhantomData)
}

// Each seed asks for the JSON type it wants (`deserialize_map`, `_str`,
// ...) behind `deserialize_option` for `null`, rather than taking any type
// (`deserialize_any`): less code per seed, and a wrong type is an error.

impl<'de, T: Object> DeserializeSeed<'de> for Obj<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Object> Visitor<'de> for Obj<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (a JSON object)", T::WHAT)
    }
    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut out = T::default();
        while let Some(key) = map.next_key_seed(Key(T::FIELDS))? {
            match key {
                Some(i) => out.field(i, &mut map)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// An object key, matched against the known names without allocating.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|&name| name == v))
    }
}

/// A string, or `null` (empty).
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A string that may be absent or `null` (None), kept as such.
struct MaybeText;

impl<'de> DeserializeSeed<'de> for MaybeText {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MaybeText {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(v.to_string()))
    }
}

/// A boolean, or `null` (None: its meaning differs per field).
struct Flag;

impl<'de> DeserializeSeed<'de> for Flag {
    type Value = Option<bool>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<bool>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Flag {
    type Value = Option<bool>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<bool>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<bool>, D::Error> {
        d.deserialize_bool(self)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<bool>, E> {
        Ok(Some(v))
    }
}

/// An integer, or `null` (None).
struct Int;

impl<'de> DeserializeSeed<'de> for Int {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Int {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_i64(self)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i64>, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i64>, E> {
        i64::try_from(v).map(Some).map_err(|_| E::custom("integer out of range"))
    }
}

/// A JSON array, each element decoded by a fresh `S` and handed to `each`;
/// `null` is an empty array.
struct Each<S, F>(fn() -> S, F);

impl<'de, S: DeserializeSeed<'de>, F: FnMut(S::Value)> DeserializeSeed<'de> for Each<S, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>, F: FnMut(S::Value)> Visitor<'de> for Each<S, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Each(seed, mut each) = self;
        while let Some(v) = seq.next_element_seed(seed())? {
            each(v);
        }
        Ok(())
    }
}

/// A JSON array (or `null`) into a Vec.
fn list<'de, S: DeserializeSeed<'de>, A: MapAccess<'de>>(map: &mut A, seed: fn() -> S) -> Result<Vec<S::Value>, A::Error> {
    let mut out = Vec::new();
    map.next_value_seed(Each(seed, |v| out.push(v)))?;
    Ok(out)
}

/// Decodes one JSON document from `r` with `decode`, which must read the
/// top-level object (not `null`): then only whitespace may follow.
fn document<T>(r: &mut dyn Read, what: &str, decode: impl FnOnce(&mut Json) -> Result<T, serde_json::Error>) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_reader(r);
    decode(&mut de).and_then(|v| de.end().map(|()| v)).map_err(|e| format!("malformed {what}: {e}"))
}

/// Top-level objects must be objects: `null` there is no Kubernetes answer.
fn top<T: Object>(de: &mut Json) -> Result<T, serde_json::Error> {
    de.deserialize_map(obj::<T>())
}

impl Object for EndpointSlice {
    const FIELDS: &'static [&'static str] = &["metadata", "endpoints"];
    const WHAT: &'static str = "EndpointSlice";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => {
                let m: SliceMeta = map.next_value_seed(obj())?;
                (self.name, self.resource_version, self.service, self.trigger_time) =
                    (m.name, m.resource_version, m.labels.0, m.annotations.0);
            }
            _ => self.endpoints = list(map, obj::<Endpoint>)?,
        }
        Ok(())
    }
}

#[derive(Default)]
struct SliceMeta {
    name: String,
    resource_version: String,
    labels: ServiceLabel,
    annotations: TriggerTime,
}

impl Object for SliceMeta {
    const FIELDS: &'static [&'static str] = &["name", "resourceVersion", "labels", "annotations"];
    const WHAT: &'static str = "metadata";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => self.name = map.next_value_seed(Text)?,
            1 => self.resource_version = map.next_value_seed(Text)?,
            2 => self.labels = map.next_value_seed(obj())?,
            _ => self.annotations = map.next_value_seed(obj())?,
        }
        Ok(())
    }
}

/// The one label read: `kubernetes.io/service-name`.
#[derive(Default)]
struct ServiceLabel(String);

impl Object for ServiceLabel {
    const FIELDS: &'static [&'static str] = &[SERVICE_NAME_LABEL];
    const WHAT: &'static str = "labels";
    fn field<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.0 = map.next_value_seed(Text)?;
        Ok(())
    }
}

/// The one annotation read: the controller's last-change-trigger-time.
#[derive(Default)]
struct TriggerTime(Option<String>);

impl Object for TriggerTime {
    const FIELDS: &'static [&'static str] = &[TRIGGER_TIME_ANNOTATION];
    const WHAT: &'static str = "annotations";
    fn field<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.0 = map.next_value_seed(MaybeText)?;
        Ok(())
    }
}

impl Object for Endpoint {
    const FIELDS: &'static [&'static str] = &["addresses", "conditions", "targetRef"];
    const WHAT: &'static str = "endpoint";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => self.addresses = list(map, || Text)?,
            1 => self.conditions = map.next_value_seed(obj())?,
            _ => self.target_ref = map.next_value_seed(MaybeObj(obj::<ObjectReference>()))?,
        }
        Ok(())
    }
}

impl Object for Conditions {
    const FIELDS: &'static [&'static str] = &["ready", "serving", "terminating"];
    const WHAT: &'static str = "conditions";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        let v = map.next_value_seed(Flag)?;
        match i {
            0 => self.ready = v,
            1 => self.serving = v,
            _ => self.terminating = v,
        }
        Ok(())
    }
}

impl Object for ObjectReference {
    const FIELDS: &'static [&'static str] = &["kind", "namespace", "name", "uid"];
    const WHAT: &'static str = "targetRef";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        let v = map.next_value_seed(Text)?;
        match i {
            0 => self.kind = v,
            1 => self.namespace = v,
            2 => self.name = v,
            _ => self.uid = v,
        }
        Ok(())
    }
}

/// An object that may be absent or `null` (None), kept as such.
struct MaybeObj<T>(Obj<T>);

impl<'de, T: Object> DeserializeSeed<'de> for MaybeObj<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Object> Visitor<'de> for MaybeObj<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self.0).map(Some)
    }
}

/// `metadata` of a list.
#[derive(Default)]
struct ListMeta {
    resource_version: String,
    continue_token: String,
}

impl Object for ListMeta {
    const FIELDS: &'static [&'static str] = &["resourceVersion", "continue"];
    const WHAT: &'static str = "metadata";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        let v = map.next_value_seed(Text)?;
        match i {
            0 => self.resource_version = v,
            _ => self.continue_token = v,
        }
        Ok(())
    }
}

/// An EndpointSliceList whose items go to a callback as they are decoded.
struct ListVisitor<'f>(&'f mut dyn FnMut(EndpointSlice));

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = ListMeta;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an EndpointSliceList (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListMeta, A::Error> {
        let mut meta = ListMeta::default();
        while let Some(key) = map.next_key_seed(Key(&["metadata", "items"]))? {
            match key {
                Some(0) => meta = map.next_value_seed(obj())?,
                Some(_) => map.next_value_seed(Each(obj::<EndpointSlice>, &mut *self.0))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}

/// Parses a list of IPs, skipping blanks and anything that is not an IP.
pub fn parse_ips<'a>(list: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for ip in list.filter_map(|s| s.trim().parse::<IpAddr>().ok()) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Streams one EndpointSliceList page from `r`: each slice goes to `each`
/// as soon as it is decoded, so only one is held at a time. Returns the
/// list's resourceVersion and continue token.
pub fn decode_list_from(r: &mut dyn Read, each: &mut dyn FnMut(EndpointSlice)) -> Result<(String, String), String> {
    let meta = document(r, "EndpointSliceList", |de| de.deserialize_map(ListVisitor(each)))?;
    Ok((meta.resource_version, meta.continue_token))
}

/// A whole EndpointSliceList (tests and fuzzing; the drain streams).
#[cfg_attr(not(test), allow(dead_code))]
pub fn decode_list(mut bytes: &[u8]) -> Result<EndpointSliceList, String> {
    let mut items = Vec::new();
    let (resource_version, continue_token) = decode_list_from(&mut bytes, &mut |s| items.push(s))?;
    Ok(EndpointSliceList { resource_version, continue_token, items })
}

impl Object for Pod {
    const FIELDS: &'static [&'static str] = &["metadata", "status", "spec"];
    const WHAT: &'static str = "Pod";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => {
                let m: PodMeta = map.next_value_seed(obj())?;
                (self.uid, self.deletion_timestamp, self.deletion_grace_period_seconds) = (m.uid, m.deletion_timestamp, m.grace);
            }
            1 => {
                let st: PodStatus = map.next_value_seed(obj())?;
                let ips = st.pod_ip.iter().chain(&st.pod_ips).map(String::as_str);
                self.ips = parse_ips(ips);
            }
            _ => self.grace_period_seconds = map.next_value_seed(obj::<OneInt>())?.0,
        }
        Ok(())
    }
}

/// `spec` of a Pod: `terminationGracePeriodSeconds` only.
#[derive(Default)]
struct OneInt(Option<i64>);

impl Object for OneInt {
    const FIELDS: &'static [&'static str] = &["terminationGracePeriodSeconds"];
    const WHAT: &'static str = "spec";
    fn field<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.0 = map.next_value_seed(Int)?;
        Ok(())
    }
}

#[derive(Default)]
struct PodMeta {
    uid: String,
    deletion_timestamp: Option<String>,
    grace: Option<i64>,
}

impl Object for PodMeta {
    const FIELDS: &'static [&'static str] = &["uid", "deletionTimestamp", "deletionGracePeriodSeconds"];
    const WHAT: &'static str = "metadata";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => self.uid = map.next_value_seed(Text)?,
            1 => self.deletion_timestamp = map.next_value_seed(MaybeText)?,
            _ => self.grace = map.next_value_seed(Int)?,
        }
        Ok(())
    }
}

#[derive(Default)]
struct PodStatus {
    pod_ip: Option<String>,
    pod_ips: Vec<String>,
}

impl Object for PodStatus {
    const FIELDS: &'static [&'static str] = &["podIP", "podIPs"];
    const WHAT: &'static str = "status";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => self.pod_ip = map.next_value_seed(MaybeText)?,
            _ => self.pod_ips = list(map, obj::<PodIp>)?.into_iter().map(|p| p.0).collect(),
        }
        Ok(())
    }
}

/// One of `status.podIPs`: `{"ip": "10.0.0.5"}`.
#[derive(Default)]
struct PodIp(String);

impl Object for PodIp {
    const FIELDS: &'static [&'static str] = &["ip"];
    const WHAT: &'static str = "podIPs entry";
    fn field<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.0 = map.next_value_seed(Text)?;
        Ok(())
    }
}

/// The own Pod, streamed from `r`.
pub fn decode_pod_from(r: &mut dyn Read) -> Result<Pod, String> {
    document(r, "Pod", top::<Pod>)
}

/// The own Pod from bytes (tests and fuzzing).
#[cfg_attr(not(test), allow(dead_code))]
pub fn decode_pod(mut bytes: &[u8]) -> Result<Pod, String> {
    decode_pod_from(&mut bytes)
}

impl Object for Status {
    const FIELDS: &'static [&'static str] = &["message", "reason", "code"];
    const WHAT: &'static str = "Status";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => self.message = map.next_value_seed(Text)?,
            1 => self.reason = map.next_value_seed(Text)?,
            _ => self.code = map.next_value_seed(Int)?.unwrap_or(0),
        }
        Ok(())
    }
}

/// The Status in an error response body, if it is one.
pub fn decode_status(mut bytes: &[u8]) -> Option<Status> {
    let st = document(&mut bytes, "Status", top::<Status>).ok()?;
    (!st.message.is_empty() || !st.reason.is_empty() || st.code != 0).then_some(st)
}

/// What `lastcall explain` reads of a core/v1 Service (its `spec`) or of
/// the answer to a SelfSubjectAccessReview (authorization.k8s.io/v1, its
/// `status`): one decoder for both, as they are read the same way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Brief {
    /// Service `spec.type`: ClusterIP (also when absent), NodePort,
    /// LoadBalancer or ExternalName.
    pub kind: String,
    /// Service `spec.publishNotReadyAddresses`: the endpoint stays `ready`
    /// while terminating (see the module doc).
    pub publish_not_ready: bool,
    /// Review `status.allowed` (required; false also when no authorizer
    /// had an opinion).
    pub allowed: bool,
    /// Review `status.reason` (optional).
    pub reason: String,
    /// Review `status.evaluationError` (optional).
    pub evaluation_error: String,
}

impl Object for Brief {
    const FIELDS: &'static [&'static str] = &["spec", "status"];
    const WHAT: &'static str = "object";
    fn field<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        let inner: BriefFields = map.next_value_seed(obj())?;
        let b = inner.0;
        if !b.kind.is_empty() || b.publish_not_ready {
            (self.kind, self.publish_not_ready) = (b.kind, b.publish_not_ready);
        }
        if b.allowed || !b.reason.is_empty() || !b.evaluation_error.is_empty() {
            (self.allowed, self.reason, self.evaluation_error) = (b.allowed, b.reason, b.evaluation_error);
        }
        Ok(())
    }
}

#[derive(Default)]
struct BriefFields(Brief);

impl Object for BriefFields {
    const FIELDS: &'static [&'static str] = &["type", "publishNotReadyAddresses", "allowed", "reason", "evaluationError"];
    const WHAT: &'static str = "spec or status";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        let b = &mut self.0;
        match i {
            0 => b.kind = map.next_value_seed(Text)?,
            1 => b.publish_not_ready = map.next_value_seed(Flag)?.unwrap_or(false),
            2 => b.allowed = map.next_value_seed(Flag)?.unwrap_or(false),
            3 => b.reason = map.next_value_seed(Text)?,
            _ => b.evaluation_error = map.next_value_seed(Text)?,
        }
        Ok(())
    }
}

/// A Service or a SelfSubjectAccessReview answer, streamed from `r`.
pub fn decode_brief_from(r: &mut dyn Read) -> Result<Brief, String> {
    document(r, "object", top::<Brief>)
}

/// The same from bytes (tests and fuzzing).
#[cfg_attr(not(test), allow(dead_code))]
pub fn decode_brief(mut bytes: &[u8]) -> Result<Brief, String> {
    decode_brief_from(&mut bytes)
}

/// A watch event's `object`: an EndpointSlice, or a Status for ERROR. The
/// type may come after the object, so both shapes' fields are read.
#[derive(Default)]
struct EventObject {
    slice: EndpointSlice,
    status: Status,
}

impl Object for EventObject {
    const FIELDS: &'static [&'static str] = &["metadata", "endpoints", "message", "reason", "code"];
    const WHAT: &'static str = "object";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 | 1 => self.slice.field(i, map),
            _ => self.status.field(i - 2, map),
        }
    }
}

#[derive(Default)]
struct RawEvent {
    kind: String,
    object: Option<EventObject>,
}

impl Object for RawEvent {
    const FIELDS: &'static [&'static str] = &["type", "object"];
    const WHAT: &'static str = "watch event";
    fn field<'de, A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error> {
        match i {
            0 => self.kind = map.next_value_seed(Text)?,
            _ => self.object = map.next_value_seed(MaybeObj(obj()))?,
        }
        Ok(())
    }
}

/// One line of a watch stream.
pub fn decode_event(mut bytes: &[u8]) -> Result<Event, String> {
    let ev = document(&mut bytes, "watch event", top::<RawEvent>)?;
    let kind = ev.kind.as_str();
    let Some(obj) = ev.object else {
        return Err(format!("malformed {kind} event: no object"));
    };
    Ok(match kind {
        "ADDED" => Event::Added(obj.slice),
        "MODIFIED" => Event::Modified(obj.slice),
        "DELETED" => Event::Deleted(obj.slice),
        "BOOKMARK" => Event::Bookmark(obj.slice.resource_version),
        "ERROR" => Event::Error(obj.status),
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
    /// Is this endpoint ours? A `targetRef` decides when there is one: kind
    /// Pod in our namespace, with our uid (once the pod object was read and
    /// the reference carries one) or else our name. An endpoint that names
    /// another pod is never ours, even with one of our IPs: hostNetwork pods
    /// share the node's address, and pod IPs are reused. Only an endpoint
    /// without a targetRef (slices written by hand) is matched by address.
    pub fn owns(&self, ep: &Endpoint) -> bool {
        match &ep.target_ref {
            Some(r) if *r != ObjectReference::default() => {
                r.kind == "Pod"
                    && (r.namespace.is_empty() || r.namespace == self.namespace)
                    && match self.uid.as_deref() {
                        Some(uid) if !r.uid.is_empty() => r.uid == uid,
                        _ => !r.name.is_empty() && r.name == self.name,
                    }
            }
            _ => ep.addresses.iter().any(|a| a.trim().parse::<IpAddr>().is_ok_and(|ip| self.ips.contains(&ip))),
        }
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

/// A list being read: the slices that list this pod, and how many were seen.
#[derive(Debug, Default)]
pub struct Listing {
    slices: BTreeMap<String, SliceView>,
    listed: usize,
}

impl Listing {
    /// Adds the next page.
    pub fn extend(&mut self, page: Listing) {
        self.slices.extend(page.slices);
        self.listed += page.listed;
    }
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

    /// Forget everything and take a whole list (tests and fuzzing; the
    /// drain adds page by page).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn reset(&mut self, me: &Me, list: &EndpointSliceList) {
        let mut fresh = Listing::default();
        for slice in &list.items {
            self.add(&mut fresh, me, slice);
        }
        self.take(fresh, list.resource_version.clone());
    }

    /// One slice of a list being read (page by page): only what concerns
    /// this pod is kept.
    pub fn add(&self, listing: &mut Listing, me: &Me, slice: &EndpointSlice) {
        listing.listed += 1;
        match self.view(me, slice) {
            Some(view) => listing.slices.insert(slice.name.clone(), view),
            None => listing.slices.remove(&slice.name),
        };
    }

    /// The list is complete: it replaces what was known, and the watch
    /// resumes from its resourceVersion.
    pub fn take(&mut self, listing: Listing, rv: String) {
        self.slices = listing.slices;
        self.listed = listing.listed;
        self.rv = rv;
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
        match self.view(me, slice) {
            Some(view) => self.slices.insert(slice.name.clone(), view),
            None => self.slices.remove(&slice.name),
        };
    }

    /// What `slice` says about this pod, if it lists it.
    fn view(&self, me: &Me, slice: &EndpointSlice) -> Option<SliceView> {
        // The server filters by label already; checking again costs nothing
        // and keeps a slice of another Service from ever counting.
        if !self.services.is_empty() && !self.services.contains(&slice.service) {
            return None;
        }
        let in_service: Vec<bool> = slice.endpoints.iter().filter(|ep| me.owns(ep)).map(|ep| ep.conditions.in_service()).collect();
        (!in_service.is_empty()).then(|| SliceView { service: slice.service.clone(), in_service, trigger_time: slice.trigger_time.clone() })
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
        let mut l = decode_list(json!({"items": [{"endpoints": [v]}]}).to_string().as_bytes())?;
        Ok(l.items.remove(0).endpoints.remove(0))
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
    fn target_ref_wins_over_the_address() {
        let mut m = me();
        // Another pod with our IP (hostNetwork, IP reuse): not ours.
        assert!(!m.owns(&endpoint(ep("web-2", "10.0.0.5", json!({}))).unwrap()));
        assert!(!m.owns(&endpoint(json!({"addresses": ["10.0.0.5"], "targetRef": {"kind": "Node", "name": "node-1"}})).unwrap()));
        // No targetRef, or an empty one: the address decides.
        assert!(m.owns(&endpoint(json!({"addresses": ["10.0.0.5"], "targetRef": null})).unwrap()));
        assert!(m.owns(&endpoint(json!({"addresses": ["10.0.0.5"], "targetRef": {}})).unwrap()));
        // Once our uid is known, it decides over the name: an endpoint of an
        // earlier pod of the same name (a StatefulSet's) is not ours.
        m.uid = Some("uid-web-1".into());
        assert!(m.owns(&endpoint(ep("web-1", "10.9.9.9", json!({}))).unwrap()));
        let earlier = json!({"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "name": "web-1", "uid": "uid-old"}});
        assert!(!m.owns(&endpoint(earlier).unwrap()));
        let no_uid = json!({"addresses": ["10.9.9.9"], "targetRef": {"kind": "Pod", "name": "web-1"}});
        assert!(m.owns(&endpoint(no_uid).unwrap()));
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
                 "spec":{"containers":[{"name":"app"}],"terminationGracePeriodSeconds":45},
                 "status":{"podIP":"10.0.0.5","podIPs":[{"ip":"10.0.0.5"},{"ip":"fd00::5"}]}}"#,
        )
        .unwrap();
        assert_eq!(pod.grace_period_seconds, Some(45));
        assert_eq!(pod.deletion_timestamp.as_deref(), Some("2026-11-25T14:03:11Z"));
        assert_eq!(pod.deletion_grace_period_seconds, Some(30));
        assert_eq!(pod.uid, "u");
        assert_eq!(pod.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        let st = decode_status(br#"{"kind":"Status","status":"Failure","message":"forbidden","reason":"Forbidden","code":403}"#);
        assert_eq!(st.map(|s| s.code), Some(403));
        assert_eq!(decode_status(b"<html>"), None);
        assert_eq!(decode_status(b"{}"), None);
    }

    /// A Service's spec and a SelfSubjectAccessReview's status, through the
    /// one decoder `explain` reads both with; what is absent is the default.
    #[test]
    fn services_and_access_reviews() {
        let svc = decode_brief(
            br#"{"kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"port":80}],"type":"LoadBalancer",
                 "publishNotReadyAddresses":true},"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"}]}}}"#,
        )
        .unwrap();
        assert_eq!((svc.kind.as_str(), svc.publish_not_ready, svc.allowed), ("LoadBalancer", true, false));
        let plain = decode_brief(br#"{"spec":{"clusterIP":"10.96.0.9"},"status":{"loadBalancer":{}}}"#).unwrap();
        assert_eq!(plain, Brief::default());
        let yes = decode_brief(
            br#"{"kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"watch"}},
                 "status":{"allowed":true,"reason":"RBAC: allowed by RoleBinding"}}"#,
        )
        .unwrap();
        assert_eq!((yes.allowed, yes.reason.as_str(), yes.kind.as_str()), (true, "RBAC: allowed by RoleBinding", ""));
        let no = decode_brief(br#"{"status":{"allowed":false,"evaluationError":"no RBAC policy matched"}}"#).unwrap();
        assert_eq!((no.allowed, no.evaluation_error.as_str()), (false, "no RBAC policy matched"));
        assert!(decode_brief(br#"{"status":{"allowed":"yes"}}"#).is_err());
        assert!(decode_brief(b"null").is_err());
    }

    #[test]
    fn selectors() {
        assert_eq!(label_selector(&[]), None);
        assert_eq!(label_selector(&["web".into()]).as_deref(), Some("kubernetes.io/service-name=web"));
        assert_eq!(label_selector(&["a".into(), "b".into()]).as_deref(), Some("kubernetes.io/service-name in (a,b)"));
    }
}
