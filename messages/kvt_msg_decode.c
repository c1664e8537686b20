/*  =========================================================================
    kvt_msg_decode - the validating decoder of kvtier's messages

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    A small validating reader of our own instead of msgpack_unpack:
    msgpack-c sizes its zone from the lengths a frame declares, so a
    5-byte frame claiming 2^32 elements would make it allocate gigabytes
    before failing. Here every declared length is checked against the
    bytes that remain and against the model's bounds before anything is
    allocated; arrays of integers are read in one pass.
@end
*/

#include <errno.h>
#include "kvt_error.h"
#include "kvt_msg_int.h"

//  --------------------------------------------------------------------------
//  Decode: a cursor over untrusted bytes. Every read checks what remains.

typedef struct {
    const uint8_t *at;              //  Next byte
    const uint8_t *end;             //  One past the last byte
} s_reader_t;

static bool
s_take (s_reader_t *r, size_t bytes, const uint8_t **out)
{
    if ((size_t) (r->end - r->at) < bytes)
        return false;
    *out = r->at;
    r->at += bytes;
    return true;
}

static bool
s_read_be (s_reader_t *r, size_t bytes, uint64_t *value)
{
    const uint8_t *p;
    if (!s_take (r, bytes, &p))
        return false;
    uint64_t v = 0;
    for (size_t k = 0; k < bytes; k++)
        v = (v << 8) | p [k];
    *value = v;
    return true;
}

//  Read an unsigned integer (any msgpack int encoding with a value >= 0).
static bool
s_read_uint (s_reader_t *r, uint64_t *value)
{
    const uint8_t *p;
    if (!s_take (r, 1, &p))
        return false;
    uint8_t tag = *p;
    if (tag <= 0x7f) {
        *value = tag;
        return true;
    }
    if (tag >= 0xcc && tag <= 0xcf)
        return s_read_be (r, (size_t) 1 << (tag - 0xcc), value);
    if (tag >= 0xd0 && tag <= 0xd3) {       //  Signed encodings of a non-negative value
        uint64_t raw;
        size_t bytes = (size_t) 1 << (tag - 0xd0);
        if (!s_read_be (r, bytes, &raw))
            return false;
        if (raw >> (bytes * 8 - 1))         //  Negative
            return false;
        *value = raw;
        return true;
    }
    return false;
}

//  Read 'count' unsigned integers into 'values': the usual encodings
//  inline (a positive fixint, or an unsigned one with its bytes all
//  there), anything else through s_read_uint, which validates it.
static bool
s_read_uints (s_reader_t *r, uint64_t *values, size_t count)
{
    const uint8_t *at = r->at, *end = r->end;
    for (size_t k = 0; k < count; k++) {
        if (at < end && *at <= 0x7f) {
            values [k] = *at++;
            continue;
        }
        if (end - at >= 9) {
            uint8_t tag = *at;
            if (tag == 0xcf) {
                uint64_t be;
                memcpy (&be, at + 1, 8);
                values [k] = __builtin_bswap64 (be);
                at += 9;
                continue;
            }
            if (tag == 0xce) {
                uint32_t be;
                memcpy (&be, at + 1, 4);
                values [k] = __builtin_bswap32 (be);
                at += 5;
                continue;
            }
            if (tag == 0xcd) {
                values [k] = (uint64_t) at [1] << 8 | at [2];
                at += 3;
                continue;
            }
            if (tag == 0xcc) {
                values [k] = at [1];
                at += 2;
                continue;
            }
        }
        r->at = at;
        if (!s_read_uint (r, &values [k]))
            return false;
        at = r->at;
    }
    r->at = at;
    return true;
}

static bool
s_read_int (s_reader_t *r, int64_t *value)
{
    const uint8_t *p;
    if (r->at >= r->end)
        return false;
    uint8_t tag = *r->at;
    if (tag >= 0xe0) {                      //  Negative fixint
        s_take (r, 1, &p);
        *value = (int8_t) tag;
        return true;
    }
    if (tag >= 0xd0 && tag <= 0xd3) {
        s_take (r, 1, &p);
        uint64_t raw;
        size_t bytes = (size_t) 1 << (tag - 0xd0);
        if (!s_read_be (r, bytes, &raw))
            return false;
        int shift = 64 - (int) bytes * 8;
        *value = shift? (int64_t) (raw << shift) >> shift: (int64_t) raw;
        return true;
    }
    uint64_t u;
    if (!s_read_uint (r, &u) || u > INT64_MAX)
        return false;
    *value = (int64_t) u;
    return true;
}

