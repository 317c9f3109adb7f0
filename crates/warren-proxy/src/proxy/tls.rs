//! The transparent TLS listener: the SNI of the ClientHello names the destination.
//!
//! The proxy does not terminate TLS here. It reads the ClientHello, parsing it with rustls'
//! `Acceptor` while keeping a copy of every byte, decides by the SNI, then replays the bytes
//! to the upstream and splices the two connections. The client's TLS session is thus with
//! the real server, which proves (by its certificate) that it is the host the SNI named.

use std::io;
use std::sync::Arc;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::meter::{Activity, Metered, tunnel};
use super::{Attempt, Client, mitm, upstream};
use crate::events::Via;
use crate::policy::Destination;

/// The start of a TLS connection, as read from the client.
#[derive(Debug)]
struct ClientHello {
    /// The SNI host name, if the client sent one (rustls ignores IP-address SNI values).
    server_name: Option<String>,
    /// Every byte read, to replay to the upstream.
    bytes: Vec<u8>,
}

pub(super) async fn serve(client: Arc<Client>, mut stream: TcpStream) {
    let config = client.config();
    let port = config.transparent_tls_port;
    let read = read_client_hello(&mut stream, config.max_header_bytes);
    let hello = match tokio::time::timeout(config.header_read_timeout, read).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(err)) => {
            client.refused(
                Attempt::new(Via::TransparentTls, "", port),
                format!("no TLS ClientHello: {err}"),
            );
            return;
        }
        Err(_) => {
            let rule = "no TLS ClientHello: timed out".to_owned();
            client.refused(Attempt::new(Via::TransparentTls, "", port), rule);
            return;
        }
    };
    let Some(sni) = hello.server_name else {
        let rule = "no SNI in the TLS ClientHello".to_owned();
        client.refused(Attempt::new(Via::TransparentTls, "", port), rule);
        return;
    };
    let attempt = Attempt::new(Via::TransparentTls, sni.clone(), port);
    let dest = match Destination::new(&sni, port) {
        Ok(dest) => dest,
        Err(err) => return client.refused(attempt, format!("invalid SNI: {err}")),
    };
    let attempt = attempt.named(&dest);
    let (upstream, route) = match upstream::open(&client, &dest).await {
        Ok(opened) => opened,
        Err(failure) => return client.failed(attempt, failure),
    };
    if client.sandbox.credentials.intercepts(&dest) {
        let downstream = mitm::Prefixed::new(hello.bytes, stream);
        return mitm::serve(client, downstream, dest, attempt, upstream, route).await;
    }
    let activity = Activity::new();
    let mut upstream = Metered::new(upstream, activity.clone(), Some(route.counters.clone()));
    let result = match upstream.write_all(&hello.bytes).await {
        Ok(()) => tunnel(&mut stream, &mut upstream, &activity, config.idle_timeout).await,
        Err(err) => Err(err),
    };
    client.finished(attempt, &route, result.err().map(|e| e.to_string()));
}

/// Reads from `stream` until a whole ClientHello has arrived (it may span several records
/// and reads), at most `max` bytes.
async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> io::Result<ClientHello> {
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if bytes.len() + n > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello too large",
            ));
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ClientHello not accepted",
                ));
            }
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let server_name = accepted.client_hello().server_name().map(str::to_owned);
                return Ok(ClientHello { server_name, bytes });
            }
            Err((err, _alert)) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello for `example.com`, split into two records.
    fn hello_records(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([0u8; 32]); // random
        body.push(0); // session id
        body.extend([0x00, 0x02, 0xc0, 0x2f]); // one cipher suite
        body.extend([0x01, 0x00]); // null compression
        let mut exts = Vec::new();
        if let Some(sni) = sni {
            let name = sni.as_bytes();
            let n = u16::try_from(name.len()).unwrap();
            exts.extend([0x00, 0x00]);
            exts.extend((n + 5).to_be_bytes());
            exts.extend((n + 3).to_be_bytes());
            exts.push(0);
            exts.extend(n.to_be_bytes());
            exts.extend(name);
        }
        // signature_algorithms, which rustls requires.
        exts.extend([0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x01]);
        body.extend(u16::try_from(exts.len()).unwrap().to_be_bytes());
        body.extend(exts);
        let mut msg = vec![0x01, 0];
        msg.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        msg.extend(body);
        let (a, b) = msg.split_at(10);
        let mut out = Vec::new();
        for part in [a, b] {
            out.extend([0x16, 0x03, 0x01]);
            out.extend(u16::try_from(part.len()).unwrap().to_be_bytes());
            out.extend(part);
        }
        out
    }

    #[tokio::test]
    async fn sni_is_read_and_every_byte_kept() {
        let records = hello_records(Some("Example.com"));
        let mut reader = &records[..];
        let hello = read_client_hello(&mut reader, 64 * 1024).await.unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.bytes, records);
    }

    #[tokio::test]
    async fn no_sni_is_reported() {
        let records = hello_records(None);
        let hello = read_client_hello(&mut &records[..], 64 * 1024)
            .await
            .unwrap();
        assert_eq!(hello.server_name, None);
    }

    #[tokio::test]
    async fn garbage_and_oversize_are_errors() {
        let garbage = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec();
        assert!(
            read_client_hello(&mut &garbage[..], 64 * 1024)
                .await
                .is_err()
        );
        let records = hello_records(Some("example.com"));
        assert!(read_client_hello(&mut &records[..], 20).await.is_err());
        assert!(
            read_client_hello(&mut &records[..10], 64 * 1024)
                .await
                .is_err()
        );
    }
}
