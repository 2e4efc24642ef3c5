//! TLS termination: certificates chosen by SNI from the route-table
//! snapshot, a default certificate for unknown or absent names, TLS 1.2+
//! only, ALPN `h2` and `http/1.1`.
//!
//! Certificates are parsed once, when a table is built, into rustls
//! `CertifiedKey`s (each a [`ServedKey`]); the resolver does one atomic load
//! of the current table and one of the certificate's key per handshake, so
//! swapping a certificate is a table publication, swapping its OCSP staple
//! ([`crate::ocsp`]) replaces the key alone, and neither takes a lock.
//!
//! Log fields on HTTPS requests: `protocol=https`, `tls_version=tls1.2` or
//! `tls_version=tls1.3`, and `http_version=http2` when the client speaks
//! HTTP/2 (absent for HTTP/1.x).

use std::future::Future;
use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpListener;

use crate::ocsp::ServedKey;
use crate::server::{serve_with, ConnInfo, Router};
use crate::table::{Map, Routes};

/// A certificate the control plane publishes (Heroku's SNI endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Stable id of the endpoint.
    pub id: String,
    /// Names served with it; empty means the certificate's own DNS names.
    pub domains: Vec<String>,
    /// PEM chain, leaf first.
    pub chain_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

/// Why a certificate or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    /// No certificate in the PEM.
    #[error("no certificate found in PEM")]
    NoCertificate,
    /// No private key in the PEM.
    #[error("no private key found in PEM")]
    NoKey,
    /// PEM, DER or key parsing failed.
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
    /// The key does not belong to the certificate.
    #[error("private key does not match the certificate")]
    KeyMismatch,
}

/// What users see about a certificate (`heroku certs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (subject alternative names, else the common name).
    pub names: Vec<String>,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// Issuer equals subject.
    pub self_signed: bool,
}

/// Parses a PEM chain (leaf first).
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(pem.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(chain)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut BufReader::new(pem.as_bytes()))
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .ok_or(TlsError::NoKey)
}

/// Builds a signing key pair from PEM, checking that the key matches.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain = parse_chain(chain_pem)?;
    let key = parse_key(key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
        // Key types rustls cannot compare are accepted as they are.
        Err(_) => Ok(ck),
    }
}

/// Reads names, subject, issuer and validity from the leaf certificate.
pub fn cert_info(chain_pem: &str) -> Result<CertInfo, TlsError> {
    let chain = parse_chain(chain_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(common_name.iter().map(|c| c.to_ascii_lowercase()));
    }
    Ok(CertInfo {
        names,
        common_name,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        self_signed: cert.subject() == cert.issuer(),
    })
}

/// A self-signed certificate and key (PEM) for `names`: the default
/// certificate when none is configured.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// Certificates by server name, inside a route-table snapshot. Persistent
/// maps, like the table's own indexes: a change re-parses and re-indexes
/// only the certificates it names.
///
/// When several certificates cover one name, the one with the greatest id
/// serves it, whatever order they were published in.
#[derive(Debug, Default, Clone)]
pub struct Certs {
    /// Certificate id → its key and the names it covers.
    by_id: Map<CertEntry>,
    /// Exact server name → the certificates covering it.
    exact: Map<Claims>,
    /// Parent of a `*.` name → the certificates covering it.
    wildcard: Map<Claims>,
}

/// The index keys one certificate claims (its key is in the claims).
#[derive(Debug, Clone)]
struct CertEntry {
    key: Arc<ServedKey>,
    /// What `key` was parsed from, to keep it (and its OCSP staple) when
    /// the same certificate is published again.
    pem: Arc<(String, String)>,
    exact: Arc<[Arc<str>]>,
    wildcard: Arc<[Arc<str>]>,
}

/// The certificates covering one name, by ascending id; the last serves.
type Claims = Arc<[(Arc<str>, Arc<ServedKey>)]>;

impl Certs {
    /// Parses `specs`; a certificate that fails to parse is skipped with a
    /// warning (the control plane validates before publishing).
    pub fn build(specs: &[CertSpec]) -> Certs {
        Certs::default().apply(&[], specs, None)
    }

    /// [`Certs::build`], keeping the served keys (and so the OCSP staples)
    /// of the certificates `previous` has with the same id, chain and key.
    pub fn rebuilt(previous: &Certs, specs: &[CertSpec]) -> Certs {
        Certs::default().apply(&[], specs, Some(previous))
    }

    /// These certificates without those whose ids are in `removed`, and
    /// with `upserts` added or replacing the ones with the same ids (an
    /// unchanged certificate keeps its served key).
    pub fn updated(&self, removed: &[String], upserts: &[CertSpec]) -> Certs {
        self.clone().apply(removed, upserts, Some(self))
    }

