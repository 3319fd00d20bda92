//! Who am I: the pod's name, namespace and IPs, from the most reliable
//! source available.
//!
//! The Downward API is the reliable source (kubernetes.io, "Downward API":
//! `metadata.name`, `metadata.namespace`, `status.podIP(s)` as env vars). The
//! hostname is only a fallback for the name: `spec.hostname`,
//! `setHostnameAsFQDN` and the 64-byte nodename limit can make it differ
//! from `metadata.name` (kubernetes.io, "Pod Hostname"). The interface
//! addresses are a fallback for the IPs (with `hostNetwork` they are the
//! node's, which other pods share: use `--service` or POD_IP then).

use std::net::IpAddr;
use std::path::Path;

use crate::config::K8sConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub name: String,
    pub namespace: String,
    pub ips: Vec<IpAddr>,
    /// Where the name came from, for log lines: flag, POD_NAME or hostname.
    pub name_from: &'static str,
    /// Where the namespace came from: flag, POD_NAMESPACE or the namespace file.
    pub namespace_from: &'static str,
    /// Where the IPs came from: flag, POD_IPS, POD_IP or interfaces.
    pub ips_from: &'static str,
}

/// What the process environment offers; gathered in one place so the
/// choice itself is a pure, tested function.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub env_pod_name: Option<String>,
    pub env_namespace: Option<String>,
    pub env_pod_ips: Option<String>,
    pub env_pod_ip: Option<String>,
    pub hostname: Option<String>,
    pub namespace_file: Option<String>,
    pub interfaces: Vec<IpAddr>,
}

impl Sources {
    /// Reads the environment, the hostname, the namespace file (next to
    /// the token file, as in the service account volume) and the interfaces.
    pub fn gather(cfg: &K8sConfig) -> Sources {
        let env = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let ns_file = cfg.token_file.parent().unwrap_or(Path::new("/")).join("namespace");
        Sources {
            env_pod_name: env("POD_NAME"),
            env_namespace: env("POD_NAMESPACE"),
            env_pod_ips: env("POD_IPS"),
            env_pod_ip: env("POD_IP"),
            hostname: hostname(),
            namespace_file: std::fs::read_to_string(ns_file).ok(),
            interfaces: interface_addresses(),
        }
    }
}

/// Picks name, namespace and IPs: flag (or its LASTCALL_* env), then the
/// Downward API env, then the fallbacks. Errors are one line.
pub fn resolve(cfg: &K8sConfig, src: &Sources) -> Result<Identity, String> {
    let nonempty = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let (name, name_from) = if let Some(n) = nonempty(&cfg.pod_name) {
        (n, "--pod-name")
    } else if let Some(n) = nonempty(&src.env_pod_name) {
        (n, "POD_NAME")
    } else if let Some(n) = nonempty(&src.hostname) {
        (n, "hostname")
    } else {
        return Err("cannot tell this pod's name: set POD_NAME from the Downward API (metadata.name)".into());
    };
    let (namespace, namespace_from) =
        [(&cfg.namespace, "--namespace"), (&src.env_namespace, "POD_NAMESPACE"), (&src.namespace_file, "namespace file")]
            .into_iter()
            .find_map(|(v, from)| nonempty(v).map(|v| (v, from)))
            .ok_or_else(|| {
                "cannot tell the namespace: no --namespace, no POD_NAMESPACE and no namespace file next to the token".to_string()
            })?;
    for (what, value) in [("pod name", &name), ("namespace", &namespace)] {
        if !is_dns_subdomain(value) {
            return Err(format!("invalid {what} {value:?}: expected a DNS subdomain (lowercase letters, digits, '-', '.')"));
        }
    }
    let (ips, ips_from) = if !cfg.pod_ips.is_empty() {
        (super::slices::parse_ips(cfg.pod_ips.iter().map(String::as_str)), "--pod-ip")
    } else if let Some(list) = nonempty(&src.env_pod_ips) {
        (super::slices::parse_ips(list.split(',')), "POD_IPS")
    } else if let Some(ip) = nonempty(&src.env_pod_ip) {
        (super::slices::parse_ips(std::iter::once(ip.as_str())), "POD_IP")
    } else {
        (src.interfaces.clone(), "interfaces")
    };
    Ok(Identity { name, namespace, ips, name_from, namespace_from, ips_from })
}

