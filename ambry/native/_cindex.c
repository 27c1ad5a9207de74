/*
 * ambry.native._cindex -- CBlobIndex, the in-memory blob index (C implementation).
 *
 * Contract: ambry/native/SPEC.md.  The pure-Python twin is ambry/native/_pyindex.py; the two
 * must behave identically (tests/unit/test_index.py drives them side by side).
 *
 * MEMORY LAYOUT
 *   Dense entries.  Every key owns one 40-byte record, stored in the exact little-endian wire
 *   layout of ENTRY_STRUCT ("<16sIIIIIHBx": key, segment, offset, size, expiry_s, delete_s,
 *   life_version, flags, reserved=0).  Records live in fixed-size pages of PAGE_ENTRIES (4096)
 *   records = 160 KiB, allocated on demand and never moved or freed before the object dies;
 *   entry i is pages[i >> 12] + (i & 4095) * 40.  Positions are insertion order; an overwrite
 *   rewrites the record in place and so keeps its position.  Growth never copies a record and
 *   the slack is at most one page.  The page directory is a pointer array grown by doubling.
 *
 *   Slot table.  Open addressing with linear probing over `cap` uint32 slots: 0 = empty,
 *   i + 1 = entry i.  cap is not a power of two: the home slot is fastrange(h, cap) =
 *   (h * cap) >> 64 (128-bit product), so the table grows by 1.5x.  h = fmix64 (the murmur3
 *   64-bit finalizer) of the first 8 key bytes, read little-endian.  Keys are assumed to be
 *   random UUIDs: keys sharing their first 8 bytes hash alike and are told apart only by the
 *   full 16-byte compare (correct, but a long probe run if an adversary chose the keys).
 *
 *   Incremental growth.  When an insert finds count >= 0.85 * cap, a table of 1.5 * cap slots
 *   is calloc'ed (lazily zeroed pages: O(1)) and becomes `cur`; the previous table becomes `old`
 *   and still indexes entries [0, migrate_end).  Every later put re-hashes the next
 *   MIGRATE_BATCH (256) entries, in dense order, into `cur`; new keys go straight into `cur`.
 *   Lookups probe `cur`, then `old`.  When the migration reaches migrate_end, `old` is freed.
 *   A migration lasts about count/256 puts (0.4 % of the growth interval).
 *
 *   Bytes per entry: 40 (record) + 4/load of slots, load in [0.567, 0.85] between growths
 *   (4.7 .. 7.1 B), plus <= 1 page of slack and 8 B of directory per 4096 entries: <= 47.1 B
 *   at large sizes.  While a migration is running, both tables are live: +4.7 B transiently.
 *   memory_bytes() reports exactly what is malloc'ed: object, directory, pages, slot tables.
 *
 *   Bulk load.  load() of n records into an index holding count <= n entries rebuilds the
 *   slot table in one pass, pre-sized for count + n at load 0.75.  While building it uses a
 *   temporary table of (slot, 32-bit hash tag) pairs, so a probe only reads a record on a tag
 *   match (a duplicate, or a 2^-32 accident), with software prefetch of the home slots of the
 *   next 16 records; at the end the pairs are compacted in place to uint32 slots and the
 *   buffer is shrunk with realloc.  A load smaller than the index goes through the put path.
 *
 * COMPLEXITY
 *   get / __contains__: expected O(1) (one or two probe runs).  put: expected O(1) plus at most
 *   MIGRATE_BATCH re-hashes; no put does O(n) work (growth allocates with calloc, the old
 *   table is freed once its last entry has moved).  load: O(count + n) on the bulk path, per
 *   put otherwise.  dump: O(count) memcpy.  items(): O(1) per step.  len / memory_bytes: O(1).
 *
 * THREAD SAFETY
 *   The GIL is held throughout and never released, so the object may be shared by several
 *   Python threads.  Argument conversion (which may run Python code: __index__, buffer
 *   exporters) is finished before the table is read or changed; values are copied to locals
 *   before result objects are allocated (an allocation may run the GC and thus finalizers, which
 *   may call back into this index).  Records are never moved or removed, so iterators walk
 *   dense positions and stay valid under mutation: they yield entries appended before they
 *   reach the end, and see overwrites of positions not yet passed; once exhausted they stay
 *   exhausted.  If put or load fails (MemoryError, OverflowError) the index stays consistent:
 *   put changes nothing, load keeps the records it had applied before the error.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ENTRY_SIZE 40
#define KEY_SIZE 16
#define VALUE_OFFSET 16            /* first value byte in a record */
#define RESERVED_OFFSET 39         /* always written as 0 */
#define PAGE_SHIFT 12
#define PAGE_ENTRIES ((uint64_t)1 << PAGE_SHIFT)
#define PAGE_MASK (PAGE_ENTRIES - 1)
#define PAGE_BYTES ((size_t)PAGE_ENTRIES * ENTRY_SIZE)
#define MIN_CAP 16
#define MAX_LOAD_PCT 85            /* grow when count reaches 85 % of cap */
#define BULK_LOAD_PCT 75           /* bulk load sizes the table for 75 % */
#define MIGRATE_BATCH 256          /* entries re-hashed per put while migrating */
#define LOOKAHEAD 16               /* bulk-load prefetch distance, a power of two */
#define MAX_ENTRIES ((uint64_t)UINT32_MAX - 1)   /* slot value i + 1 must fit in uint32 */
#define U16_MAX_VALUE 0xFFFFUL
#define U8_MAX_VALUE 0xFFUL
#define U32_MAX_VALUE 0xFFFFFFFFUL

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* ------------------------------------------------------------------------------------------ */
/* little-endian helpers (compile to single loads/stores on little-endian targets)             */

