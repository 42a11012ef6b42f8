//! TLS: rustls configurations (ring provider, TLS 1.2 and 1.3 only) from PEM files,
//! for servers (the HTTP front in [`crate::http::front`]) and clients.

use crate::error::{Error, Kind, Result};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The crypto provider every TLS use in berth shares.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let p = Arc::new(rustls::crypto::ring::default_provider());
        // ureq and others look for the process default.
        let _ = rustls::crypto::CryptoProvider::install_default((*p).clone());
        p
    })
    .clone()
}

/// Read a PEM certificate chain; a clear error if there is none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::config(format!("{}: cannot read certificates: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("{}: bad PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{}: no PEM certificate (BEGIN CERTIFICATE) found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Read a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; not encrypted).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path).map_err(|e| {
        Error::config(format!(
            "{}: cannot read key: {}",
            path.display(),
            Error::from(e)
        ))
    })?;
    if String::from_utf8_lossy(&text).contains("ENCRYPTED") {
        return Err(Error::config(format!(
            "{}: the private key is encrypted; store it unencrypted (mode 0400) as Distribution requires",
            path.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        Error::config(format!(
            "{}: no usable PEM private key: {e}",
            path.display()
        ))
    })
}

/// Settings of a TLS server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// CA bundles whose client certificates are required (mutual TLS), if any.
    pub client_cas: Vec<std::path::PathBuf>,
    /// Refuse TLS 1.2 and accept only 1.3.
    pub tls13_only: bool,
}

/// Build a rustls server configuration (TLS 1.2 and 1.3, or 1.3 only).
pub fn server_config(s: &ServerSettings) -> Result<Arc<ServerConfig>> {
    let certs = load_certs(&s.certificate)?;
    let key = load_key(&s.key)?;
    let versions: &[&rustls::SupportedProtocolVersion] = if s.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| Error::with_source(Kind::Tls, "TLS setup", e))?;
    let builder = if s.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for p in &s.client_cas {
            for c in load_certs(p)? {
                roots.add(c).map_err(|e| {
                    Error::config(format!("{}: unusable CA certificate: {e}", p.display()))
                })?;
            }
        }
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| Error::with_source(Kind::Tls, "client certificate verifier", e))?;
        builder.with_client_cert_verifier(v)
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        Error::config(format!(
            "{} / {}: certificate and key do not form a usable pair: {e}",
            s.certificate.display(),
            s.key.display()
        ))
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A rustls client configuration (TLS 1.2 and 1.3) trusting `ca` (a PEM
/// bundle; the system's bundle when None), presenting `client` (certificate
/// and key files) when given. For berth's own TLS clients other than the
/// registry client (logcollect's syslog sinks).
pub fn client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let bundle = ca.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
    for c in load_certs(bundle)? {
        roots.add(c).map_err(|e| {
            Error::config(format!(
                "{}: unusable CA certificate: {e}",
                bundle.display()
            ))
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::with_source(Kind::Tls, "TLS setup", e))?
        .with_root_certificates(roots);
    let cfg = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                Error::config(format!(
                    "{} / {}: certificate and key do not form a usable pair: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
    };
    Ok(Arc::new(cfg))
}

/// Whether a TLS failure looks like the peer's certificate is not trusted.
pub fn is_unknown_ca(e: &dyn std::error::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(x) = cur {
        let s = x.to_string();
        if s.contains("UnknownIssuer")
            || s.contains("unknown issuer")
            || s.contains("invalid peer certificate")
        {
            return true;
        }
        cur = x.source();
    }
    false
}

/// The system's CA bundle for ureq agents (registry client, S3 driver).
pub fn ureq_system_roots() -> Vec<ureq::tls::Certificate<'static>> {
    // Debian, then RHEL/SL: whichever exists.
    for p in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
    ] {
        if let Ok(pem) = std::fs::read(p) {
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if !certs.is_empty() {
                return certs;
            }
        }
    }
    Vec::new()
}
