// SPDX-License-Identifier: GPL-2.0
/* TCP flows, counted in the kernel.
 *
 * Per socket (`sockets`, keyed by the struct sock address) we keep the flow key and the
 * counter values last added to the aggregates; aggregates (`flows` -> inner hash keyed by
 * struct nr_flow_key) receive atomic deltas. Counters come from struct tcp_sock itself, so
 * nothing is counted per packet here. Deltas are flushed at close, at destroy, and by the
 * `iter/tcp` pass user space runs once per interval (which also finds connections that
 * existed before the agent started).
 *
 * Cost: most events touch nothing but a socket's own entry. An aggregate is looked up when
 * there is something to add to it: normally once per short connection and end (at close
 * or destroy, where the opening is counted too) and once per interval for a long one. The
 * per-call send/receive hooks look a socket up only while some socket on its local port
 * waits to be claimed (`provisional_on_port`); otherwise they read one counter and leave.
 *
 * Why a hash and not BPF_MAP_TYPE_SK_STORAGE: creating socket storage costs ~2 us per
 * socket here (two memcg-charged allocations, and a free when the socket goes), against
 * ~0.5 us for an insert into this preallocated hash plus ~0.3 us for the delete; with two
 * tracked sockets per local connection that is more than the whole churn budget.
 *
 * The sockets handed to tp_btf and iter programs are trusted BTF pointers: fields are read
 * with plain (CO-RE relocated) loads, no bpf_probe_read_kernel call per field.
 *
 * Only tracepoints (tp_btf) and an iterator: no kprobes, no fentry.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "netreceiver.h"
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define ENETUNREACH 101
#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111
#define EHOSTUNREACH 113
#define EEXIST 17
#define E2BIG 7

/* struct sock_state.flags */
#define SOCK_PROVISIONAL (1U << 0)  /* identity not final yet: counts are held back */
#define SOCK_ESTABLISHED (1U << 1)  /* reached ESTABLISHED (or was found established) */
#define SOCK_ENDED (1U << 2)        /* closed or failed has been counted */
#define SOCK_PREEXISTING (1U << 3)  /* found by the iterator: opened before we started */
#define SOCK_COUNTED (1U << 4)      /* its opening (and +1 active) is in the aggregates */

/* A provisional identity waits this many iterator passes (at least one full interval)
 * for its process to read or write, then keeps the listener's identity. */
#define CLAIM_GRACE_PASSES 1

/* Indexes of the counters kept per socket (current and last reported). */
enum counter {
	C_BYTES_TX, C_BYTES_RX, C_SEGS_OUT, C_SEGS_IN, C_RETRANS, C_RST_TX, C_RST_RX, C_MAX,
};

const volatile struct nr_settings settings = {};

struct sock_state {
	struct nr_flow_key key;
	__u64 start_ns;           /* when it became established; 0 when unknown */
	__s64 last[C_MAX];        /* values already added to the aggregates */
	__s64 resets[2];          /* resets sent / received (no tcp_sock counter exists) */
	__u32 flags;
	__u32 passes;             /* iterator passes seen while provisional */
	__u16 local_port;         /* its provisional_on_port slot */
	__u16 _pad[3];
};

struct listener_key {
	__u64 netns;              /* net_cookie of the listener's namespace */
	__u16 port;               /* host byte order */
	__u16 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_state);
} sockets SEC(".maps");

/* Provisional sockets by local port (any namespace): the send/receive hooks look a socket
 * up only when its port has some. */
__u32 provisional_on_port[65536] = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listener_key);
	__type(value, struct nr_identity);
} listeners SEC(".maps");

/* Two aggregate maps; user space swaps which one `flows` points to, then drains the other. */
NR_SWAPPED_FLOW_MAPS(flows, struct nr_flow_stats);

NR_LOSSES_MAP(NR_LOSS_MAX);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_GAUGE_MAX);
	__type(key, __u32);
	__type(value, __s64);
} gauges SEC(".maps");

/* Zero values to insert from (too large for the BPF stack). */
struct nr_flow_stats empty_stats = {};
struct sock_state empty_sock = {};

static __always_inline void gauge_add(__u32 gauge, __s64 delta)
{
	__s64 *slot = bpf_map_lookup_elem(&gauges, &gauge);

	if (slot)
		*slot += delta;
}

