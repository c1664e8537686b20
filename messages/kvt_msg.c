/*  =========================================================================
    kvt_msg - every message kvtier sends: the model, the codec, the envelope

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Encoding uses msgpack-c's packer. Decoding uses a small validating
    reader of our own instead of msgpack_unpack: msgpack-c sizes its zone
    from the lengths a frame declares, so a 5-byte frame claiming 2^32
    elements would make it allocate gigabytes before failing. Here every
    declared length is checked against the bytes that remain and against
    the model's bounds before anything is allocated.
@end
*/

#include <czmq.h>
#include <msgpack.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include "kvt_error.h"
#include "kvt_msg.h"

static void s_free_fn (void *data, void *hint);

typedef struct {
    uint64_t u;                     //  'u' value
    int64_t i;                      //  'i' value
    char *str;                      //  's' value, owned, NUL-terminated
    void *bin;                      //  'b' value, owned
    size_t bin_size;                //  Bytes in bin
    uint64_t *array;                //  'a' values, owned
    size_t count;                   //  Elements in array
    char **keys;                    //  'm' keys, owned
    uint64_t *values;               //  'm' values, owned
    size_t map_size;                //  Entries in the map
    size_t map_room;                //  Allocated entries
} s_field_t;

struct _kvt_msg_t {
    int id;                         //  Message id; KVT_MSG_INVALID if undecodable
    uint64_t request_id;            //  Chosen by the requester, echoed in the reply
    const char *picture;            //  Field types, from the catalogue
    int field_count;                //  strlen (picture)
    s_field_t fields [KVT_MSG_MAX_FIELDS];
    zframe_t *routing_id;           //  ROUTER envelope, or NULL
    bool delimiter;                 //  Peer is a REQ socket: reply with an empty frame
};

typedef struct {
    const char *name;               //  "GENERATE"
    const char *picture;            //  "sau"
    const char *fields;             //  "tenant tokens max_new_tokens"
} s_model_t;

#define KVT_MSG_MODEL(name, id, picture, fields) [id] = { #name, picture, fields },
static const s_model_t s_model [KVT_MSG_COUNT] = {
    KVT_MSG_CATALOGUE (KVT_MSG_MODEL)
};
#undef KVT_MSG_MODEL

static const s_model_t *
s_model_of (int id)
{
    if (id <= 0 || id >= KVT_MSG_COUNT || !s_model [id].name)
        return NULL;
    return &s_model [id];
}

const char *
kvt_msg_name (int id)
{
    const s_model_t *model = s_model_of (id);
    return model? model->name: NULL;
}

const char *
kvt_msg_picture (int id)
{
    const s_model_t *model = s_model_of (id);
    return model? model->picture: NULL;
}

const char *
kvt_msg_field_names (int id)
{
    const s_model_t *model = s_model_of (id);
    return model? model->fields: NULL;
}

int
kvt_msg_field_index (int id, const char *name)
{
    const char *fields = kvt_msg_field_names (id);
    if (!fields || !name)
        return -1;
    size_t length = strlen (name);
    int index = 0;
    const char *cursor = fields;
    while (*cursor) {
        const char *end = strchr (cursor, ' ');
        size_t span = end? (size_t) (end - cursor): strlen (cursor);
        if (span == length && memcmp (cursor, name, length) == 0)
            return index;
        index++;
        cursor += span;
        while (*cursor == ' ')
            cursor++;
    }
    return -1;
}

//  --------------------------------------------------------------------------
//  Life cycle

kvt_msg_t *
kvt_msg_new (int id)
{
    const s_model_t *model = s_model_of (id);
    assert (model || id == KVT_MSG_INVALID);
    kvt_msg_t *self = (kvt_msg_t *) zmalloc (sizeof (kvt_msg_t));
    self->id = id;
    self->picture = model? model->picture: "";
    self->field_count = (int) strlen (self->picture);
    assert (self->field_count <= KVT_MSG_MAX_FIELDS);
    return self;
}