    fn apply(self, removed: &[String], upserts: &[CertSpec], previous: Option<&Certs>) -> Certs {
        let mut certs = self;
        for id in removed {
            certs.remove(id);
        }
        for spec in upserts {
            certs.remove(&spec.id);
            let pem = (spec.chain_pem.clone(), spec.key_pem.clone());
            let kept = previous
                .and_then(|p| p.by_id.get(spec.id.as_str()))
                .filter(|e| *e.pem == pem)
                .map(|e| e.key.clone());
            let key = match kept {
                Some(key) => key,
                None => match certified_key(&spec.chain_pem, &spec.key_pem) {
                    Ok(k) => Arc::new(ServedKey::new(k)),
                    Err(e) => {
                        tracing::warn!(id = %spec.id, error = %e, "skipping unusable certificate");
                        continue;
                    }
                },
            };
            let names = if spec.domains.is_empty() {
                cert_info(&spec.chain_pem)
                    .map(|i| i.names)
                    .unwrap_or_default()
            } else {
                spec.domains.clone()
            };
            let id: Arc<str> = spec.id.as_str().into();
            let (mut exact, mut wildcard): (Vec<Arc<str>>, Vec<Arc<str>>) = (vec![], vec![]);
            for name in names {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let (map, keys, name) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut certs.wildcard, &mut wildcard, parent),
                    None => (&mut certs.exact, &mut exact, name.as_str()),
                };
                if keys.iter().any(|k| **k == *name) {
                    continue;
                }
                let name: Arc<str> = name.into();
                claim(map, &name, &id, Some(&key));
                keys.push(name);
            }
            let entry = CertEntry {
                key,
                pem: Arc::new(pem),
                exact: exact.into(),
                wildcard: wildcard.into(),
            };
            certs.by_id.insert_mut(id, entry);
        }
        certs
    }

    /// Takes certificate `id` and its names out.
    fn remove(&mut self, id: &str) {
        let Some(entry) = self.by_id.get(id).cloned() else {
            return;
        };
        self.by_id.remove_mut(id);
        for name in entry.exact.iter() {
            claim(&mut self.exact, name, id, None);
        }
        for name in entry.wildcard.iter() {
            claim(&mut self.wildcard, name, id, None);
        }
    }

    /// The certificate for `sni`: exact name, then wildcard.
    pub fn lookup(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.trim_end_matches('.');
        let mut buf = [0u8; 255];
        if sni.len() > buf.len() || !sni.is_ascii() {
            return None;
        }
        let out = &mut buf[..sni.len()];
        for (o, b) in out.iter_mut().zip(sni.bytes()) {
            *o = b.to_ascii_lowercase();
        }
        let name = std::str::from_utf8(out).ok()?;
        self.exact
            .get(name)
            .or_else(|| {
                name.split_once('.')
                    .and_then(|(_, parent)| self.wildcard.get(parent))
            })
            .and_then(|claims| claims.last())
            .map(|(_, key)| key.current())
    }

    /// Every certificate, once each.
    pub fn served(&self) -> impl Iterator<Item = &Arc<ServedKey>> {
        self.by_id.values().map(|e| &e.key)
    }

    /// Number of names with a certificate.
    pub fn len(&self) -> usize {
        self.exact.size() + self.wildcard.size()
    }

    /// True when no certificate is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sets (`Some`) or withdraws (`None`) certificate `id`'s claim on `name`.
fn claim(map: &mut Map<Claims>, name: &Arc<str>, id: &str, key: Option<&Arc<ServedKey>>) {
    let mut claims: Vec<(Arc<str>, Arc<ServedKey>)> = map
        .get(&**name)
        .map(|c| c.iter().filter(|(i, _)| **i != *id).cloned().collect())
        .unwrap_or_default();
    if let Some(key) = key {
        let at = claims.partition_point(|(i, _)| **i < *id);
        claims.insert(at, (id.into(), key.clone()));
    }
    if claims.is_empty() {
        map.remove_mut(&**name);
    } else {
        map.insert_mut(name.clone(), claims.into());
    }
}

/// Picks a certificate per handshake from the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    routes: Arc<Routes>,
    default: Arc<ServedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello
            .server_name()
            .and_then(|name| self.routes.load().certs().lookup(name));
        Some(found.unwrap_or_else(|| self.default.current()))
    }
}

/// Lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinTls {
    /// TLS 1.2 and 1.3 (default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinTls {
    /// Parses `1.2` / `1.3`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1.2" | "tls1.2" => Some(MinTls::Tls12),
            "1.3" | "tls1.3" => Some(MinTls::Tls13),
            _ => None,
        }
    }
}

/// How HTTPS listeners terminate TLS.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Default certificate chain (PEM) for unknown or absent SNI.
    pub default_chain_pem: String,
    /// Its key (PEM).
    pub default_key_pem: String,
    /// Minimum protocol version.
    pub min_version: MinTls,
}

/// Builds the rustls server configuration: SNI from `routes`, the default
/// certificate, TLS 1.2+ (or 1.3 only), ALPN `h2` then `http/1.1`.
pub fn server_config(
    routes: Arc<Routes>,
    settings: &TlsSettings,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(routes, default_key(settings)?, settings)
}

