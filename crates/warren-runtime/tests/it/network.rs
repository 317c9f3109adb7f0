//! Sandboxes linked to the host (`proxied` mode): the link, the resolver and the proxy
//! environment, and that nothing of a sandbox outlives its deletion. Other tests run at the same
//! time on the same host, so what is counted is what belongs to these tests' own sandboxes.

use std::sync::Arc;

use warren_net::{HostNet, ProxyPorts};
use warren_runtime::{JailConfig, JailDriver, SandboxHandle, SandboxSpec};
use warren_types::{ImageRef, Limits, SandboxId};

use crate::support::{bash, bin_dir, collect, data_dir, driver};

/// A driver of its own with the network enabled (the shared one stays `none`).
async fn linked_driver() -> Arc<JailDriver> {
    // The shared driver builds the default image once per binary.
    let _ = driver();
    let mut cfg = JailConfig::new(data_dir(), &bin_dir());
    cfg.pool_bytes = 16 << 30;
    let d = JailDriver::open(cfg).expect("open the jail driver");
    d.enable_network(
        HostNet::open(ProxyPorts::default())
            .await
            .expect("install the sandbox firewall (needs nft) and open netlink"),
        Vec::new(),
    );
    Arc::new(d)
}

async fn sh(d: &JailDriver, h: &SandboxHandle, script: &str) -> String {
    let mut conn = d.connect(h).await.expect("connect to agent");
    conn.send(&warren_proto::Request::Exec(warren_proto::ExecSpec {
        argv: bash(script),
        env: h.env.clone(),
        ..Default::default()
    }))
    .await
    .unwrap();
    collect(&mut conn).await.out()
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::generate(),
        image: ImageRef::default_image(),
        limits: Limits::default(),
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes: Vec::new(),
    }
}

fn link_exists(slot: u32) -> bool {
    std::path::Path::new(&format!("/sys/class/net/wr{slot}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_sandbox_has_eth0_the_resolver_and_the_proxy_in_its_environment() {
    let d = linked_driver().await;
    let h = d.create(&spec()).await.expect("create a linked sandbox");
    assert!(link_exists(h.slot), "no host link for slot {}", h.slot);
    let host = warren_net::host_address(h.slot).unwrap();
    let proxy = format!("http://{host}:{}", ProxyPorts::default().proxy);
    assert!(
        h.env.contains(&("HTTPS_PROXY".into(), proxy.clone())),
        "{:?}",
        h.env
    );
    let out = sh(
        &d,
        &h,
        "grep -c eth0 /proc/net/dev; cat /etc/resolv.conf; echo $HTTPS_PROXY; awk 'NR>1 && $2==\"00000000\" {print $1}' /proc/net/route",
    )
    .await;
    assert!(out.starts_with("1\n"), "{out}");
    assert!(out.contains(&format!("nameserver {host}")), "{out}");
    assert!(out.contains(&proxy), "{out}");
    assert!(out.contains("eth0"), "no default route through eth0: {out}");
    d.destroy(&h.id, Some(&h)).await.unwrap();
    assert!(!link_exists(h.slot), "the host link outlived the sandbox");
}

/// What the host still holds for a sandbox: its link, network namespace (through its agent),
/// cgroups, mounts and subvolumes.
fn leftovers(h: &SandboxHandle) -> Vec<String> {
    let id = h.id.to_string();
    let mut found = Vec::new();
    if link_exists(h.slot) {
        found.push(format!("link wr{}", h.slot));
    }
    if warren_runtime::jail_driver::process_start_time(h.pid) == Some(h.start_time) {
        found.push(format!("agent {} (and its network namespace)", h.pid));
    }
    let cgroups = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "4", "-name", &id])
        .output()
        .unwrap();
    let cgroups = String::from_utf8_lossy(&cgroups.stdout).into_owned();
    if !cgroups.trim().is_empty() {
        found.push(format!("cgroups {cgroups}"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&id))
            .map(|l| format!("mount {l}")),
    );
    let subvolumes = std::process::Command::new("btrfs")
        .args(["subvolume", "list"])
        .arg(data_dir().join("fs"))
        .output()
        .unwrap();
    found.extend(
        String::from_utf8_lossy(&subvolumes.stdout)
            .lines()
            .filter(|l| l.contains(&id))
            .map(|l| format!("subvolume {l}")),
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_linked_sandboxes_leave_nothing_behind() {
    let d = linked_driver().await;
    let mut handles = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        // Four at a time: the host has two CPUs, other tests run too.
        while tasks.len() >= 4 {
            handles.push(tasks.join_next().await.unwrap().unwrap());
        }
        let d = d.clone();
        tasks.spawn(async move {
            let h = d.create(&spec()).await.expect("create");
            d.destroy(&h.id, Some(&h)).await.expect("destroy");
            h
        });
    }
    while let Some(h) = tasks.join_next().await {
        handles.push(h.unwrap());
    }
    assert_eq!(handles.len(), 200);
    let left: Vec<String> = handles.iter().flat_map(leftovers).collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
    let firewall = std::process::Command::new("nft")
        .args(["list", "table", "inet", "warren"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&firewall.stdout);
    for h in &handles {
        assert!(
            !rules.contains(&format!("wr{}\"", h.slot)),
            "a rule names sandbox link wr{}",
            h.slot
        );
    }
}
