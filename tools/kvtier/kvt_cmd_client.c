/*  =========================================================================
    kvt_cmd_client - `kvtier client`: talk to a running server

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    kvtier client [--endpoint EP] [--timeout MS] [--json] VERB [options]
    One request per invocation through kvt_client. Tokens come from
    --tokens 1,2,3 or --random N --seed S (deterministic, the same ids as
    kvt_client_random_tokens and kvtier_client.py). An ERROR reply prints
    its name and detail on stderr and exits 1; bad usage exits 2.
@end
*/

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvt_client.h"
#include "kvt_error.h"
#include "kvt_msg.h"
#include "kvt_cmd.h"

#define S_DEFAULT_ENDPOINT  "tcp://127.0.0.1:5557"  //  The scheduler's default front door
#define S_DEFAULT_TIMEOUT   30000                   //  ms per request

typedef struct {
    const char *endpoint;           //  Server front door
    int timeout_ms;                 //  Per-request wait
    bool json;                      //  JSON output instead of text
    bool help;                      //  --help given
    const char *verb;               //  hello, lookup, ...
    const char *name;               //  hello --name
    const char *tenant;             //  --tenant
    const char *tokens_text;        //  --tokens 1,2,3
    int64_t random_count;           //  --random N; -1 if not given
    uint64_t seed;                  //  --seed S
    uint64_t max_new;               //  generate --max-new
    const char *kv_file;            //  store --kv FILE
    bool fill_given;                //  store --fill-seed given
    uint64_t fill_seed;             //  store --fill-seed S
    uint64_t from_block;            //  store --from-block N (STORE_TAIL when > 0)
    const char *out_file;           //  load --out FILE
    uint64_t from_tier;             //  demote --from
    uint64_t to_tier;               //  demote --to
    uint64_t max_blocks;            //  demote --max
    bool show_tokens;               //  generate/lookup: print every value
} s_args_t;

typedef struct {
    const char *verb;               //  As typed
    const char *usage;              //  Options after the verb
    const char *summary;            //  What it does
} s_verb_t;

static const s_verb_t s_verbs [] = {
    { "hello", "[--name NAME]", "introduce ourselves; print the server's model shape" },
    { "lookup", "TOKENS [--tenant T]", "how many leading full blocks are cached, in which tier" },
    { "store", "TOKENS [--tenant T] [--from-block N] (--kv FILE | --fill-seed S)",
      "store KV for the full blocks of TOKENS, or from block N on (first N cached)" },
    { "load", "TOKENS [--tenant T] [--out FILE]", "fetch the KV of the longest cached prefix" },
    { "generate", "TOKENS [--tenant T] [--max-new N]",
      "run the model: prefix from cache, suffix prefilled, N tokens decoded" },
    { "stats", "", "print the server's counters" },
    { "demote", "--from TIER --to TIER [--max N]",
      "(admin) move up to N least-recently-used blocks down a tier (0 gpu, 1 host, 2 nvme)" },
    { NULL, NULL, NULL }
};

static void
s_usage (FILE *out, const char *verb)
{
    for (const s_verb_t *v = s_verbs; v->verb; v++)
        if (verb && streq (verb, v->verb)) {
            fprintf (out, "usage: kvtier client [--endpoint EP] [--timeout MS] [--json] %s %s\n"
                          "  %s\n", v->verb, v->usage, v->summary);
            if (strstr (v->usage, "TOKENS"))
                fprintf (out, "  TOKENS is --tokens 1,2,3 or --random N [--seed S] "
                              "(deterministic ids < vocab)\n");
            return;
        }
    fprintf (out, "usage: kvtier client [--endpoint EP] [--timeout MS] [--json] VERB [options]\n"
                  "  --endpoint EP   server front door (default " S_DEFAULT_ENDPOINT ")\n"
                  "  --timeout MS    wait per request (default %d)\n"
                  "  --json          print the reply as JSON\n\n", S_DEFAULT_TIMEOUT);
    for (const s_verb_t *v = s_verbs; v->verb; v++)
        fprintf (out, "  %-9s %s\n", v->verb, v->summary);
    fprintf (out, "\nkvtier client VERB --help for the options of one verb.\n"
                  "Exit status: 0 OK, 1 ERROR reply or failure, 2 usage.\n");
}

