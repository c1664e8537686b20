/*  =========================================================================
    kvt_error - status codes shared by every layer

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"

typedef struct {
    int code;                       //  Status code, negative
    const char *name;               //  Symbolic name, sent on the wire
    const char *text;               //  What it means
} s_code_t;

static const s_code_t s_codes [] = {
    { KVT_ECUDA,        "ECUDA",        "CUDA call failed" },
    { KVT_ENCCL,        "ENCCL",        "NCCL call failed" },
    { KVT_EVERSION,     "EVERSION",     "unsupported protocol version" },
    { KVT_ECHECKSUM,    "ECHECKSUM",    "stored block failed its checksum" },
    { KVT_EMISS,        "EMISS",        "block is not stored" },
    { KVT_ECONFIG,      "ECONFIG",      "bad configuration" },
    { KVT_ETIMEOUT_PEER, "ETIMEOUT_PEER", "an actor did not answer in time" },
    { -EINVAL,          "EINVAL",       NULL },
    { -EBADMSG,         "EBADMSG",      NULL },
    { -ENOTSUP,         "ENOTSUP",      NULL },
    { -ENOMEM,          "ENOMEM",       NULL },
    { -ENOSPC,          "ENOSPC",       NULL },
    { -EIO,             "EIO",          NULL },
    { -ERANGE,          "ERANGE",       NULL },
    { -EMSGSIZE,        "EMSGSIZE",     NULL },
    { -ENOENT,          "ENOENT",       NULL },
    { -EAGAIN,          "EAGAIN",       NULL },
    { -EINTR,           "EINTR",        NULL },
    { -EBUSY,           "EBUSY",        NULL },
    { -ETIMEDOUT,       "ETIMEDOUT",    NULL },
    { -ECANCELED,       "ECANCELED",    NULL },
    { -EEXIST,          "EEXIST",       NULL },
    { -EPROTO,          "EPROTO",       NULL },
};

static const s_code_t *
s_lookup (int rc)
{
    for (size_t i = 0; i < sizeof (s_codes) / sizeof (s_codes [0]); i++)
        if (s_codes [i].code == rc)
            return &s_codes [i];
    return NULL;
}

//  --------------------------------------------------------------------------
//  Return a static description of a status code.

const char *
kvt_strerror (int rc)
{
    if (rc == 0)
        return "success";
    const s_code_t *code = s_lookup (rc);
    if (code && code->text)
        return code->text;
    if (rc < 0 && rc > -KVT_ERROR_BASE)
        return strerror (-rc);
    return "unknown error";
}

//  --------------------------------------------------------------------------
//  Return the short symbolic name of a status code.

const char *
kvt_strerror_name (int rc)
{
    if (rc == 0)
        return "OK";
    const s_code_t *code = s_lookup (rc);
    return code? code->name: "EUNKNOWN";
}

//  --------------------------------------------------------------------------
//  Selftest

int
kvt_error_test (bool verbose)
{
    (void) verbose;
    assert (streq (kvt_strerror (0), "success"));
    assert (streq (kvt_strerror (-ENOSPC), strerror (ENOSPC)));
    assert (streq (kvt_strerror (KVT_ECHECKSUM), "stored block failed its checksum"));
    assert (streq (kvt_strerror_name (-EBADMSG), "EBADMSG"));
    assert (streq (kvt_strerror_name (KVT_EVERSION), "EVERSION"));
    assert (streq (kvt_strerror_name (-99999), "EUNKNOWN"));
    return 0;
}
