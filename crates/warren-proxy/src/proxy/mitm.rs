//! Interception of TLS to a host a credential rule covers.
//!
//! The sandbox's TLS session ends at the proxy, which presents a certificate for the host
//! issued by the sandbox's own CA ([`crate::ca`]); the proxy opens its own TLS session to the
//! real host, verified against the host's trust store, and relays HTTP/1.1 requests between
//! the two, adding the rule's headers ([`crate::inject`]). The credential thus exists only in
//! the proxy and on the wire to the host that proved its name.
//!
//! A request whose Host (any copy) or absolute-form URL names another host than the one the
//! TLS session was opened for is refused, and the upstream gets exactly one Host: the
//! credential belongs to the verified host only. TRACE is refused (it would echo the
//! credential back). The sandbox's rules are looked up for every request, so an update or a
//! deletion applies on connections already open. Protocol upgrades (WebSocket) are not relayed
//! on intercepted connections.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::{Authority, Uri};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::debug;

use super::meter::{Activity, Metered};
use super::upstream::Route;
use super::wire::{MAX_HEADERS, message, read_buffer, strip_hop_by_hop};
use super::{Attempt, Client, callback};
use crate::inject::aws::{AwsSigning, Payload};
use crate::inject::{RequestTarget, Scheme};
use crate::policy::{Destination, Host};

type Body = Either<Incoming, Full<Bytes>>;

/// Most bytes of a request body the proxy reads whole to sign it for AWS (a body whose hash
/// the sandbox's SDK did not declare).
const MAX_SIGNED_BODY: usize = 32 << 20;

/// Builds the TLS client configuration for upstreams: the host's trust store plus `extra`
/// PEM certificates (a local CA that re-signs this host's outbound TLS, a test server's CA).
pub fn upstream_tls(extra: &[u8]) -> Result<Arc<rustls::ClientConfig>, io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A certificate rustls cannot parse is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(extra) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no trusted CA certificates for upstream TLS",
        ));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io::Error::other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves an intercepted connection: `downstream` is the sandbox's side (its ClientHello not
