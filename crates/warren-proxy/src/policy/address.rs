//! The address ranges no sandbox may reach, whatever its policy says.
//!
//! The proxy runs on the host, so anything the host can reach that the public internet cannot
//! (its loopback, the cloud metadata service, private networks, the sandboxes' own links in
//! 100.64.0.0/10) would be a way out of the sandbox. Only public unicast addresses pass, and
//! the documentation and benchmarking ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
//! 198.18.0.0/15, 2001:db8::/32, 3fff::/20): they reach no private infrastructure, and
//! networks that resolve public names to a local interceptor or mirror (a registry mirror in a
//! lab, a test bed) put it there. The host's own addresses are refused by the caller's list.
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the IPv4
//! address they carry, so `::ffff:127.0.0.1` is loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The AWS IMDS address over IPv6 (Nitro instances).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why `ip` is never reachable from a sandbox, or `None` for a public unicast address.
pub(crate) fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Some("cloud metadata address");
    }
    if ip == Ipv4Addr::BROADCAST {
        return Some("broadcast address");
    }
    match ip.octets() {
        [0, ..] => Some("unspecified address (0.0.0.0/8)"),
        [10, ..] => Some("private address (10.0.0.0/8)"),
        [100, b, ..] if b & 0xc0 == 64 => Some("shared address space (100.64.0.0/10)"),
        [127, ..] => Some("loopback address (127.0.0.0/8)"),
        [169, 254, ..] => Some("link-local address (169.254.0.0/16)"),
        [172, b, ..] if b & 0xf0 == 16 => Some("private address (172.16.0.0/12)"),
        [192, 0, 0, _] => Some("reserved address (192.0.0.0/24)"),
        [192, 88, 99, _] => Some("reserved address (192.88.99.0/24)"),
        [192, 168, ..] => Some("private address (192.168.0.0/16)"),
        [224..=239, ..] => Some("multicast address (224.0.0.0/4)"),
        [240..=255, ..] => Some("reserved address (240.0.0.0/4)"),
        _ => None,
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if ip == METADATA_V6 {
        return Some("cloud metadata address");
    }
    if ip.is_unspecified() {
        return Some("unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("loopback address (::1)");
    }
    let s = ip.segments();
    match s {
        // Deprecated IPv4-compatible form: some stacks still route it to the IPv4 address.
        [0, 0, 0, 0, 0, 0, _, _] => Some("reserved address (::/96)"),
        // NAT64: the host may translate it to the IPv4 address it embeds.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => v4_reason(embedded_v4(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Some("local-use NAT64 address (64:ff9b:1::/48)"),
        // 6to4 embeds the IPv4 address in the second and third groups.
        [0x2002, hi, lo, ..] => v4_reason(embedded_v4(hi, lo)),
        // IETF protocol assignments, Teredo (whose embedded address is obfuscated) among them.
        [0x2001, b, ..] if b < 0x200 => Some("reserved address (2001::/23)"),
        [a, ..] if a & 0xfe00 == 0xfc00 => Some("unique local address (fc00::/7)"),
        [a, ..] if a & 0xffc0 == 0xfe80 => Some("link-local address (fe80::/10)"),
        [a, ..] if a & 0xffc0 == 0xfec0 => Some("site-local address (fec0::/10)"),
        [a, ..] if a & 0xff00 == 0xff00 => Some("multicast address (ff00::/8)"),
        [0x5f00, ..] => Some("reserved address (5f00::/16)"),
        // Only 2000::/3 is allocated as global unicast; everything else is reserved.
        [a, ..] if a & 0xe000 != 0x2000 => Some("reserved address (outside 2000::/3)"),
        _ => None,
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        blocked_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn every_special_v4_range_is_blocked() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn public_v4_passes_and_range_edges_are_exact() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
        ] {
            assert!(!blocked(ip), "{ip} should pass");
        }
    }

    #[test]
    fn metadata_is_named() {
        assert_eq!(
            blocked_reason("169.254.169.254".parse().unwrap()),
            Some("cloud metadata address")
        );
        assert_eq!(
            blocked_reason("fd00:ec2::254".parse().unwrap()),
            Some("cloud metadata address")
        );
    }

    #[test]
    fn every_special_v6_range_is_blocked() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "fd00:ec2::254",
            "fc00::1",
            "fdff:ffff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b:1::1",
            "100::1",
            "5f00::1",
            "4000::1",
            "e000::1",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn v6_forms_of_v4_are_judged_by_the_v4_address() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:172.16.0.1",
            "::ffff:192.168.1.1",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
        for ip in ["::ffff:1.1.1.1", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(!blocked(ip), "{ip} should pass");
        }
    }

    #[test]
    fn public_v6_passes() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "2001:4860:4860::8888",
        ] {
            assert!(!blocked(ip), "{ip} should pass");
        }
    }
}
