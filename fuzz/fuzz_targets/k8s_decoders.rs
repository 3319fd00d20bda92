//! The Kubernetes decoders on arbitrary bytes: an EndpointSlice list (whole
//! and streamed page by page), a Pod, a watch event line, a Status, a
//! Service or SelfSubjectAccessReview answer, and the deletionTimestamp
//! parser. None may panic; a list decoded both ways must give the same
//! slices.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/drain/k8s/slices.rs"]
#[allow(dead_code)]
mod slices;

#[path = "../../src/rfc3339.rs"]
#[allow(dead_code)]
mod rfc3339;

fuzz_target!(|data: &[u8]| {
    let whole = slices::decode_list(data);
    let mut streamed = Vec::new();
    let mut reader = data;
    let head = slices::decode_list_from(&mut reader, &mut |s| streamed.push(s));
    if let (Ok(list), Ok(_)) = (&whole, &head) {
        assert_eq!(list.items.len(), streamed.len(), "a list decoded whole and streamed differs");
    }
    let _ = slices::decode_pod(data);
    let _ = slices::decode_event(data);
    let _ = slices::decode_status(data);
    let _ = slices::decode_brief(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rfc3339::parse(text);
    }
});