static inline uint64_t
load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

static inline uint32_t
load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void
store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void
store_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* ------------------------------------------------------------------------------------------ */
/* hashing                                                                                     */

static inline uint64_t
key_hash(const uint8_t *key)
{
    uint64_t k = load_le64(key);
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* high 64 bits of a * b */
static inline uint64_t
mulhi64(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)a * b) >> 64);
#else
    uint64_t a_lo = (uint32_t)a, a_hi = a >> 32, b_lo = (uint32_t)b, b_hi = b >> 32;
    uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
    uint64_t cross = (lo_lo >> 32) + (uint32_t)hi_lo + lo_hi;
    return (hi_lo >> 32) + (cross >> 32) + hi_hi;
#endif
}

/* fastrange: maps h uniformly onto [0, cap) */
static inline uint64_t
home_slot(uint64_t h, uint64_t cap)
{
    return mulhi64(h, cap);
}

static inline int
key_eq(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, KEY_SIZE) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the object                                                                                  */

typedef struct {
    uint32_t *slots;   /* NULL when cap == 0 */
    uint64_t cap;
    size_t bytes;      /* malloc'ed size of slots */
} SlotTable;

typedef struct {
    PyObject_HEAD
    uint8_t **pages;       /* page directory */
    size_t npages;         /* pages allocated */
    size_t dir_cap;        /* capacity of the directory */
    uint64_t count;        /* entries */
    uint64_t grow_at;      /* an insert at count >= grow_at starts a growth */
    SlotTable cur;         /* receives every insert */
    SlotTable old;         /* slots == NULL unless a migration is running */
    uint64_t migrate_pos;  /* next dense position to move from old to cur */
    uint64_t migrate_end;  /* old indexes exactly the entries [0, migrate_end) */
} CBlobIndex;

typedef struct {
    PyObject_HEAD
    CBlobIndex *index;     /* NULL once exhausted */
    uint64_t pos;
} CBlobIndexItems;

static PyTypeObject CBlobIndex_Type;
static PyTypeObject CBlobIndexItems_Type;

static inline uint8_t *
entry_at(const CBlobIndex *ix, uint64_t i)
{
    return ix->pages[i >> PAGE_SHIFT] + (size_t)(i & PAGE_MASK) * ENTRY_SIZE;
}

/* floor(cap * pct / 100) without overflow */
static inline uint64_t
pct_of(uint64_t cap, uint64_t pct)
{
    return cap / 100 * pct + cap % 100 * pct / 100;
}

/* smallest table (>= MIN_CAP) holding n entries at pct % load */
static uint64_t
cap_for(uint64_t n, uint64_t pct)
{
    uint64_t cap = n / pct * 100 + (n % pct) * 100 / pct + 1;
    if (cap < MIN_CAP)
        cap = MIN_CAP;
    while (pct_of(cap, pct) < n)
        cap++;
    return cap;
}

static int
table_alloc(SlotTable *t, uint64_t cap, size_t slot_words)
{
    if (cap > (uint64_t)(SIZE_MAX / (sizeof(uint32_t) * slot_words))) {
        PyErr_NoMemory();
        return -1;
    }
    uint32_t *slots = PyMem_RawCalloc((size_t)cap, sizeof(uint32_t) * slot_words);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->slots = slots;
    t->cap = cap;
    t->bytes = (size_t)cap * sizeof(uint32_t) * slot_words;
    return 0;
}

