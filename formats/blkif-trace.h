/* SPDX-License-Identifier: MIT */
/*
 * blkif-trace.h - emit blktrace-xen's blkif instrumentation events.
 *
 * An instrumented blkfront or blkback includes this header and calls the
 * blkif_trace_*() helpers at the points named below. Each helper builds one
 * TRC_GUEST record (event 0x0800f000 | minor, at most 7 payload words) and hands
 * it to Xen with HVMOP_xentrace, which PV and HVM guests (and a PV dom0) may
 * call. The records appear in any xentrace dump taken with the TRC_GUEST class
 * enabled (e.g. `xentrace -e 0x0800f000 ...` or `-e all`).
 *
 * The layouts here are exactly those of formats/blkif.toml and
 * formats/blkif-events.md; tests/test_streams_header.py compiles this header
 * and checks every word against the TOML.
 *
 * Every payload starts with the ring key: word 0 = domid | queue << 16,
 * word 1 = vdev (the xenstore device number, 51712 = xvda).
 *
 * Configuration (define before including):
 *   BLKIF_TRACE_HYPERCALL(op, arg)  how to issue hvm_op; default: Linux's
 *                                   HYPERVISOR_hvm_op(op, arg)
 *   BLKIF_TRACE_DISABLED            compile every helper to nothing
 */
#ifndef BLKIF_TRACE_H
#define BLKIF_TRACE_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/string.h>
#else
#include <stdint.h>
#include <string.h>
#endif

/* xen/include/public/hvm/hvm_op.h: HVMOP_xentrace, struct xen_hvm_xentrace. */
#define BLKIF_TRACE_HVMOP_xentrace 11
#define BLKIF_TRACE_MAX_WORDS 7

struct blkif_trace_xentrace {
	uint16_t event;       /* minor, < 0x1000; Xen ORs in TRC_GUEST */
	uint16_t extra_bytes; /* 4 * words (Xen 4.18+ requires a multiple of 4) */
	uint32_t extra[BLKIF_TRACE_MAX_WORDS];
};

/* Minors (event id = 0x0800f000 | minor). Keep in step with blkif.toml. */
#define BLKIF_TRC_REQ_PUSH        0xb01 /* front: after RING_PUSH_REQUESTS */
#define BLKIF_TRC_REQ_SECTOR      0xb02 /* front: right after REQ_PUSH */
#define BLKIF_TRC_REQ_CONSUME     0xb03 /* back: after RING_COPY_REQUEST */
#define BLKIF_TRC_RSP_PUSH        0xb04 /* back: after RING_PUSH_RESPONSES */
#define BLKIF_TRC_RSP_CONSUME     0xb05 /* front: after RING_COPY_RESPONSE */
#define BLKIF_TRC_XENBUS_STATE    0xb06 /* both: xenbus_switch_state */
#define BLKIF_TRC_RING_MAP        0xb07 /* both: ring mapped / granted */
#define BLKIF_TRC_RING_UNMAP      0xb08 /* both: ring unmapped */
#define BLKIF_TRC_REF_GET         0xb09 /* back: xen_blkif_get */
#define BLKIF_TRC_REF_PUT         0xb0a /* back: xen_blkif_put */
#define BLKIF_TRC_SUSPEND         0xb0b /* both */
#define BLKIF_TRC_RESUME          0xb0c /* both */
#define BLKIF_TRC_DISCONNECT_REQ  0xb0d /* back: xen_blkif_disconnect entered */
#define BLKIF_TRC_DISCONNECT_DONE 0xb0e /* back: xen_blkif_disconnect result */
#define BLKIF_TRC_UNBIND          0xb0f /* back: driver unbound, ring left live */
#define BLKIF_TRC_BIND            0xb10 /* back: driver bound again */

#define BLKIF_TRC_SIDE_FRONT 0
#define BLKIF_TRC_SIDE_BACK  1

#define BLKIF_TRC_PROTO_NATIVE 0
#define BLKIF_TRC_PROTO_X86_32 1
#define BLKIF_TRC_PROTO_X86_64 2
#define BLKIF_TRC_PROTO_ARM    3

#ifndef BLKIF_TRACE_HYPERCALL
#define BLKIF_TRACE_HYPERCALL(op, arg) HYPERVISOR_hvm_op((op), (arg))
#endif

