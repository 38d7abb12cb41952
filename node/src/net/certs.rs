//! The cluster's certificate authority and node certificates.
//!
//! Peers authenticate each other with mutual TLS 1.3 against the cluster CA:
//! a peer without a certificate signed by it cannot complete a handshake, in
//! either direction, so it can neither join nor send requests. Each
//! certificate names a role ([`Role`]: node, client or admin) and a name in a
//! `urn:quorra:ROLE:NAME` subject alternative name; only node certificates
//! carry the server name peers check, so only they can serve as a node.
//! Layout of a certificate dir: `ca.pem`, `ca-key.pem` (keep it private; it
//! only signs new certificates), `cluster-secret` (keep it private: it
//! authenticates causal contexts; every node needs the same one), and
//! `NAME.pem` / `NAME-key.pem` per certificate.

use std::path::{Path, PathBuf};

use quorra_core::auth::{role_uri, Role};
use quorra_core::context::SECRET_LEN;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
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

/// The file holding the cluster secret.
pub const SECRET_FILE: &str = "cluster-secret";

/// Reads the cluster secret from a certificate dir.
pub fn load_secret(dir: &Path) -> Result<Vec<u8>, CertError> {
    let path = dir.join(SECRET_FILE);
    let text = read(&path)?;
    let secret = decode_hex(text.trim()).ok_or_else(|| CertError::Invalid {
        path: path.clone(),
        message: "not hex".into(),
    })?;
    if secret.len() < SECRET_LEN {
        return Err(CertError::Invalid {
            path,
            message: format!("{} bytes; at least {SECRET_LEN} needed", secret.len()),
        });
    }
    Ok(secret)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Creates the CA and the cluster secret in `dir` if they are not there,
/// then a node certificate for each node that has none. Returns the files
/// written.
pub fn generate(dir: &Path, nodes: &[String]) -> Result<Vec<PathBuf>, CertError> {
    generate_role(dir, Role::Node, nodes)
}

/// Creates the CA and the cluster secret in `dir` if they are not there,
/// then a certificate with `role` for each name that has none. Returns the
/// files written.
pub fn generate_role(dir: &Path, role: Role, names: &[String]) -> Result<Vec<PathBuf>, CertError> {
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
    let secret = dir.join(SECRET_FILE);
    if !secret.exists() {
        let bytes: [u8; SECRET_LEN] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write(&secret, &format!("{hex}\n"), true)?;
        written.push(secret);
    }
    for id in names {
        let (cert_path, key_path) = (
            dir.join(format!("{id}.pem")),
            dir.join(format!("{id}-key.pem")),
        );
        if cert_path.exists() && key_path.exists() {
            continue;
        }
        let key = KeyPair::generate()?;
        // Only a node answers as a server: the others lack the server name
        // every peer checks.
        let dns = match role {
            Role::Node => vec![SERVER_NAME.to_owned(), id.clone()],
            Role::Client | Role::Admin => Vec::new(),
        };
        let mut params = CertificateParams::new(dns)?;
        let uri = role_uri(role, id);
        params
            .subject_alt_names
            .push(SanType::URI(uri.clone().try_into().map_err(|_| {
                CertError::Invalid {
                    path: dir.join(format!("{id}.pem")),
                    message: format!("{uri:?} is not a valid URI"),
                }
            })?));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.extended_key_usages = match role {
            Role::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
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
        assert_eq!(written.len(), 7);
        let secret = load_secret(dir.path()).expect("secret");
        assert_eq!(secret.len(), SECRET_LEN);
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
        assert_eq!(load_secret(dir.path()).expect("secret"), secret, "kept");
    }

    #[test]
    fn each_certificate_names_its_role() {
        use quorra_client::tls::principal_of;
        use quorra_core::auth::Principal;
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), &["n1".into()]).expect("node");
        generate_role(dir.path(), Role::Client, &["app".into()]).expect("client");
        generate_role(dir.path(), Role::Admin, &["ops".into()]).expect("admin");
        for (name, role) in [
            ("n1", Role::Node),
            ("app", Role::Client),
            ("ops", Role::Admin),
        ] {
            let pem = std::fs::read(dir.path().join(format!("{name}.pem"))).expect("pem");
            let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).expect("der");
            assert_eq!(principal_of(der.as_ref()), Principal::new(role, name));
        }
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