//  Read a str or bin header; 'want_str' picks which family is accepted.
static bool
s_read_bytes (s_reader_t *r, bool want_str, const uint8_t **bytes, size_t *length)
{
    const uint8_t *p;
    if (!s_take (r, 1, &p))
        return false;
    uint8_t tag = *p;
    uint64_t size;
    if (want_str && tag >= 0xa0 && tag <= 0xbf)
        size = tag & 0x1f;
    else
    if (want_str && tag >= 0xd9 && tag <= 0xdb) {
        if (!s_read_be (r, (size_t) 1 << (tag - 0xd9), &size))
            return false;
    }
    else
    if (!want_str && tag >= 0xc4 && tag <= 0xc6) {
        if (!s_read_be (r, (size_t) 1 << (tag - 0xc4), &size))
            return false;
    }
    else
        return false;
    if (!s_take (r, (size_t) size, bytes))
        return false;
    *length = (size_t) size;
    return true;
}

//  Read an array or map header ('want_map' picks which).
static bool
s_read_container (s_reader_t *r, bool want_map, uint64_t *count)
{
    const uint8_t *p;
    if (!s_take (r, 1, &p))
        return false;
    uint8_t tag = *p;
    if (!want_map && tag >= 0x90 && tag <= 0x9f) {
        *count = tag & 0x0f;
        return true;
    }
    if (want_map && tag >= 0x80 && tag <= 0x8f) {
        *count = tag & 0x0f;
        return true;
    }
    uint8_t base = want_map? 0xde: 0xdc;
    if (tag == base)
        return s_read_be (r, 2, count);
    if (tag == base + 1)
        return s_read_be (r, 4, count);
    return false;
}

//  Skip one value of any type, for the trailing extension map. Nesting is
//  capped so a hostile frame cannot recurse deeply.
static bool
s_skip (s_reader_t *r, int depth)
{
    if (depth > 8 || r->at >= r->end)
        return false;
    uint8_t tag = *r->at;
    const uint8_t *p;
    uint64_t count, u;
    int64_t i;
    size_t length;
    if (tag <= 0x7f || tag >= 0xe0 || (tag >= 0xcc && tag <= 0xd3))
        return tag >= 0xd0 && tag <= 0xd3? s_read_int (r, &i): tag >= 0xe0? s_read_int (r, &i): s_read_uint (r, &u);
    if (tag == 0xc0 || tag == 0xc2 || tag == 0xc3)
        return s_take (r, 1, &p);
    if (tag == 0xca)
        return s_take (r, 5, &p);
    if (tag == 0xcb)
        return s_take (r, 9, &p);
    if ((tag >= 0xa0 && tag <= 0xbf) || (tag >= 0xd9 && tag <= 0xdb))
        return s_read_bytes (r, true, &p, &length);
    if (tag >= 0xc4 && tag <= 0xc6)
        return s_read_bytes (r, false, &p, &length);
    bool is_map = (tag >= 0x80 && tag <= 0x8f) || tag == 0xde || tag == 0xdf;
    bool is_array = (tag >= 0x90 && tag <= 0x9f) || tag == 0xdc || tag == 0xdd;
    if (!is_map && !is_array)
        return false;                       //  ext types and reserved tags
    if (!s_read_container (r, is_map, &count))
        return false;
    if (count > (uint64_t) (r->end - r->at))
        return false;
    for (uint64_t k = 0; k < count * (is_map? 2: 1); k++)
        if (!s_skip (r, depth + 1))
            return false;
    return true;
}