static void
table_free(SlotTable *t)
{
    PyMem_RawFree(t->slots);
    t->slots = NULL;
    t->cap = 0;
    t->bytes = 0;
}

/* Probe t for key.  Returns its slot value (entry index + 1), or 0 and, if empty_out is not
 * NULL, the empty slot that ends the probe run. */
static inline uint32_t
table_find(const CBlobIndex *ix, const SlotTable *t, uint64_t h, const uint8_t *key,
           uint64_t *empty_out)
{
    const uint32_t *slots = t->slots;
    const uint64_t cap = t->cap;
    uint64_t s = home_slot(h, cap);
    for (;;) {
        uint32_t v = slots[s];
        if (v == 0) {
            if (empty_out != NULL)
                *empty_out = s;
            return 0;
        }
        if (key_eq(entry_at(ix, v - 1), key))
            return v;
        if (++s == cap)
            s = 0;
    }
}

/* Insert slot value v whose key is known to be absent from t. */
static inline void
table_insert_absent(SlotTable *t, uint64_t h, uint32_t v)
{
    uint32_t *slots = t->slots;
    const uint64_t cap = t->cap;
    uint64_t s = home_slot(h, cap);
    while (slots[s] != 0) {
        if (++s == cap)
            s = 0;
    }
    slots[s] = v;
}

static inline uint32_t
ix_lookup(const CBlobIndex *ix, const uint8_t *key)
{
    if (ix->cur.slots == NULL)
        return 0;
    uint64_t h = key_hash(key);
    uint32_t v = table_find(ix, &ix->cur, h, key, NULL);
    if (v == 0 && ix->old.slots != NULL)
        v = table_find(ix, &ix->old, h, key, NULL);
    return v;
}

/* Move up to `budget` entries from old to cur; frees old when the migration is complete. */
static void
migrate_step(CBlobIndex *ix, uint64_t budget)
{
    if (ix->old.slots == NULL)
        return;
    uint64_t pos = ix->migrate_pos;
    uint64_t end = ix->migrate_end - pos > budget ? pos + budget : ix->migrate_end;
    for (; pos < end; pos++)
        table_insert_absent(&ix->cur, key_hash(entry_at(ix, pos)), (uint32_t)(pos + 1));
    ix->migrate_pos = end;
    if (end == ix->migrate_end) {
        table_free(&ix->old);
        ix->migrate_pos = ix->migrate_end = 0;
    }
}

/* Start a growth: cur becomes old (and starts migrating), a 1.5x table becomes cur.  On failure
 * (MemoryError) nothing is changed.  Precondition: no migration is running. */
static int
start_growth(CBlobIndex *ix)
{
    uint64_t newcap = ix->cur.slots == NULL ? MIN_CAP : ix->cur.cap + ix->cur.cap / 2;
    if (newcap < MIN_CAP)
        newcap = MIN_CAP;
    while (pct_of(newcap, MAX_LOAD_PCT) <= ix->count)
        newcap += newcap / 2;
    SlotTable t;
    if (table_alloc(&t, newcap, 1) < 0)
        return -1;
    if (ix->count == 0) {
        table_free(&ix->cur);          /* nothing to migrate */
    }
    else {
        ix->old = ix->cur;
        ix->migrate_pos = 0;
        ix->migrate_end = ix->count;
    }
    ix->cur = t;
    ix->grow_at = pct_of(newcap, MAX_LOAD_PCT);
    return 0;
}

