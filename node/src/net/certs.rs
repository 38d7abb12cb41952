//! The cluster's certificate authority and node certificates.
//!
//! Peers authenticate each other with mutual TLS 1.3 against the cluster CA:
//! a peer without a certificate signed by it cannot complete a handshake, in
//! either direction, so it can neither join nor send requests. Layout of a
//! certificate dir: `ca.pem`, `ca-key.pem` (keep it private; it only signs new
//! node certificates), and `ID.pem` / `ID-key.pem` per node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// The TLS server name every node certificate carries and every peer checks.
pub const SERVER_NAME: &str = "quorra-node";
/// The ALPN protocol of peer connections.
pub const ALPN: &[u8] = b"quorra-peer/1";

/// Certificate errors.
#[derive(Debug, Error)]
pub enum CertError {
    /// A file cannot be read or written.
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
    /// Generating a certificate failed.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Creates the CA in `dir` if it is not there, then a certificate for each
/// node that has none. Returns the files written.
pub fn generate(dir: &Path, nodes: &[String]) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let issuer = if ca_pem.exists() && ca_key_pem.exists() {
        let key_path = &ca_key_pem;
        let key = KeyPair::from_pem(&read(key_path)?).map_err(|e| CertError::Invalid {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&read(&ca_pem)?, key).map_err(|e| CertError::Invalid {
            path: ca_pem.clone(),
            message: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Quorra cluster CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_pem, &key.serialize_pem(), true)?;
        written.extend([ca_pem.clone(), ca_key_pem.clone()]);
        Issuer::new(params, key)
    };
    for id in nodes {
        let (cert_path, key_path) = (
            dir.join(format!("{id}.pem")),
            dir.join(format!("{id}-key.pem")),
        );
        if cert_path.exists() && key_path.exists() {
            continue;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), id.clone()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

/// One node's TLS material, loaded from a certificate dir.
#[derive(Debug)]
pub struct NodeCerts {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl NodeCerts {
    /// Loads `ca.pem`, `ID.pem` and `ID-key.pem` from `dir`.
    pub fn load(dir: &Path, node_id: &str) -> Result<Self, CertError> {
        let invalid = |path: &Path, message: String| CertError::Invalid {
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

    fn roots(&self) -> Result<Arc<RootCertStore>, CertError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| CertError::Tls(e.to_string()))?;
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: TLS 1.3, client certificate required.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| CertError::Tls(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| CertError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| CertError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| CertError::Tls(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }

    /// The QUIC client side: verifies the peer against the cluster CA and
    /// presents this node's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| CertError::Tls(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| CertError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| CertError::Tls(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_and_reuse_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = generate(dir.path(), &["n1".into(), "n2".into()]).expect("generate");
        assert_eq!(written.len(), 6);
        let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        let more = generate(dir.path(), &["n1".into(), "n3".into()]).expect("generate more");
        assert_eq!(
            more,
            vec![dir.path().join("n3.pem"), dir.path().join("n3-key.pem")]
        );
        assert_eq!(
            std::fs::read(dir.path().join("ca.pem")).expect("ca"),
            ca_before
        );
        let certs = NodeCerts::load(dir.path(), "n3").expect("load");
        certs.server_config().expect("server config");
        certs.client_config().expect("client config");
    }

    #[test]
    fn missing_or_bad_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = NodeCerts::load(dir.path(), "n1").expect_err("missing");
        assert!(e.to_string().contains("ca.pem"), "{e}");
        generate(dir.path(), &["n1".into()]).expect("generate");
        std::fs::write(dir.path().join("n1-key.pem"), "garbage").expect("write");
        let e = NodeCerts::load(dir.path(), "n1").expect_err("bad key");
        assert!(e.to_string().contains("n1-key.pem"), "{e}");
    }
}