//  Parse an unsigned number; false if it is not one.
static bool
s_parse_u64 (const char *text, uint64_t *value)
{
    if (!text || *text < '0' || *text > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long parsed = strtoull (text, &end, 0);
    if (errno || *end)
        return false;
    *value = parsed;
    return true;
}

//  Returns 0, or 2 after printing what was wrong.
static int
s_parse_args (int argc, char **argv, s_args_t *args)
{
    static const struct option options [] = {
        { "endpoint",  required_argument, NULL, 'e' },
        { "timeout",   required_argument, NULL, 't' },
        { "json",      no_argument,       NULL, 'j' },
        { "help",      no_argument,       NULL, 'h' },
        { "name",      required_argument, NULL, 'n' },
        { "tenant",    required_argument, NULL, 'T' },
        { "tokens",    required_argument, NULL, 'k' },
        { "random",    required_argument, NULL, 'r' },
        { "seed",      required_argument, NULL, 's' },
        { "max-new",   required_argument, NULL, 'm' },
        { "kv",        required_argument, NULL, 'K' },
        { "fill-seed", required_argument, NULL, 'f' },
        { "from-block", required_argument, NULL, 'B' },
        { "out",       required_argument, NULL, 'o' },
        { "from",      required_argument, NULL, 'F' },
        { "to",        required_argument, NULL, 'D' },
        { "max",       required_argument, NULL, 'M' },
        { "all",       no_argument,       NULL, 'a' },
        { NULL, 0, NULL, 0 }
    };
    memset (args, 0, sizeof (*args));
    args->endpoint = getenv ("KVTIER_ENDPOINT")? getenv ("KVTIER_ENDPOINT"): S_DEFAULT_ENDPOINT;
    args->timeout_ms = S_DEFAULT_TIMEOUT;
    args->random_count = -1;
    args->seed = 1;
    args->max_new = 8;
    args->max_blocks = 1;
    args->from_tier = UINT64_MAX;
    args->to_tier = UINT64_MAX;
    optind = 1;
    opterr = 1;
    int opt;
    uint64_t number = 0;
    while ((opt = getopt_long (argc, argv, "+", options, NULL)) != -1 || optind < argc) {
        if (opt == -1) {            //  A positional word: the verb (only one)
            if (args->verb) {
                fprintf (stderr, "kvtier client: unexpected argument '%s'\n", argv [optind]);
                return 2;
            }
            args->verb = argv [optind++];
            continue;
        }
        bool numeric = strchr ("trsmfFDMB", opt) != NULL;
        if (numeric && !s_parse_u64 (optarg, &number)) {
            fprintf (stderr, "kvtier client: '%s' is not an unsigned number\n", optarg);
            return 2;
        }
        switch (opt) {
            case 'e': args->endpoint = optarg; break;
            case 't': args->timeout_ms = number > INT32_MAX? INT32_MAX: (int) number; break;
            case 'j': args->json = true; break;
            case 'h': args->help = true; break;
            case 'n': args->name = optarg; break;
            case 'T': args->tenant = optarg; break;
            case 'k': args->tokens_text = optarg; break;
            case 'r': args->random_count = (int64_t) number; break;
            case 's': args->seed = number; break;
            case 'm': args->max_new = number; break;
            case 'K': args->kv_file = optarg; break;
            case 'f': args->fill_given = true; args->fill_seed = number; break;
            case 'B': args->from_block = number; break;
            case 'o': args->out_file = optarg; break;
            case 'F': args->from_tier = number; break;
            case 'D': args->to_tier = number; break;
            case 'M': args->max_blocks = number; break;
            case 'a': args->show_tokens = true; break;
            default: return 2;      //  getopt printed why
        }
    }
    return 0;
}

//  Print a JSON string with quotes and escapes.
static void
s_print_json_string (const char *text)
{
    putchar ('"');
    for (; *text; text++) {
        unsigned char c = (unsigned char) *text;
        if (c == '"' || c == '\\')
            printf ("\\%c", c);
        else
        if (c < 0x20)
            printf ("\\u%04x", c);
        else
            putchar (c);
    }
    putchar ('"');
}

//  Print an error the same way for every verb; returns the exit code 1.
static int
s_fail (kvt_client_t *client, const char *verb, int rc, bool json)
{
    const char *name = client && *kvt_client_error_name (client)?
                       kvt_client_error_name (client): kvt_strerror_name (rc);
    const char *detail = client && *kvt_client_error_detail (client)?
                         kvt_client_error_detail (client): kvt_strerror (rc);
    if (json) {
        printf ("{\"verb\": \"%s\", \"error\": {\"code\": %d, \"name\": ", verb, rc);
        s_print_json_string (name);
        printf (", \"detail\": ");
        s_print_json_string (detail);
        printf ("}}\n");
    }
    fprintf (stderr, "kvtier client %s: ERROR %s (%d): %s\n", verb, name, rc, detail);
    return 1;
}

//  Print "name": [a, b, c] (JSON) or "name a,b,c" (text).
static void
s_print_array (const char *name, const uint64_t *values, size_t count, bool json)
{
    printf (json? "\"%s\": [": "%-15s ", name);
    for (size_t k = 0; k < count; k++)
        printf (json? "%s%" PRIu64: "%s%" PRIu64, k? (json? ", ": ","): "", values [k]);
    printf (json? "]": "\n");
}

//  Build the token list from --tokens or --random; HELLO tells the vocab.
static int
s_tokens (kvt_client_t *client, const s_args_t *args, const kvt_client_hello_t *hello,
          uint64_t **tokens_p, size_t *count_p)
{
    if (args->tokens_text && args->random_count >= 0) {
        fprintf (stderr, "kvtier client: give --tokens or --random, not both\n");
        return 2;
    }
    if (args->tokens_text) {
        int64_t count = kvt_client_parse_tokens (args->tokens_text, tokens_p);
        if (count < 0) {
            fprintf (stderr, "kvtier client: --tokens wants a list like 1,2,3\n");
            return 2;
        }
        *count_p = (size_t) count;
        return 0;
    }
    if (args->random_count >= 0) {
        (void) client;
        *count_p = (size_t) args->random_count;
        *tokens_p = (uint64_t *) zmalloc ((*count_p? *count_p: 1) * sizeof (uint64_t));
        kvt_client_random_tokens (*tokens_p, *count_p, hello->vocab? hello->vocab: 1,
                                  args->seed);
        return 0;
    }
    fprintf (stderr, "kvtier client %s: give --tokens 1,2,3 or --random N\n", args->verb);
    return 2;
}

//  Read a whole file into a new buffer. Returns 0 or -errno.
static int
s_read_file (const char *path, void **data_p, size_t *size_p)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return -errno;
    fseek (file, 0, SEEK_END);
    long size = ftell (file);
    fseek (file, 0, SEEK_SET);
    if (size < 0) {
        fclose (file);
        return -EIO;
    }
    void *data = zmalloc ((size_t) size + 1);
    size_t got = fread (data, 1, (size_t) size, file);
    fclose (file);
    if (got != (size_t) size) {
        free (data);
        return -EIO;
    }
    *data_p = data;
    *size_p = (size_t) size;
    return 0;
}

