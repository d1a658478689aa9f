/* Structs and enums shared by the BPF programs and user space.
 *
 * Every struct here has one ctypes mirror in otel_netreceiver/probes/abi.py; unit tests
 * (tests/unit/test_abi.py for tcp.bpf.o, tests/unit/test_dns_abi.py for skb.bpf.o)
 * compare sizes and field offsets with the objects' BTF, so keep fields
 * fixed-width and padding explicit.
 *
 * The first part is used by every object; then one section per observation: TCP
 * (tcp.bpf.c) and the cgroup_skb object, UDP flows and DNS (skb.bpf.c).
 * Kernel-only helpers live in common.h.
 */
#ifndef NETRECEIVER_H
#define NETRECEIVER_H

#define NR_COMM_LEN 16
#define NR_ADDR_LEN 16          /* IPv6 size; IPv4 is stored v4-mapped (::ffff:a.b.c.d) */

enum nr_direction {
	NR_DIR_OUTGOING = 0,
	NR_DIR_INCOMING = 1,
};

enum nr_family {
	NR_FAMILY_IPV4 = 4,
	NR_FAMILY_IPV6 = 6,
};

enum nr_transport {
	NR_TRANSPORT_TCP = 6,   /* IPPROTO_TCP */
	NR_TRANSPORT_UDP = 17,  /* IPPROTO_UDP */
};

/* The process that owns a socket. */
struct nr_identity {
	__u64 cgroup_id;          /* cgroup v2 id of the socket's cgroup */
	__u32 tgid;               /* 0 when unknown */
	__u8 comm[NR_COMM_LEN];   /* "" when unknown */
	__u32 _pad;
};

/* One aggregate: workload x peer x server port x direction x transport x family.
 * The ephemeral client port is never part of it. */
struct nr_flow_key {
	struct nr_identity id;
	__u8 peer[NR_ADDR_LEN];   /* remote address (v4-mapped for IPv4) */
	__u8 local[NR_ADDR_LEN];  /* local address for incoming flows, zero for outgoing */
	__u16 server_port;        /* host byte order */
	__u8 direction;           /* enum nr_direction */
	__u8 transport;           /* enum nr_transport */
	__u8 family;              /* enum nr_family */
	__u8 _pad[3];
};

/* --- TCP: tcp.bpf.c ----------------------------------------------------------------- */

#define NR_HIST_MAX_BOUNDS 16
#define NR_HIST_BUCKETS (NR_HIST_MAX_BOUNDS + 1)

/* Why a connect failed; indexes nr_flow_stats.failed. */
enum nr_failure {
	NR_FAIL_REFUSED = 0,
	NR_FAIL_TIMEOUT = 1,
	NR_FAIL_RESET = 2,
	NR_FAIL_UNREACHABLE = 3,
	NR_FAIL_OTHER = 4,
	NR_FAIL_MAX = 5,
};

/* What tcp.bpf.o could not count; indexes its per-CPU `losses` array. */
enum nr_loss {
	NR_LOSS_SOCKETS_FULL = 0,    /* a connection could not be tracked */
	NR_LOSS_FLOWS_FULL = 1,      /* an aggregate could not be created: its update is lost */
	NR_LOSS_LISTENERS_FULL = 2,  /* a listener could not be remembered */
	NR_LOSS_RINGBUF_FULL = 3,    /* an event could not be sent to user space */
	NR_LOSS_CLOSE_MISSED = 4,    /* a tracked socket went away unseen (its counts are lost) */
	NR_LOSS_MAX = 8,
};

/* Per-CPU gauges (summed by user space); indexes the `gauges` array. */
enum nr_gauge {
	NR_GAUGE_SOCKETS = 0,   /* live entries of `sockets` (adds and removes, summed) */
	NR_GAUGE_SOCKETS_REPLACED = 1,  /* cumulative: stale `sockets` entries replaced */
	NR_GAUGE_MAX = 4,
};

/* Flags of struct nr_settings. */
#define NR_SETTING_IPV6 (1U << 0)   /* observe IPv6 sockets (IPv4 always) */

