/*  =========================================================================
    kvt_compute_layers - compute's runs that stream layer groups (issue #4)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    See kvt_compute.c's @header, "Layer groups": the tickets migration
    gives streamed runs, MIG_LAYERS_READY opening a run's GPU gate (or
    admitting a held CPU run), aborts, and the watchdog that fails a run
    whose groups stop coming (compute/layers_wait_ms).
@end
*/

#include "kvt_compute_int.h"

//  The table entry of 'ticket' (layer groups, #4), made if new (an older
//  ticket in its place is forgotten: a run keeps its own copy once here).
kvt_compute_ticket_t *
kvt_compute_ticket (self_t *self, uint64_t ticket)
{
    size_t index = (size_t) (ticket % KVT_COMPUTE_TICKETS);
    if (self->tickets [index].ticket != ticket) {
        self->tickets [index].ticket = ticket;
        self->tickets [index].layers_ready = 0;
        self->tickets [index].failed = false;
    }
    return &self->tickets [index];
}

//  Fail an aborted job with 'rc' now if no step can be using it, else
//  mark it for the end of the step in flight.
static void
s_abort (self_t *self, kvt_compute_job_t *job, int rc)
{
#ifdef KVT_WITH_CUDA
    if (job->gate >= 0)
        kvt_model_cuda_gate_set (self->gates, job->gate, KVT_MODEL_CUDA_GATE_OPEN);
#endif
    kvt_actor_count (self->actor, "runs_aborted", 1);
    if (zlist_exists (self->waiting, job)) {
        zlist_remove (self->waiting, job);
        kvt_compute_job_fail (self, &job, rc);
    }
    else
    if (!self->in_flight) {
        zlist_remove (self->active, job);
        kvt_compute_job_fail (self, &job, rc);
    }
    else {
        job->aborted = true;        //  s_step_done fails it
        job->abort_rc = rc;
    }
}

//  Watchdog (compute/layers_wait_ms): a run still short of layers whose
//  last MIG_LAYERS_READY is that old fails with KVT_ETIMEOUT_PEER, its
//  gate opened, so a migration that died or stalled mid-stream costs the
//  request a recompute (the scheduler's answer to a failed stream), not a
//  GPU stream waiting for ever on a word no one will write.
int
kvt_compute_layers_watchdog (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    int64_t now = kvt_now_us ();
    zlist_t *lists [2] = { self->active, self->waiting };
    for (int l = 0; l < 2; l++) {
        kvt_compute_job_t *late = NULL;
        for (kvt_compute_job_t *job = (kvt_compute_job_t *) zlist_first (lists [l]); job && !late;
             job = (kvt_compute_job_t *) zlist_next (lists [l]))
            if (job->ticket && !job->aborted
            &&  job->layers_ready < (uint64_t) self->shape.layers
            &&  now - job->layers_at_us > self->layers_wait_us)
                late = job;
        if (late) {                 //  One a tick: s_abort may change the lists
            kvt_log_warn ("compute: no layers of run %" PRIu64 " for %" PRId64 " ms (%" PRIu64
                          " of %d here); failing it", late->ticket,
                          (now - late->layers_at_us) / 1000, late->layers_ready,
                          self->shape.layers);
            kvt_actor_count (self->actor, "layer_waits_timed_out", 1);
            s_abort (self, late, KVT_ETIMEOUT_PEER);
        }
    }
    return 0;
}

//  MIG_LAYERS_READY: layers [0, layers_ready) of the run 'ticket' are on
//  the host, or (failed) the run must fail. Open the job's gate that far
//  (GPU) or admit it once all are there (CPU); remember it for a run not
//  here yet.
int
kvt_compute_handle_layers_ready (void *self_ptr, kvt_msg_t **msg_p)
{
    self_t *self = (self_t *) self_ptr;
    uint64_t ticket = kvt_msg_u64 (*msg_p, KVT_MIG_LAYERS_READY_TICKET);
    uint64_t layers = kvt_msg_u64 (*msg_p, KVT_MIG_LAYERS_READY_LAYERS_READY);
    bool failed = kvt_msg_u64 (*msg_p, KVT_MIG_LAYERS_READY_FAILED) != 0;
    if (ticket == 0)
        return -EINVAL;
    kvt_actor_count (self->actor, "layers_ready_msgs", 1);
    kvt_compute_ticket_t *entry = kvt_compute_ticket (self, ticket);
    if (layers > entry->layers_ready)
        entry->layers_ready = layers;
    entry->failed |= failed;
    kvt_compute_job_t *found = NULL;
    for (kvt_compute_job_t *job = (kvt_compute_job_t *) zlist_first (self->active); job && !found;
         job = (kvt_compute_job_t *) zlist_next (self->active))
        found = job->ticket == ticket? job: NULL;
    for (kvt_compute_job_t *job = (kvt_compute_job_t *) zlist_first (self->waiting); job && !found;
         job = (kvt_compute_job_t *) zlist_next (self->waiting))
        found = job->ticket == ticket? job: NULL;
    if (found && layers > found->layers_ready) {
        found->layers_ready = layers;
        found->layers_at_us = kvt_now_us ();
    }
    if (found && entry->failed && !found->aborted)
        s_abort (self, found, KVT_ECHECKSUM);
#ifdef KVT_WITH_CUDA
    else
    if (found && found->gate >= 0)
        kvt_model_cuda_gate_set (self->gates, found->gate,
                                 found->layers_ready >= (uint64_t) self->shape.layers?
                                 KVT_MODEL_CUDA_GATE_OPEN: (uint32_t) found->layers_ready);
#endif
    kvt_msg_t *reply = kvt_msg_reply_new (*msg_p, KVT_MSG_MIG_LAYERS_READY_OK);
    kvt_msg_set_u64 (reply, KVT_MIG_LAYERS_READY_OK_KNOWN, found != NULL);
    kvt_actor_reply (self->actor, &reply);
    kvt_compute_admit (self);
    kvt_compute_arm (self);
    return 0;
}
