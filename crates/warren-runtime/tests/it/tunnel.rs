//! `Driver::connect_port`: a TCP connection to a port on the sandbox's own loopback, carried
//! by its agent.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_driver::{Driver, ErrorKind};

use crate::support::{TestSandbox, driver};

/// A port the host itself does not listen on, so reaching it proves the sandbox's loopback.
const PORT: u16 = 39123;

const ECHO: &str = r#"
import os, socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 39123))
s.listen(16)
if os.fork() == 0:
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    def serve(c):
        while True:
            b = c.recv(65536)
            if not b:
                break
            c.sendall(b)
        c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_inside_the_sandbox_is_reached_and_a_closed_one_refused() {
    let sb = TestSandbox::new().await;
    // The server is listening when the script returns (it binds before forking).
    let out = sb.python(ECHO).await;
    assert_eq!(out.exit.code, 0, "{}", out.err());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", PORT))
            .await
            .is_err(),
        "the host's loopback has the port: the test proves nothing here"
    );

    let mut s = driver().connect_port(&sb.handle, PORT).await.unwrap();
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut s);
    let send = async {
        wr.write_all(&payload).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let recv = async {
        tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut echoed))
            .await
            .expect("the echo ends after the half-close")
            .unwrap();
    };
    tokio::join!(send, recv);
    assert!(
        echoed == payload,
        "the echo differs ({} bytes)",
        echoed.len()
    );

    match driver().connect_port(&sb.handle, PORT + 1).await {
        Err(warren_driver::DriverError::Agent(e)) => {
            assert_eq!(e.kind, ErrorKind::ConnectionRefused, "{e}");
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a closed port connected"),
    }
    sb.destroy().await;
}
