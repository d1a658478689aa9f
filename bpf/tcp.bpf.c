// SPDX-License-Identifier: GPL-2.0
/* TCP flows, counted in the kernel.
 *
 * Per socket (`sockets`, keyed by the struct sock address) we keep the flow key and the
 * counter values last added to the aggregates; aggregates (`flows` -> inner hash keyed by
 * struct nr_flow_key) receive atomic deltas. Counters come from struct tcp_sock itself, so
 * nothing is counted per packet here. Deltas are flushed at close, at destroy, and by the
 * pass user space runs once per interval over the `sockets` entries themselves
 * (`sockets_flush`, one walk for every network namespace). The `iter/tcp` program
 * (`tcp_adopt`) runs once in each network namespace when user space first sees it: it
 * adopts connections that existed before the agent started and remembers listeners.
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
 * The sockets handed to tp_btf and iter/tcp programs are trusted BTF pointers, read under
 * the socket lock their callers hold: fields are read with plain (CO-RE relocated) loads.
 * The per-interval pass holds no socket lock and reads sockets it only knows by address;
 * how it stays exact is explained above flush_tracked().
 *
 * Only tracepoints (tp_btf) and iterators: no kprobes, no fentry.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
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

/* The largest payload one transmitted skb can carry (GSO_MAX_SIZE, BIG TCP included). */
#define MAX_SKB_PAYLOAD (512U << 10)

/* Tries at reading a busy socket's counters consistently in the per-interval pass. */
#define CONSISTENT_READ_TRIES 4

/* Indexes of the counters kept per socket (current and last reported). */
enum counter {
	C_BYTES_TX, C_BYTES_RX, C_SEGS_OUT, C_SEGS_IN, C_RETRANS, C_RST_TX, C_RST_RX, C_MAX,
};

const volatile struct nr_settings settings = {};

struct sock_state {
	struct nr_flow_key key;
	__u64 start_ns;           /* when it became established; 0 when unknown */
	__u64 gen;                /* this entry's incarnation (next_gen()); 0 while being set
				   * up: see publish() */
	__u64 print;              /* the socket's sk_hash and ports once connected (0 before):
				   * tells it from a later socket that reuses its memory */
	__s64 last[C_MAX];        /* values already added to the aggregates (see flush_tracked) */
	__s64 resets[2];          /* resets sent / received (no tcp_sock counter exists) */
	__u32 flags;
	__u32 passes;             /* per-interval passes seen while provisional */
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

/* The locks that order the updates of a `sockets` entry's `last` (and of its final key)
 * while a pass runs, striped by the entry's incarnation number (lock_of()): array
 * elements are never freed, so the `sockets` hash stays free of special fields, and its
 * inserts and deletes stay plain copies. */
#define LOCK_STRIPES 4096

struct stripe {
	struct bpf_spin_lock lock;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LOCK_STRIPES);
	__type(key, __u32);
	__type(value, struct stripe);
} sock_locks SEC(".maps");

/* 1 while user space runs the per-interval pass: it sets this, waits for an RCU grace
 * period (every program that started before sees it from then on), runs the pass, then
 * clears it. Only then can anyone but the socket's own lock holder update an entry, so
 * only then do close and destroy take the entry locks. Its own section: user space
 * writes it alone. */
__u32 pass_running SEC(".data.pass") = 0;

/* Per CPU: 1 while tcp_destroy runs there (see destroy_skipped()). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} destroying SEC(".maps");

/* Per-CPU counters that number the incarnations of `sockets` entries (next_gen()). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gens SEC(".maps");

/* Zero values to insert from (too large for the BPF stack). */
struct nr_flow_stats empty_stats = {};
struct sock_state empty_sock = {};

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* The lock of the `sockets` entry whose incarnation is `gen` (see publish()): everyone
 * who updates one incarnation takes the same lock. */
static __always_inline struct bpf_spin_lock *lock_of(__u64 gen)
{
	__u32 stripe = (gen >> 12 ^ gen) & (LOCK_STRIPES - 1);
	struct stripe *slot = bpf_map_lookup_elem(&sock_locks, &stripe);

	return slot ? &slot->lock : NULL;
}

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

