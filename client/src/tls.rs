//! TLS identities for Quorra's QUIC links: mutual TLS 1.3 against the
//! cluster CA, for nodes and clients alike.
//!
//! A certificate dir holds `ca.pem` and, per identity, `NAME.pem` and
//! `NAME-key.pem` (`quorra certs --out DIR --nodes N,... --clients C,...
//! --admins A,...` makes them). A peer without a certificate signed by the
//! cluster CA cannot complete a handshake, in either direction. Each
//! certificate names its role (see [`quorra_core::auth`]); [`principal_of`]
//! reads it back on the other side of a connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quorra_core::auth::Principal;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// The TLS server name every node certificate carries and every peer checks.
pub const SERVER_NAME: &str = "quorra-node";
/// The ALPN protocol of Quorra's QUIC links.
pub const ALPN: &[u8] = b"quorra-peer/1";

/// Why TLS material is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a usable certificate or key.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// One node's or client's TLS material, loaded from a certificate dir.
#[derive(Debug)]
pub struct Identity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads `ca.pem`, `ID.pem` and `ID-key.pem` from `dir`.
    pub fn load(dir: &Path, node_id: &str) -> Result<Self, TlsError> {
        let invalid = |path: &Path, message: String| TlsError::Invalid {
            path: path.to_owned(),
            message,
        };
        let ca_path = dir.join("ca.pem");
        let ca = CertificateDer::from_pem_slice(read(&ca_path)?.as_bytes())
            .map_err(|e| invalid(&ca_path, e.to_string()))?;
        let cert_path = dir.join(format!("{node_id}.pem"));
        let chain = CertificateDer::pem_slice_iter(read(&cert_path)?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&cert_path, e.to_string()))?;
        if chain.is_empty() {
            return Err(invalid(&cert_path, "no certificate in file".into()));
        }
        let key_path = dir.join(format!("{node_id}-key.pem"));
        let key = PrivateKeyDer::from_pem_slice(read(&key_path)?.as_bytes())
            .map_err(|e| invalid(&key_path, e.to_string()))?;
        Ok(Self { ca, chain, key })
    }

    /// Key material for QUIC stateless resets, stable across restarts of
    /// this node: a restarted node can then reset its peers' connections to
    /// its previous life at once, instead of leaving them to time out.
    pub fn reset_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.key.secret_der())
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: TLS 1.3, client certificate required.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }

    /// The QUIC client side: verifies the peer against the cluster CA and
    /// presents this node's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }
}

/// Who a certificate (DER) names: its role URI, or no role. The name falls
/// back to the subject's common name.
pub fn principal_of(der: &[u8]) -> Principal {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Principal::from_uris([], "<unparsable certificate>");
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Principal::from_uris(uris, &cn)
}

/// The principal of a QUIC connection's peer, from its certificate chain.
pub fn peer_principal(conn: &quinn::Connection) -> Principal {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|c| principal_of(c.as_ref())))
        .unwrap_or_else(|| Principal::from_uris([], "<no certificate>"))
}
