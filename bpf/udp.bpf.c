// SPDX-License-Identifier: GPL-2.0
/* UDP flows: payload bytes and datagrams per workload x peer x server port x direction.
 *
 * cgroup_skb egress/ingress on the cgroup v2 root see every datagram a local socket
 * sends or has delivered, whatever its network namespace. The owner (cgroup, tgid,
 * comm) is kept in socket storage: set when the socket is created (cgroup/sock_create
 * runs in the creator's context) or, for sockets older than the agent, on their first
 * egress (the sender's context); a socket older than the agent that only receives
 * reports tgid 0 / comm "". Which side is the server: a socket bound to an explicit
 * port (bind() with a port sets SOCK_BINDPORT_LOCK) serves on its local port;
 * otherwise the remote port is the server port. Counts go into one of two inner
 * hashes that user space swaps each interval.
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
	.flags = NR_SKB_SETTING_IPV6,
};

extern void *bpf_rdonly_cast(void *obj, __u32 btf_id) __ksym;

struct udp_flows_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct nr_flow_key);
	__type(value, struct nr_udp_stats);
} udp_flows_a SEC(".maps"), udp_flows_b SEC(".maps");

/* Slot 0 holds the inner map being written; user space swaps it each interval. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct udp_flows_inner);
} udp_flows SEC(".maps") = {
	.values = { [0] = &udp_flows_a },
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct nr_identity);
} udp_owners SEC(".maps");

NR_LOSSES_MAP(NR_SKB_LOSS_MAX);

/* The owner of the socket: from its creation (sock_create), else its first egress. */
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

static __always_inline int count(struct __sk_buff *skb, int sent)
{
	struct nr_flow_key key = {};
	struct nr_packet pkt = {};
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_UDP)
		return 1;
	if (nr_parse(skb, sent, settings.flags & NR_SKB_SETTING_IPV6, &pkt) ||
	    pkt.protocol != IPPROTO_UDP)
		return 1;
	owner(sk, sent, &key.id);
	flow_key(&pkt, bound_to_port(sk), &key);
	record(&key, pkt.payload_len, sent);
	return 1;
}

/* Remember who created a UDP socket, so datagrams it receives before it ever sends
 * (a server's first requests) are attributed to its process too. */
SEC("cgroup/sock_create")
int udp_sock_create(struct bpf_sock *sk)
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

SEC("cgroup_skb/egress")
int udp_egress(struct __sk_buff *skb)
{
	return count(skb, 1);
}

SEC("cgroup_skb/ingress")
int udp_ingress(struct __sk_buff *skb)
{
	return count(skb, 0);
}