/// yet consumed), `upstream` a TCP connection to the permitted address of `dest`.
pub(super) async fn serve<S>(
    client: Arc<Client>,
    downstream: S,
    dest: Destination,
    attempt: Attempt,
    upstream: TcpStream,
    route: Route,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = client.config().clone();
    let Some(ca) = client.sandbox.ca.clone() else {
        return client.refused(
            attempt,
            "a credential rule covers this host, but the sandbox has no CA to intercept it".into(),
        );
    };
    let Some(tls) = config.upstream_tls.clone() else {
        return client.refused(
            attempt,
            "credential injection is not enabled on this proxy".into(),
        );
    };
    let server_config = match ca.server_config(dest.host()) {
        Ok(c) => c,
        Err(e) => {
            let error = format!("failed to issue a certificate: {e}");
            return client.finished(attempt, &route, Some(error));
        }
    };
    let activity = Activity::new();
    let accept =
        TlsAcceptor::from(server_config).accept(Metered::new(downstream, activity.clone(), None));
    let downstream = match tokio::time::timeout(config.header_read_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let error = format!("sandbox TLS handshake failed (does it trust its CA?): {e}");
            return client.finished(attempt, &route, Some(error));
        }
        Err(_) => {
            return client.finished(
                attempt,
                &route,
                Some("sandbox TLS handshake timed out".into()),
            );
        }
    };
    let upstream = Metered::new(upstream, activity.clone(), Some(route.counters.clone()));
    let relay = Arc::new(Relay {
        client: client.clone(),
        dest,
        upstream: Mutex::new(Upstream::Pending(Some((upstream, tls)))),
        injected: std::sync::Mutex::new(Vec::new()),
    });
    let service = {
        let relay = relay.clone();
        service_fn(move |req| {
            let relay = relay.clone();
            async move { Ok::<_, Infallible>(relay.handle(req).await) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(read_buffer(&config))
        .max_header_size(config.max_header_bytes)
        .max_headers(MAX_HEADERS);
    let connection = builder.serve_connection(TokioIo::new(downstream), service);
    let error = tokio::select! {
        served = connection => served.err().map(|e| e.to_string()),
        () = activity.idle(config.idle_timeout) => Some("idle timeout".to_owned()),
    };
    let mut route = route;
    let injected = std::mem::take(
        &mut *relay
            .injected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if !injected.is_empty() {
        route.rule = format!(
            "{}; credentials from rule {}",
            route.rule,
            injected.join(", ")
        );
    }
    client.finished(attempt, &route, error);
}

type UpstreamIo = Metered<TcpStream>;

enum Upstream {
    /// Not yet spoken to: the TLS handshake happens on the first request, so a failure can
    /// be told to the sandbox as an HTTP error.
    Pending(Option<(UpstreamIo, Arc<rustls::ClientConfig>)>),
    Open(SendRequest<Body>),
    Failed(String),
}

struct Relay {
    client: Arc<Client>,
    dest: Destination,
    upstream: Mutex<Upstream>,
    /// Names of the rules that injected headers, for the connection's event.
    injected: std::sync::Mutex<Vec<String>>,
}

impl Relay {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let host = match self.check_host(&req) {
            Ok(host) => host,
            Err(why) => {
                return message(
                    StatusCode::MISDIRECTED_REQUEST,
                    &format!("warren egress proxy: {why}"),
                );
            }
        };
        // A method that echoes the request would hand the credential back to the sandbox.
        if req.method() == Method::TRACE {
            return message(
                StatusCode::METHOD_NOT_ALLOWED,
                "warren egress proxy: TRACE is refused on connections that carry credentials",
            );
        }
        // The sandbox's rules now, not when the connection opened: an update or a deletion
        // applies to the next request.
        let Some(sandbox) = self
            .client
            .shared
            .lookup
            .lookup(self.client.peer.ip().to_canonical())
            .filter(|s| s.sandbox_id == self.client.sandbox.sandbox_id)
        else {
            return closed("the sandbox is gone");
        };
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let origin = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        parts.uri = match origin.parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "warren egress proxy: bad request target",
                );
            }
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, host);
        let target = RequestTarget {
            scheme: Scheme::Https,
            dest: &self.dest,
            path: &path,
        };
        let refused = |e: &dyn std::fmt::Display| {
            debug!(sandbox_id = %self.client.sandbox.sandbox_id, error = %e, "proxy: credential not injected");
            message(
                StatusCode::FORBIDDEN,
                &format!("warren egress proxy refused {}: {e}", self.dest),
            )
        };
        let has_body = !hyper::body::Body::is_end_stream(&body);
        let called = match callback::apply(
            &self.client,
            &sandbox,
            Scheme::Https,
            &self.dest,
            &mut parts,
            has_body,
        )
        .await
        {
            Ok(called) => called,
            Err(e) => return refused(&e),
        };
        let applied = match sandbox.credentials.apply(target, &mut parts.headers) {
            Ok(applied) => applied,
            Err(e) => return refused(&e),
        };
        {
            let mut injected = self
                .injected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for used in applied.rule.into_iter().chain(called) {
                if !injected.contains(&used) {
                    injected.push(used);
                }
            }
        }
        let body = match applied.aws {
            None => Either::Left(body),
            Some(aws) => match self.sign_aws(&aws, &mut parts, body).await {
                Ok(body) => body,
                Err(e) => return refused(&e),
            },
        };
        let req = Request::from_parts(parts, body);
        let mut upstream = self.upstream.lock().await;
        if let Upstream::Pending(pending) = &mut *upstream {
            let (io, tls) = pending.take().expect("pending upstream is taken once");
            *upstream = match self.open(io, tls).await {
                Ok(sender) => Upstream::Open(sender),
                Err(e) => Upstream::Failed(e),
            };
        }
        let sender = match &mut *upstream {
            Upstream::Open(sender) => sender,
            Upstream::Failed(e) => {
                return message(
                    StatusCode::BAD_GATEWAY,
                    &format!("warren egress proxy could not reach {}: {e}", self.dest),
                );
            }
            Upstream::Pending(_) => unreachable!("opened above"),
        };
        if sender.ready().await.is_err() {
            return closed("the upstream closed the connection");
        }
        match sender.send_request(req).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                let close = parts.headers.get_all(header::CONNECTION).iter().any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
                });
                strip_hop_by_hop(&mut parts.headers);
                if close {
                    // The upstream will not take another request: have the sandbox open a
                    // new connection for its next one.
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => closed(&format!("upstream {} failed: {e}", self.dest)),
        }
    }

    /// Signs a request for an AWS rule: the payload hash is the one the sandbox declared, or
    /// that of the body, read whole (at most [`MAX_SIGNED_BODY`]).
    async fn sign_aws(
        &self,
        aws: &AwsSigning,
        parts: &mut hyper::http::request::Parts,
        body: Incoming,
    ) -> Result<Body, String> {
        let (payload, body) = match Payload::declared(&parts.headers)? {
            Some(declared) => (declared, Either::Left(body)),
            None => {
                let limited = http_body_util::Limited::new(body, MAX_SIGNED_BODY);
                let bytes = limited
                    .collect()
                    .await
                    .map_err(|e| format!("the request body could not be read whole for AWS signing (at most {MAX_SIGNED_BODY} bytes): {e}"))?
                    .to_bytes();
                (Payload::of(&bytes), Either::Right(Full::new(bytes)))
            }
        };
        aws.sign(parts, &self.dest, &payload)?;
        Ok(body)
    }

    /// The request must be for the host (and port) the TLS session was opened for: its
    /// absolute-form authority, if any, and every Host header. The upstream then gets exactly
    /// one Host header, naming that host, so a front end that routes by Host cannot be steered
    /// elsewhere with the credential.
    fn check_host(&self, req: &Request<Incoming>) -> Result<HeaderValue, String> {
        let mut named: Vec<Authority> = req.uri().authority().cloned().into_iter().collect();
        for value in req.headers().get_all(header::HOST) {
            let authority = value
                .to_str()
                .ok()
                .and_then(|t| t.parse::<Authority>().ok())
                .ok_or("the Host header is not a host")?;
            named.push(authority);
        }
        for authority in &named {
            // A Host without a port names the host only (clients omit a default port).
            let port = authority.port_u16().unwrap_or(self.dest.port());
            let same = port == self.dest.port()
                && Destination::new(authority.host(), port)
                    .is_ok_and(|d| d.host() == self.dest.host());
            if !same {
                return Err(format!(
                    "this connection is for {}; the request names {authority}",
                    self.dest
                ));
            }
        }
        let host = match self.dest.port() {
            443 => self.dest.host().to_string(),
            _ => self.dest.to_string(),
        };
        HeaderValue::from_str(&host).map_err(|_| "the host is not a header value".to_owned())
    }

    async fn open(
        &self,
        io: UpstreamIo,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<SendRequest<Body>, String> {
        let name = match self.dest.host() {
            Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let config = self.client.config();
        let connect = TlsConnector::from(tls).connect(name, io);
        let stream = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("TLS with the upstream failed: {e}")),
            Err(_) => return Err("TLS with the upstream timed out".into()),
        };
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder
            .max_buf_size(read_buffer(config))
            .max_header_size(config.max_header_bytes)
            .max_headers(MAX_HEADERS);
        let (sender, connection) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("failed to start HTTP with the upstream: {e}"))?;
        let sandbox_id = self.client.sandbox.sandbox_id.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%sandbox_id, error = %e, "proxy: intercepted upstream connection ended");
            }
        });
        Ok(sender)
    }
}

fn closed(text: &str) -> Response<Body> {
    let mut response = message(
        StatusCode::BAD_GATEWAY,
        &format!("warren egress proxy: {text}"),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A stream whose first bytes were already read (a ClientHello read to learn the SNI), put
/// back in front of the rest.
pub(super) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
