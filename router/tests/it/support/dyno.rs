//! Fake dynos: real HTTP/1.1 servers on 127.0.0.1:0 that misbehave on purpose.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a fake dyno does with each request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// `200 OK` with this body (and `X-Dyno: <name>`).
    Respond(&'static str),
    /// Read the request, wait, then respond.
    Delay(Duration, &'static str),
    /// Read the request and never answer.
    Hang,
    /// Hang on paths starting with this prefix, answer `ok` otherwise.
    HangOn(&'static str),
    /// Read the request and close without a byte.
    CloseWithoutResponse,
    /// Send a head announcing 100 bytes, send 10, close.
    CloseMidBody,
    /// Send a head announcing 100 bytes, send 10, then go silent.
    StallAfterFirstByte,
    /// Send bytes that are not HTTP.
    Garbage,
    /// Respond with conflicting Content-Length headers.
    ConflictingLength,
    /// Echo the request head (as received) in the body.
    EchoHead,
    /// Stream `n` chunks of `size` bytes, `gap` apart.
    Stream {
        chunks: usize,
        size: usize,
        gap: Duration,
    },
}

/// A request as the dyno received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The head, verbatim.
    pub head: String,
    /// The body, verbatim (by Content-Length or de-chunked).
    pub body: Vec<u8>,
    /// When the head arrived.
    pub at: std::time::Instant,
}

impl Received {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The request line.
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

/// A running fake dyno.
#[derive(Clone)]
pub struct Dyno {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Requests being handled right now.
    pub active: Arc<AtomicUsize>,
    /// Most requests ever handled at once.
    pub peak: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
}

impl Dyno {
    /// Starts a dyno with `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Dyno {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind dyno");
        let dyno = Dyno {
            addr: listener.local_addr().expect("addr"),
            received: Arc::default(),
            active: Arc::default(),
            peak: Arc::default(),
            connections: Arc::default(),
        };
        let d = dyno.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                d.connections.fetch_add(1, Ordering::SeqCst);
                let d = d.clone();
                let b = behaviour.clone();
                tokio::spawn(async move {
                    let _ = d.serve(stream, b).await;
                });
            }
        });
        dyno
    }

    /// A port that refuses connections, reserved for as long as the
    /// returned value lives (so no other test can start listening on it).
    pub fn refusing() -> Refusing {
        Refusing::new()
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    async fn serve(&self, mut s: TcpStream, behaviour: Behaviour) -> std::io::Result<()> {
        let mut buf = Vec::new();
        loop {
            let Some(req) = read_request(&mut s, &mut buf).await? else {
                return Ok(());
            };
            let n = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            self.received.lock().expect("lock").push(req.clone());
            let keep = self.respond(&mut s, &behaviour, &req).await;
            self.active.fetch_sub(1, Ordering::SeqCst);
            if !keep? {
                return Ok(());
            }
        }
    }

    /// Writes the response; `Ok(true)` to keep the connection.
    async fn respond(
        &self,
        s: &mut TcpStream,
        behaviour: &Behaviour,
        req: &Received,
    ) -> std::io::Result<bool> {
        let port = self.addr.port();
        match behaviour {
            Behaviour::Respond(body) => {
                ok(s, port, body.as_bytes()).await?;
                Ok(true)
            }
            Behaviour::Delay(d, body) => {
                tokio::time::sleep(*d).await;
                ok(s, port, body.as_bytes()).await?;
                Ok(true)
            }
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(false)
            }
            Behaviour::HangOn(prefix) => {
                let path = req.request_line().split_whitespace().nth(1).unwrap_or("");
                if path.starts_with(prefix) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return Ok(false);
                }
                ok(s, port, b"ok").await?;
                Ok(true)
            }
            Behaviour::CloseWithoutResponse => Ok(false),
            Behaviour::CloseMidBody => {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await?;
                s.flush().await?;
                Ok(false)
            }
            Behaviour::StallAfterFirstByte => {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await?;
                s.flush().await?;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(false)
            }
            Behaviour::Garbage => {
                s.write_all(b"this is not http\r\n\r\n").await?;
                Ok(false)
            }
            Behaviour::ConflictingLength => {
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                )
                .await?;
                Ok(false)
            }
            Behaviour::EchoHead => {
                let mut body = req.head.clone().into_bytes();
                body.extend_from_slice(b"\r\n--body--\r\n");
                body.extend_from_slice(&req.body);
                ok(s, port, &body).await?;
                Ok(true)
            }
            Behaviour::Stream { chunks, size, gap } => {
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await?;
                for _ in 0..*chunks {
                    tokio::time::sleep(*gap).await;
                    s.write_all(format!("{size:x}\r\n").as_bytes()).await?;
                    s.write_all(&vec![b'x'; *size]).await?;
                    s.write_all(b"\r\n").await?;
                }
                s.write_all(b"0\r\n\r\n").await?;
                Ok(true)
            }
        }
    }
}

async fn ok(s: &mut TcpStream, port: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Dyno-Port: {port}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=120\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await
}

/// Reads one request (head, then a Content-Length or chunked body).
pub async fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Received>> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    buf.drain(..head_end);
    let req = Received {
        head,
        body: Vec::new(),
        at: std::time::Instant::now(),
    };
    let mut body = Vec::new();
    if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body.extend(buf.drain(..len));
    } else if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16)
                .unwrap_or(0);
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    Ok(Some(Received { body, ..req }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A socket bound to a port but never listening: Linux answers a connect
/// to it with a reset (connection refused), and the port stays taken.
pub struct Refusing {
    /// Its address.
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

impl Refusing {
    fn new() -> Refusing {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        Refusing {
            addr,
            _socket: socket,
        }
    }
}

/// A listener whose accept queue is full, so further connects hang (for H19).
pub struct Blackhole {
    /// Its address.
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

/// Makes a [`Blackhole`]: backlog 0, never accepts, queue filled up front.
pub async fn blackhole() -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    // Fill the accept queue; once full, the kernel drops new SYNs.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    Blackhole {
        addr,
        _listener: socket,
        _fillers: fillers,
    }
}
