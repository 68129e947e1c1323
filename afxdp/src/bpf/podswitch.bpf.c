// SPDX-License-Identifier: GPL-2.0
//
// podswitch's XDP programs. One object, two programs, one socket map:
//
// - xdp_port (pod veths, host port): every frame goes to the AF_XDP socket
//   bound on its rx queue; with no socket there, the kernel gets it.
// - xdp_uplink (the node's uplink): only what the switch owns goes to the
//   socket (VXLAN and NodePorts addressed to a node IP, anything addressed to
//   a LoadBalancer/external service IP); everything else (ARP, ssh, kubelet,
//   the node's own traffic, anything malformed) is passed to the kernel
//   untouched. Untagged Ethernet only: VLAN-tagged frames go to the kernel.
//
// Control (dataplane/src/xdp.rs) fills node_ips, node_ports and service_ips
// and binds sockets into xsks. uplink_stats counts the uplink's decisions.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 64
#define VXLAN_PORT 4789

// Indices of uplink_stats.
#define STAT_PASSED 0     // left to the kernel by the filter
#define STAT_REDIRECTED 1 // claimed for the switch (redirect attempted)
#define STAT_UNBOUND 2    // claimed, but no socket on that queue: kernel got it
#define STAT_COUNT 3

struct node_port_key {
	__u8 proto; // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;   // always 0
	__u16 port; // network order
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); // IPv4, network order
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC); // sized by use, not max_entries
} node_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct node_port_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC); // sized by use, not max_entries
} node_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); // IPv4, network order
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC); // sized by use, not max_entries
} service_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} uplink_stats SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *counter = bpf_map_lookup_elem(&uplink_stats, &index);

	if (counter)
		*counter += 1;
}

SEC("xdp")
int xdp_port(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

// Whether the switch owns this frame. Every read is bounds-checked; anything
// short or odd is not owned, so the kernel decides what to do with it.
static __always_inline int owned(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct node_port_key key = {};
	__u8 *l4;
	__u32 daddr;
	__u16 dport;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;
	if (ip->version != 4 || ip->ihl < 5)
		return 0;

	daddr = ip->daddr;
	if (bpf_map_lookup_elem(&service_ips, &daddr))
		return 1;
	if (!bpf_map_lookup_elem(&node_ips, &daddr))
		return 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	// A later fragment carries no ports: the kernel reassembles or drops it.
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;

	l4 = (__u8 *)ip + ip->ihl * 4;
	// Source and destination port: the first four bytes of TCP and UDP.
	if ((void *)(l4 + 4) > data_end)
		return 0;
	dport = *(__u16 *)(l4 + 2);

	if (ip->protocol == IPPROTO_UDP && dport == bpf_htons(VXLAN_PORT))
		return 1;
	key.proto = ip->protocol;
	key.port = dport;
	return bpf_map_lookup_elem(&node_ports, &key) != NULL;
}

SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	int action;

	if (!owned(ctx)) {
		count(STAT_PASSED);
		return XDP_PASS;
	}
	count(STAT_REDIRECTED);
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (action != XDP_REDIRECT)
		count(STAT_UNBOUND);
	return action;
}

char LICENSE[] SEC("license") = "GPL";
