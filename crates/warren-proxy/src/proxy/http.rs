//! The HTTP listeners: the explicit proxy port (absolute-form requests and CONNECT) and the
//! transparent HTTP port (origin-form requests routed by their Host header).
//!
//! Requests are parsed by hyper, with bounded headers and a header read timeout. A forwarded
//! request gets its own upstream connection (no pooling across requests or sandboxes), goes
//! out in origin form with hop-by-hop headers removed, and is reported as one event when its
//! response has been delivered.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Uri};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::meter::{Activity, Metered, tunnel};
use super::wire::{MAX_HEADERS, message, read_buffer, strip_hop_by_hop};
use super::{Attempt, Client, callback, mitm, upstream};
use crate::events::Via;
use crate::inject::{RequestTarget, Scheme};
use crate::policy::Destination;

/// Which HTTP listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// The explicit proxy port: absolute-form requests and CONNECT.
    Explicit,
    /// The transparent port: origin-form requests, destination from the Host header.
    Transparent,
}

type Body = Either<Incoming, Full<Bytes>>;

pub(super) async fn serve(client: Arc<Client>, stream: TcpStream, mode: Mode) {
    let config = client.config().clone();
    let activity = Activity::new();
    let io = TokioIo::new(Metered::new(stream, activity.clone(), None));
    let service = {
        let activity = activity.clone();
        let client = client.clone();
        service_fn(move |req| handle(client.clone(), activity.clone(), mode, req))
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(read_buffer(&config))
        .max_header_size(config.max_header_bytes)
        .max_headers(MAX_HEADERS);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::select! {
        served = connection => if let Err(err) = served {
            debug!(sandbox_id = %client.sandbox.sandbox_id, ?err, "proxy: HTTP connection ended");
        },
        () = activity.idle(config.idle_timeout) => {
            debug!(sandbox_id = %client.sandbox.sandbox_id, "proxy: HTTP connection idle, closed");
        }
    }
}

async fn handle(
    client: Arc<Client>,
    activity: Arc<Activity>,
    mode: Mode,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match (mode, req.method() == Method::CONNECT) {
        (Mode::Explicit, true) => connect(client, req).await,
        (Mode::Transparent, true) => message(
            StatusCode::METHOD_NOT_ALLOWED,
            "warren egress proxy: CONNECT is for the proxy port",
        ),
        (_, false) => forward(client, activity, mode, req).await,
    })
}

/// CONNECT: decide on the target, connect, answer 200, then splice the upgraded connection.
async fn connect(client: Arc<Client>, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return message(
            StatusCode::BAD_REQUEST,
            "warren egress proxy: CONNECT needs host:port",
        );
    };
    let Some(port) = authority.port_u16() else {
        return message(
            StatusCode::BAD_REQUEST,
            "warren egress proxy: CONNECT needs host:port",
        );
    };
    let attempt = Attempt::new(Via::Connect, authority.host(), port);
    let dest = match Destination::new(authority.host(), port) {
        Ok(dest) => dest,
        Err(err) => return refuse(&client, attempt, format!("invalid host: {err}")),
    };
    let attempt = attempt.named(&dest);
    let (upstream, route) = match upstream::open(&client, &dest).await {
        Ok(opened) => opened,
        Err(failure) => return fail(&client, attempt, &dest, failure),
    };
    let upgrade = hyper::upgrade::on(req);
    let intercept = client.sandbox.credentials.intercepts(&dest);
    tokio::spawn(async move {
        if intercept {
            match upgrade.await {
                Ok(upgraded) => {
                    let downstream = TokioIo::new(upgraded);
                    mitm::serve(client, downstream, dest, attempt, upstream, route).await;
                }
                Err(err) => {
                    let error = format!("failed to take over the client connection: {err}");
                    client.finished(attempt, &route, Some(error));
                }
            }
            return;
        }
        let activity = Activity::new();
        let mut upstream = Metered::new(upstream, activity.clone(), Some(route.counters.clone()));
        let result = match upgrade.await {
            Ok(upgraded) => {
                let mut downstream = TokioIo::new(upgraded);
                let idle = client.config().idle_timeout;
                tunnel(&mut downstream, &mut upstream, &activity, idle)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(err) => Err(format!("failed to take over the client connection: {err}")),
        };
        client.finished(attempt, &route, result.err());
    });
    Response::new(Either::Right(Full::default()))
}

