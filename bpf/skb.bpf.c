// SPDX-License-Identifier: GPL-2.0
/* UDP flows and DNS capture: one cgroup_skb program per direction for both.
 *
 * cgroup_skb egress/ingress on the cgroup v2 root see every IP packet a local socket
 * sends or has delivered, whatever its network namespace. Each attached program costs
 * the kernel a call per packet, TCP included, so one program does both jobs, and
 * decides from the socket (`struct bpf_sock` fields are plain context loads) before
 * it reads a byte of the packet: a TCP packet leaves at once unless DNS over TCP is on
 * and the socket's peer port is a DNS port. `settings.flags` (rodata, so the verifier
 * removes the disabled part) says which parts run: UDP counting, DNS capture, or both.
 *
 * UDP flows: payload bytes and datagrams per workload x peer x server port x
 * direction, added into one of two inner hashes that user space swaps each interval.
 * The owner (cgroup, tgid, comm) is kept in socket storage: set when a UDP socket is
 * bound (cgroup/post_bind4/6 runs in the binder's context; TCP clients never bind, so
 * their connections do not pay for it) or on its first egress (the sender's context).
 * A socket older than the agent that only receives reports tgid 0 / comm "". Which
 * side is the server: a socket bound to an explicit port (SOCK_BINDPORT_LOCK) serves
 * on its local port; otherwise the remote port is the server port.
 *
 * DNS: a packet a local socket sends to a DNS port (a query) or receives from one (a
 * response), over UDP or TCP, is copied (at most NR_DNS_CAPTURE payload bytes) into the
 * `dns_events` ring buffer with the socket's cgroup, the kernel timestamp and the
 * addresses. Servers' own packets (DNS port on the local side) are not sent. A query's
 * sender is taken from the current task: egress of a UDP datagram, and of TCP data
 * written by sendmsg, runs in its context. A full ring buffer is a counted loss. The
 * reader is woken only when the ring fills up (see wakeup_flag); otherwise it reads on
 * its own period.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "netreceiver.h"
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

#define SOCK_BINDPORT_LOCK 8

const volatile struct nr_skb_settings settings = {
	.dns_ports = {53},
	.flags = NR_SKB_SETTING_IPV6 | NR_SKB_SETTING_DNS_TCP | NR_SKB_SETTING_UDP |
		 NR_SKB_SETTING_DNS,
};

/* Puts struct nr_dns_event into BTF, so the ABI test can compare the ctypes mirror. */
const struct nr_dns_event *dns_event_type __attribute__((unused));

extern void *bpf_rdonly_cast(void *obj, __u32 btf_id) __ksym;

/* --- maps ------------------------------------------------------------------------ */

NR_SWAPPED_FLOW_MAPS(udp_flows, struct nr_udp_stats);

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct nr_identity);
} udp_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} dns_events SEC(".maps");

/* Where an event is assembled before bpf_ringbuf_output copies only its used bytes:
 * a query takes ~130 bytes of the ring instead of the 600 a fixed reservation would. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nr_dns_event);
} dns_scratch SEC(".maps");

NR_LOSSES_MAP(NR_SKB_LOSS_MAX);

static __always_inline int wants(__u32 flag)
{
	return settings.flags & flag;
}

/* --- UDP flows ------------------------------------------------------------------- */

/* The owner of the socket: from its bind (post_bind), else its first egress. */
static __always_inline void owner(struct bpf_sock *sk, int sent, struct nr_identity *id)
{
	struct nr_identity *stored;

	id->cgroup_id = bpf_sk_cgroup_id(sk);
	stored = bpf_sk_storage_get(&udp_owners, sk, 0, 0);
	if (stored) {
		id->tgid = stored->tgid;
		__builtin_memcpy(id->comm, stored->comm, NR_COMM_LEN);
		return;
	}
	if (!sent)
		return;
	id->tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(id->comm, sizeof(id->comm));
	if (!bpf_sk_storage_get(&udp_owners, sk, id, BPF_SK_STORAGE_GET_F_CREATE))
		count_loss(NR_SKB_LOSS_OWNERS_FULL);
}