/* The counters that are one kernel field each (any reading is a value it had), and the
 * resets, which come from our own tallies. */
static __always_inline void read_single(struct tcp_sock *tp, const struct sock_state *st,
					__s64 now[C_MAX])
{
	now[C_SEGS_OUT] = tp->segs_out;
	now[C_SEGS_IN] = tp->segs_in;
	now[C_RETRANS] = tp->total_retrans;
	now[C_RST_TX] = st->resets[0];
	now[C_RST_RX] = st->resets[1];
}

/* Current values of the per-socket counters; false when `sk` is not a full TCP socket. */
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
	read_single(tp, st, now);
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

/* An entry about to be deleted or set up anew: its incarnation number goes to 0 under its
 * lock. A pass that read the old number and waits for that lock then finds 0 or the next
 * incarnation's number, never its own, whatever order the element's next set-up writes
 * its fields in (a preallocated hash hands a deleted element out again at once). Only a
 * pass can be waiting, so outside one nothing needs to be taken. */
static __always_inline void retire(struct sock_state *st)
{
	struct bpf_spin_lock *lock = lock_of(st->gen);

	if (!pass_running || !lock)
		return;
	bpf_spin_lock(lock);
	__sync_lock_test_and_set(&st->gen, 0);
	bpf_spin_unlock(lock);
}

/* The entry at a socket's address is ours now: the old one is an earlier connection of
 * this socket, or one whose destroy we never saw. If its close was never seen either,
 * that connection's counts are lost: say so. While a pass runs, the entry's lock is
 * taken once after SOCK_ENDED is set (retire()): a pass still writing the old element is
 * done before it is set up again, and one still waiting finds it retired. */
static __always_inline void replace_sock(struct sock_state *st)
{
	__u32 flags = __sync_fetch_and_or(&st->flags, SOCK_ENDED);

	if (!(flags & SOCK_ENDED))
		count_loss(NR_LOSS_CLOSE_MISSED);
	if (__sync_fetch_and_and(&st->flags, ~SOCK_PROVISIONAL) & SOCK_PROVISIONAL)
		provisional_add(st->local_port, -1);
	gauge_add(NR_GAUGE_SOCKETS_REPLACED, 1);
	retire(st);
}

/* A number no other incarnation of any entry has had: a per-CPU count, the CPU in the
 * low bits (never 0). */
static __always_inline __u64 next_gen(void)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&gens, &zero);

	if (!count)
		return 0;
	return (__sync_fetch_and_add(count, 1) + 1) << 12 | (bpf_get_smp_processor_id() & 0xfff);
}

/* What tells a connected socket from a later socket at the same address: its ehash
 * value and ports (a new socket has 0 until it is hashed). */
static __always_inline __u64 print_of(const struct sock *sk)
{
	return (__u64)sk->__sk_common.skc_hash << 32 | sk->__sk_common.skc_portpair;
}

/* A fresh `sockets` entry with its key filled from the socket; NULL (counted) when full.
 * The caller finishes setting it up, then calls publish(st, *gen). */
static __always_inline struct sock_state *track_sock(struct sock *sk, __u8 direction,
						     __u32 flags, __u64 *gen)
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
	*gen = next_gen();
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

/* Make a set-up entry visible to the per-interval pass: xchg is a full barrier, so every
 * field written before is seen by a pass that sees `gen`. */
static __always_inline void publish(struct sock_state *st, __u64 gen)
{
	__sync_lock_test_and_set(&st->gen, gen);
}

/* How far a 32-bit kernel counter (segs_out, segs_in, total_retrans) moved from `last`:
 * modulo 2^32, so a wrap is a small step forward (segs_out wraps after ~83 minutes at
 * 10 Gbit/s). A step of 2^31 or more is the counter going back, which only a reset does
 * (tcp_disconnect zeroes them): nothing is added, the reading is the new base. */
static __always_inline __s64 u32_step(__s64 now, __s64 last)
{
	__u32 step = (__u32)now - (__u32)last;

	return step < (1U << 31) ? step : 0;
}

/* Under the entry's lock: what moved since the last flush into `delta`, `now` remembered as
 * flushed; false when nothing moved. Bytes never go back: the per-interval pass may read
 * a lower bound (read_unlocked), which a later reading catches up with. The 32-bit
 * counters keep their last reading as it was (see u32_step). */
