//! The `application/logplex-1` body parser (`POST /logs`) on arbitrary
//! bytes. A body it accepts must round-trip: re-encoding its frames gives a
//! body that parses to the same frames, none longer than the limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use logplex::frame::logplex_body;

const MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let _ = logplex::fuzzing::logplex_body(data);
    for frame in logplex_body(data, MAX).iter().flatten() {
        let _ = logplex::fuzzing::syslog_message(frame);
    }
    if let Ok(frames) = logplex_body(data, MAX) {
        let mut again = Vec::new();
        for f in &frames {
            assert!(f.len() <= MAX, "frame longer than the limit");
            again.extend_from_slice(format!("{} ", f.len()).as_bytes());
            again.extend_from_slice(f);
        }
        let back = logplex_body(&again, MAX).expect("a re-encoded body parses");
        assert_eq!(back, frames);
    }
});
