//! OCSP stapling (RFC 6960, RFC 6066 `status_request`).
//!
//! Every certificate the HTTPS listener serves is a [`ServedKey`]: its
//! rustls `CertifiedKey` behind an atomic pointer. When the leaf names an
//! OCSP responder (`http://` in its Authority Information Access) and the
//! chain holds its issuer, [`run`] fetches a response in the background,
//! checks it, and swaps a copy of the key carrying the response in; the
//! resolver's one atomic load per handshake then staples it. Handshakes
//! never wait on, nor lock anything for, OCSP.
//!
//! A response is stapled only when all of this holds:
//! - the response status is `successful` and the type `id-pkix-ocsp-basic`;
//! - it is signed by the issuer's key, or by a certificate in the response
//!   that the issuer signed and that carries the `OCSPSigning` extended key
//!   usage (a delegated responder);
//! - it has a single response whose certificate id (SHA-1 issuer name and
//!   key hashes, serial number) is the one asked for;
//! - that status is `good`;
//! - `thisUpdate` is not in the future (five minutes of clock skew allowed)
//!   and `nextUpdate` is present and in the future.
//!
//! Not checked: the delegated responder certificate's own validity period
//! and revocation, the `responderID` field, nonces (none is sent, as large
//! CAs ignore them), and whether the issuer in the chain really signed the
//! leaf (the control plane validated the chain when it was uploaded).
//!
//! A response is refreshed halfway between its `thisUpdate` and
//! `nextUpdate`; a failed fetch is retried after [`OcspSettings::retry_min`],
//! doubling up to [`OcspSettings::retry_max`]. Meanwhile the last response
//! stays stapled while it is valid; an expired one is withdrawn, and a
//! `revoked` answer withdraws it at once.
//!
//! Metrics: `router_ocsp_fetches_total{result}` (`good`, `revoked`,
//! `unknown`, `invalid`, `error`) and `router_ocsp_staples` (served
//! certificates with a staple, after each pass).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use x509_cert::der::asn1::{AnyRef, Null, ObjectIdentifier, OctetString};
use x509_cert::der::{Decode, Encode, Reader, SliceReader};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest, Version,
};

use crate::table::Routes;

/// SHA-1, the hash of certificate ids (what every responder understands).
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// `id-pkix-ocsp-basic`.
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// `id-ad-ocsp` in Authority Information Access.
const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
/// Largest OCSP response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Clock skew tolerated on `thisUpdate`.
const SKEW: u64 = 300;

/// How often and how patiently staples are fetched.
#[derive(Debug, Clone)]
pub struct OcspSettings {
    /// How often the served certificates are looked at for due fetches.
    pub scan_interval: Duration,
    /// Limit on one fetch (connect, request, response).
    pub timeout: Duration,
    /// First retry delay after a failure; doubles per failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Fetches in flight at once.
    pub concurrency: usize,
}

impl Default for OcspSettings {
    fn default() -> Self {
        OcspSettings {
            scan_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            concurrency: 4,
        }
    }
}

/// Why a fetched response is not stapled.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OcspError {
    /// The responder could not be reached or answered other than 200.
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The response is not a successful, well-formed basic response.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The responder refused (`responseStatus` other than successful).
    #[error("responder status {0:?}")]
    Status(OcspResponseStatus),
    /// Signed by neither the issuer nor a responder it delegated to.
    #[error("signature not by the issuer or a delegated responder")]
    Signature,
    /// No single response for the certificate asked about.
    #[error("response is for another certificate")]
    OtherCertificate,
    /// The certificate is revoked.
    #[error("certificate revoked")]
    Revoked,
    /// The responder does not know the certificate.
    #[error("certificate status unknown")]
    Unknown,
    /// `thisUpdate` in the future, or `nextUpdate` absent or past.
    #[error("response not currently valid")]
    Stale,
}

