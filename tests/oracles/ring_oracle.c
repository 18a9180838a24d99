/*
 * Test oracle for blktrace-xen's ring decoder: drives a real blkif shared ring
 * with Xen's own macros (io/ring.h, io/blkif.h from libxen-dev) and prints
 * every struct's sizeof/offsetof, then the ring area after every step plus
 * what it published. Built freestanding (no libc) so the same source runs as
 * -m64 and as -m32 without 32-bit libraries: output goes through raw syscalls.
 *
 * Build: gcc -m64|-m32 -ffreestanding -nostdlib -static -fno-pic -no-pie
 *        -DORDER=<ring-page-order> ring_oracle.c
 */
#include <stdint.h>
#include <stddef.h>

#define mb()  __sync_synchronize()
#define rmb() __sync_synchronize()
#define wmb() __sync_synchronize()
void *memset(void *d, int c, size_t n) { unsigned char *p = d; while (n--) *p++ = (unsigned char)c; return d; }
void *memcpy(void *d, const void *s, size_t n) { unsigned char *p = d; const unsigned char *q = s; while (n--) *p++ = *q++; return d; }

#include <xen/io/blkif.h>

#ifndef ORDER
#define ORDER 0
#endif
#define AREA (4096u << ORDER)
#define START 0xfffffff0u /* indices cross 2^32 during the run */

static long sys_write(const void *buf, unsigned long len) {
    long r;
#ifdef __x86_64__
    __asm__ volatile("syscall" : "=a"(r) : "a"(1), "D"(1), "S"(buf), "d"(len) : "rcx", "r11", "memory");
#else
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(4), "b"(1), "c"(buf), "d"(len) : "memory");
#endif
    return r;
}
static void sys_exit(int code) {
#ifdef __x86_64__
    __asm__ volatile("syscall" : : "a"(60), "D"(code));
#else
    __asm__ volatile("int $0x80" : : "a"(1), "b"(code));
#endif
    for (;;) {}
}

static char obuf[1 << 16];
static unsigned olen;
static void flush(void) { unsigned o = 0; while (o < olen) { long w = sys_write(obuf + o, olen - o); if (w <= 0) sys_exit(2); o += (unsigned)w; } olen = 0; }
static void putc_(char c) { if (olen == sizeof(obuf)) flush(); obuf[olen++] = c; }
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putu(uint64_t v) { char t[24]; int n = 0; do { t[n++] = (char)('0' + (int)(v % 10)); v /= 10; } while (v); while (n) putc_(t[--n]); }
static void puti(int64_t v) { if (v < 0) { putc_('-'); putu((uint64_t)(-v)); } else putu((uint64_t)v); }
static void kv(const char *k, uint64_t v) { putc_(' '); puts_(k); putc_('='); putu(v); }

#define SZ(t) do { puts_("SIZE " #t " "); putu(sizeof(struct t)); putc_('\n'); } while (0)
#define OFF(t, f) do { puts_("OFF " #t " " #f " "); putu(offsetof(struct t, f)); putc_('\n'); } while (0)

static unsigned char area[AREA] __attribute__((aligned(4096)));
static blkif_front_ring_t front;
static blkif_back_ring_t back;
static unsigned step;

static void dump(const char *what) {
    static const char hex[] = "0123456789abcdef";
    blkif_sring_t *s = (blkif_sring_t *)area;
    unsigned i;
    puts_("STEP "); putu(step++); putc_(' '); puts_(what);
    kv("req_prod", s->req_prod); kv("req_event", s->req_event);
    kv("rsp_prod", s->rsp_prod); kv("rsp_event", s->rsp_event);
    putc_('\n');
    puts_("PAGE ");
    for (i = 0; i < AREA; i++) { putc_(hex[area[i] >> 4]); putc_(hex[area[i] & 15]); }
    putc_('\n');
}

static uint64_t next_id = 0x100000000ull; /* ids need all 64 bits */
static uint32_t lcg = 12345;
static uint32_t rnd(void) { lcg = lcg * 1103515245u + 12345u; return lcg >> 8; }

