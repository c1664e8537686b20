/*  =========================================================================
    kvt_error - status codes shared by every layer

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Fallible functions return 0, a negative code, or a documented count.
    POSIX codes are returned as -errno; the codes below name what errno
    cannot. kvt_strerror covers both.
@end
*/

#ifndef KVT_ERROR_H_INCLUDED
#define KVT_ERROR_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

#define KVT_ERROR_BASE   10000      //  Above every errno value
#define KVT_ECUDA       (-(KVT_ERROR_BASE + 1))   //  A CUDA call failed
#define KVT_ENCCL       (-(KVT_ERROR_BASE + 2))   //  An NCCL call failed
#define KVT_EVERSION    (-(KVT_ERROR_BASE + 3))   //  Peer speaks another protocol version
#define KVT_ECHECKSUM   (-(KVT_ERROR_BASE + 4))   //  Stored block failed its checksum
#define KVT_EMISS       (-(KVT_ERROR_BASE + 5))   //  Block is not (or no longer) stored
#define KVT_ECONFIG     (-(KVT_ERROR_BASE + 6))   //  Bad config key or value
#define KVT_ETIMEOUT_PEER (-(KVT_ERROR_BASE + 7)) //  An actor did not answer in time

//  Return a static description of a status code (0, -errno or KVT_E*).
const char *
    kvt_strerror (int rc);

//  Return the short symbolic name of a status code ("EINVAL", "ECHECKSUM").
const char *
    kvt_strerror_name (int rc);

#ifdef __cplusplus
}
#endif
#endif
