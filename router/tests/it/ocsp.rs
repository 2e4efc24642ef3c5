//! OCSP stapling: a CA whose leaf names a real HTTP OCSP responder (a small
//! server here that answers as told, signing with the CA key), the router
//! fetching and stapling in the background, and a TLS client reading the
//! staple from the handshake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use router::ocsp::{self, OcspError, OcspSettings, ServedKey, Validity};
use router::{AppSpec, CertSpec, MinTls, TlsSettings};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_cert::der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier};
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, ResponderId,
    ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::support::Switchyard;

/// What the responder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Good,
    Revoked,
    /// `good`, signed by a key that is not the issuer's.
    ForeignSigner,
    /// `good`, signed by a responder certificate the CA issued for OCSP
    /// signing, included in the response.
    Delegated,
    /// `good`, signed by a certificate the CA issued, but not for OCSP
    /// signing.
    Undelegated,
    /// Not DER at all.
    Garbage,
    /// HTTP 500.
    Error,
    /// Reads the request and never answers.
    Stall,
}

/// DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// Authority Information Access naming `url` as OCSP responder.
fn aia_ocsp(url: &str) -> CustomExtension {
    // id-ad-ocsp 1.3.6.1.5.5.7.48.1
    let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]);
    let location = tlv(0x86, url.as_bytes());
    let description = tlv(0x30, &[oid, location].concat());
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], tlv(0x30, &description))
}

struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    ca_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard OCSP Test CA");
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = params.self_signed(&ca_key).expect("ca");
        let ca_der = ca_cert.der().to_vec();
        Pki {
            ca_cert,
            ca_key,
            ca_der,
        }
    }

    /// A certificate (DER) and its key (PKCS#8) for a responder, issued by
    /// the CA for OCSP signing or not.
    fn responder(&self, ocsp_signing: bool) -> (Vec<u8>, Vec<u8>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard OCSP Responder");
        if ocsp_signing {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        }
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        (cert.der().to_vec(), key.serialize_der())
    }

    /// Chain (leaf, CA) and key PEM for `name`, naming `ocsp_url`.
    fn leaf(&self, name: &str, ocsp_url: Option<&str>) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(url) = ocsp_url {
            params.custom_extensions.push(aia_ocsp(url));
        }
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        (
            format!("{}{}", cert.pem(), self.ca_cert.pem()),
            key.serialize_pem(),
        )
    }

    fn spec(&self, id: &str, name: &str, ocsp_url: Option<&str>) -> CertSpec {
        let (chain_pem, key_pem) = self.leaf(name, ocsp_url);
        CertSpec {
            id: id.into(),
            domains: vec![],
            chain_pem,
            key_pem,
        }
    }
}

fn ecdsa_signer(pkcs8: &[u8]) -> ring::signature::EcdsaKeyPair {
    ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .expect("P-256 key")
}

fn time(t: SystemTime) -> OcspGeneralizedTime {
    let since = t.duration_since(UNIX_EPOCH).expect("after 1970");
    OcspGeneralizedTime(
        GeneralizedTime::from_unix_duration(Duration::from_secs(since.as_secs())).expect("time"),
    )
}

/// A real HTTP OCSP responder for `pki`'s CA, answering as `answer` says.
struct Responder {
    url: String,
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicUsize>,
}

