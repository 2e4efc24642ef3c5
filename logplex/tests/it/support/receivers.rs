//! Drain receivers: syslog (plain or TLS), a stalled one, and HTTPS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};

use super::Cert;

/// Splits octet-counted frames strictly (independently of the crate).
pub fn octet_frames(mut data: &[u8]) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(sp) = data.iter().position(|b| *b == b' ') {
        let Ok(len) = std::str::from_utf8(&data[..sp])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            panic!(
                "not octet-counted: {:?}",
                String::from_utf8_lossy(&data[..data.len().min(80)])
            );
        };
        if data.len() < sp + 1 + len {
            break;
        }
        out.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
        used += sp + 1 + len;
        data = &data[sp + 1 + len..];
    }
    (out, used)
}

/// A syslog receiver: every frame of every connection, in arrival order.
#[derive(Clone)]
pub struct SyslogReceiver {
    pub addr: SocketAddr,
    pub frames: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<Mutex<usize>>,
}

impl SyslogReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, None)
    }

    pub async fn start_tls(cert: &Cert) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(cert.server_config())),
        )
    }

    pub fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let r = SyslogReceiver {
            addr: listener.local_addr().unwrap(),
            frames: Arc::default(),
            connections: Arc::default(),
        };
        let rc = r.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *rc.connections.lock().unwrap() += 1;
                let frames = rc.frames.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                read_frames(s, frames).await;
                            }
                        }
                        None => read_frames(stream, frames).await,
                    }
                });
            }
        });
        r
    }

    pub fn frames(&self) -> Vec<String> {
        self.frames.lock().unwrap().clone()
    }

    /// How many frames arrived (without copying them).
    pub fn count(&self) -> usize {
        self.frames.lock().unwrap().len()
    }
}

async fn read_frames<S: AsyncRead + Unpin>(mut s: S, frames: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let (got, used) = octet_frames(&buf);
        buf.drain(..used);
        frames.lock().unwrap().extend(got);
    }
}

/// A TCP listener that accepts connections and never reads them.
/// Its receive buffer is small, so a sender's writes block after a few MB.
pub async fn stalled_receiver() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    (addr, held)
}

/// One request an HTTPS receiver saw.
#[derive(Debug, Clone)]
pub struct Captured {
    pub head: http::request::Parts,
    pub body: Bytes,
}

/// An HTTPS (or HTTP) server recording requests; answers with the statuses
/// in `script` first, then 200.
#[derive(Clone)]
pub struct HttpsReceiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Captured>>>,
    script: Arc<Mutex<std::collections::VecDeque<u16>>>,
}

impl HttpsReceiver {
    pub async fn start(cert: Option<&Cert>, script: &[u16]) -> Self {
        use http_body_util::BodyExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = HttpsReceiver {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let acceptor = cert.map(|c| tokio_rustls::TlsAcceptor::from(c.server_config()));
        let rc = r.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let rc = rc.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let rc = rc.clone();
                            async move {
                                let (head, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                rc.requests.lock().unwrap().push(Captured { head, body });
                                let status = rc.script.lock().unwrap().pop_front().unwrap_or(200);
                                let mut resp =
                                    http::Response::new(http_body_util::Full::new(Bytes::new()));
                                *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(stream).await {
                                let _ = builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        r
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }
}
