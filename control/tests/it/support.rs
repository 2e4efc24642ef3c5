//! The test harness: a control plane on a real listener, a real HTTP client,
//! a recording log backend and the `eventually` helper.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use control::{Control, ControlSettings, LogBackend, MemoryStore, SessionParams, Store};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const KEY: &str = "test-key-0123456789";

#[path = "../../../tests/support/wait.rs"]
mod wait;

pub use wait::{eventually_async as eventually, eventually_some, patience};

/// Records what the control plane sends to logplex.
#[derive(Default)]
pub struct RecordingLogs {
    pub config: Mutex<Option<logplex::LogplexConfig>>,
    pub lines: Mutex<Vec<(String, String, String, String)>>,
    pub sessions: Mutex<Vec<(String, SessionParams)>>,
}

impl LogBackend for RecordingLogs {
    fn configure(&self, config: logplex::LogplexConfig) {
        *self.config.lock().expect("lock") = Some(config);
    }
    fn emit(&self, app_id: &str, source: &str, process: &str, message: &str) {
        self.lines.lock().expect("lock").push((
            app_id.into(),
            source.into(),
            process.into(),
            message.into(),
        ));
    }
    fn create_session(&self, app_id: &str, params: SessionParams) -> Result<String, String> {
        self.sessions
            .lock()
            .expect("lock")
            .push((app_id.into(), params));
        Ok(format!("http://127.0.0.1:1/sessions/{app_id}"))
    }
}

impl RecordingLogs {
    pub fn messages(&self) -> Vec<String> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|l| format!("{}[{}]: {}", l.1, l.2, l.3))
            .collect()
    }
    pub fn config(&self) -> logplex::LogplexConfig {
        self.config
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_default()
    }
}

/// A control plane served on 127.0.0.1 with a router table and recording logs.
pub struct Harness {
    pub addr: SocketAddr,
    pub control: Arc<Control>,
    pub routes: Arc<router::Routes>,
    pub logs: Arc<RecordingLogs>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::with_store(Arc::new(MemoryStore::new()), None).await
    }

    /// Serves over `store` on a new port, or on `listener` when given. The
    /// server gets a handle to `listener`; the caller keeps the socket bound
    /// across the server's stop, so a restart on the same address never
    /// frees the port for someone else to take.
    pub async fn with_store(
        store: Arc<dyn Store>,
        listener: Option<&std::net::TcpListener>,
    ) -> Harness {
        let listener = match listener {
            Some(l) => {
                let l = l.try_clone().expect("listener handle");
                l.set_nonblocking(true).expect("nonblocking");
                TcpListener::from_std(l).expect("listener")
            }
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let addr = listener.local_addr().expect("addr");
        let routes = Arc::new(router::Routes::new(
            router::RouteTable::builder().build().expect("table"),
        ));
        let logs = Arc::new(RecordingLogs::default());
        let control = Control::open(
            store.clone(),
            ControlSettings::default(),
            Some(routes.clone()),
            Some(logs.clone() as Arc<dyn LogBackend>),
        )
        .expect("open");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(control::api::serve(
            listener,
            control.clone(),
            KEY.into(),
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            addr,
            control,
            routes,
            logs,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the API server (graceful; watch streams end).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(patience(), t)
                .await
                .expect("server stops");
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        request(
            &self.url(),
            method,
            path,
            body,
            Some(&format!("Bearer {KEY}")),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// Creates an app and returns its JSON.
    pub async fn app(&self, name: &str) -> Value {
        let (status, body) = self
            .call("POST", "/apps", Some(serde_json::json!({ "name": name })))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

/// One HTTP request; returns the status and the JSON body (`Null` if empty
/// or not JSON).
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: Option<&str>,
) -> (u16, Value) {
    let (status, bytes) = raw(
        base,
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
        auth,
    )
    .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// One HTTP request with a raw body.
pub async fn raw(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    auth: Option<&str>,
) -> (u16, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("accept", "application/vnd.heroku+json; version=3")
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let res = tokio::time::timeout(patience(), client.request(req))
        .await
        .expect("response in time")
        .expect("response");
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

/// Asserts a Heroku error body with `id`, whose message mentions `needle`.
pub fn assert_error(status: u16, body: &Value, want_status: u16, id: &str, needle: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["id"], id, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("switchyard-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
