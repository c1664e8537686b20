/*  =========================================================================
    kvt_msg - every message kvtier sends: the model, the encoder, the envelope

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Encoding writes msgpack (byte for byte what msgpack-c's packer
    writes; arrays of integers in one pass). Decoding is in
    kvt_msg_decode.c, a validating reader of our own.
@end
*/

#include <czmq.h>
#include <msgpack.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include "kvt_error.h"
#include "kvt_msg_int.h"

static void s_free_fn (void *data, void *hint);

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
s_field_clear (kvt_msg_field_t *field)
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
    reply->direct = request->direct;
    return reply;
}

void
kvt_msg_set_direct (kvt_msg_t *self, void *asker)
{
    self->direct = asker;
}

void *
kvt_msg_direct (const kvt_msg_t *self)
{
    return self->direct;
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

//  The requests answered in parts, and the id of their partial answer
static int
s_part_id (int request_id)
{
    return request_id == KVT_MSG_IDX_MATCH_PARTS? KVT_MSG_IDX_MATCH_PART: KVT_MSG_INVALID;
}

bool
kvt_msg_is_partial (const kvt_msg_t *self)
{
    return self->id == s_part_id (KVT_MSG_IDX_MATCH_PARTS);
}

bool
kvt_msg_answers (int reply_id, int request_id)
{
    if (reply_id == KVT_MSG_INVALID)
        return false;
    if (reply_id == s_part_id (KVT_MSG_IDX_MATCH_PARTS))
        return reply_id == s_part_id (request_id);  //  A partial answer, of its request only
    return reply_id == request_id + 1;
}

static kvt_msg_field_t *
s_field (const kvt_msg_t *self, int field, char type)
{
    assert (field >= 0 && field < self->field_count);
    assert (self->picture [field] == type);
    return (kvt_msg_field_t *) &self->fields [field];
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
    kvt_msg_field_t *f = s_field (self, field, 'b');
    if (size)
        *size = f->bin_size;
    return f->bin;
}

const uint64_t *
kvt_msg_array (const kvt_msg_t *self, int field, size_t *count)
{
    kvt_msg_field_t *f = s_field (self, field, 'a');
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
    kvt_msg_field_t *f = s_field (self, field, 'm');
    assert (index < f->map_size);
    return f->keys [index];
}

uint64_t
kvt_msg_map_value (const kvt_msg_t *self, int field, size_t index)
{
    kvt_msg_field_t *f = s_field (self, field, 'm');
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
    kvt_msg_field_t *f = s_field (self, field, 's');
    free (f->str);
    f->str = strdup (value? value: "");
    assert (f->str);
}

void
kvt_msg_set_bin (kvt_msg_t *self, int field, const void *data, size_t size)
{
    kvt_msg_field_t *f = s_field (self, field, 'b');
    free (f->bin);
    f->bin = zmalloc (size? size: 1);
    if (size)
        memcpy (f->bin, data, size);
    f->bin_size = size;
}

void
kvt_msg_set_bin_owned (kvt_msg_t *self, int field, void **data_p, size_t size)
{
    kvt_msg_field_t *f = s_field (self, field, 'b');
    free (f->bin);
    f->bin = *data_p;
    f->bin_size = size;
    *data_p = NULL;
}

void
kvt_msg_set_array (kvt_msg_t *self, int field, const uint64_t *values, size_t count)
{
    kvt_msg_field_t *f = s_field (self, field, 'a');
    free (f->array);
    f->array = kvt_msg_array_new (count);
    if (count)
        memcpy (f->array, values, count * sizeof (uint64_t));
    f->count = count;
}

void
kvt_msg_map_add (kvt_msg_t *self, int field, const char *key, uint64_t value)
{
    kvt_msg_field_t *f = s_field (self, field, 'm');
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
        const kvt_msg_field_t *field = &self->fields [f];
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
        const kvt_msg_field_t *field = &self->fields [f];
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
        rc = kvt_msg_decode_into (self, zframe_data (payload), zframe_size (payload));
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
        const kvt_msg_field_t *field = &self->fields [f];
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
