//! The sandboxes' DNS server: answers from the host's resolver, filtered by each sandbox's
//! policy, over UDP and TCP.
//!
//! - `A`: the addresses the sandbox may reach (short TTL, so a policy change or a moved name
//!   is picked up soon); for the sandbox's own hostname, its own address, whatever the policy
//!   (as in any container: `hostname -f`, Java's `getLocalHost` and the like need it);
//! - `AAAA`: an empty NOERROR for a name the policy allows, as sandboxes have no IPv6 route and
//!   clients should fall back to `A` at once;
//! - a name the policy refuses, or one that resolves only to refused addresses: NXDOMAIN
//!   rather than REFUSED, so stub resolvers fail fast instead of trying another server;
//! - a name the host cannot resolve: NXDOMAIN; a lookup that times out: SERVFAIL;
//! - other types and classes, and opcodes other than QUERY: NOTIMP;
//! - a source address that is no sandbox's: REFUSED.
//!
//! Work is bounded: requests over [`MAX_MESSAGE`] bytes are not answered whole, at most
//! `max_in_flight` queries are resolved at once (further UDP queries are dropped, as a busy
//! server would), answers hold at most `max_answers` records, and TCP connections are capped
//! and closed when idle.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::policy::{Decision, normalize_name};
use crate::resolve::{Resolve, ResolveError, permitted_name_addresses};
use crate::sandbox::{SandboxLookup, SandboxPolicy};