#ifdef BLKIF_TRACE_DISABLED
#define BLKIF_TRACE_EMIT(rec) ((void)(rec))
#else
#define BLKIF_TRACE_EMIT(rec) ((void)BLKIF_TRACE_HYPERCALL(BLKIF_TRACE_HVMOP_xentrace, (rec)))
#endif

static inline void blkif_trace_begin(struct blkif_trace_xentrace *r, uint16_t minor,
				     uint16_t domid, uint32_t vdev, uint16_t queue)
{
	memset(r, 0, sizeof(*r));
	r->event = minor;
	r->extra[0] = (uint32_t)domid | ((uint32_t)queue << 16);
	r->extra[1] = vdev;
}

static inline void blkif_trace_emit(struct blkif_trace_xentrace *r, unsigned int words)
{
	r->extra_bytes = (uint16_t)(4 * words);
	BLKIF_TRACE_EMIT(r);
}

/* A u64 in two consecutive words, low half first (as the TOML's u64 type). */
static inline void blkif_trace_put64(struct blkif_trace_xentrace *r, unsigned int w, uint64_t v)
{
	r->extra[w] = (uint32_t)v;
	r->extra[w + 1] = (uint32_t)(v >> 32);
}

static inline uint32_t blkif_trace_opword(uint8_t op, uint8_t indirect_op, uint16_t nr_segments)
{
	return (uint32_t)op | ((uint32_t)indirect_op << 8) | ((uint32_t)nr_segments << 16);
}

/*
 * Frontend, after RING_PUSH_REQUESTS: one call per request published.
 * nr_sectors = sum of (last_sect - first_sect + 1) over the segments (for a
 * discard, its nr_sectors, saturated at 0xffffffff).
 */
static inline void blkif_trace_req_push(uint16_t domid, uint32_t vdev, uint16_t queue,
					uint32_t idx, uint64_t id, uint8_t op,
					uint8_t indirect_op, uint16_t nr_segments,
					uint32_t nr_sectors, uint64_t sector_number)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, BLKIF_TRC_REQ_PUSH, domid, vdev, queue);
	r.extra[2] = idx;
	blkif_trace_put64(&r, 3, id);
	r.extra[5] = blkif_trace_opword(op, indirect_op, nr_segments);
	r.extra[6] = nr_sectors;
	blkif_trace_emit(&r, 7);

	/* The sector does not fit in the same 7 words: a second record. */
	blkif_trace_begin(&r, BLKIF_TRC_REQ_SECTOR, domid, vdev, queue);
	r.extra[2] = idx;
	blkif_trace_put64(&r, 3, sector_number);
	blkif_trace_emit(&r, 5);
}

/* Backend, after RING_COPY_REQUEST at req_cons = idx. */
static inline void blkif_trace_req_consume(uint16_t domid, uint32_t vdev, uint16_t queue,
					   uint32_t idx, uint64_t id, uint8_t op,
					   uint8_t indirect_op, uint16_t nr_segments)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, BLKIF_TRC_REQ_CONSUME, domid, vdev, queue);
	r.extra[2] = idx;
	blkif_trace_put64(&r, 3, id);
	r.extra[5] = blkif_trace_opword(op, indirect_op, nr_segments);
	blkif_trace_emit(&r, 6);
}

static inline void blkif_trace_rsp(uint16_t minor, uint16_t domid, uint32_t vdev,
				   uint16_t queue, uint32_t idx, uint64_t id, uint8_t op,
				   int16_t status)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, minor, domid, vdev, queue);
	r.extra[2] = idx;
	blkif_trace_put64(&r, 3, id);
	r.extra[5] = (uint32_t)op | ((uint32_t)(uint16_t)status << 16);
	blkif_trace_emit(&r, 6);
}

/* Backend, after RING_PUSH_RESPONSES: one call per response, idx = its slot index. */
static inline void blkif_trace_rsp_push(uint16_t domid, uint32_t vdev, uint16_t queue,
					uint32_t idx, uint64_t id, uint8_t op, int16_t status)
{
	blkif_trace_rsp(BLKIF_TRC_RSP_PUSH, domid, vdev, queue, idx, id, op, status);
}

/* Frontend, after RING_COPY_RESPONSE at rsp_cons = idx. */
static inline void blkif_trace_rsp_consume(uint16_t domid, uint32_t vdev, uint16_t queue,
					   uint32_t idx, uint64_t id, uint8_t op, int16_t status)
{
	blkif_trace_rsp(BLKIF_TRC_RSP_CONSUME, domid, vdev, queue, idx, id, op, status);
}