struct nr_histogram {
	__u64 buckets[NR_HIST_BUCKETS];  /* bucket i counts values <= bounds[i]; last: overflow */
	__u64 sum_ns;
	__u64 count;
};

/* Counters of one aggregate, added to atomically. Deltas since the map was last drained. */
struct nr_flow_stats {
	__u64 opened;
	__u64 closed;
	__s64 active;
	__u64 failed[NR_FAIL_MAX];
	__s64 bytes_tx;           /* payload bytes acknowledged by the peer */
	__s64 bytes_rx;           /* payload bytes received */
	__s64 packets_tx;         /* segments sent */
	__s64 packets_rx;         /* segments received */
	__s64 retransmits;        /* segments retransmitted */
	__u64 resets_tx;
	__u64 resets_rx;
	struct nr_histogram duration;
	struct nr_histogram rtt;
};

/* Settings written into tcp.bpf.o before load (const volatile). */
struct nr_settings {
	__u64 duration_bounds_ns[NR_HIST_MAX_BOUNDS];
	__u64 rtt_bounds_ns[NR_HIST_MAX_BOUNDS];
	__u32 duration_nbounds;
	__u32 rtt_nbounds;
	__u32 flags;              /* NR_SETTING_* */
	__u32 _pad;
};

/* --- UDP flows and DNS: the cgroup_skb object skb.bpf.c ------------------------------
 *
 * Its cgroup_skb programs are attached to the cgroup v2 root: they see every IP packet a
 * local socket sends (egress) or has delivered to it (ingress), in any network namespace,
 * starting at the IP header. UDP aggregates use struct nr_flow_key (transport
 * IPPROTO_UDP); the owner of a socket is a struct nr_identity.
 */

#define NR_MAX_DNS_PORTS 8
#define NR_DNS_CAPTURE 512      /* DNS payload bytes copied per packet */

/* What skb.bpf.o could not count; indexes its per-CPU `losses` array (numbered
 * apart from enum nr_loss: the two are separate arrays). */
enum nr_skb_loss {
	NR_SKB_LOSS_FLOWS_FULL = 0,    /* a UDP aggregate could not be created */
	NR_SKB_LOSS_RINGBUF_FULL = 1,  /* a DNS packet could not be sent to user space */
	NR_SKB_LOSS_OWNERS_FULL = 2,   /* a socket's owner could not be remembered */
	NR_SKB_LOSS_MAX = 4,
};

/* Counters of one UDP aggregate since the map was last drained (added atomically). */
struct nr_udp_stats {
	__u64 bytes_tx;             /* UDP payload bytes sent */
	__u64 bytes_rx;             /* UDP payload bytes delivered */
	__u64 packets_tx;           /* datagrams sent */
	__u64 packets_rx;           /* datagrams delivered */
};

/* Settings written into skb.bpf.o before load (const volatile). */
struct nr_skb_settings {
	__u16 dns_ports[NR_MAX_DNS_PORTS];  /* host byte order; 0 = unused slot */
	__u32 flags;                /* NR_SKB_SETTING_* */
};

#define NR_SKB_SETTING_IPV6 (1U << 0)     /* observe IPv6 (IPv4 always) */
#define NR_SKB_SETTING_DNS_TCP (1U << 1)  /* capture DNS over TCP too */
#define NR_SKB_SETTING_UDP (1U << 2)      /* count UDP flows */
#define NR_SKB_SETTING_DNS (1U << 3)      /* capture DNS packets */

/* One DNS packet seen on a local socket (ring buffer record). */
struct nr_dns_event {
	__u64 timestamp_ns;         /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	struct nr_identity id;
	__u8 local[NR_ADDR_LEN];
	__u8 remote[NR_ADDR_LEN];
	__u16 local_port;           /* host byte order */
	__u16 remote_port;
	__u16 payload_len;          /* DNS bytes in the packet (TCP: including length prefixes) */
	__u16 captured;             /* bytes copied into payload (<= NR_DNS_CAPTURE) */
	__u8 sent;                  /* 1: egress (the local socket sent it) */
	__u8 transport;             /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 family;                /* enum nr_family */
	__u8 _pad[5];
	__u8 payload[NR_DNS_CAPTURE];
};

#endif /* NETRECEIVER_H */