static __always_inline int bound_to_port(struct bpf_sock *sk)
{
	struct sock *ksk = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct sock));

	return ksk->sk_userlocks & SOCK_BINDPORT_LOCK;
}

static __always_inline void flow_key(struct nr_packet *pkt, int serving,
				     struct nr_flow_key *key)
{
	__builtin_memcpy(key->peer, pkt->remote, NR_ADDR_LEN);
	key->transport = IPPROTO_UDP;
	key->family = pkt->family;
	if (serving) {
		key->direction = NR_DIR_INCOMING;
		key->server_port = pkt->local_port;
		__builtin_memcpy(key->local, pkt->local, NR_ADDR_LEN);
	} else {
		key->direction = NR_DIR_OUTGOING;
		key->server_port = pkt->remote_port;
	}
}

static __always_inline void add(struct nr_udp_stats *stats, __u64 bytes, int sent)
{
	if (sent) {
		__sync_fetch_and_add(&stats->bytes_tx, bytes);
		__sync_fetch_and_add(&stats->packets_tx, 1);
	} else {
		__sync_fetch_and_add(&stats->bytes_rx, bytes);
		__sync_fetch_and_add(&stats->packets_rx, 1);
	}
}

static __always_inline void record(struct nr_flow_key *key, __u64 bytes, int sent)
{
	struct nr_udp_stats zero = {}, *stats;
	__u32 slot = 0;
	void *flows = bpf_map_lookup_elem(&udp_flows, &slot);

	if (!flows)
		return;
	stats = bpf_map_lookup_elem(flows, key);
	if (!stats) {
		/* NOEXIST: another CPU may have created it meanwhile; fine either way */
		bpf_map_update_elem(flows, key, &zero, BPF_NOEXIST);
		stats = bpf_map_lookup_elem(flows, key);
		if (!stats) {
			count_loss(NR_SKB_LOSS_FLOWS_FULL);
			return;
		}
	}
	add(stats, bytes, sent);
}

static __always_inline void count_udp(struct bpf_sock *sk, struct nr_packet *pkt, int sent)
{
	struct nr_flow_key key = {};

	owner(sk, sent, &key.id);
	flow_key(pkt, bound_to_port(sk), &key);
	record(&key, pkt->payload_len, sent);
}

/* --- DNS capture ----------------------------------------------------------------- */

static __always_inline int dns_port(__u16 port)
{
	for (int i = 0; i < NR_MAX_DNS_PORTS; i++)
		if (settings.dns_ports[i] && settings.dns_ports[i] == port)
			return 1;
	return 0;
}

static __always_inline void fill(struct nr_dns_event *event, struct bpf_sock *sk,
				 struct nr_packet *pkt, int sent)
{
	event->timestamp_ns = bpf_ktime_get_ns();  /* CLOCK_MONOTONIC */
	event->id.cgroup_id = bpf_sk_cgroup_id(sk);
	if (sent) {
		event->id.tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(event->id.comm, sizeof(event->id.comm));
	}
	__builtin_memcpy(event->local, pkt->local, NR_ADDR_LEN);
	__builtin_memcpy(event->remote, pkt->remote, NR_ADDR_LEN);
	event->local_port = pkt->local_port;
	event->remote_port = pkt->remote_port;
	event->payload_len = pkt->payload_len;
	event->sent = sent;
	event->transport = pkt->protocol;
	event->family = pkt->family;
}

/* Copy up to NR_DNS_CAPTURE payload bytes; returns how many were copied. */
static __always_inline __u32 copy_payload(struct nr_dns_event *event, struct __sk_buff *skb,
					  __u32 offset, __u32 length)
{
	if (length > NR_DNS_CAPTURE)
		length = NR_DNS_CAPTURE;
	if (length == 0)
		return 0;
	/* the same value, written so the verifier sees 1 <= length <= NR_DNS_CAPTURE */
	length = ((length - 1) & (NR_DNS_CAPTURE - 1)) + 1;
	if (bpf_skb_load_bytes(skb, offset, event->payload, length))
		return 0;
	return length;
}

