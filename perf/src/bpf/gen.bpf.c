// SPDX-License-Identifier: GPL-2.0
// Benchmark traffic: `xdp_gen` is run by BPF_PROG_RUN in live-frames mode
// (BPF_F_TEST_XDP_LIVE_FRAMES) and transmits each frame with XDP_TX out of
// the generator's veth, rewriting its headers every time (veth hands its
// buffers to the receiver, so a page comes back with someone else's data).
// `xdp_count` counts and drops what reaches the sink (ARP excepted).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define FRAME 64

struct tmpl {
	__u32 flows;
	__u8 bytes[FRAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tmpl);
} template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counter SEC(".maps");

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct tmpl *t = bpf_map_lookup_elem(&template, &zero);
	__u64 *n = bpf_map_lookup_elem(&counter, &zero);

	if (!t || !n || data + FRAME > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, FRAME);
	/* Spread the traffic over `flows` UDP source ports (frame offset 34). */
	if (t->flows > 1) {
		__u16 port = 1024 + (__u16)(*n % t->flows);
		__u8 *p = data + 34;
		p[0] = port >> 8;
		p[1] = port & 0xff;
	}
	*n += 1;
	return XDP_TX;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *eth = data;
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&counter, &zero);

	/* ARP still reaches the kernel, so a sink can sit on a node's underlay
	 * interface without breaking neighbour resolution. */
	if (data + 14 <= end && eth[12] == 0x08 && eth[13] == 0x06)
		return XDP_PASS;
	if (n)
		*n += 1;
	return XDP_DROP;
}

/* Counts and passes everything to the kernel: what an XDP program on an
 * interface costs the kernel's own path through it (veth turns GSO off
 * towards an interface with one). */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&counter, &zero);

	if (n)
		*n += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
