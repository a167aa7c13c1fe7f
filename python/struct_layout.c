/* Sizes and field offsets of the public structs, as the compiler that built
 * the library lays them out, for the Python binding's import-time check of
 * its ctypes mirrors (python/attn_cl/_layout.py). Not part of the C API. */
#include <stddef.h>

#include "attn_cl.h"

typedef struct layout_entry {
    const char *name; /* "struct" for sizeof, "struct.field" for offsetof */
    size_t value;
} layout_entry;

#define SIZE(type) {#type, sizeof(type)}
#define FIELD(type, field) {#type "." #field, offsetof(type, field)}

static const layout_entry entries[] = {
    SIZE(attn_strides),
    FIELD(attn_strides, batch),
    FIELD(attn_strides, head),
    FIELD(attn_strides, seq),
    SIZE(attn_score_operand),
    FIELD(attn_score_operand, present),
    FIELD(attn_score_operand, batch),
    FIELD(attn_score_operand, heads),
    FIELD(attn_score_operand, strides),
    SIZE(attn_window),
    FIELD(attn_window, enabled),
    FIELD(attn_window, left),
    FIELD(attn_window, right),
    SIZE(attn_params),
    FIELD(attn_params, struct_size),
    FIELD(attn_params, batch),
    FIELD(attn_params, heads_q),
    FIELD(attn_params, heads_kv),
    FIELD(attn_params, seq_q),
    FIELD(attn_params, seq_k),
    FIELD(attn_params, head_dim),
    FIELD(attn_params, head_dim_v),
    FIELD(attn_params, scale),
    FIELD(attn_params, mask),
    FIELD(attn_params, algo),
    FIELD(attn_params, dtype),
    FIELD(attn_params, q_strides),
    FIELD(attn_params, k_strides),
    FIELD(attn_params, v_strides),
    FIELD(attn_params, o_strides),
    FIELD(attn_params, lse_strides),
    FIELD(attn_params, softcap),
    FIELD(attn_params, alibi),
    FIELD(attn_params, bias),
    FIELD(attn_params, keep_mask),
    FIELD(attn_params, window),
    FIELD(attn_params, key_padding),
    FIELD(attn_params, varlen),
    FIELD(attn_params, total_q),
    FIELD(attn_params, total_k),
    FIELD(attn_params, dropout_p),
    FIELD(attn_params, dropout_seed),
    FIELD(attn_params, dropout_offset),
    FIELD(attn_params, probs_heads_begin),
    FIELD(attn_params, probs_heads_end),
    FIELD(attn_params, probs_rows_begin),
    FIELD(attn_params, probs_rows_end),
    SIZE(attn_device_info),
    FIELD(attn_device_info, platform_index),
    FIELD(attn_device_info, device_index),
    FIELD(attn_device_info, is_gpu),
    FIELD(attn_device_info, compute_units),
    FIELD(attn_device_info, global_mem_bytes),
    FIELD(attn_device_info, max_alloc_bytes),
    FIELD(attn_device_info, local_mem_bytes),
    FIELD(attn_device_info, platform_name),
    FIELD(attn_device_info, device_name),
    FIELD(attn_device_info, vendor),
    FIELD(attn_device_info, device_version),
    FIELD(attn_device_info, driver_version),
    SIZE(attn_context_options),
    FIELD(attn_context_options, platform_index),
    FIELD(attn_context_options, device_index),
    FIELD(attn_context_options, enable_profiling),
    SIZE(attn_backward_host_tensors),
    FIELD(attn_backward_host_tensors, q),
    FIELD(attn_backward_host_tensors, k),
    FIELD(attn_backward_host_tensors, v),
    FIELD(attn_backward_host_tensors, o),
    FIELD(attn_backward_host_tensors, dout),
    FIELD(attn_backward_host_tensors, lse),
    FIELD(attn_backward_host_tensors, dq),
    FIELD(attn_backward_host_tensors, dk),
    FIELD(attn_backward_host_tensors, dv),
    FIELD(attn_backward_host_tensors, dbias),
    FIELD(attn_backward_host_tensors, bias),
    FIELD(attn_backward_host_tensors, keep_mask),
    FIELD(attn_backward_host_tensors, key_lengths),
    FIELD(attn_backward_host_tensors, alibi_slopes),
    FIELD(attn_backward_host_tensors, cu_seqlens_q),
    FIELD(attn_backward_host_tensors, cu_seqlens_k),
    SIZE(attn_host_tensors),
    FIELD(attn_host_tensors, q),
    FIELD(attn_host_tensors, k),
    FIELD(attn_host_tensors, v),
    FIELD(attn_host_tensors, o),
    FIELD(attn_host_tensors, lse),
    FIELD(attn_host_tensors, probs),
    FIELD(attn_host_tensors, bias),
    FIELD(attn_host_tensors, keep_mask),
    FIELD(attn_host_tensors, key_lengths),
    FIELD(attn_host_tensors, alibi_slopes),
    FIELD(attn_host_tensors, cu_seqlens_q),
    FIELD(attn_host_tensors, cu_seqlens_k),
    SIZE(attn_merge_tensors),
    FIELD(attn_merge_tensors, o_a),
    FIELD(attn_merge_tensors, o_b),
    FIELD(attn_merge_tensors, lse_a),
    FIELD(attn_merge_tensors, lse_b),
    FIELD(attn_merge_tensors, o),
    FIELD(attn_merge_tensors, lse),
    SIZE(attn_mask),
    SIZE(attn_algo),
    SIZE(attn_dtype),
    SIZE(attn_status),
};

/* Entry `index` (0-based): its name and value; returns 0 past the end. */
__attribute__((visibility("default"))) int attn_py_struct_layout(size_t index, const char **name,
                                                                 size_t *value)
{
    if (index >= sizeof(entries) / sizeof(entries[0]))
        return 0;
    *name = entries[index].name;
    *value = entries[index].value;
    return 1;
}
