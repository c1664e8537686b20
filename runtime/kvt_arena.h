/*  =========================================================================
    kvt_arena - a block slab in shared memory (memfd) any process can map

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    The host tier's slab, and the GPU tier's slab on machines without a
    GPU, live in memfd shared memory: created once by the supervisor before
    any actor starts, inherited by actor processes as a file descriptor,
    and mapped by each process that moves bytes. Huge pages are used when
    the machine allows (MFD_HUGETLB), else normal pages; when every actor
    is a thread and no huge pages are reserved, the runtime makes its
    arenas private memory instead (kvt_arena_new_private), where
    transparent huge pages can back them.
    In a CUDA build with a GPU, the GPU tier's slab is device memory
    instead (kvt_arena_new_device): its block addresses are device
    pointers, it has no descriptor (actor processes open it by its CUDA
    IPC handle instead), and it carries 'spare' blocks past block_count that no
    tier hands out, for the compute actor's scratch KV. The host slab is
    then registered with CUDA (kvt_arena_pin) so copies reach it by DMA.
@discuss
    The per-process registry maps a name ("host", "gpu") to its arena. It is
    filled before actors start and only read afterwards, so actor threads
    share no mutable state through it.
@end
*/

#ifndef KVT_ARENA_H_INCLUDED
#define KVT_ARENA_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _kvt_arena_t kvt_arena_t;

//  Create a shared arena of block_count x block_bytes. Tries huge pages
//  if 'hugepages'. Returns NULL and logs why if memory could not be had.
kvt_arena_t *
    kvt_arena_new (const char *name, size_t block_count, size_t block_bytes, bool hugepages);

//  Create an arena for runs whose actors are all threads: on reserved huge
//  pages if 'hugepages' and the machine has them (as kvt_arena_new), else
//  in this process's private memory, on transparent huge pages where the
//  kernel allows (kvt_huge.h); then it has no descriptor (kvt_arena_fd is
//  -1) and no other process can map it. Why: a memfd arena without
//  reserved huge pages is 4 KiB pages, and on a virtual disk without
//  indirect descriptors a 64 KiB NVMe read into it takes 16 segments of a
//  ring that then holds ~14 reads (tools/bench/RESULTS.md, session 20).
//  Returns NULL and logs why if memory could not be had.
kvt_arena_t *
    kvt_arena_new_private (const char *name, size_t block_count, size_t block_bytes,
                           bool hugepages);

//  Create a device-memory arena of block_count + spare_count blocks on
//  the current CUDA device (CUDA builds only). Returns NULL and logs why
//  if the memory could not be had or this build has no CUDA.
kvt_arena_t *
    kvt_arena_new_device (const char *name, size_t block_count, size_t block_bytes,
                          size_t spare_count);

//  Write the CUDA IPC handle of a device arena as hex into 'hex' (at least
//  KVT_ARENA_IPC_HEX bytes), for a child process to open. Returns 0,
//  -EINVAL for a host arena, -ENOTSUP without CUDA, or KVT_ECUDA.
#define KVT_ARENA_IPC_HEX 132       //  2 x CUDA_IPC_HANDLE_SIZE + NUL, rounded
int
    kvt_arena_ipc_handle (const kvt_arena_t *self, char *hex, size_t hex_size);

//  Open a device arena another process created, from its IPC handle in
//  hex. Returns NULL and logs why if it cannot be opened.
kvt_arena_t *
    kvt_arena_attach_device (const char *name, const char *hex, size_t block_count,
                             size_t block_bytes, size_t spare_count);

//  Register a host arena with CUDA (portable, mapped) so the GPU reaches
//  it by DMA and from kernels. Returns 0, -EINVAL for a device arena,
//  -ENOTSUP without CUDA, or KVT_ECUDA.
int
    kvt_arena_pin (kvt_arena_t *self);

//  Copy 'bytes' between a block of 'self' and host memory (either
//  direction, 'dst' or 'src' being the block): memcpy for a host arena,
//  a synchronous cudaMemcpy for a device arena. Returns 0 or KVT_ECUDA.
int
    kvt_arena_copy (const kvt_arena_t *self, void *dst, const void *src, size_t bytes);

//  Map an arena another process created, from its inherited descriptor;
//  'large_pages': what kvt_arena_large_pages said in the creator (the
//  pages are the file's, so they are 2 MiB here too).
kvt_arena_t *
    kvt_arena_attach (const char *name, int fd, size_t block_count, size_t block_bytes,
                      bool large_pages);

//  Unmap and close; NULL-safe, nulls the caller's pointer.
void
    kvt_arena_destroy (kvt_arena_t **self_p);

//  Address of block 'slot' (< block_count).
void *
    kvt_arena_block (const kvt_arena_t *self, uint64_t slot);

const char *
    kvt_arena_name (const kvt_arena_t *self);
int
    kvt_arena_fd (const kvt_arena_t *self);
size_t
    kvt_arena_block_count (const kvt_arena_t *self);
size_t
    kvt_arena_block_bytes (const kvt_arena_t *self);
void *
    kvt_arena_base (const kvt_arena_t *self);
bool
    kvt_arena_hugepages (const kvt_arena_t *self);
//  Whether the arena's memory is on pages of 2 MiB: reserved huge pages,
//  memory collapsed onto them (kvt_arena_collapse, or as the creator told
//  kvt_arena_attach), private memory the kernel could not collapse that
//  is on them all the same (measured), or private memory not collapsed
//  where transparent huge pages are on. DMA into 4 KiB pages takes a
//  segment a page (kvt_nvme_store.h, "Buffers").
bool
    kvt_arena_large_pages (const kvt_arena_t *self);

//  An arena made with 'hugepages' but without reserved ones (memfd or
//  private): onto 2 MiB pages now by MADV_COLLAPSE (kvt_huge_collapse),
//  which makes all of it resident. Private memory's faults take 2 MiB
//  pages only while the kernel has them free; the collapse compacts for
//  them, and where it cannot, kvt_arena_large_pages then says what the
//  page tables hold rather than what THP's setting promises. Call after kvt_arena_bind_numa: pages are placed as they
//  are made. 0 when the arena is on 2 MiB pages after the call; -EINVAL
//  for an arena that cannot be (4 KiB pages asked for, or device memory);
//  else madvise's -errno, and the arena stays on 4 KiB pages.
int
    kvt_arena_collapse (kvt_arena_t *self);
//  True for a device-memory arena (block addresses are device pointers).
bool
    kvt_arena_on_device (const kvt_arena_t *self);
//  True for a host arena registered with CUDA.
bool
    kvt_arena_pinned (const kvt_arena_t *self);
//  Spare blocks past block_count (device arenas): ids block_count ..
//  block_count + spare_count - 1 from kvt_arena_base.
size_t
    kvt_arena_spare_count (const kvt_arena_t *self);

//  Place the arena's pages on NUMA node 'node' (call before first touch).
//  Returns 0, -EINVAL (no such node) or -ENOTSUP (no NUMA support).
int
    kvt_arena_bind_numa (kvt_arena_t *self, int node);

//  NUMA node of the first CUDA device, or -1 when unknown.
int
    kvt_arena_gpu_numa_node (void);

//  Process registry: register before actors start; find from any actor.
//  Register takes ownership; kvt_arena_registry_clear destroys them all.
int
    kvt_arena_register (kvt_arena_t **arena_p);
kvt_arena_t *
    kvt_arena_find (const char *name);
void
    kvt_arena_registry_clear (void);

#ifdef __cplusplus
}
#endif
#endif
