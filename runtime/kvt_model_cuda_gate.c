/*  =========================================================================
    kvt_model_cuda_gate - layer gates: streamed copies wait on the host's word

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Issue #4. A stream promotion whose blocks are read from NVMe in layer
    groups hands compute its run before the later groups are on the host.
    The GPU model queues every layer's copy of the streamed blocks at once
    on its copy stream (kvt_model_cuda_seq.c, s_stream_queue); a gate makes
    layer l's copy wait, on the GPU, until the host says layers [0, l + 1)
    are there. A gate is one 32-bit word of pinned, mapped host memory
    owned by the caller (compute): before layer l's copy the copy stream
    waits until word >= l + 1 (cuStreamWaitValue32, GEQ), and compute's
    loop writes the word when migration's MIG_LAYERS_READY arrives. The
    host never waits on the GPU and the GPU never synchronizes with the
    host beyond reading that word.
    cuStreamWaitValue32 is taken through cudaGetDriverEntryPointByVersion,
    so nothing links libcuda. Where the driver has no stream wait-value,
    kvt_model_cuda_gates_new returns NULL and the caller holds such a run
    until all its layers are read (no overlap, same answers).
    Arming: kvt_model_cuda_gate_arm names the gate the next
    kvt_model_cuda_seq_begin on this thread uses (thread-local, so one
    model per thread - compute's own - needs no state in the model);
    the caller disarms it (gate -1) right after. A gate must be released
    (set to KVT_MODEL_CUDA_GATE_OPEN) before anything synchronizes the
    copy stream: on a failed run, on abort and at shutdown.
@end
*/

#include "kvt_classes.h"
#include "kvt_model_cuda_int.h"

#ifdef KVT_WITH_CUDA
#include <cuda.h>

#define S_GATES 256                 //  Gates per pool (runs in flight at most)

typedef CUresult (*s_wait_value_fn) (CUstream stream, CUdeviceptr addr, cuuint32_t value,
                                     unsigned int flags);

struct _kvt_model_cuda_gates_t {
    volatile uint32_t *words;       //  Pinned, mapped host words, one per gate
    CUdeviceptr device;             //  Their device address
    bool used [S_GATES];            //  Gate taken
    s_wait_value_fn wait_value;     //  cuStreamWaitValue32
};

static __thread volatile uint32_t *s_armed_word;   //  Gate of the next seq_begin, or NULL
static __thread CUdeviceptr s_armed_device;         //  Its device address
static __thread s_wait_value_fn s_armed_wait;       //  cuStreamWaitValue32


//  --------------------------------------------------------------------------
//  Create a pool of gates. Returns NULL if the driver cannot wait on a
//  value in a stream, or on a CUDA failure (logged).

kvt_model_cuda_gates_t *
kvt_model_cuda_gates_new (void)
{
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion ("cuStreamWaitValue32", &fn, 12000, cudaEnableDefault,
                                          &found) != cudaSuccess
    ||  found != cudaDriverEntryPointSuccess || !fn) {
        (void) cudaGetLastError ();
        kvt_log_warn ("model: no cuStreamWaitValue32: streamed runs wait for all their layers");
        return NULL;
    }
    kvt_model_cuda_gates_t *self = (kvt_model_cuda_gates_t *) kvt_zmalloc (sizeof (*self));
    self->wait_value = (s_wait_value_fn) fn;
    void *words = NULL, *device = NULL;
    if (kvt_model_cuda_check (cudaHostAlloc (&words, S_GATES * sizeof (uint32_t),
                                             cudaHostAllocMapped | cudaHostAllocPortable),
                              "gate words")
    ||  kvt_model_cuda_check (cudaHostGetDevicePointer (&device, words, 0), "gate words")) {
        if (words)
            cudaFreeHost (words);
        free (self);
        return NULL;
    }
    self->words = (volatile uint32_t *) words;
    self->device = (CUdeviceptr) (uintptr_t) device;
    for (int k = 0; k < S_GATES; k++)
        self->words [k] = KVT_MODEL_CUDA_GATE_OPEN;
    return self;
}


//  --------------------------------------------------------------------------
//  Destroy a pool: every gate is opened first, so no copy waits forever.

void
kvt_model_cuda_gates_destroy (kvt_model_cuda_gates_t **self_p)
{
    kvt_model_cuda_gates_t *self = self_p? *self_p: NULL;
    if (self) {
        for (int k = 0; k < S_GATES; k++)
            self->words [k] = KVT_MODEL_CUDA_GATE_OPEN;
        __sync_synchronize ();
        //  Streams still waiting see the open words before the memory goes
        cudaDeviceSynchronize ();
        cudaFreeHost ((void *) self->words);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Take a gate, closed (0 layers ready). Returns its id, or -ENOSPC.

int
kvt_model_cuda_gate_open (kvt_model_cuda_gates_t *self)
{
    assert (self);
    for (int k = 0; k < S_GATES; k++)
        if (!self->used [k]) {
            self->used [k] = true;
            self->words [k] = 0;
            __sync_synchronize ();
            return k;
        }
    return -ENOSPC;
}


//  --------------------------------------------------------------------------
//  Say layers [0, layers_ready) may be copied (KVT_MODEL_CUDA_GATE_OPEN:
//  all, whatever comes). Never lowers the word.

void
kvt_model_cuda_gate_set (kvt_model_cuda_gates_t *self, int gate, uint32_t layers_ready)
{
    assert (self);
    if (gate < 0 || gate >= S_GATES || !self->used [gate])
        return;
    if (layers_ready > self->words [gate]) {
        self->words [gate] = layers_ready;
        __sync_synchronize ();      //  Out to memory now; the GPU polls it
    }
}


//  --------------------------------------------------------------------------
//  Give a gate back, opened. Call once no stream can still wait on it
//  (its sequence destroyed).

void
kvt_model_cuda_gate_close (kvt_model_cuda_gates_t *self, int gate)
{
    assert (self);
    if (gate < 0 || gate >= S_GATES)
        return;
    self->words [gate] = KVT_MODEL_CUDA_GATE_OPEN;
    __sync_synchronize ();
    self->used [gate] = false;
}


//  --------------------------------------------------------------------------
//  The next kvt_model_cuda_seq_begin on this thread gates its streamed
//  copies on 'gate' (-1: none).

void
kvt_model_cuda_gate_arm (kvt_model_cuda_gates_t *self, int gate)
{
    if (!self || gate < 0 || gate >= S_GATES) {
        s_armed_word = NULL;
        return;
    }
    s_armed_word = &self->words [gate];
    s_armed_device = self->device + (CUdeviceptr) gate * sizeof (uint32_t);
    s_armed_wait = self->wait_value;
}


//  --------------------------------------------------------------------------
//  Queue, on 'stream', a wait until the armed gate reads >= 'layers' (no-op
//  when none is armed). Returns 0 or KVT_ECUDA.

int
kvt_model_cuda_gate_wait (cudaStream_t stream, int layers)
{
    if (!s_armed_word)
        return 0;
    CUresult status = s_armed_wait ((CUstream) stream, s_armed_device, (cuuint32_t) layers,
                                    CU_STREAM_WAIT_VALUE_GEQ);
    if (status != CUDA_SUCCESS) {
        kvt_log_error ("model: cuStreamWaitValue32 failed (%d)", (int) status);
        return KVT_ECUDA;
    }
    return 0;
}

#endif