/* Make sure the page holding entry index ix->count exists. */
static int
ensure_page(CBlobIndex *ix)
{
    size_t p = (size_t)(ix->count >> PAGE_SHIFT);
    if (p < ix->npages)
        return 0;
    if (ix->npages == ix->dir_cap) {
        size_t ncap = ix->dir_cap ? ix->dir_cap * 2 : 8;
        if (ncap > SIZE_MAX / sizeof(uint8_t *)) {
            PyErr_NoMemory();
            return -1;
        }
        uint8_t **dir = PyMem_RawRealloc(ix->pages, ncap * sizeof(uint8_t *));
        if (dir == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        ix->pages = dir;
        ix->dir_cap = ncap;
    }
    uint8_t *page = PyMem_RawMalloc(PAGE_BYTES);
    if (page == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ix->pages[ix->npages++] = page;
    return 0;
}

static int
index_full_error(void)
{
    PyErr_Format(PyExc_OverflowError, "BlobIndex is full (at most %llu entries)",
                 (unsigned long long)MAX_ENTRIES);
    return -1;
}

/* Insert or overwrite one packed record.  0 on success, -1 with an exception set (the index is
 * then unchanged). */
static int
ix_put_record(CBlobIndex *ix, const uint8_t *rec)
{
    uint64_t h = key_hash(rec);
    uint64_t empty = 0;
    uint32_t v = 0;
    if (ix->cur.slots != NULL) {
        v = table_find(ix, &ix->cur, h, rec, &empty);
        if (v == 0 && ix->old.slots != NULL)
            v = table_find(ix, &ix->old, h, rec, NULL);
    }
    if (v != 0) {
        uint8_t *e = entry_at(ix, v - 1);
        memcpy(e + VALUE_OFFSET, rec + VALUE_OFFSET, RESERVED_OFFSET - VALUE_OFFSET);
        e[RESERVED_OFFSET] = 0;
        migrate_step(ix, MIGRATE_BATCH);
        return 0;
    }
    if (ix->count >= MAX_ENTRIES)
        return index_full_error();
    if (ensure_page(ix) < 0)
        return -1;
    int probe_again = 0;
    if (ix->cur.slots == NULL || ix->count >= ix->grow_at) {
        /* A migration lasts count/256 puts, far less than the 0.425 * cap inserts to the next
         * growth, so this completion never does real work; it keeps the invariant anyway. */
        migrate_step(ix, UINT64_MAX);
        if (start_growth(ix) < 0)
            return -1;
        probe_again = 1;
    }
    uint64_t idx = ix->count;
    uint8_t *e = entry_at(ix, idx);
    memcpy(e, rec, RESERVED_OFFSET);
    e[RESERVED_OFFSET] = 0;
    if (probe_again)
        table_insert_absent(&ix->cur, h, (uint32_t)(idx + 1));
    else
        ix->cur.slots[empty] = (uint32_t)(idx + 1);
    ix->count = idx + 1;
    migrate_step(ix, MIGRATE_BATCH);
    return 0;
}

/* Bulk load: rebuild the slot table for count + n entries with the tagged temporary table (see
 * the header).  Returns 0, or -1 with an exception set; on -1 after the table was allocated,
 * the records before the failing one are applied and the index is consistent.  *fallback is set
 * when the temporary table could not be allocated (no change made, no exception set). */
static int
ix_bulk_load(CBlobIndex *ix, const uint8_t *buf, uint64_t n, int *fallback)
{
    uint64_t total = ix->count + n;
    if (total > MAX_ENTRIES)
        total = MAX_ENTRIES;
    uint64_t cap = cap_for(total, BULK_LOAD_PCT);
    if (ix->cur.slots != NULL && ix->cur.cap > cap)
        cap = ix->cur.cap;
    SlotTable pairs;
    *fallback = 0;
    if (table_alloc(&pairs, cap, 2) < 0) {
        PyErr_Clear();
        *fallback = 1;
        return -1;
    }
    uint32_t *a = pairs.slots;   /* a[2s] = slot value, a[2s + 1] = low 32 bits of the hash */
    uint64_t ring[LOOKAHEAD];
    const uint64_t mask = LOOKAHEAD - 1;

    table_free(&ix->cur);
    table_free(&ix->old);
    ix->migrate_pos = ix->migrate_end = 0;

    /* 1. re-index the existing entries: keys are distinct, no compare needed */
    const uint64_t existing = ix->count;
    for (uint64_t j = 0; j < LOOKAHEAD && j < existing; j++) {
        ring[j] = key_hash(entry_at(ix, j));
        PREFETCH(&a[2 * home_slot(ring[j], cap)]);
    }
    for (uint64_t i = 0; i < existing; i++) {
        uint64_t h = ring[i & mask];
        if (i + LOOKAHEAD < existing) {
            uint64_t hj = key_hash(entry_at(ix, i + LOOKAHEAD));
            ring[(i + LOOKAHEAD) & mask] = hj;
            PREFETCH(&a[2 * home_slot(hj, cap)]);
        }
        uint64_t s = home_slot(h, cap);
        while (a[2 * s] != 0) {
            if (++s == cap)
                s = 0;
        }
        a[2 * s] = (uint32_t)(i + 1);
        a[2 * s + 1] = (uint32_t)h;
    }

    /* 2. the new records */
    int rc = 0;
    for (uint64_t j = 0; j < LOOKAHEAD && j < n; j++) {
        ring[j] = key_hash(buf + j * ENTRY_SIZE);
        PREFETCH(&a[2 * home_slot(ring[j], cap)]);
    }
    for (uint64_t r = 0; r < n; r++) {
        const uint8_t *rec = buf + r * ENTRY_SIZE;
        uint64_t h = ring[r & mask];
        if (r + LOOKAHEAD < n) {
            uint64_t hj = key_hash(buf + (r + LOOKAHEAD) * ENTRY_SIZE);
            ring[(r + LOOKAHEAD) & mask] = hj;
            PREFETCH(&a[2 * home_slot(hj, cap)]);
        }
        const uint32_t tag = (uint32_t)h;
        uint64_t s = home_slot(h, cap);
        uint32_t v;
        for (;;) {
            v = a[2 * s];
            if (v == 0 || (a[2 * s + 1] == tag && key_eq(entry_at(ix, v - 1), rec)))
                break;
            if (++s == cap)
                s = 0;
        }
        if (v != 0) {
            uint8_t *e = entry_at(ix, v - 1);
            memcpy(e + VALUE_OFFSET, rec + VALUE_OFFSET, RESERVED_OFFSET - VALUE_OFFSET);
            e[RESERVED_OFFSET] = 0;
            continue;
        }
        if (ix->count >= MAX_ENTRIES) {
            rc = index_full_error();
            break;
        }
        if (ensure_page(ix) < 0) {
            rc = -1;
            break;
        }
        uint8_t *e = entry_at(ix, ix->count);
        memcpy(e, rec, RESERVED_OFFSET);
        e[RESERVED_OFFSET] = 0;
        a[2 * s] = (uint32_t)(ix->count + 1);
        a[2 * s + 1] = tag;
        ix->count++;
    }

    /* 3. compact pairs to slots in place (slot s is written at bytes [4s, 4s + 4), below pair s'
     * for every s' >= s), then give the upper half back */
    for (uint64_t s = 0; s < cap; s++)
        a[s] = a[2 * s];
    uint32_t *shrunk = PyMem_RawRealloc(a, (size_t)cap * sizeof(uint32_t));
    if (shrunk != NULL) {
        pairs.slots = shrunk;
        pairs.bytes = (size_t)cap * sizeof(uint32_t);
    }
    ix->cur = pairs;
    ix->grow_at = pct_of(cap, MAX_LOAD_PCT);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* argument conversion                                                                         */

/* Parses METH_FASTCALL | METH_KEYWORDS arguments by name; all parameters are required. */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           const char *const *names, Py_ssize_t nparams, PyObject **out)
{
    if (nargs > nparams) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional argument%s (%zd given)", fname,
                     nparams, nparams == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nparams; i++)
        out[i] = i < nargs ? args[i] : NULL;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t j = 0; j < nkw; j++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, j);
            Py_ssize_t k = 0;
            while (k < nparams && PyUnicode_CompareWithASCIIString(name, names[k]) != 0)
                k++;
            if (k == nparams) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, name);
                return -1;
            }
            if (out[k] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[k]);
                return -1;
            }
            out[k] = args[nargs + j];
        }
    }
    for (Py_ssize_t i = 0; i < nparams; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %zd)", fname,
                         names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* Copies a 16-byte key out of any buffer-protocol object. */
