//! Connect JSON request bodies for every method: decode never panics, and
//! whatever decodes survives a JSON round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((selector, body)) = data.split_first() {
        prebuildd::fuzzing::connect_body(*selector, true, body);
    }
});
