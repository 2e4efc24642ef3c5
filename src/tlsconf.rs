//! The HTTPS listener's default certificate: `--tls-cert` / `--tls-key`
//! when given, else a self-signed certificate for `localhost` and
//! `*.<base-domain>` generated once and kept in the data directory.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the generated default certificate lives.
fn generated(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("default.crt"), dir.join("default.key"))
}

/// Loads (or generates and keeps) the default certificate; returns PEMs.
pub fn default_cert(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    base_domain: &str,
) -> anyhow::Result<(String, String)> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = std::fs::read_to_string(cert)
                .with_context(|| format!("cannot read {} (--tls-cert)", cert.display()))?;
            let key_pem = std::fs::read_to_string(key)
                .with_context(|| format!("cannot read {} (--tls-key)", key.display()))?;
            router::tls::certified_key(&chain, &key_pem).with_context(|| {
                "the default certificate and key (--tls-cert, --tls-key) are not usable"
            })?;
            Ok((chain, key_pem))
        }
        (None, None) => {
            let (cert_path, key_path) = generated(data_dir);
            if let (Ok(chain), Ok(key_pem)) = (
                std::fs::read_to_string(&cert_path),
                std::fs::read_to_string(&key_path),
            ) {
                if router::tls::certified_key(&chain, &key_pem).is_ok() {
                    return Ok((chain, key_pem));
                }
            }
            let names = vec!["localhost".to_string(), format!("*.{base_domain}")];
            let (chain, key_pem) = router::tls::self_signed(&names)
                .context("cannot generate a default certificate")?;
            let dir = cert_path.parent().unwrap_or(data_dir);
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::write(&cert_path, &chain)
                .with_context(|| format!("cannot write {}", cert_path.display()))?;
            write_private(&key_path, &key_pem)?;
            tracing::info!(cert = %cert_path.display(), "generated a self-signed default certificate");
            Ok((chain, key_pem))
        }
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
