//! DialTcp.

use std::io::{Read, Write};
use std::net::TcpListener;

use warren_proto::{ErrorKind, Request, Response};

use crate::support::Agent;

#[test]
fn dial_tcp_carries_bytes_both_ways() {
    let agent = Agent::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping?");
        s.write_all(b"pong!").unwrap();
        // Closing the server side ends the tunnel.
    });
    let mut c = agent.conn();
    c.send(&Request::DialTcp { port });
    assert_eq!(c.recv(), Some(Response::Ok));
    c.s.write_all(b"ping?").unwrap();
    let mut got = Vec::new();
    c.s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"pong!");
    server.join().unwrap();
}

#[test]
fn dial_refused() {
    let agent = Agent::start();
    // Bind then drop to get a port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = agent.conn();
    c.send(&Request::DialTcp { port });
    match c.recv() {
        Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dial_reaches_a_server_bound_to_ipv6_loopback_only() {
    let agent = Agent::start();
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        return; // no IPv6 loopback here
    };
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"six").unwrap();
    });
    let mut c = agent.conn();
    c.send(&Request::DialTcp { port });
    assert_eq!(c.recv(), Some(Response::Ok));
    let mut got = Vec::new();
    c.s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"six");
    server.join().unwrap();
}

#[test]
fn dial_port_zero_is_a_bad_request() {
    let agent = Agent::start();
    let mut c = agent.conn();
    c.send(&Request::DialTcp { port: 0 });
    match c.recv() {
        Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
}