static void
s_field_clear (s_field_t *field)
{
    free (field->str);
    free (field->bin);
    free (field->array);
    for (size_t k = 0; k < field->map_size; k++)
        free (field->keys [k]);
    free (field->keys);
    free (field->values);
    memset (field, 0, sizeof (*field));
}

void
kvt_msg_destroy (kvt_msg_t **self_p)
{
    assert (self_p);
    kvt_msg_t *self = *self_p;
    if (self) {
        //  Only the model's fields are ever filled (decode sets field_count
        //  before it fills any; a failed receive clears them itself)
        for (int f = 0; f < self->field_count; f++)
            s_field_clear (&self->fields [f]);
        zframe_destroy (&self->routing_id);
        free (self);
        *self_p = NULL;
    }
}

kvt_msg_t *
kvt_msg_reply_new (const kvt_msg_t *request, int reply_id)
{
    assert (request);
    kvt_msg_t *reply = kvt_msg_new (reply_id);
    reply->request_id = request->request_id;
    if (request->routing_id)
        reply->routing_id = zframe_dup (request->routing_id);
    reply->delimiter = request->delimiter;
    return reply;
}

kvt_msg_t *
kvt_msg_error_new (const kvt_msg_t *request, int code, const char *detail_fmt, ...)
{
    kvt_msg_t *reply = kvt_msg_reply_new (request, KVT_MSG_ERROR);
    char detail [512];
    va_list args;
    va_start (args, detail_fmt);
    vsnprintf (detail, sizeof (detail), detail_fmt, args);
    va_end (args);
    kvt_msg_set_i64 (reply, KVT_ERROR_CODE, code);
    kvt_msg_set_str (reply, KVT_ERROR_NAME, kvt_strerror_name (code));
    kvt_msg_set_str (reply, KVT_ERROR_DETAIL, detail);
    return reply;
}

//  --------------------------------------------------------------------------
//  Header and fields

int
kvt_msg_id (const kvt_msg_t *self)
{
    return self->id;
}

uint64_t
kvt_msg_request_id (const kvt_msg_t *self)
{
    return self->request_id;
}

void
kvt_msg_set_request_id (kvt_msg_t *self, uint64_t request_id)
{
    self->request_id = request_id;
}

static s_field_t *
s_field (const kvt_msg_t *self, int field, char type)
{
    assert (field >= 0 && field < self->field_count);
    assert (self->picture [field] == type);
    return (s_field_t *) &self->fields [field];
}

uint64_t
kvt_msg_u64 (const kvt_msg_t *self, int field)
{
    return s_field (self, field, 'u')->u;
}

int64_t
kvt_msg_i64 (const kvt_msg_t *self, int field)
{
    return s_field (self, field, 'i')->i;
}

const char *
kvt_msg_str (const kvt_msg_t *self, int field)
{
    const char *str = s_field (self, field, 's')->str;
    return str? str: "";
}

const void *
kvt_msg_bin (const kvt_msg_t *self, int field, size_t *size)
{
    s_field_t *f = s_field (self, field, 'b');
    if (size)
        *size = f->bin_size;
    return f->bin;
}

const uint64_t *
kvt_msg_array (const kvt_msg_t *self, int field, size_t *count)
{
    s_field_t *f = s_field (self, field, 'a');
    if (count)
        *count = f->count;
    return f->array;
}

size_t
kvt_msg_map_size (const kvt_msg_t *self, int field)
{
    return s_field (self, field, 'm')->map_size;
}

const char *
kvt_msg_map_key (const kvt_msg_t *self, int field, size_t index)
{
    s_field_t *f = s_field (self, field, 'm');
    assert (index < f->map_size);
    return f->keys [index];
}

uint64_t
kvt_msg_map_value (const kvt_msg_t *self, int field, size_t index)
{
    s_field_t *f = s_field (self, field, 'm');
    assert (index < f->map_size);
    return f->values [index];
}

void
kvt_msg_set_u64 (kvt_msg_t *self, int field, uint64_t value)
{
    s_field (self, field, 'u')->u = value;
}

void
kvt_msg_set_i64 (kvt_msg_t *self, int field, int64_t value)
{
    s_field (self, field, 'i')->i = value;
}

