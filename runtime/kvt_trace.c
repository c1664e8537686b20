/*  =========================================================================
    kvt_trace - Mooncake-format request traces (JSONL)

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/
/*
@header
    Loads a whole Mooncake trace into two flat arrays: one of requests and
    one of every hash id, which the requests point into. The parser is
    hand-written for this one shape of object, so a 12,000-line trace loads
    in a few milliseconds: keys may come in any order with any JSON
    whitespace, unknown keys are skipped, and a missing, repeated or
    malformed key is an error that names file:line.
@discuss
    Ids must be non-negative integers below 2^63; lengths must fit 32 bits.
    Blank lines are skipped. Non-goals: general JSON (escapes in skipped
    strings are handled, but nothing is decoded beyond the four keys).
@end
*/

#include "kvt_classes.h"

//  --------------------------------------------------------------------------
//  Structure of our class

struct _kvt_trace_t {
    kvt_trace_request_t *requests;  //  One per non-blank line, in file order
    size_t request_count;           //  Entries used in requests
    size_t request_max;             //  Entries allocated in requests
    uint64_t *ids;                  //  Every request's hash ids, back to back
    size_t id_total;                //  Entries used in ids
    size_t id_max;                  //  Entries allocated in ids
    uint64_t id_count;              //  Highest id + 1 (0 when no ids)
};

//  Parser position in one line
typedef struct {
    const char *pos;                //  Next character to read
    const char *end;                //  One past the last character of the line
    const char *problem;            //  First problem found, static text
} s_cursor_t;

#define S_KEY_TIMESTAMP 1           //  Bit for "timestamp" seen
#define S_KEY_INPUT     2           //  Bit for "input_length" seen
#define S_KEY_OUTPUT    4           //  Bit for "output_length" seen
#define S_KEY_HASHES    8           //  Bit for "hash_ids" seen
#define S_KEY_ALL       15          //  Every required key

//  Skip JSON whitespace.
static void
s_skip_ws (s_cursor_t *c)
{
    while (c->pos < c->end
       && (*c->pos == ' ' || *c->pos == '\t' || *c->pos == '\r' || *c->pos == '\n'))
        c->pos++;
}

//  Consume 'ch' after optional whitespace; returns false if it is not there.
static bool
s_expect (s_cursor_t *c, char ch)
{
    s_skip_ws (c);
    if (c->pos < c->end && *c->pos == ch) {
        c->pos++;
        return true;
    }
    return false;
}

//  --------------------------------------------------------------------------
//  Read a JSON string; sets *start/*length to its raw contents (escapes
//  left as they are). Returns false on a malformed string.

static bool
s_read_string (s_cursor_t *c, const char **start, size_t *length)
{
    if (!s_expect (c, '"'))
        return false;
    *start = c->pos;
    while (c->pos < c->end && *c->pos != '"') {
        if (*c->pos == '\\') {
            c->pos++;
            if (c->pos >= c->end)
                return false;
        }
        c->pos++;
    }
    if (c->pos >= c->end)
        return false;
    *length = (size_t) (c->pos - *start);
    c->pos++;                       //  Closing quote
    return true;
}

//  --------------------------------------------------------------------------
//  Read a JSON number as an integer. A fraction is accepted and dropped
//  only when 'fraction_ok' (timestamps); exponents are refused. Returns
//  false on anything else.

static bool
s_read_integer (s_cursor_t *c, bool negative_ok, bool fraction_ok, int64_t *value)
{
    s_skip_ws (c);
    bool negative = false;
    if (c->pos < c->end && *c->pos == '-') {
        negative = true;
        c->pos++;
    }
    if (c->pos >= c->end || *c->pos < '0' || *c->pos > '9')
        return false;
    uint64_t magnitude = 0;
    while (c->pos < c->end && *c->pos >= '0' && *c->pos <= '9') {
        if (magnitude > (UINT64_C (1) << 62))
            return false;           //  Would overflow int64
        magnitude = magnitude * 10 + (uint64_t) (*c->pos - '0');
        c->pos++;
    }
    if (magnitude > (uint64_t) INT64_MAX)
        return false;
    if (c->pos < c->end && *c->pos == '.') {
        if (!fraction_ok)
            return false;
        c->pos++;
        if (c->pos >= c->end || *c->pos < '0' || *c->pos > '9')
            return false;
        while (c->pos < c->end && *c->pos >= '0' && *c->pos <= '9')
            c->pos++;
    }
    if (c->pos < c->end && (*c->pos == 'e' || *c->pos == 'E'))
        return false;
    if (negative && !negative_ok && magnitude != 0)
        return false;
    *value = negative? -(int64_t) magnitude: (int64_t) magnitude;
    return true;
}