/// The default certificate of `settings`, to share between
/// [`server_config_with`] and the OCSP refresher ([`crate::ocsp::run`]).
pub fn default_key(settings: &TlsSettings) -> Result<Arc<ServedKey>, TlsError> {
    let key = certified_key(&settings.default_chain_pem, &settings.default_key_pem)?;
    Ok(Arc::new(ServedKey::new(key)))
}

/// [`server_config`] serving `default` for unknown or absent names.
pub fn server_config_with(
    routes: Arc<Routes>,
    default: Arc<ServedKey>,
    settings: &TlsSettings,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        MinTls::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { routes, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on `listener` until
/// `shutdown` resolves. Handshakes must finish within the router's head
/// timeout.
pub async fn serve_tls(
    listener: TcpListener,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake_timeout = router.config.head_timeout;
    serve_with(listener, router, shutdown, move |stream, peer| {
        let acceptor = acceptor.clone();
        async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    crate::metrics::tls_handshake(None);
                    return None;
                }
                Err(_) => {
                    crate::metrics::tls_handshake(None);
                    return None;
                }
            };

            let tls_version = match tls.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "tls1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "tls1.2",
                _ => "unknown",
            };
            crate::metrics::tls_handshake(Some(tls_version));
            let info = ConnInfo::new(peer, "https", port, Some(tls_version));
            Some((tls, info))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_round_trips_into_certs() {
        let (chain, key) =
            self_signed(&["a.example.com".into(), "*.b.example.com".into()]).expect("cert");
        let info = cert_info(&chain).expect("info");
        assert_eq!(info.names, ["a.example.com", "*.b.example.com"]);
        assert!(info.self_signed);
        certified_key(&chain, &key).expect("key matches");
        let certs = Certs::build(&[CertSpec {
            id: "x".into(),
            domains: vec![],
            chain_pem: chain,
            key_pem: key,
        }]);
        assert!(certs.lookup("A.example.com").is_some());
        assert!(certs.lookup("x.b.example.com").is_some());
        assert!(certs.lookup("x.y.b.example.com").is_none());
        assert!(certs.lookup("b.example.com").is_none());
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (chain, _) = self_signed(&["a.example.com".into()]).expect("cert");
        let (_, other_key) = self_signed(&["a.example.com".into()]).expect("cert");
        assert_eq!(
            certified_key(&chain, &other_key).err(),
            Some(TlsError::KeyMismatch)
        );
        assert_eq!(
            certified_key("nope", &other_key).err(),
            Some(TlsError::NoCertificate)
        );
        assert_eq!(parse_key("nope").err(), Some(TlsError::NoKey));
    }

    fn cert(id: &str, names: &[&str]) -> CertSpec {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (chain_pem, key_pem) = self_signed(&names).expect("cert");
        CertSpec {
            id: id.into(),
            domains: vec![],
            chain_pem,
            key_pem,
        }
    }

    fn served_by(certs: &Certs, sni: &str, specs: &[&CertSpec]) -> Option<String> {
        let key = certs.lookup(sni)?;
        let leaf = &key.cert[0];
        specs
            .iter()
            .find(|s| parse_chain(&s.chain_pem).expect("chain")[0] == *leaf)
            .map(|s| s.id.clone())
    }

    #[test]
    fn an_update_replaces_and_removes_certificates_by_id_as_a_rebuild_would() {
        let a = cert("a", &["a.example.com", "*.shared.example.com"]);
        let b = cert("b", &["b.example.com", "*.shared.example.com"]);
        let a2 = cert("a", &["a2.example.com"]);
        let c = cert("c", &["c.example.com"]);
        let all = [&a, &b, &a2, &c];
        let certs = Certs::build(&[a.clone(), b.clone()]);
        // The greatest id serves a name both cover, in either order.
        let reversed = Certs::build(&[b.clone(), a.clone()]);
        for t in [&certs, &reversed] {
            assert_eq!(
                served_by(t, "x.shared.example.com", &all).as_deref(),
                Some("b")
            );
            assert_eq!(served_by(t, "A.example.com.", &all).as_deref(), Some("a"));
        }
        // `a` changes names, `b` goes, `c` arrives.
        let next = certs.updated(&["b".into()], &[a2.clone(), c.clone()]);
        let rebuilt = Certs::build(&[a2.clone(), c.clone()]);
        for t in [&next, &rebuilt] {
            assert_eq!(served_by(t, "a.example.com", &all), None);
            assert_eq!(served_by(t, "a2.example.com", &all).as_deref(), Some("a"));
            assert_eq!(served_by(t, "b.example.com", &all), None);
            assert_eq!(served_by(t, "x.shared.example.com", &all), None);
            assert_eq!(served_by(t, "c.example.com", &all).as_deref(), Some("c"));
            assert_eq!(t.len(), 2);
        }
        // The table it was made from is untouched.
        assert_eq!(
            served_by(&certs, "b.example.com", &all).as_deref(),
            Some("b")
        );
        assert_eq!(certs.len(), 3);
        // Withdrawing the winner of a shared name hands it to the other.
        let without_b = certs.updated(&["b".into()], &[]);
        assert_eq!(
            served_by(&without_b, "x.shared.example.com", &all).as_deref(),
            Some("a")
        );
    }
}
