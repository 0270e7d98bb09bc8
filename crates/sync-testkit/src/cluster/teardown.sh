# The one-node cluster's teardown (sync-testkit's cluster/teardown.rs): run when the cluster is
# dropped, and by its reaper after the test process ends, however it ended. It undoes what the
# cluster made on this machine, and nothing else. Idempotent: running it twice does no harm.
#
#   sh teardown.sh DIR CGROUP BRIDGE [HOST_PATH...]
#
# DIR: the cluster's folder (every component's arguments name it); CGROUP: the cgroup the kubelet
# ran pods under (in every v1 hierarchy); BRIDGE: the pod network's bridge; HOST_PATH: host
# folders that did not exist before the cluster started (components that insist on fixed paths
# made them), removed whole.
set -u
dir=$1 cgroup=$2 bridge=$3
shift 3

# Every process: the components (their arguments name "$dir/"; this script's do not), then the
# containers, which are in the cluster's cgroups.
pkill -KILL -f -- "$dir/" 2>/dev/null
for round in 1 2 3 4 5; do
    pids=$(find /sys/fs/cgroup/*/"$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [ -z "$pids" ] && break
    kill -KILL $pids 2>/dev/null
    sleep 0.2
done

# Mounts under the folder (the kubelet's shared root, tokens, root filesystems, network
# namespaces), deepest first.
awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while IFS= read -r mount; do umount -l "$mount" 2>/dev/null; done

# The cgroups, deepest first.
for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy$cgroup" ] && find "$hierarchy$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
done

# kube-proxy's nftables tables, and the bridge (the pods' veths went with their namespaces; the
# route to the Service range goes with the bridge).
nft delete table ip kube-proxy 2>/dev/null
nft delete table ip6 kube-proxy 2>/dev/null
ip link delete "$bridge" 2>/dev/null

# Host folders the components made, and the kubelet's links to this cluster's container logs.
for path in "$@"; do rm -rf -- "$path"; done
[ -d /var/log/containers ] && find /var/log/containers -maxdepth 1 -lname "$dir/*" -delete 2>/dev/null
rm -rf -- "$dir"
exit 0