/// A plain HTTP request: decide on its destination, send it upstream in origin form, relay
/// the response.
async fn forward(
    client: Arc<Client>,
    activity: Arc<Activity>,
    mode: Mode,
    req: Request<Incoming>,
) -> Response<Body> {
    let (via, target) = match mode {
        Mode::Explicit => (Via::HttpProxy, explicit_target(req.uri())),
        Mode::Transparent => {
            let port = client.config().transparent_http_port;
            (Via::TransparentHttp, transparent_target(&req, port))
        }
    };
    let (host, port) = match target {
        Ok(target) => target,
        Err(why) => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("warren egress proxy: {why}"),
            );
        }
    };
    let attempt = Attempt::new(via, host.clone(), port);
    let dest = match Destination::new(&host, port) {
        Ok(dest) => dest,
        Err(err) => return refuse(&client, attempt, format!("invalid host: {err}")),
    };
    let attempt = attempt.named(&dest);
    let path = req.uri().path().to_owned();
    let upstream_req = match origin_form(req, &dest, mode) {
        Ok(req) => req,
        Err(why) => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("warren egress proxy: {why}"),
            );
        }
    };
    let target = RequestTarget {
        scheme: Scheme::Http,
        dest: &dest,
        path: &path,
    };
    let credentials = &client.sandbox.credentials;
    let (mut parts, body) = upstream_req.into_parts();
    let has_body = !hyper::body::Body::is_end_stream(&body);
    let sandbox = client.sandbox.clone();
    let called =
        match callback::apply(&client, &sandbox, Scheme::Http, &dest, &mut parts, has_body).await {
            Ok(called) => called,
            Err(err) => return refuse(&client, attempt, err),
        };
    let mut upstream_req = Request::from_parts(parts, body);
    let mut injected = match credentials.apply(target, upstream_req.headers_mut()) {
        Ok(rule) => rule,
        Err(err) => return refuse(&client, attempt, err.to_string()),
    };
    if injected.rule.is_none() && !called.is_empty() {
        injected.rule = Some(called.join(", "));
    }
    if injected.rule.is_some() && upstream_req.method() == Method::TRACE {
        // It would echo the credential back to the sandbox.
        let rule = "TRACE is refused on requests that carry credentials".to_owned();
        return refuse(&client, attempt, rule);
    }
    let (upstream, mut route) = match upstream::open(&client, &dest).await {
        Ok(opened) => opened,
        Err(failure) => return fail(&client, attempt, &dest, failure),
    };
    if let Some(rule) = injected.rule {
        route.rule = format!("{}; credentials from rule {rule}", route.rule);
    }
    let config = client.config();
    let io = TokioIo::new(Metered::new(
        upstream,
        activity.clone(),
        Some(route.counters.clone()),
    ));
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder
        .max_buf_size(read_buffer(config))
        .max_header_size(config.max_header_bytes)
        .max_headers(MAX_HEADERS);
    let (mut sender, connection) = match builder.handshake(io).await {
        Ok(handshake) => handshake,
        Err(err) => {
            let error = format!("failed to start HTTP upstream: {err}");
            client.finished(attempt, &route, Some(error.clone()));
            return message(
                StatusCode::BAD_GATEWAY,
                &format!("warren egress proxy: {error}"),
            );
        }
    };
    // The connection task ends once the response has been delivered (the sender is dropped
    // below, so it carries no second request); the event is reported then.
    let idle = config.idle_timeout;
    let reporter = client.clone();
    let (route_done, watch) = (route.clone(), activity.clone());
    tokio::spawn(async move {
        let error = tokio::select! {
            done = connection => done.err().map(|e| e.to_string()),
            () = watch.idle(idle) => Some("idle timeout".to_owned()),
        };
        reporter.finished(attempt, &route_done, error);
    });
    match sender.send_request(upstream_req).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(err) => {
            let text = format!("warren egress proxy: upstream {dest} failed: {err}");
            message(StatusCode::BAD_GATEWAY, &text)
        }
    }
}

