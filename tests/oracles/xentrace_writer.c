/*
 * xentrace_writer: an independent xentrace dump writer for blktrace-xen's tests.
 *
 * Records are laid out with Xen's own `struct t_rec` from <xen/trace.h>
 * (Debian libxen-dev), so the bit-field order and sizes are the compiler's,
 * not ours. Windows use xentrace.c's `struct cpu_change_record` framing.
 *
 * Usage: xentrace_writer OUT.bin SEED NRECORDS [guest]
 * Writes OUT.bin and prints one line per stored record, in file order:
 *   file_offset cpu has_tsc tsc event n w0 .. w(n-1)
 * Window headers are not printed. Wrap fillers are printed with event 0x1f002.
 * Without "guest", no TRC_GUEST records are written (so xenalyze reads the file).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xen/trace.h>

#define NCPU 3
#define WINDOW_MAX 4096

struct cpu_change_record {   /* tools/xentrace/xentrace.c */
    uint32_t header;
    struct {
        int cpu;
        unsigned window_size;
    } data;
};

static uint64_t lcg;
static uint32_t rnd(void) {
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg >> 33);
}

static unsigned char window[NCPU][WINDOW_MAX];
static unsigned fill[NCPU];
static uint64_t tsc[NCPU];
static long file_off;
/* Records waiting in each window: where their offset is to be stored, and
 * their position inside the window. Offsets are final only at flush time. */
static long *slot[NCPU][WINDOW_MAX / 4];
static unsigned inner[NCPU][WINDOW_MAX / 4];
static unsigned nslot[NCPU];

static void flush_all(FILE *out) {
    for (int c = 0; c < NCPU; c++) {
        if (!fill[c])
            continue;
        struct cpu_change_record h = {
            .header = TRC_TRACE_CPU_CHANGE | (2u << TRACE_EXTRA_SHIFT),
            .data = { .cpu = c, .window_size = fill[c] },
        };
        fwrite(&h, sizeof(h), 1, out);
        fwrite(window[c], fill[c], 1, out);
        for (unsigned i = 0; i < nslot[c]; i++)
            *slot[c][i] = file_off + (long)sizeof(h) + inner[c][i];
        nslot[c] = 0;
        file_off += sizeof(h) + fill[c];
        fill[c] = 0;
    }
}

/* Append one record to cpu's window; print it with the offset it will have. */
static void put(FILE *out, int cpu, uint32_t event, int with_tsc, uint64_t t,
                int n, const uint32_t *w, long *pending_off) {
    struct t_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.event = event;
    rec.extra_u32 = n;
    rec.cycles_included = with_tsc;
    size_t size = 4;
    if (with_tsc) {
        rec.u.cycles.cycles_lo = (uint32_t)t;
        rec.u.cycles.cycles_hi = (uint32_t)(t >> 32);
        memcpy(rec.u.cycles.extra_u32, w, n * 4);
        size += 8;
    } else {
        memcpy(rec.u.nocycles.extra_u32, w, n * 4);
    }
    size += n * 4;
    if (fill[cpu] + size > WINDOW_MAX)
        flush_all(out);
    memcpy(window[cpu] + fill[cpu], &rec, size);
    slot[cpu][nslot[cpu]] = pending_off;
    inner[cpu][nslot[cpu]++] = fill[cpu];
    fill[cpu] += size;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s OUT SEED N [guest]\n", argv[0]);
        return 2;
    }
    _Static_assert(sizeof(struct t_rec) == 4 + 8 + 28, "t_rec layout");
    FILE *out = fopen(argv[1], "wb");
    if (!out)
        return 1;
    lcg = strtoull(argv[2], NULL, 0);
    long n = strtol(argv[3], NULL, 0);
    int guest = argc > 4 && strcmp(argv[4], "guest") == 0;
    for (int c = 0; c < NCPU; c++)
        tsc[c] = 1000000 + c * 7;

    /* Records are printed only after their window is flushed, so the printed
     * offsets are final: keep them and print in file order at the end. */
    struct printed { long off; int cpu, has; uint64_t t; uint32_t ev; int n; uint32_t w[7]; };
    struct printed *log = calloc(n + 16, sizeof(*log));
    for (long i = 0; i < n; i++) {
        int cpu = rnd() % NCPU;
        uint32_t w[7];
        int k = rnd() % 8;
        for (int j = 0; j < 7; j++)
            w[j] = rnd();
        uint32_t kind = rnd() % 100;
        uint32_t ev;
        int has = 1;
        tsc[cpu] += rnd() % 3000;
        if (kind < 40) {
            ev = TRC_SCHED_SWITCH;
            k = 4;
        } else if (kind < 55) {
            ev = TRC_MEM_PAGE_GRANT_MAP + (rnd() % 2);
            k = 1;
        } else if (kind < 70) {
            ev = TRC_PV_HYPERCALL_V2;
        } else if (kind < 72) {
            /* TRC_LOST_RECORDS: {u32 lost; u16 did, vid; u64 first_tsc} */
            uint64_t first = tsc[cpu];
            tsc[cpu] += 1 + rnd() % 1000;
            ev = TRC_LOST_RECORDS;
            k = 4;
            w[0] = 1 + rnd() % 1000;
            w[1] = (rnd() % 5) | ((rnd() % 4) << 16);
            w[2] = (uint32_t)first;
            w[3] = (uint32_t)(first >> 32);
        } else if (kind < 74) {
            /* A wrap filler: more than 32 bytes gets a TSC (insert_wrap_record). */
            ev = TRC_TRACE_WRAP_BUFFER;
            k = 7;
            for (int j = 0; j < 7; j++)
                w[j] = 0xabababab;
        } else if (kind < 90 && guest) {
            ev = TRC_GUEST | (rnd() % 0x1000);
            has = 0;
        } else if (kind < 90) {
            ev = TRC_HW_IRQ_HANDLED;
            k = 3;
        } else {
            ev = TRC_SCHED_RUNSTATE_CHANGE | ((rnd() % 4) << 8) | ((rnd() % 4) << 4);
            k = 1;
        }
        struct printed *p = &log[i];
        put(out, cpu, ev, has, tsc[cpu], k, w, &p->off);
        p->cpu = cpu; p->has = has; p->t = has ? tsc[cpu] : 0;
        p->ev = ev; p->n = k;
        memcpy(p->w, w, sizeof(w));
    }
    flush_all(out);
    fclose(out);
    /* Sort by offset (a record's window may have been flushed after others'). */
    for (long i = 1; i < n; i++) {
        struct printed x = log[i];
        long j = i - 1;
        while (j >= 0 && log[j].off > x.off) { log[j + 1] = log[j]; j--; }
        log[j + 1] = x;
    }
    for (long i = 0; i < n; i++) {
        struct printed *p = &log[i];
        printf("%ld %d %d %llu %#x %d", p->off, p->cpu, p->has, (unsigned long long)p->t,
               p->ev, p->n);
        for (int j = 0; j < p->n; j++)
            printf(" %u", p->w[j]);
        printf("\n");
    }
    free(log);
    return 0;
}