/* The aggregate of `key` in the current inner map, created when absent. */
static __always_inline struct nr_flow_stats *flow_stats(const struct nr_flow_key *key)
{
	__u32 zero = 0;
	struct nr_flow_stats *stats;
	void *inner = bpf_map_lookup_elem(&flows, &zero);
	long err;

	if (!inner)
		return NULL;
	stats = bpf_map_lookup_elem(inner, key);
	if (stats)
		return stats;
	err = bpf_map_update_elem(inner, key, &empty_stats, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		count_loss(NR_LOSS_FLOWS_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(inner, key);
}

static __always_inline void hist_add(struct nr_histogram *hist, const volatile __u64 *bounds,
				     __u32 nbounds, __u64 value)
{
	__u32 i, bucket = nbounds;

	for (i = 0; i < NR_HIST_MAX_BOUNDS; i++) {
		if (i < nbounds && value <= bounds[i]) {
			bucket = i;
			break;
		}
	}
	if (bucket > NR_HIST_MAX_BOUNDS)
		bucket = NR_HIST_MAX_BOUNDS;
	__sync_fetch_and_add(&hist->buckets[bucket], 1);
	__sync_fetch_and_add(&hist->sum_ns, value);
	__sync_fetch_and_add(&hist->count, 1);
}

/* --- reading the socket ------------------------------------------------------------- */

static __always_inline bool is_tcp_inet(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;

	return (family == AF_INET || family == AF_INET6) && sk->sk_protocol == IPPROTO_TCP;
}

static __always_inline __u64 netns_of(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->net_cookie;
}

static __always_inline void copy_addr(__u32 dst[4], const struct in6_addr *src)
{
	dst[0] = src->in6_u.u6_addr32[0];
	dst[1] = src->in6_u.u6_addr32[1];
	dst[2] = src->in6_u.u6_addr32[2];
	dst[3] = src->in6_u.u6_addr32[3];
}

/* Remote and local addresses, IPv4 as v4-mapped IPv6; returns the nr_family. */
static __always_inline __u8 read_addrs(const struct sock *sk, __u32 peer[4], __u32 local[4])
{
	if (sk->__sk_common.skc_family == AF_INET) {
		peer[0] = peer[1] = local[0] = local[1] = 0;
		peer[2] = local[2] = bpf_htonl(0xffff);
		peer[3] = sk->__sk_common.skc_daddr;
		local[3] = sk->__sk_common.skc_rcv_saddr;
		return NR_FAMILY_IPV4;
	}
	copy_addr(peer, &sk->__sk_common.skc_v6_daddr);
	copy_addr(local, &sk->__sk_common.skc_v6_rcv_saddr);
	if (peer[0] == 0 && peer[1] == 0 && peer[2] == bpf_htonl(0xffff))
		return NR_FAMILY_IPV4;
	return NR_FAMILY_IPV6;
}

/* Current values of the per-socket counters (resets come from our own tallies);
 * false when `sk` is not a full TCP socket. */
static __always_inline bool read_counters(struct sock *sk, const struct sock_state *st,
					  __s64 now[C_MAX])
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (!tp)
		return false;
	/* Payload sent once: bytes_sent counts retransmitted payload again. (bytes_acked would
	 * also count the SYN and FIN sequence numbers.) */
	now[C_BYTES_TX] = tp->bytes_sent - tp->bytes_retrans;
	/* bytes_received advances with rcv_nxt, which a received FIN moves by one; tcp_fin
	 * sets SOCK_DONE in the same locked section. */
	now[C_BYTES_RX] = tp->bytes_received - ((sk->__sk_common.skc_flags >> SOCK_DONE) & 1);
	now[C_SEGS_OUT] = tp->segs_out;
	now[C_SEGS_IN] = tp->segs_in;
	now[C_RETRANS] = tp->total_retrans;
	now[C_RST_TX] = st->resets[0];
	now[C_RST_RX] = st->resets[1];
	return true;
}

/* --- identity ------------------------------------------------------------------------ */

static __always_inline __u64 sock_cgroup(const struct sock *sk)
{
	return sk->sk_cgrp_data.cgroup->kn->id;
}

/* The current task as owner; the cgroup is the socket's (accepted sockets inherit it). */
static __always_inline void identity_from_task(struct nr_identity *id, const struct sock *sk)
{
	id->cgroup_id = sock_cgroup(sk);
	if (!id->cgroup_id)
		id->cgroup_id = bpf_get_current_cgroup_id();
	id->tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(id->comm, sizeof(id->comm));
}

static __always_inline struct nr_identity *listener_of(const struct sock *sk)
{
	struct listener_key key = { .netns = netns_of(sk), .port = sk->__sk_common.skc_num };

	return bpf_map_lookup_elem(&listeners, &key);
}

/* Remember a listener; `from_task` in process context (listen()), not in the iterator. */
static __always_inline void remember_listener(const struct sock *sk, bool from_task)
{
	struct listener_key key = { .netns = netns_of(sk), .port = sk->__sk_common.skc_num };
	struct nr_identity id = {};

	if (from_task)
		identity_from_task(&id, sk);
	else
		id.cgroup_id = sock_cgroup(sk);
	if (bpf_map_update_elem(&listeners, &key, &id, from_task ? BPF_ANY : BPF_NOEXIST) == -E2BIG)
		count_loss(NR_LOSS_LISTENERS_FULL);
}

static __always_inline void forget_listener(const struct sock *sk)
{
	struct listener_key key = { .netns = netns_of(sk), .port = sk->__sk_common.skc_num };

	bpf_map_delete_elem(&listeners, &key);
}

/* --- per-socket state ------------------------------------------------------------------ */

static __always_inline struct sock_state *lookup_sock(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	return bpf_map_lookup_elem(&sockets, &key);
}

static __always_inline void provisional_add(__u16 port, int delta)
{
	__sync_fetch_and_add(&provisional_on_port[port], delta);
}

/* The entry at a socket's address is ours now: the old one is an earlier connection of
 * this socket, or one whose destroy we never saw. If its close was never seen either,
 * that connection's counts are lost: say so. */
static __always_inline void replace_sock(struct sock_state *st)
{
	__u32 flags = __sync_fetch_and_or(&st->flags, SOCK_ENDED);

	if (!(flags & SOCK_ENDED))
		count_loss(NR_LOSS_CLOSE_MISSED);
	if (__sync_fetch_and_and(&st->flags, ~SOCK_PROVISIONAL) & SOCK_PROVISIONAL)
		provisional_add(st->local_port, -1);
	gauge_add(NR_GAUGE_SOCKETS_REPLACED, 1);
}

/* A fresh `sockets` entry with its key filled from the socket; NULL (counted) when full. */
static __always_inline struct sock_state *track_sock(struct sock *sk, __u8 direction,
						     __u32 flags)
{
	__u64 key = (__u64)sk;
	struct sock_state *st;
	long err = bpf_map_update_elem(&sockets, &key, &empty_sock, BPF_NOEXIST);

	if (err == -EEXIST) {
		st = bpf_map_lookup_elem(&sockets, &key);
		if (st)
			replace_sock(st);
		err = bpf_map_update_elem(&sockets, &key, &empty_sock, BPF_EXIST);
	} else if (!err) {
		gauge_add(NR_GAUGE_SOCKETS, 1);
	}
	st = err ? NULL : bpf_map_lookup_elem(&sockets, &key);
	if (!st) {
		count_loss(NR_LOSS_SOCKETS_FULL);
		return NULL;
	}
	st->local_port = sk->__sk_common.skc_num;
	if (flags & SOCK_PROVISIONAL)
		provisional_add(st->local_port, 1);
	st->flags = flags;
	st->key.transport = NR_TRANSPORT_TCP;
	st->key.direction = direction;
	st->key.family = read_addrs(sk, (__u32 *)st->key.peer, (__u32 *)st->key.local);
	if (direction == NR_DIR_OUTGOING) {
		__builtin_memset(st->key.local, 0, sizeof(st->key.local));
		st->key.server_port = bpf_ntohs(sk->__sk_common.skc_dport);
	} else {
		st->key.server_port = sk->__sk_common.skc_num;
	}
	return st;
}

/* Whether any counter moved since the last flush (nothing is taken). */
static __always_inline bool counters_changed(struct sock *sk, const struct sock_state *st)
{
	__s64 now[C_MAX];
	int i;

	if (!read_counters(sk, st, now))
		return false;
	for (i = 0; i < C_MAX; i++)
		if (now[i] != st->last[i])
			return true;
	return false;
}

/* Take what changed since the last flush into `delta`; false when nothing did. */
static __always_inline bool take_deltas(struct sock *sk, struct sock_state *st,
					__s64 delta[C_MAX])
{
	__s64 now[C_MAX], any = 0;
	int i;

	if (!read_counters(sk, st, now))
		return false;
	/* xchg keeps the sum of deltas exact even if two flushes of one socket interleave. */
	for (i = 0; i < C_MAX; i++) {
		delta[i] = now[i] - __sync_lock_test_and_set(&st->last[i], now[i]);
		any |= delta[i];
	}
	return any != 0;
}

static __always_inline void add_deltas(struct nr_flow_stats *stats, const __s64 delta[C_MAX])
{
	if (delta[C_BYTES_TX])
		__sync_fetch_and_add(&stats->bytes_tx, delta[C_BYTES_TX]);
	if (delta[C_BYTES_RX])
		__sync_fetch_and_add(&stats->bytes_rx, delta[C_BYTES_RX]);
	if (delta[C_SEGS_OUT])
		__sync_fetch_and_add(&stats->packets_tx, delta[C_SEGS_OUT]);
	if (delta[C_SEGS_IN])
		__sync_fetch_and_add(&stats->packets_rx, delta[C_SEGS_IN]);
	if (delta[C_RETRANS])
		__sync_fetch_and_add(&stats->retransmits, delta[C_RETRANS]);
	if (delta[C_RST_TX])
		__sync_fetch_and_add(&stats->resets_tx, delta[C_RST_TX]);
	if (delta[C_RST_RX])
		__sync_fetch_and_add(&stats->resets_rx, delta[C_RST_RX]);
}

/* Count the opening once (never for a connection that predates us), then add what
 * changed since the last flush to the aggregate `stats` of this socket's key. `ending`:
 * an established connection ends in this call, so it leaves the active count (or never
 * enters it, when its opening is counted in the same call). */
static __always_inline void account(struct sock *sk, struct sock_state *st,
				    struct nr_flow_stats *stats, bool ending)
{
	__s64 delta[C_MAX];

	if ((st->flags & (SOCK_ESTABLISHED | SOCK_COUNTED)) == SOCK_ESTABLISHED &&
	    !(__sync_fetch_and_or(&st->flags, SOCK_COUNTED) & SOCK_COUNTED)) {
		if (!(st->flags & SOCK_PREEXISTING))
			__sync_fetch_and_add(&stats->opened, 1);
		if (!ending)
			__sync_fetch_and_add(&stats->active, 1);
	} else if (ending) {
		__sync_fetch_and_add(&stats->active, -1);
	}
	if (take_deltas(sk, st, delta))
		add_deltas(stats, delta);
}

static __always_inline void rtt_sample(struct sock *sk, struct nr_flow_stats *stats)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u64 srtt_us;

	if (!tp)
		return;
	srtt_us = tp->srtt_us >> 3;
	if (srtt_us)
		hist_add(&stats->rtt, settings.rtt_bounds_ns, settings.rtt_nbounds, srtt_us * 1000);
}

