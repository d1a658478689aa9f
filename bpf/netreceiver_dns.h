/* Structs shared by udp.bpf.c / dns.bpf.c and user space, plus the packet helpers both
 * programs use.
 *
 * Both programs are cgroup_skb programs attached to the cgroup v2 root: they see every
 * IP packet a local socket sends (egress) or has delivered to it (ingress), in any
 * network namespace, starting at the IP header. The ctypes mirrors live in
 * otel_netreceiver/probes/udp.py and probes/dns.py; tests/unit/test_dns_abi.py compares
 * them with this object's BTF. Fields are fixed-width with explicit padding.
 *
 * The flow key has the same layout as struct nr_flow_key in netreceiver.h so that the
 * two headers can be merged.
 */
#ifndef NETRECEIVER_DNS_H
#define NETRECEIVER_DNS_H

#define NRD_COMM_LEN 16
#define NRD_ADDR_LEN 16         /* IPv6 size; IPv4 is stored v4-mapped (::ffff:a.b.c.d) */
#define NRD_MAX_DNS_PORTS 8
#define NRD_DNS_CAPTURE 512     /* DNS payload bytes copied per packet */

enum nrd_direction {
	NRD_DIR_OUTGOING = 0,
	NRD_DIR_INCOMING = 1,
};

enum nrd_family {
	NRD_FAMILY_IPV4 = 4,
	NRD_FAMILY_IPV6 = 6,
};

/* What could not be counted; indexes the per-CPU `losses` array of each object. */
enum nrd_loss {
	NRD_LOSS_FLOWS_FULL = 0,    /* a UDP aggregate could not be created */
	NRD_LOSS_RINGBUF_FULL = 1,  /* a DNS packet could not be sent to user space */
	NRD_LOSS_OWNERS_FULL = 2,   /* a socket's owner could not be remembered */
	NRD_LOSS_MAX = 4,
};

/* The process that owns a socket (same layout as struct nr_identity). */
struct nrd_identity {
	__u64 cgroup_id;            /* cgroup v2 id of the socket's cgroup */
	__u32 tgid;                 /* 0 when unknown */
	__u8 comm[NRD_COMM_LEN];    /* "" when unknown */
	__u32 _pad;
};

/* One UDP aggregate (same layout as struct nr_flow_key); never an ephemeral port. */
struct nrd_flow_key {
	struct nrd_identity id;
	__u8 peer[NRD_ADDR_LEN];    /* remote address */
	__u8 local[NRD_ADDR_LEN];   /* local address for incoming flows, zero for outgoing */
	__u16 server_port;          /* host byte order */
	__u8 direction;             /* enum nrd_direction */
	__u8 transport;             /* IPPROTO_UDP */
	__u8 family;                /* enum nrd_family */
	__u8 _pad[3];
};

/* Counters of one UDP aggregate since the map was last drained (added atomically). */
struct nrd_udp_stats {
	__u64 bytes_tx;             /* UDP payload bytes sent */
	__u64 bytes_rx;             /* UDP payload bytes delivered */
	__u64 packets_tx;           /* datagrams sent */
	__u64 packets_rx;           /* datagrams delivered */
};

/* Settings written into the objects before load (const volatile). */
struct nrd_settings {
	__u16 dns_ports[NRD_MAX_DNS_PORTS];  /* host byte order; 0 = unused slot */
	__u32 flags;                /* NRD_SETTING_* */
};

#define NRD_SETTING_IPV6 (1U << 0)      /* observe IPv6 (IPv4 always) */
#define NRD_SETTING_DNS_TCP (1U << 1)   /* capture DNS over TCP too */

/* One DNS packet seen on a local socket (ring buffer record). */
struct nrd_dns_event {
	__u64 timestamp_ns;         /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	struct nrd_identity id;
	__u8 local[NRD_ADDR_LEN];
	__u8 remote[NRD_ADDR_LEN];
	__u16 local_port;           /* host byte order */
	__u16 remote_port;
	__u16 payload_len;          /* DNS bytes in the packet (TCP: including length prefixes) */
	__u16 captured;             /* bytes copied into payload (<= NRD_DNS_CAPTURE) */
	__u8 sent;                  /* 1: egress (the local socket sent it) */
	__u8 transport;             /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 family;                /* enum nrd_family */
	__u8 _pad[5];
	__u8 payload[NRD_DNS_CAPTURE];
};

#ifdef __BPF__
/* --- helpers for the two cgroup_skb programs (BPF side only) ------------------------ */

#define NRD_ETH_P_IP 0x0800
#define NRD_ETH_P_IPV6 0x86DD

/* Addresses, ports and payload location of one IP packet, as seen by a local socket. */
struct nrd_packet {
	__u8 local[NRD_ADDR_LEN];
	__u8 remote[NRD_ADDR_LEN];
	__u16 local_port;
	__u16 remote_port;
	__u32 payload_off;          /* first byte after the transport header */
	__u32 payload_len;
	__u8 protocol;
	__u8 family;
};

static __always_inline void nrd_map_v4(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Fill `pkt` from the IP and UDP/TCP headers; 0 on success. `sent` selects which side
 * is local. IPv6 extension headers are not followed (such packets are skipped). */
static __always_inline int nrd_parse(struct __sk_buff *skb, int sent, int ipv6,
				     struct nrd_packet *pkt)
{
	__u32 l4, total;
	__be16 ports[2];
	__u8 *src = sent ? pkt->local : pkt->remote, *dst = sent ? pkt->remote : pkt->local;

	if (skb->protocol == bpf_htons(NRD_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;  /* a later fragment: no transport header */
		nrd_map_v4(src, ip.saddr);
		nrd_map_v4(dst, ip.daddr);
		pkt->protocol = ip.protocol;
		pkt->family = NRD_FAMILY_IPV4;
		l4 = ip.ihl * 4;
		total = bpf_ntohs(ip.tot_len);
	} else if (ipv6 && skb->protocol == bpf_htons(NRD_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		__builtin_memcpy(src, &ip6.saddr, NRD_ADDR_LEN);
		__builtin_memcpy(dst, &ip6.daddr, NRD_ADDR_LEN);
		pkt->protocol = ip6.nexthdr;
		pkt->family = NRD_FAMILY_IPV6;
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
#endif /* __BPF__ */

#endif /* NETRECEIVER_DNS_H */
