//! The address plan: slot `s` owns 100.64.0.0/10's `s`-th /30. The host end is `.1`, the
//! sandbox `.2`. Deterministic, so the proxy maps a source address back to a sandbox without a
//! table, and a restarted daemon finds its links by name.

use std::net::Ipv4Addr;

/// First address of the pool (100.64.0.0/10).
const POOL: u32 = u32::from_be_bytes([100, 64, 0, 0]);
/// /30s in the pool.
const SLOTS: u32 = 1 << 20;
/// Host-side link names: this prefix and the slot (at most 7 digits, within IFNAMSIZ).
const LINK_PREFIX: &str = "wr";

/// A sandbox's link addresses and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxAddrs {
    /// The slot.
    pub slot: u32,
    /// The host end of the link (where the proxy and DNS answer).
    pub host: Ipv4Addr,
    /// The sandbox's `eth0`.
    pub sandbox: Ipv4Addr,
    /// Name of the host end.
    pub host_link: String,
    /// Name of the sandbox end while it is still on the host, before it moves and becomes
    /// `eth0`.
    pub peer_link: String,
}

/// The addresses of a slot.
pub fn addrs_for(slot: u32) -> Option<SandboxAddrs> {
    if slot >= SLOTS {
        return None;
    }
    let base = POOL + slot * 4;
    Some(SandboxAddrs {
        slot,
        host: Ipv4Addr::from(base + 1),
        sandbox: Ipv4Addr::from(base + 2),
        host_link: format!("{LINK_PREFIX}{slot}"),
        peer_link: format!("{LINK_PREFIX}{slot}p"),
    })
}

/// The slot a sandbox address belongs to (only the sandbox end counts: the host end is never
/// a client).
pub fn slot_of(ip: Ipv4Addr) -> Option<u32> {
    let n = u32::from(ip).checked_sub(POOL)?;
    (n / 4 < SLOTS && n % 4 == 2).then_some(n / 4)
}

/// The slot of a host-side link name.
pub(crate) fn slot_of_link(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(LINK_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|s| *s < SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_disjoint_30s_and_back() {
        let a = addrs_for(0).unwrap();
        assert_eq!(
            (a.host, a.sandbox),
            (Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2))
        );
        let b = addrs_for(70_000).unwrap();
        assert_eq!(b.sandbox, Ipv4Addr::new(100, 68, 69, 194));
        assert_eq!(slot_of(b.sandbox), Some(70_000));
        assert_eq!(slot_of(b.host), None, "the host end is not a sandbox");
        assert_eq!(slot_of(Ipv4Addr::new(10, 0, 0, 2)), None);
        let last = addrs_for(SLOTS - 1).unwrap();
        assert_eq!(last.sandbox, Ipv4Addr::new(100, 127, 255, 254));
        assert!(addrs_for(SLOTS).is_none());
        assert!(
            a.host_link.len() < 16 && last.peer_link.len() < 16,
            "IFNAMSIZ"
        );
    }

    #[test]
    fn link_names_parse_strictly() {
        assert_eq!(slot_of_link("wr12"), Some(12));
        for bad in ["wr", "wr12p", "wrx", "eth0", "wr-1"] {
            assert_eq!(slot_of_link(bad), None, "{bad}");
        }
    }
}
