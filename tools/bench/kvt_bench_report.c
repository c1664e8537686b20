/*  =========================================================================
    kvt_bench_report - one line per figure, beside its baseline, or JSON

    SPDX-License-Identifier: Apache-2.0
    =========================================================================
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kvt_bench.h"

#define S_MAX_FIGURES 256

typedef struct {
    char figure [64];               //  What was measured
    double value;                   //  Its value
    char unit [16];                 //  Its unit
    char baseline_name [64];        //  What it is compared with
    double baseline;                //  The baseline's value, same run, same unit
} s_figure_t;

struct _kvt_bench_report_t {
    char name [64];                 //  Bench name ("runtime", "nvme", ...)
    bool json;                      //  Print JSON at finish instead of lines
    s_figure_t figures [S_MAX_FIGURES];
    int figure_count;               //  Figures added
    char notes [32][2][128];        //  Key/value context
    int note_count;                 //  Notes added
};

kvt_bench_report_t *
kvt_bench_report_new (const char *name, bool json)
{
    kvt_bench_report_t *self = calloc (1, sizeof (kvt_bench_report_t));
    if (!self)
        abort ();
    snprintf (self->name, sizeof (self->name), "%s", name);
    self->json = json;
    return self;
}

void
kvt_bench_report_add (kvt_bench_report_t *self, const char *figure, double value,
                      const char *unit, const char *baseline_name, double baseline)
{
    if (self->figure_count == S_MAX_FIGURES)
        return;
    s_figure_t *f = &self->figures [self->figure_count++];
    snprintf (f->figure, sizeof (f->figure), "%s", figure);
    snprintf (f->unit, sizeof (f->unit), "%s", unit);
    snprintf (f->baseline_name, sizeof (f->baseline_name), "%s", baseline_name);
    f->value = value;
    f->baseline = baseline;
    if (!self->json) {
        printf ("%-36s %12.3f %-6s baseline %-32s %12.3f %-6s ratio %.3f\n", figure, value,
                unit, baseline_name, baseline, unit, baseline? value / baseline: 0.0);
        fflush (stdout);
    }
}

void
kvt_bench_report_note (kvt_bench_report_t *self, const char *key, const char *value)
{
    if (self->note_count == 32)
        return;
    snprintf (self->notes [self->note_count][0], 128, "%s", key);
    snprintf (self->notes [self->note_count][1], 128, "%s", value);
    self->note_count++;
    if (!self->json)
        printf ("# %s: %s\n", key, value);
}

//  JSON strings here are our own figure names; escape quotes and
//  backslashes anyway so a note with a path cannot break the document.
static void
s_print_json_string (const char *text)
{
    putchar ('"');
    for (; *text; text++) {
        if (*text == '"' || *text == '\\')
            putchar ('\\');
        if ((unsigned char) *text >= 0x20)
            putchar (*text);
    }
    putchar ('"');
}

void
kvt_bench_report_finish (kvt_bench_report_t **self_p)
{
    kvt_bench_report_t *self = *self_p;
    if (!self)
        return;
    if (self->json) {
        printf ("{\"bench\": ");
        s_print_json_string (self->name);
        printf (", \"notes\": {");
        for (int i = 0; i < self->note_count; i++) {
            printf ("%s", i? ", ": "");
            s_print_json_string (self->notes [i][0]);
            printf (": ");
            s_print_json_string (self->notes [i][1]);
        }
        printf ("}, \"figures\": [");
        for (int i = 0; i < self->figure_count; i++) {
            s_figure_t *f = &self->figures [i];
            printf ("%s\n  {\"figure\": ", i? ",": "");
            s_print_json_string (f->figure);
            printf (", \"value\": %.6g, \"unit\": ", f->value);
            s_print_json_string (f->unit);
            printf (", \"baseline_name\": ");
            s_print_json_string (f->baseline_name);
            printf (", \"baseline\": %.6g, \"ratio\": %.6g}", f->baseline,
                    f->baseline? f->value / f->baseline: 0.0);
        }
        printf ("\n]}\n");
    }
    free (self);
    *self_p = NULL;
}


//  --------------------------------------------------------------------------
//  Helpers every bench uses

double
kvt_bench_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

int
kvt_bench_compare_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y;
}

double
kvt_bench_median (double *values, size_t count)
{
    if (count == 0)
        return 0;
    qsort (values, count, sizeof (double), kvt_bench_compare_double);
    return count % 2? values [count / 2]: (values [count / 2 - 1] + values [count / 2]) / 2;
}