impl Responder {
    async fn start(pki: &Pki, lifetime: Duration) -> Responder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/ocsp", listener.local_addr().expect("addr"));
        let answer = Arc::new(Mutex::new(Answer::Good));
        let hits = Arc::new(AtomicUsize::new(0));
        let ca = Arc::new(Signers {
            ca: Certificate::from_der(&pki.ca_der).expect("ca"),
            ca_key: pki.ca_key.serialize_der(),
            delegated: pki.responder(true),
            undelegated: pki.responder(false),
        });
        let (a, h) = (answer.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (a, h, ca) = (a.clone(), h.clone(), ca.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (a, h, ca) = (a.clone(), h.clone(), ca.clone());
                            async move {
                                h.fetch_add(1, Ordering::SeqCst);
                                let ok = req.method() == http::Method::POST
                                    && req.headers().get(http::header::CONTENT_TYPE)
                                        == Some(&http::HeaderValue::from_static(
                                            "application/ocsp-request",
                                        ));
                                let body = req.into_body().collect().await?.to_bytes();
                                let answer = *a.lock().expect("answer");
                                if answer == Answer::Stall {
                                    std::future::pending::<()>().await;
                                }
                                let reply = match OcspRequest::from_der(&body) {
                                    Ok(request) if ok => respond(answer, &request, &ca, lifetime),
                                    _ => None,
                                };
                                let resp = match reply {
                                    Some(der) => http::Response::builder()
                                        .header(
                                            http::header::CONTENT_TYPE,
                                            "application/ocsp-response",
                                        )
                                        .body(Full::new(Bytes::from(der))),
                                    None => http::Response::builder()
                                        .status(500)
                                        .body(Full::new(Bytes::new())),
                                };
                                Ok::<_, hyper::Error>(resp.expect("response"))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Responder { url, answer, hits }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().expect("answer") = answer;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The keys a responder may sign with.
struct Signers {
    ca: Certificate,
    /// PKCS#8.
    ca_key: Vec<u8>,
    /// Certificate DER and PKCS#8 key, issued by the CA for OCSP signing.
    delegated: (Vec<u8>, Vec<u8>),
    /// The same, not for OCSP signing.
    undelegated: (Vec<u8>, Vec<u8>),
}

/// The DER response to `request`, or `None` for an HTTP error.
fn respond(
    answer: Answer,
    request: &OcspRequest,
    signers: &Signers,
    lifetime: Duration,
) -> Option<Vec<u8>> {
    let cert_id = request.tbs_request.request_list.first()?.req_cert.clone();
    let now = SystemTime::now();
    let cert_status = match answer {
        Answer::Good | Answer::ForeignSigner | Answer::Delegated | Answer::Undelegated => {
            CertStatus::Good(Null)
        }
        Answer::Revoked => CertStatus::Revoked(RevokedInfo {
            revocation_time: time(now - Duration::from_secs(60)),
            revocation_reason: None,
        }),
        Answer::Garbage => return Some(b"this is not an OCSP response".to_vec()),
        Answer::Error | Answer::Stall => return None,
    };
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByName(signers.ca.tbs_certificate.subject.clone()),
        produced_at: time(now),
        responses: vec![SingleResponse {
            cert_id,
            cert_status,
            this_update: time(now),
            next_update: Some(time(now + lifetime)),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    let tbs_der = tbs.to_der().ok()?;
    let responder = |(cert, key): &(Vec<u8>, Vec<u8>)| {
        let cert = Certificate::from_der(cert).expect("responder certificate");
        (key.clone(), Some(vec![cert]))
    };
    let (key, certs) = match answer {
        Answer::ForeignSigner => (KeyPair::generate().expect("key").serialize_der(), None),
        Answer::Delegated => responder(&signers.delegated),
        Answer::Undelegated => responder(&signers.undelegated),
        _ => (signers.ca_key.clone(), None),
    };
    let signature = ecdsa_signer(&key)
        .sign(&ring::rand::SystemRandom::new(), &tbs_der)
        .ok()?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            // ecdsa-with-SHA256
            oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
            parameters: None,
        },
        signature: BitString::from_bytes(signature.as_ref()).ok()?,
        certs,
    };
    OcspResponse::successful(basic).ok()?.to_der().ok()
}

/// Verifies the server certificate against the test CA and keeps the
/// stapled OCSP response.
#[derive(Debug)]
struct StapleCatcher {
    inner: Arc<WebPkiServerVerifier>,
    staple: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for StapleCatcher {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.staple.lock().expect("staple") = Some(ocsp_response.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The OCSP response stapled in a handshake with `sni` (empty: none), the
/// certificate verified against `ca`.
async fn stapled(addr: std::net::SocketAddr, ca: &[u8], sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).expect("root");
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let catcher = Arc::new(StapleCatcher {
        inner,
        staple: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(catcher.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let staple = catcher.staple.lock().expect("staple").clone();
    staple.expect("certificate verified")
}

fn settings() -> OcspSettings {
    OcspSettings {
        scan_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        retry_min: Duration::from_secs(30),
        retry_max: Duration::from_secs(600),
        concurrency: 2,
    }
}

/// A router serving `good.example.com` (naming the responder) and
/// `plain.example.com` (naming none), and the responder.
struct Fixture {
    pki: Pki,
    responder: Responder,
    sy: crate::support::switchyard::Running,
    specs: Vec<CertSpec>,
    keys: Vec<Arc<ServedKey>>,
}

impl Fixture {
    /// Good answers valid for `lifetime`.
    async fn start(lifetime: Duration) -> Fixture {
        let pki = Pki::new();
        let responder = Responder::start(&pki, lifetime).await;
        let (default_chain_pem, default_key_pem) = pki.leaf("default.invalid", None);
        let sy = Switchyard::new()
            .app(AppSpec::new("demo").domain("good.example.com"))
            .tls(TlsSettings {
                default_chain_pem,
                default_key_pem,
                min_version: MinTls::Tls12,
            });
        let specs = vec![
            pki.spec("c1", "good.example.com", Some(&responder.url)),
            pki.spec("c2", "plain.example.com", None),
        ];
        let sy = specs
            .iter()
            .fold(sy, |sy, spec| sy.cert(spec.clone()))
            .start()
            .await;
        let keys = sy.routes.load().certs().served().cloned().collect();
        Fixture {
            pki,
            responder,
            sy,
            specs,
            keys,
        }
    }

    /// What a client connecting to `sni` gets stapled.
    async fn staple(&self, sni: &str) -> Vec<u8> {
        let tls = self.sy.tls_addr.expect("tls listener");
        stapled(tls, &self.pki.ca_der, sni).await
    }

    /// One refresh pass at `at`.
    async fn pass(
        &self,
        at: SystemTime,
        settings: &OcspSettings,
    ) -> Vec<Result<Validity, OcspError>> {
        ocsp::refresh_pass(&self.keys, settings, at).await
    }
}

#[tokio::test]
async fn a_certificate_naming_an_ocsp_responder_is_served_with_a_checked_staple() {
    let f = Fixture::start(Duration::from_secs(3600)).await;
    assert!(f.staple("good.example.com").await.is_empty());

    let now = SystemTime::now();
    let results = f.pass(now, &settings()).await;
    assert_eq!(results.len(), 1, "only the certificate naming a responder");
    let validity = results[0].clone().expect("good response");
    assert_eq!(validity.next_update - validity.this_update, 3600);
    assert_eq!(f.responder.hits(), 1);

    let staple = f.staple("good.example.com").await;
    let response = OcspResponse::from_der(&staple).expect("an OCSP response is stapled");
    let bytes = response.response_bytes.expect("response bytes");
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic response");
    let leaf =
        f.sy.routes
            .load()
            .certs()
            .lookup("good.example.com")
            .expect("cert")
            .cert[0]
            .to_vec();
    assert_eq!(
        basic.tbs_response_data.responses[0].cert_id.serial_number,
        Certificate::from_der(&leaf)
            .expect("leaf")
            .tbs_certificate
            .serial_number
    );
    assert!(f.staple("plain.example.com").await.is_empty());
    // OpenSSL's client reads the same staple.
    let connect = f.sy.tls_addr.expect("tls listener").to_string();
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &connect])
        .args(["-servername", "good.example.com", "-status"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
    assert!(text.contains("Cert Status: good"), "{text}");

    // Not due again before half its validity; due after.
    assert!(f
        .pass(now + Duration::from_secs(600), &settings())
        .await
        .is_empty());
    let half = f.pass(now + Duration::from_secs(1801), &settings()).await;
    assert_eq!(half.len(), 1);
    assert_eq!(f.responder.hits(), 2);
}

#[tokio::test]
async fn republishing_a_certificate_unchanged_keeps_its_staple() {
    let f = Fixture::start(Duration::from_secs(3600)).await;
    assert!(f.pass(SystemTime::now(), &settings()).await[0].is_ok());
    let staple = f.staple("good.example.com").await;
    assert!(!staple.is_empty());
    let apps = || vec![AppSpec::new("demo").domain("good.example.com")];

    // A whole-table publication (a resync) with the same certificates.
    f.sy.publish_with_certs(apps(), f.specs.clone());
    assert_eq!(f.staple("good.example.com").await, staple);
    // A new key under the same id starts without one.
    let mut renewed = f.specs.clone();
    renewed[0] = f.pki.spec("c1", "good.example.com", Some(&f.responder.url));
    f.sy.publish_with_certs(apps(), renewed);
    assert!(f.staple("good.example.com").await.is_empty());
}

#[tokio::test]
async fn a_response_signed_by_a_delegated_responder_is_stapled() {
    let f = Fixture::start(Duration::from_secs(3600)).await;
    f.responder.answer(Answer::Delegated);
    let results = f.pass(SystemTime::now(), &settings()).await;
    assert!(matches!(results.as_slice(), [Ok(_)]), "{results:?}");
    let staple = f.staple("good.example.com").await;
    let response = OcspResponse::from_der(&staple).expect("an OCSP response is stapled");
    let bytes = response.response_bytes.expect("response bytes");
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic response");
    assert_eq!(
        basic.certs.map(|c| c.len()),
        Some(1),
        "the responder's certificate"
    );
}

#[tokio::test]
async fn revoked_foreign_or_garbage_answers_are_never_stapled() {
    let f = Fixture::start(Duration::from_secs(3600)).await;
    let mut at = SystemTime::now();
    for (answer, expected) in [
        (Answer::Revoked, OcspError::Revoked),
        (Answer::ForeignSigner, OcspError::Signature),
        (Answer::Undelegated, OcspError::Signature),
        (
            Answer::Error,
            OcspError::Fetch("HTTP 500 Internal Server Error".into()),
        ),
    ] {
        f.responder.answer(answer);
        let results = f.pass(at, &settings()).await;
        assert_eq!(results, [Err(expected)], "{answer:?}");
        assert!(f.staple("good.example.com").await.is_empty(), "{answer:?}");
        // Backing off: nothing fetched again right away.
        let hits = f.responder.hits();
        assert!(f
            .pass(at + Duration::from_secs(1), &settings())
            .await
            .is_empty());
        assert_eq!(f.responder.hits(), hits);
        at += Duration::from_secs(3600);
    }
    f.responder.answer(Answer::Garbage);
    let results = f.pass(at, &settings()).await;
    assert!(
        matches!(results.as_slice(), [Err(OcspError::Malformed(_))]),
        "{results:?}"
    );
    assert!(f.staple("good.example.com").await.is_empty());
}

#[tokio::test]
async fn a_responder_that_never_answers_times_out_without_a_staple() {
    let f = Fixture::start(Duration::from_secs(3600)).await;
    f.responder.answer(Answer::Stall);
    let s = OcspSettings {
        timeout: Duration::from_millis(200),
        ..settings()
    };
    let results = f.pass(SystemTime::now(), &s).await;
    assert_eq!(results, [Err(OcspError::Fetch("timed out".into()))]);
    assert!(f.staple("good.example.com").await.is_empty());
}

#[tokio::test]
async fn a_staple_outlives_failed_refreshes_until_it_expires() {
    let f = Fixture::start(Duration::from_secs(100)).await;
    let s = OcspSettings {
        retry_min: Duration::from_secs(10),
        ..settings()
    };
    let now = SystemTime::now();
    assert!(f.pass(now, &s).await[0].is_ok());
    let good = f.staple("good.example.com").await;
    assert!(!good.is_empty());

    // The responder breaks: the staple stays while valid...
    f.responder.answer(Answer::Garbage);
    let failed = f.pass(now + Duration::from_secs(60), &s).await;
    assert!(matches!(failed.as_slice(), [Err(OcspError::Malformed(_))]));
    assert_eq!(f.staple("good.example.com").await, good);
    // ...and goes when it expires.
    f.pass(now + Duration::from_secs(101), &s).await;
    assert!(f.staple("good.example.com").await.is_empty());
}

#[tokio::test]
async fn a_revoked_answer_withdraws_a_valid_staple_at_once() {
    let f = Fixture::start(Duration::from_secs(100)).await;
    let now = SystemTime::now();
    assert!(f.pass(now, &settings()).await[0].is_ok());
    assert!(!f.staple("good.example.com").await.is_empty());
    f.responder.answer(Answer::Revoked);
    // Due at half of the 100 s validity; the staple would last until 100 s.
    let results = f.pass(now + Duration::from_secs(51), &settings()).await;
    assert_eq!(results, [Err(OcspError::Revoked)]);
    assert!(f.staple("good.example.com").await.is_empty());
    assert_eq!(f.responder.hits(), 2);
}

#[tokio::test]
async fn the_background_refresher_staples_the_default_and_published_certificates() {
    let f = Fixture::start(Duration::from_secs(3600)).await;
    let (chain, key) = f.pki.leaf("default.invalid", Some(&f.responder.url));
    let default = router::tls::default_key(&TlsSettings {
        default_chain_pem: chain,
        default_key_pem: key,
        min_version: MinTls::Tls12,
    })
    .expect("default key");
    let task = tokio::spawn(ocsp::run(
        f.sy.routes.clone(),
        vec![default.clone()],
        settings(),
    ));
    crate::eventually("the default certificate is stapled", || {
        default.current().ocsp.is_some()
    })
    .await;

    // A certificate published later is picked up by the running refresher.
    f.sy.publish_with_certs(
        vec![AppSpec::new("demo").domain("new.example.com")],
        vec![f.pki.spec("c3", "new.example.com", Some(&f.responder.url))],
    );
    crate::eventually_some("the published certificate is stapled", || async {
        let staple = f.staple("new.example.com").await;
        (!staple.is_empty()).then_some(())
    })
    .await;
    task.abort();
}