void
kvt_msg_set_str (kvt_msg_t *self, int field, const char *value)
{
    s_field_t *f = s_field (self, field, 's');
    free (f->str);
    f->str = strdup (value? value: "");
    assert (f->str);
}

void
kvt_msg_set_bin (kvt_msg_t *self, int field, const void *data, size_t size)
{
    s_field_t *f = s_field (self, field, 'b');
    free (f->bin);
    f->bin = zmalloc (size? size: 1);
    if (size)
        memcpy (f->bin, data, size);
    f->bin_size = size;
}

void
kvt_msg_set_bin_owned (kvt_msg_t *self, int field, void **data_p, size_t size)
{
    s_field_t *f = s_field (self, field, 'b');
    free (f->bin);
    f->bin = *data_p;
    f->bin_size = size;
    *data_p = NULL;
}

void
kvt_msg_set_array (kvt_msg_t *self, int field, const uint64_t *values, size_t count)
{
    s_field_t *f = s_field (self, field, 'a');
    free (f->array);
    f->array = (uint64_t *) zmalloc ((count? count: 1) * sizeof (uint64_t));
    if (count)
        memcpy (f->array, values, count * sizeof (uint64_t));
    f->count = count;
}

void
kvt_msg_map_add (kvt_msg_t *self, int field, const char *key, uint64_t value)
{
    s_field_t *f = s_field (self, field, 'm');
    if (f->map_size == f->map_room) {
        f->map_room = f->map_room? f->map_room * 2: 16;
        f->keys = (char **) realloc (f->keys, f->map_room * sizeof (char *));
        f->values = (uint64_t *) realloc (f->values, f->map_room * sizeof (uint64_t));
        assert (f->keys && f->values);
    }
    f->keys [f->map_size] = strdup (key);
    assert (f->keys [f->map_size]);
    f->values [f->map_size++] = value;
}

//  --------------------------------------------------------------------------
//  Encode

//  Make room for 'bytes' more in 'buffer' (aborts on out-of-memory, as
//  zmalloc does).
static void
s_reserve (msgpack_sbuffer *buffer, size_t bytes)
{
    if (buffer->alloc - buffer->size >= bytes)
        return;
    size_t size = buffer->size + bytes;
    char *data = (char *) realloc (buffer->data, size);
    if (!data)
        abort ();
    buffer->data = data;
    buffer->alloc = size;
}

//  At most how many bytes 'self' encodes to: reserved at once, so a
//  large message is not copied by the buffer's growth on the way.
static size_t
s_size_bound (const kvt_msg_t *self)
{
    size_t bytes = 5 + 3 * 9;
    for (int f = 0; f < self->field_count; f++) {
        const s_field_t *field = &self->fields [f];
        switch (self->picture [f]) {
            case 's': bytes += 5 + (field->str? strlen (field->str): 0); break;
            case 'b': bytes += 5 + field->bin_size; break;
            case 'a': bytes += 5 + 9 * field->count; break;
            case 'm':
                bytes += 5;
                for (size_t k = 0; k < field->map_size; k++)
                    bytes += 5 + strlen (field->keys [k]) + 9;
                break;
            default:  bytes += 9; break;
        }
    }
    return bytes;
}

//  Append 'count' unsigned integers, each in msgpack's shortest form (as
//  msgpack_pack_uint64 writes it), in one pass over a buffer made large
//  enough first: 16384-element arrays cross several actors per request.
static void
s_pack_u64s (msgpack_sbuffer *buffer, const uint64_t *values, size_t count)
{
    s_reserve (buffer, 9 * count);
    uint8_t *out = (uint8_t *) buffer->data + buffer->size;
    for (size_t k = 0; k < count; k++) {
        uint64_t v = values [k];
        if (v < 0x80)
            *out++ = (uint8_t) v;
        else
        if (v < 0x100) {
            out [0] = 0xcc;
            out [1] = (uint8_t) v;
            out += 2;
        }
        else
        if (v < 0x10000) {
            out [0] = 0xcd;
            out [1] = (uint8_t) (v >> 8);
            out [2] = (uint8_t) v;
            out += 3;
        }
        else
        if (v < 0x100000000ULL) {
            uint32_t be = __builtin_bswap32 ((uint32_t) v);
            out [0] = 0xce;
            memcpy (out + 1, &be, 4);
            out += 5;
        }
        else {
            uint64_t be = __builtin_bswap64 (v);
            out [0] = 0xcf;
            memcpy (out + 1, &be, 8);
            out += 9;
        }
    }
    buffer->size = (size_t) ((char *) out - buffer->data);
}

