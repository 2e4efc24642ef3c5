//! Input validation. Every check returns an [`ApiError`] naming the field, so
//! bad input is always a 4xx with a useful message — never a 500 or a panic.

use std::net::SocketAddr;

use crate::error::ApiError;

/// Heroku's app-name rule: 3–30 characters, lowercase letters, digits and
/// dashes, starting with a letter and ending with a letter or digit.
pub fn app_name(name: &str) -> Result<(), ApiError> {
    let ok = (3..=30).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.as_bytes()[name.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "must start with a letter, end with a letter or digit, be 3 to 30 characters long, and can only contain lowercase letters, digits, and dashes.",
        ))
    }
}

/// Normalises a domain: lowercase, IDNA to punycode, no trailing dot; a
/// wildcard is allowed only as the whole leftmost label (`*.example.com`).
/// IP addresses and single-label names are refused.
pub fn hostname(field: &str, input: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid(field, format!("{input:?} {why}"));
    let raw = input.trim().trim_end_matches('.');
    if raw.is_empty() {
        return Err(bad("is empty"));
    }
    let (wild, rest) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if rest.contains('*') {
        return Err(bad(
            "may only use a wildcard as its whole leftmost label (*.example.com)",
        ));
    }
    let ascii = match url::Host::parse(rest) {
        Ok(url::Host::Domain(d)) => d,
        Ok(_) => return Err(bad("is an IP address, not a hostname")),
        Err(_) => return Err(bad("is not a valid hostname")),
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("needs at least two labels (example.com)"));
    }
    for l in &labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return Err(bad(
                "has a label that is not letters, digits and inner dashes (1-63 characters)",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("is not a valid hostname"));
    }
    let out = if wild { format!("*.{ascii}") } else { ascii };
    if out.len() > 253 {
        return Err(bad("is longer than 253 characters"));
    }
    Ok(out)
}

/// A dyno address: `ip:port` with a non-zero port.
pub fn socket_addr(field: &str, input: &str) -> Result<SocketAddr, ApiError> {
    match input.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        Ok(_) => Err(ApiError::invalid(field, "must have a non-zero port")),
        Err(_) => Err(ApiError::invalid(
            field,
            format!("{input:?} is not a socket address (expected ip:port, e.g. 127.0.0.1:5001)"),
        )),
    }
}

/// A dyno name `TYPE.N` (`web.1`, `worker.12`); returns the type.
pub fn dyno_name(input: &str) -> Result<&str, ApiError> {
    let bad = || {
        ApiError::invalid(
            "name",
            format!("{input:?} is not a dyno name (expected TYPE.N, e.g. web.1)"),
        )
    };
    let (kind, n) = input.split_once('.').ok_or_else(bad)?;
    let kind_ok = !kind.is_empty()
        && kind.len() <= 30
        && kind.as_bytes()[0].is_ascii_lowercase()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let n_ok = !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit());
    if kind_ok && n_ok {
        Ok(kind)
    } else {
        Err(bad())
    }
}

/// A process type (`web`, `worker`).
pub fn process_type(input: &str) -> Result<(), ApiError> {
    let ok = !input.is_empty()
        && input.len() <= 30
        && input.as_bytes()[0].is_ascii_lowercase()
        && input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "type",
            format!("{input:?} is not a process type"),
        ))
    }
}

/// A dyno state name.
pub fn dyno_state(input: &str) -> Result<router::DynoState, ApiError> {
    router::DynoState::parse(input).ok_or_else(|| {
        ApiError::invalid(
            "state",
            format!("{input:?} is not one of starting, up, crashed, down"),
        )
    })
}

/// The longest drain URL accepted, in bytes. Long enough for any real
/// endpoint with credentials and a token in its path; short enough that a
/// URL never dominates a log line or the stored record.
pub const MAX_DRAIN_URL: usize = 2048;

/// The longest DNS name (RFC 1035 §2.3.4, without the trailing dot).
pub const MAX_HOST: usize = 253;

