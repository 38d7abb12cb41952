//! The cluster's certificate authority and node certificates.
//!
//! Peers authenticate each other with mutual TLS 1.3 against the cluster CA:
//! a peer without a certificate signed by it cannot complete a handshake, in
//! either direction, so it can neither join nor send requests. Layout of a
//! certificate dir: `ca.pem`, `ca-key.pem` (keep it private; it only signs new
//! node certificates), and `ID.pem` / `ID-key.pem` per node.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

pub use quorra_client::tls::{Identity as NodeCerts, TlsError, ALPN, SERVER_NAME};

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
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
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
