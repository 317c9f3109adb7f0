//! `/tunnel`: yamux over a real WebSocket, spoken the way the Python SDK's hand-written client
//! speaks it (§5.2): streams opened by WindowUpdate+SYN with delta 0 and the connect header sent
//! right behind it without waiting for an ACK, a DATA header and its payload in one message,
//! Ping+SYN expecting Ping+ACK with the same opaque value. The fake sandbox echoes on port 7
//! and refuses every other port.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::*;

const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 1;
const PING: u8 = 2;
const GO_AWAY: u8 = 3;
const SYN: u16 = 1;
const ACK: u16 = 2;
const FIN: u16 = 4;

fn frame(kind: u8, flags: u16, stream: u32, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, kind];
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn data(flags: u16, stream: u32, payload: &[u8]) -> Vec<u8> {
    frame(DATA, flags, stream, payload.len() as u32, payload)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal yamux client: what each stream received, which streams saw FIN, pongs.
#[derive(Default)]
struct Client {
    buf: Vec<u8>,
    received: HashMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    pongs: Vec<u32>,
    consumed: HashMap<u32, u32>,
    /// Window the server granted per stream beyond the initial 256 KiB, and bytes sent.
    granted: HashMap<u32, u32>,
    sent: HashMap<u32, u32>,
}

impl Client {
    fn window(&self, id: u32) -> u32 {
        let granted = self.granted.get(&id).copied().unwrap_or(0);
        256 * 1024 + granted - self.sent.get(&id).copied().unwrap_or(0)
    }

    /// Reads one message and parses the frames it completes; grants window back like the SDK
    /// (once 128 KiB of a stream were consumed).
    async fn pump(&mut self, ws: &mut Ws) {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server answers within 10 s")
            .expect("the socket stays open")
            .unwrap();
        let Message::Binary(b) = msg else {
            panic!("expected a binary message, got {msg:?}");
        };
        self.buf.extend_from_slice(&b);
        while self.buf.len() >= 12 {
            let h = &self.buf[..12];
            let (kind, flags) = (h[1], u16::from_be_bytes([h[2], h[3]]));
            let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            let body = if kind == DATA { len as usize } else { 0 };
            if self.buf.len() < 12 + body {
                break;
            }
            let payload: Vec<u8> = self.buf[12..12 + body].to_vec();
            self.buf.drain(..12 + body);
            match kind {
                DATA => {
                    self.received.entry(id).or_default().extend(&payload);
                    let c = self.consumed.entry(id).or_default();
                    *c += payload.len() as u32;
                    if *c >= 128 * 1024 {
                        let delta = std::mem::take(c);
                        let wu = frame(WINDOW_UPDATE, 0, id, delta, &[]);
                        ws.send(Message::Binary(wu.into())).await.unwrap();
                    }
                }
                WINDOW_UPDATE => *self.granted.entry(id).or_default() += len,
                PING if flags & ACK != 0 => self.pongs.push(len),
                GO_AWAY => panic!("the server went away with code {len}"),
                _ => {}
            }
            if flags & FIN != 0 {
                self.fin.push(id);
            }
        }
    }

    async fn until(&mut self, ws: &mut Ws, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            self.pump(ws).await;
        }
    }
}

async fn open(c: &mut Client, ws: &mut Ws, id: u32, version: u8, port: u16) {
    *c.sent.entry(id).or_default() += 3;
    let syn = frame(WINDOW_UPDATE, SYN, id, 0, &[]);
    ws.send(Message::Binary(syn.into())).await.unwrap();
    let mut header = vec![version];
    header.extend_from_slice(&port.to_be_bytes());
    ws.send(Message::Binary(data(0, id, &header).into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn tunnel_streams_echo_refuse_and_answer_pings_over_yamux() {
    let api = api().await;
    let sb = api.sandbox("tun").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Without a key there is no upgrade.
    let url = format!("ws://{addr}/dp/{}/tunnel", sb.id);
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err()
    );

    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-api-key", api.key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client::default();

    // Keepalive: the opaque value comes back.
    let ping = frame(PING, SYN, 0, 41, &[]);
    ws.send(Message::Binary(ping.into())).await.unwrap();
    c.until(&mut ws, |c| c.pongs.contains(&41)).await;

    // Stream 1: echo port, data sent right behind the header with no ACK awaited.
    open(&mut c, &mut ws, 1, 1, 7).await;
    ws.send(Message::Binary(data(0, 1, b"hello").into()))
        .await
        .unwrap();
    // Stream 3: nothing listens; stream 5: an unknown header version; stream 7: port 0.
    open(&mut c, &mut ws, 3, 1, 8080).await;
    open(&mut c, &mut ws, 5, 2, 7).await;
    open(&mut c, &mut ws, 7, 1, 0).await;
    c.until(&mut ws, |c| {
        c.received.get(&1).is_some_and(|r| r.len() >= 6)
            && [3, 5, 7].iter().all(|id| c.fin.contains(id))
    })
    .await;
    assert_eq!(c.received[&1], b"\x00hello", "status OK, then the echo");
    assert_eq!(c.received[&3], [0x02], "dial failed");
    assert_eq!(c.received[&5], [0x03], "unsupported version");
    assert_eq!(c.received[&7], [0x01], "port not allowed");

    // Stream 9: 4 MiB each way through the 256 KiB windows, both ends granting as they
    // consume; the echo must come back byte for byte.
    open(&mut c, &mut ws, 9, 1, 7).await;
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let mut sent = 0;
    while sent < big.len() {
        let n = (big.len() - sent).min(16 * 1024).min(c.window(9) as usize);
        if n == 0 {
            // The window is used up: only the server's updates (sent as it consumes) let the
            // transfer go on.
            c.pump(&mut ws).await;
            continue;
        }
        let msg = data(0, 9, &big[sent..sent + n]);
        ws.send(Message::Binary(msg.into())).await.unwrap();
        *c.sent.entry(9).or_default() += n as u32;
        sent += n;
    }
    assert!(
        c.granted[&9] > 0,
        "the server granted window beyond the first 256 KiB"
    );
    ws.send(Message::Binary(data(FIN, 9, &[]).into()))
        .await
        .unwrap();
    c.until(&mut ws, |c| c.fin.contains(&9)).await;
    let got = &c.received[&9];
    assert_eq!(got[0], 0x00);
    assert!(got[1..] == big[..], "the echo differs from what was sent");

    let go_away = frame(GO_AWAY, 0, 0, 0, &[]);
    ws.send(Message::Binary(go_away.into())).await.unwrap();
}