static __always_inline bool commit(struct sock_state *st, const __s64 now[C_MAX],
				   __s64 delta[C_MAX])
{
	__s64 any = 0;
	int i;

	for (i = 0; i < C_MAX; i++) {
		if (i >= C_SEGS_OUT && i <= C_RETRANS) {
			delta[i] = u32_step(now[i], st->last[i]);
			st->last[i] = now[i];
		} else {
			delta[i] = now[i] - st->last[i];
			if (i <= C_BYTES_RX && delta[i] < 0)
				delta[i] = 0;
			st->last[i] += delta[i];
		}
		any |= delta[i];
	}
	return any != 0;
}

/* commit() for a caller that holds the socket lock (state change, destroy): the
 * entry's lock is needed only while the pass may update the entry too. Taking it after
 * SOCK_ENDED is set also means a pass that was writing the entry is done before it can
 * be deleted (see flush_tracked). */
static __always_inline bool commit_owned(struct sock_state *st, const __s64 now[C_MAX],
					 __s64 delta[C_MAX])
{
	struct bpf_spin_lock *lock;
	bool moved;

	if (!pass_running)
		return commit(st, now, delta);
	lock = lock_of(st->gen);
	if (!lock)
		return false;
	bpf_spin_lock(lock);
	moved = commit(st, now, delta);
	bpf_spin_unlock(lock);
	return moved;
}

/* Whether this flush is the one that counts the connection's opening (once, established). */
static __always_inline bool opening_now(struct sock_state *st)
{
	return (st->flags & (SOCK_ESTABLISHED | SOCK_COUNTED)) == SOCK_ESTABLISHED &&
	       !(__sync_fetch_and_or(&st->flags, SOCK_COUNTED) & SOCK_COUNTED);
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

/* Add one flush to the aggregate: the opening when `opening` (never for a connection that
 * predates us; +1 active unless it also ends here), -1 active when an already counted
 * connection ends (`ending`), then the counter deltas. */
static __always_inline void add_flush(struct nr_flow_stats *stats, __u32 flags, bool opening,
				      bool ending, const __s64 delta[C_MAX], bool moved)
{
	if (opening) {
		if (!(flags & SOCK_PREEXISTING))
			__sync_fetch_and_add(&stats->opened, 1);
		if (!ending)
			__sync_fetch_and_add(&stats->active, 1);
	} else if (ending) {
		__sync_fetch_and_add(&stats->active, -1);
	}
	if (moved)
		add_deltas(stats, delta);
}

/* A flush by a caller that holds the socket lock (state change, destroy): the counters
 * are exact. `stats` may be NULL (map full): the deltas are taken all the same. */
static __always_inline void account(struct sock *sk, struct sock_state *st,
				    struct nr_flow_stats *stats, bool ending)
{
	__s64 now[C_MAX] = {}, delta[C_MAX] = {};
	bool opening = opening_now(st), moved = false;

	if (read_counters(sk, st, now))
		moved = commit_owned(st, now, delta);
	if (stats)
		add_flush(stats, st->flags, opening, ending, delta, moved);
}

static __always_inline void rtt_add(struct nr_flow_stats *stats, __u32 srtt_us8)
{
	__u64 srtt_us = srtt_us8 >> 3;

	if (srtt_us)
		hist_add(&stats->rtt, settings.rtt_bounds_ns, settings.rtt_nbounds, srtt_us * 1000);
}

static __always_inline void rtt_sample(struct sock *sk, struct nr_flow_stats *stats)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (tp)
		rtt_add(stats, tp->srtt_us);
}

static __always_inline __u32 make_final(struct sock_state *st, const struct nr_identity *id)
{
	__u32 was = __sync_fetch_and_and(&st->flags, ~SOCK_PROVISIONAL);

	if ((was & SOCK_PROVISIONAL) && id)
		st->key.id = *id;
	return was;
}

/* Make a provisional identity final: `id` when given (the current task's), else keep the
 * listener's. Counts held back until now go to the final key at the next flush. While a
 * pass runs this happens under the entry's lock, so the pass never adds to a key being
 * rewritten (it compares its copy with the key under that lock). */
