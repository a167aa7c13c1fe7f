/* The ring's status names and its per-thread error message. */
#include "ring_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[RING_MESSAGE_MAX];

attn_status ring_fail(attn_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return status;
}

void ring_set_error(const char *message) {
    snprintf(last_error, sizeof last_error, "%s", message);
}

void ring_clear_error(void) {
    last_error[0] = '\0';
}

const char *attn_ring_last_error(void) {
    return last_error;
}

const char *attn_ring_status_name(attn_status status) {
    if (status == ATTN_RING_ERR_MPI)
        return "ATTN_RING_ERR_MPI";
    return attn_status_name(status);
}
