//! `switchyard serve --procfile PATH --app NAME`: the first run's shortcut.
//! The Procfile is read at start (a bad one stops the server with the
//! line at fault); once the API listens, the app is created if it does not
//! exist and given the Procfile with the file's directory as the dynos'
//! working directory, through the API itself, as `curl` would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A parsed Procfile and where its dynos run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procfile {
    /// Process type → command.
    pub processes: BTreeMap<String, String>,
    /// The Procfile's directory, absolute.
    pub dir: PathBuf,
}

/// Parses a Procfile: `type: command` per line; blank lines and `#`
/// comments are skipped. The error names the line.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((kind, command)) = line.split_once(':') else {
            return Err(format!("line {}: expected `type: command`", n + 1));
        };
        let (kind, command) = (kind.trim(), command.trim());
        let valid = !kind.is_empty()
            && kind.len() <= 30
            && kind.as_bytes()[0].is_ascii_lowercase()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!("line {}: {kind:?} is not a process type", n + 1));
        }
        if command.is_empty() {
            return Err(format!("line {}: {kind} has no command", n + 1));
        }
        if out.insert(kind.to_string(), command.to_string()).is_some() {
            return Err(format!("line {}: {kind} is listed twice", n + 1));
        }
    }
    if out.is_empty() {
        return Err("no process types".into());
    }
    Ok(out)
}

/// Reads and parses the Procfile at `path`.
pub fn read(path: &Path) -> anyhow::Result<Procfile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (--procfile)", path.display()))?;
    let processes = parse(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a Procfile (--procfile): {e}", path.display()))?;
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .with_context(|| format!("{} has no directory", path.display()))?;
    Ok(Procfile { processes, dir })
}

/// Creates `app` if needed and gives it `procfile`, through the API at `api`.
pub async fn deploy(
    api: SocketAddr,
    key: &str,
    app: &str,
    procfile: &Procfile,
) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |method: &str, path: String, body: serde_json::Value| {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{api}{path}"))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())));
        let client = client.clone();
        async move {
            let res = client.request(req?).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }
    };
    let (status, body) = call("GET", format!("/apps/{app}"), serde_json::Value::Null).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        let (status, body) =
            call("POST", "/apps".into(), serde_json::json!({ "name": app })).await?;
        anyhow::ensure!(
            status.is_success(),
            "cannot create app {app}: {status} {body}"
        );
        tracing::info!(app, "created the app for --procfile");
    } else {
        anyhow::ensure!(
            status.is_success(),
            "cannot read app {app}: {status} {body}"
        );
    }
    let (status, body) = call(
        "PUT",
        format!("/apps/{app}/procfile"),
        serde_json::json!({ "processes": procfile.processes, "dir": procfile.dir.display().to_string() }),
    )
    .await?;
    anyhow::ensure!(
        status.is_success(),
        "cannot set the Procfile of {app}: {status} {body}"
    );
    tracing::info!(app, dir = %procfile.dir.display(), "Procfile deployed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_procfile_is_type_colon_command_per_line() {
        let p = parse("# demo\nweb: python3 -m http.server $PORT\n\nworker:  bin/work --x=1\n")
            .expect("parses");
        assert_eq!(p["web"], "python3 -m http.server $PORT");
        assert_eq!(p["worker"], "bin/work --x=1");
        for (bad, says) in [
            ("web python3", "line 1"),
            ("Web: x", "not a process type"),
            ("web:", "no command"),
            ("web: a\nweb: b", "listed twice"),
            ("# nothing", "no process types"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
