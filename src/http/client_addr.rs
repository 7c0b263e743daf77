//! The client's address: the socket peer, or, when the peer is a trusted proxy
//! (`server.trusted_proxies`), the address the proxies' `Forwarded` (RFC 7239) or
//! `X-Forwarded-For` headers name.
//!
//! The chain is read right to left (each proxy appends the address it received the request
//! from) and the first address that is not itself a trusted proxy is the client: whatever a
//! client writes into these headers stays to the left of what the first trusted proxy appended,
//! so it is never taken. `Forwarded` wins over `X-Forwarded-For` when both are present; several
//! header lines of one name are one list, in order. A chain that cannot be read up to the client
//! (an entry that is no address: garbage, `unknown`, an obfuscated `_id`) gives the peer's
//! address: what the proxy could not tell is not guessed.
//!
//! [`ClientAddrLayer`] puts a [`ClientAddr`] into every request's extensions, before the trace
//! span opens; rate limits, failed-authentication limits and log lines use it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use tower::{Layer, Service};

use crate::config::Cidr;

/// The client's address, as the service takes it (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The trusted proxies' networks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    pub fn new(networks: &[Cidr]) -> Self {
        Self(networks.into())
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(addr))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let chain = if headers.contains_key("forwarded") {
            forwarded_chain(headers)
        } else if headers.contains_key("x-forwarded-for") {
            x_forwarded_for_chain(headers)
        } else {
            return peer;
        };
        let Some(chain) = chain else {
            return peer;
        };
        // Right to left; an unreadable entry before the client is reached: the peer.
        let mut leftmost = peer;
        for entry in chain.iter().rev() {
            let Some(addr) = entry else {
                return peer;
            };
            if !self.trusts(*addr) {
                return *addr;
            }
            leftmost = *addr;
        }
        // Every hop is a trusted proxy: the first one is as far back as the chain goes.
        leftmost
    }
}

