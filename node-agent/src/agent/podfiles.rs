//! What a pod's `/etc/resolv.conf` and `/etc/hosts` say, by the kubelet's
//! rules: `dnsPolicy` (`ClusterFirst`, `ClusterFirstWithHostNet`,
//! `Default`, `None`), `dnsConfig`, `hostname`/`subdomain` and
//! `hostAliases`. Pure: the host's own files come in as text.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Pod;

/// The cluster's DNS settings, as the kubelet's `--cluster-dns` and
/// `--cluster-domain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster DNS service's address (the service CIDR's tenth).
    pub nameserver: Ipv4Addr,
    /// The cluster's DNS zone.
    pub domain: String,
}

impl Default for ClusterDns {
    fn default() -> Self {
        ClusterDns {
            nameserver: Ipv4Addr::new(10, 3, 240, 10),
            domain: "cluster.local".into(),
        }
    }
}

/// The kubelet's limits on what a resolv.conf may hold.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
/// The kubelet's limit on the search line's length (the search domains
/// joined by spaces), as glibc 2.26 and later take.
const MAX_SEARCH_CHARS: usize = 2048;
/// The longest hostname, a DNS label; the kubelet cuts a longer pod name.
const MAX_HOSTNAME: usize = 63;

/// The pod's `/etc/resolv.conf`, given the host's.
pub fn resolv_conf(pod: &Pod, dns: &ClusterDns, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    // The cluster's search domains come first, then the host's, as the
    // kubelet writes them; the host's nameservers and options do not.
    let cluster = || {
        let mut searches = vec![
            format!("{namespace}.svc.{}", dns.domain),
            format!("svc.{}", dns.domain),
            dns.domain.clone(),
        ];
        for search in parse_resolv(host).1 {
            if !searches.contains(&search) {
                searches.push(search);
            }
        }
        (
            vec![dns.nameserver.to_string()],
            searches,
            vec![("ndots".to_string(), Some("5".to_string()))],
        )
    };
    let (mut servers, mut searches, mut options) = match policy {
        "ClusterFirstWithHostNet" => cluster(),
        // ClusterFirst falls back to the host's DNS for hostNetwork pods.
        "ClusterFirst" if !host_network => cluster(),
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        _ => parse_resolv(host),
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for server in config.nameservers.iter().flatten() {
            if !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !searches.contains(search) {
                searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.clone() else {
                continue;
            };
            options.retain(|(n, _)| *n != name);
            options.push((name, option.value.clone()));
        }
    }
    servers.truncate(MAX_NAMESERVERS);
    searches.truncate(MAX_SEARCHES);
    // Whole domains only: the first that would pass the limit ends it.
    let mut chars = 0;
    let fits = searches
        .iter()
        .take_while(|s| {
            chars += s.len() + usize::from(chars > 0);
            chars <= MAX_SEARCH_CHARS
        })
        .count();
    searches.truncate(fits);
    let mut out = String::new();
    for server in &servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

type Resolv = (Vec<String>, Vec<String>, Vec<(String, Option<String>)>);

/// The nameservers, search domains and options of a resolv.conf.
fn parse_resolv(text: &str) -> Resolv {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            // The last search or domain line wins, as in the resolver.
            Some("search" | "domain") => searches = words.map(str::to_string).collect(),
            Some("options") => {
                for word in words {
                    let (name, value) = match word.split_once(':') {
                        Some((n, v)) => (n.to_string(), Some(v.to_string())),
                        None => (word.to_string(), None),
                    };
                    options.retain(|(n, _): &(String, Option<String>)| *n != name);
                    options.push((name, value));
                }
            }
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The pod's `/etc/hosts`: the host's for `hostNetwork` pods, else the
/// localhost lines and the pod's own name at its IP (its FQDN too with a
/// `subdomain`), then the pod's `hostAliases`.
pub fn hosts(pod: &Pod, pod_ip: IpAddr, dns: &ClusterDns, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let mut out = String::new();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        out.push_str(host);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str(
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n",
        );
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let hostname = spec
            .and_then(|s| s.hostname.as_deref())
            .filter(|h| !h.is_empty())
            .unwrap_or(name);
        // A pod name longer than a label is cut, without a trailing dash
        // or dot, as the kubelet cuts it for the pod's hostname.
        let hostname = hostname[..hostname.len().min(MAX_HOSTNAME)].trim_end_matches(['-', '.']);
        match spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(sub) => {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                out.push_str(&format!(
                    "{pod_ip}\t{hostname}.{sub}.{namespace}.svc.{}\t{hostname}\n",
                    dns.domain
                ));
            }
            None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.clone().unwrap_or_default();
            out.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54 ; x\n\
                        search lan example.org\noptions edns0 timeout:2\n";

    #[test]
    fn cluster_first_points_at_cluster_dns() {
        let p = pod(json!({"containers": []}));
        assert_eq!(
            resolv_conf(&p, &ClusterDns::default(), HOST),
            "nameserver 10.3.240.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local lan example.org\n\
             options ndots:5\n"
        );
        assert_eq!(
            resolv_conf(&p, &ClusterDns::default(), ""),
            "nameserver 10.3.240.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn search_lists_stay_within_the_kubelets_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let p = pod(json!({"dnsPolicy": "None", "dnsConfig": {"searches": many}}));
        let text = resolv_conf(&p, &ClusterDns::default(), "");
        let line = text.lines().find(|l| l.starts_with("search ")).unwrap();
        assert_eq!(line.split_whitespace().count() - 1, 32);
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(250))).collect();
        let p = pod(json!({"dnsPolicy": "None", "dnsConfig": {"searches": long}}));
        let text = resolv_conf(&p, &ClusterDns::default(), "");
        let line = text.lines().find(|l| l.starts_with("search ")).unwrap();
        assert!(line.len() - "search ".len() <= 2048, "{}", line.len());
        assert_eq!(line.split_whitespace().count() - 1, 8);
    }

    #[test]
    fn default_and_host_network_use_the_hosts_file() {
        let want = "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lan example.org\n\
                    options edns0 timeout:2\n";
        let p = pod(json!({"dnsPolicy": "Default"}));
        assert_eq!(resolv_conf(&p, &ClusterDns::default(), HOST), want);
        let p = pod(json!({"hostNetwork": true}));
        assert_eq!(resolv_conf(&p, &ClusterDns::default(), HOST), want);
        let p = pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert!(
            resolv_conf(&p, &ClusterDns::default(), HOST)
                .starts_with("nameserver 10.3.240.10\nsearch shop.svc.cluster.local ")
        );
    }

    #[test]
    fn dns_config_adds_and_overrides() {
        let p = pod(json!({
            "dnsPolicy": "ClusterFirst",
            "dnsConfig": {
                "nameservers": ["192.0.2.1"],
                "searches": ["extra.test"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            },
        }));
        assert_eq!(
            resolv_conf(&p, &ClusterDns::default(), HOST),
            "nameserver 10.3.240.10\nnameserver 192.0.2.1\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local lan example.org extra.test\n\
             options ndots:2 edns0\n"
        );
        let p = pod(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.9"]}}));
        assert_eq!(
            resolv_conf(&p, &ClusterDns::default(), HOST),
            "nameserver 192.0.2.9\n"
        );
    }

    #[test]
    fn hosts_name_the_pod_at_its_ip() {
        let ip: IpAddr = "10.0.1.2".parse().unwrap();
        let dns = ClusterDns::default();
        let text = hosts(&pod(json!({})), ip, &dns, "");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("\n10.0.1.2\tweb-1\n"), "{text}");
        let text = hosts(
            &pod(json!({"hostname": "db", "subdomain": "svc1",
                        "hostAliases": [{"ip": "192.0.2.7", "hostnames": ["a", "b"]}]})),
            ip,
            &dns,
            "",
        );
        assert!(
            text.contains("10.0.1.2\tdb.svc1.shop.svc.cluster.local\tdb\n"),
            "{text}"
        );
        assert!(text.ends_with("# Entries added by HostAliases.\n192.0.2.7\ta\tb\n"));
        let text = hosts(&pod(json!({"hostNetwork": true})), ip, &dns, "127.0.0.1 me");
        assert_eq!(text, "127.0.0.1 me\n");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let mut p = pod(json!({}));
        p.metadata.name = Some(long);
        let text = hosts(&p, ip, &dns, "");
        assert!(
            text.ends_with(&format!("\n10.0.1.2\t{}\n", "a".repeat(62))),
            "{text}"
        );
    }
}