/* Publish one request of kind k at the front's private producer. */
static void put_request(int k) {
    RING_IDX idx = front.req_prod_pvt++;
    blkif_request_t *r = RING_GET_REQUEST(&front, idx);
    uint64_t id = next_id++;
    unsigned i, nseg = 0, nsec = 0;
    /* Stale bytes stay in the slot: fields are written one by one. */
    if (k == 0 || k == 1) {
        nseg = k == 0 ? 3 : BLKIF_MAX_SEGMENTS_PER_REQUEST;
        r->operation = k == 0 ? BLKIF_OP_WRITE : BLKIF_OP_READ;
        r->nr_segments = (uint8_t)nseg;
        r->handle = 51712;
        r->id = id;
        r->sector_number = (uint64_t)rnd() * 8 + 0x100000000ull;
        for (i = 0; i < nseg; i++) {
            r->seg[i].gref = 1000 + rnd() % 1000;
            r->seg[i].first_sect = (uint8_t)(i % 3);
            r->seg[i].last_sect = 7;
            nsec += 8 - i % 3;
        }
    } else if (k == 2) {
        r->operation = BLKIF_OP_FLUSH_DISKCACHE;
        r->nr_segments = 0;
        r->handle = 51712;
        r->id = id;
        r->sector_number = 0;
    } else if (k == 3) {
        blkif_request_discard_t *d = (blkif_request_discard_t *)r;
        d->operation = BLKIF_OP_DISCARD;
        d->flag = BLKIF_DISCARD_SECURE;
        d->handle = 51712;
        d->id = id;
        d->sector_number = 4096 + rnd() % 100000;
        d->nr_sectors = 2048;
        nsec = 2048;
    } else {
        blkif_request_indirect_t *n = (blkif_request_indirect_t *)r;
        n->operation = BLKIF_OP_INDIRECT;
        n->indirect_op = BLKIF_OP_WRITE;
        n->nr_segments = 40;
        n->id = id;
        n->sector_number = 8 * (uint64_t)(rnd() % 100000);
        n->handle = 51712;
        for (i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) n->indirect_grefs[i] = i == 0 ? 777 : 0;
        nseg = 40;
    }
    puts_("REQ"); kv("step", step); kv("idx", idx); kv("id", id); kv("op", r->operation);
    if (k <= 2) { kv("nr_segments", nseg); kv("sector_number", r->sector_number); kv("nr_sectors", nsec); }
    if (k == 3) { kv("sector_number", ((blkif_request_discard_t *)r)->sector_number); kv("nr_sectors", nsec); }
    if (k == 4) { kv("nr_segments", nseg); kv("indirect_op", BLKIF_OP_WRITE); kv("sector_number", ((blkif_request_indirect_t *)r)->sector_number); }
    putc_('\n');
}

static void push_requests(void) {
    int notify;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&front, notify);
    puts_("NOTIFY req "); putu((unsigned)notify); putc_('\n');
}

/* Backend: consume everything published, answer in the order given by `perm`. */
static void consume_and_answer(int reverse, int error_every) {
    struct { uint64_t id; uint8_t op; RING_IDX idx; } pend[64];
    unsigned n = 0, i;
    int more, notify;
    RING_FINAL_CHECK_FOR_REQUESTS(&back, more);
    while (more) {
        RING_IDX rc = back.req_cons, rp = back.sring->req_prod;
        xen_rmb();
        while (rc != rp && n < 64) {
            blkif_request_t req;
            RING_COPY_REQUEST(&back, rc, &req);
            pend[n].id = req.id;
            pend[n].op = req.operation == BLKIF_OP_INDIRECT
                ? ((blkif_request_indirect_t *)&req)->indirect_op : req.operation;
            pend[n].idx = rc;
            n++;
            back.req_cons = ++rc;
        }
        RING_FINAL_CHECK_FOR_REQUESTS(&back, more);
    }
    for (i = 0; i < n; i++) {
        unsigned j = reverse ? n - 1 - i : i;
        RING_IDX ridx = back.rsp_prod_pvt++;
        blkif_response_t *rsp = RING_GET_RESPONSE(&back, ridx);
        int16_t st = (error_every && (i % error_every) == 1) ? BLKIF_RSP_ERROR : BLKIF_RSP_OKAY;
        /* blkback since XSA-216: id, operation, status written individually */
        rsp->id = pend[j].id;
        rsp->operation = pend[j].op;
        rsp->status = st;
        puts_("RSP"); kv("step", step); kv("idx", ridx); kv("id", pend[j].id); kv("op", pend[j].op);
        puts_(" status="); puti(st); kv("req_idx", pend[j].idx); putc_('\n');
    }
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&back, notify);
    puts_("NOTIFY rsp "); putu((unsigned)notify); putc_('\n');
}