/// The `for=` node of each `Forwarded` element, in order (`None` for a node that is no
/// address); `None` when the header is not readable as RFC 7239 at all.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    for value in headers.get_all("forwarded") {
        let value = value.to_str().ok()?;
        for element in split_outside_quotes(value, ',') {
            if element.trim().is_empty() {
                continue;
            }
            let mut node = None;
            for pair in split_outside_quotes(element, ';') {
                let (name, value) = pair.split_once('=')?;
                if name.trim().eq_ignore_ascii_case("for") {
                    node = Some(unquote(value.trim())?);
                }
            }
            // An element without `for=` says nothing about who sent the request.
            chain.push(parse_node(node?));
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// The addresses of `X-Forwarded-For`, in order (`None` for an entry that is no address).
fn x_forwarded_for_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let value = value.to_str().ok()?;
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            chain.push(parse_node(entry));
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// `text` split at `separator` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A token as is, a quoted string without its quotes and escapes; `None` for an unterminated
/// quote.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// A node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:8080`;
/// `None` for `unknown`, an obfuscated identifier (`_hidden`) or anything else.
fn parse_node(node: impl AsRef<str>) -> Option<IpAddr> {
    let node = node.as_ref().trim();
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(addr) = node.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    // IPv4 with a port (as some load balancers write `X-Forwarded-For`), or an obfuscated one.
    let (addr, port) = node.split_once(':')?;
    if !valid_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port number, or an obfuscated port (`_abc`), which RFC 7239 allows after an address.
fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
        || port.strip_prefix('_').is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

/// Puts the request's [`ClientAddr`] into its extensions (no `ConnectInfo`: none).
#[derive(Clone)]
pub struct ClientAddrLayer {
    trusted: TrustedProxies,
}

impl ClientAddrLayer {
    pub fn new(trusted: &[Cidr]) -> Self {
        Self {
            trusted: TrustedProxies::new(trusted),
        }
    }
}

impl<S> Layer<S> for ClientAddrLayer {
    type Service = ClientAddrService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientAddrService {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ClientAddrService<S> {
    inner: S,
    trusted: TrustedProxies,
}

impl<S> Service<Request> for ClientAddrService<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(peer) = peer {
            let client = self.trusted.client(peer, request.headers());
            request.extensions_mut().insert(ClientAddr(client));
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(networks: &[&str]) -> TrustedProxies {
        let networks: Vec<Cidr> = networks.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&networks)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const PROXY: &str = "10.0.0.5";

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.1"),
        ]);
        assert_eq!(proxies.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        // No trusted proxies at all (the default).
        assert_eq!(
            trusted(&[]).client(ip(PROXY), &h),
            ip(PROXY),
            "nothing is trusted by default"
        );
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_address() {
        let proxies = trusted(&["10.0.0.0/8"]);
        for (value, client) in [
            ("203.0.113.9", "203.0.113.9"),
            // A client's own claim stays left of what the proxy appended.
            ("1.2.3.4, 203.0.113.9", "203.0.113.9"),
            // Proxies in the chain are skipped.
            ("1.2.3.4, 203.0.113.9, 10.1.1.1", "203.0.113.9"),
            // With a port (Azure Application Gateway), IPv6 bare and bracketed.
            ("203.0.113.9:51234", "203.0.113.9"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
            // Only proxies: the first of them.
            ("10.9.9.9, 10.1.1.1", "10.9.9.9"),
            // Garbage left of the client does not matter.
            ("not-an-address, 203.0.113.9", "203.0.113.9"),
        ] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(proxies.client(ip(PROXY), &h), ip(client), "{value}");
        }
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
        ]);
        assert_eq!(proxies.client(ip(PROXY), &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_nodes_in_every_form() {
        let proxies = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        for (value, client) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            ("for=192.0.2.43, for=\"[2001:db8:ffff::1]\"", "192.0.2.43"),
            ("for=\"192.0.2.60:_port\"", "192.0.2.60"),
            ("proto=https;for=192.0.2.60;host=example.com", "192.0.2.60"),
            ("for=\"[2001:db8::9]:_abc\"", "2001:db8::9"),
        ] {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(proxies.client(ip(PROXY), &h), ip(client), "{value}");
        }
        // Forwarded wins over X-Forwarded-For; several lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.99"),
            ("forwarded", "for=192.0.2.1"),
            ("forwarded", "for=192.0.2.2"),
        ]);
        assert_eq!(proxies.client(ip(PROXY), &h), ip("192.0.2.2"));
    }

    #[test]
    fn what_the_proxy_cannot_tell_falls_back_to_the_peer() {
        let proxies = trusted(&["10.0.0.0/8"]);
        for (name, value) in [
            // Obfuscated or unknown where the client should be.
            ("forwarded", "for=_hidden"),
            ("forwarded", "for=unknown"),
            ("forwarded", "for=192.0.2.1, for=_gateway"),
            // Malformed.
            ("forwarded", "for=\"[2001:db8::1]"),
            ("forwarded", "for"),
            ("forwarded", "proto=https"),
            ("forwarded", "for=[2001:db8::1]:port"),
            ("forwarded", ""),
            ("x-forwarded-for", "garbage"),
            ("x-forwarded-for", "203.0.113.9, garbage"),
            ("x-forwarded-for", " , "),
            ("x-forwarded-for", "[2001:db8::1"),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(proxies.client(ip(PROXY), &h), ip(PROXY), "{name}: {value}");
        }
        // An obfuscated hop left of the client is not looked at.
        let h = headers(&[("forwarded", "for=_hidden, for=192.0.2.1")]);
        assert_eq!(proxies.client(ip(PROXY), &h), ip("192.0.2.1"));
    }

    #[test]
    fn a_mapped_peer_address_is_matched_as_ipv4() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(proxies.client(ip("::ffff:10.0.0.5"), &h), ip("203.0.113.9"));
        assert_eq!(proxies.client(ip("::ffff:192.0.2.1"), &h), ip("192.0.2.1"));
    }
}
