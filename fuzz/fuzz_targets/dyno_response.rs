//! The router's HTTP/1.1 client codec on arbitrary dyno output: response
//! heads (interim responses, framing, limits) and chunked bodies, fed in
//! pieces the way reads deliver them (`router::fuzzing::dyno_response`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    router::fuzzing::dyno_response(data);
});
