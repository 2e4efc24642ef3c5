//! The control API's JSON bodies, paths and validation, through the real
//! axum router over an in-memory store. Input: `[method, path, '\n',
//! body…]`. Hostile input must end in a Heroku error (4xx), never a 5xx or
//! a panic.

#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use axum::body::Body;
use control::{Control, ControlSettings, LogBackend, MemoryStore, SessionParams};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const KEY: &str = "fuzz-key";
const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "PUT", "DELETE"];

/// Logs go nowhere; sessions get a fixed URL (the API needs a backend).
struct NoLogs;

impl LogBackend for NoLogs {
    fn configure(&self, _: logplex::LogplexConfig) {}
    fn emit(&self, _: &str, _: &str, _: &str, _: &str) {}
    fn create_session(&self, _: &str, _: SessionParams) -> Result<String, String> {
        Ok("http://127.0.0.1:1/sessions/fuzz".into())
    }
}

struct Api {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    // Keeps the watch streams' shutdown signal open.
    _stopping: tokio::sync::watch::Sender<bool>,
}

/// Inputs served by one control plane before a fresh one replaces it, so
/// the apps the fuzzer creates do not pile up across a long run.
const RESET_EVERY: u32 = 300;

thread_local! {
    static API: RefCell<Option<(Api, u32)>> = const { RefCell::new(None) };
}

fn with_api<R>(f: impl FnOnce(&Api) -> R) -> R {
    API.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(_, n)| *n >= RESET_EVERY) {
            *slot = None;
            *slot = Some((Api::new(), 0));
        }
        let (api, n) = slot.as_mut().expect("just set");
        *n += 1;
        f(api)
    })
}

impl Api {
    fn new() -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let routes = Arc::new(router::Routes::new(
            router::RouteTable::builder().build().expect("table"),
        ));
        let control = Control::open(
            Arc::new(MemoryStore::new()),
            ControlSettings::default(),
            Some(routes),
            Some(Arc::new(NoLogs)),
        )
        .expect("control");
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let router = control::api::router(control, KEY, stopping);
        let api = Api {
            rt,
            router,
            _stopping: stop,
        };
        // An app to aim at, so paths under /apps/demo reach their handlers.
        let _ = api.call("POST", "/apps", br#"{"name":"demo"}"#);
        api
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> Option<u16> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .header("accept", "application/vnd.heroku+json; version=3")
            .body(Body::from(body.to_vec()))
            .ok()?;
        let router = self.router.clone();
        self.rt.block_on(async move {
            let res = router.oneshot(req).await.ok()?;
            // Streams (the route watch) are dropped unread.
            Some(res.status().as_u16())
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let [m, rest @ ..] = data else {
        return;
    };
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => (&rest[..nl], &rest[nl + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    if method == "DELETE" && path.trim_end_matches('/') == "/apps/demo" {
        return;
    }
    if let Some(status) = with_api(|api| api.call(method, path, body)) {
        assert!(status < 500, "{method} {path} answered {status}");
    }
    for check in [
        control::validate::app_name,
        control::validate::process_type,
        control::validate::config_key,
        control::validate::token_name,
    ] {
        if let Ok(s) = std::str::from_utf8(body) {
            let _ = check(s);
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = control::validate::hostname("hostname", s);
        let _ = control::validate::socket_addr("address", s);
        let _ = control::validate::dyno_name(s);
        let _ = control::validate::drain_url(s);
    }
});