/* Make a provisional identity final: from the current task when `from_task`, else keep
 * the listener's. Counts held back until now go to the final key at the next flush. */
static __always_inline void finalize(struct sock *sk, struct sock_state *st, bool from_task)
{
	if (!(st->flags & SOCK_PROVISIONAL))
		return;
	if (!(__sync_fetch_and_and(&st->flags, ~SOCK_PROVISIONAL) & SOCK_PROVISIONAL))
		return;  /* someone else finalized it */
	provisional_add(st->local_port, -1);
	if (from_task)
		identity_from_task(&st->key.id, sk);
}

/* --- state transitions ----------------------------------------------------------------- */

static __always_inline void on_connect(struct sock *sk)
{
	struct sock_state *st = track_sock(sk, NR_DIR_OUTGOING, 0);

	if (st)
		identity_from_task(&st->key.id, sk);
}

/* Opened is counted at the first flush (close, destroy or the interval's pass, which runs
 * before every drain), so a short connection costs one aggregate lookup, not two. */
static __always_inline void on_connected(struct sock_state *st)
{
	st->start_ns = bpf_ktime_get_ns();
	__sync_fetch_and_or(&st->flags, SOCK_ESTABLISHED);
}

/* An accepted child left SYN_RECV: the listener's identity, provisional until a process
 * reads or writes it. Usually SYN_RECV -> ESTABLISHED in softirq; but when the acceptor
 * owns the child before the handshake's ACK is processed, and closes it at once, the
 * child goes SYN_RECV -> FIN_WAIT1 in process context instead. */