impl OcspError {
    /// The `result` label of `router_ocsp_fetches_total`.
    fn label(&self) -> &'static str {
        match self {
            OcspError::Fetch(_) | OcspError::Status(_) => "error",
            OcspError::Revoked => "revoked",
            OcspError::Unknown => "unknown",
            _ => "invalid",
        }
    }
}

/// Validity of a checked response, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `thisUpdate`.
    pub this_update: u64,
    /// `nextUpdate`.
    pub next_update: u64,
}

/// Where and what to ask about one certificate.
#[derive(Debug)]
struct Source {
    url: String,
    request: Vec<u8>,
    cert_id: CertId,
    issuer: Certificate,
}

/// The refresher's bookkeeping for one certificate (never touched by
/// handshakes).
#[derive(Debug, Default)]
struct Schedule {
    /// Next fetch, Unix seconds.
    due: u64,
    failures: u32,
    /// When the stapled response expires, if one is stapled.
    expires: Option<u64>,
}

/// A certificate as served: the key the resolver hands to rustls, swapped
/// whole when its OCSP staple changes.
#[derive(Debug)]
pub struct ServedKey {
    current: ArcSwap<CertifiedKey>,
    source: Option<Source>,
    schedule: Mutex<Schedule>,
}

impl ServedKey {
    /// Wraps `key`; stapling applies when its leaf names an `http://` OCSP
    /// responder and the chain holds the issuer.
    pub fn new(key: CertifiedKey) -> ServedKey {
        let source = source(&key.cert);
        ServedKey {
            current: ArcSwap::from_pointee(key),
            source,
            schedule: Mutex::new(Schedule::default()),
        }
    }

    /// The key to serve now (one atomic load).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// The OCSP responder asked, if any.
    pub fn ocsp_url(&self) -> Option<&str> {
        self.source.as_ref().map(|s| s.url.as_str())
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_staple(&self, ocsp: Option<Vec<u8>>) {
        let mut next = CertifiedKey::clone(&self.current.load());
        next.ocsp = ocsp;
        self.current.store(Arc::new(next));
    }

    /// Withdraws an expired staple; true when a fetch is due.
    fn prepare(&self, now: u64) -> bool {
        if self.source.is_none() {
            return false;
        }
        let mut schedule = self.schedule();
        if schedule.expires.is_some_and(|e| e <= now) {
            schedule.expires = None;
            self.set_staple(None);
        }
        schedule.due <= now
    }

    /// Fetches, checks and staples a response; returns what it found.
    async fn refresh(&self, settings: &OcspSettings, now: u64) -> Result<Validity, OcspError> {
        let Some(source) = &self.source else {
            return Err(OcspError::Fetch("no OCSP responder".into()));
        };
        let result = match fetch(&source.url, source.request.clone(), settings.timeout).await {
            Ok(der) => check(&der, &source.cert_id, &source.issuer, now).map(|v| (der, v)),
            Err(e) => Err(e),
        };
        let mut schedule = self.schedule();
        match result {
            Ok((der, validity)) => {
                metrics::counter!("router_ocsp_fetches_total", "result" => "good").increment(1);
                self.set_staple(Some(der));
                let half = validity.this_update + (validity.next_update - validity.this_update) / 2;
                schedule.due = half.max(now + settings.retry_min.as_secs());
                schedule.failures = 0;
                schedule.expires = Some(validity.next_update);
                Ok(validity)
            }
            Err(e) => {
                metrics::counter!("router_ocsp_fetches_total", "result" => e.label()).increment(1);
                tracing::warn!(url = %source.url, error = %e, "OCSP response not stapled");
                if e == OcspError::Revoked && schedule.expires.take().is_some() {
                    self.set_staple(None);
                }
                let backoff = settings
                    .retry_min
                    .saturating_mul(1u32 << schedule.failures.min(16))
                    .min(settings.retry_max);
                schedule.failures = schedule.failures.saturating_add(1);
                schedule.due = now + backoff.as_secs().max(1);
                Err(e)
            }
        }
    }
}

/// Unix seconds of `t`.
fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One pass over `keys`: withdraws expired staples and fetches the due
/// ones, `settings.concurrency` at a time. Returns once they are done,
/// with the outcome of each fetch made.
pub async fn refresh_pass(
    keys: &[Arc<ServedKey>],
    settings: &OcspSettings,
    now: SystemTime,
) -> Vec<Result<Validity, OcspError>> {
    let now = unix(now);
    let due = keys.iter().filter(|k| k.prepare(now));
    let fetches: Vec<_> = due.into_iter().map(|k| k.refresh(settings, now)).collect();
    let results = futures_util::stream::iter(fetches)
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    let stapled = keys.iter().filter(|k| k.current().ocsp.is_some()).count();
    metrics::gauge!("router_ocsp_staples").set(stapled as f64);
    results
}

/// Keeps the staples of the certificates in `routes` (and `extra`, the
/// default certificate) fresh, one pass per `settings.scan_interval`.
pub async fn run(routes: Arc<Routes>, extra: Vec<Arc<ServedKey>>, settings: OcspSettings) {
    let mut tick = tokio::time::interval(settings.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut keys: Vec<Arc<ServedKey>> = routes.load().certs().served().cloned().collect();
        keys.extend(extra.iter().cloned());
        refresh_pass(&keys, &settings, SystemTime::now()).await;
    }
}

/// The `http://` OCSP responder named in `leaf`'s Authority Information
/// Access, if any.
pub fn ocsp_url(leaf: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    cert.extensions().iter().find_map(|ext| {
        let x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) =
            ext.parsed_extension()
        else {
            return None;
        };
        aia.accessdescs
            .iter()
            .find_map(|d| match &d.access_location {
                x509_parser::extensions::GeneralName::URI(u)
                    if d.access_method.to_id_string() == AD_OCSP && u.starts_with("http://") =>
                {
                    Some(u.to_string())
                }
                _ => None,
            })
    })
}

