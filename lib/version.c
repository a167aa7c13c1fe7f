/* Version queries. */
#include "attn_internal.h"

#define ATTN_STR2(x) #x
#define ATTN_STR(x) ATTN_STR2(x)

const char *attn_version_string(void) {
    return ATTN_STR(ATTN_CL_VERSION_MAJOR) "." ATTN_STR(ATTN_CL_VERSION_MINOR) "." ATTN_STR(
        ATTN_CL_VERSION_PATCH);
}

void attn_version(int *major, int *minor, int *patch) {
    if (major)
        *major = ATTN_CL_VERSION_MAJOR;
    if (minor)
        *minor = ATTN_CL_VERSION_MINOR;
    if (patch)
        *patch = ATTN_CL_VERSION_PATCH;
}