static __always_inline void on_accepted(struct sock *sk)
{
	struct nr_identity *owner = listener_of(sk);
	struct sock_state *st = track_sock(sk, NR_DIR_INCOMING,
					   SOCK_PROVISIONAL | SOCK_ESTABLISHED);

	if (!st)
		return;
	st->start_ns = bpf_ktime_get_ns();
	if (owner)
		st->key.id = *owner;
	else
		st->key.id.cgroup_id = sock_cgroup(sk);
}

/* Leaving SYN_RECV: an accepted child, or (rarely) our own connect in a simultaneous
 * open. Any other state of this socket is from an earlier connection and is replaced. */
static __always_inline void on_left_syn_recv(struct sock *sk, int newstate)
{
	struct sock_state *st = lookup_sock(sk);

	if (st && st->key.direction == NR_DIR_OUTGOING && !(st->flags & SOCK_ENDED) &&
	    !(st->flags & SOCK_ESTABLISHED)) {
		if (newstate == TCP_ESTABLISHED)
			on_connected(st);
		return;
	}
	on_accepted(sk);
}

static __always_inline __u32 failure_reason(const struct sock *sk)
{
	switch (sk->sk_err) {
	case ECONNREFUSED:
		return NR_FAIL_REFUSED;
	case ETIMEDOUT:
		return NR_FAIL_TIMEOUT;
	case ECONNRESET:
		return NR_FAIL_RESET;
	case EHOSTUNREACH:
	case ENETUNREACH:
		return NR_FAIL_UNREACHABLE;
	default:
		return NR_FAIL_OTHER;
	}
}

