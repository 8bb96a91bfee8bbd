//! TLS configuration with rustls (ring provider): certificates and keys from PEM files, and
//! the root stores clients trust. TLS 1.2 is the minimum: rustls speaks 1.2 and 1.3 only.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind};

/// ALPN: HTTP/1.1, where a WebSocket is an upgrade; the client offers only this.
const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN: HTTP/2, where a WebSocket is an extended CONNECT stream (RFC 8441).
pub(crate) const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(
    message: String,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::with_source(ErrorKind::Tls, message, source)
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), offering HTTP/2 by ALPN before HTTP/1.1 when `http2`.
pub(crate) fn server_config(
    cert_chain: &Path,
    key: &Path,
    http2: bool,
) -> Result<Arc<ServerConfig>, Error> {
    let chain = load_certs(cert_chain)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
        tls_error(
            format!("cannot read a private key from {}", key.display()),
            err,
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error("cannot set up TLS".to_owned(), err))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| tls_error("the certificate does not fit the key".to_owned(), err))?;
    config.alpn_protocols = if http2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    Ok(Arc::new(config))
}

/// The client configuration that trusts the system's roots, built once per process.
pub(crate) fn default_client_config() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let config = client_config(system_roots())?;
    Ok(CONFIG.get_or_init(|| config).clone())
}

/// A client configuration that trusts the system's roots and the certificates of a PEM file
/// (a private CA, say).
pub(crate) fn client_config_with_ca(ca_file: &Path) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = system_roots();
    let certs = load_certs(ca_file)?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::new(
            ErrorKind::Tls,
            format!(
                "{}: no usable CA certificate ({ignored} ignored)",
                ca_file.display()
            ),
        ));
    }
    client_config(roots)
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error("cannot set up TLS".to_owned(), err))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The operating system's trusted roots. A missing or partly unreadable store is logged, not
/// fatal: connections to servers it would have vouched for fail with a clear TLS error.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!("reading the system's root certificates: {err}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system root certificates loaded");
    roots
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            tls_error(
                format!("cannot read certificates from {}", path.display()),
                err,
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Tls,
            format!("{}: no PEM certificate found", path.display()),
        ));
    }
    Ok(certs)
}
