//! Test upstreams (TCP echo, HTTP, TLS), a proxy wired to them, and small clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use warren_proxy::ca::SandboxCa;
use warren_proxy::events::ConnectionEvent;
use warren_proxy::inject::{Credentials, Secrets};
use warren_proxy::policy::{Policy, PolicyConfig};
use warren_proxy::proxy::{Proxy, ProxyConfig};
use warren_proxy::resolve::StaticResolver;
use warren_proxy::sandbox::{SandboxPolicy, SandboxTable};

pub(crate) const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub(crate) const SANDBOX: &str = "sb-test";
const WAIT: Duration = Duration::from_secs(10);

/// A loopback server that counts the connections it accepts.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
}

impl Upstream {
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub(crate) async fn spawn<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = accepts.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        Self { addr, accepts }
    }

    /// Echoes every byte back.
    pub(crate) async fn echo() -> Self {
        Self::spawn(|mut stream| async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await
    }

    /// Answers every request with a description of what it received.
    pub(crate) async fn http() -> Self {
        Self::spawn(|stream| async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(describe(&req)))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await
    }

    /// An HTTPS server for `upstream.test` that answers every request with a description of
    /// what it received.
    pub(crate) async fn https(cert: &TestCert) -> Self {
        let acceptor = TlsAcceptor::from(cert.server_config());
        Self::spawn(move |stream| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(describe(&req)))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        })
        .await
    }

    /// A TLS server for `upstream.test` that answers a line with `tls: <line>`.
    pub(crate) async fn tls(cert: &TestCert) -> Self {
        let acceptor = TlsAcceptor::from(cert.server_config());
        Self::spawn(move |stream| {
            let acceptor = acceptor.clone();
            async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while tls.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let reply = format!("tls: {}\n", String::from_utf8_lossy(&line));
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        })
        .await
    }
}

fn describe(req: &Request<Incoming>) -> String {
    let mut out = format!("{} {}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        out.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    out
}

/// A self-signed certificate for `upstream.test`.
pub(crate) struct TestCert {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    pem: String,
}

impl TestCert {
    pub(crate) fn new() -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec!["upstream.test".to_owned()]).unwrap();
        Self {
            cert: certified.cert.der().clone(),
            key: certified.signing_key.serialize_der(),
            pem: certified.cert.pem(),
        }
    }

    /// The certificate, PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .unwrap();
        Arc::new(config)
    }

    /// Connects over TLS through `addr` (the transparent port), naming `sni`.
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        sni: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        connector.connect(name, stream).await
    }
}

/// The proxy's three listeners on loopback, with 127.0.0.1 as the sandbox.
pub(crate) struct Harness {
    pub(crate) explicit: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) tls: SocketAddr,
    pub(crate) table: Arc<SandboxTable>,
    pub(crate) config: Arc<PolicyConfig>,
    events: Arc<Mutex<Vec<ConnectionEvent>>>,
}

/// Names the test resolver knows: both point at loopback, one to be allowed through the test
/// exemption and one to be refused by the real check.
pub(crate) fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("upstream.test", [LOCAL])
        .with("rebind.test", [LOCAL])
}

impl Harness {
    /// Listeners whose policy config exempts `exempt_ports` on 127.0.0.1, with the
    /// transparent ports pointed at `http_port` and `tls_port`.
    pub(crate) async fn start(
        exempt_ports: &[u16],
        http_port: u16,
        tls_port: u16,
        proxy_config: Value,
    ) -> Self {
        let listeners = ProxyConfig {
            transparent_http_port: http_port,
            transparent_tls_port: tls_port,
            ..ProxyConfig::default()
        };
        Self::start_with(listeners, exempt_ports, proxy_config).await
    }

    /// Listeners with their own limits and timings.
    pub(crate) async fn start_with(
        listeners: ProxyConfig,
        exempt_ports: &[u16],
        proxy_config: Value,
    ) -> Self {
        let mut config = PolicyConfig::new();
        for port in exempt_ports {
            config = config.allow_loopback_for_tests(*port);
        }
        let config = Arc::new(config);
        let table = Arc::new(SandboxTable::new());
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let proxy = Proxy::new(
            listeners,
            table.clone(),
            Arc::new(resolver()),
            Arc::new(move |event: ConnectionEvent| sink.lock().unwrap().push(event)),
        );
        let explicit = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let http = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let tls = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let harness = Self {
            explicit: explicit.local_addr().unwrap(),
            http: http.local_addr().unwrap(),
            tls: tls.local_addr().unwrap(),
            table,
            config,
            events,
        };
        tokio::spawn(proxy.clone().serve_explicit(explicit));
        tokio::spawn(proxy.clone().serve_transparent_http(http));
        tokio::spawn(proxy.serve_transparent_tls(tls));
        harness.set_policy(proxy_config);
        harness
    }

    /// Replaces the sandbox's policy: new connections get it.
    pub(crate) fn set_policy(&self, proxy_config: Value) {
        let policy = Policy::from_proxy_config(Some(&proxy_config), self.config.clone()).unwrap();
        self.table
            .insert(LOCAL, SandboxPolicy::new(SANDBOX, policy));
    }

    /// Replaces the sandbox's policy and credential rules, with `ca` to intercept TLS.
    pub(crate) fn set_credentials(
        &self,
        proxy_config: Value,
        secrets: Arc<dyn Secrets>,
        ca: Option<Arc<SandboxCa>>,
    ) {
        let policy = Policy::from_proxy_config(Some(&proxy_config), self.config.clone()).unwrap();
        let mut sandbox = SandboxPolicy::new(SANDBOX, policy);
        sandbox.credentials = Credentials::from_proxy_config(Some(&proxy_config), secrets).unwrap();
        sandbox.ca = ca;
        self.table.insert(LOCAL, sandbox);
    }

    /// Waits for the `n`th event (1-based) and returns it.
    pub(crate) async fn event(&self, n: usize) -> ConnectionEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(event) = self.events.lock().unwrap().get(n - 1) {
                return event.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no event #{n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Reads one response (head, then a Content-Length body or everything to EOF; nothing after
/// the head of a 200 to CONNECT, where the tunnel starts).
pub(crate) async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S, to_connect: bool) -> Reply {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n == 1,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap())
    });
    let body = match length {
        Some(len) => {
            let mut body = vec![0u8; len];
            tokio::time::timeout(WAIT, stream.read_exact(&mut body))
                .await
                .unwrap()
                .unwrap();
            body
        }
        None if to_connect && status == 200 => Vec::new(),
        None => {
            let mut body = Vec::new();
            let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut body))
                .await
                .unwrap();
            body
        }
    };
    Reply {
        status,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Sends `request` on a new connection to `addr` and reads the response.
pub(crate) async fn send(addr: SocketAddr, request: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    read_reply(&mut stream, false).await
}

/// Opens a CONNECT tunnel to `target` through `proxy`; returns the stream and the reply.
pub(crate) async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, Reply) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_reply(&mut stream, true).await;
    (stream, reply)
}

/// Whether the peer closes `stream` (read returns EOF or an error) within the wait.
pub(crate) async fn closes<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
