/*
 * ambry.native._crecord -- a log record's bytes in one call (C implementation).
 *
 * The record layout is ambry/storage/format.py's (the one place it is documented, version 1):
 * a 64-byte header "<4sBBBBHHIIIQQQQ" + xxh3_64 of its first 56 bytes, then key | props |
 * usermeta | payload.  The pure-Python twin is ambry/native/_pyrecord.py; both must give the
 * same bytes and the same errors (tests/unit/test_record_codec.py drives them side by side and
 * against format.encode_record_header).
 *
 * FUNCTIONS
 *   body_xxh3(*parts) -> int
 *     xxh3_64 of the concatenation of the buffers (the record's body checksum), without
 *     joining them.  The GIL is released while hashing more than RELEASE_GIL_BYTES.
 *   encode_record(rtype, blob_flags, state_flags, life_version, sequence, time_ms, expiry_ms,
 *                 body_xxh3, key, props, usermeta, payload) -> bytes
 *     The whole record in one new bytes object: the header (lengths taken from the buffers,
 *     header checksum computed) followed by the four body parts.  The node's append path writes
 *     it with one pwrite.  Integers out of their field's range raise OverflowError; a key over
 *     65535 bytes raises ValueError (as format.encode_record_header).
 *
 * MEMORY
 *   encode_record allocates exactly one object of 64 + body bytes; body_xxh3 allocates only
 *   its result (the xxh3 state lives on the stack).
 *
 * COMPLEXITY
 *   O(body bytes): one pass of hashing (body_xxh3) or one copy (encode_record).
 *
 * THREAD SAFETY
 *   No shared state.  Buffers are held through the buffer protocol (a bytearray cannot be
 *   resized while exported), so releasing the GIL while hashing is safe.
 *
 * xxhash.h (BSD 2-Clause, Yann Collet) is vendored in ambry/native/vendor/, used inline.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

#define HEADER_SIZE 64
#define HEADER_SUMMED 56
#define FORMAT_VERSION 1
#define MAX_KEY_BYTES 0xFFFF
#define RELEASE_GIL_BYTES (64 * 1024)

static void put_u16(unsigned char *p, uint64_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }

static void put_u32(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* an int argument in [0, max]; -1 with OverflowError/TypeError set otherwise */
static int as_uint(PyObject *o, uint64_t max, const char *name, uint64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", name);
        return -1;
    }
    int overflow = 0;
    long long sv = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (sv == -1 && PyErr_Occurred()) return -1;
    if (overflow < 0 || (!overflow && sv < 0)) {
        PyErr_Format(PyExc_OverflowError, "%s out of range", name);
        return -1;
    }
    uint64_t v;
    if (overflow > 0) {
        v = PyLong_AsUnsignedLongLong(o);
        if (v == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Format(PyExc_OverflowError, "%s out of range", name);
            return -1;
        }
    } else {
        v = (uint64_t)sv;
    }
    if (v > max) {
        PyErr_Format(PyExc_OverflowError, "%s out of range", name);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *body_xxh3(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_buffer b;
        if (PyObject_GetBuffer(args[i], &b, PyBUF_SIMPLE) < 0) return NULL;
        if (b.len > RELEASE_GIL_BYTES) {
            Py_BEGIN_ALLOW_THREADS
            XXH3_64bits_update(&state, b.buf, (size_t)b.len);
            Py_END_ALLOW_THREADS
        } else {
            XXH3_64bits_update(&state, b.buf, (size_t)b.len);
        }
        PyBuffer_Release(&b);
    }
    return PyLong_FromUnsignedLongLong((unsigned long long)XXH3_64bits_digest(&state));
}

static PyObject *encode_record(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    static const char *names[8] = {"rtype", "blob_flags", "state_flags", "life_version",
                                   "sequence", "time_ms", "expiry_ms", "body_xxh3"};
    static const uint64_t maxes[8] = {0xFF, 0xFF, 0xFF, 0xFFFF, UINT64_MAX, UINT64_MAX,
                                      UINT64_MAX, UINT64_MAX};
    if (nargs != 12) {
        PyErr_Format(PyExc_TypeError, "encode_record takes 12 arguments (%zd given)", nargs);
        return NULL;
    }
    uint64_t f[8];
    for (int i = 0; i < 8; i++) {
        if (as_uint(args[i], maxes[i], names[i], &f[i]) < 0) return NULL;
    }
    Py_buffer parts[4];
    int held = 0;
    PyObject *out = NULL;
    for (; held < 4; held++) {
        if (PyObject_GetBuffer(args[8 + held], &parts[held], PyBUF_SIMPLE) < 0) goto done;
    }
    if (parts[0].len > MAX_KEY_BYTES) {
        PyErr_SetString(PyExc_ValueError, "record key too long");
        goto done;
    }
    for (int i = 1; i < 4; i++) {
        if ((uint64_t)parts[i].len > 0xFFFFFFFFu) {
            PyErr_SetString(PyExc_OverflowError, "record part over 4 GiB");
            goto done;
        }
    }
    Py_ssize_t total = HEADER_SIZE;
    for (int i = 0; i < 4; i++) total += parts[i].len;
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(p, "AMBR", 4);
    p[4] = FORMAT_VERSION;
    p[5] = (unsigned char)f[0];
    p[6] = (unsigned char)f[1];
    p[7] = (unsigned char)f[2];
    put_u16(p + 8, f[3]);
    put_u16(p + 10, (uint64_t)parts[0].len);
    put_u32(p + 12, (uint64_t)parts[1].len);
    put_u32(p + 16, (uint64_t)parts[2].len);
    put_u32(p + 20, (uint64_t)parts[3].len);
    put_u64(p + 24, f[4]);
    put_u64(p + 32, f[5]);
    put_u64(p + 40, f[6]);
    put_u64(p + 48, f[7]);
    put_u64(p + 56, (uint64_t)XXH3_64bits(p, HEADER_SUMMED));
    Py_ssize_t off = HEADER_SIZE;
    for (int i = 0; i < 4; i++) {
        if (parts[i].len) memcpy(p + off, parts[i].buf, (size_t)parts[i].len);
        off += parts[i].len;
    }
done:
    for (int i = 0; i < held; i++) PyBuffer_Release(&parts[i]);
    return out;
}

static PyMethodDef methods[] = {
    {"body_xxh3", (PyCFunction)(void (*)(void))body_xxh3, METH_FASTCALL,
     "body_xxh3(*parts) -> int: xxh3_64 of the parts' concatenation."},
    {"encode_record", (PyCFunction)(void (*)(void))encode_record, METH_FASTCALL,
     "encode_record(rtype, blob_flags, state_flags, life_version, sequence, time_ms, "
     "expiry_ms, body_xxh3, key, props, usermeta, payload) -> bytes: one whole log record."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ambry.native._crecord",
    "A log record's bytes in one call (C twin of ambry.native._pyrecord).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__crecord(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "HEADER_SIZE", HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT_VERSION", FORMAT_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
