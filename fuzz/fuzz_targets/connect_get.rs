//! The Connect GET query form (`connect=v1&encoding=...&message=...&base64=1&compression=gzip`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((selector, query)) = data.split_first() {
        if let Ok(query) = std::str::from_utf8(query) {
            prebuildd::fuzzing::connect_get_query(*selector, query);
        }
    }
});