//  --------------------------------------------------------------------------
//  Skip any JSON value (for keys we do not know). Depth-limited.

static bool
s_skip_value (s_cursor_t *c, int depth)
{
    if (depth > 64)
        return false;
    s_skip_ws (c);
    if (c->pos >= c->end)
        return false;
    char ch = *c->pos;
    if (ch == '"') {
        const char *start;
        size_t length;
        return s_read_string (c, &start, &length);
    }
    if (ch == '[' || ch == '{') {
        char close = ch == '['? ']': '}';
        c->pos++;
        if (s_expect (c, close))
            return true;
        while (true) {
            if (ch == '{') {
                const char *start;
                size_t length;
                if (!s_read_string (c, &start, &length) || !s_expect (c, ':'))
                    return false;
            }
            if (!s_skip_value (c, depth + 1))
                return false;
            if (s_expect (c, close))
                return true;
            if (!s_expect (c, ','))
                return false;
        }
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
        //  Any number shape: sign, digits, fraction, exponent
        c->pos++;
        while (c->pos < c->end
           && ((*c->pos >= '0' && *c->pos <= '9') || *c->pos == '.' || *c->pos == 'e'
            || *c->pos == 'E' || *c->pos == '+' || *c->pos == '-'))
            c->pos++;
        return true;
    }
    const char *words [] = { "true", "false", "null" };
    for (int w = 0; w < 3; w++) {
        size_t length = strlen (words [w]);
        if ((size_t) (c->end - c->pos) >= length && memcmp (c->pos, words [w], length) == 0) {
            c->pos += length;
            return true;
        }
    }
    return false;
}

//  Append one id, growing the array geometrically.
static void
s_push_id (kvt_trace_t *self, uint64_t id)
{
    if (self->id_total == self->id_max) {
        self->id_max = self->id_max? self->id_max * 2: 4096;
        self->ids = (uint64_t *) realloc (self->ids, self->id_max * sizeof (uint64_t));
        if (!self->ids)
            abort ();
    }
    self->ids [self->id_total++] = id;
}

//  --------------------------------------------------------------------------
//  Parse one line into 'request' (hash_ids holds the offset into self->ids
//  until the load finishes). Returns NULL or a static problem text.

static const char *
s_parse_line (kvt_trace_t *self, s_cursor_t *c, kvt_trace_request_t *request,
              size_t *first_id)
{
    int seen = 0;
    if (!s_expect (c, '{'))
        return "expected '{' at start of object";
    if (s_expect (c, '}'))
        return "missing key \"timestamp\"";
    while (true) {
        const char *key;
        size_t key_length;
        if (!s_read_string (c, &key, &key_length))
            return "expected a key string";
        if (!s_expect (c, ':'))
            return "expected ':' after key";
        int bit = 0;
        int64_t value = 0;
        if (key_length == 9 && memcmp (key, "timestamp", 9) == 0) {
            bit = S_KEY_TIMESTAMP;
            if (!s_read_integer (c, true, true, &value))
                return "\"timestamp\" is not a number of milliseconds";
            request->timestamp_ms = value;
        }
        else
        if ((key_length == 12 && memcmp (key, "input_length", 12) == 0)
        ||  (key_length == 13 && memcmp (key, "output_length", 13) == 0)) {
            bit = key_length == 12? S_KEY_INPUT: S_KEY_OUTPUT;
            if (!s_read_integer (c, false, false, &value) || value > UINT32_MAX)
                return bit == S_KEY_INPUT? "\"input_length\" is not a 32-bit count"
                                         : "\"output_length\" is not a 32-bit count";
            if (bit == S_KEY_INPUT)
                request->input_length = (uint32_t) value;
            else
                request->output_length = (uint32_t) value;
        }
        else
        if (key_length == 8 && memcmp (key, "hash_ids", 8) == 0) {
            bit = S_KEY_HASHES;
            if (seen & bit)
                return "duplicate key \"hash_ids\"";
            if (!s_expect (c, '['))
                return "\"hash_ids\" is not an array";
            *first_id = self->id_total;
            if (!s_expect (c, ']')) {
                while (true) {
                    if (!s_read_integer (c, false, false, &value))
                        return "\"hash_ids\" holds something other than a non-negative integer";
                    s_push_id (self, (uint64_t) value);
                    if (s_expect (c, ']'))
                        break;
                    if (!s_expect (c, ','))
                        return "expected ',' or ']' in \"hash_ids\"";
                }
            }
            size_t count = self->id_total - *first_id;
            if (count > UINT32_MAX)
                return "\"hash_ids\" is too long";
            request->hash_count = (uint32_t) count;
        }
        else
        if (!s_skip_value (c, 0))
            return "malformed value for an unknown key";
        if (seen & bit)
            return "duplicate key";
        seen |= bit;
        if (s_expect (c, '}'))
            break;
        if (!s_expect (c, ','))
            return "expected ',' or '}' after a value";
    }
    s_skip_ws (c);
    if (c->pos != c->end)
        return "trailing characters after the object";
    if (!(seen & S_KEY_TIMESTAMP))
        return "missing key \"timestamp\"";
    if (!(seen & S_KEY_INPUT))
        return "missing key \"input_length\"";
    if (!(seen & S_KEY_OUTPUT))
        return "missing key \"output_length\"";
    if (!(seen & S_KEY_HASHES))
        return "missing key \"hash_ids\"";
    return NULL;
}

