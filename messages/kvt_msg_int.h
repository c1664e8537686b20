/*  =========================================================================
    kvt_msg_int - what the message files share: a message's layout

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvt_msg.c (the model, building and reading messages, the encoder, the
    envelope) and kvt_msg_decode.c (the validating decoder) share the
    layout of a message. This header is for those files only.
@end
*/

#ifndef KVT_MSG_INT_H_INCLUDED
#define KVT_MSG_INT_H_INCLUDED

#include <czmq.h>
#include "kvt_msg.h"

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
} kvt_msg_field_t;

struct _kvt_msg_t {
    int id;                         //  Message id; KVT_MSG_INVALID if undecodable
    uint64_t request_id;            //  Chosen by the requester, echoed in the reply
    const char *picture;            //  Field types, from the catalogue
    int field_count;                //  strlen (picture)
    kvt_msg_field_t fields [KVT_MSG_MAX_FIELDS];
    zframe_t *routing_id;           //  ROUTER envelope, or NULL
    void *direct;                   //  Asker of a request handed over in its thread
                                    //  (kvt_msg_set_direct), or NULL
    bool delimiter;                 //  Peer is a REQ socket: reply with an empty frame
};

//  Room for an array field's 'count' values, not zeroed: every element
//  is written right after (zeroing a long prefix's few hundred KiB of
//  hashes touched each page twice, on the thread waiting for them).
//  Aborts on out-of-memory, as zmalloc does.
static inline uint64_t *
kvt_msg_array_new (size_t count)
{
    uint64_t *array = (uint64_t *) malloc ((count? count: 1) * sizeof (uint64_t));
    if (!array)
        abort ();
    return array;
}

//  Decode 'size' bytes into 'self' (an INVALID message) so that on failure
//  the caller still has whatever header was readable, for the error reply.
//  Returns 0, or -EBADMSG, -ENOTSUP, KVT_EVERSION, ...
int
    kvt_msg_decode_into (kvt_msg_t *self, const void *data, size_t size);

#endif
