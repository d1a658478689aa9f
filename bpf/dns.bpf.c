// SPDX-License-Identifier: GPL-2.0
/* DNS packets of local clients, copied to user space for parsing and matching.
 *
 * cgroup_skb egress/ingress on the cgroup v2 root: a packet a local socket sends to a
 * DNS port (a query) or receives from one (a response), over UDP or TCP, is copied
 * (at most NR_DNS_CAPTURE payload bytes) into the `dns_events` ring buffer with the
 * socket's cgroup, the kernel timestamp and the addresses. Servers' own packets (port
 * 53 on the local side) are not sent. A query's sender is taken from the current task:
 * egress of a UDP datagram, and of TCP data written by sendmsg, runs in its context.
 * A full ring buffer is a counted loss.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "netreceiver.h"
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

const volatile struct nr_skb_settings settings = {
	.dns_ports = {53},
	.flags = NR_SKB_SETTING_IPV6 | NR_SKB_SETTING_DNS_TCP,
};

/* Puts struct nr_dns_event into BTF, so the ABI test can compare the ctypes mirror. */
const struct nr_dns_event *dns_event_type __attribute__((unused));

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

static __always_inline int capture(struct __sk_buff *skb, int sent)
{
	struct nr_dns_event *event;
	struct nr_packet pkt = {};
	__u32 zero = 0, captured;
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	if (sk->protocol != IPPROTO_UDP &&
	    !(sk->protocol == IPPROTO_TCP && (settings.flags & NR_SKB_SETTING_DNS_TCP)))
		return 1;
	/* A TCP socket is connected: its peer port says whether it talks DNS, so the
	 * packets of every other TCP connection leave before any header is read. */
	if (sk->protocol == IPPROTO_TCP && !dns_port(bpf_ntohs(sk->dst_port)))
		return 1;
	if (nr_parse(skb, sent, settings.flags & NR_SKB_SETTING_IPV6, &pkt) ||
	    pkt.protocol != sk->protocol || !dns_port(pkt.remote_port) || !pkt.payload_len)
		return 1;
	event = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!event)
		return 1;
	__builtin_memset(event, 0, offsetof(struct nr_dns_event, payload));
	fill(event, sk, &pkt, sent);
	captured = copy_payload(event, skb, pkt.payload_off, pkt.payload_len);
	event->captured = captured;
	if (bpf_ringbuf_output(&dns_events, event,
			       offsetof(struct nr_dns_event, payload) + captured, 0))
		count_loss(NR_SKB_LOSS_RINGBUF_FULL);
	return 1;
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	return capture(skb, 1);
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	return capture(skb, 0);
}