static __always_inline void finalize(struct sock_state *st, const struct nr_identity *id)
{
	struct bpf_spin_lock *lock;
	__u32 was;

	if (!(st->flags & SOCK_PROVISIONAL))
		return;
	if (pass_running) {
		lock = lock_of(st->gen);
		if (!lock)
			return;
		bpf_spin_lock(lock);
		was = make_final(st, id);
		bpf_spin_unlock(lock);
	} else {
		was = make_final(st, id);
	}
	if (was & SOCK_PROVISIONAL)
		provisional_add(st->local_port, -1);
}

/* A connection open before we started (or whose connect we did not see): counted from
 * now on, never as opened. `owner`: its listener's identity (incoming), NULL (outgoing). */
static __always_inline void adopt(struct sock *sk, const struct nr_identity *owner)
{
	struct sock_state *st;
	__s64 now[C_MAX];
	__u64 gen;
	int i;

	st = track_sock(sk, owner ? NR_DIR_INCOMING : NR_DIR_OUTGOING,
			SOCK_PROVISIONAL | SOCK_ESTABLISHED | SOCK_PREEXISTING, &gen);
	if (!st)
		return;
	if (owner)
		st->key.id = *owner;
	else
		st->key.id.cgroup_id = sock_cgroup(sk);
	if (read_counters(sk, st, now))
		for (i = 0; i < C_MAX; i++)
			st->last[i] = now[i];
	st->print = print_of(sk);
	publish(st, gen);
}

/* --- state transitions ----------------------------------------------------------------- */

static __always_inline void on_connect(struct sock *sk)
{
	__u64 gen;
	struct sock_state *st = track_sock(sk, NR_DIR_OUTGOING, 0, &gen);

	if (!st)
		return;
	identity_from_task(&st->key.id, sk);
	publish(st, gen);
}

/* Opened is counted at the first flush (close, destroy or the interval's pass, which runs
 * before every drain), so a short connection costs one aggregate lookup, not two. Its
 * ports are known from now on: the pass leaves it alone until then. */
static __always_inline void on_connected(struct sock *sk, struct sock_state *st)
{
	st->print = print_of(sk);
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
	struct sock_state *st;
	__u64 gen;

	st = track_sock(sk, NR_DIR_INCOMING, SOCK_PROVISIONAL | SOCK_ESTABLISHED, &gen);
	if (!st)
		return;
	st->start_ns = bpf_ktime_get_ns();
	st->print = print_of(sk);
	if (owner)
		st->key.id = *owner;
	else
		st->key.id.cgroup_id = sock_cgroup(sk);
	publish(st, gen);
}

/* Leaving SYN_RECV: an accepted child, or (rarely) our own connect in a simultaneous
 * open. Any other state of this socket is from an earlier connection and is replaced. */