static int
s_run_verb (kvt_client_t *client, const s_args_t *args)
{
    const char *verb = args->verb;
    bool json = args->json;
    kvt_client_hello_t hello;
    int rc;
    if (streq (verb, "stats")) {
        kvt_client_stats_t stats;
        if ((rc = kvt_client_stats (client, &stats)))
            return s_fail (client, verb, rc, json);
        if (json)
            printf ("{\"verb\": \"stats\", \"counters\": {");
        for (size_t k = 0; k < stats.count; k++) {
            if (json) {
                printf ("%s", k? ", ": "");
                s_print_json_string (stats.keys [k]);
                printf (": %" PRIu64, stats.values [k]);
            }
            else
                printf ("%-32s %" PRIu64 "\n", stats.keys [k], stats.values [k]);
        }
        if (json)
            printf ("}}\n");
        kvt_client_stats_fini (&stats);
        return 0;
    }
    if (streq (verb, "demote")) {
        if (args->from_tier == UINT64_MAX || args->to_tier == UINT64_MAX) {
            fprintf (stderr, "kvtier client demote: give --from TIER and --to TIER\n");
            return 2;
        }
        uint64_t moved;
        if ((rc = kvt_client_demote (client, args->from_tier, args->to_tier,
                                     args->max_blocks, &moved)))
            return s_fail (client, verb, rc, json);
        printf (json? "{\"verb\": \"demote\", \"moved\": %" PRIu64 "}\n": "moved %" PRIu64 "\n",
                moved);
        return 0;
    }
    //  Every other verb starts with HELLO: it tells vocab and block size
    if ((rc = kvt_client_hello (client, args->name? args->name: "kvtier-client", &hello)))
        return s_fail (client, "hello", rc, json);
    if (streq (verb, "hello")) {
        if (json) {
            printf ("{\"verb\": \"hello\", \"server\": ");
            s_print_json_string (hello.server);
            printf (", \"protocol\": %" PRIu64 ", \"block_tokens\": %" PRIu64
                    ", \"block_bytes\": %" PRIu64 ", \"layers\": %" PRIu64
                    ", \"kv_heads\": %" PRIu64 ", \"head_dim\": %" PRIu64
                    ", \"vocab\": %" PRIu64 ", \"dtype\": ",
                    hello.protocol, hello.block_tokens, hello.block_bytes, hello.layers,
                    hello.kv_heads, hello.head_dim, hello.vocab);
            s_print_json_string (hello.dtype);
            printf ("}\n");
        }
        else
            printf ("server          %s\nprotocol        %" PRIu64 "\nblock_tokens    %" PRIu64
                    "\nblock_bytes     %" PRIu64 "\nlayers          %" PRIu64
                    "\nkv_heads        %" PRIu64 "\nhead_dim        %" PRIu64
                    "\nvocab           %" PRIu64 "\ndtype           %s\n",
                    hello.server, hello.protocol, hello.block_tokens, hello.block_bytes,
                    hello.layers, hello.kv_heads, hello.head_dim, hello.vocab, hello.dtype);
        return 0;
    }
    uint64_t *tokens = NULL;
    size_t token_count = 0;
    if ((rc = s_tokens (client, args, &hello, &tokens, &token_count)))
        return rc;
    int status = 0;
    if (streq (verb, "lookup")) {
        kvt_client_lookup_t lookup;
        if ((rc = kvt_client_lookup (client, args->tenant, tokens, token_count, &lookup)))
            status = s_fail (client, verb, rc, json);
        else {
            if (json)
                printf ("{\"verb\": \"lookup\", \"tokens\": %zu, \"matched_blocks\": %" PRIu64
                        ", ", token_count, lookup.matched_blocks);
            else
                printf ("tokens          %zu\nmatched_blocks  %" PRIu64 "\n", token_count,
                        lookup.matched_blocks);
            s_print_array ("tiers", lookup.tiers, lookup.tier_count, json);
            printf (json? ", ": "");
            s_print_array ("hashes", lookup.hashes, lookup.hash_count, json);
            printf (json? "}\n": "");
            kvt_client_lookup_fini (&lookup);
        }
    }
    else
    if (streq (verb, "store")) {
        void *kv = NULL;
        size_t kv_bytes = 0;
        if (args->kv_file && args->fill_given) {
            fprintf (stderr, "kvtier client store: give --kv or --fill-seed, not both\n");
            status = 2;
        }
        else
        if (args->kv_file) {
            if ((rc = s_read_file (args->kv_file, &kv, &kv_bytes))) {
                fprintf (stderr, "kvtier client store: %s: %s\n", args->kv_file,
                         strerror (-rc));
                status = 1;
            }
        }
        else
        if (args->fill_given) {
            uint64_t blocks = token_count / (hello.block_tokens? hello.block_tokens: 1);
            kv_bytes = (blocks > args->from_block? blocks - args->from_block: 0)
                     * hello.block_bytes;
            kv = zmalloc (kv_bytes? kv_bytes: 1);
            kvt_client_fill_bytes (kv, kv_bytes, args->fill_seed);
        }
        else {
            fprintf (stderr, "kvtier client store: give --kv FILE or --fill-seed S\n");
            status = 2;
        }
        kvt_client_store_t store;
        if (status == 0) {
            rc = args->from_block
               ? kvt_client_store_tail (client, args->tenant, tokens, token_count,
                                        args->from_block, kv, kv_bytes, &store)
               : kvt_client_store (client, args->tenant, tokens, token_count, kv, kv_bytes,
                                   &store);
            if (rc)
                status = s_fail (client, verb, rc, json);
            else
                printf (json? "{\"verb\": \"store\", \"kv_bytes\": %zu, \"stored_blocks\": %"
                              PRIu64 ", \"present_blocks\": %" PRIu64 "}\n"
                            : "kv_bytes        %zu\nstored_blocks   %" PRIu64
                              "\npresent_blocks  %" PRIu64 "\n",
                        kv_bytes, store.stored_blocks, store.present_blocks);
        }
        free (kv);
    }
    else
    if (streq (verb, "load")) {
        kvt_client_load_t load;
        if ((rc = kvt_client_load (client, args->tenant, tokens, token_count, &load)))
            status = s_fail (client, verb, rc, json);
        else {
            if (args->out_file) {
                FILE *file = fopen (args->out_file, "wb");
                if (!file || fwrite (load.kv, 1, load.kv_bytes, file) != load.kv_bytes) {
                    fprintf (stderr, "kvtier client load: cannot write %s\n", args->out_file);
                    status = 1;
                }
                if (file && fclose (file) != 0)
                    status = 1;
            }
            if (json)
                printf ("{\"verb\": \"load\", \"blocks\": %" PRIu64 ", \"kv_bytes\": %zu, ",
                        load.blocks, load.kv_bytes);
            else
                printf ("blocks          %" PRIu64 "\nkv_bytes        %zu\n", load.blocks,
                        load.kv_bytes);
            s_print_array ("tiers", load.tiers, load.tier_count, json);
            printf (json? "}\n": "");
            kvt_client_load_fini (&load);
        }
    }
    else
    if (streq (verb, "generate")) {
        kvt_client_generate_t generate;
        if ((rc = kvt_client_generate (client, args->tenant, tokens, token_count,
                                       args->max_new, &generate)))
            status = s_fail (client, verb, rc, json);
        else {
            const char *format = json?
                "{\"verb\": \"generate\", \"prompt_tokens\": %zu, \"ttft_us\": %" PRIu64
                ", \"total_us\": %" PRIu64 ", \"from_gpu\": %" PRIu64 ", \"from_host\": %"
                PRIu64 ", \"from_nvme\": %" PRIu64 ", \"computed\": %" PRIu64 ", ":
                "prompt_tokens   %zu\nttft_us         %" PRIu64 "\ntotal_us        %" PRIu64
                "\nfrom_gpu        %" PRIu64 "\nfrom_host       %" PRIu64 "\nfrom_nvme       %"
                PRIu64 "\ncomputed        %" PRIu64 "\n";
            printf (format, token_count, generate.ttft_us, generate.total_us,
                    generate.from_gpu, generate.from_host, generate.from_nvme,
                    generate.computed);
            s_print_array ("tokens", generate.tokens, generate.token_count, json);
            printf (json? "}\n": "");
            kvt_client_generate_fini (&generate);
        }
    }
    free (tokens);
    return status;
}

//  --------------------------------------------------------------------------
//  `kvtier client ...`: returns the process exit code.

int
kvt_cmd_client (int argc, char **argv)
{
    s_args_t args;
    int rc = s_parse_args (argc, argv, &args);
    if (rc)
        return rc;
    if (args.help) {
        s_usage (stdout, args.verb);
        return 0;
    }
    if (!args.verb) {
        s_usage (stderr, NULL);
        return 2;
    }
    bool known = false;
    for (const s_verb_t *v = s_verbs; v->verb; v++)
        known |= streq (v->verb, args.verb);
    if (!known) {
        fprintf (stderr, "kvtier client: unknown verb '%s'\n", args.verb);
        s_usage (stderr, NULL);
        return 2;
    }
    kvt_client_t *client = kvt_client_new (args.endpoint, args.timeout_ms);
    if (!client) {
        fprintf (stderr, "kvtier client: cannot use endpoint '%s'\n", args.endpoint);
        return 2;
    }
    rc = s_run_verb (client, &args);
    kvt_client_destroy (&client);
    return rc;
}
