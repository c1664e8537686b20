/*  =========================================================================
    kvt_arena - a block slab in shared memory (memfd) any process can map

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include "kvt_classes.h"
#include "kvt_huge.h"
#include <ctype.h>
#ifdef KVT_WITH_NUMA
#include <numa.h>
#endif
#ifdef KVT_WITH_CUDA
#   include <cuda_runtime.h>
#endif

struct _kvt_arena_t {
    char *name;                     //  "host", "gpu", ...
    int fd;                         //  memfd; inherited by actor processes
    void *base;                     //  Mapping in this process
    size_t block_count;             //  Slots
    size_t block_bytes;             //  Bytes per slot
    size_t mapped_bytes;            //  Length of the mapping
    bool hugepages;                 //  Backed by huge pages?
    bool device;                    //  Device memory (cudaMalloc), no fd
    bool ipc_opened;                //  Device memory opened by IPC handle (not ours to free)
    bool pinned;                    //  Host memory registered with CUDA
    bool private_memory;            //  Anonymous, this process only (kvt_huge)
    bool want_large;                //  Asked for huge pages, got none reserved
    bool collapsed;                 //  On 2 MiB pages that are not reserved ones: collapsed
                                    //  here, or (shared memory) so its creator said
    bool collapse_refused;          //  Private memory the kernel could not collapse (no
                                    //  2 MiB of memory): large_after_refusal says the rest
    bool large_after_refusal;       //  ...all of it on 2 MiB pages anyway (measured)
    size_t spare_count;             //  Device arenas: blocks past block_count
};

#define S_REGISTRY_MAX 8            //  Arenas one process can hold
static kvt_arena_t *s_registry [S_REGISTRY_MAX];

//  2 MiB-aligned, so that 2 MiB pages (reserved or collapsed) can back it
static int
s_map (kvt_arena_t *self)
{
    self->base = kvt_huge_map_fd (self->fd, self->mapped_bytes);
    return self->base? 0: -errno;
}

//  A fresh arena record, no memory yet
static kvt_arena_t *
s_arena_new (const char *name, size_t block_count, size_t block_bytes)
{
    kvt_arena_t *self = (kvt_arena_t *) kvt_zmalloc (sizeof (kvt_arena_t));
    self->name = strdup (name);
    self->fd = -1;
    self->block_count = block_count;
    self->block_bytes = block_bytes;
    return self;
}

//  Map the arena on reserved huge pages (a MFD_HUGETLB memfd); false, and
//  nothing held, where the machine reserves none. Descriptors are inherited
//  on purpose (no MFD_CLOEXEC): actor processes are started with fork and
//  exec and map the same memory.
static bool
s_map_hugetlb (kvt_arena_t *self)
{
    size_t huge = 2u << 20;
    self->mapped_bytes = (self->block_count * self->block_bytes + huge - 1) / huge * huge;
    self->fd = memfd_create (self->name, MFD_HUGETLB);
    if (self->fd >= 0 && (ftruncate (self->fd, (off_t) self->mapped_bytes) != 0
                          || s_map (self) != 0)) {
        close (self->fd);
        self->fd = -1;
    }
    self->hugepages = self->fd >= 0;
    return self->hugepages;
}

kvt_arena_t *
kvt_arena_new (const char *name, size_t block_count, size_t block_bytes, bool hugepages)
{
    kvt_arena_t *self = s_arena_new (name, block_count, block_bytes);
    size_t bytes = block_count * block_bytes;
    if (!hugepages || !s_map_hugetlb (self)) {
        //  Whole 2 MiB extents where huge pages were asked for, so that
        //  kvt_arena_collapse can put all of it on them
        size_t page = hugepages? 2u << 20: (size_t) sysconf (_SC_PAGESIZE);
        self->mapped_bytes = (bytes + page - 1) / page * page;
        self->want_large = hugepages;
        self->fd = memfd_create (name, 0);
        if (self->fd < 0 || ftruncate (self->fd, (off_t) self->mapped_bytes) != 0
        ||  s_map (self) != 0) {
            kvt_log_error ("arena %s: cannot allocate %zu bytes of shared memory: %s",
                           name, bytes, strerror (errno));
            kvt_arena_destroy (&self);
            return NULL;
        }
    }
    kvt_log_info ("arena %s: %zu blocks of %zu bytes%s", name, block_count, block_bytes,
                  self->hugepages? " on huge pages": "");
    return self;
}

kvt_arena_t *
kvt_arena_new_private (const char *name, size_t block_count, size_t block_bytes,
                       bool hugepages)
{
    kvt_arena_t *self = s_arena_new (name, block_count, block_bytes);
    if (hugepages && s_map_hugetlb (self)) {
        kvt_log_info ("arena %s: %zu blocks of %zu bytes on huge pages", name, block_count,
                      block_bytes);
        return self;
    }
    self->mapped_bytes = block_count * block_bytes;
    self->base = kvt_huge_alloc (self->mapped_bytes, false);
    self->want_large = hugepages;
    if (!self->base) {
        kvt_log_error ("arena %s: cannot allocate %zu bytes of private memory: %s", name,
                       self->mapped_bytes, strerror (errno));
        kvt_arena_destroy (&self);
        return NULL;
    }
    self->private_memory = true;
    kvt_log_info ("arena %s: %zu blocks of %zu bytes, private (transparent huge pages "
                  "where allowed)", name, block_count, block_bytes);
    return self;
}

kvt_arena_t *
kvt_arena_new_device (const char *name, size_t block_count, size_t block_bytes,
                      size_t spare_count)
{
#ifdef KVT_WITH_CUDA
    kvt_arena_t *self = (kvt_arena_t *) kvt_zmalloc (sizeof (kvt_arena_t));
    self->name = strdup (name);
    self->fd = -1;
    self->device = true;
    self->block_count = block_count;
    self->block_bytes = block_bytes;
    self->spare_count = spare_count;
    self->mapped_bytes = (block_count + spare_count) * block_bytes;
    cudaError_t status = cudaMalloc (&self->base, self->mapped_bytes);
    if (status != cudaSuccess) {
        kvt_log_error ("arena %s: cannot allocate %zu bytes of device memory: %s", name,
                       self->mapped_bytes, cudaGetErrorString (status));
        self->base = NULL;
        kvt_arena_destroy (&self);
        return NULL;
    }
    kvt_log_info ("arena %s: %zu blocks (+%zu spare) of %zu bytes in device memory", name,
                  block_count, spare_count, block_bytes);
    return self;
#else
    (void) block_count; (void) block_bytes; (void) spare_count;
    kvt_log_error ("arena %s: device memory needs a CUDA build", name);
    return NULL;
#endif
}

int
kvt_arena_ipc_handle (const kvt_arena_t *self, char *hex, size_t hex_size)
{
    if (!self->device || hex_size < KVT_ARENA_IPC_HEX)
        return -EINVAL;
#ifdef KVT_WITH_CUDA
    cudaIpcMemHandle_t handle;
    if (cudaIpcGetMemHandle (&handle, self->base) != cudaSuccess)
        return KVT_ECUDA;
    for (size_t k = 0; k < sizeof (handle.reserved); k++)
        snprintf (hex + 2 * k, 3, "%02x", (unsigned char) handle.reserved [k]);
    return 0;
#else
    (void) hex;
    return -ENOTSUP;
#endif
}

kvt_arena_t *
kvt_arena_attach_device (const char *name, const char *hex, size_t block_count,
                         size_t block_bytes, size_t spare_count)
{
#ifdef KVT_WITH_CUDA
    cudaIpcMemHandle_t handle;
    if (strlen (hex) != 2 * sizeof (handle.reserved)) {
        kvt_log_error ("arena %s: '%s' is not a CUDA IPC handle", name, hex);
        return NULL;
    }
    for (size_t k = 0; k < sizeof (handle.reserved); k++) {
        unsigned byte;
        if (sscanf (hex + 2 * k, "%2x", &byte) != 1) {
            kvt_log_error ("arena %s: '%s' is not a CUDA IPC handle", name, hex);
            return NULL;
        }
        handle.reserved [k] = (char) byte;
    }
    kvt_arena_t *self = (kvt_arena_t *) kvt_zmalloc (sizeof (kvt_arena_t));
    self->name = strdup (name);
    self->fd = -1;
    self->device = true;
    self->block_count = block_count;
    self->block_bytes = block_bytes;
    self->spare_count = spare_count;
    self->mapped_bytes = (block_count + spare_count) * block_bytes;
    cudaError_t status = cudaIpcOpenMemHandle (&self->base, handle,
                                               cudaIpcMemLazyEnablePeerAccess);
    if (status != cudaSuccess) {
        kvt_log_error ("arena %s: cannot open the device slab by IPC: %s", name,
                       cudaGetErrorString (status));
        self->base = NULL;
        kvt_arena_destroy (&self);
        return NULL;
    }
    self->ipc_opened = true;
    return self;
#else
    (void) hex; (void) block_count; (void) block_bytes; (void) spare_count;
    kvt_log_error ("arena %s: device memory needs a CUDA build", name);
    return NULL;
#endif
}

//  --------------------------------------------------------------------------
//  Place the arena's pages on NUMA node 'node' (before they are touched:
//  the policy applies to pages as they fault in). Returns 0, -EINVAL for a
//  node this machine does not have, -ENOTSUP without libnuma or NUMA.

int
kvt_arena_bind_numa (kvt_arena_t *self, int node)
{
    if (self->device)
        return -EINVAL;
#ifdef KVT_WITH_NUMA
    if (numa_available () < 0)
        return -ENOTSUP;
    if (node < 0 || node > numa_max_node ()) {
        kvt_log_error ("arena %s: NUMA node %d does not exist (0..%d)", self->name, node,
                       numa_max_node ());
        return -EINVAL;
    }
    numa_tonode_memory (self->base, self->mapped_bytes, node);
    kvt_log_info ("arena %s: placed on NUMA node %d", self->name, node);
    return 0;
#else
    (void) node;
    return -ENOTSUP;
#endif
}

//  The NUMA node of the first CUDA device, or -1 if unknown (no CUDA, no
//  device, or the kernel does not say).
int
kvt_arena_gpu_numa_node (void)
{
#ifdef KVT_WITH_CUDA
    char bus_id [32];
    if (cudaDeviceGetPCIBusId (bus_id, sizeof (bus_id), 0) != cudaSuccess)
        return -1;
    for (char *c = bus_id; *c; c++)
        *c = (char) tolower ((unsigned char) *c);   //  sysfs names are lower case
    char path [128];
    snprintf (path, sizeof (path), "/sys/bus/pci/devices/%s/numa_node", bus_id);
    FILE *file = fopen (path, "r");
    int node = -1;
    if (file) {
        if (fscanf (file, "%d", &node) != 1)
            node = -1;
        fclose (file);
    }
    return node;
#else
    return -1;
#endif
}

int
kvt_arena_pin (kvt_arena_t *self)
{
    if (self->device)
        return -EINVAL;
    if (self->pinned)
        return 0;
#ifdef KVT_WITH_CUDA
    cudaError_t status = cudaHostRegister (self->base, self->mapped_bytes,
                                           cudaHostRegisterPortable | cudaHostRegisterMapped);
    if (status != cudaSuccess) {
        kvt_log_error ("arena %s: cudaHostRegister of %zu bytes failed: %s", self->name,
                       self->mapped_bytes, cudaGetErrorString (status));
        return KVT_ECUDA;
    }
    self->pinned = true;
    return 0;
#else
    return -ENOTSUP;
#endif
}

int
kvt_arena_copy (const kvt_arena_t *self, void *dst, const void *src, size_t bytes)
{
#ifdef KVT_WITH_CUDA
    if (self->device)
        return cudaMemcpy (dst, src, bytes, cudaMemcpyDefault) == cudaSuccess? 0: KVT_ECUDA;
#endif
    (void) self;
    memcpy (dst, src, bytes);
    return 0;
}

kvt_arena_t *
kvt_arena_attach (const char *name, int fd, size_t block_count, size_t block_bytes,
                  bool large_pages)
{
    kvt_arena_t *self = (kvt_arena_t *) kvt_zmalloc (sizeof (kvt_arena_t));
    self->name = strdup (name);
    self->fd = fd;
    self->block_count = block_count;
    self->block_bytes = block_bytes;
    self->collapsed = large_pages;
    struct stat info;
    if (fstat (fd, &info) != 0 || (size_t) info.st_size < block_count * block_bytes) {
        kvt_log_error ("arena %s: descriptor %d is not a large enough arena", name, fd);
        self->fd = -1;              //  Not ours to close
        kvt_arena_destroy (&self);
        return NULL;
    }
    self->mapped_bytes = (size_t) info.st_size;
    if (s_map (self) != 0) {
        kvt_log_error ("arena %s: cannot map descriptor %d: %s", name, fd, strerror (errno));
        kvt_arena_destroy (&self);
        return NULL;
    }
    return self;
}

void
kvt_arena_destroy (kvt_arena_t **self_p)
{
    assert (self_p);
    kvt_arena_t *self = *self_p;
    if (self) {
#ifdef KVT_WITH_CUDA
        if (self->device && self->base && self->ipc_opened)
            cudaIpcCloseMemHandle (self->base);
        else
        if (self->device && self->base)
            cudaFree (self->base);
        else
        if (self->pinned)
            cudaHostUnregister (self->base);
#endif
        if (self->base && self->private_memory)
            kvt_huge_free (self->base, self->mapped_bytes);
        else
        if (self->base && !self->device)
            munmap (self->base, self->mapped_bytes);
        if (self->fd >= 0)
            close (self->fd);
        free (self->name);
        free (self);
        *self_p = NULL;
    }
}

void *
kvt_arena_block (const kvt_arena_t *self, uint64_t slot)
{
    assert (slot < self->block_count);
    return (char *) self->base + slot * self->block_bytes;
}

const char *kvt_arena_name (const kvt_arena_t *self) { return self->name; }
int kvt_arena_fd (const kvt_arena_t *self) { return self->fd; }
size_t kvt_arena_block_count (const kvt_arena_t *self) { return self->block_count; }
size_t kvt_arena_block_bytes (const kvt_arena_t *self) { return self->block_bytes; }
void *kvt_arena_base (const kvt_arena_t *self) { return self->base; }
bool kvt_arena_hugepages (const kvt_arena_t *self) { return self->hugepages; }
bool kvt_arena_on_device (const kvt_arena_t *self) { return self->device; }
bool kvt_arena_pinned (const kvt_arena_t *self) { return self->pinned; }
size_t kvt_arena_spare_count (const kvt_arena_t *self) { return self->spare_count; }

bool
kvt_arena_large_pages (const kvt_arena_t *self)
{
    if (self->hugepages || self->collapsed)
        return true;
    if (self->collapse_refused)
        return self->large_after_refusal;
    //  Private memory not collapsed (not asked, or a kernel without
    //  MADV_COLLAPSE): its faults take 2 MiB pages where THP is on
    return self->private_memory && kvt_huge_thp_enabled ();
}

int
kvt_arena_collapse (kvt_arena_t *self)
{
    if (!self->want_large || self->collapsed)
        return kvt_arena_large_pages (self)? 0: -EINVAL;
    //  Whole 2 MiB extents: a memfd arena's mapping is, a private one's is
    //  rounded up to them by kvt_huge_alloc
    size_t length = (self->mapped_bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    int rc = kvt_huge_collapse (self->base, length);
    self->collapsed = rc == 0;
    if (rc && rc != -EINVAL && self->private_memory) {
        //  The kernel found no 2 MiB of memory for some extent: the faults
        //  that touched every extent may still have got 2 MiB pages, or
        //  not; what the page tables say decides (a disk's DMA into 4 KiB
        //  pages takes a segment a page: tier_nvme then reads by bounce)
        self->collapse_refused = true;
        self->large_after_refusal = kvt_huge_large_bytes (self->base, length) == length;
    }
    if (rc == 0)
        kvt_log_info ("arena %s: on 2 MiB pages (MADV_COLLAPSE)", self->name);
    else
        kvt_log_info ("arena %s: %s (MADV_COLLAPSE: %s)", self->name,
                      kvt_arena_large_pages (self)? "on 2 MiB pages by its faults"
                                                  : "stays on 4 KiB pages", strerror (-rc));
    return rc;
}

int
kvt_arena_register (kvt_arena_t **arena_p)
{
    for (int k = 0; k < S_REGISTRY_MAX; k++)
        if (!s_registry [k]) {
            s_registry [k] = *arena_p;
            *arena_p = NULL;
            return 0;
        }
    return -ENOSPC;
}

kvt_arena_t *
kvt_arena_find (const char *name)
{
    for (int k = 0; k < S_REGISTRY_MAX; k++)
        if (s_registry [k] && streq (s_registry [k]->name, name))
            return s_registry [k];
    return NULL;
}

void
kvt_arena_registry_clear (void)
{
    for (int k = 0; k < S_REGISTRY_MAX; k++)
        kvt_arena_destroy (&s_registry [k]);
}

//  This process's shared memory mapped by 2 MiB entries, in KiB; SIZE_MAX
//  where the kernel does not say
static size_t
s_shmem_pmd_kib (void)
{
    FILE *file = fopen ("/proc/self/smaps_rollup", "r");
    size_t kib = SIZE_MAX;
    char line [128];
    while (file && fgets (line, sizeof (line), file))
        if (sscanf (line, "ShmemPmdMapped: %zu kB", &kib) == 1)
            break;
    if (file)
        fclose (file);
    return kib;
}

int
kvt_arena_test (bool verbose)
{
    kvt_arena_t *arena = kvt_arena_new ("test", 8, 4096, true);
    assert (arena);
    assert (kvt_arena_block_count (arena) == 8);
    memset (kvt_arena_block (arena, 7), 0xab, 4096);

    //  A second mapping of the same descriptor sees the same bytes, as an
    //  actor process does after fork and exec
    int fd = dup (kvt_arena_fd (arena));
    kvt_arena_t *view = kvt_arena_attach ("test", fd, 8, 4096, false);
    assert (view);
    assert (((uint8_t *) kvt_arena_block (view, 7)) [4095] == 0xab);
    ((uint8_t *) kvt_arena_block (view, 0)) [0] = 0x5a;
    assert (((uint8_t *) kvt_arena_block (arena, 0)) [0] == 0x5a);
    kvt_arena_destroy (&view);
    assert (kvt_arena_attach ("bad", kvt_arena_fd (arena), 1000, 4096, false) == NULL);

    //  NUMA placement: node 0 exists wherever NUMA does; a node far past
    //  the last is refused, clearly
    int rc = kvt_arena_bind_numa (arena, 0);
    assert (rc == 0 || rc == -ENOTSUP);
    if (rc == 0)
        assert (kvt_arena_bind_numa (arena, 100000) == -EINVAL);
    assert (kvt_arena_register (&arena) == 0 && arena == NULL);
    assert (kvt_arena_find ("test") != NULL);
    assert (kvt_arena_find ("none") == NULL);
    kvt_arena_registry_clear ();
    assert (kvt_arena_find ("test") == NULL);

    //  Host arenas copy with memcpy; device arenas need a CUDA build
    arena = kvt_arena_new ("copy", 2, 4096, false);
    assert (arena && !kvt_arena_on_device (arena) && kvt_arena_spare_count (arena) == 0);
    char bytes [64] = "kvtier";
    assert (kvt_arena_copy (arena, kvt_arena_block (arena, 1), bytes, sizeof (bytes)) == 0);
    assert (memcmp (kvt_arena_block (arena, 1), bytes, sizeof (bytes)) == 0);
#ifndef KVT_WITH_CUDA
    assert (kvt_arena_pin (arena) == -ENOTSUP);
    assert (kvt_arena_new_device ("dev", 2, 4096, 1) == NULL);
    assert (kvt_arena_attach_device ("dev", "00", 2, 4096, 1) == NULL);
#endif
    char hex [KVT_ARENA_IPC_HEX];
    assert (kvt_arena_ipc_handle (arena, hex, sizeof (hex)) == -EINVAL);
    kvt_arena_destroy (&arena);

    //  A memfd arena that asked for huge pages and got no reserved ones goes
    //  onto 2 MiB pages by MADV_COLLAPSE where the kernel can, keeping its
    //  bytes; then its pages are 2 MiB in fact (the process's shared memory
    //  mapped by 2 MiB entries), and a second mapping is told so
    arena = kvt_arena_new ("collapse", 3, 1u << 20, true);
    assert (arena && (uintptr_t) kvt_arena_base (arena) % (2u << 20) == 0);
    if (!kvt_arena_hugepages (arena)) {
        assert (!kvt_arena_large_pages (arena));
        memset (kvt_arena_block (arena, 2), 0x3c, 4096);
        size_t before = s_shmem_pmd_kib ();
        rc = kvt_arena_collapse (arena);
        assert ((rc == 0) == kvt_arena_large_pages (arena));
        assert (((uint8_t *) kvt_arena_block (arena, 2)) [4095] == 0x3c);
        assert (((uint8_t *) kvt_arena_block (arena, 0)) [0] == 0);
        if (rc == 0)
            assert (s_shmem_pmd_kib () >= before + 4096 || before == SIZE_MAX);
        view = kvt_arena_attach ("collapse", dup (kvt_arena_fd (arena)), 3, 1u << 20, rc == 0);
        assert (view && kvt_arena_large_pages (view) == (rc == 0));
        assert (((uint8_t *) kvt_arena_block (view, 2)) [0] == 0x3c);
        kvt_arena_destroy (&view);
    }
    if (kvt_arena_large_pages (arena))
        assert (kvt_arena_collapse (arena) == 0);       //  Once is enough
    kvt_arena_destroy (&arena);
    arena = kvt_arena_new ("small", 2, 4096, false);
    assert (kvt_arena_collapse (arena) == -EINVAL && !kvt_arena_large_pages (arena));
    kvt_arena_destroy (&arena);

    //  A private arena: zeroed blocks of this process, 2 MiB-aligned (huge
    //  pages can back it), no descriptor to hand to another process
    arena = kvt_arena_new_private ("private", 600, 4096, false);
    assert (arena && kvt_arena_fd (arena) == -1 && !kvt_arena_on_device (arena));
    assert ((uintptr_t) kvt_arena_base (arena) % (2u << 20) == 0);
    assert (((uint8_t *) kvt_arena_block (arena, 599)) [4095] == 0);
    assert (kvt_arena_copy (arena, kvt_arena_block (arena, 599), bytes, sizeof (bytes)) == 0);
    assert (memcmp (kvt_arena_block (arena, 599), bytes, sizeof (bytes)) == 0);
    rc = kvt_arena_bind_numa (arena, 0);
    assert (rc == 0 || rc == -ENOTSUP);
    kvt_arena_destroy (&arena);

    //  A private arena that asked for huge pages goes onto them by the same
    //  collapse, keeping its bytes; then the page tables hold 2 MiB entries
    //  for all of it (3 MiB of blocks: two whole extents)
    arena = kvt_arena_new_private ("private-large", 3, 1u << 20, true);
    assert (arena);
    if (!kvt_arena_hugepages (arena)) {
        memset (kvt_arena_block (arena, 2), 0x7e, 4096);
        rc = kvt_arena_collapse (arena);
        assert (((uint8_t *) kvt_arena_block (arena, 2)) [4095] == 0x7e);
        assert (((uint8_t *) kvt_arena_block (arena, 0)) [0] == 0);
        size_t large = kvt_huge_large_bytes (kvt_arena_base (arena), 4u << 20);
        if (rc == 0) {
            assert (kvt_arena_large_pages (arena));
            assert (large == (4u << 20) || large == SIZE_MAX);
        }
        else
        if (rc != -EINVAL)              //  Refused: what the page tables hold decides
            assert (kvt_arena_large_pages (arena) == (large == (4u << 20)));
        if (verbose)
            printf ("kvt_arena: private collapse %s, %zu KiB on 2 MiB pages\n",
                    rc == 0? "ok": strerror (-rc), large == SIZE_MAX? 0: large >> 10);
    }
    kvt_arena_destroy (&arena);
    return 0;
}
