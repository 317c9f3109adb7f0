//! The DNS server over UDP and TCP, on loopback.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use warren_proxy::dns::{DnsConfig, DnsServer};
use warren_proxy::policy::{Policy, PolicyConfig};
use warren_proxy::resolve::StaticResolver;
use warren_proxy::sandbox::{SandboxPolicy, SandboxTable};

use crate::harness::LOCAL;

/// A public address: the DNS server only names it, nothing connects to it.
const PUBLIC: Ipv4Addr = Ipv4Addr::new(93, 184, 215, 14);

fn server(known: bool) -> DnsServer {
    let resolver = StaticResolver::new()
        .with("allowed.test", [IpAddr::V4(PUBLIC), LOCAL])
        .with("denied.test", [IpAddr::V4(PUBLIC)])
        .with("rebind.test", [LOCAL, IpAddr::from([169, 254, 169, 254])]);
    let table = SandboxTable::new();
    if known {
        let pc = json!({"access_control": {"deny_list": ["denied.test"]}});
        // The loopback exemption is set, to show DNS answers never use it.
        let config = Arc::new(PolicyConfig::new().allow_loopback_for_tests(53));
        let policy = Policy::from_proxy_config(Some(&pc), config).unwrap();
        table.insert(LOCAL, SandboxPolicy::new("sb-dns", policy));
    }
    DnsServer::new(DnsConfig::default(), Arc::new(table), Arc::new(resolver))
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        qtype,
    ));
    msg.to_vec().unwrap()
}

async fn ask_udp(server: &DnsServer, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind((LOCAL, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.clone().serve_udp(socket));
    let client = UdpSocket::bind((LOCAL, 0)).await.unwrap();
    let q = query(name, qtype);
    client.send_to(&q, addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.recv_from(&mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, u16::from_be_bytes([q[0], q[1]]));
    reply
}

fn a_records(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn allowed_names_get_their_permitted_a_records() {
    let reply = ask_udp(&server(true), "allowed.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    // The loopback address the name also resolves to is left out.
    assert_eq!(a_records(&reply), vec![PUBLIC]);
    assert!(reply.answers.iter().all(|r| r.ttl <= 60));
}

#[tokio::test]
async fn denied_and_rebinding_names_get_nxdomain() {
    let s = server(true);
    let reply = ask_udp(&s, "denied.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.answers.is_empty());
    let reply = ask_udp(&s, "rebind.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = ask_udp(&s, "localhost.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn aaaa_is_empty_and_other_types_are_not_implemented() {
    let s = server(true);
    let reply = ask_udp(&s, "allowed.test.", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    let reply = ask_udp(&s, "denied.test.", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = ask_udp(&s, "allowed.test.", RecordType::MX).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
}

#[tokio::test]
async fn unknown_sources_are_refused() {
    let reply = ask_udp(&server(false), "allowed.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty());
}

#[tokio::test]
async fn malformed_queries_get_formerr_or_nothing() {
    let s = server(true);
    // Too short to carry an id: no answer.
    assert!(s.answer(LOCAL, &[1, 2, 3]).await.is_none());
    // A response, not a query: no answer (no reflection loops).
    let mut q = query("allowed.test.", RecordType::A);
    q[2] |= 0x80;
    assert!(s.answer(LOCAL, &q).await.is_none());
    // A header followed by garbage.
    let mut bad = query("allowed.test.", RecordType::A);
    bad.truncate(14);
    let reply = Message::from_vec(&s.answer(LOCAL, &bad).await.unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
}

#[tokio::test]
async fn tcp_queries_are_answered() {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server(true).serve_tcp(listener));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for (name, code) in [
        ("allowed.test.", ResponseCode::NoError),
        ("denied.test.", ResponseCode::NXDomain),
    ] {
        let q = query(name, RecordType::A);
        stream
            .write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&q).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let reply = Message::from_vec(&buf).unwrap();
        assert_eq!(reply.metadata.response_code, code, "{name}");
    }
}

#[tokio::test]
async fn a_sandbox_resolves_its_own_hostname_to_its_own_address_whatever_its_policy() {
    let resolver = StaticResolver::new().with("sb-self", [IpAddr::V4(PUBLIC)]);
    let table = SandboxTable::new();
    // A policy that allows no name at all.
    let pc = json!({"access_control": {"allow_list": ["only.test"]}});
    let policy = Policy::from_proxy_config(Some(&pc), Arc::new(PolicyConfig::new())).unwrap();
    let mut sandbox = SandboxPolicy::new("sb-dns", policy);
    sandbox.hostname = "sb-self".into();
    table.insert(LOCAL, sandbox);
    let server = DnsServer::new(DnsConfig::default(), Arc::new(table), Arc::new(resolver));
    let IpAddr::V4(own) = LOCAL else {
        panic!("the harness's address is IPv4")
    };
    // Any case, with or without the root's dot; the host's resolver is not asked.
    for name in ["sb-self.", "SB-Self"] {
        let reply = ask_udp(&server, name, RecordType::A).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(a_records(&reply), vec![own], "{name}");
    }
    let reply = ask_udp(&server, "sb-self.", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "{reply:?}");
    let reply = ask_udp(&server, "sb-self.", RecordType::MX).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    // Other names still follow the policy.
    let reply = ask_udp(&server, "sb-other.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}
