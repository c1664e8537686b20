/*  GENERATED - edit the catalogue in messages/kvt_msg.h, then run
    tools/kvt_codegen.py (or the kvt_codegen target). */

#ifndef KVT_MSG_FIELDS_H_INCLUDED
#define KVT_MSG_FIELDS_H_INCLUDED

//  ERROR (1): code name detail
#define KVT_ERROR_CODE 0
#define KVT_ERROR_NAME 1
#define KVT_ERROR_DETAIL 2

//  HELLO (2): client
#define KVT_HELLO_CLIENT 0

//  HELLO_OK (3): server protocol block_tokens block_bytes layers kv_heads head_dim vocab dtype
#define KVT_HELLO_OK_SERVER 0
#define KVT_HELLO_OK_PROTOCOL 1
#define KVT_HELLO_OK_BLOCK_TOKENS 2
#define KVT_HELLO_OK_BLOCK_BYTES 3
#define KVT_HELLO_OK_LAYERS 4
#define KVT_HELLO_OK_KV_HEADS 5
#define KVT_HELLO_OK_HEAD_DIM 6
#define KVT_HELLO_OK_VOCAB 7
#define KVT_HELLO_OK_DTYPE 8

//  LOOKUP (4): tenant tokens
#define KVT_LOOKUP_TENANT 0
#define KVT_LOOKUP_TOKENS 1

//  LOOKUP_OK (5): matched_blocks tiers hashes
#define KVT_LOOKUP_OK_MATCHED_BLOCKS 0
#define KVT_LOOKUP_OK_TIERS 1
#define KVT_LOOKUP_OK_HASHES 2

//  STORE (6): tenant tokens kv
#define KVT_STORE_TENANT 0
#define KVT_STORE_TOKENS 1
#define KVT_STORE_KV 2

//  STORE_OK (7): stored_blocks present_blocks
#define KVT_STORE_OK_STORED_BLOCKS 0
#define KVT_STORE_OK_PRESENT_BLOCKS 1

//  LOAD (8): tenant tokens
#define KVT_LOAD_TENANT 0
#define KVT_LOAD_TOKENS 1

//  LOAD_OK (9): blocks kv tiers
#define KVT_LOAD_OK_BLOCKS 0
#define KVT_LOAD_OK_KV 1
#define KVT_LOAD_OK_TIERS 2

//  GENERATE (10): tenant tokens max_new_tokens
#define KVT_GENERATE_TENANT 0
#define KVT_GENERATE_TOKENS 1
#define KVT_GENERATE_MAX_NEW_TOKENS 2

//  GENERATE_OK (11): tokens ttft_us total_us from_gpu from_host from_nvme computed
#define KVT_GENERATE_OK_TOKENS 0
#define KVT_GENERATE_OK_TTFT_US 1
#define KVT_GENERATE_OK_TOTAL_US 2
#define KVT_GENERATE_OK_FROM_GPU 3
#define KVT_GENERATE_OK_FROM_HOST 4
#define KVT_GENERATE_OK_FROM_NVME 5
#define KVT_GENERATE_OK_COMPUTED 6

//  STATS (12): (no fields)

//  STATS_OK (13): counters
#define KVT_STATS_OK_COUNTERS 0

//  DEMOTE (14): from_tier to_tier max_blocks
#define KVT_DEMOTE_FROM_TIER 0
#define KVT_DEMOTE_TO_TIER 1
#define KVT_DEMOTE_MAX_BLOCKS 2

//  DEMOTE_OK (15): moved
#define KVT_DEMOTE_OK_MOVED 0

//  STORE_TAIL (16): tenant tokens from_block kv
#define KVT_STORE_TAIL_TENANT 0
#define KVT_STORE_TAIL_TOKENS 1
#define KVT_STORE_TAIL_FROM_BLOCK 2
#define KVT_STORE_TAIL_KV 3

//  STORE_TAIL_OK (17): stored_blocks present_blocks
#define KVT_STORE_TAIL_OK_STORED_BLOCKS 0
#define KVT_STORE_TAIL_OK_PRESENT_BLOCKS 1

//  IDX_MATCH (32): hashes pin
#define KVT_IDX_MATCH_HASHES 0
#define KVT_IDX_MATCH_PIN 1

//  IDX_MATCH_OK (33): tiers slots
#define KVT_IDX_MATCH_OK_TIERS 0
#define KVT_IDX_MATCH_OK_SLOTS 1