/// Largest query read, over UDP or TCP; bigger ones get FORMERR (UDP) or a close (TCP).
pub const MAX_MESSAGE: usize = 4096;
/// Payload size offered in EDNS answers (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Pause after a failed `accept`/`recv`, so a persistent error (out of descriptors) does not
/// spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Limits and timings of the DNS server.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// TTL of `A` answers, in seconds.
    pub ttl: u32,
    /// Most `A` records in one answer.
    pub max_answers: usize,
    /// Most queries being resolved at once.
    pub max_in_flight: usize,
    /// Most open TCP connections.
    pub max_tcp_connections: usize,
    /// How long the host's resolver may take.
    pub resolve_timeout: Duration,
    /// How long a TCP connection may sit without a query.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            ttl: 30,
            max_answers: 8,
            max_in_flight: 256,
            max_tcp_connections: 64,
            resolve_timeout: Duration::from_secs(5),
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The DNS server. Cheap to clone; one instance serves every sandbox.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    config: DnsConfig,
    lookup: Arc<dyn SandboxLookup>,
    resolver: Arc<dyn Resolve>,
    in_flight: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// A server that finds sandboxes with `lookup` and resolves names with `resolver`.
    pub fn new(
        config: DnsConfig,
        lookup: Arc<dyn SandboxLookup>,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        let tcp_connections = Arc::new(Semaphore::new(config.max_tcp_connections));
        Self {
            inner: Arc::new(Inner {
                config,
                lookup,
                resolver,
                in_flight,
                tcp_connections,
            }),
        }
    }

    /// Answers UDP queries on `socket` until the task is dropped.
    pub async fn serve_udp(self, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (len, peer) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(err) => {
                    warn!(?err, "dns: failed to receive a query");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = self.inner.in_flight.clone().try_acquire_owned() else {
                debug!(%peer, "dns: too many queries in flight, dropping one");
                continue;
            };
            let query = buf[..len].to_vec();
            let (server, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(reply) = server.answer(peer.ip(), &query).await
                    && let Err(err) = socket.send_to(&reply, peer).await
                {
                    debug!(?err, %peer, "dns: failed to send an answer");
                }
            });
        }
    }

    /// Answers TCP queries (RFC 7766: each message behind a two-byte length) on `listener`
    /// until the task is dropped.
    pub async fn serve_tcp(self, listener: TcpListener) {
        loop {
            let Ok(permit) = self.inner.tcp_connections.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            let (stream, peer) = match listener.accept().await {
                Ok(got) => got,
                Err(err) => {
                    warn!(?err, "dns: failed to accept a TCP connection");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(err) = server.serve_tcp_connection(stream, peer).await {
                    debug!(?err, %peer, "dns: TCP connection ended");
                }
            });
        }
    }

    async fn serve_tcp_connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<()> {
        let idle = self.inner.config.tcp_idle_timeout;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let len = match tokio::time::timeout(idle, stream.read_u16()).await {
                Err(_) => return Ok(()),
                Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(len) => usize::from(len?),
            };
            if len > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "query too large",
                ));
            }
            tokio::time::timeout(idle, stream.read_exact(&mut buf[..len]))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query not read in time"))??;
            let reply = {
                let _permit = self
                    .inner
                    .in_flight
                    .acquire()
                    .await
                    .map_err(io::Error::other)?;
                self.answer(peer.ip(), &buf[..len]).await
            };
            let Some(reply) = reply else { return Ok(()) };
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                return Ok(());
            };
            stream.write_all(&reply_len.to_be_bytes()).await?;
            stream.write_all(&reply).await?;
        }
    }

    /// The encoded answer to the query `query` from `source`, or `None` when it gets no
    /// answer at all (too short to carry an id, or a response rather than a query).
    pub async fn answer(&self, source: IpAddr, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return None;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        let reply = match Message::from_vec(query) {
            Ok(request) => self.respond(source.to_canonical(), request).await,
            Err(_) => Message::error_msg(id, OpCode::Query, ResponseCode::FormErr),
        };
        match reply.to_vec() {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                debug!(?err, "dns: failed to encode an answer");
                Message::error_msg(id, reply.metadata.op_code, ResponseCode::ServFail)
                    .to_vec()
                    .ok()
            }
        }
    }

    async fn respond(&self, source: IpAddr, request: Message) -> Message {
        let meta = request.metadata;
        if meta.message_type != MessageType::Query {
            return Message::error_msg(meta.id, meta.op_code, ResponseCode::FormErr);
        }
        if meta.op_code != OpCode::Query {
            return Message::error_msg(meta.id, meta.op_code, ResponseCode::NotImp);
        }
        let [question] = request.queries.as_slice() else {
            return Message::error_msg(meta.id, meta.op_code, ResponseCode::FormErr);
        };
        let mut reply = Message::response(meta.id, OpCode::Query);
        reply.metadata.recursion_desired = meta.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_query(question.clone());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            reply.set_edns(edns);
        }
        let Some(sandbox) = self.inner.lookup.lookup(source) else {
            debug!(%source, "dns: query from an address that is no sandbox's");
            reply.metadata.response_code = ResponseCode::Refused;
            return reply;
        };
        let qtype = question.query_type();
        let code = self
            .answer_question(source, &sandbox, question, &mut reply)
            .await;
        debug!(sandbox_id = %sandbox.sandbox_id, %qtype, ?code, answers = reply.answers.len(), "dns: answered");
        reply.metadata.response_code = code;
        reply
    }

    /// Fills in the answers to `question` and returns the response code.
    async fn answer_question(
        &self,
        source: IpAddr,
        sandbox: &SandboxPolicy,
        question: &Query,
        reply: &mut Message,
    ) -> ResponseCode {
        if question.query_class() != DNSClass::IN {
            return ResponseCode::NotImp;
        }
        let Ok(name) = normalize_name(&question.name().to_ascii()) else {
            return ResponseCode::NXDomain;
        };
        if !sandbox.hostname.is_empty() && sandbox.hostname.eq_ignore_ascii_case(&name) {
            return match (question.query_type(), source) {
                (RecordType::A, IpAddr::V4(own)) => {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        self.inner.config.ttl,
                        RData::A(A(own)),
                    ));
                    ResponseCode::NoError
                }
                (RecordType::A | RecordType::AAAA, _) => ResponseCode::NoError,
                _ => ResponseCode::NotImp,
            };
        }
        match question.query_type() {
            RecordType::A => {}
            RecordType::AAAA => {
                return match sandbox.policy.decide_name(&name) {
                    Decision::Allow => ResponseCode::NoError,
                    Decision::Deny { .. } => ResponseCode::NXDomain,
                };
            }
            _ => return ResponseCode::NotImp,
        }
        let config = &self.inner.config;
        let found = permitted_name_addresses(
            &*self.inner.resolver,
            &sandbox.policy,
            &name,
            config.resolve_timeout,
        )
        .await;
        let addrs = match found {
            Ok(addrs) => addrs,
            Err(ResolveError::Timeout { .. }) => return ResponseCode::ServFail,
            Err(err) => {
                debug!(sandbox_id = %sandbox.sandbox_id, %name, %err, "dns: no answer");
                return ResponseCode::NXDomain;
            }
        };
        let v4 = addrs.into_iter().filter_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
        for v4 in v4.take(config.max_answers) {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                config.ttl,
                RData::A(A(v4)),
            ));
        }
        ResponseCode::NoError
    }
}