static void front_consume(void) {
    int more;
    RING_FINAL_CHECK_FOR_RESPONSES(&front, more);
    while (more) {
        RING_IDX rc = front.rsp_cons, rp = front.sring->rsp_prod;
        xen_rmb();
        while (rc != rp) { blkif_response_t r; RING_COPY_RESPONSE(&front, rc, &r); (void)r; rc++; }
        front.rsp_cons = rc;
        RING_FINAL_CHECK_FOR_RESPONSES(&front, more);
    }
}

static void layout(void) {
    SZ(blkif_request_segment); OFF(blkif_request_segment, gref); OFF(blkif_request_segment, first_sect); OFF(blkif_request_segment, last_sect);
    SZ(blkif_request); OFF(blkif_request, operation); OFF(blkif_request, nr_segments); OFF(blkif_request, handle);
    OFF(blkif_request, id); OFF(blkif_request, sector_number); OFF(blkif_request, seg);
    SZ(blkif_request_discard); OFF(blkif_request_discard, operation); OFF(blkif_request_discard, flag); OFF(blkif_request_discard, handle);
    OFF(blkif_request_discard, id); OFF(blkif_request_discard, sector_number); OFF(blkif_request_discard, nr_sectors);
    SZ(blkif_request_indirect); OFF(blkif_request_indirect, operation); OFF(blkif_request_indirect, indirect_op);
    OFF(blkif_request_indirect, nr_segments); OFF(blkif_request_indirect, id); OFF(blkif_request_indirect, sector_number);
    OFF(blkif_request_indirect, handle); OFF(blkif_request_indirect, indirect_grefs);
    SZ(blkif_response); OFF(blkif_response, id); OFF(blkif_response, operation); OFF(blkif_response, status);
    SZ(blkif_sring); OFF(blkif_sring, req_prod); OFF(blkif_sring, req_event); OFF(blkif_sring, rsp_prod); OFF(blkif_sring, rsp_event);
    OFF(blkif_sring, pvt); OFF(blkif_sring, __pad); OFF(blkif_sring, ring);
    puts_("SIZE blkif_sring_entry "); putu(sizeof(union blkif_sring_entry)); putc_('\n');
    puts_("NR_ENTS "); putu(__CONST_RING_SIZE(blkif, AREA)); putc_('\n');
}

static void run(void) {
    blkif_sring_t *s = (blkif_sring_t *)area;
    unsigned round, i;
    memset(area, 0xa5, sizeof(area)); /* the ring area starts dirty */
    SHARED_RING_INIT(s);
    FRONT_RING_ATTACH(&front, s, START, AREA);
    BACK_RING_ATTACH(&back, s, START, AREA);
    s->req_prod = s->rsp_prod = START;
    s->req_event = s->rsp_event = START + 1;
    dump("init");
    for (round = 0; round < 12; round++) {
        unsigned nreq = 3 + round % 5;
        for (i = 0; i < nreq; i++) put_request((int)((round + i) % 5));
        push_requests();
        if (round % 3 == 2) {
            /* answered before anyone looks: the requests are only seen via their responses */
            consume_and_answer(0, 0);
            dump("push+answer");
        } else {
            dump("push");
            consume_and_answer(round % 2, 3);
            dump("answer");
        }
        front_consume();
        dump("front-consumed");
    }
}

void _start(void) {
    layout();
    run();
    flush();
    sys_exit(0);
}