//  Read the whole file into a malloc'd buffer; returns 0 or -errno.
static int
s_read_file (const char *path, char **data_p, size_t *size_p)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat (fd, &st)) {
        int rc = -errno;
        close (fd);
        return rc;
    }
    size_t size = (size_t) st.st_size;
    char *data = (char *) malloc (size + 1);
    if (!data) {
        close (fd);
        return -ENOMEM;
    }
    size_t done = 0;
    while (done < size) {
        ssize_t got = read (fd, data + done, size - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            int rc = got < 0? -errno: -EIO;
            free (data);
            close (fd);
            return rc;
        }
        done += (size_t) got;
    }
    close (fd);
    data [size] = 0;
    *data_p = data;
    *size_p = size;
    return 0;
}

//  --------------------------------------------------------------------------
//  Load a whole trace. Returns NULL on failure and, if 'error' is not NULL,
//  a malloc'd message naming the file, line and problem in *error.

kvt_trace_t *
kvt_trace_load (const char *path, char **error)
{
    assert (path);
    if (error)
        *error = NULL;
    char *data = NULL;
    size_t size = 0;
    int rc = s_read_file (path, &data, &size);
    if (rc) {
        if (error && asprintf (error, "%s: cannot read: %s", path, strerror (-rc)) < 0)
            *error = NULL;
        return NULL;
    }
    kvt_trace_t *self = (kvt_trace_t *) kvt_zmalloc (sizeof (kvt_trace_t));
    size_t *offsets = NULL;         //  Per request: its first id in self->ids
    size_t line_nbr = 0;
    const char *line = data;
    const char *data_end = data + size;
    while (line < data_end) {
        const char *eol = (const char *) memchr (line, '\n', (size_t) (data_end - line));
        if (!eol)
            eol = data_end;
        line_nbr++;
        s_cursor_t cursor = { line, eol, NULL };
        s_skip_ws (&cursor);
        if (cursor.pos < cursor.end) {
            if (self->request_count == self->request_max) {
                self->request_max = self->request_max? self->request_max * 2: 1024;
                self->requests = (kvt_trace_request_t *) realloc (self->requests,
                    self->request_max * sizeof (kvt_trace_request_t));
                offsets = (size_t *) realloc (offsets, self->request_max * sizeof (size_t));
                if (!self->requests || !offsets)
                    abort ();
            }
            kvt_trace_request_t *request = &self->requests [self->request_count];
            memset (request, 0, sizeof (*request));
            size_t first_id = self->id_total;
            const char *problem = s_parse_line (self, &cursor, request, &first_id);
            if (problem) {
                if (error && asprintf (error, "%s:%zu: %s", path, line_nbr, problem) < 0)
                    *error = NULL;
                free (offsets);
                free (data);
                kvt_trace_destroy (&self);
                return NULL;
            }
            offsets [self->request_count++] = first_id;
        }
        line = eol + 1;
    }
    //  The id array has stopped moving: point each request into it
    uint64_t highest = 0;
    for (size_t i = 0; i < self->id_total; i++)
        if (self->ids [i] + 1 > highest)
            highest = self->ids [i] + 1;
    self->id_count = highest;
    for (size_t r = 0; r < self->request_count; r++)
        self->requests [r].hash_ids = self->ids + offsets [r];
    free (offsets);
    free (data);
    return self;
}