/// `input` for an error message: at most 100 characters, marked when cut.
fn quoted(input: &str) -> String {
    const SHOWN: usize = 100;
    match input.char_indices().nth(SHOWN) {
        None => format!("{input:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &input[..cut], input.len()),
    }
}

/// A drain URL: `syslog://host:port`, `syslog+tls://host:port` or `https://…`,
/// at most [`MAX_DRAIN_URL`] bytes, with a host of at most [`MAX_HOST`]
/// characters and a port in 1–65535.
pub fn drain_url(input: &str) -> Result<String, ApiError> {
    let input = input.trim();
    let bad = |why: &str| ApiError::invalid("url", format!("{} {why}", quoted(input)));
    if input.len() > MAX_DRAIN_URL {
        return Err(bad(&format!("is longer than {MAX_DRAIN_URL} bytes")));
    }
    let url = url::Url::parse(input).map_err(|e| match e {
        url::ParseError::InvalidPort => bad("has a port outside 1-65535"),
        url::ParseError::EmptyHost => bad("needs a host"),
        _ => bad("is not a URL"),
    })?;
    match url.scheme() {
        "syslog" | "syslog+tls" => {
            if url.port().is_none() {
                return Err(bad("needs a port (syslog://host:port)"));
            }
        }
        "https" => {}
        _ => return Err(bad("must use syslog://, syslog+tls:// or https://")),
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(bad("needs a host"));
    }
    if host.trim_end_matches('.').len() > MAX_HOST {
        return Err(bad(&format!(
            "has a host longer than {MAX_HOST} characters"
        )));
    }
    if url.port() == Some(0) {
        return Err(bad("has a port outside 1-65535"));
    }
    Ok(input.to_string())
}

/// `ERROR_PAGE_URL` / `MAINTENANCE_PAGE_URL`: the router fetches them, so
/// only an absolute `http://` or `https://` URL with a host is accepted.
pub fn page_url(var: &str, input: &str) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::invalid(var, format!("{} {why}", quoted(input)));
    let url = url::Url::parse(input).map_err(|_| bad("is not an http:// or https:// URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("needs a host"));
    }
    Ok(())
}

/// A config var name: letters, digits and underscores, not starting with a digit.
pub fn config_key(input: &str) -> Result<(), ApiError> {
    let ok = !input.is_empty()
        && input.len() <= 256
        && !input.as_bytes()[0].is_ascii_digit()
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "config_vars",
            format!("{input:?} is not a valid config var name (letters, digits, underscores)"),
        ))
    }
}

/// A log-token name: 1–64 of letters, digits, `.`, `_`, `-`.
pub fn token_name(input: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&input.len())
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "must be 1 to 64 letters, digits, dots, underscores or dashes",
        ))
    }
}

/// A timer in milliseconds: 1 ms to 1 hour.
pub fn timer_ms(field: &str, v: u64) -> Result<u64, ApiError> {
    if (1..=3_600_000).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::invalid(
            field,
            "must be between 1 and 3600000 milliseconds",
        ))
    }
}

/// A positive count up to `max` (at most `u32::MAX`).
pub fn count(field: &str, v: u64, max: u64) -> Result<u32, ApiError> {
    let v = range(field, v, 1, max.min(u64::from(u32::MAX)))?;
    Ok(v as u32)
}

/// A number from `min` to `max`, both included.
pub fn range(field: &str, v: u64, min: u64, max: u64) -> Result<u64, ApiError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be between {min} and {max}"),
        ))
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (SANs, else the CN).
    pub domains: Vec<String>,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Not before (RFC 3339).
    pub starts_at: String,
    /// Not after (RFC 3339).
    pub expires_at: String,
    /// Subject equals issuer.
    pub self_signed: bool,
}

