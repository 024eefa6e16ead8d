//! Egress policy: which addresses outbound calls (platform APIs, LLM backends, webhooks,
//! flow http_actions) may reach, and [`builder`], the one place outbound HTTP clients are
//! built. Private ranges are denied unless allowed. URLs are checked where they are
//! configured (a denied one is a validation error) and where a client is set up from
//! them; every host name is checked again on the addresses it resolves to, so a name that
//! later points inside (DNS rebinding) is refused as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Redirects followed at most (reqwest's default).
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// A host name, any case.
    Host(String),
    Net {
        addr: IpAddr,
        prefix: u8,
    },
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, EgressError> {
        let bad = || EgressError::BadRule(text.to_string());
        let t = text.trim();
        if let Some((addr, prefix)) = t.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            return if prefix <= max {
                Ok(Rule::Net { addr, prefix })
            } else {
                Err(bad())
            };
        }
        if let Ok(addr) = t.trim_matches(['[', ']']).parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Net { addr, prefix });
        }
        let host = t.trim_end_matches('.').to_ascii_lowercase();
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if valid {
            Ok(Rule::Host(host))
        } else {
            Err(bad())
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let Rule::Net { addr, prefix } = self else {
            return false;
        };
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let ((net, width), (candidate, cwidth)) = (bits(*addr), bits(ip));
        if width != cwidth {
            return false;
        }
        let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
        net & mask == candidate & mask
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("--egress-allow {0:?}: expected a host name, an IP address or a CIDR like 10.0.0.0/8")]
    BadRule(String),
    #[error("{0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error(
        "{0} is a private address, which the egress policy denies (allow it with --egress-allow)"
    )]
    Denied(String),
}

/// What outbound calls may reach. The default denies private addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    deny_private: bool,
    allow: Vec<Rule>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            deny_private: true,
            allow: Vec::new(),
        }
    }
}

/// Loopback, RFC 1918, link-local, CGNAT, ULA, unspecified, multicast, broadcast,
/// documentation-free "this network", and IPv6 forms that embed such an IPv4 address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() {
                return true;
            }
            // Unique local fc00::/7, link-local fe80::/10.
            if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
                return true;
            }
            // IPv4-mapped and -compatible (::ffff:a.b.c.d, ::a.b.c.d), NAT64 64:ff9b::/96.
            let embedded = v6.to_ipv4().or_else(|| {
                (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
                    let [.., hi, lo] = s;
                    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
                })
            });
            embedded.is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

fn is_localhost_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

impl EgressPolicy {
    /// `deny_private`: refuse private addresses not in `allow` (host names, IP addresses,
    /// CIDRs).
    pub fn new(deny_private: bool, allow: &[String]) -> Result<EgressPolicy, EgressError> {
        Ok(EgressPolicy {
            deny_private,
            allow: allow
                .iter()
                .map(|r| Rule::parse(r))
                .collect::<Result<_, _>>()?,
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow
            .iter()
            .any(|r| matches!(r, Rule::Host(h) if *h == host))
    }

    /// Whether calls may go to `ip`.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        !self.deny_private || !is_private(ip) || self.allow.iter().any(|r| r.contains(ip))
    }

    /// Checks a URL's host as written: an IP address against the ranges, `localhost`
    /// names as loopback. Other names are checked on what they resolve to, when used.
    pub fn check_url(&self, url: &str) -> Result<(), EgressError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| EgressError::BadUrl(url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::BadUrl(url.into()));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| EgressError::BadUrl(url.into()))?
            .trim_matches(['[', ']'])
            .trim_end_matches('.')
            .to_ascii_lowercase();
        // The URL parser has normalised every IPv4 spelling (decimal, hex, octal).
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_ip(&host, ip);
        }
        let loopback_allowed = self.ip_allowed(Ipv4Addr::LOCALHOST.into())
            || self.ip_allowed(Ipv6Addr::LOCALHOST.into());
        if is_localhost_name(&host) && !loopback_allowed && !self.host_allowed(&host) {
            return Err(EgressError::Denied(host));
        }
        Ok(())
    }

    fn check_ip(&self, shown: &str, ip: IpAddr) -> Result<(), EgressError> {
        if self.ip_allowed(ip) || self.host_allowed(shown) {
            Ok(())
        } else {
            Err(EgressError::Denied(shown.to_string()))
        }
    }
}

/// How long outbound calls may take. Streaming answers (LLM tokens) are bounded per read,
/// not only in total, so a long answer that keeps coming is not cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for any read, the response head included.
    pub read: Duration,
    /// Longest request, start to end (a request may ask for less).
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            total: Duration::from_secs(300),
        }
    }
}

/// Resolves names and keeps only the addresses the policy allows.
struct PolicyResolver(Arc<EgressPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let named = policy.host_allowed(&host);
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| named || policy.ip_allowed(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(Box::new(EgressError::Denied(host)) as _);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The builder of every outbound HTTP client: timeouts always; with a policy, names
/// resolve only to allowed addresses and redirects only go to allowed URLs. Without one
/// (node-to-node calls, whose peers are private by nature) any address is reached.
pub fn builder(policy: Option<&EgressPolicy>, timeouts: Timeouts) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .timeout(timeouts.total);
    let Some(policy) = policy else {
        return b;
    };
    let policy = Arc::new(policy.clone());
    let redirects = policy.clone();
    b.dns_resolver(Arc::new(PolicyResolver(policy)))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if let Err(e) = redirects.check_url(attempt.url().as_str()) {
                attempt.error(e)
            } else if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
}

#[cfg(test)]
mod tests;
