//! A plain HTTP/2 client (the `h2` crate over tokio-rustls) for what curl cannot do: send a
//! header block over 64 KiB (nghttp2 refuses to) or watch a connection receive GOAWAY.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// An h2 connection to the edge on `port` (TLS trusting `ca`, SNI `localhost`).
pub async fn connect(
    port: u16,
    ca: &Path,
) -> (SendRequest<Bytes>, Connection<TlsStream<TcpStream>, Bytes>) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    h2::client::handshake(tls).await.unwrap()
}