/* Either end, when it switches its xenbus state (enum xenbus_state). */
static inline void blkif_trace_xenbus_state(uint16_t domid, uint32_t vdev, uint16_t queue,
					    uint8_t side, uint8_t state)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, BLKIF_TRC_XENBUS_STATE, domid, vdev, queue);
	r.extra[2] = (uint32_t)side | ((uint32_t)state << 8);
	blkif_trace_emit(&r, 3);
}

/* Either end, once the ring is mapped; req_prod / rsp_prod as read from the page. */
static inline void blkif_trace_ring_map(uint16_t domid, uint32_t vdev, uint16_t queue,
					uint8_t side, uint8_t ring_page_order, uint8_t protocol,
					uint32_t req_prod, uint32_t rsp_prod,
					uint16_t backend_domid)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, BLKIF_TRC_RING_MAP, domid, vdev, queue);
	r.extra[2] = (uint32_t)side | ((uint32_t)ring_page_order << 8) |
		     ((uint32_t)protocol << 16);
	r.extra[3] = req_prod;
	r.extra[4] = rsp_prod;
	r.extra[5] = backend_domid;
	blkif_trace_emit(&r, 6);
}

/* Either end, just before the ring is unmapped; inflight = requests it still holds. */
static inline void blkif_trace_ring_unmap(uint16_t domid, uint32_t vdev, uint16_t queue,
					  uint8_t side, uint32_t req_prod, uint32_t rsp_prod,
					  uint32_t inflight)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, BLKIF_TRC_RING_UNMAP, domid, vdev, queue);
	r.extra[2] = side;
	r.extra[3] = req_prod;
	r.extra[4] = rsp_prod;
	r.extra[5] = inflight;
	blkif_trace_emit(&r, 6);
}

/* Backend reference count after xen_blkif_get (get = 1) or xen_blkif_put (get = 0). */
static inline void blkif_trace_ref(uint16_t domid, uint32_t vdev, uint16_t queue, int get,
				   uint32_t refcnt)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, get ? BLKIF_TRC_REF_GET : BLKIF_TRC_REF_PUT, domid, vdev, queue);
	r.extra[2] = refcnt;
	blkif_trace_emit(&r, 3);
}

/* Events carrying side and one u32 count: suspend, resume, disconnect request. */
static inline void blkif_trace_side_count(uint16_t minor, uint16_t domid, uint32_t vdev,
					  uint16_t queue, uint8_t side, uint32_t count)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, minor, domid, vdev, queue);
	r.extra[2] = side;
	r.extra[3] = count;
	blkif_trace_emit(&r, 4);
}

static inline void blkif_trace_suspend(uint16_t domid, uint32_t vdev, uint16_t queue,
				       uint8_t side, uint32_t inflight)
{
	blkif_trace_side_count(BLKIF_TRC_SUSPEND, domid, vdev, queue, side, inflight);
}

static inline void blkif_trace_resume(uint16_t domid, uint32_t vdev, uint16_t queue,
				      uint8_t side, uint32_t inflight)
{
	blkif_trace_side_count(BLKIF_TRC_RESUME, domid, vdev, queue, side, inflight);
}

static inline void blkif_trace_disconnect_req(uint16_t domid, uint32_t vdev, uint16_t queue,
					      uint8_t side, uint32_t inflight)
{
	blkif_trace_side_count(BLKIF_TRC_DISCONNECT_REQ, domid, vdev, queue, side, inflight);
}

/* result: 0 or -errno (-EBUSY when I/O was still in flight and teardown was skipped). */
static inline void blkif_trace_disconnect_done(uint16_t domid, uint32_t vdev, uint16_t queue,
					       uint8_t side, int32_t result)
{
	blkif_trace_side_count(BLKIF_TRC_DISCONNECT_DONE, domid, vdev, queue, side,
			       (uint32_t)result);
}

static inline void blkif_trace_bind(uint16_t domid, uint32_t vdev, uint16_t queue, int bind)
{
	struct blkif_trace_xentrace r;

	blkif_trace_begin(&r, bind ? BLKIF_TRC_BIND : BLKIF_TRC_UNBIND, domid, vdev, queue);
	r.extra[2] = BLKIF_TRC_SIDE_BACK;
	blkif_trace_emit(&r, 3);
}

#endif /* BLKIF_TRACE_H */