fn source(chain: &[CertificateDer<'_>]) -> Option<Source> {
    let url = ocsp_url(chain.first()?)?;
    let leaf = Certificate::from_der(chain.first()?).ok()?;
    let issuer = Certificate::from_der(chain.get(1)?).ok()?;
    let cert_id = cert_id(&leaf, &issuer)?;
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .ok()?;
    Some(Source {
        url,
        request,
        cert_id,
        issuer,
    })
}

/// The SHA-1 certificate id of `leaf` issued by `issuer`.
pub fn cert_id(leaf: &Certificate, issuer: &Certificate) -> Option<CertId> {
    let sha1 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
            .as_ref()
            .to_vec()
    };
    let name = issuer.tbs_certificate.subject.to_der().ok()?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    Some(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(&name)).ok()?,
        issuer_key_hash: OctetString::new(sha1(key)).ok()?,
        serial_number: leaf.tbs_certificate.serial_number.clone(),
    })
}

/// POSTs `request` to `url` and reads the response body.
async fn fetch(url: &str, request: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, OcspError> {
    let fail = |e: &dyn std::fmt::Display| OcspError::Fetch(e.to_string());
    let exchange = async {
        let uri: http::Uri = url.parse().map_err(|e| fail(&e))?;
        let host = uri.host().ok_or_else(|| fail(&"no host"))?;
        let authority = uri.authority().map_or(host, |a| a.as_str()).to_string();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| fail(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(&e))?;
        // Ends when the sender is dropped or the responder closes.
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/ocsp-request")
            .body(Full::new(Bytes::from(request)))
            .map_err(|e| fail(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
        if resp.status() != http::StatusCode::OK {
            return Err(fail(&format!("HTTP {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| fail(&e))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(&"timed out"))?
}

/// Checks an OCSP response for `cert_id` issued by `issuer` at `now`
/// (Unix seconds); see the module documentation for what is verified.
pub fn check(
    der: &[u8],
    cert_id: &CertId,
    issuer: &Certificate,
    now: u64,
) -> Result<Validity, OcspError> {
    let malformed = |e: &dyn std::fmt::Display| OcspError::Malformed(e.to_string());
    let response = OcspResponse::from_der(der).map_err(|e| malformed(&e))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Status(response.response_status));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| malformed(&"no response bytes"))?;
    if bytes.response_type != OCSP_BASIC {
        return Err(malformed(&"not a basic response"));
    }
    let raw = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(raw).map_err(|e| malformed(&e))?;
    // The signed bytes exactly as received: the first element of the
    // outer SEQUENCE.
    let tbs = AnyRef::from_der(raw)
        .and_then(|outer| {
            let mut reader = SliceReader::new(outer.value())?;
            let tbs: AnyRef<'_> = reader.decode()?;
            tbs.to_der()
        })
        .map_err(|e| malformed(&e))?;

    let issuer_key = &issuer.tbs_certificate.subject_public_key_info;
    let signature = basic.signature.raw_bytes();
    let signed_by =
        |key: &SubjectPublicKeyInfoOwned| verify(key, &basic.signature_algorithm, signature, &tbs);
    let delegated = || {
        basic.certs.iter().flatten().any(|c| {
            delegated_by(c, issuer_key) && signed_by(&c.tbs_certificate.subject_public_key_info)
        })
    };
    if !signed_by(issuer_key) && !delegated() {
        return Err(OcspError::Signature);
    }

    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| r.cert_id == *cert_id)
        .ok_or(OcspError::OtherCertificate)?;
    match single.cert_status {
        CertStatus::Good(_) => {}
        CertStatus::Revoked(_) => return Err(OcspError::Revoked),
        CertStatus::Unknown(_) => return Err(OcspError::Unknown),
    }
    let this_update = single.this_update.0.to_unix_duration().as_secs();
    let next_update = single
        .next_update
        .map(|t| t.0.to_unix_duration().as_secs())
        .ok_or(OcspError::Stale)?;
    if this_update > now + SKEW || next_update <= now || next_update <= this_update {
        return Err(OcspError::Stale);
    }
    Ok(Validity {
        this_update,
        next_update,
    })
}

/// Whether `cert` is an OCSP responder certificate signed by `issuer_key`.
fn delegated_by(cert: &Certificate, issuer_key: &SubjectPublicKeyInfoOwned) -> bool {
    let Ok(der) = cert.to_der() else {
        return false;
    };
    let ocsp_signing = x509_parser::parse_x509_certificate(&der)
        .ok()
        .and_then(|(_, c)| {
            c.extended_key_usage()
                .ok()
                .flatten()
                .map(|e| e.value.ocsp_signing)
        })
        .unwrap_or(false);
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    ocsp_signing
        && verify(
            issuer_key,
            &cert.signature_algorithm,
            cert.signature.raw_bytes(),
            &tbs,
        )
}

/// Verifies `signature` over `message` by `key` with the algorithms rustls
/// accepts for certificates.
fn verify(
    key: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    signature: &[u8],
    message: &[u8],
) -> bool {
    // rustls names algorithms by the DER contents of their identifiers.
    let contents = |a: &AlgorithmIdentifierOwned| {
        a.to_der()
            .ok()
            .and_then(|d| AnyRef::from_der(&d).ok().map(|any| any.value().to_vec()))
    };
    let (Some(signature_alg), Some(key_alg)) = (contents(algorithm), contents(&key.algorithm))
    else {
        return false;
    };
    let public_key = key.subject_public_key.raw_bytes();
    rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|a| {
            a.signature_alg_id().as_ref() == signature_alg.as_slice()
                && a.public_key_alg_id().as_ref() == key_alg.as_slice()
        })
        .any(|a| a.verify_signature(public_key, message, signature).is_ok())
}