/* Count the end of a connection once: closed (with its duration and last RTT) or failed. */
static __always_inline void end(struct sock *sk, struct sock_state *st)
{
	struct nr_flow_stats *stats;
	__u32 reason;

	if (__sync_fetch_and_or(&st->flags, SOCK_ENDED) & SOCK_ENDED)
		return;
	finalize(sk, st, false);
	stats = flow_stats(&st->key);
	if (!stats)
		return;
	if (!(st->flags & SOCK_ESTABLISHED)) {
		account(sk, st, stats, false);
		reason = failure_reason(sk);
		if (reason < NR_FAIL_MAX)
			__sync_fetch_and_add(&stats->failed[reason], 1);
		return;
	}
	account(sk, st, stats, true);
	__sync_fetch_and_add(&stats->closed, 1);
	rtt_sample(sk, stats);
	if (st->start_ns)
		hist_add(&stats->duration, settings.duration_bounds_ns, settings.duration_nbounds,
			 bpf_ktime_get_ns() - st->start_ns);
}

/* An orphan (closed by its process) that reaches CLOSE is destroyed right after, in the
 * same call (tcp_done, tcp_close): its end is counted there, with one aggregate lookup
 * for both. A socket its process still holds may be destroyed much later: count now. */
static __always_inline void on_close(struct sock *sk)
{
	struct sock_state *st;

	if ((sk->__sk_common.skc_flags >> SOCK_DEAD) & 1)
		return;
	st = lookup_sock(sk);
	if (st)
		end(sk, st);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state, struct sock *sk, int oldstate, int newstate)
{
	struct sock_state *st;

	/* Most transitions (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, the child's LISTEN -> SYN_RECV)
	 * need nothing: leave before reading the socket. */
	if (newstate != TCP_SYN_SENT && newstate != TCP_LISTEN && newstate != TCP_CLOSE &&
	    oldstate != TCP_SYN_RECV && oldstate != TCP_SYN_SENT)
		return 0;
	if (!is_tcp_inet(sk))
		return 0;
	if (newstate == TCP_SYN_SENT) {
		on_connect(sk);
	} else if (newstate == TCP_LISTEN) {
		remember_listener(sk, true);
	} else if (oldstate == TCP_LISTEN) {
		forget_listener(sk);  /* LISTEN -> CLOSE */
		return 0;
	} else if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		st = lookup_sock(sk);
		if (st)
			on_connected(st);
	} else if (oldstate == TCP_SYN_RECV) {
		on_left_syn_recv(sk, newstate);
	}
	if (newstate == TCP_CLOSE)
		on_close(sk);
	return 0;
}