/// RFC 1123 subdomain, as Kubernetes requires of pod and namespace names;
/// also keeps the name safe to put in a URL path.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-') && label.len() <= 63)
}

fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    Some(name.trim().to_string()).filter(|s| !s.is_empty())
}

/// Non-loopback, non-link-local addresses of the container's interfaces.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return out };
    for ifa in addrs {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(sin) = addr.as_sockaddr_in() {
            IpAddr::V4(sin.ip())
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            IpAddr::V6(sin6.ip())
        } else {
            continue;
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !ip.is_loopback() && !ip.is_unspecified() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> K8sConfig {
        K8sConfig { token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(), ..Default::default() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn name_precedence() {
        let mut src = Sources {
            env_pod_name: Some("from-env".into()),
            hostname: Some("from-host".into()),
            namespace_file: Some("ns\n".into()),
            ..Default::default()
        };
        let mut c = cfg();
        c.pod_name = Some("from-flag".into());
        assert_eq!(resolve(&c, &src).unwrap().name, "from-flag");
        assert_eq!(resolve(&cfg(), &src).unwrap().name, "from-env");
        src.env_pod_name = None;
        let id = resolve(&cfg(), &src).unwrap();
        assert_eq!((id.name.as_str(), id.name_from, id.namespace.as_str()), ("from-host", "hostname", "ns"));
        src.hostname = None;
        assert!(resolve(&cfg(), &src).unwrap_err().contains("POD_NAME"));
    }

    #[test]
    fn namespace_precedence() {
        let mut src = Sources {
            env_pod_name: Some("p".into()),
            env_namespace: Some("env-ns".into()),
            namespace_file: Some("file-ns".into()),
            ..Default::default()
        };
        let mut c = cfg();
        c.namespace = Some("flag-ns".into());
        assert_eq!(resolve(&c, &src).unwrap().namespace, "flag-ns");
        let id = resolve(&cfg(), &src).unwrap();
        assert_eq!((id.namespace.as_str(), id.namespace_from), ("env-ns", "POD_NAMESPACE"));
        src.env_namespace = None;
        let id = resolve(&cfg(), &src).unwrap();
        assert_eq!((id.namespace.as_str(), id.namespace_from), ("file-ns", "namespace file"));
        src.namespace_file = Some("  \n".into());
        assert!(resolve(&cfg(), &src).unwrap_err().contains("namespace"));
    }

    #[test]
    fn ip_precedence() {
        let mut src = Sources {
            env_pod_name: Some("p".into()),
            namespace_file: Some("ns".into()),
            env_pod_ips: Some("10.0.0.5, fd00::5,bogus".into()),
            env_pod_ip: Some("10.0.0.6".into()),
            interfaces: vec![ip("192.168.1.2")],
            ..Default::default()
        };
        let mut c = cfg();
        c.pod_ips = vec!["10.9.9.9".into()];
        assert_eq!(resolve(&c, &src).unwrap().ips, vec![ip("10.9.9.9")]);
        let id = resolve(&cfg(), &src).unwrap();
        assert_eq!((id.ips, id.ips_from), (vec![ip("10.0.0.5"), ip("fd00::5")], "POD_IPS"));
        src.env_pod_ips = None;
        assert_eq!(resolve(&cfg(), &src).unwrap().ips, vec![ip("10.0.0.6")]);
        src.env_pod_ip = None;
        assert_eq!(resolve(&cfg(), &src).unwrap().ips, vec![ip("192.168.1.2")]);
    }

    #[test]
    fn rejects_names_unsafe_in_a_url() {
        let src = Sources { env_pod_name: Some("../../etc".into()), namespace_file: Some("ns".into()), ..Default::default() };
        assert!(resolve(&cfg(), &src).is_err());
        for ok in ["web-1", "a", "web-7d9f8-x2x9z", "a.b-c"] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "Web", "a/b", "-a", "a-", "a..b", "a?b", "a b", &"x".repeat(64)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn interfaces_skip_loopback() {
        assert!(interface_addresses().iter().all(|ip| !ip.is_loopback()));
    }
}
