//! HTTPS for the HTTP API (`http_tls` in the node's config).
//!
//! The same router, served over TLS: rustls (with the ring provider the
//! peer transport uses) takes the handshake, hyper serves HTTP/1.1 on the
//! encrypted stream. A handshake that fails or stalls costs only its own
//! connection; on stop the listener closes and the connections in flight
//! finish their requests (within a bound).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::HttpTls;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after a stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the HTTPS certificate cannot be used.
#[derive(Debug, Error)]
pub enum HttpTlsError {
    /// A file cannot be read or holds no PEM of the kind needed.
    #[error("http_tls: cannot use {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// rustls refused the certificate and key (they do not match, or the
    /// key type is unsupported).
    #[error("http_tls: the certificate and key cannot be used together: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl ToString) -> HttpTlsError {
    HttpTlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The acceptor for `tls`'s certificate chain and key.
pub fn acceptor(tls: &HttpTls) -> Result<TlsAcceptor, HttpTlsError> {
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| file_error(&tls.cert_file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&tls.cert_file, e))?;
    if certs.is_empty() {
        return Err(file_error(&tls.cert_file, "no certificate in it"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| file_error(&tls.key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpTlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HttpTlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` until `stop` completes, then lets
/// the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        // Reap the connections that ended, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was taken: the listener itself is fine.
                    tracing::warn!("https accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "https handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "https handshake timed out");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "https connection: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("https: requests still in flight after the stop; closing them");
    }
    // Handshakes under way and connections past the bound end here, before
    // the node closes its store.
    connections.shutdown().await;
    Ok(())
}
