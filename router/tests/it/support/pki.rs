//! A test CA and certificates made with rcgen, and TLS clients that trust it.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use router::{CertSpec, MinTls, TlsSettings};

/// A CA that signs leaf certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Ca {
    /// A fresh CA.
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard Test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A leaf for `names` (first name is the CN): (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// An SNI certificate spec for `names`.
    pub fn spec(&self, id: &str, names: &[&str]) -> CertSpec {
        let (chain_pem, key_pem) = self.leaf(names);
        CertSpec {
            id: id.to_string(),
            domains: Vec::new(),
            chain_pem,
            key_pem,
        }
    }

    /// Listener settings whose default certificate is for `default.invalid`.
    pub fn settings(&self, min: MinTls) -> TlsSettings {
        let (default_chain_pem, default_key_pem) = self.leaf(&["default.invalid"]);
        TlsSettings {
            default_chain_pem,
            default_key_pem,
            min_version: min,
        }
    }

    /// A rustls client trusting this CA, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("add root");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
