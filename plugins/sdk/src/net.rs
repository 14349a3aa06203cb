//! Source-address checks: parse a request's `source`, match CIDR blocks, recognise RFC 1918.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are treated as the IPv4 address they
//! carry, so a dual-stack listener cannot be used to slip past an IPv4 rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The three private ranges of RFC 1918: 10/8, 172.16/12, 192.168/16.
pub const RFC1918: [Cidr; 3] = [
    Cidr::v4(Ipv4Addr::new(10, 0, 0, 0), 8),
    Cidr::v4(Ipv4Addr::new(172, 16, 0, 0), 12),
    Cidr::v4(Ipv4Addr::new(192, 168, 0, 0), 16),
];

/// Parses a source address: `203.0.113.7`, `2001:db8::1`, and, leniently, with a port
/// (`203.0.113.7:5000`, `[2001:db8::1]:5000`). IPv4-mapped IPv6 becomes IPv4.
pub fn parse_source(source: &str) -> Option<IpAddr> {
    let s = source.trim();
    let ip = if let Ok(ip) = IpAddr::from_str(s) {
        ip
    } else if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || is_port_suffix(tail)) {
            return None;
        }
        IpAddr::V6(Ipv6Addr::from_str(addr).ok()?)
    } else {
        let (addr, port) = s.rsplit_once(':')?;
        if !is_port_suffix(&format!(":{port}")) {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from_str(addr).ok()?)
    };
    Some(canonical(ip))
}

fn is_port_suffix(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True if `ip` is in one of the RFC 1918 private ranges. Loopback (127/8), link-local and
/// IPv6 unique-local addresses are not RFC 1918.
pub fn is_rfc1918(ip: IpAddr) -> bool {
    RFC1918.iter().any(|c| c.contains(ip))
}

/// An address block: a network address and a prefix length. Host bits given in the text are
/// cleared (`198.51.100.10/24` is `198.51.100.0/24`); a bare address is a single-host block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// An IPv4 block (const, for tables like [`RFC1918`]). `prefix` above 32 counts as 32.
    pub const fn v4(addr: Ipv4Addr, prefix: u8) -> Cidr {
        let prefix = if prefix > 32 { 32 } else { prefix };
        let bits = addr.to_bits() & mask32(prefix);
        Cidr {
            network: IpAddr::V4(Ipv4Addr::from_bits(bits)),
            prefix,
        }
    }

    /// An IPv6 block. `prefix` above 128 counts as 128.
    pub const fn v6(addr: Ipv6Addr, prefix: u8) -> Cidr {
        let prefix = if prefix > 128 { 128 } else { prefix };
        let bits = addr.to_bits() & mask128(prefix);
        Cidr {
            network: IpAddr::V6(Ipv6Addr::from_bits(bits)),
            prefix,
        }
    }

    /// Parses `addr/prefix` or a bare `addr`.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p))
                if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (a, Some(p.parse::<u8>().map_err(|_| err())?))
            }
            Some(_) => return Err(err()),
            None => (s, None),
        };
        match IpAddr::from_str(addr).map_err(|_| err())? {
            IpAddr::V4(v4) => match prefix.unwrap_or(32) {
                p @ 0..=32 => Ok(Cidr::v4(v4, p)),
                _ => Err(err()),
            },
            IpAddr::V6(v6) => match prefix.unwrap_or(128) {
                p @ 0..=128 => Ok(Cidr::v6(v6, p)),
                _ => Err(err()),
            },
        }
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True if `ip` lies in the block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & mask32(self.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                ip.to_bits() & mask128(self.prefix) == net.to_bits()
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Text that is not a CIDR block; holds the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an address block like 198.51.100.0/24",
            self.0
        )
    }
}

impl std::error::Error for CidrError {}

/// Parses a comma-separated list of blocks (`10.0.0.0/8, 2001:db8::/32`); empty entries are
/// skipped.
pub fn parse_cidr_list(list: &str) -> Result<Vec<Cidr>, CidrError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidr::parse)
        .collect()
}

const fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

const fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        parse_source(s).unwrap()
    }

    #[test]
    fn sources_parse_with_or_without_port() {
        assert_eq!(
            parse_source("203.0.113.7"),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        );
        assert_eq!(
            parse_source(" 203.0.113.7:5000 "),
            parse_source("203.0.113.7")
        );
        assert_eq!(
            parse_source("[2001:db8::1]:22"),
            parse_source("2001:db8::1")
        );
        assert_eq!(parse_source("[2001:db8::1]"), parse_source("2001:db8::1"));
        assert_eq!(parse_source("::ffff:10.1.2.3"), parse_source("10.1.2.3"));
        for bad in [
            "",
            "host.example",
            "203.0.113.7:",
            "203.0.113.7:99999",
            "[::1]x",
            "1.2.3.4.5",
            "2001:db8::1:22x",
        ] {
            assert_eq!(parse_source(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr::parse("198.51.100.10/32").unwrap();
        assert!(c.contains(ip("198.51.100.10")));
        assert!(!c.contains(ip("198.51.100.11")));
        let net = Cidr::parse("198.51.100.77/24").unwrap();
        assert_eq!(net.to_string(), "198.51.100.0/24");
        assert!(net.contains(ip("198.51.100.200")) && !net.contains(ip("198.51.101.1")));
        assert!(Cidr::parse("0.0.0.0/0").is_ok_and(|c| c.contains(ip("8.8.8.8"))));
        assert!(Cidr::parse("203.0.113.42").is_ok_and(|c| c.prefix() == 32));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")) && !RFC1918[0].contains(ip("2001:db8::1")));
        assert!(RFC1918[0].contains(ip("::ffff:10.9.9.9")));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "::/129",
            "10.0.0.0/+8",
            "x/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_cidr_list("10.0.0.0/8, ,192.0.2.1").map(|l| l.len()),
            Ok(2)
        );
        assert!(parse_cidr_list("10.0.0.0/8,nope").is_err());
    }

    #[test]
    fn rfc1918_edges() {
        for private in [
            "10.0.0.0",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
        ] {
            assert!(is_rfc1918(ip(private)), "{private}");
        }
        for public in [
            "127.0.0.1",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.1.1",
            "169.254.1.1",
            "fd00::1",
            "::1",
        ] {
            assert!(!is_rfc1918(ip(public)), "{public}");
        }
    }
}
