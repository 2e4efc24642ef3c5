//! The syslog stream decoder (RFC 6587 octet counting and newline framing,
//! chosen per frame) on arbitrary bytes, then every frame through logplex's
//! ingest path (syslog parsing, token routing, line splitting, history).
//!
//! Input: `[max_frame, split, stream…]`. Besides never panicking, the
//! framing must not depend on how the stream was cut into reads: the frames
//! of the whole stream and of the stream in two reads are the same.

#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use logplex::frame::{FrameError, Framer};
use logplex::{ChannelSpec, Logplex, LogplexConfig, LogplexSettings, TokenSpec, Transport};

fn logplex() -> &'static Arc<Logplex> {
    static LOGPLEX: OnceLock<Arc<Logplex>> = OnceLock::new();
    LOGPLEX.get_or_init(|| {
        let settings = LogplexSettings {
            history_lines: 50,
            max_line_bytes: 64,
            ..LogplexSettings::default()
        };
        let logplex = Logplex::new(settings);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        logplex.configure(LogplexConfig {
            revision: 1,
            channels: vec![ChannelSpec {
                app_id: "app-1".into(),
                app_name: "demo".into(),
                tokens: vec![TokenSpec {
                    token: "t.fuzz".into(),
                    name: "app".into(),
                }],
                drains: Vec::new(),
            }],
        });
        logplex
    })
}

fn frames(reads: &[&[u8]], max_frame: usize) -> Vec<Result<Bytes, FrameError>> {
    let mut framer = Framer::new(max_frame);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        while let Some(frame) = framer.next_frame(&mut buf) {
            out.push(frame);
        }
    }
    out.extend(framer.finish(&mut buf));
    out
}

fuzz_target!(|data: &[u8]| {
    let [max, split, stream @ ..] = data else {
        return;
    };
    let max_frame = usize::from(*max).max(1);
    let whole = frames(&[stream], max_frame);
    let (a, b) = stream.split_at(usize::from(*split).min(stream.len()));
    assert_eq!(
        whole,
        frames(&[a, b], max_frame),
        "framing depends on read boundaries"
    );
    for frame in whole.iter().flatten() {
        assert!(frame.len() <= max_frame, "frame longer than the limit");
        let _ = logplex().ingest(frame, Transport::Tcp);
    }
    let _ = logplex::fuzzing::syslog_stream(stream, usize::from(*split), max_frame);
});