//  Encode into a malloc'd buffer the caller frees. Returns 0 or -EMSGSIZE.

static int
s_encode (const kvt_msg_t *self, char **data_p, size_t *size_p)
{
    assert (self->id != KVT_MSG_INVALID);
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init (&buffer);
    s_reserve (&buffer, s_size_bound (self));
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buffer, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 3 + self->field_count);
    msgpack_pack_uint64 (&pk, KVT_PROTOCOL_VERSION);
    msgpack_pack_uint64 (&pk, (uint64_t) self->id);
    msgpack_pack_uint64 (&pk, self->request_id);
    for (int f = 0; f < self->field_count; f++) {
        const s_field_t *field = &self->fields [f];
        switch (self->picture [f]) {
            case 'u':
                msgpack_pack_uint64 (&pk, field->u);
                break;
            case 'i':
                msgpack_pack_int64 (&pk, field->i);
                break;
            case 's': {
                const char *str = field->str? field->str: "";
                size_t length = strlen (str);
                msgpack_pack_str (&pk, length);
                msgpack_pack_str_body (&pk, str, length);
                break;
            }
            case 'b':
                msgpack_pack_bin (&pk, field->bin_size);
                msgpack_pack_bin_body (&pk, field->bin, field->bin_size);
                break;
            case 'a':
                msgpack_pack_array (&pk, field->count);
                s_pack_u64s (&buffer, field->array, field->count);
                break;
            case 'm':
                msgpack_pack_map (&pk, field->map_size);
                for (size_t k = 0; k < field->map_size; k++) {
                    size_t length = strlen (field->keys [k]);
                    msgpack_pack_str (&pk, length);
                    msgpack_pack_str_body (&pk, field->keys [k], length);
                    msgpack_pack_uint64 (&pk, field->values [k]);
                }
                break;
            default:
                assert (false);
        }
    }
    if (buffer.size > KVT_MSG_MAX_FRAME) {
        msgpack_sbuffer_destroy (&buffer);
        return -EMSGSIZE;
    }
    *size_p = buffer.size;
    *data_p = msgpack_sbuffer_release (&buffer);
    return 0;
}

int
kvt_msg_encode (const kvt_msg_t *self, zframe_t **frame_p)
{
    char *data;
    size_t size;
    int rc = s_encode (self, &data, &size);
    if (rc == 0) {
        *frame_p = zframe_new (data, size);
        free (data);
    }
    return rc;
}

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
s_decode_field (s_reader_t *r, char type, s_field_t *field)
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
            //  Not zeroed: every element is written below (zmalloc's
            //  zeroing of a 16384-block request's arrays showed up per hop)
            field->array = (uint64_t *) malloc ((count? count: 1) * sizeof (uint64_t));
            if (!field->array)
                abort ();           //  As zmalloc does
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
static int
s_decode_into (kvt_msg_t *self, const void *data, size_t size)
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
    const s_model_t *model = id < KVT_MSG_COUNT? s_model_of ((int) id): NULL;
    if (!model)
        return -ENOTSUP;
    int field_count = (int) strlen (model->picture);
    //  Arity: exactly the model's fields, plus an optional extension map
    if (count != (uint64_t) (3 + field_count) && count != (uint64_t) (4 + field_count))
        return -EBADMSG;
    self->picture = model->picture;
    self->field_count = field_count;
    for (int f = 0; f < field_count; f++) {
        int rc = s_decode_field (&r, model->picture [f], &self->fields [f]);
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
    int rc = s_decode_into (self, data, size);
    if (rc) {
        kvt_msg_destroy (&self);
        return rc;
    }
    *msg_p = self;
    return 0;
}