/* Wake the reader only when the ring is a quarter full. It reads every poll period
 * anyway, and the default (wake it whenever it had caught up, i.e. for nearly every
 * record at DNS rates) costs a reader wakeup, run inside this program, per packet. */
static __always_inline __u64 wakeup_flag(void)
{
	__u64 size = bpf_ringbuf_query(&dns_events, BPF_RB_RING_SIZE);

	if (bpf_ringbuf_query(&dns_events, BPF_RB_AVAIL_DATA) >= size / 4)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void capture(struct __sk_buff *skb, struct bpf_sock *sk,
				    struct nr_packet *pkt, int sent)
{
	struct nr_dns_event *event;
	__u32 zero = 0, captured;

	if (!pkt->payload_len || !dns_port(pkt->remote_port))
		return;
	event = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!event)
		return;
	__builtin_memset(event, 0, offsetof(struct nr_dns_event, payload));
	fill(event, sk, pkt, sent);
	captured = copy_payload(event, skb, pkt->payload_off, pkt->payload_len);
	event->captured = captured;
	if (bpf_ringbuf_output(&dns_events, event,
			       offsetof(struct nr_dns_event, payload) + captured, wakeup_flag()))
		count_loss(NR_SKB_LOSS_RINGBUF_FULL);
}

/* --- the programs ---------------------------------------------------------------- */

static __always_inline void udp_packet(struct __sk_buff *skb, struct bpf_sock *sk, int sent)
{
	struct nr_packet pkt = {};

	/* DNS only, and the socket is connected to a port that is not DNS */
	if (!wants(NR_SKB_SETTING_UDP) && sk->dst_port && !dns_port(bpf_ntohs(sk->dst_port)))
		return;
	if (nr_parse(skb, sent, wants(NR_SKB_SETTING_IPV6), &pkt) ||
	    pkt.protocol != IPPROTO_UDP)
		return;
	if (wants(NR_SKB_SETTING_UDP))
		count_udp(sk, &pkt, sent);
	if (wants(NR_SKB_SETTING_DNS))
		capture(skb, sk, &pkt, sent);
}

/* DNS over TCP: called only for sockets whose peer port is a DNS port. */
static __always_inline void tcp_packet(struct __sk_buff *skb, struct bpf_sock *sk, int sent)
{
	struct nr_packet pkt = {};

	if (nr_parse(skb, sent, wants(NR_SKB_SETTING_IPV6), &pkt) ||
	    pkt.protocol != IPPROTO_TCP)
		return;
	capture(skb, sk, &pkt, sent);
}

static __always_inline int observe(struct __sk_buff *skb, int sent)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	if (sk->protocol == IPPROTO_UDP)
		udp_packet(skb, sk, sent);
	else if (wants(NR_SKB_SETTING_DNS_TCP) && sk->protocol == IPPROTO_TCP &&
		 dns_port(bpf_ntohs(sk->dst_port)))
		tcp_packet(skb, sk, sent);
	return 1;
}

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb)
{
	return observe(skb, 1);
}

SEC("cgroup_skb/ingress")
int skb_ingress(struct __sk_buff *skb)
{
	return observe(skb, 0);
}

/* Remember who bound a UDP socket, so datagrams it receives before it ever sends (a
 * server's first requests) are attributed to its process too. Runs on bind() only:
 * TCP listeners pass once each, TCP clients (which do not bind) never. */
static __always_inline int remember_binder(struct bpf_sock *sk)
{
	struct nr_identity id = {};

	if (sk->protocol != IPPROTO_UDP)
		return 1;
	id.cgroup_id = bpf_get_current_cgroup_id();
	id.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(id.comm, sizeof(id.comm));
	if (!bpf_sk_storage_get(&udp_owners, sk, &id, BPF_SK_STORAGE_GET_F_CREATE))
		count_loss(NR_SKB_LOSS_OWNERS_FULL);
	return 1;
}

SEC("cgroup/post_bind4")
int udp_bind4(struct bpf_sock *sk)
{
	return remember_binder(sk);
}

SEC("cgroup/post_bind6")
int udp_bind6(struct bpf_sock *sk)
{
	return remember_binder(sk);
}
