//! A raw HTTP/1.1 client, logplex-1 bodies, and util-linux `logger`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 exchange: returns status, headers (lower-cased) and body
/// (de-chunked) once the server closes or the body is complete.
pub async fn http_request(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut data = Vec::new();
    s.read_to_end(&mut data).await.unwrap();
    parse_response(&data)
}

pub fn parse_response(data: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = data[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..nl]).unwrap().trim(), 16).unwrap();
        if size == 0 || data.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[(nl + 2 + size + 2).min(data.len())..];
    }
    out
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A `POST /logs` request.
pub fn post_logs(token: Option<&str>, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    use base64::Engine as _;
    let mut req = format!(
        "POST /logs HTTP/1.1\r\nHost: logplex\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("token:{t}"));
        req.push_str(&format!("Authorization: Basic {creds}\r\n"));
    }
    let mut has_ct = false;
    for (k, v) in extra {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_ct {
        req.push_str("Content-Type: application/logplex-1\r\n");
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Octet-counts each message.
pub fn frames(msgs: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    out
}

/// Runs util-linux `logger` with `args`, feeding `lines` on stdin.
pub async fn logger(args: &[&str], lines: &[&str]) {
    use std::process::Stdio;
    let mut child = tokio::process::Command::new("/usr/bin/logger")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("util-linux logger at /usr/bin/logger");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "logger failed: {status}");
}