static int
s_decode_field (s_reader_t *r, char type, kvt_msg_field_t *field)
{
    const uint8_t *bytes;
    size_t length;
    uint64_t count;
    switch (type) {
        case 'u':
            return s_read_uint (r, &field->u)? 0: -EBADMSG;
        case 'i':
            return s_read_int (r, &field->i)? 0: -EBADMSG;
        case 's':
            if (!s_read_bytes (r, true, &bytes, &length) || length > KVT_MSG_MAX_STRING
            ||  memchr (bytes, 0, length))
                return -EBADMSG;
            field->str = (char *) zmalloc (length + 1);
            memcpy (field->str, bytes, length);
            return 0;
        case 'b':
            if (!s_read_bytes (r, false, &bytes, &length))
                return -EBADMSG;
            field->bin = zmalloc (length? length: 1);
            memcpy (field->bin, bytes, length);
            field->bin_size = length;
            return 0;
        case 'a':
            //  Each element takes at least one byte: bound by what remains
            if (!s_read_container (r, false, &count) || count > KVT_MSG_MAX_ARRAY
            ||  count > (uint64_t) (r->end - r->at))
                return -EBADMSG;
            field->array = kvt_msg_array_new (count);
            field->count = count;
            return s_read_uints (r, field->array, count)? 0: -EBADMSG;
        case 'm':
            if (!s_read_container (r, true, &count) || count > KVT_MSG_MAX_MAP
            ||  count * 2 > (uint64_t) (r->end - r->at))
                return -EBADMSG;
            field->map_room = count? count: 1;
            field->keys = (char **) zmalloc (field->map_room * sizeof (char *));
            field->values = (uint64_t *) zmalloc (field->map_room * sizeof (uint64_t));
            for (uint64_t k = 0; k < count; k++) {
                if (!s_read_bytes (r, true, &bytes, &length) || length > KVT_MSG_MAX_STRING
                ||  memchr (bytes, 0, length))
                    return -EBADMSG;
                field->keys [k] = (char *) zmalloc (length + 1);
                memcpy (field->keys [k], bytes, length);
                field->map_size = k + 1;
                if (!s_read_uint (r, &field->values [k]))
                    return -EBADMSG;
            }
            return 0;
        default:
            return -EBADMSG;
    }
}

//  Decode into 'self' (an INVALID message) so that on failure the caller
//  still has whatever header was readable, for the error reply.
int
kvt_msg_decode_into (kvt_msg_t *self, const void *data, size_t size)
{
    s_reader_t r = { (const uint8_t *) data, (const uint8_t *) data + size };
    uint64_t count, version, id, request_id;
    if (!s_read_container (&r, false, &count) || count < 3)
        return -EBADMSG;
    if (!s_read_uint (&r, &version) || !s_read_uint (&r, &id)
    ||  !s_read_uint (&r, &request_id))
        return -EBADMSG;
    self->request_id = request_id;
    if (version != KVT_PROTOCOL_VERSION)
        return KVT_EVERSION;
    const char *picture = id < KVT_MSG_COUNT? kvt_msg_picture ((int) id): NULL;
    if (!picture)
        return -ENOTSUP;
    int field_count = (int) strlen (picture);
    //  Arity: exactly the model's fields, plus an optional extension map
    if (count != (uint64_t) (3 + field_count) && count != (uint64_t) (4 + field_count))
        return -EBADMSG;
    self->picture = picture;
    self->field_count = field_count;
    for (int f = 0; f < field_count; f++) {
        int rc = s_decode_field (&r, picture [f], &self->fields [f]);
        if (rc)
            return rc;
    }
    if (count == (uint64_t) (4 + field_count)) {
        uint64_t entries;
        const uint8_t *peek = r.at;
        if (!s_read_container (&r, true, &entries))
            return -EBADMSG;
        r.at = peek;
        if (!s_skip (&r, 0))
            return -EBADMSG;
    }
    if (r.at != r.end)
        return -EBADMSG;                    //  Trailing garbage
    self->id = (int) id;
    return 0;
}

int
kvt_msg_decode (const void *data, size_t size, kvt_msg_t **msg_p)
{
    kvt_msg_t *self = kvt_msg_new (KVT_MSG_INVALID);
    int rc = kvt_msg_decode_into (self, data, size);
    if (rc) {
        kvt_msg_destroy (&self);
        return rc;
    }
    *msg_p = self;
    return 0;
}