static __always_inline void on_left_syn_recv(struct sock *sk, int newstate)
{
	struct sock_state *st = lookup_sock(sk);

	if (st && st->key.direction == NR_DIR_OUTGOING && !(st->flags & SOCK_ENDED) &&
	    !(st->flags & SOCK_ESTABLISHED)) {
		if (newstate == TCP_ESTABLISHED)
			on_connected(sk, st);
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

/* Count the end of a connection once: closed (with its duration and last RTT) or failed.
 * SOCK_ENDED is set before account() commits: from then on the per-interval pass adds
 * nothing for this socket. */
static __always_inline void end(struct sock *sk, struct sock_state *st)
{
	struct nr_flow_stats *stats;
	__u32 reason;

	if (__sync_fetch_and_or(&st->flags, SOCK_ENDED) & SOCK_ENDED)
		return;
	finalize(st, NULL);
	stats = flow_stats(&st->key);
	if (!(st->flags & SOCK_ESTABLISHED)) {
		account(sk, st, stats, false);
		reason = failure_reason(sk);
		if (stats && reason < NR_FAIL_MAX)
			__sync_fetch_and_add(&stats->failed[reason], 1);
		return;
	}
	account(sk, st, stats, true);
	if (!stats)
		return;
	__sync_fetch_and_add(&stats->closed, 1);
	rtt_sample(sk, stats);
	if (st->start_ns)
		hist_add(&stats->duration, settings.duration_bounds_ns, settings.duration_nbounds,
			 bpf_ktime_get_ns() - st->start_ns);
}

/* Whether tcp_destroy runs on this CPU below us: we interrupted it (softirq work done on
 * the way out of an interrupt), so the kernel skips the tcp_destroy call that follows
 * (a program does not run again on a CPU where it is running: tcp.events_missed). */
static __always_inline bool destroy_skipped(void)
{
	__u32 zero = 0, *busy = bpf_map_lookup_elem(&destroying, &zero);

	return busy && *busy;
}

/* An orphan (closed by its process) that reaches CLOSE is destroyed right after, in the
 * same call (tcp_done, tcp_close): its end is counted there, with one aggregate lookup
 * for both, unless that destroy is going to be skipped (destroy_skipped()). A socket its
 * process still holds may be destroyed much later: count now. */
static __always_inline void on_close(struct sock *sk)
{
	struct sock_state *st;

	if (((sk->__sk_common.skc_flags >> SOCK_DEAD) & 1) && !destroy_skipped())
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
			on_connected(sk, st);
		else
			adopt(sk, NULL);  /* connecting when we started: no pass will adopt it */
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
	__s64 now[C_MAX] = {}, delta[C_MAX] = {};
	struct nr_flow_stats *stats;

	if (!read_counters(sk, st, now) || !commit_owned(st, now, delta))
		return;
	stats = flow_stats(&st->key);
	if (stats)
		add_deltas(stats, delta);
}

/* Resets may follow the CLOSE transition (SO_LINGER 0 closes, then sends the reset), so
 * the entry lives until the socket is destroyed. While a pass runs, both paths take the
 * entry lock after SOCK_ENDED is set, so the element is deleted only once no pass
 * writes it. */
static __always_inline void destroy(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);

	if (!st)
		return;
	if (st->flags & SOCK_ENDED)
		last_flush(sk, st);
	else
		end(sk, st);
	retire(st);
	if (bpf_map_delete_elem(&sockets, &key) == 0)
		gauge_add(NR_GAUGE_SOCKETS, -1);
}

/* `destroying` is set around the work: an orphan's CLOSE that interrupts it counts its
 * own end (on_close), as its destroy is skipped. Its entry then stays, ended, until the
 * address is reused (replace_sock); only what moves between CLOSE and destroy (a reset
 * sent after CLOSE) is lost with it. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy, struct sock *sk)
{
	__u32 zero = 0, *busy = bpf_map_lookup_elem(&destroying, &zero);

	if (busy)
		*busy = 1;
	destroy(sk);
	if (busy)
		*busy = 0;
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
	struct nr_identity id;  /* every field set below: no zeroing on the common path */
	struct sock_state *st;

	if (!provisional_on_port[sk->__sk_common.skc_num] || !is_tcp_inet(sk))
		return;
	st = lookup_sock(sk);
	if (!st || !(st->flags & SOCK_PROVISIONAL))
		return;
	id._pad = 0;
	identity_from_task(&id, sk);
	finalize(st, &id);
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

/* --- the per-interval pass ------------------------------------------------------------
 *
 * One walk over the `sockets` entries (every network namespace at once) flushes the live
 * connections' deltas. It holds no socket lock and knows each socket by address only:
 *
 * - Which socket. TCP sockets are SLAB_TYPESAFE_BY_RCU: a freed socket's memory may hold
 *   another socket at once (or, much later, anything). The socket is read through
 *   bpf_rdonly_cast (fault-safe loads), and its ehash value and ports (print_of), read
 *   before and after its counters, must be the ones stored when it connected; a new
 *   socket has 0 until it is hashed. (Only a socket whose destroy we missed leaves its
 *   entry behind; the socket cookie would also tell a later socket with the same ports,
 *   but making one costs ~60 ns per tracked socket on the hot path.) A connecting socket
 *   (no ports yet) is left to close and destroy, or to the first pass once connected.
 * - Which entry. A preallocated hash hands a deleted element out again at once. `gen`
 *   (published last, see publish()) names the entry's incarnation: it is read first and
 *   compared again under the entry's lock (sock_locks) before anything is written.
 * - Who updates `last`. Outside a pass only the socket's own lock holder does (state
 *   changes, destroy), so the hot paths take no entry lock (pass_running). During a
 *   pass every update of `last` happens under the entry's lock: close and destroy set
 *   SOCK_ENDED before theirs, and a pass that finds it set writes nothing; destroy and
 *   replace take the lock after SOCK_ENDED is set, so no pass writes an element once it
 *   is back in the map's pool. The updates of one entry are thus serialized, each adds
 *   what moved since the one before, and they sum to the value the last one (close or
 *   destroy, exact under the socket lock) reads: nothing is added twice or lost,
 *   whichever way a race goes.
 * - Torn readings. Without the socket lock two counters that move together can be seen
 *   half done: bytes_sent before bytes_retrans during a retransmission, bytes_received
 *   counting a FIN before SOCK_DONE is set. read_unlocked() takes a reading as exact only
 *   if every value is the same before and after an instant at which the socket lock was
 *   free (slock and `owned` in one 8-byte load); otherwise the bytes are lower bounds
 *   (a half-done retransmission is one skb, at most what is in flight; a FIN is one
 *   byte) and `last` keeps the larger value (commit()): a busy connection's bytes may
 *   be reported a pass later, never twice, and never go back.
 */

struct reading {
	__u64 sent;
	__u64 retrans;
	__u64 received;
	__u64 done;
};

static __always_inline void read_pair(struct tcp_sock *tp, struct reading *r)
{
	r->sent = tp->bytes_sent;
	r->retrans = tp->bytes_retrans;
	r->received = tp->bytes_received;
	r->done = (tp->inet_conn.icsk_inet.sk.__sk_common.skc_flags >> SOCK_DONE) & 1;
}

/* A full memory barrier: an atomic read-modify-write that returns the old value is one in
 * the BPF memory model. It keeps read_unlocked()'s loads (counters, lock word, counters)
 * in program order on CPUs that reorder loads (arm64); x86 does not, so there it only
 * costs a locked add per reading in the per-interval pass. */
static __u64 fence_word;

static __always_inline void load_fence(void)
{
	__u64 old = __sync_fetch_and_add(&fence_word, 0);

	asm volatile("" : : "r"(old) : "memory");
}

/* Whether the socket lock was free (slock unlocked, not owned by a process) at the
 * instant of one 8-byte load; never claimed where the two do not share 8 aligned bytes. */
static __always_inline bool lock_free(struct tcp_sock *tp)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__u32 at = bpf_core_field_offset(sk->sk_lock.slock);
	__u64 word = 1;

	if (bpf_core_field_size(sk->sk_lock.slock) != 4 || (at & 7) ||
	    bpf_core_field_offset(sk->sk_lock.owned) != at + 4)
		return false;
	bpf_probe_read_kernel(&word, sizeof(word), &sk->sk_lock);
	return word == 0;
}