static int
get_key(PyObject *obj, uint8_t *out)
{
    if (PyBytes_Check(obj)) {
        Py_ssize_t len = PyBytes_GET_SIZE(obj);
        if (len != KEY_SIZE) {
            PyErr_Format(PyExc_ValueError, "key must be exactly %d bytes, got %zd", KEY_SIZE, len);
            return -1;
        }
        memcpy(out, PyBytes_AS_STRING(obj), KEY_SIZE);
        return 0;
    }
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "key must be a bytes-like object, not '%.200s'",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_FULL_RO) < 0)
        return -1;
    int rc = 0;
    if (view.len != KEY_SIZE) {
        PyErr_Format(PyExc_ValueError, "key must be exactly %d bytes, got %zd", KEY_SIZE,
                     view.len);
        rc = -1;
    }
    else if (PyBuffer_ToContiguous(out, &view, KEY_SIZE, 'C') < 0) {
        rc = -1;
    }
    PyBuffer_Release(&view);
    return rc;
}

/* Converts an integer-like object to an unsigned value <= max; OverflowError otherwise. */
static int
get_uint(PyObject *obj, unsigned long max, const char *name, unsigned long *out)
{
    unsigned long v;
    if (PyLong_CheckExact(obj)) {
        v = PyLong_AsUnsignedLong(obj);
    }
    else {
        PyObject *num = PyNumber_Index(obj);
        if (num == NULL)
            return -1;
        v = PyLong_AsUnsignedLong(num);
        Py_DECREF(num);
    }
    int out_of_range = 0;
    if (v == (unsigned long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();   /* negative or wider than unsigned long: report our own message */
        out_of_range = 1;
    }
    if (out_of_range || v > max) {
        PyErr_Format(PyExc_OverflowError, "%s out of range (0..%lu)", name, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Non-negative index argument; huge values are clamped (the result is clamped to len anyway). */
static int
get_nonneg(PyObject *obj, const char *name, Py_ssize_t *out)
{
    Py_ssize_t v = PyNumber_AsSsize_t(obj, NULL);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", name);
        return -1;
    }
    *out = v;
    return 0;
}

/* Builds the 7-tuple of values from a snapshot of a record. */
static PyObject *
values_tuple(const uint8_t *rec)
{
    unsigned long v[7] = {
        load_le32(rec + 16), load_le32(rec + 20), load_le32(rec + 24), load_le32(rec + 28),
        load_le32(rec + 32), (unsigned long)rec[36] | (unsigned long)rec[37] << 8, rec[38],
    };
    PyObject *t = PyTuple_New(7);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < 7; i++) {
        PyObject *o = PyLong_FromUnsignedLong(v[i]);
        if (o == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

/* ------------------------------------------------------------------------------------------ */
/* CBlobIndex methods                                                                          */

static void
CBlobIndex_dealloc(CBlobIndex *self)
{
    for (size_t p = 0; p < self->npages; p++)
        PyMem_RawFree(self->pages[p]);
    PyMem_RawFree(self->pages);
    table_free(&self->cur);
    table_free(&self->old);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
CBlobIndex_init(CBlobIndex *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity_hint", NULL};
    PyObject *hint_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:CBlobIndex", kwlist, &hint_obj))
        return -1;
    Py_ssize_t hint = 0;
    if (hint_obj != NULL && get_nonneg(hint_obj, "capacity_hint", &hint) < 0)
        return -1;
    if (hint == 0 || self->count != 0)
        return 0;
    uint64_t want = (uint64_t)hint > MAX_ENTRIES ? MAX_ENTRIES : (uint64_t)hint;
    uint64_t cap = cap_for(want, MAX_LOAD_PCT);
    if (self->cur.slots != NULL && self->cur.cap >= cap)
        return 0;
    SlotTable t;
    if (table_alloc(&t, cap, 1) < 0)
        return -1;
    table_free(&self->cur);
    self->cur = t;
    self->grow_at = pct_of(cap, MAX_LOAD_PCT);
    return 0;
}

static Py_ssize_t
CBlobIndex_len(CBlobIndex *self)
{
    return (Py_ssize_t)self->count;
}

static int
CBlobIndex_contains(CBlobIndex *self, PyObject *key)
{
    uint8_t k[KEY_SIZE];
    if (get_key(key, k) < 0)
        return -1;
    return ix_lookup(self, k) != 0;
}

static const char *const get_names[] = {"key"};

static PyObject *
CBlobIndex_get(CBlobIndex *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    uint8_t k[KEY_SIZE];
    if (nargs == 1 && kwnames == NULL)
        a[0] = args[0];
    else if (parse_args("get", args, nargs, kwnames, get_names, 1, a) < 0)
        return NULL;
    if (get_key(a[0], k) < 0)
        return NULL;
    uint32_t v = ix_lookup(self, k);
    if (v == 0)
        Py_RETURN_NONE;
    uint8_t rec[ENTRY_SIZE];
    memcpy(rec, entry_at(self, v - 1), ENTRY_SIZE);
    return values_tuple(rec);
}

static const char *const put_names[] = {
    "key", "segment", "offset", "size", "expiry_s", "delete_s", "life_version", "flags",
};

static PyObject *
CBlobIndex_put(CBlobIndex *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *const *a;
    PyObject *parsed[8];
    if (nargs == 8 && kwnames == NULL) {
        a = args;
    }
    else {
        if (parse_args("put", args, nargs, kwnames, put_names, 8, parsed) < 0)
            return NULL;
        a = parsed;
    }
    uint8_t rec[ENTRY_SIZE];
    unsigned long v;
    if (get_key(a[0], rec) < 0)
        return NULL;
    for (int i = 0; i < 5; i++) {
        if (get_uint(a[1 + i], U32_MAX_VALUE, put_names[1 + i], &v) < 0)
            return NULL;
        store_le32(rec + VALUE_OFFSET + 4 * i, (uint32_t)v);
    }
    if (get_uint(a[6], U16_MAX_VALUE, "life_version", &v) < 0)
        return NULL;
    store_le16(rec + 36, (uint16_t)v);
    if (get_uint(a[7], U8_MAX_VALUE, "flags", &v) < 0)
        return NULL;
    rec[38] = (uint8_t)v;
    rec[RESERVED_OFFSET] = 0;
    /* no Python code runs from here on */
    if (ix_put_record(self, rec) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static const char *const dump_names[] = {"start", "count"};

static PyObject *
CBlobIndex_dump(CBlobIndex *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    Py_ssize_t start, want;
    if (parse_args("dump", args, nargs, kwnames, dump_names, 2, a) < 0)
        return NULL;
    if (get_nonneg(a[0], "start", &start) < 0 || get_nonneg(a[1], "count", &want) < 0)
        return NULL;
    uint64_t total = self->count;
    uint64_t lo = (uint64_t)start < total ? (uint64_t)start : total;
    uint64_t n = total - lo < (uint64_t)want ? total - lo : (uint64_t)want;
    if (n > (uint64_t)(PY_SSIZE_T_MAX / ENTRY_SIZE))
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * ENTRY_SIZE));
    if (out == NULL)
        return NULL;
    /* The allocation may have run Python code; entries only ever get appended, so [lo, lo + n)
     * is still valid.  Copy page runs. */
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    uint64_t i = lo, end = lo + n;
    while (i < end) {
        uint64_t run = PAGE_ENTRIES - (i & PAGE_MASK);
        if (run > end - i)
            run = end - i;
        memcpy(dst, entry_at(self, i), (size_t)run * ENTRY_SIZE);
        dst += run * ENTRY_SIZE;
        i += run;
    }
    return out;
}

static const char *const load_names[] = {"buf"};

static PyObject *
CBlobIndex_load(CBlobIndex *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (parse_args("load", args, nargs, kwnames, load_names, 1, a) < 0)
        return NULL;
    if (!PyObject_CheckBuffer(a[0])) {
        PyErr_Format(PyExc_TypeError, "load() argument must be a bytes-like object, not '%.200s'",
                     Py_TYPE(a[0])->tp_name);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_FULL_RO) < 0)
        return NULL;
    const uint8_t *data = view.buf;
    void *copy = NULL;
    PyObject *result = NULL;
    if (view.len % ENTRY_SIZE != 0) {
        PyErr_Format(PyExc_ValueError, "buffer length %zd is not a multiple of %d", view.len,
                     ENTRY_SIZE);
        goto done;
    }
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        copy = PyMem_RawMalloc(view.len ? (size_t)view.len : 1);
        if (copy == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        if (PyBuffer_ToContiguous(copy, &view, view.len, 'C') < 0)
            goto done;
        data = copy;
    }
    uint64_t n = (uint64_t)view.len / ENTRY_SIZE;
    int fallback = 1;
    if (n > 0 && n >= self->count) {
        if (ix_bulk_load(self, data, n, &fallback) < 0 && !fallback)
            goto done;
    }
    if (fallback) {
        for (uint64_t r = 0; r < n; r++) {
            if (ix_put_record(self, data + r * ENTRY_SIZE) < 0)
                goto done;
        }
    }
    result = PyLong_FromUnsignedLongLong((unsigned long long)n);
done:
    PyMem_RawFree(copy);
    PyBuffer_Release(&view);
    return result;
}

static size_t
ix_memory_bytes(const CBlobIndex *self)
{
    return sizeof(CBlobIndex) + self->dir_cap * sizeof(uint8_t *) + self->npages * PAGE_BYTES +
           self->cur.bytes + self->old.bytes;
}

static PyObject *
CBlobIndex_memory_bytes(CBlobIndex *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(ix_memory_bytes(self));
}

static PyObject *
CBlobIndex_items(CBlobIndex *self, PyObject *Py_UNUSED(ignored))
{
    CBlobIndexItems *it = PyObject_GC_New(CBlobIndexItems, &CBlobIndexItems_Type);
    if (it == NULL)
        return NULL;
    Py_INCREF(self);
    it->index = self;
    it->pos = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

PyDoc_STRVAR(get_doc,
"get($self, /, key)\n--\n\n"
"Return (segment, offset, size, expiry_s, delete_s, life_version, flags) or None.");
PyDoc_STRVAR(put_doc,
"put($self, /, key, segment, offset, size, expiry_s, delete_s, life_version, flags)\n--\n\n"
"Insert or overwrite an entry; an overwrite keeps the entry's position.");
PyDoc_STRVAR(dump_doc,
"dump($self, /, start, count)\n--\n\n"
"Packed entries [start, start+count) in insertion order, clamped to len(self).");
PyDoc_STRVAR(load_doc,
"load($self, /, buf)\n--\n\n"
"Bulk insert packed entries from a buffer (later duplicates win); returns the number read.");
PyDoc_STRVAR(memory_bytes_doc,
"memory_bytes($self, /)\n--\n\n"
"Bytes currently malloc'ed by this index (object, page directory, pages, slot tables).");
PyDoc_STRVAR(items_doc,
"items($self, /)\n--\n\n"
"Iterator of (key, values) in insertion order; safe under concurrent puts.");
PyDoc_STRVAR(sizeof_doc, "__sizeof__($self, /)\n--\n\nSize of the object in memory, in bytes.");

static PyMethodDef CBlobIndex_methods[] = {
    {"get", (PyCFunction)(void (*)(void))CBlobIndex_get, METH_FASTCALL | METH_KEYWORDS, get_doc},
    {"put", (PyCFunction)(void (*)(void))CBlobIndex_put, METH_FASTCALL | METH_KEYWORDS, put_doc},
    {"dump", (PyCFunction)(void (*)(void))CBlobIndex_dump, METH_FASTCALL | METH_KEYWORDS,
     dump_doc},
    {"load", (PyCFunction)(void (*)(void))CBlobIndex_load, METH_FASTCALL | METH_KEYWORDS,
     load_doc},
    {"memory_bytes", (PyCFunction)CBlobIndex_memory_bytes, METH_NOARGS, memory_bytes_doc},
    {"items", (PyCFunction)CBlobIndex_items, METH_NOARGS, items_doc},
    {"__sizeof__", (PyCFunction)CBlobIndex_memory_bytes, METH_NOARGS, sizeof_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods CBlobIndex_as_sequence = {
    .sq_length = (lenfunc)CBlobIndex_len,
    .sq_contains = (objobjproc)CBlobIndex_contains,
};

PyDoc_STRVAR(CBlobIndex_doc,
"CBlobIndex(capacity_hint=0)\n--\n\n"
"Blob index: 16-byte key -> 40-byte packed entry, in insertion order (see SPEC.md).");

static PyTypeObject CBlobIndex_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ambry.native._cindex.CBlobIndex",
    .tp_basicsize = sizeof(CBlobIndex),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)CBlobIndex_dealloc,
    .tp_as_sequence = &CBlobIndex_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = CBlobIndex_doc,
    .tp_methods = CBlobIndex_methods,
    .tp_init = (initproc)CBlobIndex_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------ */
/* items() iterator                                                                            */

static void
CBlobIndexItems_dealloc(CBlobIndexItems *it)
{
    PyObject_GC_UnTrack(it);
    Py_XDECREF(it->index);
    PyObject_GC_Del(it);
}

static int
CBlobIndexItems_traverse(CBlobIndexItems *it, visitproc visit, void *arg)
{
    Py_VISIT(it->index);
    return 0;
}

static PyObject *
CBlobIndexItems_next(CBlobIndexItems *it)
{
    CBlobIndex *ix = it->index;
    if (ix == NULL)
        return NULL;
    if (it->pos >= ix->count) {
        it->index = NULL;
        Py_DECREF(ix);
        return NULL;
    }
    uint8_t rec[ENTRY_SIZE];
    memcpy(rec, entry_at(ix, it->pos), ENTRY_SIZE);
    it->pos++;
    PyObject *key = PyBytes_FromStringAndSize((const char *)rec, KEY_SIZE);
    if (key == NULL)
        return NULL;
    PyObject *values = values_tuple(rec);
    if (values == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(key);
        Py_DECREF(values);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, key);
    PyTuple_SET_ITEM(pair, 1, values);
    return pair;
}

static PyTypeObject CBlobIndexItems_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ambry.native._cindex.CBlobIndexItems",
    .tp_basicsize = sizeof(CBlobIndexItems),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)CBlobIndexItems_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)CBlobIndexItems_traverse,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)CBlobIndexItems_next,
};

/* ------------------------------------------------------------------------------------------ */
/* module                                                                                      */

PyDoc_STRVAR(module_doc,
"C implementation of the ambry blob index (see ambry/native/SPEC.md); use ambry.native.");

static struct PyModuleDef cindex_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ambry.native._cindex",
    .m_doc = module_doc,
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cindex(void)
{
    if (PyType_Ready(&CBlobIndex_Type) < 0 || PyType_Ready(&CBlobIndexItems_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&cindex_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CBlobIndex_Type);
    if (PyModule_AddObject(m, "CBlobIndex", (PyObject *)&CBlobIndex_Type) < 0) {
        Py_DECREF(&CBlobIndex_Type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ENTRY_SIZE", ENTRY_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "PAGE_ENTRIES", (long)PAGE_ENTRIES) < 0 ||
        PyModule_AddIntConstant(m, "MIGRATE_BATCH", MIGRATE_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
