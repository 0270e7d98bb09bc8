//! The node's pod network: a bridge of its own on a private /24 that no address or route of this
//! machine touches, and a second /24 for Service IPs, routed to that bridge.
//!
//! What keeps it inside the machine and leaves the host's settings alone:
//! - the bridge has the node's address (`.1`), which is also where the apiserver listens, so
//!   pods reach the API through the `kubernetes` Service without anything being forwarded;
//! - the CNI `bridge` plugin runs with `isGateway: false` and `ipMasq: false` (either would turn
//!   on the host's global `ip_forward` or add NAT rules), and pods get one route, to the Service
//!   range through the node's address, and no default route;
//! - the host reaches pods on the bridge's own subnet, and Services through the route to the
//!   Service range (with the bridge's address as source, so replies come back to it).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// The pod and Service ranges of one cluster, and its bridge.
pub(crate) struct PodNetwork {
    /// The bridge's name.
    pub(crate) bridge: String,
    /// The pods' /24.
    pub(crate) pods: Ipv4Addr,
    /// The Services' /24.
    pub(crate) services: Ipv4Addr,
}

impl PodNetwork {
    /// Picks two /24s in 10.213.0.0/16 that no address or route of this machine overlaps.
    pub(crate) fn choose() -> Self {
        let taken = taken_ranges();
        let start = std::process::id() as usize;
        for i in 0..120 {
            let third = 2 * ((start + i) % 120) as u8;
            let pods = Ipv4Addr::new(10, 213, third, 0);
            let services = Ipv4Addr::new(10, 213, third + 1, 0);
            let free = [pods, services].iter().all(|net| {
                !taken
                    .iter()
                    .any(|&(base, len)| overlaps((*net, 24), (base, len)))
            });
            if free {
                return Self {
                    bridge: format!("syncbr{third}"),
                    pods,
                    services,
                };
            }
        }
        panic!("no free /24 pair in 10.213.0.0/16 for the pod network: {taken:?}");
    }

    /// The node's address on the bridge: `.1` of the pods' range.
    pub(crate) fn node_address(&self) -> Ipv4Addr {
        with_last(self.pods, 1)
    }

    /// The `kubernetes` Service's IP: the first of the Service range.
    pub(crate) fn kubernetes_service(&self) -> Ipv4Addr {
        with_last(self.services, 1)
    }

    /// The pods' range, `a.b.c.0/24`.
    pub(crate) fn pod_range(&self) -> String {
        format!("{}/24", self.pods)
    }

    /// The Service range, `a.b.c.0/24`.
    pub(crate) fn service_range(&self) -> String {
        format!("{}/24", self.services)
    }

    /// Creates the bridge with the node's address, and the route to the Service range.
    pub(crate) fn create(&self) {
        let address = format!("{}/24", self.node_address());
        let node = self.node_address().to_string();
        ip(&["link", "add", &self.bridge, "type", "bridge"]);
        ip(&["addr", "add", &address, "dev", &self.bridge]);
        ip(&["link", "set", &self.bridge, "up"]);
        ip(&[
            "route",
            "add",
            &self.service_range(),
            "dev",
            &self.bridge,
            "src",
            &node,
        ]);
    }

    /// The CNI configuration containerd gives every pod: a port on the bridge, an address from
    /// the pods' range (recorded in `ipam_dir`), and a route to the Services.
    pub(crate) fn cni_config(&self, ipam_dir: &Path) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "sync-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": false,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": ipam_dir,
                        "ranges": [[{
                            "subnet": self.pod_range(),
                            "rangeStart": with_last(self.pods, 10).to_string(),
                            "rangeEnd": with_last(self.pods, 250).to_string(),
                        }]],
                        "routes": [{"dst": self.service_range(), "gw": self.node_address().to_string()}],
                    },
                },
                {"type": "loopback"},
            ],
        })
        .to_string()
    }
}

fn with_last(net: Ipv4Addr, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = net.octets();
    Ipv4Addr::new(a, b, c, last)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (iproute2: scripts/install-test-deps installs it)");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every IPv4 range this machine has an address in or a route to (the default route aside).
fn taken_ranges() -> Vec<(Ipv4Addr, u8)> {
    let mut taken = Vec::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip runs");
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Some(range) = parse_cidr(word) {
                taken.push(range);
            }
        }
    }
    taken
}

fn parse_cidr(word: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, len) = word.split_once('/').unwrap_or((word, "32"));
    let address: Ipv4Addr = address.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    // "0.0.0.0/0" is a default route; any other address word names a range in use.
    (len > 0).then_some((address, len))
}

fn overlaps((a, a_len): (Ipv4Addr, u8), (b, b_len): (Ipv4Addr, u8)) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_when_the_shorter_prefix_covers_both() {
        let net = |s: &str| parse_cidr(s).unwrap();
        assert!(overlaps(net("10.213.4.0/24"), net("10.213.4.7")));
        assert!(overlaps(net("10.213.4.0/24"), net("10.0.0.0/8")));
        assert!(!overlaps(net("10.213.4.0/24"), net("10.213.5.0/24")));
        assert!(!overlaps(net("10.213.4.0/24"), net("192.0.2.0/24")));
        assert_eq!(parse_cidr("0.0.0.0/0"), None);
        assert_eq!(parse_cidr("dev"), None);
    }

    #[test]
    fn the_cni_config_gives_pods_no_gateway_no_masquerade_and_one_route() {
        let network = PodNetwork {
            bridge: "syncbr8".into(),
            pods: Ipv4Addr::new(10, 213, 8, 0),
            services: Ipv4Addr::new(10, 213, 9, 0),
        };
        let config: serde_json::Value =
            serde_json::from_str(&network.cni_config(Path::new("/x"))).unwrap();
        let bridge = &config["plugins"][0];
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(
            bridge["ipam"]["routes"],
            serde_json::json!([{"dst": "10.213.9.0/24", "gw": "10.213.8.1"}])
        );
        assert_eq!(network.kubernetes_service(), Ipv4Addr::new(10, 213, 9, 1));
    }
}