/* The counters of the socket at `tp` read without its lock (see above); false when that
 * memory is no longer the connected socket whose print_of() is `print`. */
static __always_inline bool read_unlocked(struct tcp_sock *tp, __u64 print,
					  const struct sock_state *st, __s64 now[C_MAX],
					  __u32 *srtt_us8)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct reading a = {}, b = {};
	__u32 una, inflight;
	int i;

	if (!print || print_of(sk) != print)
		return false;
	for (i = 0; i < CONSISTENT_READ_TRIES; i++) {
		read_pair(tp, &a);
		load_fence();
		if (!lock_free(tp))
			continue;
		load_fence();
		read_pair(tp, &b);
		if (a.sent == b.sent && a.retrans == b.retrans && a.received == b.received &&
		    a.done == b.done) {
			now[C_BYTES_TX] = a.sent - a.retrans;
			now[C_BYTES_RX] = a.received - a.done;
			goto single;
		}
	}
	una = tp->snd_una;
	read_pair(tp, &a);
	b.retrans = tp->bytes_retrans;
	inflight = tp->snd_nxt - una;
	if (inflight > MAX_SKB_PAYLOAD)
		inflight = MAX_SKB_PAYLOAD;
	now[C_BYTES_TX] = a.sent - b.retrans - inflight;
	now[C_BYTES_RX] = a.received - 1;