/// The destination of an absolute-form request on the proxy port.
fn explicit_target(uri: &Uri) -> Result<(String, u16), &'static str> {
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err("only http:// URLs are proxied; use CONNECT for https"),
        None => return Err("not a proxy request: send absolute-form URLs (http://host/path)"),
    }
    let host = uri.host().ok_or("the URL has no host")?;
    Ok((host.to_owned(), uri.port_u16().unwrap_or(80)))
}

/// The destination of a request on the transparent port: its Host (or absolute-form URL)
/// names the host; the port is the one the connection was redirected from, whatever the
/// Host header says.
fn transparent_target(req: &Request<Incoming>, port: u16) -> Result<(String, u16), &'static str> {
    if let Some(host) = req.uri().host() {
        return Ok((host.to_owned(), port));
    }
    let value = req
        .headers()
        .get(header::HOST)
        .ok_or("the request has no Host header")?;
    let text = value.to_str().map_err(|_| "the Host header is not text")?;
    let authority: Authority = text.parse().map_err(|_| "the Host header is not a host")?;
    Ok((authority.host().to_owned(), port))
}

/// The request as the upstream should see it: origin-form, HTTP/1.1, no hop-by-hop headers,
/// and exactly one Host header, naming the destination.
fn origin_form(
    req: Request<Incoming>,
    dest: &Destination,
    mode: Mode,
) -> Result<Request<Incoming>, &'static str> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // RFC 9112 §3.2.2: a proxy replaces Host with the absolute-form URL's authority. On the
    // transparent port the first Host header chose the destination: it alone goes upstream,
    // so a second copy cannot steer a front end elsewhere.
    let value = match (mode, parts.headers.get(header::HOST)) {
        (Mode::Transparent, Some(first)) => first.clone(),
        _ => {
            let host = match dest.port() {
                80 => dest.host().to_string(),
                _ => dest.to_string(),
            };
            HeaderValue::from_str(&host).map_err(|_| "the URL's host is not a header value")?
        }
    };
    parts.headers.insert(header::HOST, value);
    Ok(Request::from_parts(parts, body))
}

fn refuse(client: &Client, attempt: Attempt, rule: String) -> Response<Body> {
    let text = format!(
        "warren egress proxy refused {}:{}: {rule}",
        attempt.host, attempt.port
    );
    client.refused(attempt, rule);
    message(StatusCode::FORBIDDEN, &text)
}

fn fail(
    client: &Client,
    attempt: Attempt,
    dest: &Destination,
    failure: upstream::Failure,
) -> Response<Body> {
    let (status, text) = match &failure {
        upstream::Failure::Refused { rule } => (
            StatusCode::FORBIDDEN,
            format!("warren egress proxy refused {dest}: {rule}"),
        ),
        upstream::Failure::Unreachable { error, .. } => (
            StatusCode::BAD_GATEWAY,
            format!("warren egress proxy could not reach {dest}: {error}"),
        ),
    };
    client.failed(attempt, failure);
    message(status, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_targets() {
        let uri: Uri = "http://Example.com:8080/x?y".parse().unwrap();
        assert_eq!(explicit_target(&uri), Ok(("Example.com".to_owned(), 8080)));
        let uri: Uri = "http://[::1]/".parse().unwrap();
        assert_eq!(explicit_target(&uri), Ok(("[::1]".to_owned(), 80)));
        assert!(explicit_target(&"/x".parse().unwrap()).is_err());
        assert!(explicit_target(&"https://example.com/".parse().unwrap()).is_err());
    }
}