/// Parses a PEM chain and key, and checks the key matches the leaf.
pub fn certificate(chain_pem: &str, key_pem: &str) -> Result<CertInfo, ApiError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::invalid("certificate_chain", "is not valid PEM"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| ApiError::invalid("certificate_chain", "contains no PEM certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| {
        ApiError::invalid(
            "certificate_chain",
            "has a leaf certificate that does not parse",
        )
    })?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|_| ApiError::invalid("private_key", "is not valid PEM"))?
        .ok_or_else(|| ApiError::invalid("private_key", "contains no PEM private key"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        ApiError::invalid(
            "private_key",
            "is not a supported RSA, ECDSA or Ed25519 key",
        )
    })?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    certified
        .keys_match()
        .map_err(|_| ApiError::invalid("private_key", "does not match the certificate"))?;

    let mut domains: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                domains.push(d.to_ascii_lowercase());
            }
        }
    }
    if domains.is_empty() {
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
        {
            domains.push(cn.to_ascii_lowercase());
        }
    }
    if domains.is_empty() {
        return Err(ApiError::invalid(
            "certificate_chain",
            "names no DNS domain (no SAN or CN)",
        ));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        chrono::DateTime::from_timestamp(t.timestamp(), 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let subject = cert.subject().to_string();
    let issuer = cert.issuer().to_string();
    Ok(CertInfo {
        domains,
        self_signed: subject == issuer,
        subject,
        issuer,
        starts_at: time(cert.validity().not_before),
        expires_at: time(cert.validity().not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_heroku() {
        for ok in ["demo", "my-app-2", "abc"] {
            assert!(app_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "Demo",
            "1demo",
            "demo-",
            "de_mo",
            "a".repeat(31).as_str(),
            "dé-mo",
        ] {
            assert!(app_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_normalised_and_checked() {
        assert_eq!(
            hostname("hostname", "WWW.Example.com.").ok().as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            hostname("hostname", "*.example.com").ok().as_deref(),
            Some("*.example.com")
        );
        assert_eq!(
            hostname("hostname", "bücher.example").ok().as_deref(),
            Some("xn--bcher-kva.example")
        );
        for bad in [
            "",
            "localhost",
            "a.*.example.com",
            "*example.com",
            "1.2.3.4",
            "-a.example.com",
            "a b.com",
            "*.*.x.com",
            "x..com",
        ] {
            assert!(hostname("hostname", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_drains_and_dynos() {
        assert!(socket_addr("address", "127.0.0.1:5001").is_ok());
        assert!(socket_addr("address", "[::1]:80").is_ok());
        assert!(socket_addr("address", "127.0.0.1:0").is_err());
        assert!(socket_addr("address", "localhost:80").is_err());
        assert!(drain_url("syslog://logs.example.com:514").is_ok());
        assert!(drain_url("syslog+tls://logs.example.com:6514").is_ok());
        assert!(drain_url("https://user:pw@logs.example.com/x").is_ok());
        assert!(drain_url("http://logs.example.com/").is_err());
        assert!(drain_url("syslog://logs.example.com").is_err());
        assert!(drain_url("nonsense").is_err());
        assert!(drain_url("syslog://logs.example.com:0").is_err());
        assert!(drain_url("syslog://logs.example.com:65536").is_err());
        assert!(drain_url("syslog://logs.example.com:65535").is_ok());
        assert!(drain_url("https://logs.example.com:0/").is_err());
        assert!(drain_url("https://:443/").is_err());
        assert!(page_url("ERROR_PAGE_URL", "https://pages.example.com/e.html").is_ok());
        assert!(page_url("ERROR_PAGE_URL", "http://pages.example.com/e.html").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://x.example/e",
            "/e.html",
            "javascript:x",
        ] {
            assert!(page_url("ERROR_PAGE_URL", bad).is_err(), "{bad}");
        }
        assert_eq!(dyno_name("web.1").ok(), Some("web"));
        assert_eq!(dyno_name("worker.12").ok(), Some("worker"));
        assert!(dyno_name("web").is_err());
        assert!(dyno_name("web.x").is_err());
        assert!(dyno_name(".1").is_err());
    }
}
