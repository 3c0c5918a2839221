//! Pagination and logs tokens from clients.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        prebuildd::fuzzing::page_token(token);
    }
});
