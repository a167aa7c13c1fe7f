/* Device selection, shared by devices.c and context.c. */
#ifndef ATTN_DEVICES_H
#define ATTN_DEVICES_H

#include "attn_internal.h"

/* Picks the device a new context uses: explicit options, then ATTN_CL_DEVICE,
 * then the first GPU, then the first device. Messages go to the thread. */
attn_status attn_choose_device(const attn_context_options *options, cl_device_id *chosen,
                               int32_t *platform_index, int32_t *device_index);

/* The indices attn_list_devices would give `device`, or -1 / -1. */
void attn_find_device_indices(cl_device_id device, int32_t *platform_index, int32_t *device_index);

#endif
