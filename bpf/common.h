/* Helpers shared by the BPF programs (kernel side only; user space never reads this).
 *
 * Include after vmlinux.h, bpf_helpers.h, bpf_endian.h and netreceiver.h. Maps stay per
 * object: each object declares its own `losses` array with NR_LOSSES_MAP.
 */
#ifndef NETRECEIVER_COMMON_H
#define NETRECEIVER_COMMON_H

/* Double-buffered aggregates: two hashes `<outer>_a` / `<outer>_b` of `value_type` per
 * struct nr_flow_key, and the one-slot map-in-map `outer` whose slot 0 is the hash being
 * written (`<outer>_a` at load). User space swaps the slot, then drains the other hash. */
#define NR_SWAPPED_FLOW_MAPS(outer, value_type)                          \
	struct outer##_inner {                                          \
		__uint(type, BPF_MAP_TYPE_HASH);                        \
		__uint(max_entries, 16384);                             \
		__type(key, struct nr_flow_key);                        \
		__type(value, value_type);                              \
	} outer##_a SEC(".maps"), outer##_b SEC(".maps");               \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);               \
		__uint(max_entries, 1);                                 \
		__type(key, __u32);                                     \
		__array(values, struct outer##_inner);                  \
	} outer SEC(".maps") = {                                        \
		.values = { [0] = &outer##_a },                         \
	}

/* The per-CPU `losses` array of one object: a __u64 counter per loss reason. */
#define NR_LOSSES_MAP(entries)                                  \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);        \
		__uint(max_entries, entries);                   \
		__type(key, __u32);                             \
		__type(value, __u64);                           \
	} losses SEC(".maps")

static __always_inline void nr_count(void *counters, __u32 index)
{
	__u64 *slot = bpf_map_lookup_elem(counters, &index);

	if (slot)
		*slot += 1;
}

/* Count one loss in this object's `losses` array (a macro: `losses` is per object). */
#define count_loss(reason) nr_count(&losses, (reason))

/* --- packets seen by the cgroup_skb programs (skb.bpf.c) ------------------------------ */

#define NR_ETH_P_IP 0x0800
#define NR_ETH_P_IPV6 0x86DD

/* Addresses, ports and payload location of one IP packet, as seen by a local socket. */
struct nr_packet {
	__u8 local[NR_ADDR_LEN];
	__u8 remote[NR_ADDR_LEN];
	__u16 local_port;
	__u16 remote_port;
	__u32 payload_off;          /* first byte after the transport header */
	__u32 payload_len;
	__u8 protocol;
	__u8 family;
};

static __always_inline void nr_map_v4(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Fill `pkt` from the IP and UDP/TCP headers; 0 on success. `sent` selects which side
 * is local. IPv6 extension headers are not followed (such packets are skipped). */
static __always_inline int nr_parse(struct __sk_buff *skb, int sent, int ipv6,
				    struct nr_packet *pkt)
{
	__u32 l4, total;
	__be16 ports[2];
	__u8 *src = sent ? pkt->local : pkt->remote, *dst = sent ? pkt->remote : pkt->local;

	if (skb->protocol == bpf_htons(NR_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;  /* a later fragment: no transport header */
		nr_map_v4(src, ip.saddr);
		nr_map_v4(dst, ip.daddr);
		pkt->protocol = ip.protocol;
		pkt->family = NR_FAMILY_IPV4;
		l4 = ip.ihl * 4;
		total = bpf_ntohs(ip.tot_len);
	} else if (ipv6 && skb->protocol == bpf_htons(NR_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		__builtin_memcpy(src, &ip6.saddr, NR_ADDR_LEN);
		__builtin_memcpy(dst, &ip6.daddr, NR_ADDR_LEN);
		pkt->protocol = ip6.nexthdr;
		pkt->family = NR_FAMILY_IPV6;
		l4 = sizeof(ip6);
		total = l4 + bpf_ntohs(ip6.payload_len);
	} else {
		return -1;
	}
	if (total > skb->len)
		total = skb->len;  /* GSO / trimmed: trust what is there */
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return -1;
	pkt->local_port = bpf_ntohs(sent ? ports[0] : ports[1]);
	pkt->remote_port = bpf_ntohs(sent ? ports[1] : ports[0]);
	if (pkt->protocol == IPPROTO_UDP) {
		pkt->payload_off = l4 + 8;
	} else if (pkt->protocol == IPPROTO_TCP) {
		__u8 doff;

		if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1))
			return -1;
		pkt->payload_off = l4 + (doff >> 4) * 4;
	} else {
		return -1;
	}
	pkt->payload_len = total > pkt->payload_off ? total - pkt->payload_off : 0;
	return 0;
}

#endif /* NETRECEIVER_COMMON_H */