/* The last counts of a socket whose end is already counted. */
static __always_inline void last_flush(struct sock *sk, struct sock_state *st)
{
	struct nr_flow_stats *stats;
	__s64 delta[C_MAX];

	if (!take_deltas(sk, st, delta))
		return;
	stats = flow_stats(&st->key);
	if (stats)
		add_deltas(stats, delta);
}

/* Resets may follow the CLOSE transition (SO_LINGER 0 closes, then sends the reset), so
 * the entry lives until the socket is destroyed. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);

	if (!st)
		return 0;
	if (st->flags & SOCK_ENDED)
		last_flush(sk, st);
	else
		end(sk, st);
	if (bpf_map_delete_elem(&sockets, &key) == 0)
		gauge_add(NR_GAUGE_SOCKETS, -1);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_reset_sent, struct sock *sk, const struct sk_buff *skb)
{
	struct sock_state *st;

	if (!sk)
		return 0;  /* reset for a packet without a socket */
	st = lookup_sock(sk);
	if (st)
		__sync_fetch_and_add(&st->resets[0], 1);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_reset_received, struct sock *sk)
{
	struct sock_state *st = lookup_sock(sk);

	if (st)
		__sync_fetch_and_add(&st->resets[1], 1);
	return 0;
}

/* --- owner of accepted sockets: the first process that reads or writes ----------------- */

/* Runs on every send and receive of every socket: while no socket on this local port
 * waits to be claimed, one field and one counter are read. */
static __always_inline void claim(struct sock *sk)
{
	struct sock_state *st;

	if (!provisional_on_port[sk->__sk_common.skc_num] || !is_tcp_inet(sk))
		return;
	st = lookup_sock(sk);
	if (st && (st->flags & SOCK_PROVISIONAL))
		finalize(sk, st, true);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tcp_sent, struct sock *sk, int ret, int flags)
{
	claim(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tcp_received, struct sock *sk, int ret, int flags)
{
	claim(sk);
	return 0;
}

/* --- the per-interval pass ----------------------------------------------------------- */

/* A connection open before we started: counted from now on, never as opened. */
static __always_inline void adopt(struct sock *sk)
{
	struct nr_identity *owner = listener_of(sk);
	struct sock_state *st;
	__s64 now[C_MAX];
	int i;

	st = track_sock(sk, owner ? NR_DIR_INCOMING : NR_DIR_OUTGOING,
			SOCK_PROVISIONAL | SOCK_ESTABLISHED | SOCK_PREEXISTING);
	if (!st)
		return;
	if (owner)
		st->key.id = *owner;
	else
		st->key.id.cgroup_id = sock_cgroup(sk);
	if (!read_counters(sk, st, now))
		return;
	for (i = 0; i < C_MAX; i++)
		st->last[i] = now[i];
}

/* Flush a tracked socket; a provisional one gets CLAIM_GRACE_PASSES passes to be claimed
 * by its process, then keeps the listener's identity. */
static __always_inline void visit(struct sock *sk, struct sock_state *st)
{
	struct nr_flow_stats *stats;

	if (st->flags & SOCK_PROVISIONAL) {
		if (__sync_fetch_and_add(&st->passes, 1) < CLAIM_GRACE_PASSES)
			return;
		finalize(sk, st, false);
	}
	if (st->flags & SOCK_ENDED)
		return;  /* closed: its last counts go in at destroy */
	/* An idle connection leaves its key alone: nothing to add, and its smoothed RTT has
	 * not moved without traffic (another sample would repeat the last one). Its series
	 * stays unchanged, so user space does no work for it. */
	if ((st->flags & (SOCK_ESTABLISHED | SOCK_COUNTED)) != SOCK_ESTABLISHED &&
	    !counters_changed(sk, st))
		return;
	stats = flow_stats(&st->key);
	if (!stats)
		return;
	account(sk, st, stats, false);
	rtt_sample(sk, stats);
}

SEC("iter/tcp")
int tcp_flush(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock_state *st;
	struct tcp_sock *tp;
	struct sock *sk;
	__u8 state;

	if (!skc)
		return 0;
	state = skc->skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;  /* minisockets: not a struct tcp_sock */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	if (state == TCP_LISTEN) {
		remember_listener(sk, false);
		return 0;
	}
	st = lookup_sock(sk);
	if (st)
		visit(sk, st);
	else if (state != TCP_SYN_SENT && state != TCP_SYN_RECV && state != TCP_CLOSE)
		adopt(sk);
	return 0;
}
