//! Where outbound webhooks may go: the address rules (no private, loopback, link-local,
//! unique-local, multicast or unspecified address, v4 or v6, v4-mapped included, unless the
//! server allows private targets), the check of an endpoint's URL when it is registered, and
//! the HTTP agent that delivers. The agent resolves through [`Guard`], which hands the
//! connector only the addresses it checked: the connection goes to a checked address, never to
//! a second lookup of the name (a DNS answer cannot change between the check and the connect).
//! It follows no redirect: a `3xx` is an answer like any other non-`2xx`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Whether a delivery may connect to `ip` when private targets are not allowed.
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        // "This network" (0/8), shared address space (100.64/10), reserved (240/4).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
        // IETF protocol assignments (192.0.0/24), benchmarking (198.18/15, often routed
        // inside networks), documentation (192.0.2/24, 198.51.100/24, 203.0.113/24).
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    // An IPv4 address carried inside IPv6 (mapped, compatible, NAT64, 6to4) is judged as v4:
    // `::ffff:127.0.0.1` reaches loopback just as well.
    if let Some(v4) = embedded_v4(ip) {
        return public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, the old site-local fec0::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // Local-use NAT64 64:ff9b:1::/48, discard-only 100::/64, Teredo 2001::/32 (it
        // tunnels to an IPv4 address), documentation 2001:db8::/32.
        || (first == 0x64 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1)
        || ip.segments()[..4] == [0x100, 0, 0, 0]
        || (first == 0x2001 && (ip.segments()[1] == 0 || ip.segments()[1] == 0xdb8)))
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d (deprecated "compatible"), but not :: and ::1, which are v6's own.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail());
    }
    // NAT64 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    // 6to4 2002:a.b.c.d::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// The host of a URL as an address, if it is one (`[::1]` without its brackets).
fn literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// What is wrong with an endpoint URL, checked when it is registered or changed: an absolute
/// `http` or `https` URL with a host, no credentials, no fragment; and, unless private targets
/// are allowed, no host that is or resolves to a private address. A name that does not resolve
/// now is accepted: every delivery checks again, whatever the name resolves to then.
pub(super) fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > 2000 {
        return Err("must be at most 2000 characters".into());
    }
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|_| "must be an absolute http or https URL".to_string())?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if !(scheme == "http" || scheme == "https") {
        return Err("must be an absolute http or https URL".into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "must name a host".to_string())?;
    if authority.as_str().contains('@') {
        return Err("must not hold a user name or password".into());
    }
    if url.contains('#') {
        return Err("must not hold a fragment".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("must name a host".into());
    }
    if allow_private {
        return Ok(());
    }
    let refused = || {
        Err(format!(
            "{host} is a private, loopback or otherwise internal address; this server does not \
             deliver there (see --webhooks-allow-private)"
        ))
    };
    if let Some(ip) = literal(host) {
        return if is_public(ip) { Ok(()) } else { refused() };
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.iter().all(|a| is_public(a.ip())) {
                Ok(())
            } else {
                refused()
            }
        }
        Err(_) => Ok(()),
    }
}

/// The resolver of the delivering agent: the system's answer, less every address a delivery
/// may not reach; none left is an error that says so.
#[derive(Debug)]
struct Guard {
    allow_private: bool,
}

impl Resolver for Guard {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let found = DefaultResolver::default().resolve(uri, config, timeout)?;
        if self.allow_private {
            return Ok(found);
        }
        let mut kept = self.empty();
        for addr in found.iter().filter(|a| is_public(a.ip())) {
            kept.push(*addr);
        }
        if kept.is_empty() {
            let host = uri.host().unwrap_or_default();
            return Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refused: {host} resolves only to private, loopback or otherwise internal \
                     addresses"
                ),
            )));
        }
        Ok(kept)
    }
}

/// The agent every delivery uses: bounded connect and answer times, no redirects, no proxy
/// from the environment (it would be a second way out), non-2xx answers as answers.
pub(super) fn agent(allow_private: bool, connect: Duration, answer: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(connect))
        .timeout_recv_response(Some(answer))
        .timeout_recv_body(Some(answer))
        .timeout_send_body(Some(answer))
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .user_agent(concat!("tenantd-webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::default(), Guard { allow_private })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_kept() {
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "192.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.1",
            "203.0.113.1",
            "64:ff9b:1::a00:1",
            "100::1",
            "2001::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!is_public(ip), "{refused} must be refused");
        }
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::",
            "192.0.3.1",
            "198.20.0.1",
            "2001:4860::8888",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public} must be allowed");
        }
    }

    #[test]
    fn urls_are_checked_for_shape_and_target() {
        assert!(check_url("https://93.184.215.14/hook", false).is_ok());
        assert!(check_url("http://[2606:4700::1111]:8080/x?y=1", false).is_ok());
        for bad in [
            "ftp://93.184.215.14/",
            "/relative",
            "93.184.215.14",
            "https://user:pw@93.184.215.14/",
            "https://93.184.215.14/#frag",
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} must be refused");
        }
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert!(check_url("http://localhost:8080/", true).is_ok());
        assert!(check_url("ftp://127.0.0.1/", true).is_err());
    }
}
