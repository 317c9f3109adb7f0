//! A real network namespace (a `sleep` in its own), linked and firewalled as a sandbox's would
//! be. Needs root. Every packet stays on this machine: the only addresses used are the link's.

#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use warren_net::{HostNet, ProxyPorts, addrs_for, firewall};

struct Netns(Child);

impl Netns {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests need root: they create network namespaces and veth links"
        );
        let child = Command::new("unshare")
            .args(["--net", "sleep", "120"])
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare --net (util-linux) is needed");
        std::thread::sleep(Duration::from_millis(200));
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Runs a shell line inside the namespace; true if it succeeded.
    fn run(&self, line: &str) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-n", "bash", "-c", line])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn accepts(l: &TcpListener) -> usize {
    l.set_nonblocking(true).unwrap();
    std::iter::from_fn(|| l.accept().ok()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_namespace_reaches_the_proxy_ports_and_nothing_else_on_the_host() {
    let probe = TcpListener::bind("0.0.0.0:0").unwrap();
    let ports = ProxyPorts {
        proxy: TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        ..ProxyPorts::default()
    };
    let proxy = TcpListener::bind(("0.0.0.0", ports.proxy)).unwrap();
    let net = HostNet::open(ports).await.unwrap();
    let ns = Netns::new();
    // Above every uid slot a data dir hands out (under 65,536), so no daemon or other test
    // running beside this one owns it.
    let slot = 1_000_000;
    let a = net.attach(slot, ns.pid()).await.unwrap();
    assert_eq!(a, addrs_for(slot).unwrap());
    let (_, addrs) = ns.run("ip -4 -o addr show dev eth0");
    assert!(addrs.contains(&format!("{}/30", a.sandbox)), "{addrs}");
    let (_, v6) = ns.run("cat /proc/sys/net/ipv6/conf/all/disable_ipv6");
    assert_eq!(v6.trim(), "1", "IPv6 is off inside");

    // The proxy port on the host end of the link answers.
    let (ok, _) = ns.run(&format!(
        "timeout 3 bash -c 'echo hi > /dev/tcp/{}/{}'",
        a.host, ports.proxy
    ));
    assert!(ok, "the proxy port is reachable");
    assert_eq!(accepts(&proxy), 1);

    // Any other host port, on the link's address or the host's loopback seen from inside, is
    // dropped before it reaches a socket, and the firewall counts it.
    let before = firewall::dropped_packets().await.unwrap();
    let port = probe.local_addr().unwrap().port();
    for target in [a.host.to_string(), "127.0.0.1".into()] {
        let (ok, _) = ns.run(&format!(
            "timeout 2 bash -c 'echo hi > /dev/tcp/{target}/{port}'"
        ));
        assert!(!ok, "{target}:{port} was reachable");
    }
    assert_eq!(accepts(&probe), 0, "a host service saw a connection");
    let after = firewall::dropped_packets().await.unwrap();
    assert!(
        after > before,
        "the drop was not counted ({before} -> {after})"
    );

    net.detach(slot).await.unwrap();
    let (_, links) = ns.run("ip -o link");
    assert!(!links.contains("eth0"), "{links}");
    // Idempotent, and gc finds nothing left.
    net.detach(slot).await.unwrap();
    assert!(!net.gc(&Default::default()).await.unwrap().contains(&slot));
}