//  IDX_INSERT (34): hashes tier slots
#define KVT_IDX_INSERT_HASHES 0
#define KVT_IDX_INSERT_TIER 1
#define KVT_IDX_INSERT_SLOTS 2

//  IDX_INSERT_OK (35): inserted duplicates
#define KVT_IDX_INSERT_OK_INSERTED 0
#define KVT_IDX_INSERT_OK_DUPLICATES 1

//  IDX_MOVE (36): hashes tier slots
#define KVT_IDX_MOVE_HASHES 0
#define KVT_IDX_MOVE_TIER 1
#define KVT_IDX_MOVE_SLOTS 2

//  IDX_MOVE_OK (37): moved
#define KVT_IDX_MOVE_OK_MOVED 0

//  IDX_UNPIN (38): hashes
#define KVT_IDX_UNPIN_HASHES 0

//  IDX_UNPIN_OK (39): unpinned
#define KVT_IDX_UNPIN_OK_UNPINNED 0

//  IDX_VICTIMS (40): tier count
#define KVT_IDX_VICTIMS_TIER 0
#define KVT_IDX_VICTIMS_COUNT 1

//  IDX_VICTIMS_OK (41): hashes slots reuses offers
#define KVT_IDX_VICTIMS_OK_HASHES 0
#define KVT_IDX_VICTIMS_OK_SLOTS 1
#define KVT_IDX_VICTIMS_OK_REUSES 2
#define KVT_IDX_VICTIMS_OK_OFFERS 3

//  IDX_REMOVE (42): hashes
#define KVT_IDX_REMOVE_HASHES 0

//  IDX_REMOVE_OK (43): tiers slots
#define KVT_IDX_REMOVE_OK_TIERS 0
#define KVT_IDX_REMOVE_OK_SLOTS 1

//  TIER_ALLOC (44): count
#define KVT_TIER_ALLOC_COUNT 0

//  TIER_ALLOC_OK (45): slots
#define KVT_TIER_ALLOC_OK_SLOTS 0

//  TIER_FREE (46): slots
#define KVT_TIER_FREE_SLOTS 0

//  TIER_FREE_OK (47): freed
#define KVT_TIER_FREE_OK_FREED 0

//  TIER_WRITE (48): slots hashes src_slots
#define KVT_TIER_WRITE_SLOTS 0
#define KVT_TIER_WRITE_HASHES 1
#define KVT_TIER_WRITE_SRC_SLOTS 2

//  TIER_WRITE_OK (49): written failed
#define KVT_TIER_WRITE_OK_WRITTEN 0
#define KVT_TIER_WRITE_OK_FAILED 1

//  TIER_READ (50): slots hashes dst_slots layer_group
#define KVT_TIER_READ_SLOTS 0
#define KVT_TIER_READ_HASHES 1
#define KVT_TIER_READ_DST_SLOTS 2
#define KVT_TIER_READ_LAYER_GROUP 3

//  TIER_READ_OK (51): read failed
#define KVT_TIER_READ_OK_READ 0
#define KVT_TIER_READ_OK_FAILED 1

//  MIG_PROMOTE (52): hashes tiers slots stream
#define KVT_MIG_PROMOTE_HASHES 0
#define KVT_MIG_PROMOTE_TIERS 1
#define KVT_MIG_PROMOTE_SLOTS 2
#define KVT_MIG_PROMOTE_STREAM 3

//  MIG_PROMOTE_OK (53): gpu_slots failed host_slots ticket
#define KVT_MIG_PROMOTE_OK_GPU_SLOTS 0
#define KVT_MIG_PROMOTE_OK_FAILED 1
#define KVT_MIG_PROMOTE_OK_HOST_SLOTS 2
#define KVT_MIG_PROMOTE_OK_TICKET 3

//  MIG_DEMOTE (54): from_tier to_tier max_blocks
#define KVT_MIG_DEMOTE_FROM_TIER 0
#define KVT_MIG_DEMOTE_TO_TIER 1
#define KVT_MIG_DEMOTE_MAX_BLOCKS 2

//  MIG_DEMOTE_OK (55): moved
#define KVT_MIG_DEMOTE_OK_MOVED 0

//  MIG_RESERVE (56): count
#define KVT_MIG_RESERVE_COUNT 0

//  MIG_RESERVE_OK (57): slots
#define KVT_MIG_RESERVE_OK_SLOTS 0

