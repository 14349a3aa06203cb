//! A closed-loop HTTPS load generator: N keep-alive HTTP/1.1 connections, each sending its next
//! request as soon as the previous answer is read, for a fixed time after a warm-up. Latency is
//! recorded per request in an HDR histogram (microseconds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// One kind of request to repeat.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub method: hyper::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Stats {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The benchmark talks to its own freshly generated self-signed certificate; verifying it would
/// measure nothing, and the handshake cost is identical either way.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(t: &Target, tls: &tokio_rustls::TlsConnector) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one request and reads the whole answer; the body is returned for checks.
pub async fn once(sender: &mut Sender, t: &Target) -> anyhow::Result<(u16, Bytes)> {
    let mut req = hyper::Request::builder()
        .method(t.method.clone())
        .uri(&t.path)
        .header("host", "localhost");
    for (k, v) in &t.headers {
        req = req.header(k, v);
    }
    let body = t.body.clone().map(Bytes::from).unwrap_or_default();
    let req = req.body(Full::new(body))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// A single request on a fresh connection (logins and probes).
pub async fn request(t: &Target) -> anyhow::Result<(u16, Bytes)> {
    let mut s = connect(t, &tls_connector()?).await?;
    once(&mut s, t).await
}

/// Runs `connections` closed loops for `warmup + measure`, recording only the measured part.
pub async fn run(
    t: &Target,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Stats> {
    let tls = tls_connector()?;
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut sender = connect(t, &tls).await.context("connect")?;
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = once(&mut sender, &t).await;
                let done = Instant::now();
                if sent < start {
                    continue;
                }
                match result {
                    Ok((s, _)) if (200..300).contains(&s) => {
                        ok += 1;
                        hist.record((done - sent).as_micros() as u64)?;
                    }
                    _ => errors += 1,
                }
            }
            anyhow::Ok((ok, errors, hist))
        }));
    }
    let mut total = Stats {
        ok: 0,
        errors: 0,
        elapsed: measure,
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (ok, errors, hist) = task.await??;
        total.ok += ok;
        total.errors += errors;
        total.hist.add(hist)?;
    }
    if total.ok == 0 {
        bail!("no request succeeded ({} errors)", total.errors);
    }
    Ok(total)
}
