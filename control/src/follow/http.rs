//! Following a control plane: `GET /routes` to sync, then
//! `GET /routes/watch?since=R` (newline-delimited events, see
//! [`crate::publish`] for the protocol and [`crate::watch`] for the stream).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{connected, decide, Failure, RouteCopy, Snapshot, Step};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The control-plane side of a follower.
pub(super) struct HttpLink {
    url: String,
    api_key: String,
    heartbeat: Duration,
    client: HttpClient,
    /// A sync happened and the watch can resume from the copy's revision.
    pub(super) synced: bool,
}

const GAUGE: &str = "switchyard_control_connected";

impl HttpLink {
    pub(super) fn new(url: &str, api_key: &str, heartbeat: Duration) -> Self {
        HttpLink {
            url: url.to_string(),
            api_key: api_key.to_string(),
            heartbeat,
            client: Client::builder(TokioExecutor::new()).build_http(),
            synced: false,
        }
    }

    fn request(&self, path: &str) -> Result<hyper::Request<Empty<Bytes>>, Failure> {
        hyper::Request::get(format!("{}{}", self.url, path))
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.api_key),
            )
            .body(Empty::new())
            .map_err(|e| Failure::Broken(format!("bad control URL: {e}")))
    }

    pub(super) async fn sync(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        let req = self.request("/routes")?;
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| Failure::Broken("GET /routes timed out".into()))?
            .map_err(|e| Failure::Broken(format!("GET /routes: {e}")))?;
        if !res.status().is_success() {
            return Err(Failure::Broken(format!(
                "GET /routes: status {}",
                res.status()
            )));
        }
        let body = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
            .await
            .map_err(|_| Failure::Broken("GET /routes body timed out".into()))?
            .map_err(|e| Failure::Broken(format!("GET /routes body: {e}")))?
            .to_bytes();
        let snap: Snapshot = serde_json::from_slice(&body)
            .map_err(|e| Failure::Broken(format!("GET /routes: bad JSON: {e}")))?;
        copy.replace(snap.revision, snap.apps);
        // Counted once the table is in place (see the etcd link).
        copy.status.syncs.fetch_add(1, Ordering::Release);
        connected(copy, GAUGE);
        self.synced = true;
        Ok(())
    }

    pub(super) async fn watch(&mut self, copy: &mut RouteCopy) -> Result<(), Failure> {
        let since = copy.revision.unwrap_or(0);
        let hb = self.heartbeat.as_millis();
        let req = self.request(&format!("/routes/watch?since={since}&heartbeat_ms={hb}"))?;
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| Failure::Broken("watch request timed out".into()))?
            .map_err(|e| Failure::Broken(format!("watch: {e}")))?;
        if !res.status().is_success() {
            return Err(Failure::Broken(format!("watch: status {}", res.status())));
        }
        connected(copy, GAUGE);
        let mut body = res.into_body();
        let mut buf = BytesMut::new();
        let silence = self.heartbeat * 3;
        loop {
            let frame = match tokio::time::timeout(silence, body.frame()).await {
                Err(_) => return Err(Failure::Broken("watch: no heartbeat".into())),
                Ok(None) => return Err(Failure::Broken("watch stream ended".into())),
                Ok(Some(Err(e))) => return Err(Failure::Broken(format!("watch: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(pos + 1);
                match decide(copy.revision, &line[..pos]) {
                    Step::Idle => {}
                    Step::Resync(why) => return Err(Failure::Resync(why)),
                    Step::Apply { revision, updates } => copy.apply(revision, updates),
                }
            }
            if buf.len() > 64 << 20 {
                buf.advance(buf.len());
                return Err(Failure::Broken("watch: event too large".into()));
            }
        }
    }
}