//  --------------------------------------------------------------------------
//  Wire: ROUTER envelopes are [routing id][empty, if REQ][payload];
//  DEALER and REQ/REP sockets see only [payload].

int
kvt_msg_recv (zsock_t *sock, kvt_msg_t **msg_p)
{
    return kvt_msg_recv_limited (sock, msg_p, KVT_MSG_MAX_FRAME);
}

int
kvt_msg_recv_limited (zsock_t *sock, kvt_msg_t **msg_p, size_t max_frame)
{
    *msg_p = NULL;
    zmsg_t *zmsg = zmsg_recv (sock);
    if (!zmsg)
        return -EINTR;
    kvt_msg_t *self = kvt_msg_new (KVT_MSG_INVALID);
    if (zsock_type (sock) == ZMQ_ROUTER) {
        self->routing_id = zmsg_pop (zmsg);
        zframe_t *next = zmsg_first (zmsg);
        if (next && zframe_size (next) == 0 && zmsg_size (zmsg) > 1) {
            self->delimiter = true;
            zframe_t *empty = zmsg_pop (zmsg);
            zframe_destroy (&empty);
        }
    }
    int rc;
    zframe_t *payload = zmsg_first (zmsg);
    if (zmsg_size (zmsg) != 1 || !payload)
        rc = -EBADMSG;                      //  One frame per message, always
    else
    if (zframe_size (payload) > max_frame)
        rc = -EMSGSIZE;
    else {
        rc = s_decode_into (self, zframe_data (payload), zframe_size (payload));
        if (rc)                             //  Keep only the envelope and request id
            for (int f = 0; f < KVT_MSG_MAX_FIELDS; f++)
                s_field_clear (&self->fields [f]);
    }
    if (rc) {
        self->id = KVT_MSG_INVALID;
        self->picture = "";
        self->field_count = 0;
    }
    zmsg_destroy (&zmsg);
    *msg_p = self;
    return rc;
}

static void
s_free_fn (void *data, void *hint)
{
    (void) hint;
    free (data);
}

int
kvt_msg_send (kvt_msg_t **msg_p, zsock_t *sock)
{
    assert (msg_p);
    kvt_msg_t *self = *msg_p;
    if (!self)
        return -EINVAL;
    *msg_p = NULL;
    char *data = NULL;
    size_t size = 0;
    int rc = s_encode (self, &data, &size);
    void *handle = zsock_resolve (sock);
    if (rc == 0 && self->routing_id) {
        if (zmq_send (handle, zframe_data (self->routing_id), zframe_size (self->routing_id),
                      ZMQ_SNDMORE) < 0
        ||  (self->delimiter && zmq_send (handle, "", 0, ZMQ_SNDMORE) < 0))
            rc = -errno;
    }
    if (rc == 0) {
        //  Zero copy: ZeroMQ frees the encoded buffer when it is sent
        zmq_msg_t frame;
        zmq_msg_init_data (&frame, data, size, s_free_fn, NULL);
        data = NULL;
        if (zmq_msg_send (&frame, handle, 0) < 0) {
            rc = -errno;
            zmq_msg_close (&frame);
        }
    }
    free (data);
    kvt_msg_destroy (&self);
    return rc;
}

void
kvt_msg_print (const kvt_msg_t *self)
{
    printf ("%s request=%" PRIu64, self->id? kvt_msg_name (self->id): "INVALID",
            self->request_id);
    for (int f = 0; f < self->field_count; f++) {
        const s_field_t *field = &self->fields [f];
        switch (self->picture [f]) {
            case 'u': printf (" %" PRIu64, field->u); break;
            case 'i': printf (" %" PRId64, field->i); break;
            case 's': printf (" \"%s\"", field->str? field->str: ""); break;
            case 'b': printf (" <%zu bytes>", field->bin_size); break;
            case 'a': printf (" [%zu]", field->count); break;
            case 'm': printf (" {%zu}", field->map_size); break;
        }
    }
    printf ("\n");
}