single:
	read_single(tp, st, now);
	*srtt_us8 = tp->srtt_us;  /* before the last check too: a sample of this socket */
	return print_of(sk) == print;
}

/* Whether nothing moved since the last flush (bytes: a lower bound below it is nothing). */
static __always_inline bool unchanged(const __s64 now[C_MAX], const struct sock_state *st)
{
	int i;

	for (i = 0; i < C_MAX; i++)
		if (now[i] != st->last[i] && !(i <= C_BYTES_RX && now[i] < st->last[i]))
			return false;
	return true;
}

static __always_inline bool same_key(const struct nr_flow_key *a, const struct nr_flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	__u64 diff = 0;
	int i;

	for (i = 0; i < sizeof(*a) / sizeof(__u64); i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

/* Flush one tracked socket (see above). A provisional one gets CLAIM_GRACE_PASSES passes
 * to be claimed by its process, then keeps the listener's identity. */
static __always_inline void flush_tracked(__u64 addr, struct sock_state *st)
{
	__s64 now[C_MAX] = {}, delta[C_MAX] = {};
	bool moved = false, opening = false, valid;
	__u64 gen = st->gen, print;
	struct bpf_spin_lock *lock;
	struct nr_flow_stats *stats;
	struct nr_flow_key key;
	struct tcp_sock *tp;
	__u32 flags, srtt_us8 = 0;

	if (!gen)
		return;  /* being set up */
	if (st->flags & SOCK_PROVISIONAL) {
		if (__sync_fetch_and_add(&st->passes, 1) < CLAIM_GRACE_PASSES)
			return;
		finalize(st, NULL);
	}
	flags = st->flags;
	if (flags & SOCK_ENDED)
		return;  /* closed: its last counts go in at destroy */
	print = st->print;
	tp = bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct tcp_sock));
	if (!read_unlocked(tp, print, st, now, &srtt_us8))
		return;
	/* An idle connection leaves its key alone: nothing to add, and its smoothed RTT has
	 * not moved without traffic (another sample would repeat the last one). Its series
	 * stays unchanged, so user space does no work for it. */
	if ((flags & (SOCK_ESTABLISHED | SOCK_COUNTED)) != SOCK_ESTABLISHED && unchanged(now, st))
		return;
	__builtin_memcpy(&key, &st->key, sizeof(key));
	stats = flow_stats(&key);
	lock = lock_of(gen);
	if (!stats || !lock)
		return;
	bpf_spin_lock(lock);
	/* the fetch-add is a full barrier: the flags and key below are this incarnation's
	 * (a final key is written before SOCK_PROVISIONAL goes, see finalize()) */
	valid = __sync_fetch_and_add(&st->gen, 0) == gen &&
		!(st->flags & (SOCK_ENDED | SOCK_PROVISIONAL)) && same_key(&key, &st->key);
	if (valid) {
		opening = opening_now(st);
		moved = commit(st, now, delta);
	}
	bpf_spin_unlock(lock);
	if (!valid)
		return;
	add_flush(stats, flags, opening, false, delta, moved);
	rtt_add(stats, srtt_us8);
}

static long flush_one(struct bpf_map *map, __u64 *key, struct sock_state *st, void *ctx)
{
	flush_tracked(*key, st);
	return 0;
}

/* The per-interval pass. An iterator over BPF maps only to run once per read: its first
 * call walks `sockets` (iter/bpf_map_elem programs are refused with EPERM on the kernels
 * we run on). The callback gets the element's value itself, as a map value. */
SEC("iter/bpf_map")
int sockets_flush(struct bpf_iter__bpf_map *ctx)
{
	if (ctx->map && ctx->meta->seq_num == 0)
		bpf_for_each_map_elem(&sockets, flush_one, NULL, 0);
	return 0;
}

/* --- first sight of a network namespace ------------------------------------------------ */

/* Run once in each network namespace when user space first sees it: remember listeners
 * and adopt connections not tracked yet (they predate us). Tracked ones are the
 * per-interval pass's. */
SEC("iter/tcp")
int tcp_adopt(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
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
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_CLOSE ||
	    lookup_sock(sk))
		return 0;  /* connecting: tcp_state adopts it; tracked; or gone */
	adopt(sk, listener_of(sk));
	return 0;
}