//  COMP_RUN (58): tokens slots cached_blocks max_new_tokens host_slots ticket
#define KVT_COMP_RUN_TOKENS 0
#define KVT_COMP_RUN_SLOTS 1
#define KVT_COMP_RUN_CACHED_BLOCKS 2
#define KVT_COMP_RUN_MAX_NEW_TOKENS 3
#define KVT_COMP_RUN_HOST_SLOTS 4
#define KVT_COMP_RUN_TICKET 5

//  COMP_RUN_OK (59): tokens ttft_us total_us prefill_us
#define KVT_COMP_RUN_OK_TOKENS 0
#define KVT_COMP_RUN_OK_TTFT_US 1
#define KVT_COMP_RUN_OK_TOTAL_US 2
#define KVT_COMP_RUN_OK_PREFILL_US 3

//  POLICY_EVENTS (60): clock kinds tiers hashes parents depths
#define KVT_POLICY_EVENTS_CLOCK 0
#define KVT_POLICY_EVENTS_KINDS 1
#define KVT_POLICY_EVENTS_TIERS 2
#define KVT_POLICY_EVENTS_HASHES 3
#define KVT_POLICY_EVENTS_PARENTS 4
#define KVT_POLICY_EVENTS_DEPTHS 5

//  POLICY_VICTIMS (61): tier count candidates
#define KVT_POLICY_VICTIMS_TIER 0
#define KVT_POLICY_VICTIMS_COUNT 1
#define KVT_POLICY_VICTIMS_CANDIDATES 2

//  POLICY_VICTIMS_OK (62): hashes
#define KVT_POLICY_VICTIMS_OK_HASHES 0

//  IDX_CLAIM (63): hashes tier max_blocks
#define KVT_IDX_CLAIM_HASHES 0
#define KVT_IDX_CLAIM_TIER 1
#define KVT_IDX_CLAIM_MAX_BLOCKS 2

//  IDX_CLAIM_OK (64): hashes slots
#define KVT_IDX_CLAIM_OK_HASHES 0
#define KVT_IDX_CLAIM_OK_SLOTS 1

//  MIG_PREFETCH (65): hashes max_blocks
#define KVT_MIG_PREFETCH_HASHES 0
#define KVT_MIG_PREFETCH_MAX_BLOCKS 1

//  MIG_PREFETCH_OK (66): hashes
#define KVT_MIG_PREFETCH_OK_HASHES 0

//  MIG_PROMOTE_END (67): hashes tiers slots gpu_slots host_slots commit
#define KVT_MIG_PROMOTE_END_HASHES 0
#define KVT_MIG_PROMOTE_END_TIERS 1
#define KVT_MIG_PROMOTE_END_SLOTS 2
#define KVT_MIG_PROMOTE_END_GPU_SLOTS 3
#define KVT_MIG_PROMOTE_END_HOST_SLOTS 4
#define KVT_MIG_PROMOTE_END_COMMIT 5

//  MIG_PROMOTE_END_OK (68): moved
#define KVT_MIG_PROMOTE_END_OK_MOVED 0

//  MIG_LAYERS_READY (69): ticket layers_ready failed
#define KVT_MIG_LAYERS_READY_TICKET 0
#define KVT_MIG_LAYERS_READY_LAYERS_READY 1
#define KVT_MIG_LAYERS_READY_FAILED 2

//  MIG_LAYERS_READY_OK (70): known
#define KVT_MIG_LAYERS_READY_OK_KNOWN 0

//  MIG_WRITE_THROUGH (71): hashes
#define KVT_MIG_WRITE_THROUGH_HASHES 0

//  MIG_WRITE_THROUGH_OK (72): shadowed
#define KVT_MIG_WRITE_THROUGH_OK_SHADOWED 0

//  IDX_MATCH_PARTS (73): hashes pin part_blocks
#define KVT_IDX_MATCH_PARTS_HASHES 0
#define KVT_IDX_MATCH_PARTS_PIN 1
#define KVT_IDX_MATCH_PARTS_PART_BLOCKS 2

//  IDX_MATCH_PARTS_OK (74): tiers slots
#define KVT_IDX_MATCH_PARTS_OK_TIERS 0
#define KVT_IDX_MATCH_PARTS_OK_SLOTS 1

//  IDX_MATCH_PART (75): first tiers slots
#define KVT_IDX_MATCH_PART_FIRST 0
#define KVT_IDX_MATCH_PART_TIERS 1
#define KVT_IDX_MATCH_PART_SLOTS 2

#endif
