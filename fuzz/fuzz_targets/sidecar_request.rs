//! The sidecar's request handling (`decide`) on arbitrary bytes, with and
//! without a required token: it must never panic, and an answer must be a
//! real HTTP status.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/mode/sidecar/request.rs"]
#[allow(dead_code)]
mod request;

fuzz_target!(|data: &[u8]| {
    for token in [None, Some(&b"0123456789abcdef"[..])] {
        for source_allowed in [true, false] {
            let _ = request::decide(data, &request::Access { token, source_allowed });
        }
    }
});
