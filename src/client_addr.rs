//! Which address a request comes from. The address is part of the code,
//! so a header is believed only when the TCP peer is a configured proxy;
//! anyone else's `X-Real-IP` or `X-Forwarded-For` is ignored.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::teapot::Reason;

/// The header a trusted proxy puts the client address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// One address, as nginx's `proxy_set_header X-Real-IP $remote_addr`.
    XRealIp,
    /// A list of hops; the right-most one that is not a trusted proxy counts.
    XForwardedFor,
}

impl ClientIpHeader {
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XRealIp => "x-real-ip",
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AddrPolicy {
    pub trusted_proxies: Vec<IpNet>,
    pub header: ClientIpHeader,
}

impl AddrPolicy {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from `peer` carrying `values` of
    /// the configured header (all occurrences, in order). A trusted proxy
    /// that sends no header is itself the client (a local `curl`).
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<IpAddr, Reason> {
        // `::ffff:127.0.0.1` must match `127.0.0.1/32`, so compare canonical forms.
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return Ok(peer);
        }
        let values: Vec<&[u8]> = values.collect();
        if values.is_empty() {
            return Ok(peer);
        }
        match self.header {
            ClientIpHeader::XRealIp => match values.as_slice() {
                [one] => parse_addr(one),
                _ => Err(Reason::BadAddressHeader),
            },
            ClientIpHeader::XForwardedFor => self.rightmost_untrusted(&values),
        }
    }

    fn rightmost_untrusted(&self, values: &[&[u8]]) -> Result<IpAddr, Reason> {
        let mut hops = Vec::new();
        for value in values {
            let text = std::str::from_utf8(value).map_err(|_| Reason::BadAddressHeader)?;
            for hop in text.split(',') {
                hops.push(parse_addr(hop.as_bytes())?);
            }
        }
        let first = *hops.first().ok_or(Reason::BadAddressHeader)?;
        Ok(hops
            .into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(first))
    }
}

fn parse_addr(raw: &[u8]) -> Result<IpAddr, Reason> {
    let text = std::str::from_utf8(raw).map_err(|_| Reason::BadAddressHeader)?;
    let ip: IpAddr = text.trim().parse().map_err(|_| Reason::BadAddressHeader)?;
    Ok(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(header: ClientIpHeader) -> AddrPolicy {
        AddrPolicy {
            trusted_proxies: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.9.0.0/16".parse().unwrap(),
            ],
            header,
        }
    }

    fn addr(p: &AddrPolicy, peer: &str, values: &[&str]) -> Result<String, Reason> {
        p.client_addr(peer.parse().unwrap(), values.iter().map(|v| v.as_bytes()))
            .map(|ip| ip.to_string())
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let p = policy(ClientIpHeader::XRealIp);
        assert_eq!(
            addr(&p, "203.0.113.9", &["198.51.100.1"]),
            Ok("203.0.113.9".into())
        );
        assert_eq!(
            addr(&p, "203.0.113.9", &["garbage"]),
            Ok("203.0.113.9".into())
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let p = policy(ClientIpHeader::XRealIp);
        assert_eq!(
            addr(&p, "127.0.0.1", &["198.51.100.1"]),
            Ok("198.51.100.1".into())
        );
        assert_eq!(
            addr(&p, "::ffff:127.0.0.1", &[" 2001:db8::1 "]),
            Ok("2001:db8::1".into())
        );
        assert_eq!(addr(&p, "127.0.0.1", &[]), Ok("127.0.0.1".into()));
        assert_eq!(
            addr(&p, "127.0.0.1", &["nope"]),
            Err(Reason::BadAddressHeader)
        );
        assert_eq!(
            addr(&p, "127.0.0.1", &["1.1.1.1", "2.2.2.2"]),
            Err(Reason::BadAddressHeader)
        );
    }

    #[test]
    fn mapped_addresses_are_written_as_ipv4() {
        let p = policy(ClientIpHeader::XRealIp);
        assert_eq!(
            addr(&p, "::ffff:198.51.100.7", &[]),
            Ok("198.51.100.7".into())
        );
        assert_eq!(
            addr(&p, "127.0.0.1", &["::ffff:198.51.100.7"]),
            Ok("198.51.100.7".into())
        );
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_untrusted_hop() {
        let p = policy(ClientIpHeader::XForwardedFor);
        assert_eq!(
            addr(&p, "127.0.0.1", &["6.6.6.6, 198.51.100.1, 10.9.1.1"]),
            Ok("198.51.100.1".into())
        );
        assert_eq!(
            addr(&p, "127.0.0.1", &["6.6.6.6", "198.51.100.1"]),
            Ok("198.51.100.1".into())
        );
        assert_eq!(
            addr(&p, "127.0.0.1", &["10.9.0.5, 10.9.1.1"]),
            Ok("10.9.0.5".into())
        );
        assert_eq!(
            addr(&p, "127.0.0.1", &["1.1.1.1, bogus"]),
            Err(Reason::BadAddressHeader)
        );
    }
}