//  --------------------------------------------------------------------------
//  Destroy; NULL-safe, nulls the caller's pointer.

void
kvt_trace_destroy (kvt_trace_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        kvt_trace_t *self = *self_p;
        kvt_freen (self->ids);
        kvt_freen (self->requests);
        kvt_freen (self);
        *self_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  Number of requests.

size_t
kvt_trace_size (const kvt_trace_t *self)
{
    assert (self);
    return self->request_count;
}

//  --------------------------------------------------------------------------
//  Borrow request 'index' (< size).

const kvt_trace_request_t *
kvt_trace_request (const kvt_trace_t *self, size_t index)
{
    assert (self);
    assert (index < self->request_count);
    return &self->requests [index];
}

//  --------------------------------------------------------------------------
//  Highest hash id + 1 (ids are dense in Mooncake traces).

uint64_t
kvt_trace_id_count (const kvt_trace_t *self)
{
    assert (self);
    return self->id_count;
}

//  SplitMix64 finaliser: a bijection that spreads every input bit.
static inline uint64_t
s_splitmix64 (uint64_t x)
{
    x += UINT64_C (0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C (0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C (0x94D049BB133111EB);
    return x ^ (x >> 31);
}

//  --------------------------------------------------------------------------
//  Fill 'tokens' with 'count' deterministic tokens in [0, vocab) for hash
//  id 'hash_id': token i = splitmix64 (xxh3 (id) + i) mod vocab.

void
kvt_trace_block_tokens (uint64_t hash_id, uint32_t *tokens, size_t count, int vocab)
{
    assert (tokens || count == 0);
    assert (vocab > 0);
    uint64_t seed = XXH3_64bits_withSeed (&hash_id, sizeof (hash_id), UINT64_C (0x6b767472));
    for (size_t i = 0; i < count; i++)
        tokens [i] = (uint32_t) (s_splitmix64 (seed + (uint64_t) i) % (uint64_t) vocab);
}

//  --------------------------------------------------------------------------
//  Selftest helper: write 'text' to a fresh temp file, return its path.

static char *
s_temp_file (const char *text)
{
    char *path = strdup ("/tmp/kvt_trace_test_XXXXXX");
    assert (path);
    int fd = mkstemp (path);
    assert (fd >= 0);
    size_t length = strlen (text);
    ssize_t wrote = write (fd, text, length);
    assert (wrote == (ssize_t) length);
    close (fd);
    return path;
}

//  Selftest helper: expect 'text' to be refused with 'needle' in the message.
static void
s_expect_reject (const char *text, const char *needle, bool verbose)
{
    char *path = s_temp_file (text);
    char *error = NULL;
    kvt_trace_t *trace = kvt_trace_load (path, &error);
    assert (trace == NULL);
    assert (error);
    if (verbose)
        printf ("  rejected: %s\n", error);
    assert (strstr (error, needle));
    assert (strncmp (error, path, strlen (path)) == 0);     //  Names the file
    free (error);
    unlink (path);
    free (path);
}

//  --------------------------------------------------------------------------
//  Selftest

int
kvt_trace_test (bool verbose)
{
    //  @selftest
    //  Key order, whitespace, blank lines and unknown keys are all fine
    char *path = s_temp_file (
        "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 5, \"hash_ids\": [0, 1]}\n"
        "\n"
        "  { \"hash_ids\" :[0,1 ,2] ,\"output_length\":7,\"extra\":{\"a\":[1,\"x\\\"\"]},"
        "\"input_length\" : 1500 , \"timestamp\" : 12.5 }  \r\n"
        "{\"timestamp\": 30, \"input_length\": 0, \"output_length\": 0, \"hash_ids\": []}");
    char *error = NULL;
    kvt_trace_t *trace = kvt_trace_load (path, &error);
    assert (trace);
    assert (error == NULL);
    assert (kvt_trace_size (trace) == 3);
    assert (kvt_trace_id_count (trace) == 3);
    const kvt_trace_request_t *r = kvt_trace_request (trace, 1);
    assert (r->timestamp_ms == 12);
    assert (r->input_length == 1500 && r->output_length == 7);
    assert (r->hash_count == 3 && r->hash_ids [0] == 0 && r->hash_ids [2] == 2);
    r = kvt_trace_request (trace, 0);
    assert (r->hash_count == 2 && r->hash_ids [1] == 1 && r->input_length == 1000);
    assert (kvt_trace_request (trace, 2)->hash_count == 0);
    kvt_trace_destroy (&trace);
    kvt_trace_destroy (&trace);     //  Safe twice
    assert (trace == NULL);
    unlink (path);
    free (path);
    //  @end

    //  Malformed lines are refused with file:line and the problem
    s_expect_reject ("{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [0]}\n"
                     "{\"timestamp\": 0, \"input_length\": 1, \"hash_ids\": [0]}\n",
                     ":2: missing key \"output_length\"", verbose);
    s_expect_reject ("{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [0,]}\n",
                     ":1: \"hash_ids\" holds", verbose);
    s_expect_reject ("{\"timestamp\": 0, \"input_length\": -1, \"output_length\": 1, \"hash_ids\": [0]}\n",
                     ":1: \"input_length\"", verbose);
    s_expect_reject ("{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [0]\n",
                     ":1: expected ',' or '}'", verbose);
    s_expect_reject ("\n\n[1, 2]\n", ":3: expected '{'", verbose);
    s_expect_reject ("{\"timestamp\": 0, \"timestamp\": 1, \"input_length\": 1, \"output_length\": 1, "
                     "\"hash_ids\": [0]}\n", ":1: duplicate key", verbose);
    s_expect_reject ("{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [0]} x\n",
                     ":1: trailing", verbose);
    s_expect_reject ("{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1.5]}\n",
                     ":1: \"hash_ids\" holds", verbose);
    error = NULL;
    assert (kvt_trace_load ("/nonexistent/kvt_trace.jsonl", &error) == NULL);
    assert (error && strstr (error, "/nonexistent/kvt_trace.jsonl: cannot read"));
    free (error);
    assert (kvt_trace_load ("/nonexistent/kvt_trace.jsonl", NULL) == NULL);

    //  Tokens: deterministic per id, in range, different across ids
    uint32_t a [512], b [512], c [512];
    kvt_trace_block_tokens (42, a, 512, 32000);
    kvt_trace_block_tokens (42, b, 512, 32000);
    kvt_trace_block_tokens (43, c, 512, 32000);
    assert (memcmp (a, b, sizeof (a)) == 0);
    assert (memcmp (a, c, sizeof (a)) != 0);
    int same = 0;
    for (int i = 0; i < 512; i++) {
        assert (a [i] < 32000 && c [i] < 32000);
        same += a [i] == c [i];
    }
    assert (same < 8);              //  Not merely shifted or mostly equal
    assert (a [0] != a [1] || a [1] != a [2]);
    kvt_trace_block_tokens (7, a, 16, 1);
    for (int i = 0; i < 16; i++)
        assert (a [i] == 0);

    //  The shared Mooncake trace, when present, loads fast
    const char *source = getenv ("KVT_SOURCE_DIR");
    char shared [4096];
    snprintf (shared, sizeof (shared), "%s/../shared/traces/mooncake_conversation.jsonl",
              source? source: KVT_SOURCE_DIR);
    if (access (shared, R_OK) == 0) {
        int64_t start = kvt_now_us ();
        trace = kvt_trace_load (shared, &error);
        int64_t took_us = kvt_now_us () - start;
        assert (trace);
        assert (kvt_trace_size (trace) == 12031);
        uint64_t ids = 0;
        for (size_t i = 0; i < kvt_trace_size (trace); i++) {
            r = kvt_trace_request (trace, i);
            assert (r->hash_count == (r->input_length + KVT_TRACE_BLOCK_TOKENS - 1)
                                     / KVT_TRACE_BLOCK_TOKENS);
            ids += r->hash_count;
        }
        if (verbose)
            printf ("\n  %s: %zu requests, %" PRIu64 " block accesses, %" PRIu64
                    " ids, %.1f ms\n", shared, kvt_trace_size (trace), ids,
                    kvt_trace_id_count (trace), took_us / 1000.0);
        assert (took_us < 1000000);
        kvt_trace_destroy (&trace);
    }
    return 0;
}
