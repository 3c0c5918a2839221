//! Connect binary protobuf request bodies for every method.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((selector, body)) = data.split_first() {
        prebuildd::fuzzing::connect_body(*selector, false, body);
    }
});
