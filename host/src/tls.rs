//! HTTPS: the API's certificate and key, generated self-signed on first start and kept in the
//! data directory (`tls/cert.pem`, `tls/key.pem`), or replaced there by the operator's own.

use std::io::{Read, Write};
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write tls/{file} in the data directory: {source}")]
    Io {
        file: &'static str,
        source: std::io::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls/{0} holds no usable PEM certificate or key")]
    Pem(&'static str),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(dir: &Dir, file: &'static str) -> Result<Option<Vec<u8>>, TlsError> {
    match dir.open(format!("tls/{file}")) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|source| TlsError::Io { file, source })?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io { file, source }),
    }
}

fn write(dir: &Dir, file: &'static str, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io { file, source };
    dir.create_dir_all("tls").map_err(io)?;
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(mode);
    let mut f = dir.open_with(format!("tls/{file}"), &opts).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Loads the certificate, generating one for `localhost`, `127.0.0.1`, `::1` and `public_host`
/// if none exists.
pub fn server_config(dir: &Dir, public_host: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_pem, key_pem) = match (read(dir, "cert.pem")?, read(dir, "key.pem")?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            if !names.iter().any(|n| n == public_host) {
                names.push(public_host.to_string());
            }
            let ck = rcgen::generate_simple_self_signed(names)?;
            let (c, k) = (
                ck.cert.pem().into_bytes(),
                ck.key_pair.serialize_pem().into_bytes(),
            );
            write(dir, "key.pem", &k, 0o600)?;
            write(dir, "cert.pem", &c, 0o644)?;
            tracing::info!(
                "generated a self-signed TLS certificate in the data directory (tls/cert.pem)"
            );
            (c, k)
        }
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem("cert.pem"))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("cert.pem"));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|_| TlsError::Pem("key.pem"))?
        .ok_or(TlsError::Pem("key.pem"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
